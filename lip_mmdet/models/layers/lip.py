"""LIP logit modules of the reference LIP-ResNet (names match the official checkpoints).

Every LIP layer pools with ``lip2d`` (3x3 window, stride 2, padding 1): (N, C, H, W) ->
(N, C, ceil(H/2), ceil(W/2)). At initialisation each one is exactly 3x3 average pooling over
the valid pixels: the logits are the constant 6 (the gate's value at 0), in one of two ways
(``logit_init``, see :data:`LIP_LOGIT_INITS`). ``init_weights()`` restores the chosen
initialisation (a backbone's Kaiming ``init_cfg`` would otherwise overwrite it); loaded
weights override either.

On a 1x1 map a LIP window holds one real pixel, so the pooled value is that pixel whatever
the logits are. The logit norms must still run there (torch's InstanceNorm refuses a single
pixel): they use :class:`InstanceNorm2dAnySize`, whose output on one pixel is the limit of the
normalisation, its bias.

Only :class:`SimplifiedLIP` stands on its own (in place of any 3x3/s2/p1 pooling; with
mmdet installed it is registered in :data:`lip_mmdet.registry.MODELS`).
:class:`BottleneckShared` and :class:`BottleneckLIP` work as a pair inside a LIP bottleneck
and are not registered.

``window_weights(...)`` (same arguments as ``forward``) returns the normalised weights each
layer pools with, (N, C, 9, ceil(H/2), ceil(W/2)), and ``importance(...)`` the per-pixel
importance relative to average pooling, (N, C, H, W) (see ``pool_weights.py``).
"""
from collections import OrderedDict
from typing import Callable, Union

import torch
from torch import nn

from lip_mmdet.ops import lip2d, lip_window_weights

from .pool_weights import PoolingWeightsMixin

__all__ = ['SoftGate', 'SimplifiedLIP', 'BottleneckShared', 'BottleneckLIP',
           'BOTTLENECK_WIDTH', 'LIP_NORM_CFG', 'InstanceNorm2dAnySize', 'LIP_WINDOW',
           'LIP_LOGIT_INITS', 'check_logit_init']

# Width of the shared logit trunk of the official LIP-ResNet-50/101/152.
BOTTLENECK_WIDTH = 128
# Norm of the official logit modules: InstanceNorm with a learned affine.
LIP_NORM_CFG = dict(type='IN', affine=True)
# A norm: an mmcv norm config, or a callable building the norm for a channel count.
NormSpec = Union[dict, Callable[[int], nn.Module]]

#: How the last conv and norm of a logit branch start; both give constant logits (exact 3x3
#: average pooling), they differ in how fast the pooling can leave it.
#:
#: * ``'reference'``: zero conv, identity norm (scale 1, shift 0), what the official weights
#:   were trained from. The norm divides out the conv's scale, so the first optimiser step,
#:   however small, turns the constant logits into unit-variance ones: every window narrows
#:   at once (LIP-ResNet-18's effective windows went from 9 to 4.0-5.6 after one AdamW step
#:   at lr 1e-3 on a random regression target).
#: * ``'gradual'``: a Kaiming-random conv and the norm's scale at 0 (shift 0). The logits
#:   are ``gate(shift + scale * n)`` with ``n`` the normalised conv output (unit variance):
#:   constant while the scale is 0, and they spread only as fast as the scale grows, by about
#:   the learning rate per step under Adam-type optimisers (the conv receives gradient once
#:   the scale is nonzero, as a residual branch whose last norm starts at 0). The shift moves
#:   a channel's logits together, which leaves its pooling unchanged. After the same AdamW
#:   step LIP-ResNet-18's windows were still 9.000. Needs a norm with a learned scale
#:   (``affine``).
LIP_LOGIT_INITS = ('reference', 'gradual')


def check_logit_init(logit_init: str) -> None:
    """Raises ValueError unless ``logit_init`` is one of :data:`LIP_LOGIT_INITS`."""
    if logit_init not in LIP_LOGIT_INITS:
        raise ValueError(f'unknown logit_init {logit_init!r}, expected one of '
                         f'{LIP_LOGIT_INITS}')


class InstanceNorm2dAnySize(nn.InstanceNorm2d):
    """``nn.InstanceNorm2d`` that also accepts a map of a single pixel per channel.

    There ``x - mean(x)`` is 0, so the normalised value is 0 and the output is the affine bias
    (0 without affine), with zero gradient to ``x`` and ``weight``; running statistics are not
    updated from one pixel. Other sizes are ``nn.InstanceNorm2d`` unchanged (same state dict).
    Shapes: (N, C, H, W) -> (N, C, H, W).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        single_pixel = x.dim() == 4 and x.shape[2] * x.shape[3] == 1
        if not single_pixel or (self.track_running_stats and not self.training):
            return super().forward(x)
        centred = x - x  # keeps the graph: every parameter gets a (zero) gradient
        if not self.affine:
            return centred
        return centred * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
# The window every LIP layer pools with (``lip2d``'s defaults).
LIP_WINDOW = dict(kernel_size=(3, 3), stride=(2, 2), padding=(1, 1))


def _norm(norm_cfg: NormSpec, channels: int) -> nn.Module:
    """The norm of ``channels`` channels ``norm_cfg`` describes.

    A callable is called with the channel count; an InstanceNorm config (``type='IN'`` or
    ``'IN2d'``, mmcv's names, the default) is built here with torch alone; any other config
    dict by mmcv's ``build_norm_layer``, so BN, SyncBN, GN... work as in mmdet's backbones.
    An InstanceNorm becomes :class:`InstanceNorm2dAnySize` (same arguments and state).
    """
    if callable(norm_cfg):
        norm = norm_cfg(channels)
    else:
        cfg = dict(LIP_NORM_CFG if norm_cfg is None else norm_cfg)
        if cfg.get('type') in ('IN', 'IN2d'):
            requires_grad = cfg.pop('requires_grad', True)
            cfg.pop('type')
            norm = nn.InstanceNorm2d(channels, **cfg)
            for param in norm.parameters():
                param.requires_grad = requires_grad
        else:
            try:
                from mmcv.cnn import build_norm_layer
            except ImportError as error:
                raise ImportError(f'norm_cfg {cfg!r} needs mmcv (pip install mmcv); without '
                                  'it, pass a callable that builds the norm from the channel '
                                  'count') from error
            norm = build_norm_layer(cfg, channels)[1]
    if type(norm) is nn.InstanceNorm2d:
        norm.__class__ = InstanceNorm2dAnySize  # same arguments and state, any map size
    return norm


def _reset_norm(norm: nn.Module) -> None:
    """The identity map of a constant: weight 1, bias 0, fresh running statistics."""
    if getattr(norm, 'weight', None) is not None:
        nn.init.ones_(norm.weight)
    if getattr(norm, 'bias', None) is not None:
        nn.init.zeros_(norm.bias)
    if hasattr(norm, 'reset_running_stats') and getattr(norm, 'track_running_stats', False):
        norm.reset_running_stats()


def _pool(x: torch.Tensor, logit: torch.Tensor) -> torch.Tensor:
    # Under mixed precision the logit branch can end in float32 (e.g. CUDA autocast keeps
    # GroupNorm in float32) while x is half; lip2d computes in float32 either way.
    return lip2d(x, logit.to(x.dtype))


class SoftGate(nn.Module):
    """``sigmoid(z) * 12``: logits in (0, 12), so LIP weights exp(logit) lie in (1, e^12).

    Shapes: any -> the same shape.
    """

    COEFF = 12.0

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(z) * self.COEFF


def _gated_logits(in_channels: int, channels: int, kernel_size: int, norm_cfg,
                  logit_init: str) -> nn.Sequential:
    """``Sequential(conv, bn, gate)``: conv without bias (padding keeps the size), norm, gate;
    checks that the norm suits ``logit_init``."""
    check_logit_init(logit_init)
    logits = nn.Sequential(OrderedDict(
        conv=nn.Conv2d(in_channels, channels, kernel_size, padding=kernel_size // 2,
                       bias=False),
        bn=_norm(norm_cfg, channels),
        gate=SoftGate()))
    if logit_init == 'gradual' and getattr(logits.bn, 'weight', None) is None:
        raise ValueError("logit_init='gradual' needs a norm with a learned scale (affine), "
                         f'got {logits.bn}')
    return logits


def _reset_gated_logits(logits: nn.Sequential, logit_init: str) -> None:
    """The logits start as the constant 6 (average pooling), as ``logit_init`` says (see
    :data:`LIP_LOGIT_INITS`)."""
    _reset_norm(logits.bn)
    if logit_init == 'reference':
        nn.init.zeros_(logits.conv.weight)
    else:
        nn.init.kaiming_normal_(logits.conv.weight, mode='fan_out', nonlinearity='relu')
        nn.init.zeros_(logits.bn.weight)


class SimplifiedLIP(PoolingWeightsMixin, nn.Module):
    """LIP whose logits come from its own input (stands where the stem max-pool stood).

    ``logit = gate(norm(conv3x3(x)))``, conv C->C without bias, zero-initialised.

    Args:
        channels (int): C, the channels of the input.
        norm_cfg (dict | callable): the norm, an mmcv norm config or ``f(channels)`` (see
            ``_norm``); the child keeps the name ``bn`` (checkpoint keys
            ``logit.conv.weight``, ``logit.bn.weight``, ``logit.bn.bias``).
        logit_init (str): ``'reference'`` (default) or ``'gradual'``, see
            :data:`LIP_LOGIT_INITS`.

    Shapes: (N, C, H, W) -> (N, C, ceil(H/2), ceil(W/2)).
    """

    pool_kind = 'lip'
    pool_window = LIP_WINDOW

    def __init__(self, channels: int, norm_cfg: NormSpec = LIP_NORM_CFG,
                 logit_init: str = 'reference'):
        super().__init__()
        self.logit_init = logit_init
        self.logit = _gated_logits(channels, channels, 3, norm_cfg, logit_init)
        self.init_weights()

    def init_weights(self) -> None:
        _reset_gated_logits(self.logit, self.logit_init)

    def pool_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The logits ``forward`` pools with: (N, C, H, W) -> (N, C, H, W)."""
        return self.logit(x)

    def window_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised window weights: (N, C, H, W) -> (N, C, 9, ceil(H/2), ceil(W/2))."""
        return lip_window_weights(self.pool_logits(x), **self.pool_window)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, C, ceil(H/2), ceil(W/2))."""
        return _pool(x, self.pool_logits(x))


class BottleneckShared(nn.Module):
    """Shared logit trunk of a stride-2 LIP bottleneck: 1x1 conv, norm, ReLU, 3x3 conv, norm,
    ReLU (Kaiming-initialised convs without bias).

    Args:
        in_channels (int): channels of the block input.
        width (int): trunk channels (:data:`BOTTLENECK_WIDTH` in the official nets).
        norm_cfg (dict | callable): the norms, as :class:`SimplifiedLIP` (children ``bn1``,
            ``bn2``).

    Shapes: (N, in_channels, H, W) -> (N, width, H, W).
    """

    def __init__(self, in_channels: int, width: int = BOTTLENECK_WIDTH,
                 norm_cfg: NormSpec = LIP_NORM_CFG):
        super().__init__()
        # Out-of-place ReLUs: an in-place ReLU after InstanceNorm makes Inductor fail with
        # dynamic shapes in training ("cannot determine truth value of Relational").
        self.logit = nn.Sequential(OrderedDict(
            conv1=nn.Conv2d(in_channels, width, 1, bias=False),
            bn1=_norm(norm_cfg, width),
            relu1=nn.ReLU(),
            conv2=nn.Conv2d(width, width, 3, padding=1, bias=False),
            bn2=_norm(norm_cfg, width),
            relu2=nn.ReLU()))
        self.init_weights()

    def init_weights(self) -> None:
        for conv in (self.logit.conv1, self.logit.conv2):
            nn.init.kaiming_normal_(conv.weight, mode='fan_out', nonlinearity='relu')
        for norm in (self.logit.bn1, self.logit.bn2):
            _reset_norm(norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit(x)


class BottleneckLIP(PoolingWeightsMixin, nn.Module):
    """LIP whose logits come from a shared trunk (:class:`BottleneckShared`).

    ``logit = gate(norm(conv1x1(shared)))``, conv width->C without bias, zero-initialised.

    Args:
        channels (int): C, the channels of the pooled input.
        width (int): channels of ``shared``, the trunk output.
        norm_cfg (dict | callable): the norm, as :class:`SimplifiedLIP` (children of
            ``postprocessing``: ``conv``, ``bn``, ``gate``).
        logit_init (str): ``'reference'`` (default) or ``'gradual'``, see
            :data:`LIP_LOGIT_INITS`.

    Shapes: x (N, C, H, W), shared (N, width, H, W) -> (N, C, ceil(H/2), ceil(W/2)).
    """

    pool_kind = 'lip'
    pool_window = LIP_WINDOW

    def __init__(self, channels: int, width: int = BOTTLENECK_WIDTH,
                 norm_cfg: NormSpec = LIP_NORM_CFG, logit_init: str = 'reference'):
        super().__init__()
        self.width = width
        self.logit_init = logit_init
        self.postprocessing = _gated_logits(width, channels, 1, norm_cfg, logit_init)
        self.init_weights()

    def init_weights(self) -> None:
        _reset_gated_logits(self.postprocessing, self.logit_init)

    def pool_logits(self, shared: torch.Tensor) -> torch.Tensor:
        """The logits ``forward`` pools with: (N, width, H, W) -> (N, C, H, W)."""
        if shared.dim() != 4 or shared.shape[1] != self.width:
            raise ValueError(f'shared must have shape (N, {self.width}, H, W), got '
                             f'{tuple(shared.shape)}')
        return self.postprocessing(shared)

    def window_weights(self, x: torch.Tensor, shared: torch.Tensor) -> torch.Tensor:
        """Normalised window weights (N, C, 9, ceil(H/2), ceil(W/2)); arguments as
        ``forward`` (the weights depend on ``shared`` only)."""
        return lip_window_weights(self.pool_logits(shared), **self.pool_window)

    def forward(self, x: torch.Tensor, shared: torch.Tensor) -> torch.Tensor:
        return _pool(x, self.pool_logits(shared))
