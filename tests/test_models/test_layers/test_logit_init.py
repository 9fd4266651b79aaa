"""LIP's two starts (``logit_init``): both exact 3x3 average pooling; after one AdamW step at
lr 1e-3 the reference start's windows narrow at once, the gradual start's stay near 9."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lip_mmdet.models.layers import (
    LIP_LOGIT_INITS,
    BottleneckLIP,
    BottleneckShared,
    SimplifiedLIP,
    effective_window_size,
    pooling_layers,
)


def _avg3x3(x):
    return F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)


def _window_sizes(model, x, layer_inputs):
    """Effective window of every LIP layer of ``model`` on the inputs it sees for ``x``."""
    with torch.no_grad():
        model(x)
    return {name: effective_window_size(layer.window_weights(*layer_inputs[name]),
                                        layer_inputs[name][0].shape[2:], layer.pool_window)
            for name, layer in pooling_layers(model)}


def _record_inputs(model):
    inputs = {}
    for name, layer in pooling_layers(model):
        layer.register_forward_hook(
            lambda module, args, out, name=name: inputs.__setitem__(name, args))
    return inputs


def _one_adamw_step(model, x):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    out = model(x)
    out = out[-1] if isinstance(out, (tuple, list)) else out
    target = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    F.mse_loss(out, target).backward()
    optimizer.step()


class _Stem(nn.Module):
    """conv -> SimplifiedLIP -> conv -> bottleneck-logit LIP: both kinds of LIP layer."""

    def __init__(self, logit_init):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.lip1 = SimplifiedLIP(16, logit_init=logit_init)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.trunk = BottleneckShared(16, width=8)
        self.lip2 = BottleneckLIP(16, width=8, logit_init=logit_init)

    def forward(self, x):
        x = self.lip1(torch.relu(self.conv1(x)))
        x = torch.relu(self.conv2(x))
        return self.lip2(x, self.trunk(x))


@pytest.mark.parametrize('logit_init', LIP_LOGIT_INITS)
def test_every_start_is_average_pooling(logit_init):
    x = torch.randn(2, 6, 11, 8)
    assert torch.allclose(SimplifiedLIP(6, logit_init=logit_init)(x), _avg3x3(x), atol=1e-6)
    shared = torch.randn(2, 4, 11, 8)
    lip = BottleneckLIP(6, width=4, logit_init=logit_init)
    assert torch.allclose(lip(x, shared), _avg3x3(x), atol=1e-6)


def test_one_adamw_step_narrows_the_reference_start_but_not_the_gradual_one():
    x = torch.randn(4, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    after = {}
    for logit_init in LIP_LOGIT_INITS:
        torch.manual_seed(0)
        model = _Stem(logit_init)
        inputs = _record_inputs(model)
        before = _window_sizes(model, x, inputs)
        assert all(abs(size - 9) < 1e-4 for size in before.values()), before
        _one_adamw_step(model, x)
        after[logit_init] = _window_sizes(model, x, inputs)
    # measured: reference 3.50 and 5.84, gradual 8.99996 and 8.99997 (9 = average pooling)
    assert all(size < 8 for size in after['reference'].values()), after
    assert all(size > 8.99 for size in after['gradual'].values()), after


@pytest.mark.parametrize('logit_init', LIP_LOGIT_INITS)
def test_lip_resnet_passes_its_start_to_every_lip_layer(logit_init):
    """LIPResNet-18 after its Kaiming init_cfg: every LIP layer average pooling; one AdamW
    step narrows the reference start's windows (measured 4.0-5.6) and not the gradual one's
    (9.0000)."""
    from lip_mmdet.models.backbones import LIPResNet
    torch.manual_seed(0)
    model = LIPResNet(depth=18, logit_init=logit_init)
    model.init_weights()
    assert all(layer.logit_init == logit_init for _, layer in pooling_layers(model))
    inputs = _record_inputs(model)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert all(abs(size - 9) < 1e-4 for size in _window_sizes(model, x, inputs).values())
    _one_adamw_step(model, x)
    after = _window_sizes(model, x, inputs)
    if logit_init == 'reference':
        assert all(size < 7 for size in after.values()), after
    else:
        assert all(size > 8.99 for size in after.values()), after


def test_init_weights_restores_the_chosen_start():
    layer = SimplifiedLIP(4, logit_init='gradual')
    conv_weight = layer.logit.conv.weight.detach().clone()
    assert conv_weight.abs().sum() > 0 and torch.all(layer.logit.bn.weight == 0)
    for param in layer.parameters():
        nn.init.normal_(param)
    layer.init_weights()
    assert torch.all(layer.logit.bn.weight == 0) and torch.all(layer.logit.bn.bias == 0)
    x = torch.randn(1, 4, 7, 7)
    torch.testing.assert_close(layer(x), _avg3x3(x))
    reference = SimplifiedLIP(4)
    assert torch.all(reference.logit.conv.weight == 0) and torch.all(reference.logit.bn.weight == 1)


def test_loaded_weights_override_the_start():
    trained = SimplifiedLIP(4)
    nn.init.normal_(trained.logit.conv.weight)
    layer = SimplifiedLIP(4, logit_init='gradual')
    layer.load_state_dict(trained.state_dict())
    x = torch.randn(1, 4, 7, 7)
    torch.testing.assert_close(layer(x), trained(x))


def test_bad_logit_init_and_a_norm_without_scale_raise():
    with pytest.raises(ValueError, match="unknown logit_init 'slow'"):
        SimplifiedLIP(4, logit_init='slow')
    with pytest.raises(ValueError, match='needs a norm with a learned scale'):
        SimplifiedLIP(4, norm_cfg=dict(type='IN', affine=False), logit_init='gradual')
