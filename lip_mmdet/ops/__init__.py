"""Pooling ops: LIP (``lip2d``) and the DPP family (``dpp2d`` and its guides, S3 sampling)."""
from .dispatch import POOLING_BACKENDS
from .dpp import (
    DPP_EPS_SQUARED,
    DPP_REWARDS,
    check_reward,
    check_s3_args,
    dpp2d,
    dpp_box_guide,
    dpp_filter_box_init,
    dpp_filter_guide,
    dpp_same_padding,
    dpp_window_weights,
    filter_guide_multiply_adds,
    s3_sample,
)
from .lip import SHIFT_RANGE, lip2d, lip2d_naive, lip_window_weights
from .native import native_enabled, pooling_cpu_library

__all__ = [
    'lip2d', 'lip2d_naive', 'SHIFT_RANGE', 'POOLING_BACKENDS', 'pooling_cpu_library',
    'native_enabled',
    'dpp2d', 'dpp_box_guide', 'dpp_filter_guide', 'dpp_filter_box_init', 'dpp_same_padding',
    's3_sample', 'check_s3_args', 'check_reward', 'DPP_REWARDS', 'DPP_EPS_SQUARED',
    'lip_window_weights', 'dpp_window_weights', 'filter_guide_multiply_adds'
]
