from .checkpoint import (
    CHECKPOINT_ERRORS,
    MMENGINE_SAFE_GLOBALS,
    CheckpointUnavailableError,
    UnreadableCheckpointError,
    UnsafeCheckpointError,
    enable_safe_mmengine_checkpoints,
    load_checkpoint_file,
    load_from_local,
)

enable_safe_mmengine_checkpoints()

__all__ = [
    'CHECKPOINT_ERRORS', 'MMENGINE_SAFE_GLOBALS', 'CheckpointUnavailableError',
    'UnreadableCheckpointError', 'UnsafeCheckpointError', 'enable_safe_mmengine_checkpoints',
    'load_checkpoint_file', 'load_from_local'
]
