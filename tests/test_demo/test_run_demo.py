"""The embedded demo end to end, on a few images and iterations."""
import json
import os
import subprocess
import sys

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from PIL import Image

from lip_mmdet.demo import DEMO_CLASSES, data_setting_name

from param_groups import group_of_each_parameter
from tool_scripts import tool_main

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(REPO, 'configs', 'demo', 'faster_rcnn_lip_r18_demo.py')


def test_demo_runs_end_to_end(tmp_path, capsys):
    work_dir = tmp_path / 'work'
    code = tool_main('run_demo.py')([
        '--data', str(tmp_path / 'data'), '--work-dir', str(work_dir), '--num-train', '4',
        '--num-val', '2', '--epochs', '1', '--name', 'tiny-demo',
        '--cfg-options', 'train_dataloader.batch_size=2', 'val_dataloader.batch_size=2'])
    assert code == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    # a header, progress lines, the summary; mmengine's log only in its file
    assert lines[0].startswith('[demo] ') and 'faster_rcnn_lip_r18_demo.py' in lines[0]
    assert '1 epoch = 2 iterations of batch 2' in printed
    assert any(line.startswith('train  epoch 1/1  iter 2/2  loss ') and 'ETA' in line
               for line in lines)
    assert any(line.startswith('val    batch 1/1') for line in lines)
    assert 'tiny-demo' in printed and 'AP_tiny' in printed and '#gt' in printed
    assert 'bbox_mAP' in printed
    assert 'Epoch(train)' not in printed and 'Config:' not in printed
    assert len(lines) < 40
    log_file = [line.split(': ', 1)[1] for line in lines
                if line.startswith('[demo] full log: ')][0]
    with open(log_file) as f:
        log = f.read()
    assert 'Epoch(train)' in log and 'Config:' in log

    # the data in its own folder per setting
    (data_root, ) = (tmp_path / 'data').iterdir()
    assert data_root.name == data_setting_name(**dict(
        Config.fromfile(DEMO).demo_data, num_train=4, num_val=2))
    with open(data_root / 'annotations' / 'instances_train.json') as f:
        assert len(json.load(f)['images']) == 4
    # the metric's report in the work dir, the checkpoint and the chart
    with open(work_dir / 'size_aware_metrics.json') as f:
        report = json.load(f)
    assert report['epoch'] == 1 and report['iter'] == 2
    assert set(report['metrics']['bbox']['bins']) == {'tiny', 'small', 'medium', 'large'}
    assert 'classwise' in report['metrics']['bbox']
    assert (work_dir / 'epoch_1.pth').is_file()
    assert (work_dir / 'ap_by_size.png').stat().st_size > 0
    # the importance maps of the first two validation images, one row each
    maps = work_dir / 'pooling_importance.png'
    assert f'[demo] importance maps of two validation images: {maps}' in printed
    assert Image.open(maps).size == (5 * 320, 2 * 340)


def test_demo_bad_input_is_one_line(tmp_path):
    """Exit 2 with one line on stderr: no traceback, and no warning from the libraries'
    imports (pkg_resources' deprecation notice used to appear twice per run)."""
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, 'tools', 'run_demo.py'), '--data',
         str(tmp_path / 'data'), '--work-dir', str(tmp_path / 'work'), '--num-train', '-3'],
        capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=REPO))
    assert result.returncode == 2
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: num_train and num_val must be >= 0')
    assert result.stdout == ''
    assert not (tmp_path / 'data').exists()


def test_demo_help_describes_every_option(capsys):
    with pytest.raises(SystemExit):
        tool_main('run_demo.py')(['--help'])
    text = ' '.join(capsys.readouterr().out.split())
    assert 'generate the small-object data, train, evaluate' in text
    assert '(default: work_dirs/demo_lip_r18)' in text and '(default: data/demo)' in text
    for option in ('--config', '--work-dir', '--data', '--num-train', '--num-val',
                   '--epochs', '--seed', '--name', '--verbose', '--cfg-options'):
        assert option in text


@pytest.mark.parametrize('name, backbone', [
    ('faster_rcnn_lip_r18_demo', 'LIPResNet'),
    ('faster_rcnn_r18_demo', 'ResNet'),
    ('faster_rcnn_dpp_r18_demo', 'DPPResNet'),
    ('faster_rcnn_lip_r18_gradual_demo', 'LIPResNet'),
    ('faster_rcnn_r18_sgd_demo', 'ResNet'),
    ('faster_rcnn_lip_r18_sgd_demo', 'LIPResNet'),
    ('faster_rcnn_lip_r18_logit_lr1_demo', 'LIPResNet'),
    ('faster_rcnn_dpp_r18_pool_lr10_demo', 'DPPResNet'),
])
def test_demo_configs_build(name, backbone):
    register_all_modules(init_default_scope=True)
    cfg = Config.fromfile(os.path.join(REPO, 'configs', 'demo', f'{name}.py'))
    assert cfg.model.backbone.type == backbone
    assert cfg.model.backbone.init_cfg is None  # trained from scratch
    assert cfg.val_evaluator.type == 'SizeAwareCocoMetric'
    assert cfg.train_dataloader.dataset.metainfo.classes == DEMO_CLASSES
    assert cfg.demo_data.image_size == cfg.image_size
    # tools/train.py on this config reads the folder run_demo.py generates
    assert cfg.train_dataloader.dataset.data_root == (
        f'data/demo/{data_setting_name(**cfg.demo_data)}/')
    model = MODELS.build(cfg.model)
    assert type(model.backbone).__name__ == backbone
    assert model.roi_head.bbox_head.num_classes == len(DEMO_CLASSES)
    # the stride-4 level's anchor is small enough for the tiny objects
    p2_anchors = model.rpn_head.prior_generator.base_anchors[0]
    assert float((p2_anchors[:, 2] - p2_anchors[:, 0]).max()) <= 16
    if name.endswith('_gradual_demo'):
        assert model.backbone.logit_init == 'gradual'


def _param_groups(name):
    register_all_modules(init_default_scope=True)
    cfg = Config.fromfile(os.path.join(REPO, 'configs', 'demo', f'{name}.py'))
    model = MODELS.build(cfg.model)
    optimizer = build_optim_wrapper(model, cfg.optim_wrapper).optimizer
    return optimizer, group_of_each_parameter(model, optimizer).items()


@pytest.mark.parametrize('name', ['faster_rcnn_r18_sgd_demo', 'faster_rcnn_lip_r18_sgd_demo'])
def test_sgd_twins_use_the_published_optimiser_scaled_to_the_batch(name):
    optimizer, params = _param_groups(name)
    assert isinstance(optimizer, torch.optim.SGD)
    # Faster R-CNN's 0.02 for 16 images, for the demo's 4 images per batch
    assert {(g['lr'], g['momentum'], g['weight_decay']) for _, g in params} == {
        (0.005, 0.9, 1e-4)}


@pytest.mark.parametrize('name, pooling_keys, decay', [
    ('faster_rcnn_lip_r18_demo', ('.logit.',), 0.05),
    ('faster_rcnn_dpp_r18_pool_lr10_demo', ('log_alpha', 'log_lambda'), 0.),
])
def test_learning_rate_multiplier_reaches_exactly_the_pooling_parameters(
        name, pooling_keys, decay):
    optimizer, params = _param_groups(name)
    assert isinstance(optimizer, torch.optim.AdamW)
    pooling, others = {}, {}
    for name, group in params:
        is_pooling = any(key in f'.{name}' for key in pooling_keys)
        (pooling if is_pooling else others)[name] = (group['lr'], group['weight_decay'])
    assert pooling and all(name.startswith('backbone.') for name in pooling)
    assert set(pooling.values()) == {(0.01, decay)}
    assert set(others.values()) == {(1e-3, 0.05)}


@pytest.mark.parametrize('name', [
    'faster_rcnn_r18_demo', 'faster_rcnn_lip_r18_logit_lr1_demo',
    'faster_rcnn_lip_r18_gradual_demo'])
def test_twins_train_every_parameter_at_the_base_learning_rate(name):
    # the LIP demo's logit multiplier matches nothing in ResNet-18 and is removed in the
    # variants that reproduce the demo's earlier setting
    optimizer, params = _param_groups(name)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert {(g['lr'], g['weight_decay']) for _, g in params} == {(1e-3, 0.05)}
