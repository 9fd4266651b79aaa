"""Plot each pooling layer's behaviour over training and its final value per depth.

A run is a work dir trained with PoolingStatsHook (its vis_data/scalars.json: LIP effective
window, DPP lambda/alpha) or a checkpoint (DPP lambda/alpha only); runs are drawn side by
side.

Example:
    python tools/analysis/plot_pooling.py work_dirs/demo_lip_r18 work_dirs/demo_dpp_r18 \
        --out pooling.png
"""
import argparse
import os.path as osp
import sys

# runs from a checkout without PYTHONPATH or an installed lip_mmdet
sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from lip_mmdet.evaluation.compare import run_names  # noqa: E402
from lip_mmdet.utils import CHECKPOINT_ERRORS  # noqa: E402
from lip_mmdet.visualization import load_pooling_history, plot_pooling_runs  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('runs', nargs='+', metavar='WORK_DIR',
                        help='work dirs (or checkpoint files), one per run')
    parser.add_argument('--names', nargs='+', help='run names (default: folder names)')
    parser.add_argument('--out', required=True, help='PNG to write')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        names = run_names(args.runs, args.names)
    except ValueError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    try:
        runs = [load_pooling_history(r) for r in args.runs]
    except (FileNotFoundError, *CHECKPOINT_ERRORS) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    for name, run in zip(names, runs):
        print(f'{name}: {run["source"]}')
    print(plot_pooling_runs(runs, names, args.out))
    return 0


if __name__ == '__main__':
    sys.exit(main())
