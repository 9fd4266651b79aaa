"""COCO metric with finer object-size bins, per-class breakdowns and a JSON report.

``SizeAwareCocoMetric`` is mmdet's ``CocoMetric`` (its numbers are produced by the parent
class unchanged) plus one more COCO evaluation whose area ranges are the configured size
bins. COCO's own ``small`` range (< 32^2) lumps 10 px and 30 px objects together; the
default bins split it into ``tiny`` (< 16^2) and ``small`` (16^2 - 32^2).

Area ranges follow COCO semantics: areas in px^2, both ends inclusive, ground-truth size
from the annotation ``area`` and detection size from its box (or mask for ``segm``).
"""
import copy
import os.path as osp
import tempfile
from functools import cache
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from mmdet.datasets.api_wrappers import COCO, COCOeval
from mmdet.evaluation.metrics import CocoMetric
from mmdet.registry import METRICS
from mmengine.fileio import dump, load
from mmengine.logging import MessageHub, MMLogger, print_log

from ..ap_table import ap_table, format_ap

__all__ = ['DEFAULT_SIZE_BINS', 'COCO_EVAL_BACKENDS', 'SizeAwareCocoMetric',
           'evaluate_size_bins', 'resolve_coco_backend']

# name -> (min area, max area) in px^2; 1e5 ** 2 is COCO's own "no upper bound".
DEFAULT_SIZE_BINS: Dict[str, Tuple[float, float]] = {
    'tiny': (0.0, 16.0**2),
    'small': (16.0**2, 32.0**2),
    'medium': (32.0**2, 96.0**2),
    'large': (96.0**2, 1e5**2),
}

# Evaluators the size-bin evaluation can run on (the ``backend`` argument).
COCO_EVAL_BACKENDS = ('auto', 'pycocotools', 'faster_coco_eval')


def _check_backend(backend: str) -> None:
    if backend not in COCO_EVAL_BACKENDS:
        raise ValueError(f'backend must be one of {COCO_EVAL_BACKENDS}, got {backend!r}')


def _mean_valid(values: np.ndarray) -> float:
    """Mean over entries > -1 (COCO marks 'no ground truth' with -1); -1 if none."""
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else -1.0


def _check_size_bins(size_bins: Mapping[str, Sequence[float]]) -> Dict[str, Tuple[float,
                                                                                   float]]:
    if not isinstance(size_bins, Mapping) or not size_bins:
        raise TypeError(f'size_bins must be a non-empty dict name -> (min_area, max_area), '
                        f'got {size_bins!r}')
    checked = {}
    for name, bounds in size_bins.items():
        if not isinstance(name, str) or not name or not name.isidentifier():
            raise ValueError(f'size bin names must be identifiers (they become metric '
                             f'keys), got {name!r}')
        if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
            raise ValueError(f'size bin {name!r} must be (min_area, max_area), '
                             f'got {bounds!r}')
        low, high = (float(b) for b in bounds)
        if not 0 <= low < high:
            raise ValueError(f'size bin {name!r} needs 0 <= min_area < max_area, '
                             f'got {bounds!r}')
        checked[name] = (low, high)
    return checked


def _synthetic_case(seed: int = 0):
    """A small GT/detection set (all sizes, misses, duplicates, false positives)."""
    rng = np.random.default_rng(seed)
    images = [dict(id=i + 1, width=200, height=200) for i in range(6)]
    annotations, detections = [], []
    for image in images:
        for _ in range(8):
            side = float(np.exp(rng.uniform(np.log(4), np.log(120))))
            x, y = rng.uniform(0, 200 - side, size=2)
            category = int(rng.integers(1, 3))
            annotations.append(dict(id=len(annotations) + 1, image_id=image['id'],
                                    category_id=category, bbox=[x, y, side, side],
                                    area=side * side, iscrowd=0))
            for _copy in range(int(rng.integers(0, 3))):
                jitter = rng.normal(0, 0.15 * side, size=4)
                detections.append(dict(
                    image_id=image['id'], category_id=category, score=float(rng.random()),
                    bbox=[x + jitter[0], y + jitter[1], max(side + jitter[2], 1.0),
                          max(side + jitter[3], 1.0)]))
    dataset = dict(images=images, annotations=annotations,
                   categories=[dict(id=1, name='a'), dict(id=2, name='b')])
    return dataset, detections


def _build_gt(coco_cls, dataset: dict):
    gt = coco_cls()
    gt.dataset = copy.deepcopy(dataset)
    gt.createIndex()
    return gt


def _accumulated(coco_cls, eval_cls, dataset: dict, detections: List[dict],
                 area_ranges: List[List[float]]) -> Dict[str, np.ndarray]:
    gt = _build_gt(coco_cls, dataset)
    coco_eval = eval_cls(gt, gt.loadRes(copy.deepcopy(detections)), 'bbox')
    coco_eval.params.areaRng = area_ranges
    coco_eval.params.areaRngLbl = [f'r{i}' for i in range(len(area_ranges))]
    coco_eval.evaluate()
    coco_eval.accumulate()
    return dict(precision=np.asarray(coco_eval.eval['precision']),
                recall=np.asarray(coco_eval.eval['recall']))


def evaluators_agree(coco_cls, eval_cls, atol: float = 1e-6) -> bool:
    """Whether ``eval_cls`` gives pycocotools' precision/recall on a synthetic case."""
    dataset, detections = _synthetic_case()
    ranges = [[0, 1e10]] + [list(r) for r in DEFAULT_SIZE_BINS.values()]
    reference = _accumulated(COCO, COCOeval, dataset, detections, ranges)
    try:
        candidate = _accumulated(coco_cls, eval_cls, dataset, detections, ranges)
    except Exception as error:  # a broken optional backend must not break evaluation
        print_log(f'{eval_cls.__name__} failed the self-check: {error!r}',
                  logger='current')
        return False
    return all(candidate[k].shape == reference[k].shape
               and np.allclose(candidate[k], reference[k], atol=atol) for k in reference)


@cache
def resolve_coco_backend(backend: str = 'auto') -> Tuple[type, type, str]:
    """(COCO class, COCOeval class, backend name) for the size-bin evaluation.

    ``'auto'`` picks faster-coco-eval when it is importable and reproduces pycocotools on
    a synthetic case, else pycocotools. ``'faster_coco_eval'`` insists on it (error if
    missing or disagreeing).
    """
    _check_backend(backend)
    if backend == 'pycocotools':
        return COCO, COCOeval, 'pycocotools'
    try:
        from faster_coco_eval import COCO as FasterCOCO
        from faster_coco_eval import COCOeval_faster
    except ImportError:
        if backend == 'faster_coco_eval':
            raise ImportError("backend='faster_coco_eval' needs `pip install "
                              "faster-coco-eval`") from None
        return COCO, COCOeval, 'pycocotools'
    if evaluators_agree(FasterCOCO, COCOeval_faster):
        return FasterCOCO, COCOeval_faster, 'faster_coco_eval'
    if backend == 'faster_coco_eval':
        raise RuntimeError('faster-coco-eval disagrees with pycocotools on the self-check')
    print_log('faster-coco-eval disagrees with pycocotools; using pycocotools',
              logger='current', level=30)
    return COCO, COCOeval, 'pycocotools'


def evaluate_size_bins(coco_gt,
                       predictions: List[dict],
                       size_bins: Mapping[str, Sequence[float]],
                       iou_type: str = 'bbox',
                       cat_ids: Optional[Sequence[int]] = None,
                       img_ids: Optional[Sequence[int]] = None,
                       max_dets: Sequence[int] = (100, 300, 1000),
                       iou_thrs: Optional[Sequence[float]] = None,
                       classwise: bool = False,
                       backend: str = 'auto') -> Dict:
    """COCO AP/AR per size bin (and per class) for COCO-format predictions.

    Args:
        coco_gt (COCO): a pycocotools-compatible ``COCO`` holding the ground truth.
        predictions (list[dict]): COCO result dicts (``image_id``, ``category_id``,
            ``score`` and ``bbox`` xywh or ``segmentation``); must not be empty.
        size_bins (Mapping[str, Sequence[float]]): name -> (min_area, max_area), px^2,
            inclusive like COCO.
        iou_type (str): ``'bbox'`` or ``'segm'``.
        cat_ids (Sequence[int], optional): categories to evaluate (default: all in
            ``coco_gt``).
        img_ids (Sequence[int], optional): images to evaluate (default: all in ``coco_gt``).
        max_dets (Sequence[int]): detections per image; the numbers use the largest, as
            CocoMetric's size-range numbers do.
        iou_thrs (Sequence[float], optional): IoU thresholds (default 0.50:0.05:0.95).
        classwise (bool): also return AP per class and bin.
        backend (str): one of :data:`COCO_EVAL_BACKENDS`, see :func:`resolve_coco_backend`.

    Returns:
        ``{'backend': str, 'bins': {name: {'area': [lo, hi], 'num_gt': int, 'AP': float,
        'AP50': float, 'AP75': float, 'AR': float}}, 'classwise': {class name: {bin
        name: AP}}}`` (``classwise`` only when asked). -1 marks a bin without ground truth;
        AP50/AP75 are None when that threshold is not in ``iou_thrs``.
    """
    if iou_type not in ('bbox', 'segm'):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    if not predictions:
        raise ValueError('predictions is empty: nothing to evaluate')
    bins = _check_size_bins(size_bins)
    coco_cls, eval_cls, backend_name = resolve_coco_backend(backend)
    gt = coco_gt if isinstance(coco_gt, coco_cls) else _build_gt(coco_cls, coco_gt.dataset)
    coco_eval = eval_cls(gt, gt.loadRes(copy.deepcopy(predictions)), iou_type)
    params = coco_eval.params
    params.catIds = list(cat_ids) if cat_ids is not None else sorted(gt.getCatIds())
    params.imgIds = list(img_ids) if img_ids is not None else sorted(gt.getImgIds())
    params.maxDets = list(max_dets)
    if iou_thrs is not None:
        params.iouThrs = np.asarray(iou_thrs, dtype=np.float64)
    params.areaRng = [list(r) for r in bins.values()]
    params.areaRngLbl = list(bins)
    coco_eval.evaluate()
    coco_eval.accumulate()
    # precision: (iou, recall point, class, area range, max dets); recall without recall pt
    precision = np.asarray(coco_eval.eval['precision'])[..., -1]
    recall = np.asarray(coco_eval.eval['recall'])[..., -1]
    iou_index = {round(float(t), 2): i for i, t in enumerate(params.iouThrs)}

    gt_areas = np.array([ann['area'] for ann in gt.loadAnns(gt.getAnnIds(
        imgIds=params.imgIds, catIds=params.catIds, iscrowd=False))], dtype=np.float64)
    report = dict(backend=backend_name, bins={})
    for a, (name, (low, high)) in enumerate(bins.items()):
        entry = dict(area=[low, high],
                     num_gt=int(((gt_areas >= low) & (gt_areas <= high)).sum()),
                     AP=_mean_valid(precision[:, :, :, a]),
                     AR=_mean_valid(recall[:, :, a]))
        for key, thr in (('AP50', 0.5), ('AP75', 0.75)):
            entry[key] = (_mean_valid(precision[iou_index[thr], :, :, a])
                          if thr in iou_index else None)
        report['bins'][name] = entry
    if classwise:
        report['classwise'] = {
            gt.cats[cat_id]['name']: {
                name: _mean_valid(precision[:, :, k, a]) for a, name in enumerate(bins)}
            for k, cat_id in enumerate(params.catIds)}
    return report


def _runner_work_dir() -> Optional[str]:
    """The running Runner's work_dir, found through its logger (None outside a Runner).

    The Runner logs to ``<work_dir>/<timestamp>/<timestamp>.log``.
    """
    log_file = MMLogger.get_current_instance().log_file
    if not log_file:
        return None
    return osp.dirname(osp.dirname(osp.abspath(log_file)))


@METRICS.register_module()
class SizeAwareCocoMetric(CocoMetric):
    """``CocoMetric`` plus AP/AR per object-size bin, per-class bins and a JSON report.

    Every key ``CocoMetric`` returns is returned unchanged (same code computes it). For
    each ``bbox``/``segm`` metric and size bin ``name`` it adds ``{metric}_mAP_{name}``
    and ``{metric}_AR_{name}`` (AR at the largest of ``proposal_nums``). Note that COCO's
    ``mAP_s`` covers all areas < 32^2 while the default ``small`` bin is 16^2 - 32^2.

    After each evaluation the full report (standard numbers, bins with AP/AP50/AP75/AR
    and ground-truth counts, per-class bins when ``classwise``, epoch/iter) is written as
    JSON to ``<out_dir>/<results_file>`` (``epoch``/``iter``: training epochs/iterations
    completed before this evaluation, None outside training). ``out_dir`` defaults to the
    running Runner's ``work_dir``; outside a Runner nothing is written unless ``out_dir``
    is given.

    Args:
        size_bins (Mapping[str, Sequence[float]], optional): name -> (min_area, max_area)
            in px^2, both ends inclusive like COCO. Defaults to :data:`DEFAULT_SIZE_BINS`
            (tiny, small, medium, large).
        backend (str): evaluator for the size bins, one of :data:`COCO_EVAL_BACKENDS`:
            ``'auto'`` (faster-coco-eval if installed and agreeing with pycocotools, else
            pycocotools), ``'pycocotools'`` or ``'faster_coco_eval'``.
        out_dir (str, optional): folder for the JSON report (default: the Runner's
            work_dir).
        results_file (str): file name of the JSON report.
        **kwargs: everything ``CocoMetric`` takes (``ann_file``, ``metric``,
            ``classwise``, ``outfile_prefix``, ...).
    """

    def __init__(self,
                 size_bins: Optional[Mapping[str, Sequence[float]]] = None,
                 backend: str = 'auto',
                 out_dir: Optional[str] = None,
                 results_file: str = 'size_aware_metrics.json',
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.size_bins = _check_size_bins(DEFAULT_SIZE_BINS if size_bins is None
                                          else size_bins)
        _check_backend(backend)
        self.backend = backend
        self.out_dir = out_dir
        self.results_file = results_file

    def compute_metrics(self, results: list) -> Dict[str, float]:
        logger = MMLogger.get_current_instance()
        with tempfile.TemporaryDirectory() as tmp_dir:
            # keep the prediction files the parent writes, to evaluate them again per bin
            user_prefix = self.outfile_prefix
            prefix = user_prefix or osp.join(tmp_dir, 'results')
            self.outfile_prefix = prefix
            try:
                eval_results = super().compute_metrics(results)
            finally:
                self.outfile_prefix = user_prefix
            if self.format_only:
                return eval_results

            report = dict(size_bins={k: list(v) for k, v in self.size_bins.items()},
                          coco=dict(eval_results), metrics={})
            for metric in self.metrics:
                if metric not in ('bbox', 'segm'):
                    continue
                predictions = load(f'{prefix}.bbox.json' if metric == 'bbox' else
                                   f'{prefix}.segm.json')
                if not predictions:
                    logger.error(f'{metric}: no predictions, size bins skipped')
                    report.setdefault('no_predictions', []).append(metric)
                    continue
                if metric == 'segm':  # like CocoMetric: size by mask area, not box
                    for prediction in predictions:
                        prediction.pop('bbox', None)
                bins_report = evaluate_size_bins(
                    self._coco_api, predictions, self.size_bins, iou_type=metric,
                    cat_ids=self.cat_ids, img_ids=self.img_ids,
                    max_dets=self.proposal_nums, iou_thrs=self.iou_thrs,
                    classwise=self.classwise, backend=self.backend)
                for name, entry in bins_report['bins'].items():
                    eval_results[f'{metric}_mAP_{name}'] = round(entry['AP'], 3)
                    eval_results[f'{metric}_AR_{name}'] = round(entry['AR'], 3)
                report['metrics'][metric] = bins_report
                logger.info('\n' + self._bins_table(metric, bins_report))
                if self.classwise:
                    logger.info('\n' + self._classwise_table(metric, bins_report))
        self._write_report(report, eval_results)
        return eval_results

    def _bins_table(self, metric: str, bins_report: Dict) -> str:
        rows = [[f'{metric} size bin', 'area (px^2)', '#gt', 'AP', 'AP50', 'AP75', 'AR']]
        for name, entry in bins_report['bins'].items():
            low, high = entry['area']
            high_text = 'inf' if high >= 1e10 else f'{high:g}'
            rows.append([name, f'{low:g} - {high_text}', str(entry['num_gt'])] + [
                format_ap(entry[k]) for k in ('AP', 'AP50', 'AP75', 'AR')])
        return ap_table(rows)

    def _classwise_table(self, metric: str, bins_report: Dict) -> str:
        names = list(self.size_bins)
        rows = [[f'{metric} class'] + [f'AP_{n}' for n in names]]
        for cls_name, per_bin in bins_report['classwise'].items():
            rows.append([cls_name] + [format_ap(per_bin[n]) for n in names])
        return ap_table(rows)

    def _write_report(self, report: Dict, eval_results: Dict[str, float]) -> None:
        out_dir = self.out_dir or _runner_work_dir()
        if out_dir is None:
            return
        # The Runner's hub holds the 0-based epoch/iteration last started, so +1 gives
        # how many training epochs/iterations preceded this evaluation.
        hub = MessageHub.get_current_instance()
        epoch, iteration = hub.get_info('epoch'), hub.get_info('iter')
        report.update(metric=type(self).__name__, prefix=self.prefix,
                      epoch=None if epoch is None else epoch + 1,
                      iter=None if iteration is None else iteration + 1,
                      scalars={f'{self.prefix}/{k}': v for k, v in eval_results.items()})
        path = osp.join(out_dir, self.results_file)
        dump(report, path, indent=2)
        MMLogger.get_current_instance().info(f'size-aware COCO report written to {path}')
