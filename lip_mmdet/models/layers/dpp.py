"""Detail-Preserving Pooling layers: Lite-DPP, Full-DPP and S3DPP (Saeedan et al., CVPR 2018).

Per-channel parameters (official parametrisation, both raw values initialised to 0)::

    alpha  = exp(min(log_alpha, 10))   # weight bias, > 0; the clamp stops its gradient above 10
    lambda = exp(log_lambda)           # reward exponent, > 0

At initialisation alpha = lambda = 1. The raw parameters are named ``log_alpha`` and
``log_lambda`` so optimiser configs can exempt them from weight decay, e.g.
``paramwise_cfg=dict(custom_keys={'log_alpha': dict(decay_mult=0.), 'log_lambda':
dict(decay_mult=0.)})``.
"""
from typing import Optional, Union

import torch
from torch import nn

from lip_mmdet.ops import (
    check_reward,
    check_s3_args,
    dpp2d,
    dpp_box_guide,
    dpp_filter_box_init,
    dpp_filter_guide,
    dpp_same_padding,
    dpp_window_weights,
    s3_sample,
)
from lip_mmdet.ops.pool_args import IntPair, check_window

from .pool_weights import PoolingWeightsMixin

__all__ = ['LiteDPP', 'FullDPP', 'S3DPP', 'LOG_ALPHA_MAX']

LOG_ALPHA_MAX = 10.0


class _DPPBase(PoolingWeightsMixin, nn.Module):
    """Shared parameters and checks; subclasses define ``guide(x)``.

    Args:
        channels (int): C, the channels of the input.
        reward (str): ``'asym'`` or ``'sym'`` (see :class:`LiteDPP`).
        kernel_size (int | tuple[int, int]): pooling window.
        stride (int | tuple[int, int]): window step.
        padding (int | tuple[int, int] | str): zero padding as in ``F.avg_pool2d``, or
            ``'same'`` (stride 1 only: output size = input size, the extra padding of even
            windows at the bottom/right).
        ceil_output (bool): pad the bottom/right further where needed so that the output has
            ``ceil(H / stride)`` rows (columns), the size a strided 3x3 convolution with
            padding 1 gives; a window there pools the real pixels it holds (one pixel pools
            to itself). Default: False.

    ``window_weights(x)`` returns the normalised weights the layer pools with, (N, C,
    Kh * Kw, Ho, Wo), and ``importance(x)`` the per-pixel importance relative to average
    pooling, (N, C, H, W) (see ``pool_weights.py``).
    """
    pool_kind = 'dpp'

    def __init__(self, channels: int, reward: str, kernel_size: IntPair, stride: IntPair,
                 padding: Union[IntPair, str], ceil_output: bool = False):
        super().__init__()
        if not isinstance(channels, int) or isinstance(channels, bool) or channels <= 0:
            raise ValueError(f'channels must be a positive int, got {channels!r}')
        check_reward(reward)
        if padding == 'same':
            if check_window(kernel_size, stride, 0)[1] != (1, 1):
                raise ValueError(f"padding='same' needs stride 1, got stride {stride!r}")
            padding = dpp_same_padding(kernel_size)
        kernel, step, pads = check_window(kernel_size, stride, padding)
        self._window = dict(kernel_size=kernel, stride=step, padding=pads)
        self.channels, self.reward = channels, reward
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.ceil_output = ceil_output
        self.log_alpha = nn.Parameter(torch.zeros(channels))
        self.log_lambda = nn.Parameter(torch.zeros(channels))

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.clamp(max=LOG_ALPHA_MAX).exp()

    @property
    def lam(self) -> torch.Tensor:
        return self.log_lambda.exp()

    def init_weights(self) -> None:
        nn.init.zeros_(self.log_alpha)
        nn.init.zeros_(self.log_lambda)

    def guide(self, x: torch.Tensor, padding) -> torch.Tensor:
        raise NotImplementedError

    def padding_for(self, height: int, width: int):
        """The (top, bottom, left, right) padding used on an (H, W) map: ``padding``'s, or
        with ``ceil_output`` the padding that gives ceil(H / stride) x ceil(W / stride)."""
        pads = list(self._window['padding'])
        if not self.ceil_output:
            return tuple(pads)
        kernel, stride = self._window['kernel_size'], self._window['stride']
        for axis, size in enumerate((height, width)):
            # ceil(size / stride) with non-negative operands: the dynamo ONNX exporter
            # translates a floor division to Div, which truncates a negative quotient
            wanted = (size + stride[axis] - 1) // stride[axis]
            covered = size + pads[2 * axis] + pads[2 * axis + 1]
            pads[2 * axis + 1] += max((wanted - 1) * stride[axis] + kernel[axis] - covered, 0)
        return tuple(pads)

    @property
    def pool_window(self) -> dict:
        """The configured window ((h, w) pairs, padding (top, bottom, left, right));
        :meth:`window_for` adds ``ceil_output``'s padding."""
        return dict(self._window)

    def window_for(self, x: torch.Tensor) -> dict:
        return dict(self._window, padding=self.padding_for(x.shape[2], x.shape[3]))

    def pool_inputs(self, x: torch.Tensor) -> tuple:
        """(guide, alpha, lambda, padding) that ``forward`` pools ``x`` (N, C, H, W) with."""
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f'{type(self).__name__} expects (N, {self.channels}, H, W), got '
                             f'{tuple(x.shape)}')
        padding = self.padding_for(x.shape[2], x.shape[3])
        return self.guide(x, padding), self.alpha, self.lam, padding

    def window_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised window weights: (N, C, H, W) -> (N, C, Kh * Kw, Ho, Wo)."""
        guide, alpha, lam, padding = self.pool_inputs(x)
        return dpp_window_weights(x, guide, alpha, lam, self.reward, self.kernel_size,
                                  self.stride, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, C, Ho, Wo), sized as ``F.avg_pool2d`` with the same window, or
        ceil(H / stride) x ceil(W / stride) with ``ceil_output``."""
        guide, alpha, lam, padding = self.pool_inputs(x)
        return dpp2d(x, guide, alpha, lam, self.reward, self.kernel_size, self.stride, padding)

    def extra_repr(self) -> str:
        return (f'{self.channels}, reward={self.reward!r}, kernel_size={self.kernel_size}, '
                f'stride={self.stride}, padding={self.padding}, ceil_output={self.ceil_output}')


class LiteDPP(_DPPBase):
    """Lite-DPP: the guide is the window mean (box filter, zero padding counted).

    2 parameters per channel (``log_alpha``, ``log_lambda``).

    Args:
        channels (int): C, the channels of the input.
        reward (str): ``'asym'`` (rewards values above the guide; large lambda -> max
            pooling) or ``'sym'`` (any deviation; large lambda -> extremum pooling).
        kernel_size (int | tuple[int, int]): window; 3 with stride 2 and padding 1 replaces
            a strided conv or max-pool. Default: 2.
        stride (int | tuple[int, int]): window step. Default: 2.
        padding (int | tuple[int, int] | str): zero padding, or ``'same'`` with stride 1.
            Default: 0.
        ceil_output (bool): output ceil(H / stride) x ceil(W / stride) at any input size
            (see ``padding_for``); the box guide counts the extra padding as zeros, as it
            does the symmetric padding. Default: False.

    Shapes: (N, C, H, W) -> (N, C, Ho, Wo), sized as ``F.avg_pool2d`` with the same window
        (ceil(H / stride) x ceil(W / stride) with ``ceil_output``).
    """

    def __init__(self, channels: int, reward: str = 'asym', kernel_size: IntPair = 2,
                 stride: IntPair = 2, padding: Union[IntPair, str] = 0,
                 ceil_output: bool = False):
        super().__init__(channels, reward, kernel_size, stride, padding, ceil_output)

    def guide(self, x: torch.Tensor, padding) -> torch.Tensor:
        return dpp_box_guide(x, self.kernel_size, self.stride, padding)


class FullDPP(_DPPBase):
    """Full-DPP: the guide is a learned per-channel 3x3 filter with bias (10 parameters per
    channel, ``guide_weight`` (C, 1, 3, 3) and ``guide_bias`` (C,)), evaluated once per window
    and aligned with it; initialised to the box filter, so it starts as :class:`LiteDPP`
    (exactly for windows up to 3x3). Arguments as :class:`LiteDPP`.
    """

    def __init__(self, channels: int, reward: str = 'asym', kernel_size: IntPair = 2,
                 stride: IntPair = 2, padding: Union[IntPair, str] = 0,
                 ceil_output: bool = False):
        super().__init__(channels, reward, kernel_size, stride, padding, ceil_output)
        self.guide_weight = nn.Parameter(torch.empty(channels, 1, 3, 3))
        self.guide_bias = nn.Parameter(torch.empty(channels))
        self.init_weights()

    def init_weights(self) -> None:
        super().init_weights()
        with torch.no_grad():
            self.guide_weight.copy_(dpp_filter_box_init(self.kernel_size).expand_as(
                self.guide_weight))
            self.guide_bias.zero_()

    def guide(self, x: torch.Tensor, padding) -> torch.Tensor:
        return dpp_filter_guide(x, self.guide_weight, self.guide_bias, self.kernel_size,
                                self.stride, padding)


class S3DPP(nn.Module):
    """S3DPP: stride-1 DPP (output size = input size) followed by S3Pool sampling.

    Training: rows and columns are split into cells of ``grid_size``; each cell keeps
    ``grid_size / stride`` of its rows (columns) drawn at random (:func:`s3_sample`).
    Evaluation: deterministic average pooling with window and stride ``stride`` (the
    expectation of the random row/column choice), ceil mode. Both give
    (N, C, ceil(H / stride), ceil(W / stride)).

    Args:
        channels (int): C, the channels of the input.
        reward (str): ``'sym'`` or ``'asym'`` (see :class:`LiteDPP`). Default: ``'sym'``.
        guide (str): ``'lite'`` (box filter) or ``'full'`` (learned 3x3). Default: ``'lite'``.
        kernel_size (int | tuple[int, int]): DPP window, run at stride 1 with ``'same'``
            padding. Default: 2.
        grid_size (int): S3Pool cell size, a multiple of ``stride``. Default: 2.
        stride (int): downscale factor. Default: 2.
        seed (int, optional): if given, the sampling uses its own ``torch.Generator``
            seeded with it; otherwise the global CPU RNG (reproducible under
            ``torch.manual_seed``).

    Shapes: (N, C, H, W) -> (N, C, ceil(H / stride), ceil(W / stride)).

    The DPP parameters live in ``dpp`` (``dpp.log_alpha``, ``dpp.log_lambda`` ...).
    """

    def __init__(self, channels: int, reward: str = 'sym', guide: str = 'lite',
                 kernel_size: IntPair = 2, grid_size: int = 2, stride: int = 2,
                 seed: Optional[int] = None):
        super().__init__()
        pools = {'lite': LiteDPP, 'full': FullDPP}
        if guide not in pools:
            raise ValueError(f'unknown guide {guide!r}, expected one of {tuple(pools)}')
        check_s3_args(stride, grid_size)
        self.dpp = pools[guide](channels, reward, kernel_size, stride=1, padding='same')
        self.grid_size, self.stride, self.seed = grid_size, stride, seed
        self.generator = None if seed is None else torch.Generator().manual_seed(seed)

    def init_weights(self) -> None:
        self.dpp.init_weights()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, C, ceil(H / stride), ceil(W / stride))."""
        pooled = self.dpp(x)
        if self.training:
            return s3_sample(pooled, self.stride, self.grid_size, self.generator)
        return nn.functional.avg_pool2d(pooled, self.stride, self.stride, ceil_mode=True)

    def extra_repr(self) -> str:
        return f'grid_size={self.grid_size}, stride={self.stride}, seed={self.seed}'
