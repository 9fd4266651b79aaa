"""PoolingStatsHook in a real Runner: what reaches the message hub and scalars.json."""
import json
from pathlib import Path

import pytest
from mmdet.registry import HOOKS
from mmengine.config import Config

from lip_mmdet.apis.launch import build_runner
from lip_mmdet.engine import PoolingStatsHook

REPO = Path(__file__).resolve().parents[3]
DEMO = REPO / 'configs' / 'demo'


def tiny_demo_config(name, tiny, work_dir, iters=3):
    """A demo config on ``iters`` batches of 2 tiny images, one epoch, no validation, every
    iteration logged, pooling measured every 2 iterations."""
    cfg = Config.fromfile(str(DEMO / f'{name}.py'))
    cfg.work_dir = str(work_dir)
    dataset = cfg.train_dataloader.dataset
    dataset.data_root = tiny['data_root']
    dataset.ann_file = tiny['train_ann']
    dataset.data_prefix = dict(img=tiny['train_img_prefix'])
    dataset.indices = 2 * iters
    cfg.train_dataloader.batch_size = 2
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=1)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.test_cfg = cfg.test_dataloader = cfg.test_evaluator = None
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=10)
    cfg.custom_hooks = [dict(type='PoolingStatsHook', interval=2)]
    cfg.param_scheduler = None  # a constant rate: the first update is visible
    cfg.launcher = 'none'
    return cfg


def scalar_records(work_dir):
    paths = list(Path(work_dir).glob('*/vis_data/scalars.json'))
    assert len(paths) == 1
    return [json.loads(line) for line in paths[0].read_text().splitlines()]


def test_registered_and_checks_interval():
    assert HOOKS.get('PoolingStatsHook') is PoolingStatsHook
    with pytest.raises(ValueError, match='interval'):
        PoolingStatsHook(interval=0)


def test_demo_configs_enable_it():
    for name in ('faster_rcnn_r18_demo', 'faster_rcnn_lip_r18_demo',
                 'faster_rcnn_dpp_r18_demo'):
        hooks = Config.fromfile(str(DEMO / f'{name}.py')).custom_hooks
        assert [h['type'] for h in hooks].count('PoolingStatsHook') == 1


LIP_LAYERS = ['backbone.maxpool.lip', 'backbone.layer2.0.pool.lip',
              'backbone.layer3.0.pool.lip', 'backbone.layer4.0.pool.lip']
DPP_LAYERS = ['backbone.maxpool', 'backbone.layer2.0.pool', 'backbone.layer3.0.pool',
              'backbone.layer4.0.pool']


def measured_records(work_dir, prefix='pooling'):
    records = [{k: v for k, v in r.items() if k.startswith(prefix + '/')}
               for r in scalar_records(work_dir)]
    return [r for r in records if r]


def test_lip_effective_window_is_nine_at_initialisation(tiny_coco, tmp_path):
    cfg = tiny_demo_config('faster_rcnn_lip_r18_demo', tiny_coco, tmp_path, iters=2)
    cfg.custom_hooks = [dict(type='PoolingStatsHook', interval=1)]
    runner = build_runner(cfg)
    runner.train()
    first, second = measured_records(tmp_path)
    assert (first['pooling/iter'], second['pooling/iter']) == (1, 2)
    assert sorted(first) == sorted([f'pooling/{n}/eff_window' for n in LIP_LAYERS]
                                   + ['pooling/iter'])
    # constant logits at initialisation: every LIP layer is 3x3 average pooling
    assert [first[f'pooling/{n}/eff_window'] for n in LIP_LAYERS] == \
        pytest.approx([9.0] * 4, abs=1e-4)
    # after one update the logits vary (the instance norm rescales the zero-initialised
    # conv's first step to unit variance), so the windows narrow
    for name in LIP_LAYERS:
        assert 1.0 <= second[f'pooling/{name}/eff_window'] < 9.0 - 1e-3
    hook = next(h for h in runner.hooks if isinstance(h, PoolingStatsHook))
    assert hook.measurements == 2 and 0 < hook.overhead_percent < 100
    assert not hook._handles  # the forward hooks are removed after each measurement


def test_dpp_lambda_and_alpha_start_at_one(tiny_coco, tmp_path):
    cfg = tiny_demo_config('faster_rcnn_dpp_r18_demo', tiny_coco, tmp_path, iters=2)
    cfg.custom_hooks = [dict(type='PoolingStatsHook', interval=1, prefix='pool')]
    build_runner(cfg).train()
    first, second = measured_records(tmp_path, prefix='pool')
    stats = ('lambda_mean', 'lambda_std', 'alpha_mean', 'alpha_std')
    assert sorted(first) == sorted([f'pool/{n}/{s}' for n in DPP_LAYERS for s in stats]
                                   + ['pool/iter'])
    for name in DPP_LAYERS:
        assert [first[f'pool/{name}/{s}'] for s in stats] == pytest.approx([1, 0, 1, 0])
    # one AdamW update (about lr = 1e-3 on log lambda) later, lambda has moved
    for name in DPP_LAYERS:
        assert 1e-4 < second[f'pool/{name}/lambda_std'] < 1e-2


def test_measures_every_interval_and_at_the_end_of_each_epoch(tiny_coco, tmp_path):
    cfg = tiny_demo_config('faster_rcnn_dpp_r18_demo', tiny_coco, tmp_path, iters=3)
    cfg.train_cfg.max_epochs = 2
    build_runner(cfg).train()  # interval 2, epochs of 3 iterations, logged every one
    measured = [r['pooling/iter'] for r in measured_records(tmp_path)]
    # iteration 5 is logged with the latest measurement, that of iteration 4
    assert measured == [2, 3, 4, 4, 6]
