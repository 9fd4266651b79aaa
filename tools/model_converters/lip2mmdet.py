"""Convert an official LIP-ResNet checkpoint (lip_resnet-50.pth / -101.pth) for LIPResNet.

    python tools/model_converters/lip2mmdet.py lip_resnet-50.pth checkpoints/lip_resnet50_mmdet.pth

Use the result with ``model.backbone.init_cfg=dict(type='Pretrained', checkpoint=DST)``. SRC may
also be a URL or any mmengine checkpoint path; it is loaded with the same allow-list as every
checkpoint (no pickled code runs). User errors end in one message and exit code 2.
"""
import argparse
import os
import os.path as osp
import sys
import tempfile

# runs from a checkout without PYTHONPATH or an installed lip_mmdet
sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import torch  # noqa: E402
from mmengine.runner.checkpoint import _load_checkpoint  # noqa: E402

from lip_mmdet.models.backbones.convert import convert_official_lip  # noqa: E402
from lip_mmdet.models.backbones.pretrained import extract_state_dict  # noqa: E402
from lip_mmdet.utils import CHECKPOINT_ERRORS  # noqa: E402


class UserError(Exception):
    """Bad input: printed as one line, exit code 2."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='official checkpoint (bare state dict), path or URL')
    parser.add_argument('dst', help='where to write the converted checkpoint')
    parser.add_argument('--depth', type=int, choices=(50, 101, 152),
                        help='ResNet depth (default: inferred from the checkpoint)')
    return parser.parse_args(argv)


def _is_torchvision_layout(state_dict):
    """A stock torchvision / mmdet ResNet: ``downsample.0`` shortcuts and no LIP logits."""
    return (any('.downsample.0.' in k for k in state_dict)
            and not any(k.startswith('maxpool.logit.') or '.bottleneck_shared.' in k
                        for k in state_dict))


def _load_source(src):
    if '://' not in src:
        if osp.isdir(src):
            raise UserError(f'source checkpoint {src} is a directory; give the .pth file')
        if not osp.isfile(src):
            raise UserError(f'source checkpoint {src} not found '
                            f'(absolute: {osp.abspath(src)})')
    try:
        return _load_checkpoint(src, map_location='cpu')
    except CHECKPOINT_ERRORS as err:
        raise UserError(str(err)) from None


def _convert(src, checkpoint, depth):
    try:
        return convert_official_lip(checkpoint, depth=depth)
    except (ValueError, TypeError, KeyError) as err:
        try:
            stock = _is_torchvision_layout(extract_state_dict(checkpoint))
        except (ValueError, TypeError, KeyError):
            stock = False
        if stock:
            raise UserError(
                f'{src} is a torchvision-layout ResNet checkpoint, not an official LIP-ResNet: '
                'it needs no conversion. Give it to LIPResNet directly: '
                f"model.backbone.init_cfg=dict(type='Pretrained', checkpoint='{src}') (the new "
                'LIP parameters keep their initialisation).') from None
        raise UserError(f'{src}: {err.args[0] if err.args else err}') from None


def _write(dst, checkpoint):
    """Write through a temporary file in the same folder, so a failure leaves no partial file."""
    if osp.isdir(dst):
        raise UserError(f'destination {dst} is a directory; give a file name, e.g. '
                        f'{osp.join(dst, "lip_resnet50_mmdet.pth")}')
    folder = osp.dirname(osp.abspath(dst))
    try:
        os.makedirs(folder, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=folder, suffix='.part')
    except OSError as err:
        raise UserError(f'cannot write {dst}: {err.strerror or err}') from None
    try:
        with os.fdopen(handle, 'wb') as stream:
            torch.save(checkpoint, stream)
        os.replace(tmp, dst)
    except OSError as err:
        raise UserError(f'cannot write {dst}: {err.strerror or err}') from None
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def main(argv=None):
    """Returns the exit code: 0, or 2 after printing one line for a user error."""
    args = parse_args(argv)
    try:
        checkpoint = _load_source(args.src)
        state_dict, info = _convert(args.src, checkpoint, args.depth)
        meta = dict(source=osp.basename(args.src),
                    converter='tools/model_converters/lip2mmdet.py',
                    architecture=f'LIPResNet-{info["depth"]}', **info)
        _write(args.dst, dict(state_dict=state_dict, meta=meta))
    except UserError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    print(f'converted {len(state_dict)} tensors of LIPResNet-{info["depth"]} to {args.dst} '
          f'(dropped {len(info["dropped_keys"])} classifier keys: '
          f'{", ".join(info["dropped_keys"]) or "none"})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
