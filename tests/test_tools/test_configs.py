"""Every detection config under configs/ builds its model and pipelines, trains one
iteration and runs one validation pass on the tiny generated COCO dataset (real Runner).
A ResNet-101 config that is its ResNet-50 config with another depth and checkpoint is
checked to be exactly that, and its backbone to build, instead of being trained again."""
import math

import pytest
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper

from lip_mmdet.apis.launch import build_runner

from param_groups import group_of_each_parameter
from tiny_run import CONFIGS, tiny_options

DEPTH_TWINS = [path for path in CONFIGS if path.stem.endswith('_r101')]
TRAINED = [path for path in CONFIGS if path not in DEPTH_TWINS]

COCO_KEYS = ('bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_75', 'bbox_mAP_s', 'bbox_mAP_m',
             'bbox_mAP_l')
EXPECTED = {
    'faster_rcnn_lip_r50.py', 'faster_rcnn_lip_r101.py', 'retinanet_lip_r50.py',
    'retinanet_lip_r101.py', 'faster_rcnn_dpp_r50.py', 'retinanet_dpp_r50.py'
}


def test_all_detection_configs_are_present():
    assert EXPECTED <= {path.name for path in CONFIGS}


@pytest.mark.parametrize('config', DEPTH_TWINS, ids=lambda path: path.stem)
def test_r101_config_is_its_r50_config_at_depth_101(config):
    deep = Config.fromfile(str(config)).to_dict()
    r50 = config.with_name(config.name.replace('_r101', '_r50'))
    shallow = Config.fromfile(str(r50)).to_dict()
    deep_backbone, shallow_backbone = deep['model']['backbone'], shallow['model']['backbone']
    assert (deep_backbone.pop('depth'), shallow_backbone.pop('depth')) == (101, 50)
    checkpoint = deep_backbone['init_cfg'].pop('checkpoint')
    assert checkpoint == 'checkpoints/lip_resnet101_mmdet.pth'
    assert shallow_backbone['init_cfg'].pop('checkpoint') != checkpoint
    assert deep == shallow
    backbone = MODELS.build(dict(Config.fromfile(str(config)).model.backbone, init_cfg=None))
    assert type(backbone).__name__ == 'LIPResNet' and len(backbone.layer3) == 23


@pytest.mark.parametrize('config', TRAINED, ids=lambda path: path.stem)
def test_config_trains_one_iteration_and_validates(config, tiny_coco, tmp_path):
    cfg = Config.fromfile(str(config))
    backbone = cfg.model.backbone
    assert backbone.type == ('DPPResNet' if '_dpp_' in config.name else 'LIPResNet')
    assert backbone.depth == 50
    assert backbone.init_cfg.checkpoint.startswith('checkpoints/'), backbone.init_cfg

    cfg.merge_from_dict(tiny_options(cfg, tiny_coco))
    cfg.work_dir = str(tmp_path)
    cfg.default_hooks.checkpoint = None  # saving is tested with the tools; it costs seconds here
    # the Runner keys its logger and message hub by this name
    cfg.experiment_name = config.stem
    cfg.launcher = 'none'
    runner = build_runner(cfg)  # as tools/train.py builds it
    runner.train()

    assert runner.iter == 1
    hub = runner.message_hub
    assert math.isfinite(hub.get_scalar('train/loss').current())
    metrics = {key: hub.get_scalar(f'val/coco/{key}').current() for key in COCO_KEYS}
    assert all(-1 <= value <= 1 for value in metrics.values()), metrics
    assert metrics['bbox_mAP_s'] >= 0, 'the tiny val split has small objects'

    if '_dpp_' in config.name:
        groups = group_of_each_parameter(runner.model, runner.optim_wrapper.optimizer)
        decay = {name: group['weight_decay'] for name, group in groups.items()}
        dpp = {name: wd for name, wd in decay.items()
               if name.endswith(('log_alpha', 'log_lambda'))}
        assert dpp, 'no DPP parameters found in the optimizer'
        assert set(dpp.values()) == {0.0}, dpp
        assert decay['backbone.layer4.0.conv1.weight'] == cfg.optim_wrapper.optimizer.weight_decay


def test_logit_learning_rate_fragment_on_a_coco_config(tmp_path):
    # the docs' recipe for a LIP-ResNet whose pooling starts untrained: the fragment next to
    # a COCO config gives exactly the logit branches 10x the stock SGD learning rate
    configs = CONFIGS[0].parent
    recipe = tmp_path / 'faster_rcnn_lip_r50_torchvision.py'
    recipe.write_text(
        f"_base_ = ['{configs / 'faster_rcnn_lip_r50.py'}',\n"
        f"          '{configs / '_base_' / 'lip_logit_lr_mult.py'}']\n"
        "model = dict(backbone=dict(init_cfg=dict(\n"
        "    type='Pretrained', checkpoint='torchvision://resnet50')))\n"
        "optim_wrapper = dict(paramwise_cfg=dict(custom_keys=_base_.lip_logit_lr_mult))\n")
    cfg = Config.fromfile(str(recipe))
    model = MODELS.build(dict(cfg.model, backbone=dict(cfg.model.backbone, init_cfg=None)))
    groups = group_of_each_parameter(model, build_optim_wrapper(model, cfg.optim_wrapper).optimizer)
    trainable = {name for name, param in model.named_parameters() if param.requires_grad}
    lrs = {name: group['lr'] for name, group in groups.items() if name in trainable}
    logit = {n: lr for n, lr in lrs.items() if '.logit.' in n}
    # the three stride-2 stages' shared logit trunks (conv + norm, twice); the stem's LIP is
    # frozen with the stem by the stock frozen_stages=1
    assert len(logit) == 3 * 6
    assert not any(p.requires_grad for p in model.backbone.maxpool.parameters())
    assert all(lr == pytest.approx(0.2) for lr in logit.values())
    assert {lr for n, lr in lrs.items() if n not in logit} == {0.02}
