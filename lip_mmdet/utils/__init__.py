"""Checkpoint loading that refuses what mmengine's checkpoints do not hold
(:mod:`.checkpoint`), and the timing probes of the benchmark scripts (:mod:`.benchmark`).

Importing this package or its modules only defines names; :func:`install_safe_checkpoint_loading`
puts the safe loading in place for the process, and ``import lip_mmdet`` calls it.
"""
from .checkpoint import (
    CHECKPOINT_ERRORS,
    MMENGINE_SAFE_GLOBALS,
    CheckpointUnavailableError,
    UnreadableCheckpointError,
    UnsafeCheckpointError,
    install_safe_checkpoint_loading,
    load_checkpoint_file,
    load_from_local,
)

__all__ = [
    'CHECKPOINT_ERRORS', 'MMENGINE_SAFE_GLOBALS', 'CheckpointUnavailableError',
    'UnreadableCheckpointError', 'UnsafeCheckpointError', 'install_safe_checkpoint_loading',
    'load_checkpoint_file', 'load_from_local'
]
