"""DPP-ResNet: Detail-Preserving Pooling (Saeedan et al., CVPR 2018) as an mmdet backbone."""
from typing import Optional

from mmdet.models.backbones.resnet import Bottleneck
from mmdet.registry import MODELS as MMDET_MODELS
from torch import Tensor, nn

from lip_mmdet.registry import MODELS

from .pooled_resnet import (
    PooledBasicBlock,
    PooledBottleneck,
    PooledResNet,
    PooledShortcut,
    PostPooledBasicBlock,
    PostPooledBottleneck,
)

__all__ = ['DPPResNet', 'DPPBottleneck', 'build_dpp']

WINDOW_KEYS = ('kernel_size', 'stride', 'padding')
# Window arguments of layer types that do not take all of WINDOW_KEYS (S3DPP pools at stride
# 1 with 'same' padding, then samples). Every other type, a user-registered one included,
# is given the whole window.
WINDOW_KEYS_BY_TYPE = {'S3DPP': ('kernel_size', 'stride')}
# Options the backbone sets unless dpp_cfg does: Lite/Full DPP size their output as a strided
# conv does, ceil(H / stride), so every stage has stock ResNet's size at any input size.
DEFAULTS_BY_TYPE = {'LiteDPP': dict(ceil_output=True), 'FullDPP': dict(ceil_output=True)}
# Where the max-pool stood (stem) and after a residual add: its 3x3/s2/p1 window.
MAXPOOL_WINDOW = dict(kernel_size=3, stride=2, padding=1)
# Inside stride-2 blocks: the paper's 2x2/s2 window, 2.25x fewer taps on the widest maps.
BLOCK_WINDOW = dict(kernel_size=2, stride=2, padding=0)


def _type_name(layer_type) -> str:
    """``'LiteDPP'`` for ``'LiteDPP'``, ``'lip_mmdet.LiteDPP'`` or the class itself."""
    if isinstance(layer_type, type):
        return layer_type.__name__
    return str(layer_type).rsplit('.', 1)[-1]


def build_dpp(cfg: dict, channels: int, **window) -> nn.Module:
    """Builds the DPP layer ``cfg`` for ``channels`` channels through the registry.

    ``cfg['type']`` is looked up in :data:`lip_mmdet.registry.MODELS`, then in mmdet's
    ``MODELS``, so a variant registered in either builds like the built-in ones. Its
    constructor takes ``channels`` first and the window as keywords.

    Args:
        cfg (dict): ``type`` plus the layer's own options.
        channels (int): C, the channels of the pooled input.
        **window: the position's default ``kernel_size``, ``stride``, ``padding``, used
            unless ``cfg`` sets any window entry itself (then ``cfg``'s window holds
            everywhere); :data:`WINDOW_KEYS_BY_TYPE` says which entries a type takes.
            The built-in Lite/Full DPP default to ``ceil_output=True``
            (:data:`DEFAULTS_BY_TYPE`), so the backbone gives stock ResNet's sizes at any
            input size.

    Returns:
        nn.Module: the layer, (N, C, H, W) -> (N, C, H', W').
    """
    cfg = dict(cfg, channels=channels)
    if not any(key in cfg for key in WINDOW_KEYS):
        accepted = WINDOW_KEYS_BY_TYPE.get(_type_name(cfg['type']), WINDOW_KEYS)
        cfg.update({key: value for key, value in window.items() if key in accepted})
    for key, value in DEFAULTS_BY_TYPE.get(_type_name(cfg['type']), {}).items():
        cfg.setdefault(key, value)
    # The scope makes a bare name resolve here first, whatever the caller's default scope.
    return MODELS.build(dict(cfg, _scope_=MODELS.scope))


def _is_registered(layer_type) -> bool:
    if isinstance(layer_type, type):
        return True
    return isinstance(layer_type, str) and MODELS.get(layer_type) is not None


class DPPBottleneck(PooledBottleneck):
    """Stride-2 Bottleneck with DPP instead of the strided conv.

    conv1 -> norm1 -> relu -> ``pool`` (DPP, stride 2) -> conv2 (3x3, stride 1) -> norm2 ->
    relu -> conv3 -> norm3; shortcut ``downsample.{pool,conv,bn}`` = DPP -> 1x1 -> norm.
    Same conv FLOPs as the stock block.

    Args:
        inplanes (int): channels of the block input.
        planes (int): bottleneck width; the output has ``4 * planes`` channels.
        dpp_cfg (dict): the DPP layer, see :func:`build_dpp`.
        window (dict): both DPPs' window unless ``dpp_cfg`` sets one. Default: 2x2/s2.
        **kwargs: mmdet ``Bottleneck`` arguments.

    Shapes: (N, inplanes, H, W) -> (N, 4 * planes, H', W').
    """
    new_submodules = ('pool', 'downsample.pool')

    def __init__(self, inplanes: int, planes: int, dpp_cfg: dict, window: dict = BLOCK_WINDOW,
                 **kwargs):
        super().__init__(inplanes, planes, **kwargs)
        self.pool = build_dpp(dpp_cfg, planes, **window)
        self.downsample = PooledShortcut(
            build_dpp(dpp_cfg, inplanes, **window), inplanes, planes * self.expansion,
            conv_cfg=self.conv_cfg, norm_cfg=self.norm_cfg)

    def pooled_conv2(self, out: Tensor, trunk: Optional[Tensor]) -> Tensor:
        return self.conv2(self.pool(out))


@MMDET_MODELS.register_module()
class DPPResNet(PooledResNet):
    """ResNet with Detail-Preserving Pooling (DPP) for its downsampling steps.

    The stem max-pool becomes a 3x3/s2/p1 DPP (``maxpool.*``; keep the max-pool with
    ``dpp_stem=False``). Other arguments are mmdet ``ResNet``'s; see :class:`PooledResNet`.

    Args:
        depth (int): 18, 34, 50, 101 or 152.
        dpp_cfg (dict): the DPP layer: ``type`` LiteDPP / FullDPP / S3DPP (or a variant
            registered in :data:`lip_mmdet.registry.MODELS`, see :func:`build_dpp`) plus its
            options (``reward='asym'|'sym'``, S3DPP's ``guide``, ``grid_size``). Windows: 3x3/s2/p1
            in the stem and after a residual add, 2x2/s2 inside the stride-2 blocks (the
            paper's); a ``kernel_size`` / ``stride`` / ``padding`` set here applies everywhere.
            Every DPP pads its bottom/right edge where needed (``ceil_output``) so that each
            stage has stock ResNet's size at any input size (65 -> 33, as a strided conv); a
            window there pools the real pixels it holds (see docs/backbones.md).
        dpp_placement (str): ``'replace_stride'`` (default, cheap): in each stride-2 block
            DPP pools before the 3x3 conv (run at stride 1) and before the 1x1 shortcut
            conv. ``'after_add'`` (the paper's ResNets): the stride-2 block runs wholly at
            stride 1 and DPP pools its output, 1.59x the FLOPs of a ResNet-50.
        dpp_stem (bool): replace the stem max-pool with DPP. Default: True.
        **kwargs: mmdet ``ResNet`` arguments, and ``init_cfg`` / ``pretrained`` as in
            :class:`PooledResNet`.
    """
    pretrained_hint = ('Point it at a torchvision-layout ResNet checkpoint of the same depth, '
                       'or set model.backbone.init_cfg=None to train from scratch.')
    placements = ('replace_stride', 'after_add')

    def __init__(self, depth: int, dpp_cfg: dict = dict(type='LiteDPP', reward='asym'),
                 dpp_placement: str = 'replace_stride', dpp_stem: bool = True, **kwargs):
        if not isinstance(dpp_cfg, dict) or not _is_registered(dpp_cfg.get('type')):
            raise ValueError(f'dpp_cfg must be a dict whose type is a registered pooling layer '
                             f'(LiteDPP, FullDPP, S3DPP or one registered in '
                             f'lip_mmdet.registry.MODELS or mmdet MODELS), got {dpp_cfg!r}')
        if dpp_placement not in self.placements:
            raise ValueError(f'dpp_placement must be one of {self.placements}, '
                             f'got {dpp_placement!r}')
        self.dpp_cfg = dict(dpp_cfg)
        self.dpp_placement = dpp_placement
        self.dpp_stem = dpp_stem
        super().__init__(depth, **kwargs)

    def make_stem_pool(self, channels: int) -> nn.Module:
        if not self.dpp_stem:
            return nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        return build_dpp(self.dpp_cfg, channels, **MAXPOOL_WINDOW)

    def make_downsample_block(self, block, inplanes: int, planes: int, **kwargs) -> nn.Module:
        bottleneck = issubclass(block, Bottleneck)
        if self.dpp_placement == 'after_add':
            pool = build_dpp(self.dpp_cfg, planes * block.expansion, **MAXPOOL_WINDOW)
            post_cls = PostPooledBottleneck if bottleneck else PostPooledBasicBlock
            return post_cls(inplanes, planes, pool=pool, **kwargs)
        if bottleneck:
            return DPPBottleneck(inplanes, planes, dpp_cfg=self.dpp_cfg, **kwargs)
        pool = build_dpp(self.dpp_cfg, inplanes, **BLOCK_WINDOW)
        return PooledBasicBlock(inplanes, planes, pool=pool, **kwargs)
