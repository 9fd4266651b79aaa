"""Time and memory of the pooling ops against F.avg_pool2d and naive LIP, in one run.

    python tools/analysis/benchmark_pooling.py --repeats 5
    python tools/analysis/benchmark_pooling.py --shapes 20x32x128x128 --device cuda --rss

Every op pools a (N, C, H, W) float32 map with the same 3x3 / stride 2 / padding 1 window
(``--window`` changes it): ``F.avg_pool2d``, ``F.max_pool2d``, ``lip2d_naive`` (avgpool(x e^l) /
avgpool(e^l)), ``lip2d`` (default backend: the fused kernel on CPU), ``lip2d[torch]`` (its
pure-PyTorch path) and the ``LiteDPP`` / ``FullDPP`` layers (asym). LIP logits are SoftGate-like,
12 * sigmoid(N(0, 1)).

Time: median over ``--repeats`` rounds of the forward pass (no grad) and of forward+backward
(``out.backward(g)`` for a fixed ``g``); rounds interleave the ops so load drift on a shared
machine hits them alike. Memory: ``saved`` = bytes of the distinct tensors autograd keeps for
backward (saved-tensor hooks), compared with inputs + output; on CUDA also the allocator peak
of forward+backward over what inputs and grad_out hold; on CPU, with ``--rss``, the peak
resident-set growth of forward+backward in a fresh process per op (an upper bound).
Ratios are against ``F.avg_pool2d`` and ``lip2d_naive`` measured in the same run. Prints a
table and writes JSON (``--json-out``).
"""
import argparse
import json
import multiprocessing as mp
import os
import os.path as osp
import platform
import resource
import statistics

import torch
import torch.nn.functional as F

from lip_mmdet.utils.benchmark import cuda_peak_bytes, time_ms

DEFAULT_SHAPES = ('20x32x128x128', '2x256x200x336')
OPS = ('avg_pool2d', 'max_pool2d', 'lip2d_naive', 'lip2d', 'lip2d[torch]', 'LiteDPP', 'FullDPP')
# Budgets for lip2d, from the official CUDA LIP kernel (20x32x128x128, as reported with it):
# forward+backward 0.32x the primitive-op chain (234 vs 729 ms; 0.5 leaves room for CPUs),
# forward 1.78x F.avg_pool2d (35.7 vs 20.1 ms; ~1.8x is the memory-bound floor), and a
# backward that keeps only x, logit and the output (saved memory <= inputs + output).
TARGETS = {'fwd_bwd_vs_naive': 0.5, 'fwd_vs_avg_pool2d': 2.0, 'saved_vs_inputs_output': 1.0}


def make_op(name, channels, window, device):
    """Returns (fn(x, logit) -> out, takes_logit)."""
    from lip_mmdet.models.layers import FullDPP, LiteDPP
    from lip_mmdet.ops import lip2d, lip2d_naive
    kernel, stride, padding = window
    if name == 'avg_pool2d':
        return (lambda x, _: F.avg_pool2d(x, kernel, stride, padding)), False
    if name == 'max_pool2d':
        return (lambda x, _: F.max_pool2d(x, kernel, stride, padding)), False
    if name == 'lip2d_naive':
        return (lambda x, l: lip2d_naive(x, l, kernel, stride, padding)), True
    if name in ('lip2d', 'lip2d[torch]'):
        backend = 'torch' if name == 'lip2d[torch]' else 'auto'
        return (lambda x, l: lip2d(x, l, kernel, stride, padding, backend=backend)), True
    layer_type = {'LiteDPP': LiteDPP, 'FullDPP': FullDPP}[name]
    layer = layer_type(channels, 'asym', kernel, stride, padding).to(device)
    return (lambda x, _: layer(x)), False


def make_inputs(shape, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen)
    logit = torch.sigmoid(torch.randn(shape, generator=gen)) * 12
    return x.to(device), logit.to(device)


def run_forward(fn, x, logit):
    with torch.no_grad():
        return fn(x, logit)


def run_forward_backward(fn, x, logit, takes_logit, grad_out):
    inputs = (x.detach().requires_grad_(), logit.detach().requires_grad_() if takes_logit
              else logit)
    fn(*inputs).backward(grad_out)


def saved_bytes(fn, x, logit, takes_logit):
    """Bytes of the distinct storages autograd saves for backward."""
    storages = {}

    def pack(t):
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    xr = x.detach().requires_grad_()
    lr = logit.detach().requires_grad_() if takes_logit else logit
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(xr, lr)
    return sum(storages.values()), out.numel() * out.element_size()


def _rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _rss_worker(name, shape, window, threads, queue):
    torch.set_num_threads(threads)
    device = torch.device('cpu')
    fn, takes_logit = make_op(name, shape[1], window, device)
    small = make_inputs((1, shape[1], 8, 8), device)
    run_forward_backward(fn, *small, takes_logit, torch.ones_like(run_forward(fn, *small)))
    x, logit = make_inputs(shape, device)
    grad_out = torch.ones_like(run_forward(fn, x, logit))
    base = _rss_bytes()
    run_forward_backward(fn, x, logit, takes_logit, grad_out)
    queue.put(_rss_bytes() - base)


def cpu_peak_rss_bytes(name, shape, window, threads):
    ctx = mp.get_context('spawn')
    queue = ctx.Queue()
    proc = ctx.Process(target=_rss_worker, args=(name, shape, window, threads, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def benchmark_shape(shape, args, device):
    window = tuple(args.window)
    x, logit = make_inputs(shape, device)
    ops = {name: make_op(name, shape[1], window, device) for name in args.ops}
    grad_out = {name: torch.ones_like(run_forward(fn, x, logit)) for name, (fn, _) in ops.items()}
    times = {name: {'fwd_ms': [], 'fwd_bwd_ms': []} for name in ops}
    for round_idx in range(args.warmup + args.repeats):
        for name, (fn, takes_logit) in ops.items():
            fwd = time_ms(lambda: run_forward(fn, x, logit), device)
            step = time_ms(lambda: run_forward_backward(fn, x, logit, takes_logit,
                                                        grad_out[name]), device)
            if round_idx >= args.warmup:
                times[name]['fwd_ms'].append(fwd)
                times[name]['fwd_bwd_ms'].append(step)
    input_bytes = x.numel() * x.element_size()
    results = {}
    for name, (fn, takes_logit) in ops.items():
        entry = {k: statistics.median(v) for k, v in times[name].items()}
        saved, out_bytes = saved_bytes(fn, x, logit, takes_logit)
        inputs_and_output = input_bytes * (2 if takes_logit else 1) + out_bytes
        entry.update(saved_mb=saved / 2**20, inputs_output_mb=inputs_and_output / 2**20,
                     saved_vs_inputs_output=saved / inputs_and_output)
        if device.type == 'cuda':
            entry['peak_mb'] = cuda_peak_bytes(
                lambda: run_forward_backward(fn, x, logit, takes_logit, grad_out[name]),
                device) / 2**20
        elif args.rss:
            entry['peak_mb'] = cpu_peak_rss_bytes(name, shape, window, args.threads) / 2**20
        results[name] = entry
    for entry in results.values():
        for base in ('avg_pool2d', 'lip2d_naive'):
            if base in results:
                key = 'avg_pool2d' if base == 'avg_pool2d' else 'naive'
                entry[f'fwd_vs_{key}'] = entry['fwd_ms'] / results[base]['fwd_ms']
                entry[f'fwd_bwd_vs_{key}'] = entry['fwd_bwd_ms'] / results[base]['fwd_bwd_ms']
    return results


def check_targets(results):
    lip = results.get('lip2d')
    if lip is None or 'fwd_bwd_vs_naive' not in lip or 'fwd_vs_avg_pool2d' not in lip:
        return {}
    return {key: {'value': lip[key], 'target': limit, 'met': lip[key] <= limit}
            for key, limit in TARGETS.items()}


def format_table(shape, results):
    columns = [('fwd ms', 'fwd_ms', '{:.1f}'), ('f+b ms', 'fwd_bwd_ms', '{:.1f}'),
               ('fwd/avg', 'fwd_vs_avg_pool2d', '{:.2f}'),
               ('f+b/avg', 'fwd_bwd_vs_avg_pool2d', '{:.2f}'),
               ('fwd/naive', 'fwd_vs_naive', '{:.2f}'),
               ('f+b/naive', 'fwd_bwd_vs_naive', '{:.2f}'),
               ('saved MB', 'saved_mb', '{:.0f}'),
               ('saved/(in+out)', 'saved_vs_inputs_output', '{:.2f}'),
               ('peak MB', 'peak_mb', '{:.0f}')]
    columns = [c for c in columns if any(c[1] in e for e in results.values())]
    rows = [['op'] + [c[0] for c in columns]]
    for name, entry in results.items():
        rows.append([name] + [c[2].format(entry[c[1]]) if c[1] in entry else '-'
                              for c in columns])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"shape {'x'.join(map(str, shape))}"]
    for i, row in enumerate(rows):
        lines.append('| ' + ' | '.join(cell.ljust(w) for cell, w in zip(row, widths)) + ' |')
        if i == 0:
            lines.append('|' + '|'.join('-' * (w + 2) for w in widths) + '|')
    return '\n'.join(lines)


def parse_shape(text):
    try:
        shape = tuple(int(v) for v in text.lower().split('x'))
    except ValueError:
        shape = ()
    if len(shape) != 4 or min(shape) <= 0:
        raise argparse.ArgumentTypeError(f'shape must look like NxCxHxW, got {text!r}')
    return shape


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--shapes', nargs='+', type=parse_shape,
                        default=[parse_shape(s) for s in DEFAULT_SHAPES], metavar='NxCxHxW')
    parser.add_argument('--ops', nargs='+', choices=OPS, default=list(OPS))
    parser.add_argument('--window', nargs=3, type=int, default=(3, 2, 1),
                        metavar=('KERNEL', 'STRIDE', 'PADDING'))
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    parser.add_argument('--rss', action='store_true',
                        help='CPU: also measure peak RSS growth in a fresh process per op')
    parser.add_argument('--json-out', default='work_dirs/benchmark_pooling.json')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    import lip_mmdet.ops
    report = {
        'device': str(device),
        'device_name': (torch.cuda.get_device_name(device) if device.type == 'cuda'
                        else platform.processor() or platform.machine()),
        'threads': args.threads, 'torch': torch.__version__, 'window': list(args.window),
        'repeats': args.repeats,
        'cpu_kernels': lip_mmdet.ops.pooling_cpu_library() is not None,
        'shapes': {},
    }
    for shape in args.shapes:
        results = benchmark_shape(shape, args, device)
        key = 'x'.join(map(str, shape))
        report['shapes'][key] = {'ops': results, 'targets': check_targets(results)}
        print(format_table(shape, results))
        for name, check in report['shapes'][key]['targets'].items():
            print(f"  lip2d {name}: {check['value']:.2f} (target <= {check['target']}) "
                  f"{'met' if check['met'] else 'NOT met'}")
        print()
    if args.json_out:
        os.makedirs(osp.dirname(osp.abspath(args.json_out)), exist_ok=True)
        with open(args.json_out, 'w') as f:
            json.dump(report, f, indent=2)
        print(f'wrote {args.json_out}')
    return report


if __name__ == '__main__':
    main()
