"""Property-based fuzzing of the pooling ops (``hypothesis``; marked ``fuzz``).

* Every op and backend against the float64 references of ``reference_pooling.py``, forward
  and backward, over random shapes, windows, strides, paddings, layouts (contiguous,
  channels_last, sliced, expanded), dtypes and extreme values.
* Extreme values (logits and lambda up to the dtype's largest finite value): no NaN, and each
  output stays inside its window's range (every op is a convex combination of its window).
* Invalid argument combinations through ``torch.ops.lip_mmdet.*`` and their fake
  implementations: each must raise ValueError, TypeError or RuntimeError, the same one from
  both. These run in this process: every path from an op to a kernel goes through
  the skeleton's ``implementation``, which the test replaces by a function that fails the
  test, so an argument the checks miss fails here instead of
  reaching a kernel.

``make test`` runs a bounded, derandomised slice (the 'suite' profile); ``make fuzz`` runs
long campaigns with fresh cases.
"""
import importlib.util

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch._subclasses.fake_tensor import FakeTensorMode

from lip_mmdet.ops import POOLING_BACKENDS, dpp2d, dpp_filter_guide, lip2d

from kernel_guard import no_kernels
from reference_pooling import (
    out_shape,
    reference_dpp,
    reference_filter_guide,
    reference_lip,
    unfold_windows,
)

pytestmark = pytest.mark.fuzz

OPS = torch.ops.lip_mmdet
HAS_TRITON = importlib.util.find_spec('triton') is not None
DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
# Output rounding and float32 accumulation (half types), relative to the values' magnitude.
TOLERANCE = {torch.float64: 1e-9, torch.float32: 2e-5, torch.float16: 4e-3,
             torch.bfloat16: 3e-2}
LAYOUTS = ('contiguous', 'channels_last', 'sliced', 'expanded')


def _triton_examples():
    """Settings for the Triton tests: an example takes 0.05-1.5 s in Triton's interpreter
    against 2-9 ms on the other backends, so they get 10 examples in the suite and 1% of the
    profile's examples in a fuzz campaign (200 of 20000: about a minute each)."""
    return settings(max_examples=max(10, settings.default.max_examples // 100))


# ------------------------------------------------------------------------------ strategies

@st.composite
def _windows(draw):
    """(kernel, stride, padding) within the ops' rules: an (h, w) padding or, half the time,
    (top, bottom, left, right), each side below the kernel."""
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    if draw(st.booleans()):
        pads = tuple(draw(st.integers(0, k - 1)) for k in (kernel[0], kernel[0], kernel[1],
                                                           kernel[1]))
    else:
        pads = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    return kernel, stride, pads


def _four(pads):
    return pads if len(pads) == 4 else (pads[0], pads[0], pads[1], pads[1])


@st.composite
def _shapes(draw, window):
    """(N, C, H, W) on which ``window`` has at least one output pixel."""
    (kh, kw), _, pads = window
    top, bottom, left, right = _four(pads)
    low_h, low_w = max(1, kh - top - bottom), max(1, kw - left - right)
    return (draw(st.integers(1, 2)), draw(st.integers(1, 3)),
            draw(st.integers(low_h, low_h + 6)), draw(st.integers(low_w, low_w + 6)))


def _random(shape, seed, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=torch.float64) * scale


def _extreme(shape, seed, dtype, scale):
    """Values of ``scale``; 'max' mixes in the dtype's largest finite values of both signs."""
    values = _random(shape, seed)
    if scale != 'max':
        return values * scale
    largest = torch.finfo(dtype).max
    return torch.where(values > 0.7, largest, torch.where(values < -0.7, -largest,
                                                          values * 1e3))


def _laid_out(values, dtype, layout):
    """``values`` in ``dtype`` and ``layout`` (an 'expanded' tensor repeats its first batch
    entry and channel with stride 0, so its values change: compare with what it holds)."""
    t = values.to(dtype)
    if layout == 'channels_last':
        return t.contiguous(memory_format=torch.channels_last)
    if layout == 'sliced':  # every other column of a wider buffer
        wide = torch.zeros((*t.shape[:3], 2 * t.shape[3]), dtype=dtype)
        wide[..., ::2] = t
        return wide[..., ::2]
    if layout == 'expanded':
        return t[:1, :1].expand(t.shape)
    return t


def _close(got, expected, dtype, scale=1.0):
    """``got`` within the dtype's tolerance of the float64 ``expected``, relative to the
    larger of its magnitude and ``scale`` (the input's: a sum of terms of that size, such as
    a parameter's gradient, keeps their rounding however much they cancel)."""
    tol = TOLERANCE[dtype]
    if expected.numel():
        scale = max(scale, expected.abs().max().item())
    torch.testing.assert_close(got.double(), expected, rtol=tol, atol=tol * scale)


def _value_and_grads(fn, inputs, grad_seed, grad_dtype):
    """``fn(*inputs)`` and its inputs' gradients for a random output gradient (values of
    ``grad_dtype``, so that an op and its float64 reference get the same ones)."""
    inputs = [t.detach().requires_grad_() for t in inputs]
    out = fn(*inputs)
    grad = _random(out.shape, grad_seed).to(grad_dtype).to(out.dtype)
    return out, torch.autograd.grad(out, inputs, grad)


def _check_against_reference(op, reference, inputs, dtype, seed):
    """``op`` (in ``dtype``) against ``reference`` (float64, on the same input values),
    forward and backward."""
    out, grads = _value_and_grads(op, inputs, seed, dtype)
    expected, expected_grads = _value_and_grads(reference, [t.double() for t in inputs],
                                                seed, dtype)
    assert out.dtype == dtype and out.shape == expected.shape
    scale = max(1.0, inputs[0].double().abs().max().item()) if inputs[0].numel() else 1.0
    _close(out, expected, dtype, scale)
    for got, want, given_input in zip(grads, expected_grads, inputs):
        assert got.dtype == given_input.dtype and got.shape == given_input.shape
        # a float32 parameter's gradient is rounded to float32 (with float64 maps too)
        _close(got, want, max(dtype, got.dtype, key=TOLERANCE.get), scale)


def _backends(with_triton=True):
    return ['cpu_kernel', 'torch'] + (['triton'] if with_triton and HAS_TRITON else [])


# ------------------------------------------------------------------- valid calls: exactness

def _check_lip(data, backend):
    window = data.draw(_windows(), 'window')
    shape = data.draw(_shapes(window), 'shape')
    dtype = data.draw(st.sampled_from(DTYPES), 'dtype')
    scale = data.draw(st.sampled_from([1.0, 30.0, 1e4, 'max']), 'logit scale')
    seed = data.draw(st.integers(0, 2**16), 'seed')
    x = _laid_out(_random(shape, seed), dtype, data.draw(st.sampled_from(LAYOUTS), 'x layout'))
    logit = _laid_out(_extreme(shape, seed + 1, dtype, scale), dtype,
                      data.draw(st.sampled_from(LAYOUTS), 'logit layout'))
    _check_against_reference(lambda a, b: lip2d(a, b, *window, backend=backend),
                             lambda a, b: reference_lip(a, b, *window), (x, logit), dtype,
                             seed + 2)


def _check_dpp(data, backend):
    window = data.draw(_windows(), 'window')
    shape = data.draw(_shapes(window), 'shape')
    dtype = data.draw(st.sampled_from(DTYPES), 'dtype')
    reward = data.draw(st.sampled_from(['sym', 'asym']), 'reward')
    scale = data.draw(st.sampled_from([1.0, 100.0]), 'x scale')
    seed = data.draw(st.integers(0, 2**16), 'seed')
    channels = shape[1]
    x = _laid_out(_random(shape, seed, scale), dtype,
                  data.draw(st.sampled_from(LAYOUTS), 'x layout'))
    guide = _laid_out(_random((*shape[:2], *out_shape(x, *window)), seed + 1, scale), dtype,
                      data.draw(st.sampled_from(LAYOUTS), 'guide layout'))
    # Module parameters stay float32 under autocast: any float dtype; one value or C.
    param_dtype = data.draw(st.sampled_from([dtype, torch.float32]), 'parameter dtype')
    sizes = data.draw(st.sampled_from([(channels, channels), (1, channels), (channels, 1)]),
                      'parameter sizes')
    if param_dtype in (torch.float16, torch.bfloat16):
        # autograd would sum a shared parameter's per-channel gradients in that dtype
        sizes = (channels, channels)
    alpha = torch.rand(sizes[0], generator=torch.Generator().manual_seed(seed + 3),
                       dtype=torch.float64) * 5 + 0.05
    lam = torch.rand(sizes[1], generator=torch.Generator().manual_seed(seed + 4),
                     dtype=torch.float64) * 8
    alpha, lam = alpha.to(param_dtype), lam.to(param_dtype)
    _check_against_reference(
        lambda *t: dpp2d(*t, reward, *window, backend=backend),
        lambda *t: reference_dpp(*t, reward, *window), (x, guide, alpha, lam), dtype, seed + 5)


_REFERENCE_CHECKS = {'lip2d': _check_lip, 'dpp2d': _check_dpp}


@pytest.mark.parametrize('op', sorted(_REFERENCE_CHECKS))
@pytest.mark.parametrize('backend', _backends(with_triton=False))
@given(data=st.data())
def test_op_matches_the_reference(op, backend, data):
    _REFERENCE_CHECKS[op](data, backend)


@pytest.mark.skipif(not HAS_TRITON, reason='needs triton')
@pytest.mark.parametrize('op', sorted(_REFERENCE_CHECKS))
@_triton_examples()
@given(data=st.data())
def test_op_triton_matches_the_reference(op, data):
    _REFERENCE_CHECKS[op](data, 'triton')


@pytest.mark.parametrize('backend', ['cpu_kernel', 'torch'])
@given(data=st.data())
def test_filter_guide_matches_the_reference(backend, data):
    window = data.draw(_windows(), 'window')
    shape = data.draw(_shapes(window), 'shape')
    dtype = data.draw(st.sampled_from(DTYPES), 'dtype')
    seed = data.draw(st.integers(0, 2**16), 'seed')
    x = _laid_out(_random(shape, seed), dtype, data.draw(st.sampled_from(LAYOUTS), 'layout'))
    param_dtype = data.draw(st.sampled_from([dtype, torch.float32]), 'parameter dtype')
    weight = _random((shape[1], 1, 3, 3), seed + 1).to(param_dtype)
    bias = _random((shape[1], ), seed + 2).to(param_dtype)
    _check_against_reference(
        lambda *t: dpp_filter_guide(*t, *window, backend=backend),
        lambda *t: reference_filter_guide(*t, *window), (x, weight, bias), dtype, seed + 3)


# ------------------------------------------------------------------- valid calls: extremes

def _inside_windows(out, x, window):
    """Every output lies within its window's valid values (the ops are convex combinations
    of them); a little slack for the output's rounding."""
    kernel, stride, pads = window
    n, c = x.shape[:2]
    values = unfold_windows(x.double(), kernel, stride, pads)
    valid = unfold_windows(torch.ones_like(x, dtype=torch.float64), kernel, stride, pads) > 0
    low = values.masked_fill(~valid, float('inf')).amin(1).reshape(n, c, *out.shape[2:])
    high = values.masked_fill(~valid, float('-inf')).amax(1).reshape(n, c, *out.shape[2:])
    slack = TOLERANCE[out.dtype] * torch.maximum(low.abs(), high.abs()).clamp_min(1)
    got = out.double()
    assert not got.isnan().any()
    assert ((got >= low - slack) & (got <= high + slack)).all()


def _check_extremes(data, backend):
    window = data.draw(_windows(), 'window')
    shape = data.draw(_shapes(window), 'shape')
    dtype = data.draw(st.sampled_from(DTYPES), 'dtype')
    seed = data.draw(st.integers(0, 2**16), 'seed')
    x = _random(shape, seed, 10).to(dtype)
    logit = _extreme(shape, seed + 1, dtype, 'max').to(dtype)
    out, grads = _value_and_grads(lambda a, b: lip2d(a, b, *window, backend=backend),
                                  (x, logit), seed + 2, dtype)
    _inside_windows(out, x, window)
    assert not any(g.isnan().any() for g in grads)
    # lambda anywhere in [0, the largest float]; alpha as the modules allow, (0, e^10]
    param_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    largest = torch.finfo(param_dtype).max
    lam = torch.tensor(data.draw(st.lists(
        st.sampled_from([0.0, 1e-30, 1.0, 1e4, 1e30, largest / 2, largest]),
        min_size=shape[1], max_size=shape[1]), 'lambda'), dtype=param_dtype)
    alpha = torch.tensor(data.draw(st.lists(st.sampled_from([1e-30, 1.0, 2.2e4]),
                                            min_size=shape[1], max_size=shape[1]), 'alpha'),
                         dtype=param_dtype)
    guide = _random((*shape[:2], *out_shape(x, *window)), seed + 3, 10).to(dtype)
    for reward in ('sym', 'asym'):
        out, grads = _value_and_grads(
            lambda *t, reward=reward: dpp2d(*t, reward, *window, backend=backend),
            (x, guide, alpha, lam),
            seed + 4, dtype)
        _inside_windows(out, x, window)
        assert not any(g.isnan().any() for g in grads)


@pytest.mark.parametrize('backend', _backends(with_triton=False))
@given(data=st.data())
def test_extreme_logits_and_lambdas_stay_inside_the_windows(backend, data):
    _check_extremes(data, backend)


@pytest.mark.skipif(not HAS_TRITON, reason='needs triton')
# Triton's interpreter warns about the overflows the kernels mean (exp(-inf), inf - x).
@pytest.mark.filterwarnings('ignore:overflow encountered:RuntimeWarning')
@_triton_examples()
@given(data=st.data())
def test_extreme_logits_and_lambdas_stay_inside_the_windows_triton(data):
    _check_extremes(data, 'triton')


# ------------------------------------------------------------------------- invalid calls

# Each mutation makes a valid call invalid whatever else changes with it.
_TENSOR_MUTATIONS = ('rank', 'dtype', 'empty map', 'device', 'shape')
_WINDOW_MUTATIONS = ('kernel not positive', 'stride not positive', 'padding negative',
                     'padding too large', 'kernel too large', 'window length',
                     'beyond int64', 'not an int64')
_BAD_DTYPES = (torch.int32, torch.int64, torch.bool, torch.complex64, torch.float8_e4m3fn,
               torch.float8_e5m2)
_HUGE = st.integers(2**62, 2**63 - 1)


def _at_least(low):
    """Ints from ``low`` up to the int64 maximum (just ``low`` when it is past it: another
    mutation may have made the window's values huge)."""
    return st.integers(low, max(low, 2**63 - 1))


def _mutate_tensor(data, t, what, name, axes):
    """``t`` made invalid for argument ``name`` in the way ``what`` ('shape': another size on
    one of ``axes``)."""
    if what == 'rank':
        return t.flatten(0, 1) if t.dim() > 1 and data.draw(st.booleans(), f'{name} drop') else \
            t.unsqueeze(0)
    if what == 'dtype':
        return torch.zeros(t.shape).to(data.draw(st.sampled_from(_BAD_DTYPES), f'{name} dt'))
    if what == 'empty map':
        return t.new_zeros((*t.shape[:-2], 0, t.shape[-1]) if t.dim() >= 2 else (0, ))
    if what == 'device':
        return t.to('meta')
    # another size on one axis (larger or smaller, never the right one)
    axis = data.draw(st.sampled_from(axes), f'{name} axis')
    size = data.draw(st.integers(0, 300).filter(lambda s: s != t.shape[axis]), f'{name} size')
    shape = list(t.shape)
    shape[axis] = size
    return t.new_zeros(shape)


def _mutate_window(data, window, what, shape):
    """``window`` (lists) made invalid in the way ``what`` for a map of ``shape``."""
    kernel, stride, pads = (list(v) for v in window)
    axis = data.draw(st.integers(0, 1), 'axis')
    side = [2 * axis, 2 * axis + 1][data.draw(st.integers(0, 1), 'side')]
    if what == 'kernel not positive':
        kernel[axis] = data.draw(st.integers(-2**63, 0), 'kernel')
    elif what == 'stride not positive':
        stride[axis] = data.draw(st.integers(-2**63, 0), 'stride')
    elif what == 'padding negative':
        pads[side] = data.draw(st.integers(-2**63, -1), 'padding')
    elif what == 'padding too large':
        least = kernel[axis]
        pads[side] = data.draw(_at_least(least), 'padding')
    elif what == 'kernel too large':
        # past the padded map, padding kept legal (each side below the kernel)
        padded = shape[2 + axis] + pads[2 * axis] + pads[2 * axis + 1]
        kernel[axis] = data.draw(_at_least(padded + 1), 'kernel')
    elif what == 'window length':
        value = data.draw(st.sampled_from([kernel, stride, pads]), 'which')
        lengths = [0, 1, 3, 5] if value is pads else [0, 1, 3, 4]
        value[:] = value[:1] * data.draw(st.sampled_from(lengths), 'length')
    elif what == 'beyond int64':
        # A window legal in every other way (each value an int64, padding within its rule,
        # kernel within the padded map) whose taps alone pass int64: >= 3 * 2**62.
        kernel[:] = [data.draw(_HUGE, 'kernel'), data.draw(st.sampled_from([3, 2**62]), 'k')]
        if data.draw(st.booleans(), 'swap'):
            kernel.reverse()
        pads[:] = [kernel[0] - 1, kernel[0] - 1, kernel[1] - 1, kernel[1] - 1]
    else:  # 'not an int64'
        target = data.draw(st.sampled_from([kernel, stride, pads]), 'which')
        # the first value replaced (or set, in an emptied list)
        target[:1] = [data.draw(st.sampled_from([2**63, 2**64 + 3, -2**63 - 1]), 'value')]
    return kernel, stride, pads


def _fake_copy(args):
    mode = FakeTensorMode()
    return mode, [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]


def _assert_refused(op, args):
    """``op(*args)`` raises a clear error before any kernel, and its fake implementation
    raises the same one."""
    with no_kernels():
        with pytest.raises((ValueError, TypeError, RuntimeError)) as eager:
            op(*args)
    try:
        mode, fake_args = _fake_copy(args)
    except Exception:  # no fake tensor for this input (a float8 meta tensor, ...)
        return
    with mode, pytest.raises(type(eager.value)) as fake:
        op(*fake_args)
    assert str(fake.value) == str(eager.value)


@st.composite
def _valid_call(draw, op_name):
    """A valid (op, args) of one op (forward or backward), small and random."""
    window = draw(_windows(), 'window')
    # the ops take their padding as (top, bottom, left, right)
    window = (list(window[0]), list(window[1]), list(_four(window[2])))
    n, c, h, w = draw(_shapes(window), 'shape')
    n = draw(st.integers(0, n), 'batch')  # empty batches are valid too
    x = torch.randn(n, c, h, w)
    out = torch.randn(n, c, *out_shape(x, *window))
    backend = draw(st.sampled_from(POOLING_BACKENDS), 'backend')
    backward = draw(st.booleans(), 'backward')
    if op_name == 'lip2d':
        tensors = {'x': x, 'logit': torch.randn_like(x)}
    elif op_name == 'dpp2d':
        tensors = {'x': x, 'guide': out, 'alpha': torch.rand(c), 'lam': torch.rand(c)}
    else:
        tensors = {'x': x, 'weight': torch.randn(c, 1, 3, 3), 'bias': torch.randn(c)}
    if backward:
        tensors['grad'] = torch.randn_like(out)
    return op_name, backward, tensors, window, backend


def _call(op_name, backward, tensors, window, backend):
    name = f'{op_name}_backward' if backward else op_name
    values = list(tensors.values())
    if op_name == 'dpp2d':  # the reward flag comes after the tensors
        return getattr(OPS, name), (*values, True, *window, backend)
    return getattr(OPS, name), (*values, *window, backend)


@pytest.mark.parametrize('op_name', ['lip2d', 'dpp2d', 'dpp_filter_guide'])
@given(data=st.data())
def test_invalid_calls_raise_before_any_kernel(op_name, data):
    op_name, backward, tensors, window, backend = data.draw(_valid_call(op_name), 'call')
    shape = tuple(tensors['x'].shape)
    kinds = data.draw(st.lists(st.sampled_from(
        [('tensor', m) for m in _TENSOR_MUTATIONS] + [('window', m) for m in _WINDOW_MUTATIONS]
        + [('backend', 'unknown'), ('backend', 'cpu_kernel on meta')]
        # the filter guide has no Triton kernel: any window is valid for it under 'triton'
        + ([('backend', 'triton, window too large')] if op_name != 'dpp_filter_guide' else [])),
        min_size=1, max_size=3, unique=True), 'mutations')
    # the others index the window's lists and read its values: change their lengths and
    # types last
    mutated = set()  # a second change of one tensor could undo the first
    for kind, what in sorted(kinds, key=lambda k: k[1] in ('window length', 'not an int64')):
        if kind == 'tensor':
            if mutated == set(tensors):
                continue
            name = data.draw(st.sampled_from(sorted(set(tensors) - mutated)), 'argument')
            mutated.add(name)
            # Another height or width of x may keep DPP's output size, another batch the
            # filter guide's validity: for these ops x changes its channels (alpha, lambda
            # and the filter are per channel).
            axes = (1, ) if name == 'x' and op_name != 'lip2d' else \
                tuple(range(tensors[name].dim()))
            tensors[name] = _mutate_tensor(data, tensors[name], what, name, axes)
        elif kind == 'window':
            window = _mutate_window(data, window, what, shape)
        elif what == 'unknown':
            backend = data.draw(st.text(max_size=12).filter(
                lambda b: b not in POOLING_BACKENDS), 'backend')
        elif what == 'triton, window too large':  # more taps than the kernels unroll
            backend = 'triton'
            window[0][:] = [data.draw(st.integers(9, 12), 'kernel h'),
                            data.draw(st.integers(8, 12), 'kernel w')]
        else:
            tensors = {k: v.to('meta') for k, v in tensors.items()}
            backend = 'cpu_kernel'
    _assert_refused(*_call(op_name, backward, tensors, window, backend))
