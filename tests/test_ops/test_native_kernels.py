"""The fused CPU kernels themselves: extreme logits and lambdas against the PyTorch-ops path."""
import pytest
import torch

from lip_mmdet.ops import dpp2d, lip2d

DTYPES = (torch.float64, torch.float32)


def _randn(*shape, dtype, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _tolerance(dtype):
    return dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-11)


def _forward_backward(function, inputs, backend):
    """(output, gradients of every input) of ``function(*inputs, backend=backend)``."""
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    out = function(*leaves, backend=backend)
    grad = _randn(*out.shape, dtype=out.dtype, seed=9)
    return (out.detach(), *torch.autograd.grad(out, leaves, grad))


# ---------------------------------------------------------------------------------------
# Extreme values: the max-shift keeps every weight finite and every window sum positive.


def _assert_finite(tensors, what):
    for index, t in enumerate(tensors):
        assert not t.isnan().any(), f'{what}: NaN in result {index}'


@pytest.mark.parametrize('dtype', DTYPES)
def test_lip_extreme_logits(dtype):
    big = torch.finfo(dtype).max
    values = torch.tensor([big, -big, 0.0, big / 2, -big / 2, 1e30, -1e30, big * 0.999],
                          dtype=dtype)
    index = torch.randint(0, len(values), (2, 3, 9, 8), generator=torch.Generator().manual_seed(0))
    logit = values[index]
    logit[0, 0] = big  # a constant plane at the largest value: the shared-shift path
    logit[0, 1] = -big
    x = _randn(2, 3, 9, 8, dtype=dtype)
    for window in (((3, 3), (2, 2), (1, 1)), ((2, 2), (1, 1), (0, 0)), ((5, 4), (2, 3), (2, 2))):
        def function(x, logit, backend, window=window):
            return lip2d(x, logit, *window, backend=backend)

        kernel = _forward_backward(function, (x, logit), 'cpu_kernel')
        reference = _forward_backward(function, (x, logit), 'torch')
        _assert_finite(kernel, f'lip2d {window}')
        for got, want in zip(kernel, reference):
            torch.testing.assert_close(got, want, **_tolerance(dtype))


def _dpp_extreme_inputs(dtype, case):
    x = _randn(2, 3, 9, 9, dtype=dtype)
    if case == 'flat':
        # every deviation 0 (x equals the guide): equal penalties, whose mean can round above
        # them; the largest log ratio may come out just below 0.
        x = torch.full_like(x, 0.7)
    elif case == 'ties':
        x = x.round()  # windows with several equal extrema
    return x


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('case', ['random', 'flat', 'ties'])
@pytest.mark.parametrize('reward', ['sym', 'asym'])
def test_dpp_extreme_lambda(dtype, case, reward):
    big = torch.finfo(dtype).max
    large = 1e10 if dtype == torch.float32 else 1e20  # where FMA contraction gave NaN
    x = _dpp_extreme_inputs(dtype, case)
    window = ((3, 3), (2, 2), (1, 1, 1, 1))
    guide = torch.nn.functional.avg_pool2d(x, 3, 2, 1)
    for lam_value in (large, 1e30, big / 2, big):
        alpha = torch.tensor([0.5, 1.0, 2.0], dtype=dtype)
        lam = torch.tensor([lam_value, lam_value / 3, lam_value], dtype=dtype)

        def function(x, guide, alpha, lam, backend):
            return dpp2d(x, guide, alpha, lam, reward, *window, backend=backend)

        kernel = _forward_backward(function, (x, guide, alpha, lam), 'cpu_kernel')
        _assert_finite(kernel, f'dpp2d lambda={lam_value:g}')
        # The PyTorch-ops form forms t - T from rounded products: a window whose largest
        # log ratio rounds below 0 gets e^-T = inf there (NaN); elsewhere both agree.
        reference = function(x, guide, alpha, lam, 'torch')
        finite = ~reference.isnan()
        torch.testing.assert_close(kernel[0][finite], reference[finite], **_tolerance(dtype))
        if lam_value == large:
            assert finite.all()


@pytest.mark.parametrize('dtype', DTYPES)
def test_dpp_any_lambda_sign_and_size(dtype):
    """Every finite lambda, of either sign, gives numbers (a negative one pools towards the
    pixels closest to the guide)."""
    big = torch.finfo(dtype).max
    x = _randn(1, 4, 6, 6, dtype=dtype)
    guide = torch.nn.functional.avg_pool2d(x, 2, 2)
    alpha = torch.full((4,), 0.5, dtype=dtype)
    for lam_values in ((0.0, 1e-30, 1.0, 5.0), (-1.0, -5.0, -1e10, -big), (big, -big, 0.0, 1e5)):
        lam = torch.tensor(lam_values, dtype=dtype)
        for reward in ('sym', 'asym'):
            out = dpp2d(x, guide, alpha, lam, reward, 2, 2, backend='cpu_kernel')
            _assert_finite([out], f'dpp2d lambda={lam_values}')
            reference = dpp2d(x, guide, alpha, lam, reward, 2, 2, backend='torch')
            finite = ~reference.isnan()
            torch.testing.assert_close(out[finite], reference[finite], **_tolerance(dtype))
