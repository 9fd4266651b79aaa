"""Pooling layers registered in mmdet's MODELS: LIP logit modules and the DPP family."""
from .dpp import LOG_ALPHA_MAX, FullDPP, LiteDPP, S3DPP
from .lip import (BOTTLENECK_WIDTH, BottleneckLIP, BottleneckShared, InstanceNorm2dAnySize,
                  SimplifiedLIP, SoftGate)

__all__ = [
    'SoftGate', 'SimplifiedLIP', 'BottleneckShared', 'BottleneckLIP', 'BOTTLENECK_WIDTH',
    'InstanceNorm2dAnySize', 'LiteDPP', 'FullDPP', 'S3DPP', 'LOG_ALPHA_MAX'
]
