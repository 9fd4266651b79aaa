"""Shared helpers of the tools and apis tests: point a COCO config at the tiny generated
dataset, and run the command-line tools in subprocesses."""
import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / 'tools'
# probe_hooks.py, the hooks the tools tests load into their runs
PROBE_HOOKS_DIR = Path(__file__).resolve().parent / 'test_tools'
PYTHON = sys.executable

#: every config of the project (the demo configs have their own tests)
CONFIGS = sorted((REPO / 'configs').glob('*.py'))


def _resize_index(pipeline):
    indices = [i for i, step in enumerate(pipeline) if step['type'] == 'Resize']
    assert len(indices) == 1, f'expected one Resize step, got {pipeline}'
    return indices[0]


def tiny_options(cfg, tiny, scale=128, num_train=2, batch_size=2, epochs=1):
    """``--cfg-options`` (dotted key -> value) that train ``cfg`` on the tiny dataset.

    ``epochs`` (None: keep the config's train_cfg) of ``num_train`` images at ``scale`` x
    ``scale``, all 4 val images, random initialisation, no data-loading workers, no score
    threshold at test time.
    """
    opts = {}
    splits = (('train', tiny['train_ann'], tiny['train_img_prefix']),
              ('val', tiny['val_ann'], tiny['val_img_prefix']),
              ('test', tiny['val_ann'], tiny['val_img_prefix']))
    for split, ann_file, img_prefix in splits:
        loader = f'{split}_dataloader'
        pipeline = cfg[loader]['dataset']['pipeline']
        opts.update({
            f'{loader}.num_workers': 0,
            f'{loader}.persistent_workers': False,
            # relative to data_root, as in mmdet's configs (and short: see short_tmp_path)
            f'{loader}.dataset.data_root': tiny['data_root'],
            f'{loader}.dataset.ann_file': os.path.relpath(ann_file, tiny['data_root']),
            f'{loader}.dataset.data_prefix.img':
            os.path.relpath(img_prefix, tiny['data_root']) + '/',
            f'{loader}.dataset.metainfo.classes': tuple(tiny['classes']),
            f'{loader}.dataset.pipeline.{_resize_index(pipeline)}.scale': (scale, scale),
        })
    opts['train_dataloader.batch_size'] = batch_size
    opts['train_dataloader.dataset.indices'] = num_train
    opts['val_evaluator.ann_file'] = tiny['val_ann']
    opts['test_evaluator.ann_file'] = tiny['val_ann']
    head = 'model.roi_head.bbox_head' if 'roi_head' in cfg.model else 'model.bbox_head'
    opts[f'{head}.num_classes'] = len(tiny['classes'])
    # an almost untrained model scores below the usual 0.05 threshold: keep every box so
    # COCO evaluation has detections; and evaluate fewer proposals to stay fast
    if 'rpn' in cfg.model.test_cfg:
        opts['model.test_cfg.rpn.max_per_img'] = 100
        opts['model.test_cfg.rcnn.score_thr'] = 0.0
    else:
        opts['model.test_cfg.score_thr'] = 0.0
    opts['model.backbone.init_cfg'] = None
    if epochs is not None:
        opts['train_cfg.max_epochs'] = epochs
    opts['default_hooks.logger.interval'] = 1
    return opts


#: a small RetinaNet for the multi-process tests: LIP-ResNet-18, narrow FPN and head
SMALL_RETINANET = {
    'model.backbone.depth': 18,
    'model.neck.in_channels': [64, 128, 256, 512],
    'model.neck.out_channels': 32,
    'model.bbox_head.in_channels': 32,
    'model.bbox_head.feat_channels': 32,
    'model.bbox_head.stacked_convs': 1,
}


def _cli_value(value):
    if isinstance(value, (list, tuple)):
        items = ','.join(_cli_value(v) for v in value)
        return f'[{items}]' if isinstance(value, list) else f'({items})'
    return str(value)


def to_cli(options):
    """The ``KEY=VALUE`` words of ``--cfg-options`` for an options dict."""
    return [f'{key}={_cli_value(value)}' for key, value in options.items()]


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def tool_env():
    """Environment of a tool subprocess: probe_hooks and this checkout's lip_mmdet importable
    (also under a script that does not put the checkout on sys.path, such as mmdet's own
    train.py), and one intra-op thread, which on a shared 2-core machine is several times
    faster than two and keeps runs bitwise repeatable."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(PROBE_HOOKS_DIR), str(REPO)]),
               OMP_NUM_THREADS='1')
    env.pop('LOCAL_RANK', None)
    return env


def run_tool(args, cwd, timeout=300, **kwargs):
    """Run ``python <args>`` and return the CompletedProcess (text output captured)."""
    return subprocess.run([PYTHON, *map(str, args)], cwd=cwd, env=tool_env(), text=True,
                          capture_output=True, timeout=timeout, **kwargs)


def write_config(path, base, **fields):
    """Write a config file that inherits ``base`` and sets ``fields`` (python literals)."""
    lines = [f'_base_ = {str(base)!r}'] + [f'{k} = {v!r}' for k, v in fields.items()]
    Path(path).write_text('\n'.join(lines) + '\n')
    return path
