import math

import pytest
import torch
import torch.nn.functional as F
from mmdet.models.backbones import ResNet
from mmdet.registry import MODELS
from torch import nn

import lip_mmdet  # noqa: F401
from lip_mmdet.models.backbones import (
    DPPBottleneck,
    DPPResNet,
    PooledBasicBlock,
    PostPooledBasicBlock,
    PostPooledBottleneck,
)
from lip_mmdet.models.backbones.complexity import count_params
from lip_mmdet.models.layers import S3DPP, FullDPP, LiteDPP
from lip_mmdet.ops.pool_args import as_pads, to_pair

from backbone_test_utils import (
    TWO_STAGES,
    assert_same_outputs_and_grads,
    frozen_state,
    output_shapes,
)


def expected_sizes(height, width):
    """Stage output sizes: every stride-2 step halves with ceil, as stock ResNet's strided
    convs do (the 2x2 windows pad an odd edge, ``ceil_output``)."""
    sizes = [(math.ceil(math.ceil(height / 2) / 2), math.ceil(math.ceil(width / 2) / 2))]
    for _ in range(3):
        h, w = sizes[-1]
        sizes.append((math.ceil(h / 2), math.ceil(w / 2)))
    return sizes


VARIANTS = [
    dict(type='LiteDPP', reward='asym'),
    dict(type='LiteDPP', reward='sym'),
    dict(type='FullDPP', reward='asym'),
    dict(type='FullDPP', reward='sym'),
    dict(type='S3DPP', reward='sym', guide='lite'),
]


@pytest.mark.parametrize('depth,expansion', [(18, 1), (34, 1), (50, 4)])
def test_output_channels_and_strides(depth, expansion):
    shapes = output_shapes(DPPResNet(depth=depth))
    assert [s[2:] for s in shapes] == [(17, 25), (9, 13), (5, 7), (3, 4)]
    assert shapes == [(1, 64 * 2**i * expansion, *expected_sizes(65, 97)[i])
                      for i in range(4)]


def test_window_set_in_dpp_cfg_applies_everywhere():
    model = DPPResNet(depth=18, dpp_cfg=dict(type='LiteDPP', kernel_size=3, padding=1))
    assert all(m.kernel_size == 3 for m in model.modules() if isinstance(m, LiteDPP))
    assert output_shapes(model) == output_shapes(ResNet(depth=18))
    default = DPPResNet(depth=18)
    assert default.maxpool.kernel_size == 3 and default.layer2[0].pool.kernel_size == 2


@pytest.mark.parametrize('dpp_cfg', VARIANTS, ids=lambda c: f'{c["type"]}-{c["reward"]}')
@pytest.mark.parametrize('placement', ['replace_stride', 'after_add'])
def test_variants_forward_at_odd_sizes(dpp_cfg, placement):
    torch.manual_seed(0)
    model = DPPResNet(depth=18, dpp_cfg=dpp_cfg, dpp_placement=placement)
    layer_type = dict(LiteDPP=LiteDPP, FullDPP=FullDPP, S3DPP=S3DPP)[dpp_cfg['type']]
    pools = [m for m in model.modules() if isinstance(m, layer_type)]
    assert len(pools) == 4  # stem + one per stride-2 stage (shared by both branches)
    for train in (False, True):
        model.train(train)
        outs = model(torch.rand(1, 3, 33, 49))
        assert [tuple(o.shape) for o in outs] == [
            (1, 64 * 2**i, *expected_sizes(33, 49)[i]) for i in range(4)]
        assert all(torch.isfinite(o).all() for o in outs)
    sum(o.sum() for o in outs).backward()
    assert all(p.grad is not None for p in pools[1].parameters())


def test_bottleneck_placements():
    cheap = DPPResNet(depth=50)
    block = cheap.layer2[0]
    assert isinstance(block, DPPBottleneck) and isinstance(block.pool, LiteDPP)
    assert block.conv2.stride == (1, 1) and block.conv2.kernel_size == (3, 3)
    assert isinstance(block.downsample.pool, LiteDPP) and block.downsample.conv.stride == (1, 1)
    assert isinstance(cheap.maxpool, LiteDPP)
    # Same convolutions as ResNet-50: only the DPP parameters are added.
    dpp_params = sum(p.numel() for m in cheap.modules() if isinstance(m, LiteDPP)
                     for p in m.parameters())
    assert count_params(cheap) == count_params(ResNet(depth=50)) + dpp_params

    paper = DPPResNet(depth=50, dpp_placement='after_add', dpp_stem=False)
    block = paper.layer3[0]
    assert isinstance(block, PostPooledBottleneck) and block.conv2.stride == (1, 1)
    assert isinstance(block.downsample[0], nn.Conv2d) and block.downsample[0].stride == (1, 1)
    assert isinstance(paper.maxpool, nn.MaxPool2d)
    assert output_shapes(paper, 32, 32)[3] == (1, 2048, 1, 1)
    assert isinstance(DPPResNet(depth=18, dpp_placement='after_add').layer2[0],
                      PostPooledBasicBlock)
    assert isinstance(DPPResNet(depth=18).layer2[0], PooledBasicBlock)


def test_frozen_stages_freeze_the_stem_dpp():
    model = DPPResNet(depth=18, frozen_stages=1)
    model.train()
    frozen, trainable = frozen_state(model, 1)
    assert any(n.startswith('maxpool.') for n, _ in frozen)
    assert all(not g for _, g in frozen) and all(g for _, g in trainable)
    assert not model.maxpool.training and model.layer2[0].pool.training


@pytest.mark.parametrize('depth,placement', [(50, 'replace_stride'), (18, 'after_add')])
def test_with_cp_gives_the_same_outputs_and_gradients(depth, placement):
    torch.manual_seed(0)
    small = dict(depth=depth, dpp_placement=placement, out_indices=(0, 1), **TWO_STAGES)
    reference = DPPResNet(**small)
    for name, param in reference.named_parameters():
        if 'log_' in name:  # away from the initial alpha = lambda = 1
            param.data.uniform_(-0.5, 0.5)
    candidate = DPPResNet(with_cp=True, **small)
    assert_same_outputs_and_grads(reference, candidate)


@pytest.mark.parametrize('depth,last_norm', [(18, 'norm2'), (50, 'norm3')])
@pytest.mark.parametrize('placement', ['replace_stride', 'after_add'])
def test_zero_init_residual_covers_the_dpp_blocks(depth, last_norm, placement):
    model = DPPResNet(depth=depth, dpp_placement=placement, out_indices=(1, ),
                      **TWO_STAGES)
    model.init_weights()
    for block in list(model.layer1) + list(model.layer2):
        assert torch.all(getattr(block, last_norm).weight == 0), type(block)


@pytest.mark.parametrize('placement', ['replace_stride', 'after_add'])
def test_init_weights_restores_every_dpp_initialisation(placement):
    """init_weights reaches every DPP (stem, both branches, after the add) and puts back
    alpha = lambda = 1 and Full-DPP's box-filter guide, whatever the parameters held."""
    torch.manual_seed(0)
    model = DPPResNet(depth=50, dpp_cfg=dict(type='FullDPP', reward='sym'),
                      dpp_placement=placement, out_indices=(1, ), **TWO_STAGES)
    dpp_layers = [m for m in model.modules() if isinstance(m, FullDPP)]
    assert len(dpp_layers) == (2 if placement == 'after_add' else 3)  # stem, layer2 (x2)
    initial = {(i, n): p.clone() for i, layer in enumerate(dpp_layers)
               for n, p in layer.named_parameters()}
    with torch.no_grad():
        for layer in dpp_layers:
            for param in layer.parameters():
                param.normal_()
    model.init_weights()
    for (i, name), value in initial.items():
        torch.testing.assert_close(dict(dpp_layers[i].named_parameters())[name], value,
                                   msg=f'{i}.{name}')


@MODELS.register_module(name='SignedMaxDPPForTest', force=True)
class SignedMaxDPPForTest(LiteDPP):
    """A user-side DPP variant, registered in mmdet's MODELS: max-pooled guide."""

    def guide(self, x, padding):
        top, bottom, left, right = as_pads(to_pair(padding, 'padding') if isinstance(
            padding, int) else padding)
        padded = F.pad(x, (left, right, top, bottom), value=float('-inf'))
        return F.max_pool2d(padded, self.kernel_size, self.stride)


def test_user_registered_dpp_variant_builds():
    model = DPPResNet(depth=50, dpp_cfg=dict(type='SignedMaxDPPForTest', reward='sym'),
                      out_indices=(1, ), **TWO_STAGES)
    pools = [m for m in model.modules() if isinstance(m, LiteDPP)]
    assert len(pools) == 3 and all(type(m) is SignedMaxDPPForTest for m in pools)
    assert model.maxpool.kernel_size == 3 and model.layer2[0].pool.kernel_size == 2
    assert model(torch.randn(1, 3, 64, 64))[0].shape == (1, 512, 8, 8)


def test_builds_from_registry():
    model = MODELS.build(dict(type='DPPResNet', depth=18, dpp_cfg=dict(type='FullDPP',
                                                                       reward='sym'),
                              out_indices=(2, 3)))
    assert isinstance(model, DPPResNet) and isinstance(model.layer3[0].pool, FullDPP)
    assert [s[1] for s in output_shapes(model, 32, 32)] == [256, 512]


def test_bad_arguments():
    with pytest.raises(ValueError, match='dpp_cfg'):
        DPPResNet(depth=18, dpp_cfg=dict(type='MaxPool'))
    with pytest.raises(ValueError, match='dpp_placement'):
        DPPResNet(depth=18, dpp_placement='before_add')
