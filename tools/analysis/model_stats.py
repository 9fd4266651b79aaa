"""Parameters and FLOPs of backbones next to the stock ResNet of the same depth.

Each argument is a config file (its ``model.backbone`` is used), a dict literal such as
``"dict(type='LIPResNet', depth=50)"``, or a registered type name (depth from ``--depth``).

    python tools/analysis/model_stats.py LIPResNet DPPResNet --depth 50
    python tools/analysis/model_stats.py configs/faster_rcnn/faster-rcnn_lip-r50_fpn_1x_coco.py

Prints a table and writes JSON (``--out``). FLOPs count multiply-adds of convs / linear layers
/ norms (fvcore rules, as the published figures); pooling arithmetic is listed as skipped.
"""
import argparse
import ast
import json
import os
import os.path as osp

import lip_mmdet  # noqa: F401  (registers the backbones)
from lip_mmdet.models.backbones.complexity import backbone_complexity


def parse_backbone(text: str, depth: int) -> dict:
    """A backbone config from a config file, a dict literal or a type name."""
    if osp.isfile(text):
        from mmengine.config import Config
        cfg = Config.fromfile(text)
        if 'model' not in cfg or 'backbone' not in cfg.model:
            raise KeyError(f'{text} has no model.backbone')
        return cfg.model.backbone.to_dict()
    if text.startswith(('dict(', '{')):
        node = ast.parse(text, mode='eval').body
        if isinstance(node, ast.Call) and getattr(node.func, 'id', None) == 'dict' \
                and not node.args:
            return {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords}
        value = ast.literal_eval(node)
        if not isinstance(value, dict):
            raise ValueError(f'{text!r} is not a dict')
        return value
    if text.isidentifier():
        return dict(type=text, depth=depth)
    raise ValueError(f'{text!r} is neither a config file, a dict literal nor a type name')


def describe(cfg: dict) -> str:
    """``Type-depth option=value ...`` for a backbone config."""
    options = ' '.join(f'{k}={v}' for k, v in cfg.items() if k not in ('type', 'depth'))
    return f'{cfg["type"]}-{cfg["depth"]} {options}'.rstrip()


def print_row(row: dict, flop_keys) -> None:
    print(describe(row['config']))
    depth = row['config']['depth']
    for name, side in ((row['config']['type'], 'model'), (f'ResNet-{depth}', 'stock')):
        entry = row[side]
        ratios = row['ratio'] if side == 'model' else {}
        line = f'  {name:<20}{entry["params"] / 1e6:>12.2f}{ratios.get("params", 1):>8.3f}'
        line += ''.join(f'{entry[k] / 1e9:>20.2f}{ratios.get(k, 1):>8.3f}' for k in flop_keys)
        print(line)
    if 'params_with_imagenet_fc' in row['model']:
        print(f'  with a 1000-class fc: {row["model"]["params_with_imagenet_fc"] / 1e6:.2f}M '
              f'(stock {row["stock"]["params_with_imagenet_fc"] / 1e6:.2f}M)')
    if row['model']['skipped_ops']:
        print(f'  not counted: {row["model"]["skipped_ops"]}', flush=True)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('backbones', nargs='+', metavar='CONFIG_OR_TYPE')
    parser.add_argument('--depth', type=int, default=50, help='depth for bare type names')
    parser.add_argument('--sizes', nargs='+', default=['224x224', '800x1333'],
                        help='input sizes HxW')
    parser.add_argument('--out', default='work_dirs/model_stats.json', help='JSON output')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    sizes = [tuple(int(v) for v in s.lower().split('x')) for s in args.sizes]
    flop_keys = [f'flops@{h}x{w}' for h, w in sizes]
    print(f'{"":<22}{"params (M)":>12}{"ratio":>8}' +
          ''.join(f'{k[6:] + " GFLOPs":>20}{"ratio":>8}' for k in flop_keys), flush=True)
    rows = []
    for text in args.backbones:
        cfg = parse_backbone(text, args.depth)
        row = dict(backbone=text, config=cfg, **backbone_complexity(cfg, sizes))
        rows.append(row)
        print_row(row, flop_keys)
    if osp.dirname(args.out):
        os.makedirs(osp.dirname(args.out), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(rows, f, indent=2, default=str)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
