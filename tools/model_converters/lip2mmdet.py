"""Convert an official LIP-ResNet checkpoint (lip_resnet-50.pth / -101.pth) for LIPResNet.

    python tools/model_converters/lip2mmdet.py lip_resnet-50.pth checkpoints/lip_resnet50_mmdet.pth

Use the result with ``model.backbone.init_cfg=dict(type='Pretrained', checkpoint=DST)``.
"""
import argparse
import os
import os.path as osp

import torch
from mmengine.runner.checkpoint import _load_checkpoint

from lip_mmdet.models.backbones.convert import convert_official_lip


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='official checkpoint (bare state dict)')
    parser.add_argument('dst', help='where to write the converted checkpoint')
    parser.add_argument('--depth', type=int, choices=(50, 101, 152),
                        help='ResNet depth (default: inferred from the checkpoint)')
    return parser.parse_args()


def main():
    args = parse_args()
    if not osp.isfile(args.src):
        raise FileNotFoundError(f'source checkpoint {args.src!r} not found')
    state_dict, info = convert_official_lip(_load_checkpoint(args.src, map_location='cpu'),
                                            depth=args.depth)
    meta = dict(source=osp.basename(args.src), converter='tools/model_converters/lip2mmdet.py',
                architecture=f'LIPResNet-{info["depth"]}', **info)
    if osp.dirname(args.dst):
        os.makedirs(osp.dirname(args.dst), exist_ok=True)
    torch.save(dict(state_dict=state_dict, meta=meta), args.dst)
    print(f'converted {len(state_dict)} tensors of LIPResNet-{info["depth"]} to {args.dst} '
          f'(dropped {len(info["dropped_keys"])} classifier keys: '
          f'{", ".join(info["dropped_keys"]) or "none"})')


if __name__ == '__main__':
    main()
