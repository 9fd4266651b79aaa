"""Argument checks, output-size rules and the compute dtype shared by the pooling ops.

Every op here sizes its output exactly as ``F.avg_pool2d`` with the same arguments in floor
mode: ``(H + 2 * padding - kernel_size) // stride + 1`` per spatial axis.
"""
from typing import Tuple, Union

import torch

IntPair = Union[int, Tuple[int, int]]
Pads = Tuple[int, int, int, int]  # (top, bottom, left, right)

__all__ = ['IntPair', 'to_pair', 'check_window', 'check_feature_map', 'check_same_layout',
           'Pads', 'as_pads', 'check_output_size', 'pooled_size', 'window_views',
           'compute_dtype']


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype the ops compute in: float32 for float16/bfloat16 inputs, else the input's."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def to_pair(value: IntPair, name: str) -> Tuple[int, int]:
    """Returns ``value`` as an (h, w) pair of Python ints, or raises TypeError naming it."""
    pair = (value, value) if not isinstance(value, (tuple, list)) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        raise TypeError(f'{name} must be an int or a pair of ints, got {value!r}')
    return pair


def check_window(kernel_size: IntPair, stride: IntPair, padding: IntPair):
    """Validates a pooling window; returns (kernel, stride, padding) as (h, w) pairs."""
    kernel = to_pair(kernel_size, 'kernel_size')
    step = to_pair(stride, 'stride')
    pad = to_pair(padding, 'padding')
    if min(kernel) <= 0:
        raise ValueError(f'kernel_size must be positive, got {kernel_size!r}')
    if min(step) <= 0:
        raise ValueError(f'stride must be positive, got {stride!r}')
    if min(pad) < 0:
        raise ValueError(f'padding must be non-negative, got {padding!r}')
    if pad[0] > kernel[0] // 2 or pad[1] > kernel[1] // 2:
        raise ValueError(f'padding {padding!r} must be at most half the kernel size '
                         f'{kernel_size!r} (every window needs a real pixel)')
    return kernel, step, pad


def check_feature_map(x, name: str = 'x') -> None:
    """Raises unless ``x`` is a floating-point tensor of rank 4 (N, C, H, W)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f'{name} must be a torch.Tensor, got {type(x).__name__}')
    if x.dim() != 4:
        raise ValueError(f'{name} must have shape (N, C, H, W), got shape {tuple(x.shape)}')
    if not x.is_floating_point():
        raise TypeError(f'{name} must be a floating-point tensor, got dtype {x.dtype}')


def check_same_layout(x: torch.Tensor, other: torch.Tensor, name: str) -> None:
    """Raises unless ``other`` matches ``x`` in shape, dtype and device."""
    check_feature_map(other, name)
    if other.shape != x.shape:
        raise ValueError(f'x and {name} must have the same shape, got {tuple(x.shape)} and '
                         f'{tuple(other.shape)}')
    if other.dtype != x.dtype:
        raise TypeError(f'x and {name} must have the same dtype, got {x.dtype} and {other.dtype}')
    if other.device != x.device:
        raise ValueError(f'x and {name} must be on the same device, got {x.device} and '
                         f'{other.device}')


def as_pads(padding) -> Pads:
    """(top, bottom, left, right) from a symmetric (ph, pw) pair or such a 4-tuple."""
    if len(padding) == 4:
        return tuple(padding)
    ph, pw = padding
    return ph, ph, pw, pw


def check_output_size(height: int, width: int, kernel, padding) -> None:
    """Raises ValueError if the kernel does not fit the padded input (no output pixel).

    ``padding`` is (ph, pw) or (top, bottom, left, right).
    """
    top, bottom, left, right = as_pads(padding)
    padded = (height + top + bottom, width + left + right)
    if padded[0] < kernel[0] or padded[1] < kernel[1]:
        raise ValueError(f'kernel_size {tuple(kernel)} is larger than the padded input '
                         f'{padded} (input {height}x{width}, padding {tuple(padding)})')


def pooled_size(height: int, width: int, kernel, stride, padding) -> Tuple[int, int]:
    """Output (H, W) of a floor-mode pooling (after :func:`check_output_size`).

    ``padding`` is (ph, pw) or (top, bottom, left, right).
    """
    check_output_size(height, width, kernel, padding)
    top, bottom, left, right = as_pads(padding)
    return ((height + top + bottom - kernel[0]) // stride[0] + 1,
            (width + left + right - kernel[1]) // stride[1] + 1)


def window_views(padded: torch.Tensor, kernel, stride, out_size):
    """Strided views of a padded (N, C, H, W) map, one per window offset (row-major), each
    of the output's size (N, C, Ho, Wo)."""
    (kh, kw), (sh, sw), (oh, ow) = kernel, stride, out_size
    for i in range(kh):
        for j in range(kw):
            yield padded[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]
