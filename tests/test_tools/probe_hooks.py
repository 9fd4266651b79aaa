"""Hooks the tools tests load into real training runs (via custom_imports).

``DumpParamsHook`` writes each rank's parameters after training so a test can compare ranks;
``HoldAfterIter`` parks a run after a given iteration so a test can kill it at a known point.
"""
import time
from pathlib import Path

import torch
from mmdet.registry import HOOKS
from mmengine.dist import get_dist_info
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper


@HOOKS.register_module()
class DumpParamsHook(Hook):
    """After training, save ``{name: tensor}`` of this rank's parameters and the world size to
    ``<work_dir>/params_rank<rank>.pth``; before training, the same as ``..._init.pth``."""

    def _dump(self, runner, suffix):
        rank, world_size = get_dist_info()
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        params = {k: v.detach().clone() for k, v in model.named_parameters()}
        path = Path(runner.work_dir) / f'params_rank{rank}{suffix}.pth'
        torch.save(dict(params=params, world_size=world_size, rank=rank), path)

    def before_train(self, runner):
        self._dump(runner, '_init')

    def after_train(self, runner):
        self._dump(runner, '')


@HOOKS.register_module()
class HoldAfterIter(Hook):
    """After iteration ``at`` (1-based) touch ``marker`` and sleep, waiting to be killed."""

    priority = 'LOWEST'  # after CheckpointHook has saved anything due at this iteration

    def __init__(self, at, marker, seconds=300):
        self.at = at
        self.marker = marker
        self.seconds = seconds

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 == self.at:
            Path(self.marker).touch()
            time.sleep(self.seconds)
