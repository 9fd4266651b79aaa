"""LIP-ResNet (Gao et al., ICCV 2019) as an mmdet backbone.

Depth 50/101/152 follow the official wiring and key names, so the official checkpoints load
after renaming only ``layer1.0.downsample.{conv,bn}`` (see ``convert.py``). Depth 18/34 carry
the same idea on BasicBlocks with a narrower logit trunk (see docs/backbones.md).
"""
from typing import Optional

from mmcv.cnn import build_conv_layer
from mmdet.models.backbones.resnet import Bottleneck
from mmdet.registry import MODELS
from mmengine.model import BaseModule, Sequential
from torch import Tensor, nn

from ..layers import (
    BOTTLENECK_WIDTH,
    LIP_NORM_CFG,
    BottleneckLIP,
    BottleneckShared,
    SimplifiedLIP,
)
from ..layers.lip import check_logit_init
from .pooled_resnet import (
    PooledBasicBlock,
    PooledBottleneck,
    PooledResNet,
    PooledShortcut,
    check_resnet_args,
)

__all__ = ['LIPResNet', 'LIPBottleneck', 'BottleneckLIPPool']


class BottleneckLIPPool(BaseModule):
    """LIP whose logits come from its own bottleneck trunk (no sharing).

    ``lip(x, bottleneck_shared(x))``. With the zero-initialised ``lip.postprocessing.conv``
    it starts as 3x3 average pooling.

    Args:
        channels (int): C, the channels of the input.
        width (int): channels of the logit trunk.
        norm_cfg (dict): norm of the logit modules. Default: affine InstanceNorm.
        logit_init (str): how the logits start, see :data:`LIP_LOGIT_INITS`.

    Shapes: (N, C, H, W) -> (N, C, ceil(H/2), ceil(W/2)).
    """

    def __init__(self, channels: int, width: int, norm_cfg: dict = LIP_NORM_CFG,
                 logit_init: str = 'reference'):
        super().__init__()
        self.bottleneck_shared = BottleneckShared(channels, width=width, norm_cfg=norm_cfg)
        self.lip = BottleneckLIP(channels, width=width, norm_cfg=norm_cfg,
                                 logit_init=logit_init)

    def forward(self, x):
        return self.lip(x, self.bottleneck_shared(x))


class LIPBottleneck(PooledBottleneck):
    """Stride-2 Bottleneck of LIP-ResNet, official wiring and key names.

    ``bottleneck_shared`` (the logit trunk) runs once on the block input; ``conv2`` =
    [BottleneckLIP(planes), 1x1 conv] replaces the strided 3x3 conv (with ``dcn`` the second
    element is the 3x3 deformable conv at stride 1); the shortcut is
    ``downsample.{lip,conv,bn}``. Both LIPs take their logits from the trunk.

    Args:
        inplanes (int): channels of the block input.
        planes (int): bottleneck width; the output has ``4 * planes`` channels.
        lip_width (int): channels of the logit trunk. Default: :data:`BOTTLENECK_WIDTH`.
        lip_norm_cfg (dict): norm of the logit modules. Default: affine InstanceNorm.
        logit_init (str): how the logits start, see :data:`LIP_LOGIT_INITS`.
        **kwargs: mmdet ``Bottleneck`` arguments (``conv_cfg``, ``norm_cfg``, ``dcn``...).

    Shapes: (N, inplanes, H, W) -> (N, 4 * planes, ceil(H/2), ceil(W/2)).
    """
    new_submodules = ('bottleneck_shared', 'conv2')

    def __init__(self, inplanes: int, planes: int, lip_width: int = BOTTLENECK_WIDTH,
                 lip_norm_cfg: dict = LIP_NORM_CFG, logit_init: str = 'reference', **kwargs):
        super().__init__(inplanes, planes, **kwargs)
        self.bottleneck_shared = BottleneckShared(inplanes, width=lip_width, norm_cfg=lip_norm_cfg)
        mixer = self.conv2 if self.with_dcn else build_conv_layer(
            self.conv_cfg, planes, planes, kernel_size=1, bias=False)
        lip = dict(width=lip_width, norm_cfg=lip_norm_cfg, logit_init=logit_init)
        self.conv2 = Sequential(BottleneckLIP(planes, **lip), mixer)
        self.downsample = PooledShortcut(
            BottleneckLIP(inplanes, **lip), inplanes,
            planes * self.expansion, conv_cfg=self.conv_cfg, norm_cfg=self.norm_cfg,
            pool_name='lip')

    def shared_logit_trunk(self, x: Tensor) -> Tensor:
        return self.bottleneck_shared(x)

    def pooled_conv2(self, out: Tensor, trunk: Optional[Tensor]) -> Tensor:
        lip, mixer = self.conv2
        return mixer(lip(out, trunk))


@MODELS.register_module()
class LIPResNet(PooledResNet):
    """ResNet with Local Importance-based Pooling (LIP) for every downsampling step.

    Stem max-pool -> ``SimplifiedLIP(stem_channels)`` (or a bottleneck-logit LIP, see
    ``stem_lip``); the first block of each stride-2 stage is an :class:`LIPBottleneck`
    (depth >= 50) or a :class:`PooledBasicBlock` around a :class:`BottleneckLIPPool`
    (depth 18/34). All other arguments are mmdet ``ResNet``'s; see :class:`PooledResNet`.

    Args:
        depth (int): 18, 34, 50, 101 or 152.
        lip_norm_cfg (dict): norm of the LIP logit modules (official: affine InstanceNorm);
            ``norm_cfg`` stays the ResNet's own norm.
        lip_width (int, optional): width of the logit trunks of the stride-2 blocks. Default:
            :data:`BOTTLENECK_WIDTH` (128, official) for Bottleneck depths;
            ``inplanes // 2`` per stage for 18/34.
        stem_lip (str, optional): ``'simplified'`` (reference: 3x3 CxC logit conv at the
            stem resolution) or ``'bottleneck'`` (a :class:`BottleneckLIPPool` of width
            ``stem_channels // 4``, 8x fewer logit FLOPs). Default: ``'simplified'`` for
            depth >= 50, ``'bottleneck'`` for 18/34.
        logit_init (str): how every LIP layer's logits start: ``'reference'`` (default, the
            official initialisation) or ``'gradual'`` (they leave average pooling only as
            fast as a learned scale grows); see :data:`LIP_LOGIT_INITS`. Both start as 3x3
            average pooling; ``init_weights()`` restores the chosen one and loaded weights
            override it.
        **kwargs: mmdet ``ResNet`` arguments, and ``init_cfg`` / ``pretrained`` as in
            :class:`PooledResNet`.

    Example:
        >>> import torch
        >>> self = LIPResNet(depth=18).eval()
        >>> [tuple(o.shape) for o in self(torch.rand(1, 3, 65, 97))]
        [(1, 64, 17, 25), (1, 128, 9, 13), (1, 256, 5, 7), (1, 512, 3, 4)]
    """
    pretrained_hint = ('Convert the official weights with `python tools/model_converters/'
                       'lip2mmdet.py lip_resnet-50.pth PATH`, point it at a torchvision-layout '
                       'ResNet checkpoint of the same depth, or set model.backbone.init_cfg=None '
                       'to train from scratch.')

    def __init__(self, depth: int, lip_norm_cfg: dict = LIP_NORM_CFG,
                 lip_width: Optional[int] = None, stem_lip: Optional[str] = None,
                 logit_init: str = 'reference', **kwargs):
        # the block type decides the stem default: the arguments are checked first
        check_resnet_args(type(self).__name__, depth, self.arch_settings, kwargs)
        basic = self.arch_settings[depth][0] is not Bottleneck
        stem_lip = stem_lip or ('bottleneck' if basic else 'simplified')
        if stem_lip not in ('simplified', 'bottleneck'):
            raise ValueError(f"stem_lip must be 'simplified' or 'bottleneck', got {stem_lip!r}")
        if lip_width is not None and (not isinstance(lip_width, int) or lip_width <= 0):
            raise ValueError(f'lip_width must be a positive int or None, got {lip_width!r}')
        check_logit_init(logit_init)
        self.lip_norm_cfg = lip_norm_cfg
        self.logit_init = logit_init
        self.lip_width = lip_width
        self.stem_lip = stem_lip
        super().__init__(depth, **kwargs)

    def make_stem_pool(self, channels: int) -> nn.Module:
        lip = dict(norm_cfg=self.lip_norm_cfg, logit_init=self.logit_init)
        if self.stem_lip == 'simplified':
            return SimplifiedLIP(channels, **lip)
        return BottleneckLIPPool(channels, width=max(channels // 4, 1), **lip)

    def make_downsample_block(self, block, inplanes: int, planes: int, **kwargs) -> nn.Module:
        if issubclass(block, Bottleneck):
            width = self.lip_width or BOTTLENECK_WIDTH
            return LIPBottleneck(inplanes, planes, lip_width=width,
                                 lip_norm_cfg=self.lip_norm_cfg, logit_init=self.logit_init,
                                 **kwargs)
        width = self.lip_width or max(inplanes // 2, 1)
        pool = BottleneckLIPPool(inplanes, width=width, norm_cfg=self.lip_norm_cfg,
                                 logit_init=self.logit_init)
        return PooledBasicBlock(inplanes, planes, pool=pool, **kwargs)
