"""Timing and memory probes shared by the benchmark scripts in ``tools/analysis/``."""
import time
from typing import Callable

import torch


def synchronize(device: torch.device) -> None:
    """Waits for queued CUDA work, so a wall-clock reading covers it; no-op elsewhere."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_ms(call: Callable[[], object], device: torch.device) -> float:
    """Wall-clock milliseconds of one ``call()`` on ``device``."""
    synchronize(device)
    start = time.perf_counter()
    call()
    synchronize(device)
    return (time.perf_counter() - start) * 1e3


def cuda_peak_bytes(call: Callable[[], object], device: torch.device) -> int:
    """CUDA memory one ``call()`` allocates at its peak, above what was allocated before."""
    synchronize(device)
    start = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    call()
    synchronize(device)
    return torch.cuda.max_memory_allocated(device) - start
