"""Pooling ops: LIP (``lip2d``) and the DPP family (``dpp2d`` and its guides, S3 sampling).

Torch alone (triton for the CUDA kernels); see :mod:`lip_mmdet.ops.dispatch` for the op
boundary and its backends.
"""
from . import dpp, lip, onnx_export  # noqa: F401  (onnx_export registers ONNX translations)
from .dispatch import POOLING_BACKENDS
from .dpp import *  # noqa: F401,F403
from .lip import *  # noqa: F401,F403
from .native import native_enabled, pooling_cpu_library

__all__ = [*lip.__all__, *dpp.__all__, 'POOLING_BACKENDS', 'pooling_cpu_library',
           'native_enabled']
