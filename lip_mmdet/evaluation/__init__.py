from .compare import (
    format_comparison,
    gt_count_mismatch,
    load_run_metrics,
    plot_ap_by_size,
    run_names,
)
from .metrics import (
    DEFAULT_SIZE_BINS,
    SizeAwareCocoMetric,
    evaluate_size_bins,
    resolve_coco_backend,
)

__all__ = ['DEFAULT_SIZE_BINS', 'SizeAwareCocoMetric', 'evaluate_size_bins',
           'resolve_coco_backend', 'format_comparison', 'gt_count_mismatch',
           'load_run_metrics', 'plot_ap_by_size', 'run_names']
