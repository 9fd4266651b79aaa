import json
import os.path as osp

import numpy as np
import pytest
import torch
from fresh_import import run_fresh
from mmdet.evaluation import CocoMetric
from mmdet.registry import METRICS
from mmengine.logging import MMLogger
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from lip_mmdet.evaluation import DEFAULT_SIZE_BINS, SizeAwareCocoMetric, evaluate_size_bins
from lip_mmdet.evaluation.metrics.size_aware_coco_metric import (
    _runner_work_dir,
    evaluators_agree,
    resolve_coco_backend,
)

CLASSES = ('cat_a', 'cat_b')
# (image id, category id, x, y, w, h): sides 8/12 (tiny), 20/28 (small 16-32),
# 50 (medium), 120 (large)
OBJECTS = [
    (1, 1, 10, 10, 8, 8), (1, 2, 40, 10, 12, 12), (1, 1, 80, 10, 20, 20),
    (1, 2, 10, 60, 50, 50), (1, 1, 70, 60, 120, 120),
    (2, 2, 5, 5, 12, 12), (2, 1, 30, 30, 28, 28), (2, 2, 100, 100, 50, 50),
    (3, 1, 20, 20, 9, 9), (3, 2, 60, 60, 24, 24),
]


def _write_gt(path, objects, image_ids=(1, 2, 3), size=256):
    coco = dict(
        images=[dict(id=i, width=size, height=size, file_name=f'{i}.jpg') for i in image_ids],
        annotations=[dict(id=k + 1, image_id=img, category_id=cat, bbox=[x, y, w, h],
                          area=w * h, iscrowd=0)
                     for k, (img, cat, x, y, w, h) in enumerate(objects)],
        categories=[dict(id=i + 1, name=n) for i, n in enumerate(CLASSES)])
    with open(path, 'w') as f:
        json.dump(coco, f)
    return str(path)


def _samples(detections, image_ids=(1, 2, 3)):
    """mmdet data samples from (image id, category id, x, y, w, h, score) tuples."""
    samples = []
    for image_id in image_ids:
        mine = [d for d in detections if d[0] == image_id]
        boxes = [[x, y, x + w, y + h] for _, _, x, y, w, h, _ in mine]
        samples.append(dict(
            img_id=image_id, ori_shape=(256, 256),
            pred_instances=dict(
                bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                scores=torch.tensor([d[6] for d in mine], dtype=torch.float32),
                labels=torch.tensor([d[1] - 1 for d in mine], dtype=torch.int64))))
    return samples


def _evaluate(metric, samples):
    metric.dataset_meta = dict(classes=CLASSES)
    metric.process({}, samples)
    return metric.evaluate(size=len(samples))


def _perfect(objects):
    return [obj + (0.9,) for obj in objects]


def _noisy_detections(seed=0):
    """Jittered true positives, misses and false positives with varied scores."""
    rng = np.random.default_rng(seed)
    detections = []
    for img, cat, x, y, w, h in OBJECTS:
        if rng.random() < 0.2:
            continue
        jitter = rng.normal(0, 0.12 * w, size=4)
        detections.append((img, cat, x + jitter[0], y + jitter[1], w + jitter[2],
                           h + jitter[3], float(rng.random())))
    for _ in range(8):
        side = float(rng.uniform(6, 80))
        detections.append((int(rng.integers(1, 4)), int(rng.integers(1, 3)),
                           float(rng.uniform(0, 150)), float(rng.uniform(0, 150)), side,
                           side, float(rng.random())))
    return detections


def test_registered():
    assert METRICS.get('SizeAwareCocoMetric') is SizeAwareCocoMetric


def test_perfect_detections_give_one_everywhere(tmp_path):
    ann = _write_gt(tmp_path / 'gt.json', OBJECTS)
    results = _evaluate(SizeAwareCocoMetric(ann_file=ann, out_dir=str(tmp_path)),
                        _samples(_perfect(OBJECTS)))
    for key in ('mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l'):
        assert results[f'coco/bbox_{key}'] == 1.0
    for name in DEFAULT_SIZE_BINS:
        assert results[f'coco/bbox_mAP_{name}'] == 1.0
        assert results[f'coco/bbox_AR_{name}'] == 1.0


def test_missed_tiny_object_lowers_only_tiny_and_small(tmp_path):
    ann = _write_gt(tmp_path / 'gt.json', OBJECTS)
    detections = _perfect([o for o in OBJECTS if o[4] != 8])  # drop the 8x8 object
    results = _evaluate(SizeAwareCocoMetric(ann_file=ann, out_dir=str(tmp_path)),
                        _samples(detections))
    # category 1 has 2 tiny objects, one found: AR 0.5 for it, 1.0 for category 2
    assert results['coco/bbox_AR_tiny'] == pytest.approx(0.75, abs=1e-3)
    # its AP: precision 1 up to recall 0.5, then 0 -> 51 of 101 recall points
    assert results['coco/bbox_mAP_tiny'] == pytest.approx(0.5 * 51 / 101 + 0.5, abs=1e-3)
    assert results['coco/bbox_mAP_s'] < 1.0  # COCO small (< 32^2) contains it
    assert results['coco/bbox_mAP'] < 1.0
    for key in ('bbox_mAP_small', 'bbox_mAP_medium', 'bbox_mAP_large', 'bbox_mAP_m',
                'bbox_mAP_l', 'bbox_AR_small'):
        assert results[f'coco/{key}'] == 1.0, key


def test_same_numbers_as_coco_metric_and_pycocotools(tmp_path):
    ann = _write_gt(tmp_path / 'gt.json', OBJECTS)
    detections = _noisy_detections()
    coco_ranges = dict(s=(0, 32**2), m=(32**2, 96**2), l=(96**2, 1e5**2))
    ours = _evaluate(SizeAwareCocoMetric(ann_file=ann, size_bins=coco_ranges,
                                         out_dir=str(tmp_path)),
                     _samples(detections))
    stock = _evaluate(CocoMetric(ann_file=ann), _samples(detections))
    assert set(stock) < set(ours)
    for key, value in stock.items():
        assert ours[key] == value, key
    assert 0 < stock['coco/bbox_mAP'] < 1  # a case where the numbers mean something
    for size in 'sml':
        assert ours[f'coco/bbox_mAP_{size}'] == stock[f'coco/bbox_mAP_{size}']

    # full precision against a direct pycocotools run
    gt = COCO(ann)
    predictions = [dict(image_id=d[0], category_id=d[1], bbox=list(d[2:6]), score=d[6])
                   for d in detections]
    reference = COCOeval(gt, gt.loadRes(predictions), 'bbox')
    reference.params.maxDets = [100, 300, 1000]  # CocoMetric's
    reference.evaluate()
    reference.accumulate()
    reference.summarize()
    report = evaluate_size_bins(gt, predictions, coco_ranges, backend='pycocotools')
    assert report['backend'] == 'pycocotools'
    for size, ap_index, ar_index in (('s', 3, 9), ('m', 4, 10), ('l', 5, 11)):
        assert report['bins'][size]['AP'] == pytest.approx(reference.stats[ap_index],
                                                           abs=1e-12)
        assert report['bins'][size]['AR'] == pytest.approx(reference.stats[ar_index],
                                                           abs=1e-12)
    everything = evaluate_size_bins(gt, predictions, dict(all=(0, 1e5**2)))
    assert everything['bins']['all']['AP50'] == pytest.approx(reference.stats[1], abs=1e-12)
    assert everything['bins']['all']['AP75'] == pytest.approx(reference.stats[2], abs=1e-12)
    assert everything['bins']['all']['num_gt'] == len(OBJECTS)


def _crowded_case(per_class_false_positives=110, seed=0):
    """Ground truth in all COCO size ranges and more than 100 detections per image and class:
    confident false positives outrank half of the true positives, so those are found only
    when more than 100 detections per image count (AR@100 < AR@1000 in every range).

    Returns (objects for :func:`_write_gt`, detections (image, category, x, y, w, h, score))
    on 640x640 images.
    """
    rng = np.random.default_rng(seed)
    objects, detections = [], []
    sides = (8, 12, 20, 28, 50, 70, 120, 140)  # 4 small (< 32), 2 medium, 2 large
    for image_id in (1, 2, 3):
        for k, side in enumerate(sides):
            category = 1 + k % 2
            x, y = 10 + 40 * (k % 4), 10 + 160 * (k // 4)  # left part, no overlaps
            objects.append((image_id, category, x, y, side, side))
            # per range and class, some images score it above all false positives, some below
            score = 0.95 if (k // 2 + image_id) % 2 == 0 else 0.05
            detections.append((image_id, category, x, y, side, side, score))
        for category in (1, 2):
            for _ in range(per_class_false_positives):
                side = float(np.exp(rng.uniform(np.log(6), np.log(150))))
                detections.append((image_id, category, float(rng.uniform(420, 640 - side)),
                                   float(rng.uniform(0, 640 - side)), side, side,
                                   float(rng.uniform(0.2, 0.8))))
    return objects, detections


def _pycocotools_stats(ann, detections, max_dets):
    gt = COCO(ann)
    predictions = [dict(image_id=d[0], category_id=d[1], bbox=list(d[2:6]), score=d[6])
                   for d in detections]
    reference = COCOeval(gt, gt.loadRes(predictions), 'bbox')
    reference.params.maxDets = list(max_dets)
    reference.evaluate()
    reference.accumulate()
    reference.summarize()
    return gt, predictions, reference.stats


@pytest.mark.parametrize('max_dets', [(1, 10, 100), (100, 300, 1000)])
def test_bins_count_the_largest_max_dets_with_crowded_images(tmp_path, max_dets):
    objects, detections = _crowded_case()
    ann = _write_gt(tmp_path / 'gt.json', objects, size=640)
    gt, predictions, stats = _pycocotools_stats(ann, detections, max_dets)
    _, _, stats_at_100 = _pycocotools_stats(ann, detections, (1, 10, 100))
    _, _, stats_at_1000 = _pycocotools_stats(ann, detections, (100, 300, 1000))
    for index in (3, 4, 5):  # AP of small, medium, large: the cut changes it
        assert stats_at_1000[index] != pytest.approx(stats_at_100[index], abs=1e-6), index
    for index in (9, 10, 11):  # AR of small, medium, large: the cut loses a third or more
        assert stats_at_1000[index] - stats_at_100[index] > 0.3, index
    coco_ranges = dict(s=(0, 32**2), m=(32**2, 96**2), l=(96**2, 1e5**2))
    report = evaluate_size_bins(gt, predictions, coco_ranges, max_dets=max_dets,
                                backend='pycocotools')
    for size, ap_index, ar_index in (('s', 3, 9), ('m', 4, 10), ('l', 5, 11)):
        assert report['bins'][size]['AP'] == pytest.approx(stats[ap_index], abs=1e-12), size
        assert report['bins'][size]['AR'] == pytest.approx(stats[ar_index], abs=1e-12), size


def test_metric_bins_use_its_proposal_nums_on_crowded_images(tmp_path):
    objects, detections = _crowded_case()
    ann = _write_gt(tmp_path / 'gt.json', objects, size=640)
    coco_ranges = dict(s=(0, 32**2), m=(32**2, 96**2), l=(96**2, 1e5**2))
    for proposal_nums in ((1, 10, 100), (100, 300, 1000)):
        metric = SizeAwareCocoMetric(ann_file=ann, size_bins=coco_ranges,
                                     proposal_nums=proposal_nums, out_dir=str(tmp_path))
        results = _evaluate(metric, _samples(detections))
        stats = _pycocotools_stats(ann, detections, proposal_nums)[2]
        for size, ap_index, ar_index in (('s', 3, 9), ('m', 4, 10), ('l', 5, 11)):
            assert results[f'coco/bbox_AR_{size}'] == round(stats[ar_index], 3), size
            assert results[f'coco/bbox_mAP_{size}'] == round(stats[ap_index], 3), size


def test_split_without_small_objects_reports_minus_one(tmp_path):
    big_only = [o for o in OBJECTS if o[4] >= 50]
    ann = _write_gt(tmp_path / 'gt.json', big_only)
    results = _evaluate(SizeAwareCocoMetric(ann_file=ann, out_dir=str(tmp_path)),
                        _samples(_perfect(big_only) + [(1, 1, 200, 200, 10, 10, 0.5)]))
    assert results['coco/bbox_mAP_s'] == -1
    assert results['coco/bbox_mAP_tiny'] == -1
    assert results['coco/bbox_AR_small'] == -1
    assert results['coco/bbox_mAP_medium'] == 1.0
    with open(tmp_path / 'size_aware_metrics.json') as f:
        report = json.load(f)
    assert report['metrics']['bbox']['bins']['tiny']['num_gt'] == 0
    assert report['metrics']['bbox']['bins']['tiny']['AP'] == -1


def test_json_report_and_classwise(tmp_path):
    ann = _write_gt(tmp_path / 'gt.json', OBJECTS)
    detections = [d for d in _perfect(OBJECTS) if not (d[1] == 2 and d[4] == 12)]
    metric = SizeAwareCocoMetric(ann_file=ann, classwise=True, out_dir=str(tmp_path),
                                 results_file='report.json')
    results = _evaluate(metric, _samples(detections))
    with open(tmp_path / 'report.json') as f:
        report = json.load(f)
    assert report['metric'] == 'SizeAwareCocoMetric'
    assert report['size_bins']['tiny'] == [0.0, 256.0]
    assert report['scalars']['coco/bbox_mAP_tiny'] == results['coco/bbox_mAP_tiny']
    assert report['coco']['bbox_mAP'] == results['coco/bbox_mAP']
    bins = report['metrics']['bbox']['bins']
    assert {k: bins[k]['num_gt'] for k in bins} == dict(tiny=4, small=3, medium=2, large=1)
    per_class = report['metrics']['bbox']['classwise']
    assert per_class['cat_b']['tiny'] == 0.0  # both of its tiny objects missed
    assert per_class['cat_a']['tiny'] == 1.0
    assert per_class['cat_b']['medium'] == 1.0
    assert per_class['cat_b']['large'] == -1  # no large cat_b object


def test_work_dir_found_through_the_runner_logger(tmp_path):
    log_file = tmp_path / 'work' / '20260101_000000' / '20260101_000000.log'
    log_file.parent.mkdir(parents=True)
    MMLogger.get_instance('size_aware_test_logger', log_file=str(log_file))
    assert _runner_work_dir() == osp.join(str(tmp_path), 'work')


@pytest.mark.parametrize('kwargs, error', [
    (dict(size_bins=dict(tiny=(256, 0))), ValueError),
    (dict(size_bins={'two words': (0, 10)}), ValueError),
    (dict(size_bins=dict(tiny=(0, 10, 20))), ValueError),
    (dict(size_bins=[(0, 10)]), TypeError),
    (dict(backend='fast'), ValueError),
])
def test_bad_arguments(kwargs, error):
    with pytest.raises(error):
        SizeAwareCocoMetric(**kwargs)


class _LooseIoUCOCOeval(COCOeval):
    """A real evaluator that disagrees: it inflates every IoU."""

    def computeIoU(self, imgId, catId):
        ious = super().computeIoU(imgId, catId)
        return np.minimum(np.asarray(ious) * 1.3, 1.0) if len(ious) else ious


def test_backend_self_check():
    assert evaluators_agree(COCO, COCOeval)
    assert not evaluators_agree(COCO, _LooseIoUCOCOeval)
    try:
        import faster_coco_eval  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match='faster-coco-eval'):
            resolve_coco_backend('faster_coco_eval')
        assert resolve_coco_backend('auto')[2] == 'pycocotools'
    else:
        assert resolve_coco_backend('auto')[2] in ('faster_coco_eval', 'pycocotools')


def test_segm_metric_gets_bins_too(tmp_path):
    """Rectangular masks, perfect predictions: bins are filled for 'segm' as for 'bbox'."""
    path = _write_gt(tmp_path / 'gt.json', OBJECTS)
    with open(path) as f:
        coco = json.load(f)
    for ann in coco['annotations']:
        x, y, w, h = ann['bbox']
        ann['segmentation'] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    with open(path, 'w') as f:
        json.dump(coco, f)
    samples = _samples(_perfect(OBJECTS))
    for sample in samples:
        masks = torch.zeros(len(sample['pred_instances']['bboxes']), 256, 256,
                            dtype=torch.bool)
        for mask, (x1, y1, x2, y2) in zip(masks, sample['pred_instances']['bboxes'].int()):
            mask[y1:y2, x1:x2] = True
        sample['pred_instances']['masks'] = masks
    results = _evaluate(SizeAwareCocoMetric(ann_file=path, metric=['bbox', 'segm'],
                                            out_dir=str(tmp_path)), samples)
    for name in DEFAULT_SIZE_BINS:
        assert results[f'coco/segm_mAP_{name}'] == results[f'coco/bbox_mAP_{name}'] == 1.0
    with open(tmp_path / 'size_aware_metrics.json') as f:
        assert set(json.load(f)['metrics']) == {'bbox', 'segm'}


def test_the_metric_module_imports_no_analysis_code():
    """The registered metric shares its table format with the run comparison
    (``lip_mmdet.evaluation.compare``) through ``ap_table`` and imports nothing else of
    lip_mmdet."""
    modules = run_fresh(
        'import lip_mmdet.evaluation.metrics.size_aware_coco_metric\n'
        'from mmdet.registry import METRICS\n'
        "assert METRICS.get('SizeAwareCocoMetric') is not None\n"
        "print(json.dumps(sorted(name for name in sys.modules if name.startswith('lip_mmdet'))))",
        bare_packages=('lip_mmdet', 'lip_mmdet.evaluation', 'lip_mmdet.evaluation.metrics'))
    assert modules == ['lip_mmdet', 'lip_mmdet.evaluation', 'lip_mmdet.evaluation.ap_table',
                       'lip_mmdet.evaluation.metrics',
                       'lip_mmdet.evaluation.metrics.size_aware_coco_metric']
