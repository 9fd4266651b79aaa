#!/usr/bin/env python
"""Run the embedded CPU demo: generate the small-object data, train, evaluate, chart.

The data goes to its own folder per data setting (<data>/<setting>/, reused when it exists),
training runs with tools/train.py's checks and the schedule fitted to --epochs and
--num-train, and the evaluation's numbers end in a short summary with the AP-by-size chart.
mmengine's full log stays in the work dir (on screen with --verbose). docs/demo.md has the
measured numbers and time.
"""
import argparse
import os.path as osp
import sys
import warnings

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)

# pkg_resources' deprecation notice comes from an import inside a dependency, at every run,
# and says nothing about the demo
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

from lip_mmdet.apis import PreflightError  # noqa: E402
from lip_mmdet.demo import (  # noqa: E402
    add_demo_run_args,
    data_setting_name,
    demo_config,
    train_demo,
)
from lip_mmdet.evaluation import format_comparison, plot_ap_by_size  # noqa: E402
from lip_mmdet.visualization import demo_importance_maps  # noqa: E402

DEFAULT_CONFIG = osp.join(REPO, 'configs', 'demo', 'faster_rcnn_lip_r18_demo.py')


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows real defaults; flags and options whose help names their default get none."""

    def _get_help_string(self, action):
        if action.default in (None, False, {}):
            return action.help
        return super()._get_help_string(action)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=_HelpFormatter)
    parser.add_argument('--config', help='demo config (configs/demo/*.py; its demo_data '
                        'dict describes the data) (default: this repository\'s '
                        'configs/demo/faster_rcnn_lip_r18_demo.py)')
    parser.add_argument('--work-dir', default='work_dirs/demo_lip_r18',
                        help='logs, checkpoint, size_aware_metrics.json and the chart')
    add_demo_run_args(parser)
    parser.add_argument('--seed', type=int, help="randomness.seed (default: the config's)")
    parser.add_argument('--name', help='run name in the table and chart (default: the '
                        'config file name)')
    args = parser.parse_args(argv)
    args.config = args.config or DEFAULT_CONFIG
    return args


def _header(args, cfg) -> str:
    data = cfg.demo_data
    batch = cfg.train_dataloader.batch_size
    iters = cfg.train_cfg.max_epochs * -(-data['num_train'] // batch)
    folder = osp.join(args.data, data_setting_name(**data))
    epochs = cfg.train_cfg.max_epochs
    return '\n'.join([
        f'[demo] {osp.relpath(args.config)}',
        f'[demo] data: {data["num_train"]} train / {data["num_val"]} val images of '
        f'{data["image_size"]} px in {folder} (generated once, then reused)',
        f'[demo] training: {epochs} epoch{"s" * (epochs != 1)} = {iters} iterations of batch '
        f'{batch} on the CPU, then COCO evaluation with size bins',
        f'[demo] logs and results: {args.work_dir}'
        + ('' if args.verbose else ' (full mmengine log there; --verbose shows it here)'),
    ])


def main(argv=None) -> int:
    args = parse_args(argv)
    options = dict(config=args.config, work_dir=args.work_dir, epochs=args.epochs,
                   num_train=args.num_train, num_val=args.num_val, seed=args.seed,
                   cfg_options=args.cfg_options)
    try:
        print(_header(args, demo_config(**options)), flush=True)
        run = train_demo(data_parent=args.data, verbose=args.verbose, **options)
    except (PreflightError, ValueError, FileExistsError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2

    name = args.name or osp.splitext(osp.basename(args.config))[0]
    chart = plot_ap_by_size([run], [name], osp.join(args.work_dir, 'ap_by_size.png'),
                            title=f'{name}: bbox AP by object size')
    print(f'\n[demo] results ({run["source"]}):')
    print(format_comparison([run], [name]))
    print(f'[demo] AP-by-size chart: {chart}')
    maps = demo_importance_maps(args.config, args.work_dir, run['data_root'])
    if maps:
        print(f'[demo] importance maps of two validation images: {maps}')
    print(f'[demo] full log: {run["log_file"]}')
    print(f'[demo] bbox_mAP {run["coco"]["mAP"]:.3f}, total time {run["seconds"]:.0f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
