"""Pictures of what the learned poolings do: importance maps, per-layer statistics over
training, and the seed study's error bars."""
from .pooling_maps import (
    RANDOM_INIT,
    compute_pooling_maps,
    demo_importance_maps,
    draw_pooling_maps,
    find_gt_boxes,
    last_checkpoint,
    load_pooling_model,
    show_pooling,
)
from .pooling_plots import load_pooling_history, plot_pooling_runs
from .seed_study_plot import plot_seed_study

__all__ = [
    'RANDOM_INIT', 'compute_pooling_maps', 'demo_importance_maps', 'draw_pooling_maps',
    'find_gt_boxes', 'last_checkpoint',
    'load_pooling_model', 'show_pooling', 'load_pooling_history', 'plot_pooling_runs',
    'plot_seed_study'
]
