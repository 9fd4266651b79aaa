#!/usr/bin/env python
"""Export a config's model to ONNX (standard operators only) and check it in ONNX Runtime.

    python tools/deployment/export_onnx.py CONFIG [CHECKPOINT] --out FILE [--shape H W]
        [--opset N] [--dynamic] [--verify] [--exporter dynamo|torchscript]
        [--cfg-options KEY=VALUE ...]

CONFIG is a backbone config (``model = dict(type='LIPResNet', ...)``) or a detector config;
of a detector the graph holds backbone, neck and the dense head's raw outputs (see
docs/deployment.md for what stays outside). Without CHECKPOINT the model keeps the weights it
is built with (a check of the export, not a deployable file). ``--verify`` runs the file in
ONNX Runtime on a random input of the export shape (and, with ``--dynamic``, of a second
shape with odd sides) and prints the largest relative difference to PyTorch; above
``--tolerance`` it fails with one line.
"""
import argparse
import os.path as osp
import sys

# runs from a checkout without PYTHONPATH or an installed lip_mmdet
sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import torch  # noqa: E402

import lip_mmdet  # noqa: E402,F401  (registers modules and the ops' ONNX translations)
from lip_mmdet import deployment  # noqa: E402
from lip_mmdet.apis import PreflightError, check_checkpoint, check_checkpoint_fits  # noqa: E402
from lip_mmdet.apis.launch import load_config  # noqa: E402
from lip_mmdet.models.backbones.pretrained import strip_pretrained  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='backbone or detector config')
    parser.add_argument('checkpoint', nargs='?', default=None,
                        help='weights to export (default: the weights the model is built with)')
    parser.add_argument('--out', required=True, help='the .onnx file to write')
    parser.add_argument('--shape', type=int, nargs=2, default=(800, 1344), metavar=('H', 'W'),
                        help='input height and width to export (and verify) at')
    parser.add_argument('--opset', type=int, default=18, help='ONNX opset version (17 or 18)')
    parser.add_argument('--dynamic', action='store_true',
                        help='dynamic input height and width (the batch stays 1)')
    parser.add_argument('--verify', action='store_true',
                        help='compare ONNX Runtime with PyTorch on random inputs')
    parser.add_argument('--tolerance', type=float, default=deployment.PARITY_TOLERANCE,
                        help='largest relative difference --verify accepts')
    parser.add_argument('--exporter', choices=deployment.EXPORTERS, default='dynamo',
                        help="torch.onnx.export's exporter: 'dynamo' (torch.export) or "
                        "'torchscript' (the tracer mmdeploy uses, faster to export)")
    parser.add_argument('--cfg-options', nargs='+', default=None, metavar='KEY=VALUE',
                        help='override settings of the config, e.g. '
                        'model.backbone.depth=18')
    return parser.parse_args(argv)


def build_model(args):
    """The model to export, with the checkpoint's weights; PreflightError for bad input."""
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    from mmengine.runner import load_checkpoint

    cfg = load_config(argparse.Namespace(config=args.config, cfg_options=args.cfg_options,
                                          launcher='none', work_dir=None, local_rank=0))
    if args.checkpoint is not None:
        check_checkpoint(args.checkpoint, 'checkpoint to export')
    if 'model' not in cfg:
        raise PreflightError(f'Config {args.config} defines no model')
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    try:
        model = MODELS.build(strip_pretrained(cfg.model))
    except Exception as err:  # the config's arguments: mmengine names the class and the cause
        raise PreflightError(f'cannot build the model of {args.config}: '
                             f'{type(err).__name__}: {err}') from None
    if model is None:
        raise PreflightError(f'Config {args.config}: model type {cfg.model.get("type")!r} '
                             'is not registered')
    if args.checkpoint is not None:
        check_checkpoint_fits(model, args.checkpoint, args.config)
        load_checkpoint(model, args.checkpoint, map_location='cpu', logger='silent',
                        revise_keys=[(r'^module\.', '')])
    try:
        return deployment.exportable_part(model).eval()
    except deployment.UnsupportedModelError as err:
        raise PreflightError(f'Config {args.config}: {err}') from None


def verify(model, path, args):
    """Largest relative difference at the export shape and, if dynamic, at another one."""
    shapes = [tuple(args.shape)]
    if args.dynamic:
        shapes.append((args.shape[0] + 37, args.shape[1] - 21 if args.shape[1] > 64 else
                       args.shape[1] + 21))
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randn(1, 3, height, width, generator=generator), )
               for height, width in shapes]
    differences = deployment.parity(model, path, batches)
    for (height, width), difference in zip(shapes, differences):
        print(f'{height}x{width}: largest relative difference to PyTorch {difference:.2e}')
    return max(differences)


def main(argv=None) -> int:
    args = parse_args(argv)
    if min(args.shape) <= 0:
        print(f'error: --shape must be positive, got {args.shape}', file=sys.stderr)
        return 2
    try:
        model = build_model(args)
    except PreflightError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    x = torch.randn(1, 3, *args.shape, generator=torch.Generator().manual_seed(1))
    path = deployment.export_onnx(model, (x, ), args.out, exporter=args.exporter,
                                  opset=args.opset, dynamic=args.dynamic)
    size = 'HxW' if args.dynamic else 'x'.join(map(str, args.shape))
    print(f'wrote {path} ({args.exporter} exporter, opset {deployment.file_opset(path)}, '
          f'input 1x3x{size})')
    others = deployment.non_standard_nodes(path)
    if others:
        print(f'error: {path} holds operators outside the standard ONNX domains: '
              f'{", ".join(others)}', file=sys.stderr)
        return 1
    if args.verify:
        worst = verify(model, path, args)
        if not worst <= args.tolerance:
            print(f'error: ONNX Runtime differs from PyTorch by {worst:.2e} (relative), above '
                  f'the tolerance {args.tolerance:.0e}', file=sys.stderr)
            return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
