"""Training-time additions to mmengine's Runner: hooks registered in mmdet's HOOKS."""
from .hooks import PoolingStatsHook

__all__ = ['PoolingStatsHook']
