"""Parameter and FLOP counts of backbones, next to the stock ResNet of the same depth.

FLOPs follow mmengine's ``FlopAnalyzer`` (fvcore rules): one multiply-add counts as one FLOP
and only convolutions, linear layers and norms are counted, as in the published ResNet /
LIP-ResNet figures. Pooling arithmetic (LIP's exp and window sums, DPP's rewards) is not
counted; :func:`backbone_complexity` lists the ops it skipped.
"""
import copy
from typing import Dict, Sequence, Tuple, Union

import torch
from mmdet.registry import MODELS
from mmengine.analysis import FlopAnalyzer
from mmengine.analysis.jit_handles import get_shape
from torch import nn

from lip_mmdet.ops import filter_guide_multiply_adds

__all__ = ['IMAGENET_FC_PARAMS', 'build_backbone', 'stock_resnet_cfg', 'count_params',
           'count_flops', 'backbone_complexity']

# A 1000-class ImageNet classifier on 2048 features: what published counts include.
IMAGENET_FC_PARAMS = 2048 * 1000 + 1000

_STOCK_KEYS = ('depth', 'in_channels', 'stem_channels', 'base_channels', 'num_stages', 'strides',
               'dilations', 'out_indices', 'style', 'deep_stem', 'conv_cfg', 'norm_cfg', 'dcn',
               'stage_with_dcn', 'plugins')


def build_backbone(cfg: Union[dict, nn.Module]) -> nn.Module:
    """Builds ``cfg`` through mmdet's MODELS registry (a module is returned as is)."""
    if isinstance(cfg, nn.Module):
        return cfg
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise ValueError(f'a backbone config must be a dict with a "type", got {cfg!r}')
    return MODELS.build(copy.deepcopy(dict(cfg)))


def stock_resnet_cfg(cfg: dict) -> dict:
    """The mmdet ``ResNet`` config with the same depth and architecture options as ``cfg``."""
    if 'depth' not in cfg:
        raise KeyError(f'cannot pick a stock ResNet for {cfg!r}: it has no "depth"')
    return dict(type='ResNet', **{k: copy.deepcopy(v) for k, v in cfg.items() if k in _STOCK_KEYS})


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _filter_guide_flops(inputs, outputs) -> int:
    """Full-DPP's guide, a depthwise 3x3 convolution, as its multiply-adds."""
    return filter_guide_multiply_adds(get_shape(outputs[0]))


def count_flops(model: nn.Module, input_size: Tuple[int, int],
                in_channels: int = 3) -> Tuple[int, Dict[str, int]]:
    """(FLOPs of one forward pass on a 1 x C x H x W input, {skipped op: calls})."""
    was_training = model.training
    model.eval()
    inputs = torch.zeros(1, in_channels, *input_size)
    try:
        with torch.no_grad():
            analyzer = FlopAnalyzer(model, (inputs, ))
            analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            analyzer.set_op_handle('lip_mmdet::dpp_filter_guide', _filter_guide_flops)
            total = analyzer.total()
            skipped = dict(analyzer.unsupported_ops())
    finally:
        model.train(was_training)
    return total, skipped


def backbone_complexity(cfg: dict, sizes: Sequence[Tuple[int, int]] = ((224, 224), )) -> dict:
    """Params and FLOPs of ``cfg`` and of its stock ResNet, with ratios.

    Returns ``{'model': {...}, 'stock': {...}, 'ratio': {...}}`` where each side holds
    ``params``, ``params_with_imagenet_fc`` (depth >= 50 only), ``flops@HxW`` per size and
    ``skipped_ops``.
    """
    results = {}
    for side, side_cfg in (('model', cfg), ('stock', stock_resnet_cfg(cfg))):
        model = build_backbone(side_cfg)
        entry = dict(type=side_cfg['type'], params=count_params(model), skipped_ops={})
        if model.feat_dim == 2048:
            entry['params_with_imagenet_fc'] = entry['params'] + IMAGENET_FC_PARAMS
        for height, width in sizes:
            flops, skipped = count_flops(model, (height, width),
                                         side_cfg.get('in_channels', 3))
            entry[f'flops@{height}x{width}'] = flops
            entry['skipped_ops'].update(skipped)
        results[side] = entry
    results['ratio'] = {
        key: results['model'][key] / results['stock'][key]
        for key, value in results['stock'].items() if isinstance(value, int) and value
    }
    return results
