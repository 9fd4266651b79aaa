"""Pooling layers: LIP logit modules and the DPP family.

The stand-alone ones (SimplifiedLIP, LiteDPP, FullDPP, S3DPP) are registered in
:data:`lip_mmdet.registry.MODELS` (``type='lip_mmdet.LiteDPP'`` from an mmdet config).
"""
from .dpp import LOG_ALPHA_MAX, S3DPP, FullDPP, LiteDPP
from .lip import (
    BOTTLENECK_WIDTH,
    LIP_NORM_CFG,
    InstanceNorm2dAnySize,
    BottleneckLIP,
    BottleneckShared,
    SimplifiedLIP,
    SoftGate,
)

__all__ = [
    'SoftGate', 'SimplifiedLIP', 'BottleneckShared', 'BottleneckLIP', 'BOTTLENECK_WIDTH',
    'LIP_NORM_CFG', 'InstanceNorm2dAnySize', 'LiteDPP', 'FullDPP', 'S3DPP', 'LOG_ALPHA_MAX'
]
