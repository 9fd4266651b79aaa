"""The demo's run as one function: its data, a schedule fitted to the run's size, training
with tools/train.py's checks and Runner, and the metrics the evaluation wrote."""
import argparse
import contextlib
import copy
import math
import os
import os.path as osp
import sys
import time
from typing import IO, Dict, Mapping, Optional

from mmengine.config import Config, DictAction
from mmengine.logging import MMLogger

from ..apis.launch import build_runner, check_train_config, load_train_config, train_parser
from ..evaluation.compare import load_run_metrics
from .data import data_setting_name, make_demo_dataset
from .progress import ProgressLineHook

__all__ = [
    'add_demo_run_args', 'demo_config', 'fit_schedule', 'prepare_demo_data', 'train_demo',
    'use_demo_data'
]

# Captures what the Runner, pycocotools and the metric print when the run is quiet.
CONSOLE_LOG = 'demo_console.log'


def add_demo_run_args(parser: argparse.ArgumentParser) -> None:
    """Adds the options of :func:`train_demo` that size a run and show its log (--data,
    --num-train, --num-val, --epochs, --verbose, --cfg-options), for every tool that trains
    demo runs.

    Args:
        parser: the tool's parser; the options arrive as ``data``, ``num_train``,
            ``num_val``, ``epochs``, ``verbose`` and ``cfg_options``.
    """
    parser.add_argument('--data', default='data/demo',
                        help='folder holding one dataset folder per data setting')
    parser.add_argument('--num-train', type=int,
                        help="training images (default: the config's demo_data)")
    parser.add_argument('--num-val', type=int,
                        help="validation images (default: the config's demo_data)")
    parser.add_argument('--epochs', type=int,
                        help='training epochs; the learning-rate schedule, evaluation and '
                        "checkpoint follow (default: the config's)")
    parser.add_argument('--verbose', action='store_true',
                        help="print mmengine's full log instead of a progress line")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        metavar='KEY=VALUE',
                        help='config settings merged last, e.g. train_dataloader.batch_size=2')


def _train_images(cfg: Config) -> int:
    return int(cfg.get('demo_data', {}).get('num_train', 0))


def fit_schedule(cfg: Config, epochs: int, num_train: int) -> None:
    """Fit every schedule setting of ``cfg`` (in place) to ``epochs`` on ``num_train`` images.

    The config's own schedule (``train_cfg.max_epochs`` epochs on ``demo_data.num_train``
    images at ``train_dataloader.batch_size``) is the template:

    - epoch-based parameter schedulers (the cosine decay) are stretched: ``begin``, ``end``,
      ``milestones`` scale with the epochs and ``T_max`` follows ``end - begin``, so the
      learning rate reaches its floor at the last epoch whatever the run's length;
    - iteration-based ones (the warm-up) keep their length in iterations, but never take a
      larger share of the run than in the template, so a tiny run is not all warm-up;
    - evaluation and checkpoint intervals that equal the template's length become
      ``epochs`` (evaluate and save once, at the end); shorter ones are capped at it;
    - the logger interval is capped at one epoch's iterations, so every epoch logs.

    Args:
        cfg: a demo config as loaded (its schedule not yet changed).
        epochs: the run's number of epochs (>= 1).
        num_train: the run's number of training images (>= 1).
    """
    if epochs < 1 or num_train < 1:
        raise ValueError(f'epochs and num_train must be >= 1, got {epochs}, {num_train}')
    old_epochs = int(cfg.train_cfg.max_epochs)
    batch = int(cfg.train_dataloader.batch_size)
    old_iters = old_epochs * math.ceil(max(_train_images(cfg), 1) / batch)
    epoch_iters = math.ceil(num_train / batch)
    total_iters = epochs * epoch_iters
    ratio = epochs / old_epochs

    schedulers = []
    for scheduler in copy.deepcopy(cfg.get('param_scheduler') or []):
        begin, end = scheduler.get('begin', 0), scheduler.get('end')
        if scheduler.get('by_epoch', True):
            scheduler['begin'] = round(begin * ratio)
            if end is not None:
                scheduler['end'] = max(scheduler['begin'] + 1, round(end * ratio))
            if 'T_max' in scheduler:
                span = scheduler.get('end', epochs) - scheduler['begin']
                scheduler['T_max'] = span
            if 'milestones' in scheduler:
                scheduler['milestones'] = [round(m * ratio) for m in scheduler['milestones']]
        elif end is not None:
            share = (end - begin) / old_iters
            scheduler['end'] = begin + min(end - begin, max(1, round(share * total_iters)))
        schedulers.append(scheduler)
    cfg.param_scheduler = schedulers

    val_interval = cfg.train_cfg.get('val_interval', 1)
    cfg.train_cfg.max_epochs = epochs
    cfg.train_cfg.val_interval = epochs if val_interval >= old_epochs else min(
        val_interval, epochs)
    checkpoint = cfg.default_hooks.get('checkpoint')
    if checkpoint is not None and checkpoint.get('by_epoch', True):
        interval = checkpoint.get('interval', 1)
        checkpoint.interval = epochs if interval >= old_epochs else min(interval, epochs)
    logger = cfg.default_hooks.get('logger')
    if logger is not None:
        logger.interval = min(logger.get('interval', 50), epoch_iters)


def demo_config(config: str,
                work_dir: str,
                epochs: Optional[int] = None,
                num_train: Optional[int] = None,
                num_val: Optional[int] = None,
                seed: Optional[int] = None,
                cfg_options: Optional[Mapping] = None) -> Config:
    """The config a demo run trains with, before its data folder is set (nothing is
    generated or trained).

    Args:
        config: path of a demo config (one with a ``demo_data`` dict).
        work_dir: the run's work dir.
        epochs: training epochs (default: ``train_cfg.max_epochs`` after ``cfg_options``);
            the whole schedule follows (:func:`fit_schedule`).
        num_train: training images (default: ``demo_data['num_train']``).
        num_val: validation images (default: ``demo_data['num_val']``).
        seed: ``randomness.seed`` (default: the config's).
        cfg_options: settings merged last (``{'train_dataloader.batch_size': 2}``); the
            schedule is fitted to them too (e.g. to the batch size).
    """
    cfg = load_train_config(train_parser().parse_args([config, '--work-dir', work_dir]))
    template = copy.deepcopy(cfg)
    demo_data = dict(cfg.get('demo_data', {}))
    demo_data.update({k: v for k, v in (('num_train', num_train), ('num_val', num_val))
                      if v is not None})
    cfg.demo_data = demo_data
    if seed is not None:
        cfg.randomness = dict(cfg.get('randomness', {}), seed=seed)
    cfg.merge_from_dict(dict(cfg_options or {}))
    # the template's schedule, at the run's batch size, is fitted to the run's size
    template.train_dataloader.batch_size = cfg.train_dataloader.batch_size
    fit_schedule(template, epochs or int(cfg.train_cfg.max_epochs),
                 max(_train_images(cfg), 1))
    cfg.param_scheduler = template.param_scheduler
    cfg.train_cfg = template.train_cfg
    cfg.default_hooks = template.default_hooks
    # explicit settings win over the fitted schedule
    cfg.merge_from_dict(dict(cfg_options or {}))
    return cfg


def use_demo_data(cfg: Config, data_root: str) -> None:
    """Point every dataloader and evaluator of ``cfg`` at the dataset in ``data_root``."""
    root = data_root.rstrip('/') + '/'
    val_ann = root + 'annotations/instances_val.json'
    cfg.merge_from_dict({
        'train_dataloader.dataset.data_root': root,
        'val_dataloader.dataset.data_root': root,
        'test_dataloader.dataset.data_root': root,
        'val_evaluator.ann_file': val_ann,
        'test_evaluator.ann_file': val_ann,
    })


def prepare_demo_data(demo_data: Mapping,
                      data_parent: str = 'data/demo',
                      progress: bool = True) -> str:
    """Generate (or reuse) the dataset ``demo_data`` describes in its own folder
    ``<data_parent>/<data_setting_name(...)>`` and return that folder."""
    root = osp.join(data_parent, data_setting_name(**demo_data))
    make_demo_dataset(root, reuse_existing=True, progress=progress, **demo_data)
    return root


def train_demo(config: str,
               work_dir: str,
               data_parent: str = 'data/demo',
               epochs: Optional[int] = None,
               num_train: Optional[int] = None,
               num_val: Optional[int] = None,
               seed: Optional[int] = None,
               cfg_options: Optional[Mapping] = None,
               verbose: bool = False,
               console: Optional[IO[str]] = None) -> Dict:
    """Generate the data, train and evaluate one demo run; return its metrics.

    Quiet by default: mmengine's log goes to its file in ``work_dir`` (everything else
    printed to stdout to ``<work_dir>/demo_console.log``) and ``console`` shows one
    progress line (:class:`ProgressLineHook`). ``verbose`` prints the full log instead.

    Args:
        config: path of a demo config (``configs/demo/*.py``).
        work_dir: the run's work dir.
        data_parent: folder holding one dataset folder per data setting.
        epochs: training epochs; the schedule follows (:func:`fit_schedule`).
        num_train: training images (default: the config's ``demo_data``).
        num_val: validation images (default: the config's ``demo_data``).
        seed: ``randomness.seed`` (default: the config's).
        cfg_options: config settings merged last.
        verbose: print mmengine's log on screen instead of the progress line.
        console: stream for the progress line and notes (default: ``sys.stdout``).

    Returns:
        :func:`~lip_mmdet.evaluation.load_run_metrics`'s dict (``coco``, ``bins``,
        ``num_gt``, ...) plus ``data_root``, ``work_dir``, ``log_file`` (mmengine's log) and
        ``seconds`` (data and training).

    Raises:
        PreflightError: the config cannot run (missing data, checkpoint, ...).
        ValueError, FileExistsError: bad data settings (see ``make_demo_dataset``).
    """
    console = console or sys.stdout
    start = time.perf_counter()
    cfg = demo_config(config, work_dir, epochs=epochs, num_train=num_train,
                      num_val=num_val, seed=seed, cfg_options=cfg_options)
    data_root = prepare_demo_data(cfg.demo_data, data_parent)
    use_demo_data(cfg, data_root)
    check_train_config(cfg)
    if verbose:
        runner = build_runner(cfg)
        runner.train()
    else:
        os.makedirs(work_dir, exist_ok=True)
        with open(osp.join(work_dir, CONSOLE_LOG), 'w') as captured:
            try:
                with contextlib.redirect_stdout(captured):
                    runner = build_runner(cfg)
                    runner.register_hook(ProgressLineHook(stream=console))
                    runner.train()
            finally:
                # the Runner's logger outlives the run; its console handler holds the file
                logger = MMLogger.get_current_instance()
                for handler in list(logger.handlers):
                    if getattr(handler, 'stream', None) is captured:
                        logger.removeHandler(handler)
    run = load_run_metrics(work_dir)
    run.update(data_root=data_root, work_dir=work_dir, log_file=runner.logger.log_file,
               seconds=time.perf_counter() - start)
    return run
