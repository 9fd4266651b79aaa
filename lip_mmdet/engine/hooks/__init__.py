from .pooling_stats_hook import PoolingStatsHook

__all__ = ['PoolingStatsHook']
