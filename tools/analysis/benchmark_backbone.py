"""Time and peak memory of LIP-ResNet and DPP-ResNet against ResNet, measured in one run.

    python tools/analysis/benchmark_backbone.py --batch 2 --size 224 224 --repeats 20

Forward: eval mode, no grad. Forward+backward: train mode, ``sum(outputs).backward()``, all
parameters trainable (BN in train mode). Timing rounds interleave the models so drift on a
shared machine hits them alike; medians are reported. Peak memory is the extra memory a pass
needs over the built model and its input: CUDA's allocator peak on a GPU; on CPU the peak
resident set size of a fresh process per model (an upper bound: allocator slack included).
Prints a table and writes JSON with ratios to the first model (the baseline).
"""
import argparse
import json
import multiprocessing as mp
import os
import os.path as osp
import platform
import resource
import statistics
import time

import torch

DEFAULT_MODELS = ('ResNet', 'LIPResNet', 'DPPResNet')
# Highest accepted fwd+bwd time ratio to ResNet (issue 4).
TARGETS = {'LIPResNet': 1.35, 'DPPResNet': 1.25}


def build(model_type: str, depth: int):
    import lip_mmdet  # noqa: F401  (registers the backbones)
    from mmdet.registry import MODELS
    model = MODELS.build(dict(type=model_type, depth=depth, norm_eval=False))
    model.init_weights()
    return model


def sync(device: torch.device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def forward(model, x):
    model.eval()
    with torch.no_grad():
        model(x)


def train_step(model, x):
    model.train()
    outs = model(x)
    sum(o.float().sum() for o in outs).backward()
    model.zero_grad(set_to_none=True)


def timed(fn, model, x, device) -> float:
    sync(device)
    start = time.perf_counter()
    fn(model, x)
    sync(device)
    return (time.perf_counter() - start) * 1e3


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _cpu_peak_worker(model_type, depth, shape, threads, queue):
    torch.set_num_threads(threads)
    model = build(model_type, depth)
    x = torch.randn(*shape)
    base = _rss_mb()
    forward(model, x)
    fwd = _rss_mb() - base
    train_step(model, x)
    queue.put((fwd, _rss_mb() - base))


def peak_memory_mb(model_type, depth, shape, device, threads):
    """(forward, forward+backward) extra peak memory in MiB."""
    if device.type == 'cuda':
        model = build(model_type, depth).to(device)
        x = torch.randn(*shape, device=device)
        peaks = []
        for fn in (forward, train_step):
            sync(device)
            base = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            fn(model, x)
            sync(device)
            peaks.append((torch.cuda.max_memory_allocated(device) - base) / 2**20)
        del model, x
        torch.cuda.empty_cache()
        return tuple(peaks)
    ctx = mp.get_context('spawn')
    queue = ctx.Queue()
    proc = ctx.Process(target=_cpu_peak_worker, args=(model_type, depth, shape, threads, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--models', nargs='+', default=list(DEFAULT_MODELS),
                        help='registered backbone types; the first is the baseline')
    parser.add_argument('--depth', type=int, default=50)
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--size', type=int, nargs=2, default=(224, 224), metavar=('H', 'W'))
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    parser.add_argument('--no-memory', action='store_true', help='skip the memory measurement')
    parser.add_argument('--out', default='work_dirs/benchmark_backbone.json')
    return parser.parse_args()


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    shape = (args.batch, 3, *args.size)
    torch.manual_seed(0)
    models = {name: build(name, args.depth).to(device) for name in args.models}
    x = torch.randn(*shape, device=device)
    times = {name: {'fwd': [], 'fwd_bwd': []} for name in models}
    for round_idx in range(args.warmup + args.repeats):
        for name, model in models.items():
            fwd = timed(forward, model, x, device)
            step = timed(train_step, model, x, device)
            if round_idx >= args.warmup:
                times[name]['fwd'].append(fwd)
                times[name]['fwd_bwd'].append(step)
    del models

    results = {}
    for name in args.models:
        entry = {k: statistics.median(v) for k, v in times[name].items()}
        if not args.no_memory:
            entry['peak_fwd_mb'], entry['peak_fwd_bwd_mb'] = peak_memory_mb(
                name, args.depth, shape, device, args.threads)
        results[name] = entry
    base = results[args.models[0]]
    for name, entry in results.items():
        entry['ratio'] = {k: v / base[k] for k, v in entry.items() if k != 'ratio' and base[k]}
        if name in TARGETS:
            entry['target_fwd_bwd_ratio'] = TARGETS[name]
            entry['meets_target'] = entry['ratio']['fwd_bwd'] <= TARGETS[name]

    columns = ['fwd', 'fwd_bwd'] + ([] if args.no_memory else ['peak_fwd_mb', 'peak_fwd_bwd_mb'])
    titles = {'fwd': 'fwd ms', 'fwd_bwd': 'fwd+bwd ms', 'peak_fwd_mb': 'fwd MiB',
              'peak_fwd_bwd_mb': 'fwd+bwd MiB'}
    print(f'{args.depth}-layer backbones, input {shape}, {device}, {args.threads} threads, '
          f'median of {args.repeats}')
    print(f'{"model":<12}' + ''.join(f'{titles[c]:>14}{"ratio":>7}' for c in columns) +
          f'{"target":>9}')
    for name, entry in results.items():
        target = ''
        if name in TARGETS:
            target = ('ok' if entry['meets_target'] else 'MISS') + f' {TARGETS[name]}'
        print(f'{name:<12}' + ''.join(f'{entry[c]:>14.1f}{entry["ratio"][c]:>7.2f}'
                                      for c in columns) + f'{target:>9}')

    report = dict(device=str(device), device_name=(torch.cuda.get_device_name(device)
                                                   if device.type == 'cuda' else
                                                   platform.processor() or platform.machine()),
                  threads=args.threads, torch=torch.__version__, input_shape=list(shape),
                  depth=args.depth, repeats=args.repeats, baseline=args.models[0],
                  results=results)
    if osp.dirname(args.out):
        os.makedirs(osp.dirname(args.out), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(report, f, indent=2)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
