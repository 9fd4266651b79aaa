"""Compare detection runs side by side: AP table and a bar chart of AP by object size.

Example:
    python tools/analysis/compare_runs.py work_dirs/r18 work_dirs/lip_r18 \
        --names ResNet-18 LIP-ResNet-18 --out ap_by_size.png
"""
import argparse
import os.path as osp

from lip_mmdet.evaluation.compare import (format_comparison, load_run_metrics,
                                          plot_ap_by_size)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('work_dirs', nargs='+', help='mmengine work dirs, one per run')
    parser.add_argument('--names', nargs='+', help='run names (default: folder names)')
    parser.add_argument('--out', default=None,
                        help='bar chart PNG (default: ap_by_size.png in the first work dir)')
    parser.add_argument('--metric', default='bbox', choices=('bbox', 'segm'))
    return parser.parse_args()


def main():
    args = parse_args()
    names = args.names or [osp.basename(osp.normpath(d)) for d in args.work_dirs]
    if len(names) != len(args.work_dirs):
        raise SystemExit(f'--names has {len(names)} entries for '
                         f'{len(args.work_dirs)} work dirs')
    runs = [load_run_metrics(d, args.metric) for d in args.work_dirs]
    for name, run in zip(names, runs):
        print(f'{name}: {run["source"]}')
    print(format_comparison(runs, names))
    out = args.out or osp.join(args.work_dirs[0], 'ap_by_size.png')
    plot_ap_by_size(runs, names, out, title=f'{args.metric} AP by object size')
    print(f'bar chart: {out}')


if __name__ == '__main__':
    main()
