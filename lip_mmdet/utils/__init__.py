from .checkpoint import (MMENGINE_SAFE_GLOBALS, UnsafeCheckpointError,
                         enable_safe_mmengine_checkpoints, load_from_local)
from .preflight import PreflightError

enable_safe_mmengine_checkpoints()

__all__ = [
    'MMENGINE_SAFE_GLOBALS', 'UnsafeCheckpointError', 'enable_safe_mmengine_checkpoints',
    'load_from_local', 'PreflightError'
]
