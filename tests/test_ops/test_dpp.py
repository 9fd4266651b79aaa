"""dpp2d, its guides and S3 sampling: formula, paper limits, stability, gradients, errors."""
import pytest
import torch
import torch.nn.functional as F

from lip_mmdet.ops import (
    dpp2d,
    dpp_box_guide,
    dpp_filter_box_init,
    dpp_filter_guide,
    dpp_same_padding,
    s3_sample,
)

from reference_pooling import out_shape, reference_dpp, unfold_windows

REWARDS = ('sym', 'asym')
BACKENDS = ('cpu_kernel', 'torch')
WINDOWS = [(2, 2, 0), (3, 2, 1), (3, 1, 1), ((2, 3), (2, 1), (1, 1))]


def _x(shape, dtype=torch.float64, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64).to(dtype)


def _params(channels, alpha=1.0, lam=1.0, dtype=torch.float64):
    return (torch.full((channels,), alpha, dtype=dtype),
            torch.full((channels,), lam, dtype=dtype))


CASES = [(size, window) for size in [(1, 1), (3, 5), (7, 7), (4, 6)]
         for window in WINDOWS + [(2, 2, 1), (3, 1, (1, 0, 1, 1))]
         if min(out_shape(torch.empty(1, 1, *size), *window)) > 0]


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('reward', REWARDS)
@pytest.mark.parametrize('size,window', CASES)
def test_equals_textbook_formula(backend, reward, size, window):
    x = _x((2, 3, *size))
    guide = dpp_box_guide(x, *window) + 0.1  # off the mean, so asym sees clamped pixels
    alpha = torch.tensor([0.5, 1.0, 3.0], dtype=torch.float64)
    lam = torch.tensor([0.3, 1.0, 4.0], dtype=torch.float64)
    out = dpp2d(x, guide, alpha, lam, reward, *window, backend=backend)
    assert out.shape == (2, 3, *out_shape(x, *window))
    torch.testing.assert_close(out, reference_dpp(x, guide, alpha, lam, reward, *window))


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('reward', REWARDS)
@pytest.mark.parametrize('window', [(2, 2, 0), (3, 2, 1)])
def test_small_lambda_is_average_pooling(backend, reward, window):
    x = _x((2, 3, 7, 8))
    alpha, lam = _params(3, alpha=0.7, lam=1e-9)
    out = dpp2d(x, dpp_box_guide(x, *window), alpha, lam, reward, *window, backend=backend)
    torch.testing.assert_close(out, F.avg_pool2d(x, *window, count_include_pad=False))


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('window', [(2, 2, 0), (3, 2, 1)])
def test_large_lambda_asym_is_max_pooling(backend, window):
    x = _x((2, 3, 7, 8))
    alpha, lam = _params(3, lam=1e4)
    out = dpp2d(x, dpp_box_guide(x, *window), alpha, lam, 'asym', *window, backend=backend)
    torch.testing.assert_close(out, F.max_pool2d(x, *window))


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('window', [(2, 2, 0), (3, 2, 1)])
def test_large_lambda_sym_is_extremum_pooling(backend, window):
    x = _x((2, 3, 7, 8))
    guide = dpp_box_guide(x, *window)
    alpha, lam = _params(3, lam=1e4)
    out = dpp2d(x, guide, alpha, lam, 'sym', *window, backend=backend)
    windows = unfold_windows(x, *window)
    valid = unfold_windows(torch.ones_like(x), *window) > 0
    deviation = (windows - guide.reshape(6, 1, -1)).abs().masked_fill(~valid, -1)
    extremum = windows.gather(1, deviation.argmax(1, keepdim=True)).reshape(out.shape)
    torch.testing.assert_close(out, extremum)
    assert not torch.allclose(out, F.max_pool2d(x, *window))  # it picks minima too


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('reward', REWARDS)
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize('lam', [1.0, 1e3, 1e5])
def test_low_precision_and_huge_lambda_stay_finite(backend, reward, dtype, lam):
    x = (_x((2, 4, 9, 10)) * 30).to(dtype)
    alpha, lams = _params(4, alpha=1e-3, lam=lam, dtype=torch.float32)  # module params: fp32
    guide = dpp_box_guide(x, 3, 2, 1)
    out = dpp2d(x, guide, alpha, lams, reward, 3, 2, 1, backend=backend)
    assert out.dtype == dtype and out.isfinite().all()
    reference = dpp2d(x.double(), guide.double(), alpha.double(), lams.double(), reward, 3, 2,
                      1, backend='torch')
    # lambda / 2 multiplies the log-reward rounding error (1e3 * 1e-7 in float32) and x is ~30.
    tol = {torch.float32: 2e-3, torch.float16: 5e-2, torch.bfloat16: 5e-1}[dtype]
    torch.testing.assert_close(out.double(), reference, rtol=tol, atol=tol)


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('reward', REWARDS)
@pytest.mark.parametrize('window', [(2, 2, 0), (3, 2, 1), (2, 1, (0, 1, 0, 1))])
def test_gradcheck_inputs_guide_and_parameters(backend, reward, window):
    x = _x((1, 2, 5, 4)).requires_grad_()
    alpha = torch.tensor([0.5, 2.0], dtype=torch.float64, requires_grad=True)
    lam = torch.tensor([0.7, 3.0], dtype=torch.float64, requires_grad=True)
    guide = (dpp_box_guide(x.detach(), *window) + 0.1).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda *t: dpp2d(*t, reward, *window, backend=backend), (x, guide, alpha, lam))
    # Through the guides too (a guide is a function of x).
    weight = torch.randn(2, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, w, b: dpp2d(a, dpp_filter_guide(a, w, b, *window, backend=backend), alpha,
                              lam, reward, *window, backend=backend), (x, weight, bias))
    # One alpha/lambda shared by all channels.
    assert torch.autograd.gradcheck(
        lambda a, al, la: dpp2d(a, dpp_box_guide(a, *window), al, la, reward, *window,
                                backend=backend), (x, alpha[:1], lam[1:]))


@pytest.mark.parametrize('backend', BACKENDS)
def test_gradients_finite_with_huge_lambda(backend):
    x = _x((1, 3, 6, 6), torch.float32).requires_grad_()
    lam = torch.full((3,), 1e4, requires_grad=True)
    alpha = torch.ones(3, requires_grad=True)
    for reward in REWARDS:
        out = dpp2d(x, dpp_box_guide(x), alpha, lam, reward, backend=backend)
        grads = torch.autograd.grad(out.sum(), (x, alpha, lam))
        assert all(g.isfinite().all() for g in grads)


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('window', [(2, 2, 0), (3, 2, 1), (3, 1, 1), (1, 1, 0),
                                    (5, 2, 2), (2, 1, (0, 1, 0, 1))])
def test_box_initialised_filter_guide_equals_box_guide(backend, window):
    x = _x((2, 3, 7, 6))
    weight = dpp_filter_box_init(window[0]).expand(3, 1, 3, 3)
    guide = dpp_filter_guide(x, weight, None, *window, backend=backend)
    box = dpp_box_guide(x, *window, backend=backend)
    assert torch.allclose(box, dpp_box_guide(x, *window, backend='torch'))  # F.avg_pool2d
    if window[0] <= 3:
        torch.testing.assert_close(guide, box)
    else:  # wider windows: the mean of their central 3x3
        torch.testing.assert_close(guide, dpp_box_guide(x, 3, 2, 1, backend='torch'))


@pytest.mark.parametrize('backend', BACKENDS)
def test_filter_guide_is_aligned_with_the_window(backend):
    x = _x((1, 2, 8, 8))
    first_tap = torch.zeros(2, 1, 3, 3, dtype=torch.float64)
    first_tap[:, :, 0, 0] = 1
    # 2x2/s2: the filter's first tap is the window's top-left pixel.
    torch.testing.assert_close(dpp_filter_guide(x, first_tap, None, 2, 2, 0, backend=backend),
                               x[..., ::2, ::2])
    # 3x3/s2/p1: the centre tap is the window centre; the bias is added.
    centre = torch.zeros_like(first_tap)
    centre[:, :, 1, 1] = 1
    bias = torch.tensor([1.0, -2.0], dtype=torch.float64)
    torch.testing.assert_close(dpp_filter_guide(x, centre, bias, 3, 2, 1, backend=backend),
                               x[..., ::2, ::2] + bias.view(1, 2, 1, 1))


@pytest.mark.parametrize('window', [(2, 2, 0), (3, 2, 1), (5, 3, 2), (2, 1, (0, 1, 0, 1))])
def test_filter_guide_backends_agree_with_gradients(window):
    x = _x((2, 3, 9, 7)).requires_grad_()
    weight = torch.randn(3, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, requires_grad=True)
    results = []
    for backend in BACKENDS:
        guide = dpp_filter_guide(x, weight, bias, *window, backend=backend)
        results.append((guide, *torch.autograd.grad(guide.square().sum(), (x, weight, bias))))
    for kernel, conv in zip(*results):
        torch.testing.assert_close(kernel, conv)


def test_same_padding_keeps_the_size_at_stride_one():
    x = _x((1, 2, 5, 6))
    assert dpp_same_padding(2) == (0, 1, 0, 1) and dpp_same_padding(3) == (1, 1, 1, 1)
    for kernel in (2, 3, (2, 3)):
        pads = dpp_same_padding(kernel)
        guide = dpp_box_guide(x, kernel, 1, pads)
        out = dpp2d(x, guide, *_params(2), 'sym', kernel, 1, pads)
        assert guide.shape == out.shape == x.shape
        torch.testing.assert_close(out, reference_dpp(x, guide, *_params(2), 'sym', kernel, 1,
                                                      pads))


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('shape', [(0, 3, 6, 6)])  # zero channels: F.avg_pool2d refuses them
def test_empty_batch(backend, shape):
    x = torch.randn(shape, requires_grad=True)
    out = dpp2d(x, dpp_box_guide(x), *_params(shape[1], dtype=torch.float32), backend=backend)
    assert out.shape == (*shape[:2], 3, 3)
    out.sum().backward()
    assert x.grad.shape == shape


def test_backends_agree_float32_multithreaded():
    torch.set_num_threads(2)  # the kernel splits planes over its own threads (restored after)
    x = _x((2, 8, 64, 64), torch.float32) * 3
    alpha = torch.rand(8) + 0.1
    lam = torch.rand(8) * 4
    results = []
    for backend in BACKENDS:
        xr = x.clone().requires_grad_()
        params = [t.clone().requires_grad_() for t in (alpha, lam)]
        out = dpp2d(xr, dpp_box_guide(xr, 3, 2, 1), *params, 'sym', 3, 2, 1, backend=backend)
        out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(1)))
        results.append((out, xr.grad, *(p.grad for p in params)))
    for kernel, torch_ops in zip(*results):
        torch.testing.assert_close(kernel, torch_ops, rtol=1e-4, atol=1e-4)


def test_keeps_only_the_inputs_for_backward():
    x = _x((1, 2, 8, 8), torch.float32).requires_grad_()
    guide = dpp_box_guide(x.detach()).requires_grad_()
    alpha, lam = (t.requires_grad_() for t in _params(2, dtype=torch.float32))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        dpp2d(x, guide, alpha, lam, backend='cpu_kernel')
    assert sorted(t.data_ptr() for t in saved) == sorted(
        t.data_ptr() for t in (x, guide, alpha, lam))


def test_s3_sample_picks_from_every_cell():
    x = torch.arange(7 * 9, dtype=torch.float32).view(1, 1, 7, 9).expand(2, 3, 7, 9)
    out = s3_sample(x, 2, 4, torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, 4, 5)
    rows, cols = (out[0, 0, :, 0] // 9).long(), (out[0, 0, 0, :] % 9).long()
    for picks, size in ((rows, 7), (cols, 9)):
        assert (picks[1:] > picks[:-1]).all() and picks.max() < size
        cells = picks // 4
        counts = torch.bincount(cells, minlength=-(-size // 4))
        assert counts[:-1].eq(2).all()  # 4 / 2 rows from each full cell
    assert torch.equal(out[1], out[0]) and torch.equal(out[0, 2], out[0, 0])


def test_s3_sample_is_reproducible_and_random():
    x = torch.randn(1, 1, 16, 16)
    a = s3_sample(x, 2, 2, torch.Generator().manual_seed(3))
    b = s3_sample(x, 2, 2, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    torch.manual_seed(5)
    c = s3_sample(x)
    torch.manual_seed(5)
    assert torch.equal(c, s3_sample(x))
    draws = {tuple(s3_sample(x).flatten()[:8].tolist()) for _ in range(5)}
    assert len(draws) > 1


@pytest.mark.parametrize('call,error,message', [
    (lambda x, g, a, lm: dpp2d(x, g, a, lm, reward='max'), ValueError, 'reward'),
    (lambda x, g, a, lm: dpp2d(x, g[..., :2], a, lm), ValueError, 'guide must have'),
    (lambda x, g, a, lm: dpp2d(x, g.double(), a, lm), TypeError, 'dtype'),
    (lambda x, g, a, lm: dpp2d(x, g, a[:2], lm), ValueError, 'alpha'),
    (lambda x, g, a, lm: dpp2d(x, g, a, lm.tolist()), TypeError, 'lam'),
    (lambda x, g, a, lm: dpp2d(x[0], g, a, lm), ValueError, 'shape'),
    (lambda x, g, a, lm: dpp2d(x, g, a, lm, kernel_size=0), ValueError, 'kernel_size'),
    (lambda x, g, a, lm: dpp2d(x, g, a, lm, stride=-1), ValueError, 'stride'),
    (lambda x, g, a, lm: dpp2d(x, g, a, lm, padding=2), ValueError, 'half the kernel'),
    (lambda x, g, a, lm: dpp2d(x, g, a, lm, padding=(0, 2, 0, 0)), ValueError, 'padding'),
    (lambda x, g, a, lm: dpp2d(x, g, a, lm, kernel_size=8), ValueError, 'larger than'),
    (lambda x, g, a, lm: dpp_filter_guide(x, a, None), ValueError, 'weight'),
    (lambda x, g, a, lm: s3_sample(x, 2, 3), ValueError, 'multiple of stride'),
    (lambda x, g, a, lm: s3_sample(x, 0, 2), ValueError, 'stride'),
])
def test_bad_inputs(call, error, message):
    x = torch.randn(1, 3, 6, 6)
    alpha, lam = _params(3, dtype=torch.float32)
    with pytest.raises(error, match=message):
        call(x, dpp_box_guide(x), alpha, lam)
