"""Reading pooling statistics from scalar logs and checkpoints, and their figure."""
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from lip_mmdet.models.backbones import DPPResNet
from lip_mmdet.visualization import load_pooling_history, plot_pooling_runs


def write_scalars(work_dir, timestamp, records):
    vis = work_dir / timestamp / 'vis_data'
    vis.mkdir(parents=True)
    (vis / 'scalars.json').write_text('\n'.join(json.dumps(r) for r in records) + '\n')


def test_history_from_logs_keys_each_value_by_the_measured_iteration(tmp_path):
    layer = 'backbone.layer2.0.pool.lip'
    write_scalars(tmp_path, '20260101_000000', [
        {'loss': 1.0, 'step': 20},
        # the logger repeats the latest measurement until the next one
        {'pooling/backbone.maxpool.lip/eff_window': 9.0, f'pooling/{layer}/eff_window': 9.0,
         'pooling/iter': 1, 'step': 20},
        {'pooling/backbone.maxpool.lip/eff_window': 9.0, f'pooling/{layer}/eff_window': 9.0,
         'pooling/iter': 1, 'step': 40},
        {'pooling/backbone.maxpool.lip/eff_window': 6.5, f'pooling/{layer}/eff_window': 8.0,
         'pooling/iter': 50, 'step': 60},
        {'coco/bbox_mAP': 0.1, 'step': 1},
    ])
    # a resumed run logs into a second timestamp folder
    write_scalars(tmp_path, '20260101_010000', [
        {'pooling/backbone.maxpool.lip/eff_window': 4.0, f'pooling/{layer}/eff_window': 7.0,
         'pooling/iter': 100, 'step': 100}])
    history = load_pooling_history(str(tmp_path))
    assert set(history['series']) == {'eff_window'}
    assert history['series']['eff_window']['backbone.maxpool.lip'] == {1: 9.0, 50: 6.5,
                                                                       100: 4.0}
    assert history['series']['eff_window'][layer] == {1: 9.0, 50: 8.0, 100: 7.0}


def test_history_from_a_checkpoint_reads_dpp_parameters(tmp_path):
    backbone = DPPResNet(depth=18)
    log_lambda = torch.linspace(-1, 2, 64)
    with torch.no_grad():
        backbone.maxpool.log_lambda.copy_(log_lambda)
        backbone.layer4[0].pool.log_alpha.fill_(12.0)  # beyond the clamp at 10
    state = {f'backbone.{k}': v for k, v in backbone.state_dict().items()}
    path = tmp_path / 'epoch_1.pth'
    torch.save(dict(state_dict=state, meta=dict(iter=40)), path)
    history = load_pooling_history(str(path))
    series = history['series']
    assert set(series) == {'lambda_mean', 'lambda_std', 'alpha_mean', 'alpha_std'}
    assert list(series['lambda_mean']) == ['backbone.maxpool', 'backbone.layer2.0.pool',
                                           'backbone.layer3.0.pool', 'backbone.layer4.0.pool']
    assert series['lambda_mean']['backbone.maxpool'][40] == pytest.approx(
        float(log_lambda.exp().mean()), rel=1e-6)
    assert series['lambda_std']['backbone.maxpool'][40] == pytest.approx(
        float(log_lambda.exp().std()), rel=1e-6)
    assert series['lambda_mean']['backbone.layer2.0.pool'][40] == pytest.approx(1.0)
    assert series['alpha_mean']['backbone.layer4.0.pool'][40] == pytest.approx(math.exp(10))
    # a work dir without logged statistics falls back to its checkpoint
    assert load_pooling_history(str(tmp_path))['series'] == series


def test_missing_statistics_are_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match='no such work dir'):
        load_pooling_history(str(tmp_path / 'absent'))
    write_scalars(tmp_path, '20260101_000000', [{'loss': 1.0, 'step': 1}])
    with pytest.raises(FileNotFoundError, match='no pooling statistics'):
        load_pooling_history(str(tmp_path))


def test_figure_has_two_panels_per_statistic_and_a_column_per_run(tmp_path):
    lip = dict(series={'eff_window': {'backbone.maxpool.lip': {1: 9.0, 50: 5.0},
                                      'backbone.layer2.0.pool.lip': {1: 9.0, 50: 8.0}}})
    dpp = dict(series={'lambda_mean': {'backbone.maxpool': {1: 1.0, 50: 3.0}},
                       'lambda_std': {'backbone.maxpool': {1: 0.0, 50: 0.5}},
                       'alpha_mean': {'backbone.maxpool': {1: 1.0, 50: 0.8}}})
    out = plot_pooling_runs([lip, dpp], ['LIP', 'DPP'], str(tmp_path / 'p.png'))
    picture = np.asarray(Image.open(out))
    # 2 statistics (DPP) x 2 panels = 4 rows of 3.2 in, 2 runs of 5.5 in, at 100 dpi
    assert picture.shape[:2] == (4 * 320, 2 * 550)
