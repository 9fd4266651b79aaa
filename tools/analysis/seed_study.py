"""Train configs with several seeds on the demo data and compare them with error bars.

Every config x seed pair is one demo run (tools/run_demo.py's data and training); finished
runs are kept and skipped when the study is started again. Writes <work-dir>/seed_study.json
(per config: mean and std of AP, AP50, AP_s and AP per size bin; per config against the
first: paired differences per seed with a 95% t interval) and <work-dir>/seed_study.png.

Example:
    python tools/analysis/seed_study.py --configs configs/demo/faster_rcnn_r18_demo.py \
        configs/demo/faster_rcnn_lip_r18_demo.py --seeds 0 1 2 --work-dir work_dirs/study
"""
import argparse
import os.path as osp
import sys
import warnings

# runs from a checkout without PYTHONPATH or an installed lip_mmdet
sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

# as in tools/run_demo.py: a dependency's import warns at every run, about nothing the user does
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

from lip_mmdet.apis import PreflightError  # noqa: E402
from lip_mmdet.demo import add_demo_run_args, train_demo  # noqa: E402
from lip_mmdet.evaluation.seed_study import (  # noqa: E402
    STUDY_FILE,
    format_study,
    run_seed_study,
)
from lip_mmdet.visualization import plot_seed_study  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--configs', nargs='+', required=True,
                        help='demo configs; the first is the reference of the differences')
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2],
                        help='randomness.seed of the runs')
    parser.add_argument('--work-dir', required=True,
                        help='study folder: one work dir per run, the JSON and the plot')
    add_demo_run_args(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    missing = [c for c in args.configs if not osp.isfile(c)]
    if missing:
        print(f'error: --configs: no such file: {", ".join(missing)}', file=sys.stderr)
        return 2
    train_kwargs = dict(data_parent=args.data, epochs=args.epochs, num_train=args.num_train,
                        num_val=args.num_val, cfg_options=args.cfg_options,
                        verbose=args.verbose)
    try:
        study = run_seed_study(args.configs, args.seeds, args.work_dir, train_demo,
                               train_kwargs=train_kwargs, log=lambda s: print(s, flush=True))
    except (PreflightError, ValueError, FileExistsError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    plot = plot_seed_study(study, osp.join(args.work_dir, 'seed_study.png'))
    print(format_study(study))
    print(f'[study] results: {osp.join(args.work_dir, STUDY_FILE)}\n[study] plot: {plot}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
