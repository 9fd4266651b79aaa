import json

import pytest
import torch
from PIL import Image

from lip_mmdet.evaluation import (
    SizeAwareCocoMetric,
    compare,
    format_comparison,
    gt_count_mismatch,
    load_run_metrics,
    plot_ap_by_size,
    run_names,
)

from tool_scripts import tool_main

CLASSES = ('thing',)


def _write_annotations(path, boxes):
    """A COCO annotation file: image 1 (200x200) holding ``boxes`` (x, y, w, h) of 'thing'."""
    path.write_text(json.dumps(dict(
        images=[dict(id=1, width=200, height=200)],
        annotations=[dict(id=i + 1, image_id=1, category_id=1, bbox=list(b),
                          area=b[2] * b[3], iscrowd=0) for i, b in enumerate(boxes)],
        categories=[dict(id=1, name='thing')])))


def _run_metric_into(work_dir, ann_file, detections):
    """Evaluate (x, y, w, h, score) detections on image 1 and write the report."""
    metric = SizeAwareCocoMetric(ann_file=ann_file, out_dir=str(work_dir))
    metric.dataset_meta = dict(classes=CLASSES)
    boxes = [[x, y, x + w, y + h] for x, y, w, h, _ in detections]
    metric.process({}, [dict(
        img_id=1, ori_shape=(200, 200),
        pred_instances=dict(bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                            scores=torch.tensor([d[4] for d in detections]),
                            labels=torch.zeros(len(detections), dtype=torch.int64)))])
    return metric.evaluate(size=1)


@pytest.fixture
def work_dirs(tmp_path):
    boxes = [(10, 10, 10, 10), (40, 10, 24, 24), (10, 60, 60, 60)]  # tiny, small, medium
    ann = tmp_path / 'gt.json'
    _write_annotations(ann, boxes)
    perfect = tmp_path / 'perfect'
    missing_tiny = tmp_path / 'missing_tiny'
    perfect.mkdir()
    missing_tiny.mkdir()
    _run_metric_into(perfect, str(ann), [b + (0.9,) for b in boxes])
    _run_metric_into(missing_tiny, str(ann), [b + (0.9,) for b in boxes[1:]])

    # a stock-CocoMetric run known only through mmengine's scalar log
    scalars_only = tmp_path / 'scalars_only'
    vis = scalars_only / '20260101_120000' / 'vis_data'
    vis.mkdir(parents=True)
    lines = [dict(lr=0.02, loss=1.2, epoch=1, iter=10, step=10),
             {'coco/bbox_mAP': 0.2, 'coco/bbox_mAP_50': 0.4, 'coco/bbox_mAP_75': 0.1,
              'coco/bbox_mAP_s': 0.05, 'coco/bbox_mAP_m': 0.3, 'coco/bbox_mAP_l': -1.0,
              'data_time': 0.1, 'time': 0.5, 'step': 1},
             dict(lr=0.02, loss=0.9, epoch=2, iter=20, step=20),
             {'coco/bbox_mAP': 0.3, 'coco/bbox_mAP_50': 0.5, 'coco/bbox_mAP_75': 0.2,
              'coco/bbox_mAP_s': 0.15, 'coco/bbox_mAP_m': 0.4, 'coco/bbox_mAP_l': -1.0,
              'data_time': 0.1, 'time': 0.5, 'step': 2}]
    (vis / 'scalars.json').write_text('\n'.join(json.dumps(x) for x in lines) + '\n')
    return dict(perfect=perfect, missing_tiny=missing_tiny, scalars_only=scalars_only,
                empty=tmp_path)


def test_load_from_report_and_from_scalars(work_dirs):
    perfect = load_run_metrics(str(work_dirs['perfect']))
    assert perfect['source'].endswith('size_aware_metrics.json')
    assert perfect['coco']['mAP'] == 1.0
    assert perfect['bin_areas']['tiny'] == [0.0, 256.0]
    assert perfect['bins'] == pytest.approx(dict(tiny=1.0, small=1.0, medium=1.0, large=-1.0))
    missing = load_run_metrics(str(work_dirs['missing_tiny']))
    assert missing['bins']['tiny'] == 0.0
    assert missing['bins']['small'] == pytest.approx(1.0)

    scalars = load_run_metrics(str(work_dirs['scalars_only']))
    assert scalars['source'].endswith('scalars.json')
    assert scalars['coco']['mAP'] == 0.3  # the latest evaluation, not the first
    assert scalars['coco']['mAP_s'] == 0.15
    assert scalars['bins'] == {}


def test_missing_metrics_are_reported(work_dirs):
    with pytest.raises(FileNotFoundError, match='size_aware_metrics.json'):
        load_run_metrics(str(work_dirs['empty']))
    with pytest.raises(FileNotFoundError, match='does not exist'):
        load_run_metrics(str(work_dirs['empty'] / 'nope'))


def _cells(table):
    """{row label: [cells]} of a format_comparison table, and its header cells."""
    rows = [[c.strip() for c in line.split('|')[1:-1]] for line in table.splitlines()
            if line.startswith('|')]
    return rows[0], {row[0]: row[1:] for row in rows[1:]}


def test_table_and_chart(work_dirs, tmp_path):
    runs = [load_run_metrics(str(work_dirs[k]))
            for k in ('perfect', 'missing_tiny', 'scalars_only')]
    names = ['perfect', 'no tiny', 'stock']
    table = format_comparison(runs, names)
    header, rows = _cells(table)
    assert header == ['', 'perfect', 'no tiny', 'stock', '#gt']
    assert max(len(line) for line in table.splitlines()) <= 80  # fits a terminal
    assert rows['AP'][:3] == ['1.000', '0.663', '0.300']
    # the stock run has no bins: '-' there, and its COCO small AP is shown
    assert rows['AP_s (COCO, < 32 px)'][2] == '0.150'
    assert rows['AP_tiny (< 16 px)'] == ['1.000', '0.000', '-', '1']
    out = plot_ap_by_size(runs, names, str(tmp_path / 'chart.png'))
    with Image.open(out) as image:
        assert image.size[0] > 300 and image.size[1] > 200


def test_gt_counts_in_table_and_empty_bins_marked(work_dirs):
    runs = [load_run_metrics(str(work_dirs[k])) for k in ('perfect', 'missing_tiny')]
    assert runs[0]['num_gt'] == dict(tiny=1, small=1, medium=1, large=0)
    assert gt_count_mismatch(runs, ['a', 'b']) is None
    table = format_comparison(runs, ['a', 'b'])
    header, rows = _cells(table)
    assert header == ['', 'a', 'b', '#gt']
    assert [rows[label][-1] for label in rows if label.startswith('AP_')][-4:] == [
        '1', '1', '1', '0']
    # the large bin has no ground truth: n/a (explained below the table), not -1.000
    assert rows['AP_large (> 96 px)'] == ['n/a', 'n/a', '0']
    assert table.splitlines()[-1].startswith('n/a: no ground truth in this bin')
    assert '-1.000' not in table


def test_chart_labels_show_counts_and_noise():
    runs = [dict(coco={}, bins=dict(tiny=0.5, large=0.5),
                 bin_areas=dict(tiny=[0, 256], large=[9216, 1e10]),
                 num_gt=dict(tiny=400, large=10))]
    assert compare._bin_label('large', runs) == 'large\n(> 96 px)\nn=10'
    # ten objects: AP is uncertain to about +-0.16; four hundred: +-0.025
    assert compare._noise(0.5, 10) == pytest.approx(0.158, abs=1e-3)
    assert compare._noise(0.5, 400) == pytest.approx(0.025)
    assert compare._noise(-1.0, 10) == 0.0


def _cli(argv, capsys):
    code = tool_main('analysis/compare_runs.py')(argv)
    return code, capsys.readouterr()


def test_cli(work_dirs, tmp_path, capsys):
    out = tmp_path / 'cli.png'
    code, printed = _cli([str(work_dirs['perfect']), str(work_dirs['missing_tiny']),
                          '--out', str(out)], capsys)
    assert code == 0
    assert 'missing_tiny' in printed.out and 'AP_tiny' in printed.out
    assert '#gt' in printed.out and printed.err == ''
    assert out.is_file()


def test_cli_warns_about_different_validation_sets(work_dirs, tmp_path, capsys):
    other = tmp_path / 'other_val'
    other.mkdir()
    boxes = [(10, 10, 10, 10), (30, 10, 10, 10), (40, 40, 24, 24)]
    ann = tmp_path / 'other_gt.json'
    _write_annotations(ann, boxes)
    _run_metric_into(other, str(ann), [b + (0.9,) for b in boxes])
    code, printed = _cli([str(work_dirs['perfect']), str(other), '--out',
                          str(tmp_path / 'c.png')], capsys)
    assert code == 0
    assert printed.err.startswith('warning: the runs were evaluated on different validation')
    assert 'tiny 2' in printed.err
    header, rows = _cells(printed.out.split('\n', 2)[2].rsplit('\nbar chart', 1)[0])
    assert header[-2:] == ['#gt perfect', '#gt other_val']
    assert rows['AP_tiny (< 16 px)'][-2:] == ['1', '2']


def test_cli_user_errors_are_one_line(work_dirs, tmp_path, capsys):
    untrained = tmp_path / 'untrained'  # a run that stopped before its evaluation
    (untrained / '20260101_120000').mkdir(parents=True)
    empty_report = tmp_path / 'empty_report'
    empty_report.mkdir()
    (empty_report / 'size_aware_metrics.json').write_text('')
    no_predictions = tmp_path / 'no_predictions'
    no_predictions.mkdir()
    ann = tmp_path / 'gt.json'
    metric = SizeAwareCocoMetric(ann_file=str(ann), out_dir=str(no_predictions))
    metric.dataset_meta = dict(classes=CLASSES)
    metric.process({}, [dict(img_id=1, ori_shape=(200, 200), pred_instances=dict(
        bboxes=torch.zeros(0, 4), scores=torch.zeros(0),
        labels=torch.zeros(0, dtype=torch.int64)))])
    metric.evaluate(size=1)
    capsys.readouterr()
    cases = [
        ([str(tmp_path / 'nope')], 'does not exist'),
        ([str(empty_report)], 'is empty or not valid JSON'),
        ([str(work_dirs['perfect']), '--metric', 'segm'], 'evaluated for bbox only'),
        ([str(no_predictions)], 'no bbox predictions'),
        ([str(untrained)], 'has the run been evaluated?'),
        ([str(work_dirs['perfect']), '--names', 'a', 'b'], '--names'),
    ]
    for argv, message in cases:
        code, printed = _cli(argv, capsys)
        assert code == 2, argv
        assert printed.out == ''
        lines = printed.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith('error: ') and message in lines[0], \
            (argv, printed.err)


def test_run_names_default_to_the_last_path_component_and_must_match_the_runs():
    assert run_names(['work_dirs/r18/', 'work_dirs/lip_r18/epoch_4.pth']) == ['r18',
                                                                             'epoch_4.pth']
    assert run_names(['a', 'b'], ['A', 'B']) == ['A', 'B']
    with pytest.raises(ValueError, match='--names has 1 entries for 2 work dirs'):
        run_names(['a', 'b'], ['A'], what='work dirs')
