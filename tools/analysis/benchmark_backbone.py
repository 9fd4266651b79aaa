"""Time and peak memory of LIP-ResNet and DPP-ResNet against ResNet, measured in one run.

    python tools/analysis/benchmark_backbone.py --batch 2 --size 224 224 --repeats 20

Forward: eval mode, no grad. Forward+backward: train mode, ``sum(outputs).backward()``, all
parameters trainable (BN in train mode). Timing rounds interleave the models so drift on a
shared machine hits them alike; medians are reported. Peak memory is the extra memory a pass
needs over the built model and its input: CUDA's allocator peak on a GPU; on CPU (Linux) the
rise of the resident set's high-water mark, reset before each pass (allocator slack included).
Prints a table and writes JSON with ratios to the first model (the baseline).

On a GPU: ``--device cuda`` times with CUDA events; ``--dtype bfloat16`` runs the passes under
``torch.autocast`` (bfloat16), as mixed-precision training does.

``--runtime onnxruntime``: each model is exported to ONNX (standard operators, the pooling
ops' translations; ``--exporter``) and its forward pass timed in ONNX Runtime on the CPU
with ``--threads`` intra-op threads, rounds interleaved as above; forward only, no memory.
"""
import argparse
import contextlib
import ctypes
import functools
import gc
import json
import logging
import os
import os.path as osp
import platform
import statistics
import tempfile
import time

import torch
from mmengine.logging import MMLogger

from lip_mmdet.utils.benchmark import cuda_peak_bytes, time_ms

DEFAULT_MODELS = ('ResNet', 'LIPResNet', 'DPPResNet')
# Highest accepted fwd+bwd time ratio of the 50-layer nets to ResNet-50. LIP: the paper's
# own inference ratio, 1.88 / 1.41 ms = 1.33x (official README, Titan XP). DPP: no published
# timing; its default has ResNet-50's conv FLOPs, so the pooling arithmetic may add at most a
# quarter of a step.
TARGETS = {'LIPResNet': 1.35, 'DPPResNet': 1.25}
TARGET_DEPTH = 50
# Highest accepted forward time ratio in ONNX Runtime (CPU) of the 50-layer nets to ResNet-50.
# LIP: the paper's inference ratio (1.33x) plus 5% for the window taps, which a graph of
# standard operators computes one slice at a time where a fused kernel makes one pass (PyTorch
# eager measures 1.34x fwd+bwd with the fused CPU kernel). DPP: ResNet-50's conv FLOPs, so its
# pooling may add at most a fifth.
ONNXRUNTIME_TARGETS = {'LIPResNet': 1.40, 'DPPResNet': 1.20}


def build(model_type: str, depth: int):
    from mmdet.registry import MODELS

    import lip_mmdet  # noqa: F401  (registers the backbones)
    model = MODELS.build(dict(type=model_type, depth=depth, norm_eval=False))
    model.init_weights()
    return model


def _precision(x, dtype):
    """``torch.autocast`` to ``dtype``, or nothing for float32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(x.device.type, dtype=dtype)


def forward(model, x, dtype=torch.float32):
    model.eval()
    with torch.no_grad(), _precision(x, dtype):
        model(x)


def train_step(model, x, dtype=torch.float32):
    model.train()
    with _precision(x, dtype):
        outs = model(x)
    sum(o.float().sum() for o in outs).backward()
    model.zero_grad(set_to_none=True)


def _proc_status_mb(field: str) -> float:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f'{field} not in /proc/self/status')


def _cpu_peak_mb(fn, model, x) -> float:
    """Peak resident memory a pass adds (Linux): reset VmHWM, run, subtract the start VmRSS."""
    gc.collect()
    ctypes.CDLL('libc.so.6').malloc_trim(0)  # freed heap pages must not hide new allocations
    start = _proc_status_mb('VmRSS')
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')  # resets the VmHWM high-water mark
    fn(model, x)
    return _proc_status_mb('VmHWM') - start


def peak_memory_mb(model, x, device, passes):
    """(forward, forward+backward) extra peak memory in MiB of ``passes`` (two functions)."""
    if device.type == 'cuda':
        return tuple(cuda_peak_bytes(lambda: fn(model, x), device) / 2**20 for fn in passes)
    return tuple(_cpu_peak_mb(fn, model, x) for fn in passes)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--models', nargs='+', default=list(DEFAULT_MODELS),
                        help='registered backbone types; the first is the baseline')
    parser.add_argument('--depth', type=int, default=50, help='ResNet depth of every model')
    parser.add_argument('--batch', type=int, default=2, help='images per pass')
    parser.add_argument('--size', type=int, nargs=2, default=(224, 224), metavar=('H', 'W'),
                        help='input height and width')
    parser.add_argument('--repeats', type=int, default=10, help='timed rounds (median)')
    parser.add_argument('--warmup', type=int, default=2, help='untimed rounds first')
    parser.add_argument('--device', default='cpu', help="'cpu' or 'cuda' (CUDA events)")
    parser.add_argument('--dtype', choices=('float32', 'bfloat16'), default='float32',
                        help='bfloat16: passes run under torch.autocast')
    parser.add_argument('--threads', type=int, default=torch.get_num_threads(),
                        help='CPU threads (torch.set_num_threads)')
    parser.add_argument('--no-memory', action='store_true', help='skip the memory measurement')
    parser.add_argument('--runtime', choices=('pytorch', 'onnxruntime'), default='pytorch',
                        help='onnxruntime: time the forward pass of each model exported to '
                        'ONNX, in ONNX Runtime on the CPU')
    parser.add_argument('--exporter', choices=('dynamo', 'torchscript'), default='dynamo',
                        help='ONNX exporter of --runtime onnxruntime (the graph of the ops '
                        'is the same with both)')
    parser.add_argument('--out', default='work_dirs/benchmark_backbone.json',
                        help='JSON report with all samples and ratios')
    parser.add_argument('--verbose', action='store_true',
                        help="show mmengine's weight-initialisation log (hundreds of lines)")
    return parser.parse_args(argv)


@contextlib.contextmanager
def _quiet_mmengine(quiet: bool):
    """Hide mmengine's INFO log (one line per initialised parameter) while models build."""
    logger = MMLogger.get_current_instance()
    level = logger.level
    if quiet:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def onnxruntime_times(models, x, args, folder):
    """{name: {'fwd': [ms, ...]}}: each model exported to ONNX and run in ONNX Runtime, rounds
    interleaved over the models."""
    from lip_mmdet.deployment import export_onnx, onnxruntime_session

    sessions = {}
    for name, model in models.items():
        # ONNX Runtime folds constants and fuses when it loads the file: the exporter's own
        # optimizer would only lengthen the export
        path = export_onnx(model, (x, ), osp.join(folder, f'{name}.onnx'),
                           exporter=args.exporter, dynamic=False, optimize=False)
        sessions[name] = onnxruntime_session(path, threads=args.threads)
    feed = x.numpy()
    times = {name: {'fwd': []} for name in models}
    for round_idx in range(args.warmup + args.repeats):
        for name, session in sessions.items():
            start = time.perf_counter()
            session.run(None, {session.get_inputs()[0].name: feed})
            if round_idx >= args.warmup:
                times[name]['fwd'].append((time.perf_counter() - start) * 1e3)
    return times


def main(argv=None):
    args = parse_args(argv)
    if args.runtime == 'onnxruntime':
        if args.device != 'cpu' or args.dtype != 'float32':
            raise SystemExit('error: --runtime onnxruntime times float32 on the CPU')
        args.no_memory = True
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    passes = (functools.partial(forward, dtype=dtype), functools.partial(train_step, dtype=dtype))
    shape = (args.batch, 3, *args.size)
    torch.manual_seed(0)
    with _quiet_mmengine(not args.verbose):
        models = {name: build(name, args.depth).to(device) for name in args.models}
    x = torch.randn(*shape, device=device)
    if args.runtime == 'onnxruntime':
        with tempfile.TemporaryDirectory() as folder:
            times = onnxruntime_times(models, x, args, folder)
        targets, target_key = ONNXRUNTIME_TARGETS, 'fwd'
    else:
        times = {name: {'fwd': [], 'fwd_bwd': []} for name in models}
        for round_idx in range(args.warmup + args.repeats):
            for name, model in models.items():
                fwd = time_ms(lambda: passes[0](model, x), device)
                step = time_ms(lambda: passes[1](model, x), device)
                if round_idx >= args.warmup:
                    times[name]['fwd'].append(fwd)
                    times[name]['fwd_bwd'].append(step)
        targets, target_key = TARGETS, 'fwd_bwd'

    results = {}
    for name, model in models.items():
        entry = {k: statistics.median(v) for k, v in times[name].items()}
        if not args.no_memory:
            entry['peak_fwd_mb'], entry['peak_fwd_bwd_mb'] = peak_memory_mb(model, x, device,
                                                                            passes)
        results[name] = entry
    base = results[args.models[0]]
    for name, entry in results.items():
        entry['ratio'] = {k: v / base[k] for k, v in entry.items() if k != 'ratio' and base[k]}
        if name in targets and args.depth == TARGET_DEPTH:
            entry[f'target_{target_key}_ratio'] = targets[name]
            entry['meets_target'] = entry['ratio'][target_key] <= targets[name]
    for name, entry in results.items():
        entry['samples_ms'] = times[name]

    columns = list(times[args.models[0]]) + ([] if args.no_memory else
                                              ['peak_fwd_mb', 'peak_fwd_bwd_mb'])
    titles = {'fwd': 'fwd ms', 'fwd_bwd': 'fwd+bwd ms', 'peak_fwd_mb': 'fwd MiB',
              'peak_fwd_bwd_mb': 'fwd+bwd MiB'}
    runtime = 'PyTorch eager'
    if args.runtime == 'onnxruntime':
        import onnxruntime
        runtime = f'ONNX Runtime {onnxruntime.__version__}'
    print(f'{args.depth}-layer backbones, {runtime}, input {shape}, {device}, {args.dtype}, '
          f'{args.threads} threads, median of {args.repeats}')
    print(f'{"model":<12}' + ''.join(f'{titles[c]:>14}{"ratio":>7}' for c in columns) +
          f'{"target":>12}')
    for name, entry in results.items():
        target = ''
        if 'meets_target' in entry:
            target = ('ok' if entry['meets_target'] else 'MISS') + f' <={targets[name]}'
        print(f'{name:<12}' + ''.join(f'{entry[c]:>14.1f}{entry["ratio"][c]:>7.2f}'
                                      for c in columns) + f'{target:>12}')

    report = dict(device=str(device), device_name=(torch.cuda.get_device_name(device)
                                                   if device.type == 'cuda' else
                                                   platform.processor() or platform.machine()),
                  threads=args.threads, torch=torch.__version__, input_shape=list(shape),
                  runtime=runtime, exporter=args.exporter if args.runtime == 'onnxruntime'
                  else None,
                  dtype=args.dtype,
                  depth=args.depth, repeats=args.repeats, baseline=args.models[0],
                  results=results)
    if osp.dirname(args.out):
        os.makedirs(osp.dirname(args.out), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(report, f, indent=2)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
