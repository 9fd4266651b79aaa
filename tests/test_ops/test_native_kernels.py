"""The fused CPU kernels themselves: edge geometries against the PyTorch-ops path, extreme
logits and lambdas, the status codes of the C entry points and the checks of run_kernel.

This file is also what the sanitizer test (test_native_sanitized.py) runs against the kernels
built with AddressSanitizer and UndefinedBehaviorSanitizer, so its cases touch every kernel,
both dtypes and the geometries at the edges of the indexing.
"""
import ctypes
import os

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lip_mmdet.ops import dpp2d, dpp_filter_guide, lip2d, native

OPS = torch.ops.lip_mmdet
DTYPES = (torch.float64, torch.float32)
INT64_MAX = (1 << 63) - 1

# (H, W, kernel, stride, padding): 1x1 maps, windows equal to the padded input, odd sizes,
# strides above the kernel, padding at the largest each op allows, rows wider than a vector.
LIP_GEOMETRIES = [
    (1, 1, (1, 1), (1, 1), (0, 0)),
    (1, 1, (3, 3), (1, 1), (1, 1)),
    (1, 1, (2, 3), (2, 1), (1, 1)),
    (5, 4, (7, 6), (1, 1), (1, 1)),
    (5, 4, (7, 6), (3, 5), (3, 3)),
    (7, 5, (3, 3), (2, 2), (1, 1)),
    (6, 9, (4, 5), (3, 2), (2, 2)),
    (3, 37, (2, 3), (3, 4), (1, 1)),
    (2, 2, (4, 4), (2, 2), (2, 2)),
    # (top, bottom, left, right), each side up to kernel - 1
    (1, 1, (3, 3), (1, 1), (2, 2, 2, 2)),
    (4, 3, (5, 4), (1, 1), (1, 0, 0, 1)),
    (2, 5, (4, 4), (2, 3), (3, 0, 1, 3)),
]
# dpp2d's, with (top, bottom, left, right) padding, each up to kernel - 1.
DPP_GEOMETRIES = [
    (1, 1, (1, 1), (1, 1), (0, 0, 0, 0)),
    (1, 1, (3, 3), (1, 1), (2, 2, 2, 2)),
    (1, 1, (2, 2), (2, 2), (1, 0, 0, 1)),
    (4, 3, (5, 4), (1, 1), (1, 0, 0, 1)),
    (4, 3, (6, 5), (4, 4), (1, 1, 1, 1)),
    (7, 5, (3, 3), (2, 2), (1, 1, 1, 1)),
    (5, 6, (3, 2), (3, 1), (0, 2, 1, 0)),
    (3, 35, (2, 3), (1, 2), (1, 1, 2, 2)),
]
# The filter guide also runs for windows wider than its 3 taps (negative offsets).
FILTER_GEOMETRIES = DPP_GEOMETRIES + [
    (6, 7, (5, 5), (2, 3), (0, 4, 2, 2)),
    (1, 1, (4, 4), (1, 1), (3, 3, 0, 3)),
]


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


def _assert_backends_agree(function, inputs, dtype):
    kernel = _forward_backward(function, inputs, 'cpu_kernel')
    reference = _forward_backward(function, inputs, 'torch')
    for got, want in zip(kernel, reference):
        torch.testing.assert_close(got, want, **_tolerance(dtype))


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('h, w, kernel, stride, padding', LIP_GEOMETRIES)
def test_lip_edge_geometries(h, w, kernel, stride, padding, dtype):
    x = _randn(2, 3, h, w, dtype=dtype)
    logit = _randn(2, 3, h, w, dtype=dtype, seed=1) * 3
    logit[1, 1] *= 40  # a plane whose logit range exceeds the shared shift: per-window path

    def function(x, logit, backend):
        return lip2d(x, logit, kernel, stride, padding, backend=backend)

    _assert_backends_agree(function, (x, logit), dtype)


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('reward', ['sym', 'asym'])
@pytest.mark.parametrize('h, w, kernel, stride, padding', DPP_GEOMETRIES)
def test_dpp_edge_geometries(h, w, kernel, stride, padding, reward, dtype):
    x = _randn(2, 3, h, w, dtype=dtype)
    top, bottom, left, right = padding
    out_size = ((h + top + bottom - kernel[0]) // stride[0] + 1,
                (w + left + right - kernel[1]) // stride[1] + 1)
    guide = _randn(2, 3, *out_size, dtype=dtype, seed=1) * 0.3
    alpha = torch.tensor([0.5, 1.0, 2.0], dtype=dtype)
    lam = torch.tensor([0.3, 1.0, 4.0], dtype=dtype)

    def function(x, guide, alpha, lam, backend):
        return dpp2d(x, guide, alpha, lam, reward, kernel, stride, padding, backend=backend)

    _assert_backends_agree(function, (x, guide, alpha, lam), dtype)


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('h, w, kernel, stride, padding', FILTER_GEOMETRIES)
def test_filter_guide_edge_geometries(h, w, kernel, stride, padding, dtype):
    x = _randn(2, 3, h, w, dtype=dtype)
    weight = _randn(3, 1, 3, 3, dtype=dtype, seed=2)
    bias = _randn(3, dtype=dtype, seed=3)

    def function(x, weight, bias, backend):
        return dpp_filter_guide(x, weight, bias, kernel, stride, padding, backend=backend)

    _assert_backends_agree(function, (x, weight, bias), dtype)


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


@pytest.mark.parametrize('dtype', DTYPES)
def test_nan_inputs_give_nan_only_in_their_windows(dtype):
    """NaN logits, features and guides reach the exp and log polynomials (whose integer
    exponent arithmetic must stay defined) and stay in the windows that contain them."""
    x = _randn(1, 2, 6, 7, dtype=dtype)
    logit = _randn(1, 2, 6, 7, dtype=dtype, seed=1)
    x[0, 0, 1, 2] = float('nan')
    logit[0, 1, 4, 5] = float('nan')
    guide = torch.nn.functional.avg_pool2d(logit, 2, 2)
    alpha, lam = torch.full((2,), 0.5, dtype=dtype), torch.full((2,), 3.0, dtype=dtype)
    calls = [lambda backend: lip2d(x, logit, 3, 2, 1, backend=backend)]
    calls += [lambda backend, reward=reward: dpp2d(x, guide, alpha, lam, reward, 2, 2,
                                                   backend=backend)
              for reward in ('sym', 'asym')]
    for call in calls:
        got, want = call('cpu_kernel'), call('torch')
        assert got.isnan().any()
        torch.testing.assert_close(got, want, equal_nan=True, **_tolerance(dtype))


# ---------------------------------------------------------------------------------------
# Status codes: every entry point validates its geometry before touching memory.


@pytest.fixture(scope='module')
def library():
    library = native.pooling_cpu_library()
    if library is None:
        pytest.skip('the fused CPU kernels are unavailable')
    if os.environ.get('LIP_MMDET_SANITIZE') == '1':
        # the sanitizer run must exercise the instrumented library: it links the ASan runtime
        assert hasattr(library, '__asan_init'), 'an uninstrumented library was loaded'
    return library


def _scratch(count=128):
    """Small buffers the kernels may be pointed at: a rejected call must not touch them, a
    valid one (POOL_OK: 75 input and 27 output values) fits."""
    return [torch.zeros(count, dtype=torch.float64) for _ in range(9)]


FIELDS = tuple(name for name, _ in native.KernelGeometry._fields_)


def _geometry(base, **changes):
    """A KernelGeometry of ``base`` (a dict of every field) with ``changes``."""
    values = dict(base, **changes)
    return native.KernelGeometry(*(values[name] for name in FIELDS))


def _call(library, name, geometry, *scalars, pointers=None, threads=1):
    buffers = _scratch()
    arity = {'lip2d_forward': 3, 'lip2d_backward': 5, 'dpp2d_forward': 5,
             'dpp2d_backward': 9, 'dpp_filter_guide_forward': 4,
             'dpp_filter_guide_backward': 6}[name]
    if pointers is None:
        pointers = [b.data_ptr() for b in buffers[:arity]]
    return getattr(library, f'{name}_f64')(*pointers, ctypes.byref(geometry), *scalars, threads)


# A valid 3x3, stride-2, padding-1 pooling of 5x5 planes (3 planes of 3 channels).
POOL_OK = dict(planes=3, channels=3, height=5, width=5, out_height=3, out_width=3, kh=3, kw=3,
               sh=2, sw=2, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1)
# The filter guide: its 3x3 filter as the window, offsets top = left = 1.
FILTER_OK = dict(POOL_OK, pad_bottom=0, pad_right=0)
ONE_PIXEL = dict(planes=1, channels=1, height=1, width=1, out_height=1, out_width=1, kh=1,
                 kw=1, sh=1, sw=1, pad_top=0, pad_bottom=0, pad_left=0, pad_right=0)

# lip2d and dpp2d validate one geometry with the same checks (check_pooling in checks.h).
POOLING_STATUS_CASES = [
    (dict(planes=-3), 2),
    (dict(channels=0), 2),
    (dict(channels=2), 2),  # planes not a multiple of the channels
    (dict(height=0), 2),
    (dict(out_width=0), 2),
    (dict(kh=0), 3),
    (dict(sw=0), 3),
    (dict(pad_top=-1), 3),
    (dict(pad_right=-1), 3),
    (dict(pad_bottom=3), 3),  # padding equal to the kernel: windows without a pixel
    (dict(height=1, width=1, out_height=1, out_width=1, sh=1, sw=1, pad_top=0, pad_bottom=0,
          pad_left=0, pad_right=0), 3),  # kernel larger than the padded input
    (dict(out_height=4), 4),
    (dict(out_width=2), 4),
    (dict(ONE_PIXEL, kh=1 << 62), 3),
    (dict(ONE_PIXEL, height=INT64_MAX, out_height=INT64_MAX), 5),
    (dict(ONE_PIXEL, height=INT64_MAX, kh=3, pad_top=1, pad_bottom=1), 5),  # padded H
    (dict(ONE_PIXEL, planes=1 << 40, height=1 << 20, width=1 << 20, out_height=1 << 20,
          out_width=1 << 20), 5),
    (dict(ONE_PIXEL, height=1 << 31, width=1 << 31, out_height=1 << 31, out_width=1 << 31),
     5),  # bytes overflow
    # a kernel of 2^62 with the padding that makes it fit one row: the padded plane overflows
    (dict(ONE_PIXEL, kh=1 << 62, sh=1 << 62, pad_top=(1 << 62) - 1,
          pad_bottom=(1 << 62) - 1), 5),
    (dict(ONE_PIXEL, kh=1 << 62, kw=1 << 62, pad_top=1 << 61, pad_bottom=(1 << 62) - 1), 3),
    (dict(ONE_PIXEL, height=2, width=1 << 62, out_height=2, out_width=1 << 62), 5),
    (dict(ONE_PIXEL, width=1 << 40, out_width=(1 << 40) - (1 << 30) + 1, kw=1 << 30),
     5),  # K * Wo of scratch
]


@pytest.mark.parametrize('changes, status', POOLING_STATUS_CASES)
def test_pooling_status_codes(library, changes, status):
    geometry = _geometry(POOL_OK, **changes)
    assert _call(library, 'lip2d_forward', geometry, 60.0) == status
    assert _call(library, 'lip2d_backward', geometry, 60.0) == status
    assert _call(library, 'dpp2d_forward', geometry, 1) == status
    assert _call(library, 'dpp2d_backward', geometry, 0) == status


FILTER_STATUS_CASES = [
    (dict(channels=2), 2),
    (dict(out_width=0), 2),
    (dict(sh=0), 3),
    (dict(sw=-1), 3),
    (dict(kh=2), 3),  # the filter is 3x3
    (dict(pad_top=-(1 << 63)), 5),
    (dict(pad_left=-INT64_MAX), 5),
    (dict(out_height=1 << 62, sh=4), 5),
]


@pytest.mark.parametrize('changes, status', FILTER_STATUS_CASES)
def test_filter_guide_status_codes(library, changes, status):
    geometry = _geometry(FILTER_OK, **changes)
    assert _call(library, 'dpp_filter_guide_forward', geometry) == status
    assert _call(library, 'dpp_filter_guide_backward', geometry) == status


def test_scalar_thread_and_pointer_status_codes(library):
    pool, guide = _geometry(POOL_OK), _geometry(FILTER_OK)
    for bad in (float('nan'), -1.0, 81.0, float('inf')):
        assert _call(library, 'lip2d_forward', pool, bad) == 7
    for threads in (0, -5, 4097):
        assert _call(library, 'lip2d_forward', pool, 60.0, threads=threads) == 6
        assert _call(library, 'dpp2d_forward', pool, 1, threads=threads) == 6
        assert _call(library, 'dpp_filter_guide_forward', guide, threads=threads) == 6
    assert _call(library, 'lip2d_forward', pool, 60.0, pointers=[None] * 3) == 8
    assert _call(library, 'dpp2d_backward', pool, 0, pointers=[None] * 9) == 8
    assert _call(library, 'dpp_filter_guide_forward', guide, pointers=[None] * 4) == 8
    # no planes: nothing to read, whatever the pointers
    assert _call(library, 'lip2d_forward', _geometry(POOL_OK, planes=0), 60.0,
                 pointers=[None] * 3) == 0
    assert _call(library, 'lip2d_forward', pool, 60.0) == 0
    # a null geometry
    function = library.lip2d_forward_f64
    assert function(*[b.data_ptr() for b in _scratch()[:3]], None, 60.0, 1) == 8


def test_run_kernel_names_the_problem(library):
    x = torch.zeros(1, 1, 5, 5, dtype=torch.float64)
    out = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    one_plane = dict(POOL_OK, planes=1, channels=1)
    with pytest.raises(ValueError, match=r'lip2d_forward: invalid window.*KernelGeometry\('
                       r'planes=1, .*pad_top=3'):
        native.run_kernel(library, 'lip2d_forward', (x, x, out),
                          _geometry(one_plane, pad_top=3), 60.0)
    with pytest.raises(ValueError, match='output size is not the one'):
        native.run_kernel(library, 'lip2d_forward', (x, x, out),
                          _geometry(one_plane, sh=1, sw=1), 60.0)
    with pytest.raises(ValueError, match='shift_range'):
        native.run_kernel(library, 'lip2d_forward', (x, x, out), _geometry(one_plane),
                          float('nan'))
    # The buffers must match the geometry: the C side cannot check them.
    with pytest.raises(ValueError, match='tensor 2 has 9 elements, the geometry gives 25'):
        native.run_kernel(library, 'lip2d_forward', (x, x, out),
                          native.KernelGeometry.of(x.shape, (5, 5), (1, 1), (1, 1),
                                                   (0, 0, 0, 0)), 60.0)
    with pytest.raises(TypeError, match='takes a KernelGeometry'):
        native.run_kernel(library, 'lip2d_forward', (x, x, out), tuple(POOL_OK.values()), 60.0)
    with pytest.raises(ValueError, match='takes 14 int64 values'):
        native.KernelGeometry.of(x.shape, (3, 3), (3, 3), (2, 2), (1, 1, 1, 1 << 64))
    with pytest.raises(ValueError, match='takes 14 int64 values'):
        native.KernelGeometry.of(x.shape, (3, 3), (3, 3), (2, 2), (1, 1, 1))
    with pytest.raises(ValueError, match='not contiguous'):
        native.run_kernel(library, 'lip2d_forward', (x, x.transpose(2, 3), out),
                          _geometry(one_plane), 60.0)
    with pytest.raises(TypeError, match='dtype torch.float32'):
        native.run_kernel(library, 'lip2d_forward', (x, x.float(), out), _geometry(one_plane),
                          60.0)
    with pytest.raises(ValueError, match='takes 3 tensors'):
        native.run_kernel(library, 'lip2d_forward', (x, x), _geometry(one_plane), 60.0)


def test_registered_op_with_short_parameters_raises():
    """A per-channel parameter of one value, passed to the registered op directly (the
    public function expands it): an error, not a read past its end."""
    x = _randn(1, 3, 4, 4, dtype=torch.float64)
    guide = torch.nn.functional.avg_pool2d(x, 2, 2)
    one = torch.ones(1, dtype=torch.float64)
    with pytest.raises((ValueError, RuntimeError)):
        OPS.dpp2d(x, guide, one, one, True, [2, 2], [2, 2], [0, 0, 0, 0], 'cpu_kernel')


# ---------------------------------------------------------------------------------------
# The C validation against a Python statement of the same rules, on random (mostly
# invalid, some huge) sizes. A call the rules accept gets buffers of exactly its size.


def _expected_pooling_status(g):
    """check_pooling's status for the geometry ``g`` (a dict), stated in Python."""
    if g['planes'] < 0 or g['channels'] < 1 or g['planes'] % g['channels'] or min(
            g['height'], g['width'], g['out_height'], g['out_width']) < 1:
        return 2
    axes = (('height', 'kh', 'sh', 'pad_top', 'pad_bottom', 'out_height'),
            ('width', 'kw', 'sw', 'pad_left', 'pad_right', 'out_width'))
    expected = []
    for size, k, s, before, after, _ in axes:
        size, k, s, before, after = (g[n] for n in (size, k, s, before, after))
        if k < 1 or s < 1 or min(before, after) < 0 or max(before, after) >= k:
            return 3
        if size + before + after > INT64_MAX:
            return 5
        if size + before + after < k:
            return 3
        expected.append((size + before + after - k) // s + 1)
    if [g[axis[-1]] for axis in axes] != expected:
        return 4
    padded = ((g['height'] + g['pad_top'] + g['pad_bottom'])
              * (g['width'] + g['pad_left'] + g['pad_right']))
    if max(g['planes'] * g['height'] * g['width'], g['planes'] * g['out_height'] * g['out_width'],
           padded, g['kh'] * g['kw'] * g['out_width']) * 8 > INT64_MAX:
        return 5
    return 0


_small = st.integers(-2, 12)
_any_int64 = st.one_of(_small, st.integers(-(1 << 63), INT64_MAX),
                       st.sampled_from([INT64_MAX, 1 << 62, 1 << 31, (1 << 62) - 1]))


@pytest.mark.fuzz
@given(values=st.tuples(*([_any_int64] + [_small] * 13)) | st.tuples(*[_any_int64] * 14))
def test_pooling_validation_matches_its_rules(library, values):
    g = dict(zip(FIELDS, values))
    expected = _expected_pooling_status(g)
    geometry = native.KernelGeometry(*values)
    if expected != 0:
        assert _call(library, 'lip2d_forward', geometry, 60.0) == expected
        assert _call(library, 'dpp2d_forward', geometry, 1) == expected
        return
    planes, h, w = g['planes'], g['height'], g['width']
    if planes * h * w > 1 << 16:
        return  # valid, but too large to allocate here
    x = _randn(planes * h * w, dtype=torch.float64)
    out = torch.empty(planes * g['out_height'] * g['out_width'], dtype=torch.float64)
    native.run_kernel(library, 'lip2d_forward', (x, x, out), geometry, 60.0)
    if planes > 0:
        maps = x.view(1, planes, h, w)
        reference = lip2d(maps, maps, (g['kh'], g['kw']), (g['sh'], g['sw']),
                          tuple(g[n] for n in ('pad_top', 'pad_bottom', 'pad_left',
                                               'pad_right')), backend='torch')
        torch.testing.assert_close(out.view(reference.shape), reference)

