"""Pictures of what the learned poolings do: importance maps, per-layer statistics over
training, and the seed study's error bars.

Each function draws on a matplotlib ``Figure`` of its own and saves it to a file, without
pyplot and without choosing a backend, so it runs without a display and leaves a caller's
pyplot figures and backend as they were (as does
:func:`lip_mmdet.evaluation.compare.plot_ap_by_size`)."""
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
