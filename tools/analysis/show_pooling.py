"""Draw what each LIP / DPP pooling layer of a model favours in some images.

For every image (run through the config's test pipeline): the image, then per pooling layer
its per-pixel importance (normalised window weights relative to average pooling, mean over
channels) overlaid and titled with the layer name and stride; ground-truth boxes when the
config's dataset annotates the image. Without CHECKPOINT the model is randomly initialised
(and the picture says so). Writes <out-dir>/<image name>_pooling.png per image.

Example:
    python tools/analysis/show_pooling.py configs/demo/faster_rcnn_lip_r18_demo.py \
        work_dirs/demo_lip_r18/epoch_4.pth --images data/demo/val/000000.png --out-dir vis
"""
import argparse
import os.path as osp
import sys

# runs from a checkout without PYTHONPATH or an installed lip_mmdet
sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from lip_mmdet.utils import CHECKPOINT_ERRORS  # noqa: E402
from lip_mmdet.visualization import show_pooling  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='detector or backbone config')
    parser.add_argument('checkpoint', nargs='?', default=None,
                        help='weights (default: random initialisation)')
    parser.add_argument('--images', nargs='+', required=True, help='image files')
    parser.add_argument('--out-dir', required=True, help='folder for the PNGs')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    for what, path in (('config', args.config), ('checkpoint', args.checkpoint)):
        if path is not None and not osp.isfile(path):
            print(f'error: {what} not found: {path}', file=sys.stderr)
            return 2
    try:
        written = show_pooling(args.config, args.checkpoint, args.images, args.out_dir)
    except (FileNotFoundError, ValueError, *CHECKPOINT_ERRORS) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == '__main__':
    sys.exit(main())
