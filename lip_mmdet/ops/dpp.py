"""DPP: Detail-Preserving Pooling (Saeedan et al., CVPR 2018), and S3Pool-style sampling.

``dpp2d`` implements slides eq. 4-9 with the official code's choices::

    out[p] = sum_q w[p, q] x[q] / sum_q w[p, q]      (q: valid pixels of window p)
    w[p, q] = alpha + (r[p, q] / mean_q' r[p, q']) ** (lambda / 2)
    r[p, q] = d^2 + eps^2,  d = x[q] - guide[p]  (sym)  or  max(0, x[q] - guide[p])  (asym)

with eps^2 = 1e-3 and per-channel alpha, lambda > 0. Dividing the reward by its window mean
makes the weights invariant to the feature scale. With t = lambda/2 * log(r / mean r), the
largest t of a window, T, is >= 0 (the largest r is at least the mean), so the fused CPU
kernel (``csrc/dpp2d_cpu.cpp``, saves only its inputs) uses the same ratios with weights
``alpha e^-T + e^(t - T)``, each term bounded; the PyTorch path (any device) forms
``logaddexp(log alpha, t)`` and takes a softmax over each window. Either way a huge lambda (1e3
or more) cannot overflow: it only drives the pooling towards max pooling (asym) or extremum
pooling (sym, largest |x - guide|). float16/bfloat16 inputs are computed in float32.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .native import run_kernel, select_cpu_library
from .pool_args import (IntPair, Pads, as_pads, check_feature_map, check_window, compute_dtype,
                        pooled_size, window_views)

__all__ = ['dpp2d', 'dpp_box_guide', 'dpp_filter_guide', 'dpp_filter_box_init',
           'dpp_same_padding', 's3_sample', 'check_s3_args', 'DPP_REWARDS', 'DPP_EPS_SQUARED',
           'dpp_window_weights']

DPP_REWARDS = ('sym', 'asym')
DPP_EPS_SQUARED = 1e-3



def dpp_same_padding(kernel_size: IntPair) -> Pads:
    """(top, bottom, left, right) padding that keeps the size at stride 1 (extra at the end)."""
    kernel = check_window(kernel_size, 1, 0)[0]
    top, left = (kernel[0] - 1) // 2, (kernel[1] - 1) // 2
    return top, kernel[0] - 1 - top, left, kernel[1] - 1 - left


def _window_stack(t, kernel, stride, pads: Pads, out_size, fill=0.0):
    """(K, N, C, Ho, Wo): every window offset's strided view of the padded map, stacked."""
    top, bottom, left, right = pads
    padded = F.pad(t, (left, right, top, bottom), value=fill)
    return torch.stack(list(window_views(padded, kernel, stride, out_size)))


def _check_dpp_window(kernel_size, stride, padding):
    """Validates the window; ``padding`` may also be a (top, bottom, left, right) tuple."""
    if isinstance(padding, (tuple, list)) and len(padding) == 4:
        kernel, step, _ = check_window(kernel_size, stride, 0)
        pads = tuple(padding)
        if not all(isinstance(p, int) and not isinstance(p, bool) and p >= 0 for p in pads):
            raise ValueError(f'padding must be non-negative ints, got {padding!r}')
        if max(pads[:2]) >= kernel[0] or max(pads[2:]) >= kernel[1]:
            raise ValueError(f'padding {padding!r} leaves windows without a real pixel for '
                             f'kernel_size {kernel_size!r}')
        return kernel, step, pads
    kernel, step, pad = check_window(kernel_size, stride, padding)
    return kernel, step, as_pads(pad)


def _check_channel_param(value, name, channels):
    if not isinstance(value, torch.Tensor):
        raise TypeError(f'{name} must be a tensor of shape ({channels},), got '
                        f'{type(value).__name__}')
    if value.dim() > 1 or value.numel() not in (1, channels):
        raise ValueError(f'{name} must have shape ({channels},) or (1,), got '
                         f'{tuple(value.shape)}')


def _dpp_weights_torch(x, guide, alpha, lam, reward, kernel, stride, pads, out_size):
    """Normalised window weights (K, N, C, Ho, Wo) and the windows they weigh, both in the
    compute dtype: softmax of log-weights per window (0 on padding taps)."""
    dtype = compute_dtype(x.dtype)
    xc, gc = x.to(dtype), guide.to(dtype)
    alpha, lam = alpha.reshape(1, -1, 1, 1).to(dtype), lam.reshape(1, -1, 1, 1).to(dtype)
    windows = _window_stack(xc, kernel, stride, pads, out_size)
    valid = _window_stack(xc.new_ones((1, 1, *x.shape[2:])), kernel, stride, pads,
                          out_size) > 0
    deviation = windows - gc
    if reward == 'asym':
        deviation = deviation.clamp_min(0)
    penalty = deviation.square() + DPP_EPS_SQUARED
    window_mean = (penalty * valid).sum(0) / valid.sum(0)
    log_reward = penalty.log() - window_mean.log()
    log_weight = torch.logaddexp(alpha.log(), lam * 0.5 * log_reward)
    return torch.softmax(log_weight.masked_fill(~valid, float('-inf')), dim=0), windows


def _dpp2d_torch(x, guide, alpha, lam, reward, kernel, stride, pads, out_size):
    """PyTorch-ops form (autograd does the backward)."""
    weight, windows = _dpp_weights_torch(x, guide, alpha, lam, reward, kernel, stride, pads,
                                         out_size)
    return (weight * windows).sum(0).to(x.dtype)


def _kernel_sizes(x, out_size, kernel, stride, pads):
    n, c, h, w = x.shape
    return (n * c, c, h, w, *out_size, *kernel, *stride, *pads)


def _kernel_params(tensors, dtype, channels):
    """Per-channel parameters as contiguous (C,) tensors of the compute dtype."""
    return tuple(t.to(dtype).reshape(-1).expand(channels).contiguous() for t in tensors)


class _DPP2dFunction(torch.autograd.Function):
    """Fused CPU kernel; saves only the inputs, backward recomputes each window."""

    @staticmethod
    def forward(ctx, x, guide, alpha, lam, asym, kernel, stride, pads, library):
        ctx.save_for_backward(x, guide, alpha, lam)
        ctx.config = (asym, kernel, stride, pads, library)
        dtype = compute_dtype(x.dtype)
        xc, gc = x.to(dtype).contiguous(), guide.to(dtype).contiguous()
        out = torch.empty_like(gc)
        run_kernel(library, 'dpp2d_forward',
                   (xc, gc, *_kernel_params((alpha, lam), dtype, x.shape[1]), out),
                   _kernel_sizes(x, gc.shape[2:], kernel, stride, pads), int(asym))
        return out.to(x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, guide, alpha, lam = ctx.saved_tensors
        asym, kernel, stride, pads, library = ctx.config
        dtype = compute_dtype(x.dtype)
        n, channels = x.shape[:2]
        xc, gc, grad_out = (t.to(dtype).contiguous() for t in (x, guide, grad))
        grad_x, grad_guide = torch.empty_like(xc), torch.empty_like(gc)
        plane_alpha = torch.empty(n * channels, dtype=torch.float64)
        plane_lam = torch.empty(n * channels, dtype=torch.float64)
        run_kernel(library, 'dpp2d_backward',
                   (xc, gc, *_kernel_params((alpha, lam), dtype, channels), grad_out, grad_x,
                    grad_guide, plane_alpha, plane_lam),
                   _kernel_sizes(x, gc.shape[2:], kernel, stride, pads), int(asym))

        def per_param(planes, param):
            per_channel = planes.view(n, channels).sum(0)
            return per_channel.sum().reshape(param.shape) if param.numel() == 1 else \
                per_channel.reshape(param.shape)

        return (grad_x.to(x.dtype), grad_guide.to(guide.dtype),
                per_param(plane_alpha, alpha).to(alpha.dtype),
                per_param(plane_lam, lam).to(lam.dtype), None, None, None, None, None)


def dpp2d(x: torch.Tensor, guide: torch.Tensor, alpha: torch.Tensor, lam: torch.Tensor,
          reward: str = 'asym', kernel_size: IntPair = 2, stride: IntPair = 2,
          padding=0, *, backend: str = 'auto') -> torch.Tensor:
    """Detail-preserving pooling with an explicit guide.

    Args:
        x: features (N, C, H, W).
        guide: the linearly downscaled reference (N, C, Ho, Wo), same dtype/device as ``x``
            (see :func:`dpp_box_guide`, :func:`dpp_filter_guide`).
        alpha, lam: per-channel positive weight bias and reward exponent, shape (C,) or (1,).
        reward: 'sym' (rewards any deviation from the guide) or 'asym' (only values above it).
        kernel_size, stride: window as in ``F.avg_pool2d``.
        padding: int or (h, w) as in ``F.avg_pool2d``, or (top, bottom, left, right).
            Padding pixels get no weight.
        backend: 'auto' (fused CPU kernel for CPU tensors when it builds, else PyTorch ops),
            'cpu_kernel' or 'torch'.

    Returns:
        (N, C, Ho, Wo), Ho/Wo as ``F.avg_pool2d`` (floor mode), dtype of ``x``.
    """
    check_feature_map(x, 'x')
    if reward not in DPP_REWARDS:
        raise ValueError(f'unknown reward {reward!r}, expected one of {DPP_REWARDS}')
    kernel, step, pads = _check_dpp_window(kernel_size, stride, padding)
    out_size = pooled_size(x.shape[2], x.shape[3], kernel, step, pads)
    check_feature_map(guide, 'guide')
    expected = (*x.shape[:2], *out_size)
    if tuple(guide.shape) != expected:
        raise ValueError(f'guide must have the output shape {expected}, got '
                         f'{tuple(guide.shape)}')
    if guide.dtype != x.dtype or guide.device != x.device:
        raise TypeError(f'guide must match x in dtype and device, got {guide.dtype} on '
                        f'{guide.device} and {x.dtype} on {x.device}')
    channels = x.shape[1]
    _check_channel_param(alpha, 'alpha', channels)
    _check_channel_param(lam, 'lam', channels)
    library = select_cpu_library(x, backend)
    if library is not None and x.numel() > 0:
        return _DPP2dFunction.apply(x, guide, alpha, lam, reward == 'asym', kernel, step, pads,
                                    library)
    return _dpp2d_torch(x, guide, alpha, lam, reward, kernel, step, pads, out_size)


def dpp_box_guide(x: torch.Tensor, kernel_size: IntPair = 2, stride: IntPair = 2,
                  padding=0, *, backend: str = 'auto') -> torch.Tensor:
    """Lite-DPP guide: the mean of each window, zero padding counted (as the official code).

    ``padding`` and ``backend`` as in :func:`dpp2d`; returns (N, C, Ho, Wo). On the CPU kernel
    path windows up to 3x3 use the fused filter kernel with box taps (``F.avg_pool2d`` is
    slower on CPU); otherwise ``F.avg_pool2d``.
    """
    check_feature_map(x, 'x')
    kernel, step, pads = _check_dpp_window(kernel_size, stride, padding)
    pooled_size(x.shape[2], x.shape[3], kernel, step, pads)
    if max(kernel) <= 3 and select_cpu_library(x, backend) is not None:
        box = dpp_filter_box_init(kernel).to(x.dtype).expand(x.shape[1], 1, 3, 3)
        return dpp_filter_guide(x, box, None, kernel, step, pads, backend=backend)
    top, bottom, left, right = pads
    if top == bottom and left == right:  # no padded copy for autograd to keep
        return F.avg_pool2d(x, kernel, step, (top, left), count_include_pad=True)
    return F.avg_pool2d(F.pad(x, (left, right, top, bottom)), kernel, step)


def _filter_alignment(kernel: int) -> int:
    """Offset of the 3x3 filter's first tap before the window start (centres it)."""
    return (3 - kernel) // 2


def dpp_filter_guide(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                     kernel_size: IntPair = 2, stride: IntPair = 2, padding=0, *,
                     backend: str = 'auto') -> torch.Tensor:
    """Full-DPP guide: a per-channel 3x3 filter (+ bias) placed on each pooling window.

    The filter's taps are aligned with the window (for a 2-wide window the window is its
    first two taps, for 3 all three, for wider windows its central three) and evaluated once
    per output pixel (a stride-``stride`` depthwise convolution over the zero-padded input).

    Args:
        x: (N, C, H, W). weight: (C, 1, 3, 3). bias: (C,) or None.
        kernel_size, stride, padding: the pooling window, as in :func:`dpp2d`.
        backend: as in :func:`dpp2d` (the fallback is ``F.conv2d``).

    Returns:
        (N, C, Ho, Wo).
    """
    check_feature_map(x, 'x')
    channels = x.shape[1]
    if tuple(weight.shape) != (channels, 1, 3, 3):
        raise ValueError(f'weight must have shape ({channels}, 1, 3, 3), got '
                         f'{tuple(weight.shape)}')
    kernel, step, pads = _check_dpp_window(kernel_size, stride, padding)
    out_size = pooled_size(x.shape[2], x.shape[3], kernel, step, pads)
    shift_h, shift_w = _filter_alignment(kernel[0]), _filter_alignment(kernel[1])
    top, left = pads[0] + shift_h, pads[2] + shift_w
    bottom = (out_size[0] - 1) * step[0] + 3 - top - x.shape[2]
    right = (out_size[1] - 1) * step[1] + 3 - left - x.shape[3]
    if bias is None:
        bias = x.new_zeros(channels)
    library = select_cpu_library(x, backend)
    if library is not None and x.numel() > 0:
        return _FilterGuideFunction.apply(x, weight, bias, step, (top, left), out_size, library)
    # Negative pads crop: the filter never needs those rows/columns.
    padded = F.pad(x, (left, right, top, bottom))
    return F.conv2d(padded, weight.to(x.dtype), bias.to(x.dtype), stride=step, groups=channels)


class _FilterGuideFunction(torch.autograd.Function):
    """Fused CPU kernel for the strided depthwise 3x3 filter (torch's CPU depthwise
    convolution is several times slower). Saves x and the filter."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, offsets, out_size, library):
        ctx.save_for_backward(x, weight)
        ctx.config = (stride, offsets, library)
        dtype = compute_dtype(x.dtype)
        xc, wc, bc = (t.to(dtype).contiguous() for t in (x, weight, bias))
        out = xc.new_empty((*x.shape[:2], *out_size))
        run_kernel(library, 'dpp_filter_guide_forward', (xc, wc, bc, out),
                   _filter_sizes(x, out_size, stride, offsets))
        return out.to(x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        stride, offsets, library = ctx.config
        dtype = compute_dtype(x.dtype)
        n, channels = x.shape[:2]
        xc, wc, gc = (t.to(dtype).contiguous() for t in (x, weight, grad))
        grad_x = torch.empty_like(xc)
        plane_weight = torch.empty(n * channels, 9, dtype=torch.float64)
        plane_bias = torch.empty(n * channels, dtype=torch.float64)
        run_kernel(library, 'dpp_filter_guide_backward',
                   (xc, wc, gc, grad_x, plane_weight, plane_bias),
                   _filter_sizes(x, grad.shape[2:], stride, offsets))
        grad_weight = plane_weight.view(n, channels, 1, 3, 3).sum(0).to(weight.dtype)
        grad_bias = plane_bias.view(n, channels).sum(0).to(weight.dtype)
        return grad_x.to(x.dtype), grad_weight, grad_bias, None, None, None, None


def _filter_sizes(x, out_size, stride, offsets):
    n, c, h, w = x.shape
    return (n * c, c, h, w, *out_size, *stride, *offsets)


def dpp_filter_box_init(kernel_size: IntPair) -> torch.Tensor:
    """(3, 3) filter that makes :func:`dpp_filter_guide` equal :func:`dpp_box_guide`
    (exactly for windows up to 3x3; the central 3x3 mean for larger ones)."""
    kernel = check_window(kernel_size, 1, 0)[0]
    taps = []
    for size in kernel:
        shift = _filter_alignment(size)
        axis = torch.tensor([1.0 if 0 <= t - shift < size else 0.0 for t in range(3)],
                            dtype=torch.float64)
        taps.append(axis / axis.sum())
    return taps[0][:, None] * taps[1][None, :]


def _s3_axis_indices(size: int, stride: int, grid_size: int,
                     generator: Optional[torch.Generator]) -> torch.Tensor:
    """Sorted random picks: ceil(len / stride) distinct positions from every grid cell."""
    full_cells, tail = divmod(size, grid_size)
    picks = []
    if full_cells:
        keys = torch.rand(full_cells, grid_size, generator=generator)
        chosen = keys.argsort(dim=1)[:, :grid_size // stride].sort(dim=1).values
        picks.append((chosen + torch.arange(full_cells)[:, None] * grid_size).flatten())
    if tail:
        keys = torch.rand(tail, generator=generator)
        chosen = keys.argsort()[:-(-tail // stride)].sort().values
        picks.append(chosen + full_cells * grid_size)
    return torch.cat(picks)


def s3_sample(x: torch.Tensor, stride: int = 2, grid_size: int = 2,
              generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """S3Pool stochastic spatial sampling (Zhai et al., 2017).

    Rows and columns are split into cells of ``grid_size``; from every cell ``grid_size /
    stride`` distinct rows (and columns) are drawn uniformly at random and kept in order (a
    shorter last cell gives ceil(len / stride)). One draw per call, shared by the batch and
    channels. Random numbers come from ``generator`` (a CPU ``torch.Generator``) or the global
    CPU RNG, so ``torch.manual_seed`` reproduces them.

    Args:
        x: (N, C, H, W). stride: downscale factor. grid_size: a multiple of ``stride``.

    Returns:
        (N, C, ceil(H / stride), ceil(W / stride)).
    """
    check_feature_map(x, 'x')
    check_s3_args(stride, grid_size)
    rows = _s3_axis_indices(x.shape[2], stride, grid_size, generator).to(x.device)
    cols = _s3_axis_indices(x.shape[3], stride, grid_size, generator).to(x.device)
    return x.index_select(2, rows).index_select(3, cols)


def check_s3_args(stride: int, grid_size: int) -> None:
    """Raises unless stride and grid_size are positive ints with grid_size % stride == 0."""
    for name, value in (('stride', stride), ('grid_size', grid_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f'{name} must be a positive int, got {value!r}')
    if grid_size % stride:
        raise ValueError(f'grid_size ({grid_size}) must be a multiple of stride ({stride})')


def dpp_window_weights(x: torch.Tensor, guide: torch.Tensor, alpha: torch.Tensor,
                       lam: torch.Tensor, reward: str = 'asym', kernel_size: IntPair = 2,
                       stride: IntPair = 2, padding=0) -> torch.Tensor:
    """The normalised weights :func:`dpp2d` gives each pixel of each window.

    Computed by the same function as ``dpp2d``'s PyTorch path, so
    ``(weights * windows).sum(2)`` is ``dpp2d``'s output. Arguments as :func:`dpp2d`.

    Returns:
        (N, C, Kh * Kw, Ho, Wo), window taps in row-major order; each window's weights sum
        to 1 and padding taps are 0. Compute dtype (float32 for half inputs).
    """
    check_feature_map(x, 'x')
    if reward not in DPP_REWARDS:
        raise ValueError(f'unknown reward {reward!r}, expected one of {DPP_REWARDS}')
    kernel, step, pads = _check_dpp_window(kernel_size, stride, padding)
    out_size = pooled_size(x.shape[2], x.shape[3], kernel, step, pads)
    weight, _ = _dpp_weights_torch(x, guide, alpha, lam, reward, kernel, step, pads, out_size)
    return weight.permute(1, 2, 0, 3, 4)
