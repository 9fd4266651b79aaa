#!/usr/bin/env python
"""The embedded demo (``make demo``): data, CPU training, evaluation, report, plot.

1. generates the small-object dataset the config's ``demo_data`` describes (kept when it
   already exists with the same parameters);
2. trains the config with tools/train.py's code; the last epoch ends with the evaluation,
   which prints COCO's table (AP, AP_s, ...) and the size-binned table;
3. prints the run's AP table and writes the AP-by-size bar chart.

    python tools/run_demo.py [--config CFG] [--work-dir DIR] [--data DIR]
        [--num-train N --num-val N --epochs E] [--cfg-options KEY=VALUE ...]

docs/demo.md has the expected numbers and time.
"""
import argparse
import os.path as osp
import sys
import time

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)

from mmengine.config import Config  # noqa: E402

from lip_mmdet.datasets import make_demo_dataset  # noqa: E402
from lip_mmdet.evaluation import (format_comparison, load_run_metrics,  # noqa: E402
                                  plot_ap_by_size)
from lip_mmdet.utils.launch import train_main  # noqa: E402

DEFAULT_CONFIG = osp.join(REPO, 'configs', 'demo', 'faster_rcnn_lip_r18_demo.py')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Run the embedded CPU demo')
    parser.add_argument('--config', default=DEFAULT_CONFIG)
    parser.add_argument('--work-dir', default='work_dirs/demo_lip_r18')
    parser.add_argument('--data', default='data/demo', help='dataset folder')
    parser.add_argument('--num-train', type=int, help="override demo_data['num_train']")
    parser.add_argument('--num-val', type=int, help="override demo_data['num_val']")
    parser.add_argument('--epochs', type=int, help='override train_cfg.max_epochs')
    parser.add_argument('--name', default=None, help='run name in the table and chart')
    parser.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                        help='passed on to tools/train.py (after the demo\'s own)')
    return parser.parse_args(argv)


def _data_options(data_root: str) -> dict:
    """Point every dataloader and evaluator of the config at ``data_root``."""
    root = data_root.rstrip('/') + '/'
    val_ann = root + 'annotations/instances_val.json'
    return {
        'train_dataloader.dataset.data_root': root,
        'val_dataloader.dataset.data_root': root,
        'test_dataloader.dataset.data_root': root,
        'val_evaluator.ann_file': val_ann,
        'test_evaluator.ann_file': val_ann,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    demo_data = dict(Config.fromfile(args.config).get('demo_data', {}))
    if args.num_train is not None:
        demo_data['num_train'] = args.num_train
    if args.num_val is not None:
        demo_data['num_val'] = args.num_val
    print(f'[demo] dataset {args.data}: {demo_data}')
    make_demo_dataset(args.data, reuse_existing=True, **demo_data)

    options = _data_options(args.data)
    if args.epochs is not None:
        options.update({'train_cfg.max_epochs': args.epochs,
                        'train_cfg.val_interval': args.epochs})
    train_argv = [args.config, '--work-dir', args.work_dir, '--cfg-options'] + [
        f'{key}={value}' for key, value in options.items()] + args.cfg_options
    print(f'[demo] training: tools/train.py {" ".join(train_argv)}')
    code = train_main(train_argv)
    if code != 0:
        return code

    name = args.name or osp.splitext(osp.basename(args.config))[0]
    run = load_run_metrics(args.work_dir)
    print(f'[demo] results ({run["source"]}):')
    print(format_comparison([run], [name]))
    chart = plot_ap_by_size([run], [name], osp.join(args.work_dir, 'ap_by_size.png'),
                            title=f'{name}: bbox AP by object size')
    print(f'[demo] AP-by-size chart: {chart}')
    print(f'[demo] bbox_mAP {run["coco"]["mAP"]:.3f}, total time '
          f'{time.perf_counter() - start:.0f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
