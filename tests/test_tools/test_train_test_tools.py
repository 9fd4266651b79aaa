"""tools/train.py, tools/test.py and tools/dist_train.sh end to end on the tiny generated
dataset: multi-process training, resume after SIGKILL (the killed run is MMDetection's own
tools/train.py in a process of its own, with nothing but our config; the reference and the
resumed run go through our train.py's main function), COCO evaluation of a saved checkpoint
(test.py's main function), and the tools' clear failures through their main functions."""
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import mmdet
import pytest
import torch
from mmengine.config import Config

from lip_mmdet.apis import launch

from tiny_run import (
    REPO,
    SMALL_RETINANET,
    TOOLS,
    free_port,
    tiny_options,
    to_cli,
    tool_env,
    write_config,
)

RETINA_LIP_R50 = REPO / 'configs' / 'retinanet_lip_r50.py'
FASTER_LIP_R50 = REPO / 'configs' / 'faster_rcnn_lip_r50.py'
MAX_ITERS = 8
STOCK_TRAIN = Path(mmdet.__file__).parent / '.mim' / 'tools' / 'train.py'


def assert_ok(proc):
    assert proc.returncode == 0, f'exit {proc.returncode}\n{proc.stdout[-4000:]}\n' \
                                 f'{proc.stderr[-4000:]}'


def small_options(tiny, epochs=1, **extra):
    """Tiny dataset + small RetinaNet (LIP-ResNet-18) options for retinanet_lip_r50.py."""
    options = tiny_options(Config.fromfile(str(RETINA_LIP_R50)), tiny, num_train=4,
                           epochs=epochs)
    options.update(SMALL_RETINANET, **extra)
    return options


def load_state(path):
    return torch.load(path, map_location='cpu', weights_only=True)['state_dict']


def newest_log(work_dir):
    """The text of the log that the latest run in ``work_dir`` wrote (``<time>/<time>.log``)."""
    return sorted(Path(work_dir).glob('*/*.log'))[-1].read_text()


def val_metrics(work_dir):
    """The ``coco/*`` scalars the runs under ``work_dir`` logged (last value of each)."""
    metrics = {}
    for scalars in sorted(Path(work_dir).glob('*/vis_data/scalars.json')):
        for line in scalars.read_text().splitlines():
            record = json.loads(line)
            metrics.update({k: v for k, v in record.items() if k.startswith('coco/')})
    return metrics


@pytest.fixture(scope='module')
def resume_setup(tiny_coco, tmp_path_factory):
    """An iteration-based, seeded, deterministic schedule, and one uninterrupted run of it by
    our train.py (the run after a SIGKILL and a resume must end with the same weights and
    metrics)."""
    root = tmp_path_factory.mktemp('resume')
    config = write_config(
        root / 'iter_schedule.py', RETINA_LIP_R50,
        train_cfg=dict(_delete_=True, type='IterBasedTrainLoop', max_iters=MAX_ITERS,
                       val_interval=4),
        # warm-up crosses the checkpoint, so the scheduler state must be restored too
        param_scheduler=[dict(type='LinearLR', start_factor=0.2, by_epoch=False, begin=0,
                              end=6)],
        default_hooks=dict(checkpoint=dict(by_epoch=False, interval=4)),
        log_processor=dict(by_epoch=False),
        randomness=dict(seed=0, deterministic=True),
        # mmengine's iteration loop sleeps 2 s each time a finite sampler runs out
        train_dataloader=dict(sampler=dict(type='InfiniteSampler')))
    options = to_cli(small_options(tiny_coco, epochs=None))
    work_dir = root / 'uninterrupted'
    assert launch.train_main([str(config), '--work-dir', str(work_dir), '--cfg-options',
                              *options]) == 0
    return dict(root=root, config=config, options=options, work_dir=work_dir)


def test_resume_after_sigkill_matches_uninterrupted_run(resume_setup):
    root, config, options = resume_setup['root'], resume_setup['config'], resume_setup['options']
    work_dir = root / 'killed'
    marker = root / 'held_after_iter_6'
    held = write_config(root / 'held.py', config,
                        custom_imports=dict(imports=['lip_mmdet', 'probe_hooks'],
                                            allow_failed_imports=False),
                        custom_hooks=[dict(type='HoldAfterIter', at=6, marker=str(marker))])
    log = root / 'held.log'
    assert STOCK_TRAIN.is_file(), STOCK_TRAIN
    with open(log, 'w') as log_file:
        proc = subprocess.Popen([sys.executable, str(STOCK_TRAIN), str(held),
                                 '--work-dir', str(work_dir), '--cfg-options', *options],
                                cwd=root, env=tool_env(), stdout=log_file,
                                stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 240
            while not marker.exists():
                assert proc.poll() is None, f'run ended early:\n{log.read_text()[-4000:]}'
                assert time.time() < deadline, 'the run never reached iteration 6'
                time.sleep(0.2)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert (work_dir / 'last_checkpoint').read_text().strip().endswith('iter_4.pth')
    assert not (work_dir / f'iter_{MAX_ITERS}.pth').exists()
    assert 'coco/bbox_mAP_s' in val_metrics(work_dir)  # the stock script evaluated at iter 4

    # the tool's main in this process (its exit-code path has process tests of its own)
    assert launch.train_main([str(config), '--work-dir', str(work_dir), '--resume',
                              '--cfg-options', *options]) == 0
    logged = newest_log(work_dir)
    assert 'resumed epoch: 0, iter: 4' in logged
    iterations = [int(i) for i in re.findall(rf'Iter\(train\) \[(\d+)/{MAX_ITERS}\]', logged)]
    assert iterations == [5, 6, 7, 8]

    final = f'iter_{MAX_ITERS}.pth'
    reference = load_state(resume_setup['work_dir'] / final)
    result = load_state(work_dir / final)
    halfway = load_state(work_dir / 'iter_4.pth')
    assert reference.keys() == result.keys()
    mismatched = [k for k in reference if not torch.equal(reference[k], result[k])]
    assert not mismatched, f'{len(mismatched)} tensors differ, e.g. {mismatched[:5]}'
    trained = [k for k in reference if not torch.equal(reference[k], halfway[k])]
    assert len(trained) > len(reference) // 2, 'iterations 5-8 barely changed the weights'

    expected = val_metrics(resume_setup['work_dir'])
    assert 'coco/bbox_mAP_s' in expected
    assert val_metrics(work_dir) == expected


def test_test_tool_reports_coco_metrics(resume_setup, tmp_path):
    checkpoint = resume_setup['work_dir'] / f'iter_{MAX_ITERS}.pth'
    out = tmp_path / 'predictions.pkl'
    assert launch.test_main([str(resume_setup['config']), str(checkpoint), '--work-dir',
                             str(tmp_path), '--out', str(out), '--cfg-options',
                             *resume_setup['options']]) == 0
    logged = newest_log(tmp_path)
    for key in ('bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_75', 'bbox_mAP_s', 'bbox_mAP_m',
                'bbox_mAP_l'):
        assert re.search(rf'coco/{key}: -?\d+\.\d+', logged), key
    metrics = json.loads(next(tmp_path.glob('*/*.json')).read_text())
    assert metrics['coco/bbox_mAP_s'] >= 0
    with open(out, 'rb') as f:
        predictions = pickle.load(f)
    assert len(predictions) == 4  # every val image
    assert {'img_id', 'pred_instances'} <= predictions[0].keys()


def test_distributed_training_keeps_ranks_in_sync(tiny_coco, tmp_path):
    config = write_config(tmp_path / 'dist.py', RETINA_LIP_R50,
                          custom_imports=dict(imports=['lip_mmdet', 'probe_hooks'],
                                              allow_failed_imports=False),
                          custom_hooks=[dict(type='DumpParamsHook')],
                          env_cfg=dict(dist_cfg=dict(backend='gloo')))
    work_dir = tmp_path / 'work'
    # 4 images, 1 per rank and step: 2 steps, each rank sees different images
    options = to_cli(small_options(tiny_coco, **{'train_dataloader.batch_size': 1}))
    env = dict(tool_env(), PORT=str(free_port()), PYTHON=sys.executable)
    proc = subprocess.run(['bash', str(TOOLS / 'dist_train.sh'), str(config), '2',
                           '--work-dir', str(work_dir), '--cfg-options', *options],
                          cwd=tmp_path, env=env, text=True, capture_output=True, timeout=300)
    assert_ok(proc)

    dumps = [torch.load(work_dir / f'params_rank{r}.pth', weights_only=True) for r in (0, 1)]
    assert [(d['rank'], d['world_size']) for d in dumps] == [(0, 2), (1, 2)]
    start = torch.load(work_dir / 'params_rank0_init.pth', weights_only=True)['params']
    rank0, rank1 = dumps[0]['params'], dumps[1]['params']
    assert rank0.keys() == rank1.keys()
    differing = [k for k in rank0 if not torch.equal(rank0[k], rank1[k])]
    assert not differing, f'ranks disagree on {differing[:5]}'
    moved = [k for k in rank0 if not torch.equal(rank0[k], start[k])]
    assert any(k.startswith('bbox_head.') for k in moved), 'training did not update the head'
    assert any(k.startswith('backbone.layer4') for k in moved)

    log = next(work_dir.glob('*/*.log')).read_text()
    assert re.search(r'Epoch\(train\)\s+\[1\]\[2/2\]', log), 'expected 2 steps per rank'
    checkpoints = sorted(p.name for p in work_dir.glob('*.pth')
                         if not p.name.startswith('params_'))
    assert checkpoints == ['epoch_1.pth']
    state = load_state(work_dir / 'epoch_1.pth')
    assert all(torch.equal(state[k], rank0[k]) for k in rank0)


def test_missing_dataset_fails_with_a_clear_message(tmp_path, monkeypatch, capsys):
    """train.py's main (the tool is ``sys.exit(train_main())``): code 2, one message."""
    monkeypatch.chdir(tmp_path)
    assert launch.train_main([str(FASTER_LIP_R50)]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and 'Traceback' not in err
    assert 'Dataset not found' in err
    assert str(tmp_path / 'data/coco/annotations/instances_train2017.json') in err
    assert 'make demo' in err


def test_missing_checkpoint_fails_with_a_clear_message(tiny_coco, tmp_path, monkeypatch,
                                                        capsys):
    monkeypatch.chdir(tmp_path)
    options = to_cli(tiny_options(Config.fromfile(str(FASTER_LIP_R50)), tiny_coco))
    assert launch.test_main([str(FASTER_LIP_R50), 'work_dirs/nothing/epoch_12.pth',
                             '--cfg-options', *options]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and 'Traceback' not in err
    assert 'Checkpoint to test not found: work_dirs/nothing/epoch_12.pth' in err
    assert str(tmp_path / 'work_dirs/nothing/epoch_12.pth') in err
