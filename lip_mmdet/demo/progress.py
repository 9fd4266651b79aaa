"""A one-line progress display for training and evaluation (iteration, loss, speed, ETA)."""
import sys
import time
from collections import deque
from typing import IO, Optional

from mmdet.registry import HOOKS
from mmengine.hooks import Hook

__all__ = ['ProgressLineHook']


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f'{hours}:{rest // 60:02d}:{rest % 60:02d}' if hours else \
        f'{rest // 60}:{rest % 60:02d}'


@HOOKS.register_module()
class ProgressLineHook(Hook):
    """Shows training and evaluation progress as one status line.

    Training: ``train epoch 2/4 iter 150/400 loss 0.812 0.71 s/it ETA 2:58``; evaluation:
    ``val 12/25 batches 0.30 s/batch ETA 0:04``. On a terminal the line is rewritten in
    place; elsewhere (a file, a pipe, a test's capture) a new line is written each time
    another ``1 / lines_off_tty`` of the loop is done, so logs stay short.

    Args:
        stream: where to write (default: ``sys.stdout`` at the time of writing).
        loss_window: iterations the shown loss is averaged over.
        min_interval_s: least seconds between two redraws on a terminal.
        lines_off_tty: lines per loop when the stream is not a terminal.
    """

    priority = 'VERY_LOW'

    def __init__(self,
                 stream: Optional[IO[str]] = None,
                 loss_window: int = 20,
                 min_interval_s: float = 0.2,
                 lines_off_tty: int = 10) -> None:
        self.stream = stream
        self.min_interval_s = min_interval_s
        self.lines_off_tty = max(1, lines_off_tty)
        self._losses = deque(maxlen=max(1, loss_window))
        self._start = 0.0
        self._paused_train = (0.0, 0, 0.0)
        self._last_draw = -float('inf')
        self._last_step = 0
        self._line_open = False

    @property
    def _out(self) -> IO[str]:
        return self.stream if self.stream is not None else sys.stdout

    def _is_tty(self) -> bool:
        isatty = getattr(self._out, 'isatty', None)
        return bool(isatty and isatty())

    def _show(self, text: str, done: int, total: int) -> None:
        """Write ``text`` if it is time to (always for the last step of a loop)."""
        last = done >= total
        if self._is_tty():
            now = time.perf_counter()
            if not last and now - self._last_draw < self.min_interval_s:
                return
            self._last_draw = now
            self._out.write('\r' + text + '\x1b[K')
            self._line_open = True
            if last:
                self._end_line()
        else:
            step = done * self.lines_off_tty // max(total, 1)
            if step == self._last_step and not last:
                return
            self._last_step = step
            self._out.write(text + '\n')
        self._out.flush()

    def _end_line(self) -> None:
        if self._line_open:
            self._out.write('\n')
            self._out.flush()
            self._line_open = False

    def _restart(self) -> None:
        self._start = time.perf_counter()
        self._last_draw = -float('inf')
        self._last_step = 0

    def _speed_and_eta(self, done: int, total: int):
        per_step = (time.perf_counter() - self._start) / max(done, 1)
        return per_step, per_step * (total - done)

    def before_train(self, runner) -> None:
        self._restart()

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        loss = (outputs or {}).get('loss')
        if loss is not None:
            self._losses.append(float(loss.detach() if hasattr(loss, 'detach') else loss))
        # the loop counts this iteration only after the hooks ran
        done, total = runner.iter + 1, runner.max_iters
        per_step, eta = self._speed_and_eta(done, total)
        mean_loss = (f'loss {sum(self._losses) / len(self._losses):.3f}  '
                     if self._losses else '')
        self._show(f'train  epoch {runner.epoch + 1}/{runner.max_epochs}  iter {done}/{total}'
                   f'  {mean_loss}{per_step:.2f} s/it  ETA {_clock(eta)}', done, total)

    def before_val_epoch(self, runner) -> None:
        self._end_line()
        self._paused_train = (self._start, self._last_step, time.perf_counter())
        self._restart()

    def after_val_iter(self, runner, batch_idx: int, data_batch=None,
                       outputs=None) -> None:
        done, total = batch_idx + 1, len(runner.val_dataloader)
        per_step, eta = self._speed_and_eta(done, total)
        self._show(f'val    batch {done}/{total}  {per_step:.2f} s/batch  ETA {_clock(eta)}',
                   done, total)

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._end_line()
        # training goes on after a mid-run evaluation: its clock (less the evaluation's
        # time, which would inflate the per-iteration speed) and line count resume
        start, self._last_step, paused_at = self._paused_train
        self._start = start + time.perf_counter() - paused_at

    def after_train(self, runner) -> None:
        self._end_line()
