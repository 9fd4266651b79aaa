"""Command-line arguments -> config, and the preflight checks (in-process, no training)."""
import json
import os
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from lip_mmdet.apis.launch import (
    build_runner,
    load_test_config,
    load_train_config,
    test_parser,
    train_parser,
)
from lip_mmdet.apis.preflight import (
    PreflightError,
    check_amp,
    check_checkpoint,
    check_datasets,
    check_pretrained_weights,
    dataset_paths,
)

from tiny_run import REPO, tiny_options, to_cli

LIP_R50 = str(REPO / 'configs' / 'faster_rcnn_lip_r50.py')
RETINA_LIP_R50 = str(REPO / 'configs' / 'retinanet_lip_r50.py')
DPP_R50 = str(REPO / 'configs' / 'faster_rcnn_dpp_r50.py')


def train_cfg(*argv):
    return load_train_config(train_parser().parse_args([LIP_R50, *argv]))


def test_train_defaults():
    cfg = train_cfg()
    assert cfg.launcher == 'none'
    assert cfg.work_dir == osp.join('./work_dirs', 'faster_rcnn_lip_r50')
    assert not cfg.get('resume', False)
    assert cfg.optim_wrapper.type == 'OptimWrapper'
    assert cfg.default_scope == 'mmdet'


def test_train_flags_reach_the_config(monkeypatch):
    monkeypatch.delenv('LOCAL_RANK', raising=False)
    cfg = train_cfg('--work-dir', 'wd', '--amp', '--auto-scale-lr', '--launcher', 'pytorch',
                    '--local-rank', '3', '--cfg-options', 'train_dataloader.batch_size=4',
                    'model.backbone.init_cfg=None')
    assert cfg.work_dir == 'wd'
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'
    assert cfg.auto_scale_lr == dict(enable=True, base_batch_size=16)
    assert cfg.launcher == 'pytorch'
    assert cfg.train_dataloader.batch_size == 4
    assert cfg.model.backbone.init_cfg is None
    assert os.environ['LOCAL_RANK'] == '3'


@pytest.mark.parametrize('argv, load_from', [(['--resume'], None),
                                              (['--resume', 'auto'], None),
                                              (['--resume', 'wd/iter_4.pth'], 'wd/iter_4.pth')])
def test_resume_flag(argv, load_from):
    cfg = train_cfg(*argv)
    assert cfg.resume is True
    assert cfg.load_from == load_from


def test_missing_config_file():
    with pytest.raises(PreflightError, match='Config file not found: nope.py'):
        load_train_config(train_parser().parse_args(['nope.py']))


def test_amp_needs_cuda():
    cfg = train_cfg('--amp')
    if torch.cuda.is_available():
        check_amp(cfg)
    else:
        with pytest.raises(PreflightError, match='needs a CUDA GPU'):
            check_amp(cfg)
    check_amp(train_cfg())  # plain SGD is fine anywhere


def make_test_cfg(*argv, config=LIP_R50):
    return load_test_config(test_parser().parse_args([config, 'model.pth', *argv]))


def test_test_flags_reach_the_config():
    cfg = make_test_cfg('--show-dir', 'painted', '--work-dir', 'wd')
    assert cfg.load_from == 'model.pth'
    assert cfg.work_dir == 'wd'
    vis = cfg.default_hooks.visualization
    assert vis.draw is True and vis.test_out_dir == 'painted'
    with pytest.raises(PreflightError, match='.pkl'):
        make_test_cfg('--out', 'results.json')


@pytest.mark.parametrize('config', [LIP_R50, RETINA_LIP_R50])
def test_tta_wraps_the_model(config):
    cfg = make_test_cfg('--tta', config=config)
    assert cfg.model.type == 'DetTTAModel'
    assert cfg.model.module.backbone.type == 'LIPResNet'
    tta_step = cfg.test_dataloader.dataset.pipeline[-1]
    assert tta_step.type == 'TestTimeAug'


def test_tta_reaches_every_dataset_of_a_concat(tmp_path):
    config = tmp_path / 'concat_test.py'
    config.write_text(
        f"_base_ = '{LIP_R50}'\n"
        "test_dataloader = dict(dataset=dict(_delete_=True, type='ConcatDataset', datasets=[\n"
        "    {{_base_.test_dataloader.dataset}}, {{_base_.test_dataloader.dataset}}]))\n")
    cfg = make_test_cfg('--tta', config=str(config))
    leaves = cfg.test_dataloader.dataset.datasets
    assert len(leaves) == 2
    assert all(leaf.pipeline[-1].type == 'TestTimeAug' for leaf in leaves)


def test_dataset_check_names_missing_paths_and_the_way_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = train_cfg()
    with pytest.raises(PreflightError) as info:
        check_datasets(cfg, ('train', 'val'))
    message = str(info.value)
    for path in ('data/coco/annotations/instances_train2017.json', 'data/coco/train2017/',
                 'data/coco/annotations/instances_val2017.json', 'data/coco/val2017/',
                 str(tmp_path / 'data/coco/train2017')):
        assert path in message
    assert 'cocodataset.org' in message and 'make demo' in message


def test_dataset_check_passes_on_present_data(tiny_coco):
    cfg = train_cfg()
    cfg.merge_from_dict(tiny_options(cfg, tiny_coco))
    check_datasets(cfg, ('train', 'val', 'test'))
    cfg.test_dataloader.dataset.ann_file = 'gone.json'
    with pytest.raises(PreflightError, match='test_dataloader annotation file: .*gone.json'):
        check_datasets(cfg, ('train', 'val', 'test'))
    check_datasets(cfg, ('train', 'val'))  # only the splits asked for


def test_dataset_paths_look_through_wrappers():
    leaf = dict(type='CocoDataset', data_root='root/', ann_file='a.json',
                data_prefix=dict(img='imgs/'))
    remote = dict(leaf, data_root='s3://bucket/')
    wrapped = dict(type='ConcatDataset', datasets=[
        dict(type='RepeatDataset', times=2, dataset=leaf), dict(leaf, ann_file='/abs/b.json')])
    assert dataset_paths(wrapped) == [
        ('annotation file', 'root/a.json'), ('img folder', 'root/imgs/'),
        ('annotation file', '/abs/b.json'), ('img folder', 'root/imgs/')]
    cfg = Config(dict(train_dataloader=dict(dataset=remote)))
    check_datasets(cfg, ('train',))  # remote storage is not looked up on disk


@pytest.mark.parametrize('config, expected', [
    (LIP_R50, 'python tools/model_converters/lip2mmdet.py lip_resnet-50.pth '
              'checkpoints/lip_resnet50_mmdet.pth'),
    (str(REPO / 'configs' / 'retinanet_lip_r101.py'), 'lip_resnet-101.pth'),
    (DPP_R50, 'https://download.pytorch.org/models/resnet50-0676ba61.pth'),
])
def test_pretrained_check_says_how_to_make_the_file(config, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = Config.fromfile(config)
    with pytest.raises(PreflightError) as info:
        check_pretrained_weights(cfg.model)
    message = str(info.value)
    assert cfg.model.backbone.init_cfg.checkpoint in message
    assert expected in message
    assert 'model.backbone.init_cfg=None' in message and 'make demo' in message
    (tmp_path / 'checkpoints').mkdir()
    torch.save({'state_dict': {}}, tmp_path / cfg.model.backbone.init_cfg.checkpoint)
    check_pretrained_weights(cfg.model)


def test_checkpoint_check(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))  # a cached download needs no network
    (tmp_path / 'hub' / 'checkpoints').mkdir(parents=True)
    torch.save({}, tmp_path / 'hub' / 'checkpoints' / 'resnet50-0676ba61.pth')
    check_checkpoint('torchvision://resnet50', 'pretrained backbone checkpoint')
    with pytest.raises(PreflightError, match=r'Checkpoint to test not found: .*mine\.pth'):
        check_checkpoint(str(tmp_path / 'mine.pth'), 'checkpoint to test')


@pytest.mark.skipif(torch.cuda.is_available(), reason='the CPU-only distributed path')
def test_cpu_distributed_needs_gloo(tiny_coco):
    cfg = train_cfg('--launcher', 'pytorch')
    with pytest.raises(PreflightError, match='env_cfg.dist_cfg.backend=gloo'):
        build_runner(cfg)


def test_runners_of_one_process_write_their_own_scalars(tiny_coco, tmp_path):
    """mmengine hands the visualizer of an existing name to the next Runner asking for it;
    each Runner that build_runner makes writes its scalars into its own work dir."""
    options = to_cli(tiny_options(Config.fromfile(LIP_R50), tiny_coco))
    names = ('first', 'second', 'third')
    for value, name in enumerate(names):
        runner = build_runner(train_cfg('--work-dir', str(tmp_path / name), '--cfg-options',
                                        *options))
        runner.visualizer.add_scalars({'loss': value})
    for value, name in enumerate(names):
        (scalars, ) = (tmp_path / name).glob('*/vis_data/scalars.json')
        assert [json.loads(line)['loss'] for line in scalars.read_text().splitlines()] == [value]
