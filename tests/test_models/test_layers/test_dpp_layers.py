"""DPP layers: parametrisation, initial behaviour, shapes, S3 sampling, errors."""
import pytest
import torch
import torch.nn.functional as F

from lip_mmdet.models.layers import LOG_ALPHA_MAX, S3DPP, FullDPP, LiteDPP
from lip_mmdet.ops import dpp2d, dpp_box_guide


def test_parameters_per_channel():
    lite, full = LiteDPP(8), FullDPP(8)
    assert {n: p.shape for n, p in lite.named_parameters()} == {
        'log_alpha': (8,), 'log_lambda': (8,)}
    assert {n: p.shape for n, p in full.named_parameters()} == {
        'log_alpha': (8,), 'log_lambda': (8,), 'guide_weight': (8, 1, 3, 3),
        'guide_bias': (8,)}
    assert sum(p.numel() for p in full.parameters()) == 12 * 8  # 2 + 10 per channel
    s3 = S3DPP(8)
    assert sorted(n for n, _ in s3.named_parameters()) == ['dpp.log_alpha', 'dpp.log_lambda']


def test_parametrisation_alpha_lambda_positive_and_clamped():
    layer = LiteDPP(3)
    assert layer.alpha.eq(1).all() and layer.lam.eq(1).all()  # raw 0 at init
    with torch.no_grad():
        layer.log_alpha.copy_(torch.tensor([-5.0, 20.0, 2.0]))
        layer.log_lambda.copy_(torch.tensor([-3.0, 0.5, 1.0]))
    torch.testing.assert_close(layer.alpha, torch.tensor([-5.0, LOG_ALPHA_MAX, 2.0]).exp())
    torch.testing.assert_close(layer.lam, torch.tensor([-3.0, 0.5, 1.0]).exp())
    layer(torch.randn(2, 3, 6, 6)).sum().backward()
    assert layer.log_alpha.grad[1] == 0 and layer.log_alpha.grad[[0, 2]].ne(0).all()
    assert layer.log_lambda.grad.ne(0).all()


@pytest.mark.parametrize('reward', ['sym', 'asym'])
@pytest.mark.parametrize('window', [dict(), dict(kernel_size=3, stride=2, padding=1)])
def test_lite_equals_formula_and_full_starts_as_lite(reward, window):
    x = torch.randn(2, 4, 9, 7)
    lite, full = LiteDPP(4, reward, **window), FullDPP(4, reward, **window)
    args = (window.get('kernel_size', 2), window.get('stride', 2), window.get('padding', 0))
    expected = dpp2d(x, dpp_box_guide(x, *args), torch.ones(4), torch.ones(4), reward, *args)
    torch.testing.assert_close(lite(x), expected)
    torch.testing.assert_close(full(x), expected)
    assert expected.shape == F.avg_pool2d(x, *args).shape


def test_init_weights_restores_full_guide():
    layer = FullDPP(4)
    x = torch.randn(1, 4, 8, 8)
    reference = layer(x)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    assert not torch.allclose(layer(x), reference)
    layer.init_weights()
    torch.testing.assert_close(layer(x), reference)


@pytest.mark.parametrize('layer_type', [LiteDPP, FullDPP])
@pytest.mark.parametrize('reward', ['sym', 'asym'])
def test_gradcheck_parameters(layer_type, reward):
    layer = layer_type(2, reward, kernel_size=3, stride=2, padding=1).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    names = [n for n, _ in layer.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for p in layer.parameters())
    assert torch.autograd.gradcheck(
        lambda a, *ps: torch.func.functional_call(layer, dict(zip(names, ps)), (a,)),
        (x, *params))


def test_half_input_with_float_parameters():
    layer = LiteDPP(4, 'asym')
    with torch.no_grad():
        layer.log_lambda.fill_(7.0)  # lambda ~ 1100
    x = torch.randn(2, 4, 10, 10) * 50
    out = layer(x.half())
    assert out.dtype == torch.float16 and out.isfinite().all()
    torch.testing.assert_close(out.float(), F.max_pool2d(x.half().float(), 2), rtol=1e-2,
                               atol=1e-1)


@pytest.mark.parametrize('size', [(1, 1), (3, 5), (7, 7), (8, 6)])
@pytest.mark.parametrize('guide', ['lite', 'full'])
def test_s3dpp_shapes_and_eval_is_deterministic_average(size, guide):
    layer = S3DPP(3, guide=guide, seed=0)
    x = torch.randn(2, 3, *size)
    expected_shape = (2, 3, -(-size[0] // 2), -(-size[1] // 2))
    assert layer.train()(x).shape == expected_shape
    layer.eval()
    out = layer(x)
    assert out.shape == expected_shape
    torch.testing.assert_close(out, layer(x), rtol=0, atol=0)
    full_resolution = layer.dpp(x)
    assert full_resolution.shape == x.shape
    torch.testing.assert_close(out, F.avg_pool2d(full_resolution, 2, 2, ceil_mode=True))


def test_s3dpp_training_is_reproducible_under_a_seed():
    x = torch.randn(2, 3, 16, 16)
    a, b = S3DPP(3, seed=7).train(), S3DPP(3, seed=7).train()
    first = a(x)
    torch.testing.assert_close(first, b(x), rtol=0, atol=0)
    assert not torch.equal(a(x), first)  # a fresh draw on the next call
    unseeded = S3DPP(3).train()
    torch.manual_seed(11)
    c = unseeded(x)
    torch.manual_seed(11)
    torch.testing.assert_close(unseeded(x), c, rtol=0, atol=0)
    # Each output pixel is a stride-1 DPP value from its 2x2 cell.
    dense = a.dpp(x).unfold(2, 2, 2).unfold(3, 2, 2).flatten(-2)
    assert (dense == first[..., None]).any(-1).all()


def test_s3dpp_trains():
    layer = S3DPP(3, reward='asym', guide='full', seed=0)
    layer(torch.randn(2, 3, 8, 8)).square().sum().backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in layer.parameters())


@pytest.mark.parametrize('build,message', [
    (lambda: LiteDPP(4, reward='max'), 'reward'),
    (lambda: FullDPP(0), 'channels'),
    (lambda: LiteDPP(4, kernel_size=0), 'kernel_size'),
    (lambda: LiteDPP(4, kernel_size=3, padding=2), 'half the kernel'),
    (lambda: LiteDPP(4, padding='same'), 'stride 1'),
    (lambda: S3DPP(4, guide='gauss'), 'guide'),
    (lambda: S3DPP(4, grid_size=3), 'multiple of stride'),
])
def test_bad_arguments(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_wrong_channels_named():
    with pytest.raises(ValueError, match=r'expects \(N, 4, H, W\)'):
        LiteDPP(4)(torch.randn(1, 3, 6, 6))


@pytest.mark.parametrize('layer_type', [LiteDPP, FullDPP])
def test_dpp_traces_like_eager(layer_type):
    """FLOP counters trace the model: the traced DPP must run and match eager mode."""
    layer = layer_type(4, reward='sym').eval()
    x = torch.randn(2, 4, 9, 12)
    traced = torch.jit.trace(layer, x, check_trace=False)
    torch.testing.assert_close(traced(x), layer(x))
