"""tools/analysis/seed_study.py, plot_pooling.py and show_pooling.py end to end on a tiny
demo study (4 training images, 1 epoch, 2 seeds): the tools' main functions in this process,
and seed_study.py's refusal through its script's ``__main__`` block."""
import contextlib
import io
import json
import math
import shutil

import numpy as np
import pytest
from PIL import Image

from lip_mmdet.evaluation import load_run_metrics
from lip_mmdet.evaluation.seed_study import RESULT_FILE, run_metrics, t_quantile

from tiny_run import REPO, TOOLS
from tool_scripts import assert_clean_failure, run_as_script, tool_main

DEMO = REPO / 'configs' / 'demo'
LIP, DPP = DEMO / 'faster_rcnn_lip_r18_demo.py', DEMO / 'faster_rcnn_dpp_r18_demo.py'
ANALYSIS = TOOLS / 'analysis'
SIZE = ['--num-train', '4', '--num-val', '2', '--epochs', '1', '--cfg-options',
        'train_dataloader.batch_size=2', 'val_dataloader.batch_size=2']


def run(script, *args):
    """``tools/analysis/<script> args`` in this process: its exit code."""
    return tool_main(f'analysis/{script}')([str(arg) for arg in args])


def study_args(work_dir, data):
    return ['--configs', LIP, DPP, '--seeds', '0', '1', '--work-dir', work_dir, '--data',
            data, *SIZE]


def assert_user_error(code, capsys, message):
    printed = capsys.readouterr()
    assert code == 2, printed.out + printed.err
    assert message in printed.err


@pytest.fixture(scope='module')
def study(short_tmp_path):
    root = short_tmp_path('study')
    work_dir = root / 'study'
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = run('seed_study.py', *study_args(work_dir, root / 'data'))
    assert code == 0, printed.getvalue()[-3000:]
    data_root = next(p for p in (root / 'data').iterdir() if p.is_dir())
    return dict(root=root, work_dir=work_dir, stdout=printed.getvalue(), data_root=data_root)


def test_seed_study_writes_the_runs_statistics(study):
    work_dir = study['work_dir']
    for number, label in enumerate(['faster_rcnn_lip_r18_demo seed 0',
                                    'faster_rcnn_dpp_r18_demo seed 0',
                                    'faster_rcnn_lip_r18_demo seed 1',
                                    'faster_rcnn_dpp_r18_demo seed 1'], 1):
        assert f'run {number}/4: {label}' in study['stdout']
    assert 'ETA' in study['stdout']  # from the second run on
    with open(work_dir / 'seed_study.json') as f:
        result = json.load(f)
    assert [c['name'] for c in result['configs']] == ['faster_rcnn_lip_r18_demo',
                                                      'faster_rcnn_dpp_r18_demo']
    assert result['seeds'] == [0, 1]
    assert {'AP', 'AP50', 'AP_s', 'AP_tiny', 'AP_small'} <= set(result['metrics'])
    # every number is the statistics of what the runs' evaluations wrote
    runs = {name: {seed: run_metrics(load_run_metrics(str(work_dir / name / f'seed_{seed}')))
                   for seed in (0, 1)}
            for name in ('faster_rcnn_lip_r18_demo', 'faster_rcnn_dpp_r18_demo')}
    t = t_quantile(0.975, 1)
    assert t == pytest.approx(12.706, abs=1e-3)
    for metric in ('AP', 'AP50', 'AP_tiny'):
        for name, seeds in runs.items():
            values = [seeds[s][metric] for s in (0, 1)]
            stats = result['summary'][name][metric]
            assert stats['values'] == pytest.approx(values)
            assert stats['mean'] == pytest.approx(sum(values) / 2)
            assert stats['std'] == pytest.approx(abs(values[0] - values[1]) / math.sqrt(2))
        paired = result['paired']['faster_rcnn_dpp_r18_demo'][metric]
        diffs = [runs['faster_rcnn_dpp_r18_demo'][s][metric]
                 - runs['faster_rcnn_lip_r18_demo'][s][metric] for s in (0, 1)]
        assert paired['diffs'] == pytest.approx(diffs)
        half = t * abs(diffs[0] - diffs[1]) / math.sqrt(2) / math.sqrt(2)
        assert paired['high'] - paired['low'] == pytest.approx(2 * half, abs=1e-9)
    picture = Image.open(work_dir / 'seed_study.png')
    assert picture.size == (1400, 480)


def test_seed_study_resumes_without_training_again(study, capsys):
    before = json.loads((study['work_dir'] / 'seed_study.json').read_text())
    assert run('seed_study.py', *study_args(study['work_dir'], study['root'] / 'data')) == 0
    printed = capsys.readouterr().out
    assert printed.count('done before') == 4 and 'finished in' not in printed
    after = json.loads((study['work_dir'] / 'seed_study.json').read_text())
    assert after['summary'] == before['summary'] and after['paired'] == before['paired']
    assert '| faster_rcnn_dpp_r18_demo - faster_rcnn_lip_r18_demo |' in printed


def test_seed_study_trains_an_interrupted_run_again(study, short_tmp_path, capsys):
    # a copy of the study where the DPP seed-1 run was interrupted (no result file)
    work_dir = short_tmp_path('interrupted') / 'study'
    shutil.copytree(study['work_dir'], work_dir)
    run_dir = work_dir / 'faster_rcnn_dpp_r18_demo' / 'seed_1'
    (run_dir / RESULT_FILE).unlink()
    stale = next(run_dir.glob('2*'))
    assert run('seed_study.py', *study_args(work_dir, study['root'] / 'data')) == 0
    printed = capsys.readouterr().out
    assert printed.count('done before') == 3
    assert 'run 4/4: faster_rcnn_dpp_r18_demo seed 1: removed the unfinished' in printed
    assert not stale.exists() and (run_dir / RESULT_FILE).is_file()
    assert len(list(run_dir.glob('*/vis_data/scalars.json'))) == 1


def test_seed_study_refuses_a_missing_config(tmp_path, monkeypatch, capfd):
    """Through the script's __main__ block: exit code 2 and the message, no traceback."""
    code = run_as_script('analysis/seed_study.py', ['--configs', LIP, tmp_path / 'nope.py',
                                                    '--work-dir', tmp_path / 'study'],
                         monkeypatch)
    assert_clean_failure(code, capfd.readouterr().err, 'nope.py')
    assert not (tmp_path / 'study').exists()


def test_plot_pooling_from_the_study_logs(study, tmp_path, capsys):
    lip_dir = study['work_dir'] / 'faster_rcnn_lip_r18_demo' / 'seed_0'
    dpp_dir = study['work_dir'] / 'faster_rcnn_dpp_r18_demo' / 'seed_0'
    out = tmp_path / 'pooling.png'
    assert run('plot_pooling.py', lip_dir, dpp_dir, '--names', 'LIP', 'DPP', '--out', out) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and 'scalars.json' in printed
    # LIP: one statistic (2 rows), DPP: lambda and alpha (4 rows); 2 runs side by side
    assert Image.open(out).size == (2 * 550, 4 * 320)
    # what the figure shows: the hook measured the epoch's last iteration (2 of 2)
    from lip_mmdet.visualization import load_pooling_history
    lip = load_pooling_history(str(lip_dir))['series']['eff_window']
    assert len(lip) == 4 and all(list(v) == [2] for v in lip.values())
    assert all(1.0 <= v[2] <= 9.0 for v in lip.values())
    dpp = load_pooling_history(str(dpp_dir))['series']['lambda_mean']
    assert len(dpp) == 4 and all(abs(v[2] - 1.0) < 0.05 for v in dpp.values())


def test_plot_pooling_refuses_a_run_without_statistics(tmp_path, capsys):
    code = run('plot_pooling.py', tmp_path, '--out', tmp_path / 'p.png')
    assert_user_error(code, capsys, 'no pooling statistics')
    assert not (tmp_path / 'p.png').exists()


def val_images(data_root, count=2):
    coco = json.loads((data_root / 'annotations' / 'instances_val.json').read_text())
    return [data_root / 'val' / e['file_name'] for e in coco['images'][:count]]


def test_show_pooling_on_a_trained_and_a_random_model(study, tmp_path, capsys):
    run_dir = study['work_dir'] / 'faster_rcnn_lip_r18_demo' / 'seed_0'
    checkpoint = (run_dir / 'last_checkpoint').read_text().strip()
    images = val_images(study['data_root'])
    assert run('show_pooling.py', LIP, checkpoint, '--images', *images, '--out-dir',
               tmp_path / 'trained') == 0
    printed = capsys.readouterr().out
    written = sorted((tmp_path / 'trained').iterdir())
    assert [p.name for p in written] == sorted(f'{i.stem}_pooling.png' for i in images)
    for path in written:
        assert str(path) in printed
        picture = np.asarray(Image.open(path).convert('RGB')).astype(np.int16)
        assert picture.shape == (340, 5 * 320, 3)
        # a trained layer's overlay is not uniform: its panel varies beyond the gray image
        panels = [picture[60:320, 320 * i + 20:320 * i + 260] for i in range(1, 5)]
        assert any(np.abs(panels[a] - panels[b]).mean() > 1.0
                   for a in range(4) for b in range(a))
    assert run('show_pooling.py', DPP, '--images', images[0], '--out-dir',
               tmp_path / 'random') == 0
    assert (tmp_path / 'random' / f'{images[0].stem}_pooling.png').is_file()


def test_show_pooling_user_errors(study, tmp_path, capsys):
    image = val_images(study['data_root'], 1)[0]
    code = run('show_pooling.py', LIP, '--images', tmp_path / 'none.png', '--out-dir',
               tmp_path / 'out')
    assert_user_error(code, capsys, 'none.png')
    code = run('show_pooling.py', DEMO / 'faster_rcnn_r18_demo.py', '--images', image,
               '--out-dir', tmp_path / 'out')
    assert_user_error(code, capsys, 'no LIP or DPP pooling layer')
    code = run('show_pooling.py', LIP, tmp_path / 'absent.pth', '--images', image,
               '--out-dir', tmp_path / 'out')
    assert_user_error(code, capsys, 'checkpoint not found')
    assert not (tmp_path / 'out').exists()
