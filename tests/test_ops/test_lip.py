"""lip2d: exactness, limits, stability in every float dtype, memory kept, errors, backends."""
import warnings

import pytest
import torch
import torch.nn.functional as F

from lip_mmdet.ops import lip2d, lip2d_naive, native
from lip_mmdet.ops.native import pooling_cpu_library

from reference_pooling import reference_lip

BACKENDS = ('cpu_kernel', 'torch')
WINDOWS = [(3, 2, 1), (2, 2, 0), (3, 1, 1), (5, 3, 2), ((3, 2), (2, 1), (1, 0))]
SIZES = [(1, 1), (3, 5), (7, 7), (8, 6)]


def _inputs(shape, logit_scale, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    logit = torch.randn(shape, generator=gen, dtype=torch.float64) * logit_scale
    return x.to(dtype), logit.to(dtype)


def _fits(size, window):
    (k, _, p) = window
    kh, kw = (k, k) if isinstance(k, int) else k
    ph, pw = (p, p) if isinstance(p, int) else p
    return size[0] + 2 * ph >= kh and size[1] + 2 * pw >= kw


CASES = [(size, window) for size in SIZES for window in WINDOWS if _fits(size, window)]


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('size,window', CASES)
def test_equals_textbook_formula(backend, size, window):
    # Logit scale 2: range < 60, shared-shift path; scale 40: per-window path in most planes.
    for scale in (2.0, 40.0):
        x, logit = _inputs((1, 3, *size), scale)
        out = lip2d(x, logit, *window, backend=backend)
        expected = F.avg_pool2d(x, *window).shape
        assert out.shape == expected and out.dtype == torch.float64
        torch.testing.assert_close(out, reference_lip(x, logit, *window), rtol=1e-12,
                                   atol=1e-12)
        if scale == 2.0:  # the primitive composition does not overflow here
            torch.testing.assert_close(out, lip2d_naive(x, logit, *window), rtol=1e-12,
                                       atol=1e-12)


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('constant', [-1e4, 0.0, 6.0, 1e4])
def test_constant_logit_is_average_pooling(backend, constant):
    x = torch.randn(2, 3, 7, 9)
    logit = torch.full_like(x, constant)
    for window in [(3, 2, 1), (2, 2, 0)]:
        out = lip2d(x, logit, *window, backend=backend)
        torch.testing.assert_close(out, F.avg_pool2d(x, *window, count_include_pad=False))


def test_sharp_logits_select_the_max_logit_pixel():
    x = torch.randn(1, 2, 6, 6)
    logit = torch.randn(1, 2, 6, 6) * 1e4  # distinct, far apart: one pixel wins per window
    _, index = F.max_pool2d(logit, 2, 2, return_indices=True)
    expected = x.flatten(2).gather(2, index.flatten(2)).view(1, 2, 3, 3)
    for backend in BACKENDS:
        torch.testing.assert_close(lip2d(x, logit, 2, 2, 0, backend=backend), expected)


def test_backends_agree_on_mixed_planes_float32():
    # 2 * 8 planes of 64x64 (enough work for several kernel threads); half the planes need
    # the per-window path, half the shared shift.
    x, logit = _inputs((2, 8, 64, 64), 1.0, torch.float32)
    logit[:, ::2] *= 100
    torch.set_num_threads(2)  # the kernel splits planes over its own threads (restored after)
    outs, grads = [], []
    for backend in BACKENDS:
        xr, lr = x.clone().requires_grad_(), logit.clone().requires_grad_()
        out = lip2d(xr, lr, backend=backend)
        out.backward(torch.ones_like(out))
        outs.append(out)
        grads.append((xr.grad, lr.grad))
    torch.testing.assert_close(outs[0], outs[1])
    torch.testing.assert_close(grads[0], grads[1])
    torch.testing.assert_close(outs[0].double(), reference_lip(x, logit), rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('scale', [3.0, 80.0])
@pytest.mark.parametrize('window', [(3, 2, 1), (2, 2, 0), ((3, 2), (1, 2), (1, 1))])
def test_gradcheck(backend, scale, window):
    x, logit = _inputs((2, 2, 5, 4), scale)
    assert torch.autograd.gradcheck(
        lambda a, b: lip2d(a, b, *window, backend=backend),
        (x.requires_grad_(), logit.requires_grad_()))


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16])
def test_extreme_logits_stay_finite_and_accurate(backend, dtype):
    x, logit = _inputs((2, 3, 9, 10), 1.0, dtype)
    logit = (logit.float() * 1e4).clamp(-6e4, 6e4).to(dtype)  # finite in every dtype
    xr, lr = x.clone().requires_grad_(), logit.clone().requires_grad_()
    out = lip2d(xr, lr, backend=backend)
    out.backward(torch.ones_like(out))
    assert out.dtype == dtype and xr.grad.dtype == dtype and lr.grad.dtype == dtype
    assert out.isfinite().all() and xr.grad.isfinite().all() and lr.grad.isfinite().all()
    tol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}[dtype]
    torch.testing.assert_close(out.double(), reference_lip(x, logit), rtol=tol, atol=tol)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_precision_close_to_float32_with_softgate_range(dtype):
    # SoftGate logits reach 12: e^12 overflows float16, which breaks the textbook composition.
    x, logit = _inputs((2, 4, 12, 12), 1.0, torch.float32)
    logit = torch.sigmoid(logit * 4) * 12
    logit[0, 0] = 11.9
    assert not lip2d_naive(x.half(), logit.half()).isfinite().all()
    reference = lip2d(x.to(dtype).float(), logit.to(dtype).float())
    out = lip2d(x.to(dtype), logit.to(dtype))
    tol = 1e-3 if dtype == torch.float16 else 1e-2
    torch.testing.assert_close(out.float(), reference, rtol=tol, atol=tol)


def test_keeps_only_the_inputs_for_backward():
    x, logit = _inputs((2, 3, 10, 10), 1.0, torch.float32)
    x.requires_grad_()
    logit.requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        lip2d(x, logit)
    assert sorted(t.data_ptr() for t in saved) == sorted([x.data_ptr(), logit.data_ptr()])


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('shape', [(0, 3, 5, 5), (2, 0, 5, 5)])
def test_empty_batch_or_channels(backend, shape):
    x = torch.randn(shape, requires_grad=True)
    logit = torch.randn(shape, requires_grad=True)
    out = lip2d(x, logit, backend=backend)
    assert out.shape == (*shape[:2], 3, 3)
    out.sum().backward()
    assert x.grad.shape == shape and logit.grad.shape == shape


def test_non_contiguous_and_channels_last_inputs():
    x, logit = _inputs((2, 3, 9, 7), 2.0, torch.float32)
    expected = lip2d(x, logit)
    channels_last = lip2d(x.contiguous(memory_format=torch.channels_last),
                          logit.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(channels_last, expected)
    wide_x, wide_l = (torch.cat([t, t], dim=3)[..., ::2] for t in (x, logit))
    torch.testing.assert_close(lip2d(wide_x, wide_l), lip2d(wide_x.contiguous(),
                                                            wide_l.contiguous()))


def _bad_calls():
    x = torch.randn(1, 2, 6, 6)
    return [
        ((x[0], x[0]), {}, ValueError, 'shape'),
        ((x, x[:, :1]), {}, ValueError, 'same shape'),
        ((x, x.double()), {}, TypeError, 'dtype'),
        ((x, torch.empty(1, 2, 6, 6, device='meta')), {}, ValueError, 'device'),
        ((x.long(), x.long()), {}, TypeError, 'floating'),
        ((x, x.numpy()), {}, TypeError, 'torch.Tensor'),
        ((x, x), dict(kernel_size=0), ValueError, 'kernel_size'),
        ((x, x), dict(stride=0), ValueError, 'stride'),
        ((x, x), dict(padding=-1), ValueError, 'padding'),
        ((x, x), dict(kernel_size=3, padding=2), ValueError, 'half the kernel'),
        ((x, x), dict(kernel_size=9, padding=1), ValueError, 'larger than the padded input'),
        ((x, x), dict(kernel_size=2.5), TypeError, 'kernel_size'),
        ((x, x), dict(backend='cuda'), ValueError, 'backend'),
    ]


@pytest.mark.parametrize('op,args,kwargs,error,message', [
    (op, *call) for op in (lip2d, lip2d_naive) for call in _bad_calls()
    if op is lip2d or 'backend' not in call[1]])
def test_bad_inputs(op, args, kwargs, error, message):
    with pytest.raises(error, match=message):
        op(*args, **kwargs)


def test_disabled_kernel_falls_back_to_torch(monkeypatch):
    x, logit = _inputs((1, 2, 6, 6), 2.0)
    monkeypatch.setenv('LIP_MMDET_NATIVE', '0')
    assert pooling_cpu_library() is None
    torch.testing.assert_close(lip2d(x, logit), reference_lip(x, logit))
    with pytest.raises(RuntimeError, match='unavailable'):
        lip2d(x, logit, backend='cpu_kernel')


def test_kernel_cache_is_reused_and_failed_builds_fall_back(monkeypatch, tmp_path):
    library = pooling_cpu_library()
    assert library is not None
    # Same sources, flags and compiler: the cached file is found, nothing is rebuilt.
    assert library.lip_mmdet_origin.startswith('cache ')  # test_native.py: reuse, rebuilds

    monkeypatch.setenv('LIP_MMDET_CACHE', str(tmp_path))
    monkeypatch.setenv('CXX', 'false')  # a "compiler" that always fails
    monkeypatch.setattr(native, '_state', {'tried': False, 'library': None})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        assert pooling_cpu_library() is None
    assert any('pure-PyTorch path' in str(w.message) for w in caught)
    assert not list(tmp_path.rglob('*.so'))  # no partial library left behind
    x, logit = _inputs((1, 2, 6, 6), 2.0)
    torch.testing.assert_close(lip2d(x, logit), reference_lip(x, logit))
