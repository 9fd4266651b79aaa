"""What the tools print: set-up order, and benchmark_backbone.py's quiet default and help."""
import re

import pytest
from mmengine.logging import MMLogger

from tiny_run import REPO, TOOLS, run_tool
from tool_scripts import tool_main


def test_setup_installs_numpy_before_anything_imports_torch():
    """A torch imported before numpy exists prints 'Failed to initialize NumPy'."""
    with open(TOOLS / 'setup_env.sh') as f:
        lines = f.read().splitlines()
    numpy_install = next(i for i, line in enumerate(lines)
                         if line.startswith('"${PIP[@]}"') and '"numpy<2"' in line)
    torch_uses = [i for i, line in enumerate(lines)
                  if re.search(r'import torch|"torch==', line) and not line.startswith('#')]
    assert torch_uses and numpy_install < min(torch_uses)


def _benchmark(*args):
    proc = run_tool([TOOLS / 'analysis' / 'benchmark_backbone.py', *args], cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _benchmark_args(tmp_path):
    return ['--models', 'ResNet', 'LIPResNet', '--depth', '18', '--batch', '1', '--size',
            '64', '64', '--repeats', '1', '--warmup', '0', '--threads', '1', '--no-memory',
            '--out', str(tmp_path / 'bench.json')]


def test_benchmark_backbone_is_quiet(tmp_path):
    """Through the interpreter, where the imports' own warnings would show."""
    quiet = _benchmark(*_benchmark_args(tmp_path))
    quiet_lines = (quiet.stdout + quiet.stderr).strip().splitlines()
    # title, header, one row per model, the JSON path
    assert len(quiet_lines) <= 6, quiet_lines
    assert quiet_lines[-1].startswith('wrote ')


def test_benchmark_backbone_verbose_shows_the_initialisation_log(tmp_path, capsys):
    MMLogger.get_instance('verbose benchmark')  # the current logger, writing to capsys
    tool_main('analysis/benchmark_backbone.py')([*_benchmark_args(tmp_path), '--verbose'])
    printed = capsys.readouterr()
    verbose_lines = (printed.out + printed.err).splitlines()
    assert len(verbose_lines) > 50, verbose_lines  # mmengine's per-parameter init log
    assert 'LIPResNet' in verbose_lines[-2]


def test_benchmark_backbone_help_has_descriptions_and_defaults(capsys):
    with pytest.raises(SystemExit):
        tool_main('analysis/benchmark_backbone.py')(['--help'])
    text = ' '.join(capsys.readouterr().out.split())
    for option, default in (('--depth', '50'), ('--batch', '2'), ('--repeats', '10'),
                            ('--warmup', '2'), ('--out', 'work_dirs/benchmark_backbone.json')):
        assert re.search(rf'{option} \S+ [^-]+\(default: {re.escape(default)}\)', text), option
    assert '--verbose' in text and 'initialisation log' in text
