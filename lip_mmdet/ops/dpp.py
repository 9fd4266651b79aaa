"""DPP: Detail-Preserving Pooling (Saeedan et al., CVPR 2018), and S3Pool-style sampling.

``dpp2d`` implements slides eq. 4-9 with the official code's choices::

    out[p] = sum_q w[p, q] x[q] / sum_q w[p, q]      (q: valid pixels of window p)
    w[p, q] = alpha + (r[p, q] / mean_q' r[p, q']) ** (lambda / 2)
    r[p, q] = d^2 + eps^2,  d = x[q] - guide[p]  (sym)  or  max(0, x[q] - guide[p])  (asym)

with eps^2 = 1e-3 and per-channel alpha, lambda > 0. Dividing the reward by its window mean
makes the weights invariant to the feature scale. With t = lambda/2 * log(r / mean r), the
largest t of a window, T, is >= 0 (the largest r is at least the mean), so every
implementation uses the same ratios with weights ``alpha e^-T + e^(t - T)``, each term
bounded: a huge lambda (1e3 or more) cannot overflow, it only drives the pooling towards max
pooling (asym) or extremum pooling (sym, largest |x - guide|). float16/bfloat16 inputs are
computed in float32. Only the inputs are saved for backward, which recomputes each window.

``lip_mmdet::dpp2d`` and ``lip_mmdet::dpp_filter_guide`` (with their ``*_backward`` ops) are
``torch.library`` custom ops with the backends of :mod:`lip_mmdet.ops.dispatch`: fused C++
kernels on CPU (``csrc/dpp2d_cpu.cpp``), Triton on CUDA for ``dpp2d`` (the filter guide is a
strided depthwise convolution there, which cuDNN serves), PyTorch ops elsewhere. Each op
validates its own arguments (:func:`check_dpp_args`, :func:`check_filter_guide_args`) in its
implementation and its fake implementation, before any kernel runs.
"""
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import register_flop_formula

from .dispatch import check_backend, define_op, register_autograd, triton_launcher
from .native import KernelGeometry, pooling_cpu_library, run_kernel
from .pool_args import (
    IntPair,
    Pads,
    avg_pool_zero_padded,
    check_feature_map,
    check_map_and_window,
    check_output_like,
    check_param,
    check_window,
    compute_dtype,
    pad_map,
    window_views,
)

__all__ = ['dpp2d', 'dpp_box_guide', 'dpp_filter_guide', 'dpp_filter_box_init',
           'dpp_same_padding', 's3_sample', 'check_s3_args', 'DPP_REWARDS', 'DPP_EPS_SQUARED',
           'dpp_window_weights', 'check_dpp_args', 'check_filter_guide_args', 'check_reward',
           'filter_guide_multiply_adds']

DPP_REWARDS = ('sym', 'asym')
DPP_EPS_SQUARED = 1e-3


def _traced_sizes(padding) -> bool:
    """Whether the TorchScript tracer (``torch.onnx.export(..., dynamo=False)``) gives this
    padding as traced sizes (0-dim tensors: DPP's ``ceil_output`` padding is computed from
    the input size), which an op cannot take: such calls go through the traced forms of
    :mod:`lip_mmdet.ops.onnx_export`, which keep the padding's computation in the graph."""
    return torch.jit.is_tracing() and _onnx_export().has_traced_sizes(padding)


def _onnx_export():
    from . import onnx_export  # it imports this module: at call time
    return onnx_export


def check_reward(reward: str) -> None:
    """Raises ValueError unless ``reward`` is one of :data:`DPP_REWARDS`."""
    if reward not in DPP_REWARDS:
        raise ValueError(f'unknown reward {reward!r}, expected one of {DPP_REWARDS}')


def dpp_same_padding(kernel_size: IntPair) -> Pads:
    """(top, bottom, left, right) padding that keeps the size at stride 1 (extra at the end)."""
    kernel = check_window(kernel_size, 1, 0)[0]
    top, left = (kernel[0] - 1) // 2, (kernel[1] - 1) // 2
    return top, kernel[0] - 1 - top, left, kernel[1] - 1 - left


def _window_stack(t, kernel, stride, pads: Pads, out_size):
    """(K, N, C, Ho, Wo): every window offset's strided view of the zero-padded map."""
    return torch.stack(list(window_views(pad_map(t, pads), kernel, stride, out_size)))


def _window_stack_adjoint(stack, like, kernel, stride, pads: Pads):
    """Adjoint of :func:`_window_stack`: adds each window value back onto its pixel."""
    top, left = pads[0], pads[2]
    grad = pad_map(torch.zeros_like(like), pads)
    for view, values in zip(window_views(grad, kernel, stride, stack.shape[-2:]), stack):
        view.add_(values)
    height, width = like.shape[2:]
    return grad[:, :, top:top + height, left:left + width]


def _channel_param(value, name, channels):
    """:func:`dpp2d`'s per-channel parameter, (C,) or one value shared by all channels, as a
    (C,) view (the ops take exactly (C,))."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f'{name} must be a tensor of shape ({channels},), got '
                        f'{type(value).__name__}')
    if value.dim() > 1 or (value.numel() != 1 and value.numel() != channels):
        raise ValueError(f'{name} must have shape ({channels},) or (1,), got '
                         f'{tuple(value.shape)}')
    return value.reshape(-1).expand(channels)


def check_dpp_args(x, guide, alpha, lam, asym, kernel_size, stride, padding, backend,
                   grad=None):
    """Validates a dpp2d call (or, with ``grad``, its backward) from metadata only.

    The one check of the op, its fake implementation, its backward op, :func:`dpp2d` and the
    Triton launch wrappers, so each raises the same error for the same argument.

    Args:
        x: features (N, C, H, W), H and W > 0.
        guide: (N, C, Ho, Wo), the output size, with ``x``'s dtype and device.
        alpha: (C,) floating point, on ``x``'s device.
        lam: (C,) floating point, on ``x``'s device.
        asym: a bool (the 'asym' reward).
        kernel_size: int or (h, w), positive.
        stride: int or (h, w), positive.
        padding: int or (h, w), at most half the kernel, or (top, bottom, left, right), each
            less than the kernel (every window holds a real pixel).
        backend: one of ``POOLING_BACKENDS``, able to run on ``x``'s device.
        grad: the output gradient, like ``guide``, or None.

    Returns:
        ``((kernel, stride, pads), (Ho, Wo))``, pads as (top, bottom, left, right).
    """
    window, out_size = check_map_and_window(x, kernel_size, stride, padding)
    expected = (*x.shape[:2], *out_size)
    check_output_like(x, guide, 'guide', expected)
    check_param(x, alpha, 'alpha', x.shape[1:2])
    check_param(x, lam, 'lam', x.shape[1:2])
    if not isinstance(asym, bool):
        raise TypeError(f'asym must be a bool, got {asym!r}')
    check_backend(x, backend, window[0])
    if grad is not None:
        check_output_like(x, grad, 'grad', expected)
    return window, out_size


def _top_log_penalty(log_penalty, valid, half_lam):
    """(log mean, top) of each window from its taps' log-penalties: ``top`` is the largest
    (lambda >= 0) or smallest (lambda < 0) valid log-penalty, the tap with the largest t.

    The mean penalty lies between the smallest and the largest one; its rounded logarithm is
    kept there, so ``T = lambda / 2 * (top - log mean)`` is >= 0 in floating point too.
    """
    invalid = valid == 0
    highest = log_penalty.masked_fill(invalid, float('-inf')).amax(0)
    lowest = log_penalty.masked_fill(invalid, float('inf')).amin(0)
    return highest, lowest, torch.where(half_lam >= 0, highest, lowest)


class _DppWindows:
    """The PyTorch-ops form of dpp2d: every window offset stacked (K, N, C, Ho, Wo), weights
    ``alpha e^-T + e^(t - T)`` as in the kernels. Static shapes, no host synchronisation.

    ``t - T`` is formed as ``lambda / 2 * (log r - log r_top)``, not as the difference of two
    products: for a lambda near the dtype's largest value ``t`` and ``T`` overflow to inf and
    their difference would be NaN, while the product of a finite lambda and a non-positive
    log ratio is at worst -inf, whose exp is 0. The top tap's term is exactly 1.
    """

    def __init__(self, x, guide, alpha, lam, asym, kernel, stride, pads):
        out_size = guide.shape[2:]
        self.values = _window_stack(x, kernel, stride, pads, out_size)
        ones = x.new_ones((1, 1, *x.shape[2:]))
        self.valid = _window_stack(ones, kernel, stride, pads, out_size)
        self.count = self.valid.sum(0)
        deviation = self.values - guide
        self.deviation = deviation.clamp_min(0) if asym else deviation
        self.penalty = self.deviation.square() + DPP_EPS_SQUARED
        self.mean = (self.penalty * self.valid).sum(0) / self.count
        self.half_lam = lam.view(1, -1, 1, 1) * 0.5
        log_penalty = self.penalty.log()
        highest, lowest, top = _top_log_penalty(log_penalty, self.valid, self.half_lam)
        log_mean = torch.minimum(torch.maximum(self.mean.log(), lowest), highest)
        self.log_ratio = log_penalty - log_mean
        self.t_max = self.half_lam * (top - log_mean)
        shifted = (self.half_lam * (log_penalty - top)).masked_fill(self.valid == 0,
                                                                   float('-inf'))
        self.exp_t = torch.exp(shifted)
        self.alpha_part = alpha.view(1, -1, 1, 1) * torch.exp(-self.t_max)
        self.weight = (self.alpha_part + self.exp_t) * self.valid
        self.weight_sum = self.weight.sum(0)
        self.out = (self.weight * self.values).sum(0) / self.weight_sum

    def backward(self, grad, x, kernel, stride, pads):
        """Gradients (x, guide, alpha, lam) for the output gradient ``grad``."""
        scale = grad / self.weight_sum
        spread = self.values - self.out
        grad_t = scale * spread * self.exp_t  # zero at padding: exp_t is 0 there
        grad_t_sum = grad_t.sum(0)
        grad_alpha = (scale * torch.exp(-self.t_max) * (spread * self.valid).sum(0))
        grad_lam = 0.5 * (grad_t * self.log_ratio).sum(0)
        grad_penalty = self.half_lam * (grad_t / self.penalty
                                        - grad_t_sum / (self.count * self.mean))
        # d penalty / d deviation is 2 d: exactly 0 where d is 0 (asym below the guide) or the
        # tap is padding, even when grad_penalty overflows for an extreme lambda (0 * inf).
        grad_dev = torch.where((self.deviation != 0) & (self.valid != 0),
                               2 * self.deviation * grad_penalty, 0)
        grad_x = _window_stack_adjoint(scale * self.weight + grad_dev, x, kernel, stride, pads)
        return (grad_x, -grad_dev.sum(0), grad_alpha.sum((0, 2, 3)), grad_lam.sum((0, 2, 3)))


def _dpp_forward_kernel(x, guide, alpha, lam, asym, kernel, stride, pads, out_size):
    out = torch.empty_like(guide)
    run_kernel(pooling_cpu_library(), 'dpp2d_forward', (x, guide, alpha, lam, out),
               KernelGeometry.of(x.shape, out_size, kernel, stride, pads), int(asym))
    return out


def _dpp_backward_kernel(x, guide, alpha, lam, grad, asym, kernel, stride, pads, out_size):
    n, channels = x.shape[:2]
    grad_x, grad_guide = torch.empty_like(x), torch.empty_like(guide)
    plane_alpha = torch.empty(n * channels, dtype=torch.float64)
    plane_lam = torch.empty(n * channels, dtype=torch.float64)
    run_kernel(pooling_cpu_library(), 'dpp2d_backward',
               (x, guide, alpha, lam, grad, grad_x, grad_guide, plane_alpha, plane_lam),
               KernelGeometry.of(x.shape, out_size, kernel, stride, pads), int(asym))
    return (grad_x, grad_guide, plane_alpha.view(n, channels).sum(0),
            plane_lam.view(n, channels).sum(0))


def _dpp_torch_forward(x, guide, alpha, lam, asym, kernel, stride, pads, out_size):
    return _DppWindows(x, guide, alpha, lam, asym, kernel, stride, pads).out


def _dpp_torch_backward(x, guide, alpha, lam, grad, asym, kernel, stride, pads, out_size):
    windows = _DppWindows(x, guide, alpha, lam, asym, kernel, stride, pads)
    return windows.backward(grad, x, kernel, stride, pads)


def _check_dpp_backward_args(x, guide, alpha, lam, grad, asym, kernel, stride, pads, backend):
    return check_dpp_args(x, guide, alpha, lam, asym, kernel, stride, pads, backend, grad)


_WINDOW_SCHEMA = 'SymInt[] kernel, SymInt[] stride, SymInt[] pads, str backend'
_DPP_INPUTS = 'Tensor x, Tensor guide, Tensor alpha, Tensor lam'

_dpp2d_op = define_op(
    'dpp2d', f'({_DPP_INPUTS}, bool asym, {_WINDOW_SCHEMA}) -> Tensor', check_dpp_args,
    lambda args, out_size: ((args[1], args[1].shape), ),
    {'cpu_kernel': _dpp_forward_kernel, 'torch': _dpp_torch_forward,
     'triton': triton_launcher('launch_dpp2d_forward')})

_dpp2d_backward_op = define_op(
    'dpp2d_backward', f'({_DPP_INPUTS}, Tensor grad, bool asym, {_WINDOW_SCHEMA}) -> (Tensor, '
    'Tensor, Tensor, Tensor)', _check_dpp_backward_args,
    lambda args, out_size: tuple((t, t.shape) for t in args[:4]),
    {'cpu_kernel': _dpp_backward_kernel, 'torch': _dpp_torch_backward,
     'triton': triton_launcher('launch_dpp2d_backward')})

register_autograd(_dpp2d_op, _dpp2d_backward_op, num_saved=4, name='dpp2d')


def dpp2d(x: torch.Tensor, guide: torch.Tensor, alpha: torch.Tensor, lam: torch.Tensor,
          reward: str = 'asym', kernel_size: IntPair = 2, stride: IntPair = 2,
          padding=0, *, backend: str = 'auto') -> torch.Tensor:
    """Detail-preserving pooling with an explicit guide.

    Args:
        x: features (N, C, H, W).
        guide: the linearly downscaled reference (N, C, Ho, Wo), same dtype/device as ``x``
            (see :func:`dpp_box_guide`, :func:`dpp_filter_guide`).
        alpha: per-channel positive weight bias, shape (C,) or (1,).
        lam: per-channel positive reward exponent, shape (C,) or (1,).
        reward: 'sym' (rewards any deviation from the guide) or 'asym' (only values above it).
        kernel_size: window size, int or (h, w), as in ``F.avg_pool2d``.
        stride: window step, int or (h, w).
        padding: int or (h, w) as in ``F.avg_pool2d``, or (top, bottom, left, right).
            Padding pixels get no weight.
        backend: 'auto' (fused CPU kernel on CPU, Triton on CUDA, PyTorch ops otherwise),
            'cpu_kernel', 'triton' or 'torch' (see :mod:`lip_mmdet.ops.dispatch`).

    Returns:
        (N, C, Ho, Wo), Ho/Wo as ``F.avg_pool2d`` (floor mode), dtype of ``x``.
    """
    if _traced_sizes(padding):
        return _onnx_export().traced_dpp2d(x, guide, alpha, lam, reward, kernel_size, stride,
                                           padding, backend=backend)
    alpha, lam, asym, window = _dpp2d_args(x, guide, alpha, lam, reward, kernel_size, stride,
                                           padding, backend)
    return _dpp2d_op(x, guide, alpha, lam, asym, *window, backend)


def _dpp2d_args(x, guide, alpha, lam, reward, kernel_size, stride, padding, backend):
    """:func:`dpp2d`'s arguments checked and in the op's form: (alpha, lam as (C,), asym,
    (kernel, stride, pads))."""
    check_feature_map(x, 'x')
    check_reward(reward)
    alpha, lam = (_channel_param(t, name, x.shape[1]) for t, name in ((alpha, 'alpha'),
                                                                       (lam, 'lam')))
    asym = reward == 'asym'
    window, _ = check_dpp_args(x, guide, alpha, lam, asym, kernel_size, stride, padding,
                               backend)
    return alpha, lam, asym, window


def dpp_box_guide(x: torch.Tensor, kernel_size: IntPair = 2, stride: IntPair = 2,
                  padding=0, *, backend: str = 'auto') -> torch.Tensor:
    """Lite-DPP guide: the mean of each window, zero padding counted (as the official code).

    ``padding`` and ``backend`` as in :func:`dpp2d`; returns (N, C, Ho, Wo). For CPU tensors
    under 'auto'/'cpu_kernel', windows up to 3x3 use the filter guide op with box taps (its
    fused kernel beats ``F.avg_pool2d`` on CPU); otherwise ``F.avg_pool2d``.
    """
    if _traced_sizes(padding):
        return _onnx_export().traced_dpp_box_guide(x, kernel_size, stride, padding,
                                                   backend=backend)
    (kernel, step, pads), _ = check_map_and_window(x, kernel_size, stride, padding)
    check_backend(x, backend)
    if max(kernel) <= 3 and x.device.type == 'cpu' and backend in ('auto', 'cpu_kernel'):
        box = dpp_filter_box_init(kernel).to(x.dtype).expand(x.shape[1], 1, 3, 3)
        return dpp_filter_guide(x, box, None, kernel, step, pads, backend=backend)
    return avg_pool_zero_padded(x, kernel, step, pads)


def _filter_alignment(kernel: int) -> int:
    """Offset of the 3x3 filter's first tap before the window start (centres it)."""
    return (3 - kernel) // 2


def _filter_pads(x, kernel, stride, pads, out_size):
    """(top, bottom, left, right) padding of the 3x3 filter's input for the pooling output
    ``out_size``; negative pads crop rows/columns the filter never reads."""
    top = pads[0] + _filter_alignment(kernel[0])
    left = pads[2] + _filter_alignment(kernel[1])
    bottom = (out_size[0] - 1) * stride[0] + 3 - top - x.shape[2]
    right = (out_size[1] - 1) * stride[1] + 3 - left - x.shape[3]
    return top, bottom, left, right


def check_filter_guide_args(x, weight, bias, kernel_size, stride, padding, backend,
                            grad=None):
    """Validates a dpp_filter_guide call (or, with ``grad``, its backward) from metadata only:
    the one check of the op, its fake implementation, its backward op and
    :func:`dpp_filter_guide`.

    Args:
        x: features (N, C, H, W), H and W > 0.
        weight: (C, 1, 3, 3) floating point, on ``x``'s device.
        bias: (C,) floating point, on ``x``'s device.
        kernel_size: the pooling window, as :func:`check_dpp_args`.
        stride: the pooling window's step.
        padding: the pooling window's padding.
        backend: one of ``POOLING_BACKENDS``, able to run on ``x``'s device.
        grad: the output gradient (N, C, Ho, Wo) of ``x``'s dtype and device, or None.

    Returns:
        ``((kernel, stride, pads), (Ho, Wo))``, pads as (top, bottom, left, right).
    """
    window, out_size = check_map_and_window(x, kernel_size, stride, padding)
    channels = x.shape[1]
    check_param(x, weight, 'weight', (channels, 1, 3, 3))
    check_param(x, bias, 'bias', (channels, ))
    check_backend(x, backend)
    if grad is not None:
        check_output_like(x, grad, 'grad', (*x.shape[:2], *out_size))
    return window, out_size


def _filter_kernel_geometry(x, kernel, stride, pads, out_size) -> KernelGeometry:
    """The CPU kernel's geometry: the 3x3 filter as the window, its offsets as pad_top and
    pad_left."""
    return KernelGeometry.of(x.shape, out_size, (3, 3), stride,
                             _filter_pads(x, kernel, stride, pads, out_size))


def _filter_forward_kernel(x, weight, bias, kernel, stride, pads, out_size):
    out = x.new_empty((*x.shape[:2], *out_size))
    run_kernel(pooling_cpu_library(), 'dpp_filter_guide_forward', (x, weight, bias, out),
               _filter_kernel_geometry(x, kernel, stride, pads, out_size))
    return out


def _filter_backward_kernel(x, weight, bias, grad, kernel, stride, pads, out_size):
    n, channels = x.shape[:2]
    grad_x = torch.empty_like(x)
    plane_weight = torch.empty(n * channels, 9, dtype=torch.float64)
    plane_bias = torch.empty(n * channels, dtype=torch.float64)
    run_kernel(pooling_cpu_library(), 'dpp_filter_guide_backward',
               (x, weight, grad, grad_x, plane_weight, plane_bias),
               _filter_kernel_geometry(x, kernel, stride, pads, out_size))
    return (grad_x, plane_weight.view(n, channels, 1, 3, 3).sum(0),
            plane_bias.view(n, channels).sum(0))


def _filter_torch_forward(x, weight, bias, kernel, stride, pads, out_size):
    filter_pads = _filter_pads(x, kernel, stride, pads, out_size)
    return F.conv2d(pad_map(x, filter_pads), weight, bias, stride=stride, groups=x.shape[1])


def _filter_torch_backward(x, weight, bias, grad, kernel, stride, pads, out_size):
    channels = x.shape[1]
    top, bottom, left, right = _filter_pads(x, kernel, stride, pads, out_size)
    grad_padded, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
        grad, pad_map(x, (top, bottom, left, right)), weight, [channels], list(stride),
        [0, 0], [1, 1], False, [0, 0], channels, [True, True, True])
    return F.pad(grad_padded, (-left, -right, -top, -bottom)), grad_weight, grad_bias


def _check_filter_backward_args(x, weight, bias, grad, kernel, stride, pads, backend):
    return check_filter_guide_args(x, weight, bias, kernel, stride, pads, backend, grad)


# No Triton kernel: on CUDA the guide is a strided depthwise convolution, which cuDNN serves.
_filter_guide_op = define_op(
    'dpp_filter_guide', f'(Tensor x, Tensor weight, Tensor bias, {_WINDOW_SCHEMA}) -> Tensor',
    check_filter_guide_args,
    lambda args, out_size: ((args[0], (*args[0].shape[:2], *out_size)), ),
    {'cpu_kernel': _filter_forward_kernel, 'torch': _filter_torch_forward})

_filter_guide_backward_op = define_op(
    'dpp_filter_guide_backward', f'(Tensor x, Tensor weight, Tensor bias, Tensor grad, '
    f'{_WINDOW_SCHEMA}) -> (Tensor, Tensor, Tensor)', _check_filter_backward_args,
    lambda args, out_size: tuple((t, t.shape) for t in args[:3]),
    {'cpu_kernel': _filter_backward_kernel, 'torch': _filter_torch_backward})

register_autograd(_filter_guide_op, _filter_guide_backward_op, num_saved=3,
                  name='dpp_filter_guide')


def filter_guide_multiply_adds(out_shape) -> int:
    """Multiply-adds of one :func:`dpp_filter_guide` call with output shape ``out_shape``
    (N, C, Ho, Wo): one 3x3 filter per output pixel."""
    return 9 * math.prod(out_shape)


# FlopCounterMode counts the guide as the depthwise 3x3 convolution it is (2 FLOPs per
# multiply-add, torch's convention); backward computes the input and the weight gradients.
@register_flop_formula(torch.ops.lip_mmdet.dpp_filter_guide)
def _filter_guide_flops(x_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * filter_guide_multiply_adds(out_shape)


@register_flop_formula(torch.ops.lip_mmdet.dpp_filter_guide_backward)
def _filter_guide_backward_flops(x_shape, weight_shape, bias_shape, grad_shape, *args,
                                 **kwargs) -> int:
    return 2 * 2 * filter_guide_multiply_adds(grad_shape)


def dpp_filter_guide(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                     kernel_size: IntPair = 2, stride: IntPair = 2, padding=0, *,
                     backend: str = 'auto') -> torch.Tensor:
    """Full-DPP guide: a per-channel 3x3 filter (+ bias) placed on each pooling window.

    The filter's taps are aligned with the window (for a 2-wide window the window is its
    first two taps, for 3 all three, for wider windows its central three) and evaluated once
    per output pixel (a stride-``stride`` depthwise convolution over the zero-padded input).

    Args:
        x: (N, C, H, W).
        weight: (C, 1, 3, 3) filter taps.
        bias: (C,) or None (no bias).
        kernel_size: the pooling window's size, as in :func:`dpp2d`.
        stride: the pooling window's step.
        padding: the pooling window's padding, as in :func:`dpp2d`.
        backend: 'auto' or 'cpu_kernel' use the fused CPU kernel for CPU tensors; every
            other case is a depthwise ``F.conv2d``.

    Returns:
        (N, C, Ho, Wo).
    """
    if _traced_sizes(padding):
        return _onnx_export().traced_dpp_filter_guide(x, weight, bias, kernel_size, stride,
                                                      padding, backend=backend)
    check_feature_map(x, 'x')
    if bias is None and isinstance(weight, torch.Tensor):
        bias = weight.new_zeros(x.shape[1])
    window, _ = check_filter_guide_args(x, weight, bias, kernel_size, stride, padding,
                                        backend)
    return _filter_guide_op(x, weight, bias, *window, backend)


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


def _uniform(*shape, generator: Optional[torch.Generator]) -> torch.Tensor:
    # torch.rand's generator overload takes no symbolic sizes (torch.compile, dynamic shapes).
    return torch.rand(shape) if generator is None else torch.rand(shape, generator=generator)


def _s3_axis_indices(size: int, stride: int, grid_size: int,
                     generator: Optional[torch.Generator]) -> torch.Tensor:
    """Sorted random picks: ceil(len / stride) distinct positions from every grid cell."""
    full_cells, tail = size // grid_size, size % grid_size  # divmod: not for symbolic sizes
    picks = []
    if full_cells:
        keys = _uniform(full_cells, grid_size, generator=generator)
        chosen = keys.argsort(dim=1)[:, :grid_size // stride].sort(dim=1).values
        picks.append((chosen + torch.arange(full_cells)[:, None] * grid_size).flatten())
    if tail:
        keys = _uniform(tail, generator=generator)
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

    Computed by ``dpp2d``'s PyTorch form (``_DppWindows``), so ``(weights * windows).sum(2)``
    is ``dpp2d``'s output. Arguments as :func:`dpp2d`; no gradient is kept.

    Returns:
        (N, C, Kh * Kw, Ho, Wo), window taps in row-major order; each window's weights sum
        to 1 and padding taps are 0. Compute dtype (float32 for half inputs).
    """
    alpha, lam, asym, window = _dpp2d_args(x, guide, alpha, lam, reward, kernel_size, stride,
                                           padding, 'torch')
    dtype = compute_dtype(x.dtype)
    with torch.no_grad():
        windows = _DppWindows(*(t.to(dtype) for t in (x, guide, alpha, lam)), asym, *window)
        return (windows.weight / windows.weight_sum).permute(1, 2, 0, 3, 4)
