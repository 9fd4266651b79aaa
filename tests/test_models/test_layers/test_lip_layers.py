"""LIP logit modules: official names, initialisation (= 3x3 average pooling), shapes."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lip_mmdet.models.layers import (
    BottleneckLIP,
    BottleneckShared,
    InstanceNorm2dAnySize,
    SimplifiedLIP,
    SoftGate,
)


def _avg3x3(x):
    return F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)


def _scramble(module):
    """What a backbone's Kaiming init_cfg does to every conv (and affine norms)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
        elif isinstance(m, nn.InstanceNorm2d):
            nn.init.normal_(m.weight)
            nn.init.normal_(m.bias)


def test_soft_gate_maps_to_zero_twelve():
    z = torch.tensor([-1e4, -1.0, 0.0, 1.0, 1e4], requires_grad=True)
    out = SoftGate()(z)
    torch.testing.assert_close(out, torch.sigmoid(z) * 12)
    assert out[2] == 6 and out[0] == 0 and out[-1] == 12
    # LIP weights exp(gate) span (1, e^12): the largest window weight ratio is e^12
    assert torch.exp(out[-1] - out[0]).item() == pytest.approx(162754.79, rel=1e-6)
    out.sum().backward()
    # slope 12 * sigmoid'(0) = 3 at the initial logit 0, vanishing at the ends
    torch.testing.assert_close(z.grad, 12 * torch.sigmoid(z) * (1 - torch.sigmoid(z)))
    assert z.grad[2] == 3 and z.grad[0] == 0 and z.grad[-1] == 0


# (1, 1) is out: InstanceNorm (the official norm) needs more than one pixel per plane.
@pytest.mark.parametrize('size', [(1, 2), (3, 5), (7, 7), (8, 8)])
def test_simplified_lip_starts_as_average_pooling(size):
    layer = SimplifiedLIP(4)
    assert sorted(layer.state_dict()) == ['logit.bn.bias', 'logit.bn.weight',
                                          'logit.conv.weight']
    assert isinstance(layer.logit.bn, nn.InstanceNorm2d) and layer.logit.bn.affine
    x = torch.randn(2, 4, *size)
    torch.testing.assert_close(layer.logit(x), torch.full_like(x, 6.0))
    out = layer(x)
    assert out.shape == (2, 4, -(-size[0] // 2), -(-size[1] // 2))
    torch.testing.assert_close(out, _avg3x3(x))


def test_init_weights_restores_the_official_initialisation():
    x = torch.randn(1, 6, 8, 8)
    shared, pool = BottleneckShared(6, width=8), BottleneckLIP(6, width=8)
    simple = SimplifiedLIP(6)
    for layer in (shared, pool, simple):
        _scramble(layer)
    assert not torch.allclose(simple(x), _avg3x3(x))
    for layer in (shared, pool, simple):
        layer.init_weights()
    torch.testing.assert_close(simple(x), _avg3x3(x))
    torch.testing.assert_close(pool(x, shared(x)), _avg3x3(x))
    for norm in (shared.logit.bn1, shared.logit.bn2, pool.postprocessing.bn):
        assert norm.weight.eq(1).all() and norm.bias.eq(0).all()
    # Kaiming (fan_out, relu): std sqrt(2 / (out_channels * k * k)).
    torch.manual_seed(0)
    wide = BottleneckShared(64, width=128)
    assert abs(wide.logit.conv2.weight.std().item() - (2 / (128 * 9)) ** 0.5) < 3e-3


def test_bottleneck_shared_and_lip_shapes_and_keys():
    shared, pool = BottleneckShared(16), BottleneckLIP(32)
    assert sorted(shared.state_dict()) == [f'logit.{n}.{p}' for n, p in [
        ('bn1', 'bias'), ('bn1', 'weight'), ('bn2', 'bias'), ('bn2', 'weight'),
        ('conv1', 'weight'), ('conv2', 'weight')]]
    assert sorted(pool.state_dict()) == ['postprocessing.bn.bias', 'postprocessing.bn.weight',
                                         'postprocessing.conv.weight']
    assert shared.logit.conv1.weight.shape == (128, 16, 1, 1)
    assert shared.logit.conv2.weight.shape == (128, 128, 3, 3)
    assert pool.postprocessing.conv.weight.shape == (32, 128, 1, 1)
    x = torch.randn(2, 16, 7, 5)
    trunk = shared(x)
    assert trunk.shape == (2, 128, 7, 5)
    features = torch.randn(2, 32, 7, 5)
    assert pool(features, trunk).shape == (2, 32, 4, 3)
    with pytest.raises(ValueError, match='shared must have shape'):
        pool(features, x)


def test_logit_parameters_get_gradients_from_the_start():
    shared, pool = BottleneckShared(4, width=8), BottleneckLIP(4, width=8)
    x = torch.randn(2, 4, 6, 6)
    target = torch.randn(2, 4, 3, 3)
    ((pool(x, shared(x)) - target) ** 2).sum().backward()
    assert pool.postprocessing.conv.weight.grad.abs().sum() > 0


def _assert_norm_used(norm_cfg, expected_type):
    layer = SimplifiedLIP(4, norm_cfg=norm_cfg)
    assert type(layer.logit.bn) is expected_type
    assert 'logit.bn.weight' in layer.state_dict()
    shared = BottleneckShared(4, width=8, norm_cfg=norm_cfg)
    assert type(shared.logit.bn1) is expected_type and type(shared.logit.bn2) is expected_type
    x = torch.randn(2, 4, 6, 6)
    torch.testing.assert_close(layer(x), _avg3x3(x))  # zero conv: constant logits either way


@pytest.mark.parametrize('norm_cfg, expected_type', [
    (nn.BatchNorm2d, nn.BatchNorm2d),
    (lambda channels: nn.GroupNorm(2, channels), nn.GroupNorm),
    (dict(type='IN', affine=True, eps=1e-3), InstanceNorm2dAnySize),
])
def test_norm_is_configurable_with_torch_alone(norm_cfg, expected_type):
    """A callable of the channel count, or mmcv's InstanceNorm config, needs no mmcv."""
    _assert_norm_used(norm_cfg, expected_type)


@pytest.mark.parametrize('norm_cfg, expected_type', [
    (dict(type='BN'), nn.BatchNorm2d), (dict(type='GN', num_groups=2), nn.GroupNorm)])
def test_norm_is_configurable_with_mmcv_norm_configs(norm_cfg, expected_type):
    _assert_norm_used(norm_cfg, expected_type)


def test_gradcheck_through_the_logit_modules():
    shared = BottleneckShared(2, width=4).double()
    pool = BottleneckLIP(2, width=4).double()
    simple = SimplifiedLIP(2).double()
    for module in (pool, simple):  # leave the zero init so the logits vary
        nn.init.normal_(next(iter(module.parameters())), std=0.5)
    x = torch.randn(1, 2, 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: pool(a, shared(a)), (x,))
    assert torch.autograd.gradcheck(simple, (x,))
    weight = simple.logit.conv.weight
    assert torch.autograd.gradcheck(
        lambda w: torch.func.functional_call(simple, {'logit.conv.weight': w}, (x.detach(),)),
        (weight.detach().clone().requires_grad_(),))


def test_half_precision_forward():
    layer = SimplifiedLIP(3)
    nn.init.normal_(layer.logit.conv.weight, std=3.0)  # logits spread over (0, 12)
    x = torch.randn(1, 3, 9, 9)
    out = layer.half()(x.half())
    assert out.dtype == torch.float16 and out.isfinite().all()
    torch.testing.assert_close(out.float(), layer.float()(x), rtol=1e-2, atol=1e-2)


def test_mixed_precision_logits_follow_the_features():
    shared, pool = BottleneckShared(4, width=8), BottleneckLIP(4, width=8)
    nn.init.normal_(pool.postprocessing.conv.weight)
    x = torch.randn(2, 4, 6, 6)
    trunk = shared(x)  # float32 logits for bfloat16 features
    out = pool(x.bfloat16(), trunk)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), pool(x.bfloat16().float(), trunk), rtol=2e-2,
                               atol=2e-2)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert SimplifiedLIP(4)(nn.Conv2d(4, 4, 1)(x)).dtype == torch.bfloat16
