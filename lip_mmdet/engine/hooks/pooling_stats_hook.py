"""What the learned poolings are doing, logged during training.

``custom_hooks = [dict(type='PoolingStatsHook', interval=50)]`` logs, every ``interval``
training iterations and at the last iteration of every epoch, for each pooling layer of the
model (``lip_mmdet.models.layers.pooling_layers``):

* LIP: ``pooling/<layer>/eff_window``, the effective window size ``exp(entropy)`` of the
  normalised window weights, averaged over positions, channels and images of that
  iteration's batch (1 = max-like, 9 = 3x3 average pooling, which is where LIP starts);
* DPP: ``pooling/<layer>/lambda_mean``, ``lambda_std``, ``alpha_mean``, ``alpha_std`` over
  the layer's channels (lambda -> 0: average pooling; large lambda: max / extremum pooling).

plus ``pooling/iter``, the iteration measured. The values go to the Runner's message hub
under ``train/``, so the logger prints them and writes them to every visualisation backend
(``vis_data/scalars.json``...) at its own interval; each record holds the most recent
measurement, which ``pooling/iter`` identifies.
"""
import time
from typing import Dict, List, Optional

import torch
from mmdet.registry import HOOKS
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from lip_mmdet.models.layers import effective_window_size, pooling_layers

__all__ = ['PoolingStatsHook']


@HOOKS.register_module()
class PoolingStatsHook(Hook):
    """Logs per-layer statistics of the LIP / DPP poolings (see the module docstring).

    LIP's statistic needs the layer's input: on a measured iteration, forward hooks on the
    LIP layers recompute their window weights from the inputs of the training forward (no
    gradient). DPP's statistics are read from the parameters before that iteration's
    update, so both describe the model that ran the iteration's forward. The hook's own time is
    summed and reported at the end of training, as a share of the training loop's time.

    Args:
        interval: measure every ``interval`` training iterations (and at each epoch's end).
        prefix: first part of the logged names.
    """
    priority = 'NORMAL'  # before LoggerHook (BELOW_NORMAL), so a measurement is logged at once

    def __init__(self, interval: int = 50, prefix: str = 'pooling'):
        if not isinstance(interval, int) or isinstance(interval, bool) or interval <= 0:
            raise ValueError(f'PoolingStatsHook: interval must be a positive int, got '
                             f'{interval!r}')
        self.interval = interval
        self.prefix = prefix
        self._handles: List = []
        self._window_sizes: Dict[str, List[float]] = {}
        self._param_stats: Dict[str, float] = {}
        self.seconds = 0.0  # spent by this hook
        self.iter_seconds = 0.0  # spent by the training iterations, this hook included
        self.measurements = 0
        self._iter_start: Optional[float] = None

    # --- measurement -----------------------------------------------------------------
    @staticmethod
    def _layers(runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        return pooling_layers(model)

    def _measure_now(self, runner, batch_idx: int) -> bool:
        return (self.every_n_train_iters(runner, self.interval)
                or self.end_of_epoch(runner.train_dataloader, batch_idx))

    def _lip_forward_hook(self, name: str):

        def record(module, args, output):
            start = time.perf_counter()
            with torch.no_grad():
                x = args[0].detach()
                weights = module.window_weights(x, *(a.detach() for a in args[1:]))
                self._window_sizes.setdefault(name, []).append(
                    effective_window_size(weights, x.shape[-2:], module.window_for(x)))
            self.seconds += time.perf_counter() - start

        return record

    def _remove_handles(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self._iter_start = time.perf_counter()
        if not self._measure_now(runner, batch_idx):
            return
        start = time.perf_counter()
        self._window_sizes, self._param_stats = {}, {}
        for name, layer in self._layers(runner):
            if layer.pool_kind == 'lip':
                self._handles.append(layer.register_forward_hook(self._lip_forward_hook(name)))
            elif layer.pool_kind == 'dpp':
                self._param_stats.update(self._dpp_stats(name, layer))
        self.seconds += time.perf_counter() - start

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not self._measure_now(runner, batch_idx):
            self._count_iteration()
            return
        start = time.perf_counter()
        self._remove_handles()
        scalars = {f'{self.prefix}/{name}/eff_window': sum(sizes) / len(sizes)
                   for name, sizes in self._window_sizes.items()}
        scalars.update(self._param_stats)
        if scalars:
            scalars[f'{self.prefix}/iter'] = runner.iter + 1
            for key, value in scalars.items():
                runner.message_hub.update_scalar(f'train/{key}', value)
            self.measurements += 1
        self.seconds += time.perf_counter() - start
        self._count_iteration()

    def _count_iteration(self) -> None:
        if self._iter_start is not None:
            self.iter_seconds += time.perf_counter() - self._iter_start
            self._iter_start = None

    def _dpp_stats(self, name: str, layer) -> Dict[str, float]:
        with torch.no_grad():
            stats = {}
            for param, values in (('lambda', layer.lam), ('alpha', layer.alpha)):
                values = values.detach().float()
                stats[f'{self.prefix}/{name}/{param}_mean'] = float(values.mean())
                stats[f'{self.prefix}/{name}/{param}_std'] = (
                    float(values.std()) if values.numel() > 1 else 0.0)
            return stats

    def after_train(self, runner) -> None:
        self._remove_handles()
        if self.measurements and self.iter_seconds > 0:
            runner.logger.info(
                f'PoolingStatsHook: {self.measurements} measurements took {self.seconds:.2f} '
                f's, {self.overhead_percent:.2f}% of the training iterations\' '
                f'{self.iter_seconds:.0f} s')

    @property
    def overhead_percent(self) -> float:
        """This hook's time as a percentage of the training iterations' time so far."""
        return 100 * self.seconds / self.iter_seconds if self.iter_seconds else 0.0
