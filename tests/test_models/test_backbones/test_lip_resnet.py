import pytest
import torch
import torch.nn.functional as F
from mmdet.models.backbones import ResNet
from mmdet.registry import MODELS
from torch import nn

import lip_mmdet  # noqa: F401
from lip_mmdet.models.backbones import BottleneckLIPPool, LIPBottleneck, LIPResNet, PooledBasicBlock
from lip_mmdet.models.backbones.complexity import (
    IMAGENET_FC_PARAMS,
    backbone_complexity,
    count_params,
)
from lip_mmdet.models.layers import BottleneckLIP, BottleneckShared, SimplifiedLIP

from backbone_test_utils import (
    TWO_STAGES,
    assert_same_outputs_and_grads,
    batch_norms,
    frozen_state,
    output_shapes,
)

EXPECTED_65x97 = [(17, 25), (9, 13), (5, 7), (3, 4)]


@pytest.mark.parametrize('depth,expansion', [(18, 1), (34, 1), (50, 4), (101, 4)])
def test_output_channels_and_strides(depth, expansion):
    torch.manual_seed(0)
    shapes = output_shapes(LIPResNet(depth=depth))
    assert shapes == [(1, 64 * 2**i * expansion, *EXPECTED_65x97[i]) for i in range(4)]


def test_output_sizes_match_stock_resnet():
    # Same sizes as a stock ResNet at odd sizes, so FPNs and heads fit unchanged.
    lip, stock = LIPResNet(depth=18), ResNet(depth=18)
    for size in ((65, 97), (33, 50)):
        assert output_shapes(lip, *size) == output_shapes(stock, *size)


def test_out_indices_and_even_size():
    model = LIPResNet(depth=18, out_indices=(1, 3))
    assert output_shapes(model, 64, 96) == [(1, 128, 8, 12), (1, 512, 2, 3)]


def _params_on_meta(cls, depth):
    with torch.device('meta'):  # counts shapes without allocating or initialising weights
        return count_params(cls(depth=depth))


def test_depth_152_builds_with_the_same_lip_overhead_as_101():
    # Only stage 3's block count differs from 101, so the LIP parameter overhead is equal.
    extra_101 = _params_on_meta(LIPResNet, 101) - _params_on_meta(ResNet, 101)
    assert _params_on_meta(LIPResNet, 152) - _params_on_meta(ResNet, 152) == extra_101
    with torch.device('meta'):
        lip152 = LIPResNet(depth=152)
    assert len(lip152.layer3) == 36 and isinstance(lip152.layer3[0], LIPBottleneck)


@pytest.mark.parametrize('depth,published', [(50, 23.9), (101, 42.9)])
def test_parameter_count_matches_the_reference(depth, published):
    total = _params_on_meta(LIPResNet, depth) + IMAGENET_FC_PARAMS
    assert round(total / 1e6, 1) == published


def test_official_module_layout_and_names():
    model = LIPResNet(depth=50)
    assert isinstance(model.maxpool, SimplifiedLIP)
    for stage in (model.layer2, model.layer3, model.layer4):
        block = stage[0]
        assert isinstance(block, LIPBottleneck)
        assert isinstance(block.bottleneck_shared, BottleneckShared)
        assert isinstance(block.conv2[0], BottleneckLIP)
        assert block.conv2[1].kernel_size == (1, 1) and block.conv2[1].stride == (1, 1)
        assert isinstance(block.downsample.lip, BottleneckLIP)
        assert block.downsample.conv.stride == (1, 1)
        assert all(type(b).__name__ == 'Bottleneck' for b in list(stage)[1:])
    keys = set(model.state_dict())
    for key in ('maxpool.logit.conv.weight', 'maxpool.logit.bn.bias',
                'layer2.0.bottleneck_shared.logit.conv2.weight',
                'layer3.0.conv2.0.postprocessing.conv.weight', 'layer4.0.conv2.1.weight',
                'layer2.0.downsample.lip.postprocessing.bn.weight',
                'layer2.0.downsample.conv.weight', 'layer2.0.downsample.bn.running_var',
                'layer1.0.downsample.0.weight', 'layer1.0.downsample.1.running_mean',
                'layer2.0.bn2.weight', 'layer2.0.bn3.weight'):
        assert key in keys, key
    # Beyond the LIP modules, only the stride-2 blocks' 3x3 conv2 differs from mmdet's ResNet.
    stock = set(ResNet(depth=50).state_dict())
    renamed = {k.replace('downsample.conv.', 'downsample.0.').replace('downsample.bn.',
                                                                      'downsample.1.')
               for k in keys if '.lip.' not in k and 'bottleneck_shared' not in k
               and 'maxpool.' not in k and '.conv2.0.' not in k and '.conv2.1.' not in k}
    assert stock - renamed == {f'layer{i}.0.conv2.weight' for i in (2, 3, 4)}
    assert renamed - stock == set()


def test_basic_block_design():
    model = LIPResNet(depth=18)
    assert isinstance(model.maxpool, BottleneckLIPPool)
    assert model.maxpool.bottleneck_shared.logit.conv1.out_channels == 16
    for i, stage in enumerate((model.layer2, model.layer3, model.layer4)):
        block = stage[0]
        assert isinstance(block, PooledBasicBlock) and isinstance(block.pool, BottleneckLIPPool)
        inplanes = 64 * 2**i
        assert block.pool.bottleneck_shared.logit.conv1.out_channels == inplanes // 2
        assert block.conv1.stride == (1, 1) and block.conv1.kernel_size == (3, 3)
        assert block.downsample[0].kernel_size == (1, 1)
    wide = LIPResNet(depth=18, lip_width=32, stem_lip='simplified')
    assert isinstance(wide.maxpool, SimplifiedLIP)
    assert wide.layer3[0].pool.bottleneck_shared.logit.conv1.out_channels == 32


def _lip_layers(model):
    return [m for m in model.modules() if isinstance(m, (SimplifiedLIP, BottleneckLIP))]


@pytest.mark.parametrize('depth', [18, 50])
def test_every_lip_starts_as_average_pooling(depth):
    torch.manual_seed(0)
    model = LIPResNet(depth=depth)
    model.init_weights()
    layers = _lip_layers(model)
    assert len(layers) == (4 if depth == 18 else 7)
    seen = []

    def check(module, args, output):
        expected = F.avg_pool2d(args[0], 3, 2, 1, count_include_pad=False)
        torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-5)
        seen.append(module)

    handles = [layer.register_forward_hook(check) for layer in layers]
    model.eval()
    with torch.no_grad():
        model(torch.randn(1, 3, 33, 49))
    for handle in handles:
        handle.remove()
    assert len(seen) == len(layers)
    # The trunk is initialised (not all zero), the post-processing convs are zero.
    trunk = model.layer2[0].bottleneck_shared if depth == 50 else model.layer2[0].pool
    assert any(p.abs().sum() > 0 for p in trunk.parameters())


@pytest.mark.parametrize('depth', [18, 50])
def test_frozen_stages_freeze_stem_lip_and_stages(depth):
    model = LIPResNet(depth=depth, frozen_stages=2, norm_eval=False)
    model.train()
    frozen, trainable = frozen_state(model, 2)
    assert any(n.startswith('maxpool.') for n, _ in frozen)
    assert any('layer2.0.' in n and ('bottleneck_shared' in n or 'pool' in n or 'lip' in n)
               for n, _ in frozen)
    assert all(not grad for _, grad in frozen)
    assert all(grad for _, grad in trainable) and trainable
    for name, module in model.named_modules():
        if name.startswith(('maxpool', 'layer1', 'layer2', 'bn1')) and name:
            assert not module.training, name
        elif name.startswith(('layer3', 'layer4')):
            assert module.training, name


def test_frozen_stage_zero_freezes_only_the_stem():
    model = LIPResNet(depth=50, frozen_stages=0)
    model.train()
    frozen, trainable = frozen_state(model, 0)
    assert {n for n, _ in frozen} >= {'maxpool.logit.conv.weight', 'conv1.weight', 'bn1.weight'}
    assert all(not g for _, g in frozen) and all(g for _, g in trainable)
    assert not model.maxpool.training and model.layer1.training


@pytest.mark.parametrize('norm_eval', [True, False])
def test_norm_eval(norm_eval):
    model = LIPResNet(depth=18, norm_eval=norm_eval)
    model.train()
    norms = batch_norms(model)
    assert len(norms) == 1 + 2 * 8 + 3  # stem, two per block, three shortcuts
    assert all(m.training != norm_eval for _, m in norms)
    # LIP logit norms are InstanceNorms, kept training like the rest of the module.
    inorms = [m for m in model.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert inorms and all(m.training for m in inorms)


@pytest.mark.parametrize('depth', [18, 50])
def test_with_cp_gives_the_same_outputs_and_gradients(depth):
    torch.manual_seed(0)
    small = dict(depth=depth, out_indices=(0, 1), **TWO_STAGES)
    reference = LIPResNet(**small)
    # Non-zero LIP logits so that the gradient path through the trunk is exercised.
    for layer in _lip_layers(reference):
        for param in layer.parameters():
            param.data.normal_(0, 0.05)
    candidate = LIPResNet(with_cp=True, **small)
    assert all(b.with_cp for b in candidate.layer2)
    assert_same_outputs_and_grads(reference, candidate)


@pytest.mark.parametrize('depth,zero_init', [(18, True), (50, True), (18, False)])
def test_zero_init_residual_covers_the_lip_blocks(depth, zero_init):
    model = LIPResNet(depth=depth, zero_init_residual=zero_init, out_indices=(1, ),
                      **TWO_STAGES)
    model.init_weights()
    blocks = list(model.layer1) + list(model.layer2)
    assert any(isinstance(b, (LIPBottleneck, PooledBasicBlock)) for b in blocks)
    for block in blocks:
        gamma = (block.norm3 if depth == 50 else block.norm2).weight
        assert torch.all(gamma == 0) if zero_init else torch.all(gamma == 1), type(block)


def test_builds_from_registry_with_mmdet_options():
    model = MODELS.build(
        dict(type='LIPResNet', depth=50, num_stages=4, out_indices=(0, 1, 2, 3),
             frozen_stages=1, norm_cfg=dict(type='GN', num_groups=8, requires_grad=True),
             norm_eval=True, style='caffe', deep_stem=True, init_cfg=None))
    assert isinstance(model, LIPResNet)
    assert isinstance(model.layer2[0].norm2, nn.GroupNorm)
    assert isinstance(model.layer2[0].downsample.bn, nn.GroupNorm)
    assert isinstance(model.layer2[0].bottleneck_shared.logit.bn1, nn.InstanceNorm2d)
    assert [s[1] for s in output_shapes(model, 32, 32)] == [256, 512, 1024, 2048]


def test_dcn_and_plugins():
    model = LIPResNet(
        depth=50, dcn=dict(type='DCNv2', deform_groups=1, fallback_on_stride=False),
        stage_with_dcn=(False, True, False, False),
        plugins=[dict(cfg=dict(type='ContextBlock', ratio=1. / 4), stages=(False, True, True,
                                                                            False),
                      position='after_conv3')])
    assert type(model.layer2[0].conv2[1]).__name__ == 'ModulatedDeformConv2dPack'
    assert model.layer2[0].with_plugins and model.layer3[0].with_plugins
    shapes = output_shapes(model, 32, 32)
    assert shapes[1] == (1, 512, 4, 4)


def test_strides_and_dilations_for_dilated_stages():
    model = LIPResNet(depth=18, strides=(1, 2, 2, 1), dilations=(1, 1, 1, 2))
    assert type(model.layer4[0]).__name__ == 'BasicBlock'
    assert output_shapes(model, 64, 64)[3] == (1, 512, 4, 4)


def test_bad_arguments():
    with pytest.raises(KeyError, match='invalid depth 42'):
        LIPResNet(depth=42)
    with pytest.raises(ValueError, match='stem_lip'):
        LIPResNet(depth=18, stem_lip='max')
    with pytest.raises(ValueError, match='lip_width'):
        LIPResNet(depth=18, lip_width=0)
    with pytest.raises(ValueError, match='strides must be 1 or 2'):
        LIPResNet(depth=18, strides=(1, 4, 2, 2))


def test_complexity_against_stock_resnet():
    stats = backbone_complexity(dict(type='LIPResNet', depth=18), sizes=((64, 64), ))
    assert stats['stock']['type'] == 'ResNet'
    assert stats['model']['params'] == count_params(LIPResNet(depth=18))
    # The LIP logit convs add FLOPs; the pooling arithmetic itself is listed, not counted.
    assert 1.05 < stats['ratio']['flops@64x64'] < 1.2
    assert 'lip_mmdet::lip2d' in stats['model']['skipped_ops']
