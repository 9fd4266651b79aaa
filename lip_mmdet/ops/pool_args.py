"""Argument checks, output-size rules and the compute dtype shared by the pooling ops.

Every op here sizes its output exactly as ``F.avg_pool2d`` with the same arguments in floor
mode: ``(H + top + bottom - kernel_size) // stride + 1`` per spatial axis. The ops take their
padding in one form at their boundary, ``pads`` = (top, bottom, left, right)
(:func:`as_pads`); the Python functions also take an int or an (h, w) pair.

The checks read metadata only (shapes, dtypes, devices, Python ints), never tensor values, so
they cost no device synchronisation and run unchanged on fake tensors. Sizes may be SymInts
(``torch.compile`` with dynamic shapes): comparisons that decide an op's output shape guard
on them as the shape rules would; the index-range bounds of :func:`check_index_range` only
raise where the bound is provably exceeded, and the real implementation checks them again on
the concrete sizes before any kernel runs.
"""
from typing import Tuple, Union

import torch
import torch.nn.functional as F
from torch.fx.experimental.symbolic_shapes import statically_known_true

IntPair = Union[int, Tuple[int, int]]
Pads = Tuple[int, int, int, int]  # (top, bottom, left, right)

__all__ = ['IntPair', 'to_pair', 'check_window', 'check_feature_map', 'check_same_layout',
           'Pads', 'as_pads', 'check_output_size', 'pooled_size', 'window_views',
           'compute_dtype', 'POOLING_DTYPES', 'INDEX_MAX', 'check_index_range',
           'check_param', 'check_output_like', 'is_int', 'check_map_and_window', 'pad_map',
           'avg_pool_zero_padded']

#: The dtypes every backend computes: half types in float32, the others in their own. The
#: fused kernels exist for float32 and float64 only, so any other dtype (float8, ...) must
#: stop at the op boundary rather than reach them.
POOLING_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

#: Largest index or count the backends compute with: the C kernels use int64_t for sizes,
#: offsets and buffer lengths, the Triton kernels widen program ids to int64 before any
#: offset arithmetic, and PyTorch sizes are int64. A window whose derived quantities exceed
#: it would wrap, so it is refused.
INDEX_MAX = 2**63 - 1


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype the ops compute in: float32 for float16/bfloat16 inputs, else the input's."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def is_int(value) -> bool:
    """Whether ``value`` is an int (a SymInt under ``torch.compile``), not a bool."""
    return type(value) is int or isinstance(value, torch.SymInt)  # type(): bool is an int


def to_pair(value: IntPair, name: str) -> Tuple[int, int]:
    """Returns ``value`` as an (h, w) pair of Python ints, or raises TypeError naming it."""
    pair = (value, value) if not isinstance(value, (tuple, list)) else tuple(value)
    if len(pair) != 2 or not all(is_int(v) for v in pair):
        raise TypeError(f'{name} must be an int or a pair of ints, got {value!r}')
    return pair


def as_pads(padding) -> Pads:
    """(top, bottom, left, right) from an int, an (h, w) pair or such a 4-tuple: the one
    padding form every op takes at its boundary (not validated: see :func:`check_window`)."""
    if isinstance(padding, (tuple, list)) and len(padding) == 4:
        return tuple(padding)
    ph, pw = to_pair(padding, 'padding')
    return ph, ph, pw, pw


def check_window(kernel_size: IntPair, stride: IntPair, padding) -> Tuple[Tuple[int, int],
                                                                          Tuple[int, int],
                                                                          Pads]:
    """Validates a pooling window; returns (kernel, stride, pads): (h, w) pairs and pads
    (top, bottom, left, right).

    ``padding`` is an int or (h, w) pair as in ``F.avg_pool2d`` (at most half the kernel), or
    (top, bottom, left, right), each side less than the kernel: either way every window holds
    a real pixel.
    """
    kernel = to_pair(kernel_size, 'kernel_size')
    step = to_pair(stride, 'stride')
    if min(kernel) <= 0:
        raise ValueError(f'kernel_size must be positive, got {kernel_size!r}')
    if min(step) <= 0:
        raise ValueError(f'stride must be positive, got {stride!r}')
    if isinstance(padding, (tuple, list)) and len(padding) == 4:
        pads = tuple(padding)
        if not all(is_int(p) and p >= 0 for p in pads):
            raise ValueError(f'padding must be non-negative ints, got {padding!r}')
        if max(pads[:2]) >= kernel[0] or max(pads[2:]) >= kernel[1]:
            raise ValueError(f'padding {padding!r} leaves windows without a real pixel for '
                             f'kernel_size {kernel_size!r}')
        return kernel, step, pads
    pad = to_pair(padding, 'padding')
    if min(pad) < 0:
        raise ValueError(f'padding must be non-negative, got {padding!r}')
    if pad[0] > kernel[0] // 2 or pad[1] > kernel[1] // 2:
        raise ValueError(f'padding {padding!r} must be at most half the kernel size '
                         f'{kernel_size!r} (every window needs a real pixel)')
    return kernel, step, as_pads(pad)


def check_map_and_window(x, kernel_size, stride, padding):
    """Checks the feature map ``x`` and a window on it (:func:`check_window`, the output size
    and the int64 range); returns ``((kernel, stride, pads), (Ho, Wo))``."""
    check_feature_map(x, 'x')
    kernel, step, pads = check_window(kernel_size, stride, padding)
    out_size = pooled_size(x.shape[2], x.shape[3], kernel, step, pads)
    check_index_range(x.shape[2], x.shape[3], kernel, step, pads, out_size)
    return (kernel, step, pads), out_size


def _check_tensor(t, name: str) -> None:
    """Raises unless ``t`` is a dense tensor of one of :data:`POOLING_DTYPES`."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f'{name} must be a torch.Tensor, got {type(t).__name__}')
    if t.layout != torch.strided:
        raise TypeError(f'{name} must be a dense (strided) tensor, got layout {t.layout}')
    if not t.is_floating_point():
        raise TypeError(f'{name} must be a floating-point tensor, got dtype {t.dtype}')
    if t.dtype not in POOLING_DTYPES:
        raise TypeError(f'{name} must be float16, bfloat16, float32 or float64, got dtype '
                        f'{t.dtype}')


def check_feature_map(x, name: str = 'x') -> None:
    """Raises unless ``x`` is a dense floating-point tensor (N, C, H, W) with H, W > 0.

    N or C may be 0 (the result is empty too); an empty map (H or W 0) has no pixel for any
    window, so it is refused as ``F.avg_pool2d`` refuses it.
    """
    _check_tensor(x, name)
    if x.dim() != 4:
        raise ValueError(f'{name} must have shape (N, C, H, W), got shape {tuple(x.shape)}')
    if x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f'{name} must have a non-empty map (H, W > 0), got shape '
                         f'{tuple(x.shape)}')


def check_same_layout(x: torch.Tensor, other: torch.Tensor, name: str) -> None:
    """Raises unless ``other`` matches ``x`` in shape, dtype and device."""
    check_feature_map(other, name)
    if other.shape != x.shape:
        raise ValueError(f'x and {name} must have the same shape, got {tuple(x.shape)} and '
                         f'{tuple(other.shape)}')
    _check_dtype_and_device(x, other, name)


def _check_dtype_and_device(x: torch.Tensor, other: torch.Tensor, name: str) -> None:
    if other.dtype != x.dtype:
        raise TypeError(f'x and {name} must have the same dtype, got {x.dtype} and {other.dtype}')
    if other.device != x.device:
        raise ValueError(f'x and {name} must be on the same device, got {x.device} and '
                         f'{other.device}')


def check_output_like(x: torch.Tensor, tensor, name: str, out_shape) -> None:
    """Raises unless ``tensor`` (a DPP guide, an output gradient) has the op's output shape
    ``out_shape`` and ``x``'s dtype and device."""
    _check_tensor(tensor, name)
    if tuple(tensor.shape) != tuple(out_shape):
        raise ValueError(f'{name} must have the output shape {tuple(out_shape)}, got '
                         f'{tuple(tensor.shape)}')
    _check_dtype_and_device(x, tensor, name)


def check_param(x: torch.Tensor, value, name: str, shape) -> None:
    """Raises unless the parameter ``value`` is a floating-point tensor of exactly ``shape``
    on ``x``'s device (its dtype may differ from ``x``'s: module parameters stay float32
    under autocast, and every backend converts them to the compute dtype)."""
    _check_tensor(value, name)
    if tuple(value.shape) != tuple(shape):
        raise ValueError(f'{name} must have shape {tuple(shape)}, got {tuple(value.shape)}')
    if value.device != x.device:
        raise ValueError(f'x and {name} must be on the same device, got {x.device} and '
                         f'{value.device}')


def check_output_size(height: int, width: int, kernel, pads: Pads) -> None:
    """Raises ValueError if the kernel does not fit the padded input (no output pixel)."""
    top, bottom, left, right = pads
    padded = (height + top + bottom, width + left + right)
    if padded[0] < kernel[0] or padded[1] < kernel[1]:
        raise ValueError(f'kernel_size {tuple(kernel)} is larger than the padded input '
                         f'{padded} (input {height}x{width}, padding {tuple(pads)})')


def pooled_size(height: int, width: int, kernel, stride, pads: Pads) -> Tuple[int, int]:
    """Output (H, W) of a floor-mode pooling with ``pads`` (top, bottom, left, right); raises
    if the kernel does not fit (:func:`check_output_size`)."""
    check_output_size(height, width, kernel, pads)
    top, bottom, left, right = pads
    return ((height + top + bottom - kernel[0]) // stride[0] + 1,
            (width + left + right - kernel[1]) // stride[1] + 1)


def _exceeds(value, limit: int) -> bool:
    """``value > limit``, where a SymInt counts only if provably so (no guard is added: the
    real implementation checks the concrete value)."""
    if isinstance(value, torch.SymInt):
        return statically_known_true(value > limit)
    return value > limit


def check_index_range(height, width, kernel, stride, pads: Pads, out_size) -> None:
    """Raises ValueError if the window arithmetic leaves the int64 index range.

    Python ints do not overflow, but the backends compute in int64 (:data:`INDEX_MAX`): the
    padded extents, the window's tap count, a padded plane (the DPP kernels copy each plane
    into a zero-padded buffer) and the taps of an output row (their per-row scratch) must all
    be representable, and so must the stride and the last window's start. Every other index
    the kernels form is bounded by one of these. ``pads`` is (top, bottom, left, right);
    the window must already be valid (:func:`check_output_size`).
    """
    top, bottom, left, right = pads
    padded = (height + top + bottom, width + left + right)
    taps = kernel[0] * kernel[1]
    quantities = (('padded height', padded[0]), ('padded width', padded[1]),
                  ('stride', max(stride)), ('window taps', taps),
                  ('padded plane', padded[0] * padded[1]),
                  ('window taps per output row', taps * out_size[1]))
    for what, value in quantities:
        if _exceeds(value, INDEX_MAX):
            raise ValueError(
                f'kernel_size {tuple(kernel)}, stride {tuple(stride)} and padding '
                f'{tuple(pads)} on a {height}x{width} input: {what} = {value} is beyond '
                f'the int64 range of the pooling kernels (2**63 - 1)')


def pad_map(t: torch.Tensor, pads: Pads, value: float = 0.0) -> torch.Tensor:
    """(N, C, H, W) ``t`` padded by ``pads`` (top, bottom, left, right) with ``value``."""
    top, bottom, left, right = pads
    return F.pad(t, (left, right, top, bottom), value=value)


def avg_pool_zero_padded(t: torch.Tensor, kernel, stride, pads: Pads) -> torch.Tensor:
    """``F.avg_pool2d`` of ``t`` zero-padded by ``pads`` (top, bottom, left, right), the
    padding counted; symmetric padding is pooled without a padded copy."""
    top, bottom, left, right = pads
    if top == bottom and left == right:
        return F.avg_pool2d(t, kernel, stride, (top, left), count_include_pad=True)
    return F.avg_pool2d(pad_map(t, pads), kernel, stride)


def window_views(padded: torch.Tensor, kernel, stride, out_size):
    """Strided views of a padded (N, C, H, W) map, one per window offset (row-major), each
    of the output's size (N, C, Ho, Wo)."""
    (kh, kw), (sh, sw), (oh, ow) = kernel, stride, out_size
    for i in range(kh):
        for j in range(kw):
            yield padded[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]
