"""Pooling layers: LIP logit modules and the DPP family.

The stand-alone ones (SimplifiedLIP, LiteDPP, FullDPP, S3DPP) are registered in
:data:`lip_mmdet.registry.MODELS` (``type='lip_mmdet.LiteDPP'`` from an mmdet config).
"""
from .dpp import LOG_ALPHA_MAX, S3DPP, FullDPP, LiteDPP
from .lip import (
    BOTTLENECK_WIDTH,
    LIP_LOGIT_INITS,
    LIP_NORM_CFG,
    BottleneckLIP,
    BottleneckShared,
    InstanceNorm2dAnySize,
    SimplifiedLIP,
    SoftGate,
)
from .pool_weights import (
    PoolingWeightsMixin,
    effective_window_size,
    fold_window_weights,
    pooling_layers,
    relative_importance,
)

__all__ = [
    'SoftGate', 'SimplifiedLIP', 'BottleneckShared', 'BottleneckLIP', 'BOTTLENECK_WIDTH',
    'LIP_NORM_CFG', 'LIP_LOGIT_INITS', 'InstanceNorm2dAnySize', 'LiteDPP', 'FullDPP', 'S3DPP',
    'LOG_ALPHA_MAX',
    'PoolingWeightsMixin', 'effective_window_size', 'fold_window_weights', 'pooling_layers',
    'relative_importance'
]
