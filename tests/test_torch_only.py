"""The pooling ops and layers with torch alone: mmdet, mmengine and mmcv unimportable (the
``without_detection_stack`` pytest plugin), in child processes."""
import os
import subprocess
import sys
from pathlib import Path

import lip_mmdet

TESTS = Path(__file__).resolve().parent
ROOT = Path(lip_mmdet.__file__).resolve().parents[1]
# The test files of the ops and layers that need torch alone; the tests of mmcv's norm
# configs need mmcv, those of a layer inside LIPResNet mmdet.
TORCH_ONLY_TESTS = ('test_ops/test_lip.py', 'test_ops/test_dpp.py', 'test_ops/test_op_boundary.py',
                    'test_models/test_layers')
NEEDS_DETECTION_STACK = 'not mmcv_norm_configs and not lip_resnet'

USE_IN_A_TORCH_MODEL = '''
import sys
import torch
from torch import nn

import lip_mmdet
from lip_mmdet.models.layers import FullDPP, LiteDPP, S3DPP, SimplifiedLIP
from lip_mmdet.ops import lip2d

model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), SimplifiedLIP(8), LiteDPP(8),
                      FullDPP(8, kernel_size=3, stride=2, padding=1), S3DPP(8, guide='lite'))
x = torch.randn(2, 3, 33, 31)
out = model(x)
out.sum().backward()
assert out.shape == (2, 8, 2, 2), out.shape
assert all(p.grad is not None for p in model.parameters())
assert lip2d(x, x).shape == (2, 3, 17, 16)
loaded = sorted(name for name in sys.modules
                if name.split('.')[0] in ('mmdet', 'mmengine', 'mmcv') and sys.modules[name])
assert not loaded, loaded
assert 'lip_mmdet.registry' not in sys.modules and 'lip_mmdet.utils' not in sys.modules
print('ok')
'''


def _environment():
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(ROOT), str(TESTS),
                                                      env.get('PYTHONPATH')]))
    return env


def test_ops_and_layers_work_in_a_torch_model_without_the_detection_stack():
    script = 'import without_detection_stack\n' + USE_IN_A_TORCH_MODEL
    result = subprocess.run([sys.executable, '-c', script], cwd=ROOT, env=_environment(),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and result.stdout.strip() == 'ok', result.stderr[-3000:]


def test_the_readme_example_runs_without_the_detection_stack():
    readme = (ROOT / 'README.md').read_text()
    section = readme.split('### The layers in your own model', 1)[1]
    example = section.split('```python\n', 1)[1].split('```', 1)[0]
    script = 'import without_detection_stack\n' + example + '\nassert logits.shape == (2, 10)'
    result = subprocess.run([sys.executable, '-c', script], cwd=ROOT, env=_environment(),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def test_the_pooling_benchmark_runs_without_the_detection_stack(tmp_path):
    script = ('import runpy, sys, without_detection_stack\n'
              "sys.argv = ['benchmark_pooling.py', '--shapes', '1x2x7x6', '--repeats', '1',\n"
              f"            '--warmup', '0', '--out', {str(tmp_path / 'bench.json')!r}]\n"
              "runpy.run_path('tools/analysis/benchmark_pooling.py', run_name='__main__')\n")
    result = subprocess.run([sys.executable, '-c', script], cwd=ROOT, env=_environment(),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / 'bench.json').exists()


def test_the_ops_and_layers_tests_pass_without_the_detection_stack():
    result = subprocess.run(
        [sys.executable, '-m', 'pytest', '-p', 'without_detection_stack', '-p',
         'no:cacheprovider', '-n', '0', '-q', '-k', NEEDS_DETECTION_STACK,
         *(str(TESTS / name) for name in TORCH_ONLY_TESTS)],
        cwd=ROOT, env=_environment(), capture_output=True, text=True, timeout=1200)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ''
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert ' passed' in summary and 'skipped' not in summary and 'error' not in summary, summary
