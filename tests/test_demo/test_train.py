"""The demo run's config (schedule fitted to its size) and its per-setting data folders."""
import os

import pytest
import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import PARAM_SCHEDULERS

from lip_mmdet.demo import data_setting_name, demo_config, prepare_demo_data

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(REPO, 'configs', 'demo', 'faster_rcnn_lip_r18_demo.py')


def _lr_curve(cfg, epoch_iters):
    """Learning rate at every training iteration under ``cfg.param_scheduler``, stepped as
    mmengine's Runner steps them."""
    param = torch.nn.Parameter(torch.zeros(1))
    optim = OptimWrapper(torch.optim.AdamW([param], lr=cfg.optim_wrapper.optimizer.lr))
    schedulers = [PARAM_SCHEDULERS.build(
        dict(s), default_args=dict(optimizer=optim, epoch_length=epoch_iters))
        for s in cfg.param_scheduler]
    lrs = []
    for _ in range(cfg.train_cfg.max_epochs * epoch_iters):
        lrs.append(optim.param_groups[0]['lr'])
        for scheduler in schedulers:
            if not scheduler.by_epoch:
                scheduler.step()
    return lrs


@pytest.mark.parametrize('epochs', [2, 4, 8])
def test_schedule_follows_epochs(tmp_path, epochs):
    cfg = demo_config(DEMO, str(tmp_path), epochs=epochs)
    assert cfg.train_cfg.max_epochs == epochs
    assert cfg.train_cfg.val_interval == epochs  # evaluated once, at the end
    assert cfg.default_hooks.checkpoint.interval == epochs
    warmup, cosine = cfg.param_scheduler
    # 50 iterations, or its share of the default 400 (1/8) when the run is shorter
    assert warmup.end == {2: 25, 4: 50, 8: 50}[epochs]
    assert (cosine.begin, cosine.end, cosine.T_max) == (0, epochs, epochs)

    lr = cfg.optim_wrapper.optimizer.lr
    lrs = _lr_curve(cfg, epoch_iters=100)  # 400 images, batch 4
    # the cosine reaches its floor (1 % of lr) at the last iteration, not before
    assert lrs[-1] == pytest.approx(0.01 * lr, rel=0.05)
    assert 0.45 * lr < lrs[len(lrs) // 2] < 0.6 * lr
    assert lrs[3 * len(lrs) // 4] > 0.1 * lr


def test_schedule_follows_images_and_batch_size(tmp_path):
    """4 images at batch 2 for 1 epoch: 2 iterations, so the 50-iteration warm-up shrinks
    to its share of the demo's own run (50 of 400) and the cosine still spans the run."""
    cfg = demo_config(DEMO, str(tmp_path), epochs=1, num_train=4, num_val=2,
                      cfg_options={'train_dataloader.batch_size': 2})
    assert cfg.demo_data.num_train == 4 and cfg.demo_data.num_val == 2
    warmup, cosine = cfg.param_scheduler
    assert warmup.end == 1
    assert (cosine.end, cosine.T_max) == (1, 1)
    assert cfg.default_hooks.logger.interval == 2  # one epoch's iterations
    lrs = _lr_curve(cfg, epoch_iters=2)
    assert len(lrs) == 2 and lrs[1] > lrs[0]

    longer = demo_config(DEMO, str(tmp_path), num_train=800, epochs=3)
    assert longer.param_scheduler[0].end == 50
    assert longer.param_scheduler[1].T_max == 3


def test_explicit_settings_win_and_max_epochs_option_fits_too(tmp_path):
    cfg = demo_config(DEMO, str(tmp_path), seed=3, cfg_options={
        'train_cfg.max_epochs': 6, 'default_hooks.checkpoint.interval': 2})
    assert cfg.randomness.seed == 3
    assert cfg.param_scheduler[1].T_max == 6
    assert cfg.default_hooks.checkpoint.interval == 2


def test_one_folder_per_data_setting(tmp_path):
    setting = dict(num_train=3, num_val=2, image_size=64, objects_per_image=(2, 4), seed=0)
    first = prepare_demo_data(setting, str(tmp_path), progress=False)
    assert os.path.basename(first) == data_setting_name(**setting)
    stamp = os.path.join(first, 'train', '000000.jpg')
    os.utime(stamp, (0, 0))
    second = prepare_demo_data(dict(setting, num_train=5), str(tmp_path), progress=False)
    assert second != first
    assert len(os.listdir(os.path.join(second, 'train'))) == 5
    assert len(os.listdir(os.path.join(first, 'train'))) == 3  # untouched
    assert prepare_demo_data(setting, str(tmp_path), progress=False) == first
    assert os.path.getmtime(stamp) == 0  # reused, not regenerated
