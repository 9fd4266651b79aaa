"""LIP: Local Importance-based Pooling (Gao et al., ICCV 2019).

``lip2d(x, logit)[p] = sum_q x[q] exp(logit[q]) / sum_q exp(logit[q])`` over the valid (not
padding) pixels q of window p: an importance-weighted mean, sized like ``F.avg_pool2d``.

How it stays exact, safe and lean:

* Stability. Weights are shifted by a maximum of the logits, so exp never overflows. The
  fused CPU kernel shifts each (n, c) plane by its maximum when the plane's logit range is at
  most ``SHIFT_RANGE`` (60: every weight lies in [e^-60, 1], computed once per pixel) and by
  each window's maximum otherwise; the Triton kernels and the PyTorch-ops implementation
  always shift by the window maximum. Every form is exact for any finite logits and equals
  the textbook formula wherever that one does not overflow. A NaN input affects only the
  windows that contain it.
* Precision. float16/bfloat16 inputs are computed in float32 and the result is cast back.
* Memory. Only ``x`` and ``logit`` are saved; backward recomputes the weights and window
  sums.
* Boundary. ``lip_mmdet::lip2d`` and its backward ``lip_mmdet::lip2d_backward`` are
  ``torch.library`` custom ops (see :mod:`lip_mmdet.ops.dispatch` for the backends): on CPU a
  fused C++ kernel (``native.py``, built on first use), on CUDA Triton kernels
  (``triton_pooling.py``), elsewhere PyTorch ops. Each op validates its own arguments
  (:func:`check_lip_args`) in its implementation and its fake implementation, before any
  kernel runs, so direct ``torch.ops.lip_mmdet.*`` calls, compiled graphs and exported
  programs get the same errors as :func:`lip2d`.
"""
from typing import NamedTuple, Sequence, Tuple

import torch
import torch.nn.functional as F

from .dispatch import check_backend, contiguous_compute, implementation, register_autograd
from .native import pooling_cpu_library, run_kernel
from .pool_args import (
    IntPair,
    check_feature_map,
    check_index_range,
    check_output_like,
    check_output_size,
    check_same_layout,
    check_window,
    compute_dtype,
    pooled_size,
    window_views,
)

__all__ = ['lip2d', 'lip2d_naive', 'lip_window_weights', 'SHIFT_RANGE', 'check_lip_args']

SHIFT_RANGE = 60.0


def _pad(t, padding, value=0.0):
    return F.pad(t, (padding[1], padding[1], padding[0], padding[0]), value=value)


class WindowSums(NamedTuple):
    """Per-window-maximum LIP sums: out = num / den (all (N, C, Ho, Wo) but the padded maps)."""
    win_max: torch.Tensor
    num: torch.Tensor
    den: torch.Tensor
    x_pad: torch.Tensor
    l_pad: torch.Tensor


def _windowed_sums(x, logit, kernel, stride, padding) -> WindowSums:
    out_size = pooled_size(x.shape[2], x.shape[3], kernel, stride, padding)
    win_max = F.max_pool2d(logit, kernel, stride, padding)
    x_pad, l_pad = _pad(x, padding), _pad(logit, padding, float('-inf'))
    num, den = torch.zeros_like(win_max), torch.zeros_like(win_max)
    for xs, ls in zip(window_views(x_pad, kernel, stride, out_size),
                      window_views(l_pad, kernel, stride, out_size)):
        weight = torch.exp(ls - win_max)
        num.addcmul_(xs, weight)
        den.add_(weight)
    return WindowSums(win_max, num, den, x_pad, l_pad)


def _torch_forward(x, logit, kernel, stride, padding):
    sums = _windowed_sums(x, logit, kernel, stride, padding)
    return sums.num / sums.den


def _torch_backward(x, logit, grad, kernel, stride, padding):
    sums = _windowed_sums(x, logit, kernel, stride, padding)
    out, scale = sums.num / sums.den, grad / sums.den
    grad_x, grad_l = torch.zeros_like(sums.x_pad), torch.zeros_like(sums.x_pad)
    out_size = out.shape[2:]
    for xs, ls, gx, gl in zip(*(window_views(t, kernel, stride, out_size)
                                for t in (sums.x_pad, sums.l_pad, grad_x, grad_l))):
        weight = torch.exp(ls - sums.win_max).mul_(scale)
        gx.add_(weight)
        gl.addcmul_(weight, xs - out)
    (ph, pw), (h, w) = padding, x.shape[2:]
    return (grad_x[:, :, ph:ph + h, pw:pw + w].contiguous(),
            grad_l[:, :, ph:ph + h, pw:pw + w].contiguous())


def _sizes(x, out_size, kernel, stride, padding):
    n, c, h, w = x.shape
    return (n * c, h, w, *out_size, *kernel, *stride, *padding)


def _kernel_forward(x, logit, kernel, stride, padding):
    out_size = pooled_size(x.shape[2], x.shape[3], kernel, stride, padding)
    out = x.new_empty((*x.shape[:2], *out_size))
    run_kernel(pooling_cpu_library(), 'lip2d_forward', (x, logit, out),
               _sizes(x, out_size, kernel, stride, padding), SHIFT_RANGE)
    return out


def _kernel_backward(x, logit, grad, kernel, stride, padding):
    grad_x, grad_l = torch.empty_like(x), torch.empty_like(x)
    run_kernel(pooling_cpu_library(), 'lip2d_backward', (x, logit, grad, grad_x, grad_l),
               _sizes(x, grad.shape[2:], kernel, stride, padding), SHIFT_RANGE)
    return grad_x, grad_l


def check_lip_args(x, logit, kernel_size, stride, padding, backend, grad=None):
    """Validates a lip2d call (or, with ``grad``, its backward) from metadata only.

    The one check of the op, its fake implementation, its backward op, :func:`lip2d` and the
    Triton launch wrappers, so each raises the same error for the same argument.

    Args:
        x: features (N, C, H, W), H and W > 0.
        logit: same shape, dtype and device as ``x``.
        kernel_size: int or (h, w), positive.
        stride: int or (h, w), positive.
        padding: int or (h, w), at most half the kernel (every window holds a real pixel).
        backend: one of ``POOLING_BACKENDS``, able to run on ``x``'s device.
        grad: the output gradient (N, C, Ho, Wo) of ``x``'s dtype and device, or None.

    Returns:
        ``((kernel, stride, padding), (Ho, Wo))``: the window as (h, w) pairs and the output
        size.
    """
    check_feature_map(x, 'x')
    check_same_layout(x, logit, 'logit')
    kernel, step, pad = check_window(kernel_size, stride, padding)
    out_size = pooled_size(x.shape[2], x.shape[3], kernel, step, pad)
    check_index_range(x.shape[2], x.shape[3], kernel, step, pad, out_size)
    check_backend(x, backend, kernel)
    if grad is not None:
        check_output_like(x, grad, 'grad', (*x.shape[:2], *out_size))
    return (kernel, step, pad), out_size


@torch.library.custom_op('lip_mmdet::lip2d', mutates_args=())
def _lip2d_op(x: torch.Tensor, logit: torch.Tensor, kernel: Sequence[int],
              stride: Sequence[int], padding: Sequence[int], backend: str) -> torch.Tensor:
    window, out_size = check_lip_args(x, logit, kernel, stride, padding, backend)
    if x.numel() == 0:
        return x.new_zeros((*x.shape[:2], *out_size))
    how = implementation(x, backend, window[0])
    if how == 'triton':
        from . import triton_pooling
        return triton_pooling.launch_lip2d_forward(x, logit, *window, out_size)
    xc, lc = contiguous_compute((x, logit), compute_dtype(x.dtype))
    forward = _kernel_forward if how == 'cpu_kernel' else _torch_forward
    return forward(xc, lc, *window).to(x.dtype)


@_lip2d_op.register_fake
def _lip2d_fake(x, logit, kernel, stride, padding, backend):
    _, out_size = check_lip_args(x, logit, kernel, stride, padding, backend)
    return x.new_empty((*x.shape[:2], *out_size))


@torch.library.custom_op('lip_mmdet::lip2d_backward', mutates_args=())
def _lip2d_backward_op(x: torch.Tensor, logit: torch.Tensor, grad: torch.Tensor,
                       kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int],
                       backend: str) -> Tuple[torch.Tensor, torch.Tensor]:
    window, out_size = check_lip_args(x, logit, kernel, stride, padding, backend, grad)
    if x.numel() == 0:
        return x.new_zeros(x.shape), x.new_zeros(x.shape)
    how = implementation(x, backend, window[0])
    if how == 'triton':
        from . import triton_pooling
        return triton_pooling.launch_lip2d_backward(x, logit, grad, *window, out_size)
    xc, lc, gc = contiguous_compute((x, logit, grad), compute_dtype(x.dtype))
    backward = _kernel_backward if how == 'cpu_kernel' else _torch_backward
    grad_x, grad_l = backward(xc, lc, gc, *window)
    return grad_x.to(x.dtype), grad_l.to(x.dtype)


@_lip2d_backward_op.register_fake
def _lip2d_backward_fake(x, logit, grad, kernel, stride, padding, backend):
    check_lip_args(x, logit, kernel, stride, padding, backend, grad)
    return x.new_empty(x.shape), x.new_empty(x.shape)


register_autograd(_lip2d_op, _lip2d_backward_op, num_saved=2, name='lip2d')


def lip2d(x: torch.Tensor, logit: torch.Tensor, kernel_size: IntPair = 3, stride: IntPair = 2,
          padding: IntPair = 1, *, backend: str = 'auto') -> torch.Tensor:
    """Local importance-based pooling.

    Args:
        x: features (N, C, H, W), floating point.
        logit: importance logits of the same shape, dtype and device; weights are exp(logit).
        kernel_size: window size, int or (h, w), as in ``F.avg_pool2d``.
        stride: window step, int or (h, w).
        padding: int or (h, w), at most half the kernel. Padding pixels get no weight.
        backend: 'auto' (fused CPU kernel on CPU, Triton on CUDA, PyTorch ops otherwise),
            'cpu_kernel', 'triton' or 'torch' (see :mod:`lip_mmdet.ops.dispatch`).

    Returns:
        (N, C, Ho, Wo) with Ho, Wo as ``F.avg_pool2d`` (floor mode), dtype of ``x``.
    """
    window, _ = check_lip_args(x, logit, kernel_size, stride, padding, backend)
    return _lip2d_op(x, logit, *window, backend)


def lip2d_naive(x: torch.Tensor, logit: torch.Tensor, kernel_size: IntPair = 3,
                stride: IntPair = 2, padding: IntPair = 1) -> torch.Tensor:
    """Textbook LIP as a composition of primitives (reference for tests and benchmarks).

    ``avg_pool(x * exp(logit)) / avg_pool(exp(logit))``: overflows for large logits (e^89 in
    float32, e^12 in float16) and keeps every intermediate for backward.
    """
    check_feature_map(x, 'x')
    check_same_layout(x, logit, 'logit')
    kernel, step, pad = check_window(kernel_size, stride, padding)
    check_output_size(x.shape[2], x.shape[3], kernel, pad)
    weight = torch.exp(logit)
    return (F.avg_pool2d(x * weight, kernel, step, pad)
            / F.avg_pool2d(weight, kernel, step, pad))


def lip_window_weights(logit: torch.Tensor, kernel_size: IntPair = 3, stride: IntPair = 2,
                       padding: IntPair = 1) -> torch.Tensor:
    """The normalised weights ``exp(logit[q]) / sum_q' exp(logit[q'])`` that :func:`lip2d`
    gives each pixel q of each window (a softmax over the window's valid pixels).

    Args:
        logit: importance logits (N, C, H, W), floating point.
        kernel_size, stride, padding: the window, as :func:`lip2d`.

    Returns:
        (N, C, Kh * Kw, Ho, Wo), window taps in row-major order, so that
        ``lip2d(x, logit)`` equals the weighted sum of each window's pixels of ``x``. Each
        window's weights sum to 1; padding taps are 0. Compute dtype (float32 for half).
    """
    check_feature_map(logit, 'logit')
    kernel, step, pad = check_window(kernel_size, stride, padding)
    logit = logit.detach().to(compute_dtype(logit.dtype))
    # the PyTorch form's window sums (their numerator, of x = logit, goes unused)
    sums = _windowed_sums(logit, logit, kernel, step, pad)
    taps = [torch.exp(ls - sums.win_max) / sums.den
            for ls in window_views(sums.l_pad, kernel, step, sums.den.shape[2:])]
    return torch.stack(taps, dim=2)
