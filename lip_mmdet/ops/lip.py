"""LIP: Local Importance-based Pooling (Gao et al., ICCV 2019).

``lip2d(x, logit)[p] = sum_q x[q] exp(logit[q]) / sum_q exp(logit[q])`` over the valid (not
padding) pixels q of window p: an importance-weighted mean, sized like ``F.avg_pool2d``.

How it stays exact, safe and lean:

* Stability. Each (n, c) plane's logits are shifted by the plane maximum. If a plane's logit
  range is at most ``SHIFT_RANGE`` (60) every weight exp(l - max) lies in [e^-60, 1], so
  nothing overflows or underflows and each pixel's weight is computed once. Planes with a wider
  range are computed with a per-window maximum instead, which is exact for any finite logits.
  Both forms equal the textbook formula wherever that one does not overflow.
* Precision. float16/bfloat16 inputs are computed in float32 and the result is cast back.
* Memory. The autograd function keeps only ``x`` and ``logit``; backward recomputes the
  weights and window sums.
* Speed. On CPU a fused C++ kernel (``native.py``, built on first use) does forward and
  backward in one pass per plane; elsewhere, or without a compiler, the same maths runs as
  PyTorch ops.
"""
import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .native import BACKENDS, run_kernel, select_cpu_library
from .pool_args import (IntPair, check_feature_map, check_same_layout, check_window,
                        compute_dtype, pooled_size, window_views)

__all__ = ['lip2d', 'lip2d_naive', 'lip_window_weights', 'SHIFT_RANGE']

SHIFT_RANGE = 60.0


def _sum_pool(t, kernel, stride, padding):
    return F.avg_pool2d(t, kernel, stride, padding, divisor_override=1)


def _sum_pool_transpose(grad, like, kernel, stride, padding):
    """Adjoint of :func:`_sum_pool`: adds each window's value to all its pixels."""
    return torch.ops.aten.avg_pool2d_backward(grad, like, kernel, stride, padding, False, True,
                                              1)


def _pad(t, padding, value=0.0):
    return F.pad(t, (padding[1], padding[1], padding[0], padding[0]), value=value)


def _windowed_sums(x, logit, kernel, stride, padding):
    """Per-window-maximum form: returns (window max, num, den, padded x, padded logit)."""
    out_size = pooled_size(x.shape[2], x.shape[3], kernel, stride, padding)
    win_max = F.max_pool2d(logit, kernel, stride, padding)
    x_pad, l_pad = _pad(x, padding), _pad(logit, padding, float('-inf'))
    num, den = torch.zeros_like(win_max), torch.zeros_like(win_max)
    for xs, ls in zip(window_views(x_pad, kernel, stride, out_size),
                      window_views(l_pad, kernel, stride, out_size)):
        weight = torch.exp(ls - win_max)
        num.addcmul_(xs, weight)
        den.add_(weight)
    return win_max, num, den, x_pad, l_pad


def _windowed_backward(x, logit, grad, kernel, stride, padding):
    win_max, num, den, x_pad, l_pad = _windowed_sums(x, logit, kernel, stride, padding)
    out, scale = num / den, grad / den
    grad_x, grad_l = torch.zeros_like(x_pad), torch.zeros_like(x_pad)
    out_size = out.shape[2:]
    for xs, ls, gx, gl in zip(*(window_views(t, kernel, stride, out_size)
                                for t in (x_pad, l_pad, grad_x, grad_l))):
        weight = torch.exp(ls - win_max).mul_(scale)
        gx.add_(weight)
        gl.addcmul_(weight, xs - out)
    (ph, pw), (h, w) = padding, x.shape[2:]
    return grad_x[:, :, ph:ph + h, pw:pw + w], grad_l[:, :, ph:ph + h, pw:pw + w]


def _plane_shift(logit):
    """Plane maxima (N, C, 1, 1) and the flat indices of planes too wide for a shared shift."""
    low, high = torch.aminmax(logit.flatten(2), dim=2)
    wide = ((high - low) > SHIFT_RANGE).flatten().nonzero().squeeze(1)
    return high[..., None, None], wide


def _replace_planes(full, wide, part):
    full.flatten(0, 1).index_copy_(0, wide, part.flatten(0, 1))


def _torch_forward(x, logit, kernel, stride, padding):
    high, wide = _plane_shift(logit)
    weight = torch.exp(logit - high)
    out = _sum_pool(x * weight, kernel, stride, padding).div_(
        _sum_pool(weight, kernel, stride, padding))
    if wide.numel():
        x_wide, l_wide = (t.flatten(0, 1)[wide].unsqueeze(1) for t in (x, logit))
        _, num, den, _, _ = _windowed_sums(x_wide, l_wide, kernel, stride, padding)
        _replace_planes(out, wide, num / den)
    return out


def _torch_backward(x, logit, grad, kernel, stride, padding):
    high, wide = _plane_shift(logit)
    weight = torch.exp(logit - high)
    den = _sum_pool(weight, kernel, stride, padding)
    scale = grad / den
    out = _sum_pool(x * weight, kernel, stride, padding).div_(den)
    spread = _sum_pool_transpose(scale, x, kernel, stride, padding)
    spread_out = _sum_pool_transpose(scale * out, x, kernel, stride, padding)
    grad_l = weight * (x * spread - spread_out)
    grad_x = weight.mul_(spread)
    if wide.numel():
        x_wide, l_wide, g_wide = (t.flatten(0, 1)[wide].unsqueeze(1) for t in (x, logit, grad))
        gx_wide, gl_wide = _windowed_backward(x_wide, l_wide, g_wide, kernel, stride, padding)
        _replace_planes(grad_x, wide, gx_wide)
        _replace_planes(grad_l, wide, gl_wide)
    return grad_x, grad_l


def _sizes(x, out_size, kernel, stride, padding):
    n, c, h, w = x.shape
    return (n * c, h, w, *out_size, *kernel, *stride, *padding)


def _kernel_forward(library, x, logit, kernel, stride, padding):
    out_size = pooled_size(x.shape[2], x.shape[3], kernel, stride, padding)
    out = x.new_empty((*x.shape[:2], *out_size))
    run_kernel(library, 'lip2d_forward', (x, logit, out),
               _sizes(x, out_size, kernel, stride, padding), SHIFT_RANGE)
    return out


def _kernel_backward(library, x, logit, grad, kernel, stride, padding):
    grad_x, grad_l = torch.empty_like(x), torch.empty_like(x)
    run_kernel(library, 'lip2d_backward', (x, logit, grad, grad_x, grad_l),
               _sizes(x, grad.shape[2:], kernel, stride, padding), SHIFT_RANGE)
    return grad_x, grad_l


class _LIP2dFunction(torch.autograd.Function):
    """Saves only (x, logit); backward recomputes weights and window sums."""

    @staticmethod
    def forward(ctx, x, logit, kernel, stride, padding, backend):
        ctx.save_for_backward(x, logit)
        ctx.window = (kernel, stride, padding, backend)
        out_size = pooled_size(x.shape[2], x.shape[3], kernel, stride, padding)
        if x.numel() == 0:
            return x.new_zeros((*x.shape[:2], *out_size))
        dtype = compute_dtype(x.dtype)
        xc, lc = x.to(dtype).contiguous(), logit.to(dtype).contiguous()
        library = select_cpu_library(x, backend)
        if library is not None:
            out = _kernel_forward(library, xc, lc, kernel, stride, padding)
        else:
            out = _torch_forward(xc, lc, kernel, stride, padding)
        return out.to(x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, logit = ctx.saved_tensors
        kernel, stride, padding, backend = ctx.window
        if x.numel() == 0:
            return torch.zeros_like(x), torch.zeros_like(logit), None, None, None, None
        dtype = compute_dtype(x.dtype)
        xc, lc = x.to(dtype).contiguous(), logit.to(dtype).contiguous()
        gc = grad.to(dtype).contiguous()
        library = select_cpu_library(x, backend)
        if library is not None:
            grad_x, grad_l = _kernel_backward(library, xc, lc, gc, kernel, stride, padding)
        else:
            grad_x, grad_l = _torch_backward(xc, lc, gc, kernel, stride, padding)
        return grad_x.to(x.dtype), grad_l.to(logit.dtype), None, None, None, None


def lip2d(x: torch.Tensor, logit: torch.Tensor, kernel_size: IntPair = 3, stride: IntPair = 2,
          padding: IntPair = 1, *, backend: str = 'auto') -> torch.Tensor:
    """Local importance-based pooling.

    Args:
        x: features (N, C, H, W), floating point.
        logit: importance logits of the same shape, dtype and device; weights are exp(logit).
        kernel_size, stride, padding: window as in ``F.avg_pool2d`` (int or (h, w));
            padding at most half the kernel. Padding pixels get no weight.
        backend: 'auto' (fused CPU kernel for CPU tensors when it builds, else PyTorch ops),
            'cpu_kernel' (require the fused kernel) or 'torch' (PyTorch ops only).

    Returns:
        (N, C, Ho, Wo) with Ho, Wo as ``F.avg_pool2d`` (floor mode), dtype of ``x``.
    """
    check_feature_map(x, 'x')
    check_same_layout(x, logit, 'logit')
    kernel, step, pad = check_window(kernel_size, stride, padding)
    pooled_size(x.shape[2], x.shape[3], kernel, step, pad)
    if backend not in BACKENDS:
        raise ValueError(f'unknown backend {backend!r}, expected one of {BACKENDS}')
    return _LIP2dFunction.apply(x, logit, kernel, step, pad, backend)


def lip2d_naive(x: torch.Tensor, logit: torch.Tensor, kernel_size: IntPair = 3,
                stride: IntPair = 2, padding: IntPair = 1) -> torch.Tensor:
    """Textbook LIP as a composition of primitives (reference for tests and benchmarks).

    ``avg_pool(x * exp(logit)) / avg_pool(exp(logit))``: overflows for large logits (e^89 in
    float32, e^12 in float16) and keeps every intermediate for backward.
    """
    check_feature_map(x, 'x')
    check_same_layout(x, logit, 'logit')
    kernel, step, pad = check_window(kernel_size, stride, padding)
    pooled_size(x.shape[2], x.shape[3], kernel, step, pad)
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
    out_size = pooled_size(logit.shape[2], logit.shape[3], kernel, step, pad)
    padded = _pad(logit.to(compute_dtype(logit.dtype)), pad, float('-inf'))
    taps = torch.stack(list(window_views(padded, kernel, step, out_size)), dim=2)
    return torch.softmax(taps, dim=2)
