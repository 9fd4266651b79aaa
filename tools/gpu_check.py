"""One command for a machine with a CUDA GPU (``make gpu-check``): the CUDA tests, the pooling
and backbone benchmarks on the device, and a report.

    python tools/gpu_check.py [--out work_dirs/gpu_check] [--quick]

Steps, each in its own process (a failure is recorded and the next step still runs):

1. tests: the Triton kernels against float64 references on the device
   (tests/test_ops/test_triton.py), compile and export on CUDA tensors, backbone training
   steps in float32 and bfloat16 autocast, a Faster R-CNN iteration with ``--amp``'s
   optimiser wrapper (tests/test_gpu), and every config's training iteration on the GPU
   (tests/test_tools/test_configs.py);
2. ``benchmark_pooling.py --device cuda`` in float32 and bfloat16;
3. ``benchmark_backbone.py --device cuda`` at 2x3x800x1344 in float32 and bfloat16;
4. ``triton_resources.py`` for the GPU's architecture (sm_80, 86, 89 or 90).

Writes ``<out>/report.json`` (the GPU, the versions, every step's command, time, exit code
and output tail, the benchmarks' JSON) and ``<out>/report.md`` (the same as tables). Exit 0
when every step passed, 1 otherwise; without a CUDA GPU it stops at once with one line, exit 2.
"""
import argparse
import json
import os
import os.path as osp
import platform
import subprocess
import sys
import time

import torch

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
# runs from a checkout without PYTHONPATH or an installed lip_mmdet
sys.path.insert(0, REPO)
TESTS = ('tests/test_ops/test_triton.py', 'tests/test_gpu', 'tests/test_tools/test_configs.py')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--out', default='work_dirs/gpu_check', help='report folder')
    parser.add_argument('--quick', action='store_true',
                        help='fewer benchmark repeats (3 instead of 10)')
    return parser.parse_args(argv)


def _steps(out: str, repeats: int, arch: int):
    python = sys.executable
    analysis = osp.join(REPO, 'tools', 'analysis')
    yield 'tests', [python, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', *TESTS], None
    for dtype in ('float32', 'bfloat16'):
        report = osp.join(out, f'pooling_{dtype}.json')
        yield f'pooling benchmark ({dtype})', [
            python, osp.join(analysis, 'benchmark_pooling.py'), '--device', 'cuda', '--dtype',
            dtype, '--repeats', str(repeats), '--out', report], report
    for dtype in ('float32', 'bfloat16'):
        report = osp.join(out, f'backbone_{dtype}.json')
        yield f'backbone benchmark ({dtype})', [
            python, osp.join(analysis, 'benchmark_backbone.py'), '--device', 'cuda', '--dtype',
            dtype, '--batch', '2', '--size', '800', '1344', '--repeats', str(repeats),
            '--out', report], report
    from lip_mmdet.ops.triton_resources import SM_LIMITS
    if arch in SM_LIMITS:
        report = osp.join(out, 'triton_resources.json')
        yield 'Triton kernel resources', [python, osp.join(analysis, 'triton_resources.py'),
                                          '--arch', str(arch), '--out', report], report


def _run(name: str, command, report_path):
    print(f'[gpu-check] {name}: {" ".join(command)}', flush=True)
    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    start = time.monotonic()
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = round(time.monotonic() - start, 1)
    output = (result.stdout + result.stderr).strip()
    print(f'[gpu-check] {name}: exit {result.returncode} after {seconds} s', flush=True)
    step = dict(name=name, command=command, seconds=seconds, returncode=result.returncode,
                output_tail=output[-4000:])
    if report_path and result.returncode == 0 and osp.isfile(report_path):
        with open(report_path) as f:
            step['report'] = json.load(f)
    return step


def _markdown(report: dict) -> str:
    lines = [f"# GPU check: {report['gpu']}", '',
             f"torch {report['torch']}, CUDA {report['cuda']}, triton {report['triton']}, "
             f"compute capability {report['capability']}, {report['platform']}", '',
             '| step | exit | seconds |', '|---|---|---|']
    lines += [f"| {s['name']} | {s['returncode']} | {s['seconds']} |" for s in report['steps']]
    for step in report['steps']:
        lines += ['', f"## {step['name']}", '', '```', step['output_tail'][-3000:], '```']
    return '\n'.join(lines) + '\n'


def main(argv=None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print(f'error: make gpu-check needs a CUDA GPU, and torch {torch.__version__} sees none '
              '(torch.cuda.is_available() is False)', file=sys.stderr)
        return 2
    out = osp.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    major, minor = torch.cuda.get_device_capability()
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = 'not installed'
    report = dict(gpu=torch.cuda.get_device_name(), capability=f'{major}.{minor}',
                  torch=torch.__version__, cuda=torch.version.cuda, triton=triton_version,
                  platform=platform.platform(), steps=[])
    for name, command, report_path in _steps(out, 3 if args.quick else 10, major * 10 + minor):
        report['steps'].append(_run(name, command, report_path))
    with open(osp.join(out, 'report.json'), 'w') as f:
        json.dump(report, f, indent=2)
    with open(osp.join(out, 'report.md'), 'w') as f:
        f.write(_markdown(report))
    failed = [s['name'] for s in report['steps'] if s['returncode'] != 0]
    print(f"[gpu-check] wrote {osp.join(out, 'report.md')}; "
          + (f"failed: {', '.join(failed)}" if failed else 'every step passed'))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
