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
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .dispatch import check_backend, define_op, register_autograd, triton_launcher
from .native import KernelGeometry, pooling_cpu_library, run_kernel
from .pool_args import (
    IntPair,
    avg_pool_zero_padded,
    check_map_and_window,
    check_output_like,
    check_same_layout,
    compute_dtype,
    pad_map,
    window_views,
)

__all__ = ['lip2d', 'lip2d_naive', 'lip_window_weights', 'SHIFT_RANGE', 'check_lip_args']

SHIFT_RANGE = 60.0


class WindowSums(NamedTuple):
    """Per-window-maximum LIP sums: out = num / den (all (N, C, Ho, Wo) but the padded maps)."""
    win_max: torch.Tensor
    num: torch.Tensor
    den: torch.Tensor
    x_pad: torch.Tensor
    l_pad: torch.Tensor


def _windowed_sums(x, logit, kernel, stride, pads, out_size) -> WindowSums:
    # max_pool2d pads with -inf (never a maximum) but takes symmetric padding only, so the
    # maximum runs on the logits padded explicitly.
    l_pad = pad_map(logit, pads, float('-inf'))
    win_max = F.max_pool2d(l_pad, kernel, stride)
    x_pad = pad_map(x, pads)
    num, den = torch.zeros_like(win_max), torch.zeros_like(win_max)
    for xs, ls in zip(window_views(x_pad, kernel, stride, out_size),
                      window_views(l_pad, kernel, stride, out_size)):
        weight = torch.exp(ls - win_max)
        num.addcmul_(xs, weight)
        den.add_(weight)
    return WindowSums(win_max, num, den, x_pad, l_pad)


def _torch_forward(x, logit, kernel, stride, pads, out_size):
    sums = _windowed_sums(x, logit, kernel, stride, pads, out_size)
    return sums.num / sums.den


def _torch_backward(x, logit, grad, kernel, stride, pads, out_size):
    sums = _windowed_sums(x, logit, kernel, stride, pads, out_size)
    out, scale = sums.num / sums.den, grad / sums.den
    grad_x, grad_l = torch.zeros_like(sums.x_pad), torch.zeros_like(sums.x_pad)
    for xs, ls, gx, gl in zip(*(window_views(t, kernel, stride, out_size)
                                for t in (sums.x_pad, sums.l_pad, grad_x, grad_l))):
        weight = torch.exp(ls - sums.win_max).mul_(scale)
        gx.add_(weight)
        gl.addcmul_(weight, xs - out)
    top, left, (h, w) = pads[0], pads[2], x.shape[2:]
    return grad_x[:, :, top:top + h, left:left + w], grad_l[:, :, top:top + h, left:left + w]


def _kernel_forward(x, logit, kernel, stride, pads, out_size):
    out = x.new_empty((*x.shape[:2], *out_size))
    run_kernel(pooling_cpu_library(), 'lip2d_forward', (x, logit, out),
               KernelGeometry.of(x.shape, out_size, kernel, stride, pads), SHIFT_RANGE)
    return out


def _kernel_backward(x, logit, grad, kernel, stride, pads, out_size):
    grad_x, grad_l = torch.empty_like(x), torch.empty_like(x)
    run_kernel(pooling_cpu_library(), 'lip2d_backward', (x, logit, grad, grad_x, grad_l),
               KernelGeometry.of(x.shape, out_size, kernel, stride, pads), SHIFT_RANGE)
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
        padding: int or (h, w), at most half the kernel, or (top, bottom, left, right), each
            less than the kernel (every window holds a real pixel).
        backend: one of ``POOLING_BACKENDS``, able to run on ``x``'s device.
        grad: the output gradient (N, C, Ho, Wo) of ``x``'s dtype and device, or None.

    Returns:
        ``((kernel, stride, pads), (Ho, Wo))``: the window as (h, w) pairs, pads as (top,
        bottom, left, right), and the output size.
    """
    window, out_size = check_map_and_window(x, kernel_size, stride, padding)
    check_same_layout(x, logit, 'logit')
    check_backend(x, backend, window[0])
    if grad is not None:
        check_output_like(x, grad, 'grad', (*x.shape[:2], *out_size))
    return window, out_size


def _check_lip_backward_args(x, logit, grad, kernel, stride, pads, backend):
    return check_lip_args(x, logit, kernel, stride, pads, backend, grad)


_WINDOW_SCHEMA = 'SymInt[] kernel, SymInt[] stride, SymInt[] pads, str backend'

_lip2d_op = define_op(
    'lip2d', f'(Tensor x, Tensor logit, {_WINDOW_SCHEMA}) -> Tensor', check_lip_args,
    lambda args, out_size: ((args[0], (*args[0].shape[:2], *out_size)), ),
    {'cpu_kernel': _kernel_forward, 'torch': _torch_forward,
     'triton': triton_launcher('launch_lip2d_forward')})

_lip2d_backward_op = define_op(
    'lip2d_backward', f'(Tensor x, Tensor logit, Tensor grad, {_WINDOW_SCHEMA}) -> (Tensor, '
    'Tensor)', _check_lip_backward_args,
    lambda args, out_size: ((args[0], args[0].shape), (args[1], args[1].shape)),
    {'cpu_kernel': _kernel_backward, 'torch': _torch_backward,
     'triton': triton_launcher('launch_lip2d_backward')})

register_autograd(_lip2d_op, _lip2d_backward_op, num_saved=2, name='lip2d')


def lip2d(x: torch.Tensor, logit: torch.Tensor, kernel_size: IntPair = 3, stride: IntPair = 2,
          padding: IntPair = 1, *, backend: str = 'auto') -> torch.Tensor:
    """Local importance-based pooling.

    Args:
        x: features (N, C, H, W), floating point.
        logit: importance logits of the same shape, dtype and device; weights are exp(logit).
        kernel_size: window size, int or (h, w), as in ``F.avg_pool2d``.
        stride: window step, int or (h, w).
        padding: int or (h, w), at most half the kernel, or (top, bottom, left, right), each
            less than the kernel. Padding pixels get no weight.
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
    (kernel, step, pads), _ = check_map_and_window(x, kernel_size, stride, padding)
    check_same_layout(x, logit, 'logit')
    weight = torch.exp(logit)
    return (avg_pool_zero_padded(x * weight, kernel, step, pads)
            / avg_pool_zero_padded(weight, kernel, step, pads))


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
    (kernel, step, pads), out_size = check_map_and_window(logit, kernel_size, stride, padding)
    logit = logit.detach().to(compute_dtype(logit.dtype))
    # the PyTorch form's window sums (their numerator, of x = logit, goes unused)
    sums = _windowed_sums(logit, logit, kernel, step, pads, out_size)
    taps = [torch.exp(ls - sums.win_max) / sums.den
            for ls in window_views(sums.l_pad, kernel, step, out_size)]
    return torch.stack(taps, dim=2)
