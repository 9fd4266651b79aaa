"""mmdet ResNet whose downsampling steps are learned poolings, and the blocks that carry them.

Subclasses say which pooling: :meth:`PooledResNet.make_stem_pool` replaces the stem max-pool,
:meth:`PooledResNet.make_downsample_block` builds the first block of every stride-2 stage.
Everything else (stem convs, stride-1 blocks, options) is mmdet's ``ResNet`` unchanged, so a
stock ResNet checkpoint fits all parameters that are not new.
"""
import copy
import inspect
from typing import Optional

import torch.utils.checkpoint as cp
from mmcv.cnn import build_conv_layer, build_norm_layer
from mmdet.models.backbones.resnet import BasicBlock, Bottleneck, ResNet
from mmdet.models.layers import ResLayer
from mmengine.model import BaseModule, Sequential
from torch import Tensor, nn

from .pretrained import apply_pretrained, fit_pretrained

__all__ = ['PooledShortcut', 'PooledBottleneck', 'PooledBasicBlock', 'PostPooledBottleneck',
           'PostPooledBasicBlock', 'PooledResNet', 'projection_shortcut']


def _run(block, inner, x):
    """Runs ``inner(x)``, under activation checkpointing when the block asks for it."""
    if block.with_cp and x.requires_grad:
        return cp.checkpoint(inner, x, use_reentrant=False)
    return inner(x)


def projection_shortcut(conv_cfg, norm_cfg, in_channels: int, out_channels: int) -> nn.Sequential:
    """1x1 conv (stride 1) + norm; keys ``0.*`` / ``1.*`` as in a stock ResNet shortcut.

    Args:
        conv_cfg (dict, optional): mmcv conv config.
        norm_cfg (dict): mmcv norm config.
        in_channels (int): Cin.
        out_channels (int): Cout.

    Returns:
        nn.Sequential: (N, Cin, H, W) -> (N, Cout, H, W).
    """
    return nn.Sequential(
        build_conv_layer(conv_cfg, in_channels, out_channels, kernel_size=1, bias=False),
        build_norm_layer(norm_cfg, out_channels)[1])


class PooledShortcut(BaseModule):
    """Shortcut that pools, then projects: ``bn(conv(pool(x)))``, or
    ``bn(conv(pool(x, trunk)))`` for a LIP that takes its logits from a shared trunk.

    Args:
        pool (nn.Module): the pooling layer.
        in_channels (int): Cin.
        out_channels (int): Cout.
        conv_cfg (dict, optional): mmcv conv config of the 1x1 projection.
        norm_cfg (dict): mmcv norm config. Default: BN.
        pool_name (str): name of the pooling child (``lip`` gives the official LIP keys
            ``downsample.{lip,conv,bn}``). Default: ``'pool'``.

    Shapes: (N, Cin, H, W) -> (N, Cout, H', W') with H', W' set by the pool.
    """

    def __init__(self, pool: nn.Module, in_channels: int, out_channels: int,
                 conv_cfg: Optional[dict] = None, norm_cfg: dict = dict(type='BN'),
                 pool_name: str = 'pool'):
        super().__init__()
        self.pool_name = pool_name
        self.new_submodules = (pool_name, )
        self.add_module(pool_name, pool)
        self.conv = build_conv_layer(conv_cfg, in_channels, out_channels, kernel_size=1,
                                     bias=False)
        self.bn = build_norm_layer(norm_cfg, out_channels)[1]

    def forward(self, x: Tensor, trunk: Optional[Tensor] = None) -> Tensor:
        pool = getattr(self, self.pool_name)
        return self.bn(self.conv(pool(x) if trunk is None else pool(x, trunk)))


class PooledBottleneck(Bottleneck):
    """Stride-2 Bottleneck whose downsampling is a pooling in front of conv2 (at stride 1).

    conv1 -> norm1 -> relu -> [pooled conv2] -> norm2 -> relu -> conv3 -> norm3, plus the
    shortcut ``downsample(x, trunk)``. Subclasses implement :meth:`pooled_conv2` and, when
    both poolings take their weights from one shared computation on the block input (LIP's
    logit trunk), :meth:`shared_logit_trunk`. mmdet's plugins run at their usual positions.

    Args:
        inplanes (int): channels of the block input.
        planes (int): bottleneck width; the output has ``4 * planes`` channels.
        stride (int): must be 2.
        downsample: ignored (the subclass builds a pooled shortcut).
        **kwargs: mmdet ``Bottleneck`` arguments.

    Shapes: (N, inplanes, H, W) -> (N, 4 * planes, H', W').
    """

    def __init__(self, inplanes: int, planes: int, stride: int = 2, downsample=None, **kwargs):
        if stride != 2:
            raise ValueError(f'{type(self).__name__} downsamples by 2, got stride={stride}')
        # The pooled shortcut replaces the strided one ResLayer would pass in.
        super().__init__(inplanes, planes, stride=1, **kwargs)
        self.stride = stride

    def shared_logit_trunk(self, x: Tensor) -> Optional[Tensor]:
        """Logit trunk both LIPs of the block share, computed once from the block input;
        None for poolings that need nothing beyond their own input (DPP)."""
        return None

    def pooled_conv2(self, out: Tensor, trunk: Optional[Tensor]) -> Tensor:
        """Downsamples conv1's activations and applies the 3x3 (or replacing) conv."""
        raise NotImplementedError

    def forward(self, x):

        def _inner_forward(x):
            trunk = self.shared_logit_trunk(x)
            out = self.relu(self.norm1(self.conv1(x)))
            if self.with_plugins:
                out = self.forward_plugin(out, self.after_conv1_plugin_names)
            out = self.relu(self.norm2(self.pooled_conv2(out, trunk)))
            if self.with_plugins:
                out = self.forward_plugin(out, self.after_conv2_plugin_names)
            out = self.norm3(self.conv3(out))
            if self.with_plugins:
                out = self.forward_plugin(out, self.after_conv3_plugin_names)
            return out + self.downsample(x, trunk)

        return self.relu(_run(self, _inner_forward, x))


class PooledBasicBlock(BasicBlock):
    """Stride-2 BasicBlock: one pooling shared by both branches, then a stride-1 block.

    ``p = pool(x)``; ``out = relu(norm2(conv2(relu(norm1(conv1(p))))) + downsample(p))`` with
    conv1 a 3x3 stride-1 conv (the FLOPs of the strided conv it replaces) and ``downsample``
    a 1x1 conv + norm (stock keys ``downsample.0/1``).

    Args:
        inplanes (int): Cin, channels of the block input.
        planes (int): output channels.
        pool (nn.Module): the stride-2 pooling, (N, Cin, H, W) -> (N, Cin, H', W').
        stride (int): must be 2.
        downsample: ignored (the block builds its own shortcut).
        conv_cfg (dict, optional): mmcv conv config.
        norm_cfg (dict): mmcv norm config. Default: BN.
        **kwargs: mmdet ``BasicBlock`` arguments.

    Shapes: (N, Cin, H, W) -> (N, planes, H', W').
    """
    new_submodules = ('pool', )

    def __init__(self, inplanes: int, planes: int, pool: nn.Module, stride: int = 2,
                 downsample=None, conv_cfg=None, norm_cfg=dict(type='BN'), **kwargs):
        if stride != 2:
            raise ValueError(f'{type(self).__name__} downsamples by 2, got stride={stride}')
        super().__init__(inplanes, planes, stride=1, conv_cfg=conv_cfg, norm_cfg=norm_cfg,
                         **kwargs)
        self.stride = stride
        self.pool = pool
        self.downsample = projection_shortcut(conv_cfg, norm_cfg, inplanes, planes)

    def forward(self, x):

        def _inner_forward(x):
            pooled = self.pool(x)
            out = self.relu(self.norm1(self.conv1(pooled)))
            out = self.norm2(self.conv2(out))
            return out + self.downsample(pooled)

        return self.relu(_run(self, _inner_forward, x))


class _PoolAfterBlock:
    """Runs the whole block at stride 1, then pools its output (the DPP paper's placement).

    Args:
        inplanes (int): Cin, channels of the block input.
        planes (int): block width; the output has ``planes * expansion`` channels.
        pool (nn.Module): the stride-2 pooling of the block output.
        stride (int): must be 2.
        downsample: ignored (a 1x1 projection is built when the channels change).
        conv_cfg (dict, optional): mmcv conv config.
        norm_cfg (dict): mmcv norm config. Default: BN.
        **kwargs: arguments of the mmdet block.

    Shapes: (N, Cin, H, W) -> (N, planes * expansion, H', W').
    """
    new_submodules = ('pool', )

    def __init__(self, inplanes: int, planes: int, pool: nn.Module, stride: int = 2,
                 downsample=None, conv_cfg=None, norm_cfg=dict(type='BN'), **kwargs):
        if stride != 2:
            raise ValueError(f'{type(self).__name__} downsamples by 2, got stride={stride}')
        out_channels = planes * self.expansion
        shortcut = None
        if inplanes != out_channels:
            shortcut = projection_shortcut(conv_cfg, norm_cfg, inplanes, out_channels)
        super().__init__(inplanes, planes, stride=1, downsample=shortcut, conv_cfg=conv_cfg,
                         norm_cfg=norm_cfg, **kwargs)
        self.stride = stride
        self.pool = pool

    def forward(self, x):
        return self.pool(super().forward(x))


class PostPooledBottleneck(_PoolAfterBlock, Bottleneck):
    """Bottleneck at stride 1 followed by a stride-2 pooling of its output."""


class PostPooledBasicBlock(_PoolAfterBlock, BasicBlock):
    """BasicBlock at stride 1 followed by a stride-2 pooling of its output."""


def _split_pretrained(init_cfg, pretrained):
    """Separates a ``Pretrained`` entry from ``init_cfg``: returns (pretrained cfg, the rest)."""
    if isinstance(pretrained, str):
        if init_cfg is not None:
            raise ValueError('init_cfg and pretrained cannot be given together')
        return dict(type='Pretrained', checkpoint=pretrained), None
    if pretrained is not None:
        raise TypeError(f'pretrained must be a str or None, got {type(pretrained).__name__}')
    cfgs = [init_cfg] if isinstance(init_cfg, dict) else list(init_cfg or [])
    found = [c for c in cfgs if c.get('type') == 'Pretrained']
    if len(found) > 1:
        raise ValueError(f'init_cfg holds {len(found)} Pretrained entries, expected at most one')
    rest = [c for c in cfgs if c.get('type') != 'Pretrained']
    if not found:
        return None, init_cfg
    if 'checkpoint' not in found[0]:
        raise KeyError(f'init_cfg {found[0]} needs a "checkpoint" path')
    return copy.deepcopy(found[0]), (rest or None)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_resnet_args(name: str, depth, arch_settings: dict, kwargs: dict) -> None:
    """Validates mmdet ``ResNet`` arguments, raising ValueError / TypeError that say what is
    wrong (mmdet's own checks are bare asserts, or none: ``out_indices=(-1,)`` builds and
    returns nothing).

    Args:
        name: the backbone's class name, for messages.
        depth: the requested depth.
        arch_settings: depth -> (block, blocks per stage).
        kwargs: the other ``ResNet`` arguments given; missing ones take mmdet's defaults.
    """
    if depth not in arch_settings:
        raise KeyError(f'invalid depth {depth!r} for {name}, expected one of '
                       f'{sorted(arch_settings)}')
    args = {k: p.default for k, p in inspect.signature(ResNet.__init__).parameters.items()}
    args.update(kwargs)
    num_stages = args['num_stages']
    if not _is_int(num_stages) or not 1 <= num_stages <= 4:
        raise ValueError(f'{name}: num_stages must be 1, 2, 3 or 4, got {num_stages!r}')
    for key in ('strides', 'dilations'):
        value = args[key]
        if not isinstance(value, (tuple, list)) or len(value) != num_stages:
            raise ValueError(f'{name}: {key} needs one entry per stage ({num_stages} for '
                             f'num_stages={num_stages}), got {value!r}')
        if not all(_is_int(v) and v >= 1 for v in value):
            raise ValueError(f'{name}: {key} must be positive ints, got {value!r}')
    out_indices = args['out_indices']
    if (not isinstance(out_indices, (tuple, list)) or not out_indices
            or not all(_is_int(i) and 0 <= i < num_stages for i in out_indices)):
        raise ValueError(f'{name}: out_indices must be a non-empty sequence of stage indices '
                         f'0..{num_stages - 1} (num_stages={num_stages}; negative indices are '
                         f'not supported), got {out_indices!r}')
    frozen = args['frozen_stages']
    if not _is_int(frozen) or not -1 <= frozen <= num_stages:
        raise ValueError(f'{name}: frozen_stages must be -1 (none frozen) .. {num_stages} '
                         f'(stem and every stage), got {frozen!r}')
    if args['dcn'] is not None:
        with_dcn = args['stage_with_dcn']
        if not isinstance(with_dcn, (tuple, list)) or len(with_dcn) != num_stages:
            raise ValueError(f'{name}: stage_with_dcn needs one bool per stage '
                             f'({num_stages}), got {with_dcn!r}')
        if any(with_dcn) and arch_settings[depth][0] is not Bottleneck:
            raise ValueError(f'{name}: dcn needs Bottleneck blocks, i.e. depth 50, 101 or '
                             f'152 (depth {depth} uses BasicBlock, which has no deformable '
                             'conv); drop dcn or pick a deeper network')


class PooledResNet(ResNet):
    """mmdet ``ResNet`` with learned poolings in place of its downsampling (abstract).

    Takes every argument of mmdet's ``ResNet``. Differences:

    - the stem max-pool is ``make_stem_pool(stem_channels)`` (``maxpool.*``), frozen with
      stage 0 by ``frozen_stages``;
    - the first block of each stride-2 stage comes from :meth:`make_downsample_block`
      (``avg_down`` does not apply there: the pooling is the downsampling); strides must be
      1 or 2;
    - ``init_cfg=dict(type='Pretrained', checkpoint=PATH[, prefix])`` first initialises
      everything as from scratch, then loads what fits from a stock / torchvision / official
      LIP ResNet checkpoint (:func:`fit_pretrained`): the new pooling parameters keep
      their initialisation, a wrong depth or shape raises, and the log lists new and unused
      keys. mmengine's ``init_weights`` runs mmdet's Kaiming pass first, then every child's
      own ``init_weights``, so each pooling layer ends with its own initialisation.

    Args:
        depth (int): 18, 34, 50, 101 or 152.
        init_cfg (dict | list[dict], optional): mmengine init config; a ``Pretrained``
            entry is handled as above.
        pretrained (str, optional): checkpoint path, the same as a ``Pretrained``
            ``init_cfg`` (mmdet's deprecated spelling).
        **kwargs: mmdet ``ResNet`` arguments.

    Shapes: (N, 3, H, W) -> the stages in ``out_indices``, as mmdet's ``ResNet``.
    """
    # Children of this module that a stock ResNet lacks (see ``new_parameter_keys``).
    new_submodules = ('maxpool', )
    # Appended to the FileNotFoundError of a missing local checkpoint.
    pretrained_hint = ''

    def __init__(self, depth: int, init_cfg=None, pretrained: Optional[str] = None, **kwargs):
        check_resnet_args(type(self).__name__, depth, self.arch_settings, kwargs)
        self.pretrained_cfg, init_cfg = _split_pretrained(init_cfg, pretrained)
        super().__init__(depth, init_cfg=init_cfg, **kwargs)

    def train(self, mode: bool = True):
        """As mmdet's ``ResNet.train`` (frozen stages, ``norm_eval``), returning ``self`` as
        ``nn.Module.train`` does, so ``model.eval()`` can be chained."""
        super().train(mode)
        return self

    # --- construction hooks -------------------------------------------------------------
    def make_stem_pool(self, channels: int) -> nn.Module:
        raise NotImplementedError

    def make_downsample_block(self, block, inplanes: int, planes: int, **kwargs) -> nn.Module:
        raise NotImplementedError

    def _make_stem_layer(self, in_channels: int, stem_channels: int):
        super()._make_stem_layer(in_channels, stem_channels)
        self.maxpool = self.make_stem_pool(stem_channels)

    def make_res_layer(self, **kwargs):
        stride = kwargs['stride']
        if stride == 1:
            return ResLayer(**kwargs)
        if stride != 2:
            raise ValueError(f'{type(self).__name__}: stage strides must be 1 or 2, got {stride}')
        block = kwargs.pop('block')
        num_blocks = kwargs.pop('num_blocks')
        inplanes, planes = kwargs.pop('inplanes'), kwargs.pop('planes')
        for unused in ('stride', 'avg_down'):
            kwargs.pop(unused)
        first = self.make_downsample_block(block, inplanes, planes, **kwargs)
        rest = [block(inplanes=planes * block.expansion, planes=planes, **kwargs)
                for _ in range(1, num_blocks)]
        return Sequential(first, *rest)

    # --- freezing and initialisation ----------------------------------------------------
    def _freeze_stages(self):
        super()._freeze_stages()
        if self.frozen_stages >= 0:
            self.maxpool.eval()
            for param in self.maxpool.parameters():
                param.requires_grad = False

    def init_weights(self):
        if self.is_init:
            super().init_weights()  # mmengine warns about the repeated call and does nothing
            return
        fitted = None
        if self.pretrained_cfg is not None:  # a checkpoint that does not fit fails early
            fitted = fit_pretrained(self, self.pretrained_cfg['checkpoint'],
                                    hint=self.pretrained_hint,
                                    prefix=self.pretrained_cfg.get('prefix'),
                                    map_location=self.pretrained_cfg.get('map_location', 'cpu'))
        super().init_weights()
        if fitted is not None:
            apply_pretrained(self, fitted, self.pretrained_cfg['checkpoint'])
