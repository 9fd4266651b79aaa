"""Generate the embedded small-object demo dataset (COCO format, boxes and polygon masks).

Example:
    python tools/data/make_demo_dataset.py --num-train 400 --num-val 100 --size 192 \
        --objects 6 16

writes data/demo/<setting>/ (the folder tools/run_demo.py uses for the same setting).

The dataset is written to a temporary folder beside --out and renamed into place when
complete. A non-empty --out is refused unless --reuse-existing finds the same dataset there
or --overwrite allows replacing it.
"""
import argparse
import os.path as osp
import sys

from lip_mmdet.demo import data_setting_name, make_demo_dataset


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--out', help='dataset root to write (default: '
                        'data/demo/<setting name>, e.g. data/demo/'
                        'v4_train400_val100_256x256_obj4-12_seed0_jpg)')
    parser.add_argument('--num-train', type=int, default=400, help='training images')
    parser.add_argument('--num-val', type=int, default=100, help='validation images')
    parser.add_argument('--size', type=int, nargs='+', default=[256], metavar='PX',
                        help='image size: S or H W (pixels, at least 32)')
    parser.add_argument('--seed', type=int, default=0, help='the only source of randomness')
    parser.add_argument('--objects', type=int, nargs=2, default=[4, 12], metavar=('MIN', 'MAX'),
                        help='objects tried per image (inclusive range)')
    parser.add_argument('--format', choices=('jpg', 'png'), default='jpg', help='image format')
    parser.add_argument('--reuse-existing', action='store_true',
                        help='keep a dataset already generated there with the same parameters')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace what --out holds (once the new dataset is complete)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bars')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if len(args.size) not in (1, 2):
        print(f'error: --size takes S or H W, got {args.size}', file=sys.stderr)
        return 2
    setting = dict(num_train=args.num_train, num_val=args.num_val,
                   image_size=args.size[0] if len(args.size) == 1 else tuple(args.size),
                   seed=args.seed, image_ext=args.format, objects_per_image=tuple(args.objects))
    try:
        out = args.out or osp.join('data', 'demo', data_setting_name(**setting))
        paths = make_demo_dataset(out, reuse_existing=args.reuse_existing,
                                  overwrite=args.overwrite, progress=not args.no_progress,
                                  **setting)
    except (ValueError, FileExistsError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    for key, path in paths.items():
        print(f'{key}: {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
