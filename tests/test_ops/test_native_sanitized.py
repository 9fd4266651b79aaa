"""The CPU kernels built with AddressSanitizer and UndefinedBehaviorSanitizer: kernel tests run
against that build in a child process (with the ASan runtime preloaded) and must give no
sanitizer report.

By default (``make test``) the child runs test_native_kernels.py: edge geometries of every
kernel in both dtypes, extreme values, the status codes and a bounded fuzz of the argument
checks (seconds once the instrumented library is cached; building it takes about half a
minute). ``make sanitize`` sets ``LIP_MMDET_SANITIZE_RUN=long`` and runs the op test files too,
with the fuzz profile (minutes).
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import lip_mmdet
from lip_mmdet.ops import native

HERE = Path(__file__).parent
BOUNDED = ('test_native_kernels.py',)
LONG = BOUNDED + ('test_lip.py', 'test_dpp.py', 'test_op_boundary.py')
REPORTS = ('ERROR: AddressSanitizer', 'ERROR: LeakSanitizer', 'runtime error:',
           'AddressSanitizer: CHECK failed')


def test_kernel_tests_give_no_sanitizer_report(tmp_path):
    if not native.native_enabled():
        pytest.skip('the fused CPU kernels are disabled (LIP_MMDET_NATIVE=0)')
    try:
        env = native.sanitizer_environment()
    except RuntimeError as error:
        pytest.skip(f'no sanitizer runtime: {error}')
    root = Path(lip_mmdet.__file__).resolve().parents[1]
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(root), env.get('PYTHONPATH')]))
    # Reports go to files: the child's pytest captures its stderr, and a report ends the
    # process before pytest could show it.
    logs = tmp_path / 'reports'
    logs.mkdir()
    for name in ('ASAN_OPTIONS', 'UBSAN_OPTIONS'):
        env[name] += f':log_path={logs / name.split("_")[0].lower()}'
    files = LONG if os.environ.get('LIP_MMDET_SANITIZE_RUN') == 'long' else BOUNDED
    result = subprocess.run(
        [sys.executable, '-m', 'pytest', '-n', '0', '-q', '-rs', '-p', 'no:cacheprovider',
         *(str(HERE / name) for name in files)],
        cwd=root, env=env, capture_output=True, text=True, timeout=3600)
    output = result.stdout + result.stderr
    print(output.strip().splitlines()[-1] if output.strip() else '(no output)')
    reports = ''.join(path.read_text(errors='replace') for path in sorted(logs.iterdir()))
    assert not reports, f'sanitizer reports:\n{reports[:8000]}'
    found = [report for report in REPORTS if report in output]
    assert not found, f'sanitizer reports {found}:\n{output[-6000:]}'
    assert result.returncode == 0, output[-6000:]
