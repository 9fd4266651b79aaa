"""Pooling layers registered in mmdet's MODELS: LIP logit modules and the DPP family."""
from .dpp import LOG_ALPHA_MAX, FullDPP, LiteDPP, S3DPP
from .lip import BOTTLENECK_WIDTH, BottleneckLIP, BottleneckShared, SimplifiedLIP, SoftGate
from .pool_weights import (PoolingWeightsMixin, effective_window_size, fold_window_weights,
                           pooling_layers, relative_importance)

__all__ = [
    'SoftGate', 'SimplifiedLIP', 'BottleneckShared', 'BottleneckLIP', 'BOTTLENECK_WIDTH',
    'LiteDPP', 'FullDPP', 'S3DPP', 'LOG_ALPHA_MAX',
    'PoolingWeightsMixin', 'effective_window_size', 'fold_window_weights', 'pooling_layers',
    'relative_importance'
]
