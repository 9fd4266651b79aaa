"""Checkpoint loading that refuses what mmengine's checkpoints do not hold
(:mod:`.checkpoint`), and the timing probes of the benchmark scripts (:mod:`.benchmark`).

Importing this package or its modules only defines names; :func:`install_safe_checkpoint_loading`
puts the safe loading in place for the process, and ``import lip_mmdet`` calls it.
"""
# The checkpoint names are imported on first use (PEP 562): the timing probes of
# :mod:`.benchmark` need torch alone, and the pooling benchmark runs where mmengine is not
# installed.
_CHECKPOINT_NAMES = (
    'CHECKPOINT_ERRORS', 'MMENGINE_SAFE_GLOBALS', 'CheckpointUnavailableError',
    'UnreadableCheckpointError', 'UnsafeCheckpointError', 'install_safe_checkpoint_loading',
    'load_checkpoint_file', 'load_from_local')

__all__ = list(_CHECKPOINT_NAMES)


def __getattr__(name: str):
    if name in _CHECKPOINT_NAMES:
        from . import checkpoint
        return getattr(checkpoint, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
