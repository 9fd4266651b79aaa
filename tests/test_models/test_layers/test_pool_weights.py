"""Window weights, per-pixel importance and effective window size of the pooling layers."""
import pytest
import torch
import torch.nn.functional as F

from lip_mmdet.models.layers import (
    S3DPP,
    BottleneckLIP,
    FullDPP,
    LiteDPP,
    SimplifiedLIP,
    effective_window_size,
    fold_window_weights,
    pooling_layers,
    relative_importance,
)
from lip_mmdet.ops.pool_args import as_pads, window_views


def windows_of(x, window):
    """(N, C, K, Ho, Wo) pixels of every window (0 on padding)."""
    top, bottom, left, right = as_pads(window['padding'])
    kernel, stride = window['kernel_size'], window['stride']
    padded = F.pad(x, (left, right, top, bottom))
    out_h = (x.shape[2] + top + bottom - kernel[0]) // stride[0] + 1
    out_w = (x.shape[3] + left + right - kernel[1]) // stride[1] + 1
    return torch.stack(list(window_views(padded, kernel, stride, (out_h, out_w))), dim=2)


def randomise(layer, scale=1.0):
    """Break the average-pooling initialisation so the weights differ per pixel."""
    torch.manual_seed(1)
    with torch.no_grad():
        for param in layer.parameters():
            param.add_(torch.randn_like(param) * scale)
    return layer


def lip_cases():
    simplified = randomise(SimplifiedLIP(3).double())
    bottleneck = randomise(BottleneckLIP(3, width=4).double())
    shared = torch.randn(2, 4, 7, 10, dtype=torch.float64)
    return [(simplified, ()), (bottleneck, (shared, ))]


def dpp_cases():
    return [
        (randomise(LiteDPP(3, 'asym', 3, 2, 1).double(), 0.5), ()),
        (randomise(LiteDPP(3, 'sym', 2, 2, 0).double(), 0.5), ()),
        (randomise(FullDPP(3, 'asym', 3, 2, 1).double(), 0.5), ()),
        (randomise(S3DPP(3, 'sym', kernel_size=2).dpp.double(), 0.5), ()),  # 'same' padding
        # a 2x2 window padded at the bottom/right of the odd side (as in DPPResNet)
        (randomise(LiteDPP(3, 'asym', 2, 2, 0, ceil_output=True).double(), 0.5), ()),
    ]


@pytest.mark.parametrize('layer, extra', lip_cases() + dpp_cases())
def test_window_weights_reproduce_forward(layer, extra):
    x = torch.randn(2, 3, 7, 10, dtype=torch.float64)  # odd and even sides
    weights = layer.window_weights(x, *extra)
    out = layer(x, *extra)
    assert weights.shape == (*out.shape[:2], weights.shape[2], *out.shape[2:])
    window = layer.window_for(x)
    k = window['kernel_size']
    assert weights.shape[2] == k[0] * k[1]
    torch.testing.assert_close(weights.sum(2), torch.ones_like(out))
    torch.testing.assert_close((weights * windows_of(x, window)).sum(2), out)
    padding_taps = windows_of(torch.ones_like(x), window) == 0
    assert torch.all(weights[padding_taps] == 0)


@pytest.mark.parametrize('layer, extra', lip_cases() + dpp_cases())
def test_importance_is_window_weights_relative_to_average_pooling(layer, extra):
    x = torch.randn(2, 3, 7, 10, dtype=torch.float64)
    importance = layer.importance(x, *extra)
    assert importance.shape == x.shape
    weights = layer.window_weights(x, *extra)
    window = layer.window_for(x)
    uniform = windows_of(torch.ones_like(x[:1, :1]), window)
    uniform = uniform / uniform.sum(2, keepdim=True)
    # each pixel's summed weights equal importance * the summed average-pooling weights
    torch.testing.assert_close(
        fold_window_weights(weights, x.shape[-2:], window),
        importance * fold_window_weights(uniform, x.shape[-2:], window))
    assert not torch.allclose(importance, torch.ones_like(importance))


def test_lip_at_initialisation_is_average_pooling():
    x = torch.randn(2, 6, 9, 12)
    for layer, extra in ((SimplifiedLIP(6), ()),
                         (BottleneckLIP(6, width=4), (torch.randn(2, 4, 9, 12), ))):
        weights = layer.window_weights(x, *extra)
        torch.testing.assert_close(layer.importance(x, *extra), torch.ones_like(x))
        assert effective_window_size(weights, x.shape[-2:], layer.pool_window) == \
            pytest.approx(9.0, rel=1e-6)


def test_effective_window_size_limits():
    window = dict(kernel_size=(3, 3), stride=(2, 2), padding=(1, 1))
    size = (9, 9)
    uniform = windows_of(torch.ones(1, 1, *size), window)
    uniform = (uniform / uniform.sum(2, keepdim=True)).expand(2, 3, -1, -1, -1)
    assert effective_window_size(uniform, size, window) == pytest.approx(9.0, rel=1e-6)
    # one pixel takes all the weight: max-like
    one_hot = torch.zeros_like(uniform)
    one_hot[:, :, 4] = 1
    assert effective_window_size(one_hot, size, window) == pytest.approx(1.0)
    # two equal pixels: exp(log 2)
    two = torch.zeros_like(uniform)
    two[:, :, 4] = two[:, :, 5] = 0.5
    assert effective_window_size(two, size, window) == pytest.approx(2.0)
    # a map too small for a window without padding falls back to all windows: 4 valid pixels
    small = windows_of(torch.ones(1, 1, 2, 2), window)
    small = small / small.sum(2, keepdim=True)
    assert effective_window_size(small, (2, 2), window) == pytest.approx(4.0, rel=1e-6)


def test_fold_counts_window_coverage():
    window = dict(kernel_size=(3, 3), stride=(2, 2), padding=(1, 1))
    ones = torch.ones(1, 1, 9, 4, 3)  # a 7x5 input has 4x3 windows
    covered = fold_window_weights(ones, (7, 5), window)[0, 0]
    # windows start at -1, 1, 3, 5: rows 1, 3, 5 lie in two windows, the others in one
    rows = torch.tensor([1., 2., 1., 2., 1., 2., 1.])
    cols = torch.tensor([1., 2., 1., 2., 1.])
    torch.testing.assert_close(covered, rows[:, None] * cols[None, :])


def test_relative_importance_of_max_pooling_concentrates_on_maxima():
    window = dict(kernel_size=(2, 2), stride=(2, 2), padding=(0, 0))
    one_hot = torch.zeros(1, 1, 4, 2, 2)
    one_hot[:, :, 0] = 1  # the top-left pixel of every window
    importance = relative_importance(one_hot, (4, 4), window)[0, 0]
    expected = torch.zeros(4, 4)
    expected[0::2, 0::2] = 4.0
    torch.testing.assert_close(importance, expected)
    assert float(importance.mean()) == pytest.approx(1.0)


def test_pooling_layers_lists_lip_and_dpp_in_module_order():
    model = torch.nn.Sequential(SimplifiedLIP(3), torch.nn.ReLU(),
                                S3DPP(3), LiteDPP(3))
    found = pooling_layers(model)
    assert [name for name, _ in found] == ['0', '2.dpp', '3']
    assert [layer.pool_kind for _, layer in found] == ['lip', 'dpp', 'dpp']
    assert found[0][1].pool_window['stride'] == (2, 2)
    assert found[1][1].pool_window['padding'] == (0, 1, 0, 1)  # 'same' for a 2x2 window
