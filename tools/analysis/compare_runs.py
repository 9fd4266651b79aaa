"""Compare detection runs side by side: AP table and a bar chart of AP by object size.

Example:
    python tools/analysis/compare_runs.py work_dirs/r18 work_dirs/lip_r18 \
        --names ResNet-18 LIP-ResNet-18 --out ap_by_size.png
"""
import argparse
import os.path as osp
import sys

from lip_mmdet.evaluation.compare import (
    format_comparison,
    gt_count_mismatch,
    load_run_metrics,
    plot_ap_by_size,
    run_names,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('work_dirs', nargs='+', help='mmengine work dirs, one per run')
    parser.add_argument('--names', nargs='+', help='run names (default: folder names)')
    parser.add_argument('--out', default=None,
                        help='bar chart PNG (default: ap_by_size.png in the first work dir)')
    parser.add_argument('--metric', default='bbox', choices=('bbox', 'segm'),
                        help='which evaluation to compare')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        names = run_names(args.work_dirs, args.names, what='work dirs')
        runs = [load_run_metrics(d, args.metric) for d in args.work_dirs]
    except (OSError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    for name, run in zip(names, runs):
        print(f'{name}: {run["source"]}')
    warning = gt_count_mismatch(runs, names)
    if warning:
        print(f'warning: {warning}', file=sys.stderr)
    print(format_comparison(runs, names))
    out = args.out or osp.join(args.work_dirs[0], 'ap_by_size.png')
    plot_ap_by_size(runs, names, out, title=f'{args.metric} AP by object size')
    print(f'bar chart: {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
