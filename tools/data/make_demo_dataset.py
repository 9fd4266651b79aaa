"""Generate the embedded small-object demo dataset (COCO format).

Example:
    python tools/data/make_demo_dataset.py --out data/demo --num-train 400 --num-val 100
"""
import argparse

from lip_mmdet.datasets import make_demo_dataset


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='data/demo', help='dataset root to write')
    parser.add_argument('--num-train', type=int, default=400)
    parser.add_argument('--num-val', type=int, default=100)
    parser.add_argument('--size', type=int, nargs='+', default=[256],
                        help='image size: S or H W (pixels)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--objects', type=int, nargs=2, default=[4, 12], metavar=('MIN', 'MAX'),
                        help='objects tried per image (inclusive range)')
    parser.add_argument('--format', choices=('jpg', 'png'), default='jpg')
    parser.add_argument('--reuse-existing', action='store_true',
                        help='keep splits already generated with the same parameters')
    parser.add_argument('--no-progress', action='store_true')
    return parser.parse_args()


def main():
    args = parse_args()
    if len(args.size) not in (1, 2):
        raise SystemExit(f'--size takes S or H W, got {args.size}')
    size = args.size[0] if len(args.size) == 1 else tuple(args.size)
    paths = make_demo_dataset(args.out, num_train=args.num_train, num_val=args.num_val,
                              image_size=size, seed=args.seed, image_ext=args.format,
                              objects_per_image=tuple(args.objects),
                              reuse_existing=args.reuse_existing,
                              progress=not args.no_progress)
    for key, path in paths.items():
        print(f'{key}: {path}')


if __name__ == '__main__':
    main()
