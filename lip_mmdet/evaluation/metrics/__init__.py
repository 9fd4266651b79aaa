from .size_aware_coco_metric import (
    DEFAULT_SIZE_BINS,
    SizeAwareCocoMetric,
    evaluate_size_bins,
    resolve_coco_backend,
)

__all__ = ['DEFAULT_SIZE_BINS', 'SizeAwareCocoMetric', 'evaluate_size_bins',
           'resolve_coco_backend']
