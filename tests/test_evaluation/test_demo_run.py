"""The embedded demo end to end, on a few images and iterations."""
import json
import os
import runpy

import pytest
from mmengine.config import Config

from lip_mmdet.datasets import DEMO_CLASSES
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_demo_runs_end_to_end(tmp_path, capsys):
    demo = runpy.run_path(os.path.join(REPO, 'tools', 'run_demo.py'), run_name='demo')
    work_dir = tmp_path / 'work'
    code = demo['main']([
        '--data', str(tmp_path / 'data'), '--work-dir', str(work_dir), '--num-train', '4',
        '--num-val', '2', '--epochs', '1', '--name', 'tiny-demo',
        '--cfg-options', 'train_dataloader.batch_size=2', 'val_dataloader.batch_size=2'])
    assert code == 0
    printed = capsys.readouterr().out
    assert 'tiny-demo' in printed and 'AP_tiny' in printed and 'bbox_mAP' in printed
    # the generated data, the metric's report in the work dir, the checkpoint and the chart
    with open(tmp_path / 'data' / 'annotations' / 'instances_train.json') as f:
        assert len(json.load(f)['images']) == 4
    with open(work_dir / 'size_aware_metrics.json') as f:
        report = json.load(f)
    assert report['epoch'] == 1 and report['iter'] == 2
    assert set(report['metrics']['bbox']['bins']) == {'tiny', 'small', 'medium', 'large'}
    assert 'classwise' in report['metrics']['bbox']
    assert (work_dir / 'epoch_1.pth').is_file()
    assert (work_dir / 'ap_by_size.png').stat().st_size > 0


@pytest.mark.parametrize('name, backbone', [
    ('faster_rcnn_lip_r18_demo', 'LIPResNet'),
    ('faster_rcnn_r18_demo', 'ResNet'),
    ('faster_rcnn_dpp_r18_demo', 'DPPResNet'),
])
def test_demo_configs_build(name, backbone):
    register_all_modules(init_default_scope=True)
    cfg = Config.fromfile(os.path.join(REPO, 'configs', 'demo', f'{name}.py'))
    assert cfg.model.backbone.type == backbone
    assert cfg.model.backbone.init_cfg is None  # trained from scratch
    assert cfg.val_evaluator.type == 'SizeAwareCocoMetric'
    assert cfg.train_dataloader.dataset.metainfo.classes == DEMO_CLASSES
    assert cfg.demo_data.image_size == cfg.image_size
    model = MODELS.build(cfg.model)
    assert type(model.backbone).__name__ == backbone
    assert model.roi_head.bbox_head.num_classes == len(DEMO_CLASSES)
    # the stride-4 level's anchor is small enough for the tiny objects
    p2_anchors = model.rpn_head.prior_generator.base_anchors[0]
    assert float((p2_anchors[:, 2] - p2_anchors[:, 0]).max()) <= 16
