"""Timing and memory probes shared by the benchmark scripts in ``tools/analysis/``."""
import time
from typing import Callable

import torch


def synchronize(device: torch.device) -> None:
    """Waits for queued CUDA work, so a wall-clock reading covers it; no-op elsewhere."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_ms(call: Callable[[], object], device: torch.device) -> float:
    """Milliseconds of one ``call()`` on ``device``: CUDA events on a GPU (the device time
    between the call's first and last kernel launch points), wall clock elsewhere."""
    if device.type == 'cuda':
        start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
        synchronize(device)
        start.record()
        call()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1e3


def cuda_peak_bytes(call: Callable[[], object], device: torch.device) -> int:
    """CUDA memory one ``call()`` allocates at its peak, above what was allocated before."""
    synchronize(device)
    start = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    call()
    synchronize(device)
    return torch.cuda.max_memory_allocated(device) - start
