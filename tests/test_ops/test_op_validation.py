"""The registered ops validate their own arguments: direct ``torch.ops.lip_mmdet.*`` calls,
their fake implementations, compiled graphs, exported programs and the Triton launch wrappers
reject what no kernel may see, with one clear error naming the argument, before any kernel
runs. Also: no NaN from finite inputs for any lambda or logit, on every backend."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from lip_mmdet.ops import dpp2d, dpp_box_guide, dpp_filter_guide, lip2d

from kernel_guard import no_kernels
from reference_pooling import unfold_windows

OPS = torch.ops.lip_mmdet
HAS_TRITON = importlib.util.find_spec('triton') is not None
BACKENDS = ('cpu_kernel', 'torch') + (('triton', ) if HAS_TRITON else ())
DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
BIG = 2**62
# Triton's interpreter warns about the overflows the kernels mean (exp(-inf), inf - x).
INTERPRETER_OVERFLOW = pytest.mark.filterwarnings('ignore:overflow encountered:RuntimeWarning')


def _t(*shape, dtype=torch.float32, device='cpu'):
    return torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype=dtype,
                                                                           device=device)


def _lip(x=None, logit=None, kernel=(3, 3), stride=(2, 2), padding=(1, 1), backend='auto',
         grad=None):
    x = _t(1, 2, 6, 6) if x is None else x
    logit = _t(*x.shape) if logit is None else logit
    window = [list(kernel), list(stride), list(padding)]
    if grad is None:
        return OPS.lip2d, (x, logit, *window, backend)
    return OPS.lip2d_backward, (x, logit, grad, *window, backend)


def _dpp(x=None, guide=None, alpha=None, lam=None, kernel=(2, 2), stride=(2, 2),
         pads=(0, 0, 0, 0), backend='auto', grad=None):
    x = _t(1, 3, 6, 6) if x is None else x
    guide = _t(1, 3, 3, 3) if guide is None else guide
    alpha = torch.ones(3) if alpha is None else alpha
    lam = torch.ones(3) if lam is None else lam
    window = [list(kernel), list(stride), list(pads)]
    if grad is None:
        return OPS.dpp2d, (x, guide, alpha, lam, True, *window, backend)
    return OPS.dpp2d_backward, (x, guide, alpha, lam, grad, True, *window, backend)


def _filter(x=None, weight=None, bias=None, kernel=(2, 2), stride=(2, 2), pads=(0, 0, 0, 0),
            backend='auto', grad=None):
    x = _t(1, 3, 6, 6) if x is None else x
    weight = _t(3, 1, 3, 3) if weight is None else weight
    bias = _t(3) if bias is None else bias
    window = [list(kernel), list(stride), list(pads)]
    if grad is None:
        return OPS.dpp_filter_guide, (x, weight, bias, *window, backend)
    return OPS.dpp_filter_guide_backward, (x, weight, bias, grad, *window, backend)


# (call, error, message): every argument the ops once passed on to a kernel (reads past a
# buffer, an int64 wrap) or answered without an error, and one of each kind of check.
BAD_CALLS = {
    'lip2d: logit of 2x2 for x of 256x256': (
        lambda: _lip(_t(1, 3, 256, 256), _t(1, 3, 2, 2)), ValueError,
        r'x and logit must have the same shape'),
    'lip2d: padding above half the window': (
        lambda: _lip(padding=(2, 1)), ValueError, 'at most half the kernel'),
    'lip2d: empty map with padding': (
        lambda: _lip(_t(1, 1, 0, 4), kernel=(2, 2), padding=(1, 1)), ValueError,
        r'non-empty map'),
    'lip2d: x of rank 3': (lambda: _lip(_t(2, 6, 6)), ValueError, r'\(N, C, H, W\)'),
    'lip2d: integer x': (
        lambda: _lip(torch.ones(1, 2, 6, 6, dtype=torch.int32), _t(1, 2, 6, 6)), TypeError,
        'x must be a floating-point tensor'),
    'lip2d: float8 x': (
        lambda: _lip(*(_t(1, 2, 6, 6).to(torch.float8_e4m3fn), ) * 2), TypeError,
        'x must be float16, bfloat16, float32 or float64'),
    'lip2d: logit of another dtype': (
        lambda: _lip(logit=_t(1, 2, 6, 6, dtype=torch.float64)), TypeError,
        'same dtype'),
    'lip2d: logit on another device': (
        lambda: _lip(logit=_t(1, 2, 6, 6, device='meta')), ValueError, 'same device'),
    'lip2d: kernel 0': (lambda: _lip(kernel=(0, 3)), ValueError, 'kernel_size must be'),
    'lip2d: stride -1': (lambda: _lip(stride=(2, -1)), ValueError, 'stride must be'),
    'lip2d: kernel larger than the padded map': (
        lambda: _lip(kernel=(9, 3), padding=(1, 1)), ValueError, 'larger than the padded'),
    'lip2d: three kernel values': (
        lambda: _lip(kernel=(3, 3, 3)), TypeError, 'kernel_size must be an int or a pair'),
    'lip2d: window beyond int64': (
        lambda: _lip(_t(1, 1, 1, 1), kernel=(BIG, BIG), padding=(BIG // 2, BIG // 2)),
        ValueError, 'int64'),
    'lip2d: padded height beyond int64': (
        lambda: _lip(_t(1, 1, 4, 4), kernel=(2**63 - 1, 1), padding=(2**62 - 1, 0)),
        ValueError, 'padded height'),
    'lip2d: unknown backend': (
        lambda: _lip(backend='cuda'), ValueError, 'unknown backend'),
    'lip2d: cpu_kernel for meta tensors': (
        lambda: _lip(*(_t(1, 2, 6, 6, device='meta'), ) * 2, backend='cpu_kernel'),
        ValueError, 'needs CPU tensors'),
    'lip2d: a window too large for the Triton kernels': (
        lambda: _lip(_t(1, 2, 10, 10), kernel=(9, 9), padding=(4, 4), backend='triton'),
        ValueError, 'at most 64 taps'),
    'lip2d_backward: grad of the input size': (
        lambda: _lip(grad=_t(1, 2, 6, 6)), ValueError, 'grad must have the output shape'),
    'lip2d_backward: grad of another dtype': (
        lambda: _lip(grad=_t(1, 2, 3, 3, dtype=torch.float64)), TypeError, 'grad'),
    'lip2d_backward: padding above half the window': (
        lambda: _lip(padding=(2, 2), grad=_t(1, 2, 3, 3)), ValueError, 'half the kernel'),
    'dpp2d: guide larger than the output': (
        lambda: _dpp(guide=_t(1, 3, 6, 6)), ValueError, 'guide must have the output shape'),
    'dpp2d: alpha shorter than C': (
        lambda: _dpp(alpha=torch.ones(1)), ValueError, r'alpha must have shape \(3,\)'),
    'dpp2d: lam shorter than C': (
        lambda: _dpp(lam=torch.ones(2)), ValueError, r'lam must have shape \(3,\)'),
    'dpp2d: alpha of rank 2': (
        lambda: _dpp(alpha=torch.ones(3, 1)), ValueError, 'alpha must have shape'),
    'dpp2d: integer lam': (
        lambda: _dpp(lam=torch.ones(3, dtype=torch.int64)), TypeError, 'lam must be a float'),
    'dpp2d: alpha on another device': (
        lambda: _dpp(alpha=torch.ones(3, device='meta')), ValueError, 'alpha must be on'),
    'dpp2d: guide of another dtype': (
        lambda: _dpp(guide=_t(1, 3, 3, 3, dtype=torch.float64)), TypeError, 'same dtype'),
    'dpp2d: padding side as large as the kernel': (
        lambda: _dpp(pads=(2, 0, 0, 0), guide=_t(1, 3, 4, 3)), ValueError,
        'without a real pixel'),
    'dpp2d: kernel 2**62': (
        lambda: _dpp(_t(1, 1, 1, 1), _t(1, 1, 1, 1), torch.ones(1), torch.ones(1),
                     kernel=(BIG, BIG), stride=(1, 1), pads=(BIG // 2, ) * 4), ValueError,
        'int64'),
    'dpp2d: padded plane beyond int64': (
        lambda: _dpp(_t(1, 1, 1, 1), _t(1, 1, 1, 1), torch.ones(1), torch.ones(1),
                     kernel=(2**31, 2**31), stride=(1, 1), pads=(2**31 - 1, ) * 4), ValueError,
        'padded plane'),
    'dpp2d_backward: grad of the input size': (
        lambda: _dpp(grad=_t(1, 3, 6, 6)), ValueError, 'grad must have the output shape'),
    'dpp_filter_guide: bias (1,) for C=3': (
        lambda: _filter(bias=torch.zeros(1)), ValueError, r'bias must have shape \(3,\)'),
    'dpp_filter_guide: weight (C, 1, 2, 2)': (
        lambda: _filter(weight=_t(3, 1, 2, 2)), ValueError, r'weight must have shape'),
    'dpp_filter_guide: weight on another device': (
        lambda: _filter(weight=_t(3, 1, 3, 3, device='meta')), ValueError, 'weight must be'),
    'dpp_filter_guide: kernel 2**62': (
        lambda: _filter(_t(1, 1, 1, 1), _t(1, 1, 3, 3), _t(1), kernel=(BIG, BIG),
                        stride=(1, 1), pads=(BIG // 2, ) * 4), ValueError, 'int64'),
    'dpp_filter_guide_backward: grad of the input size': (
        lambda: _filter(grad=_t(1, 3, 6, 6)), ValueError, 'grad must have the output shape'),
}


@pytest.mark.parametrize('name', list(BAD_CALLS))
def test_ops_refuse_bad_arguments_before_any_kernel(name):
    make, error, message = BAD_CALLS[name]
    op, args = make()
    with no_kernels(), pytest.raises(error, match=message) as eager:
        op(*args)
    # The fake implementation (torch.compile, torch.export) raises the same error.
    with FakeTensorMode() as mode:
        fake_args = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
        with pytest.raises(error) as fake:
            op(*fake_args)
    assert str(fake.value) == str(eager.value)


def test_sparse_inputs_are_refused():
    x = _t(1, 2, 6, 6)
    with no_kernels(), pytest.raises((TypeError, RuntimeError)):
        OPS.lip2d(x.to_sparse(), x.to_sparse(), [3, 3], [2, 2], [1, 1], 'auto')
    with pytest.raises(TypeError, match='dense'):
        lip2d(x.to_sparse(), x)


def test_wrappers_refuse_what_the_ops_refuse():
    x = _t(1, 3, 6, 6)
    with pytest.raises(ValueError, match=r'bias must have shape \(3,\)'):
        dpp_filter_guide(x, _t(3, 1, 3, 3), torch.zeros(1))
    with pytest.raises(ValueError, match='non-empty map'):
        lip2d(_t(1, 1, 0, 4), _t(1, 1, 0, 4), 2, 2, 1)
    with pytest.raises(RuntimeError):  # F.avg_pool2d refuses the empty map as well
        torch.nn.functional.avg_pool2d(_t(1, 1, 0, 4), 2, 2, 1)
    with pytest.raises(ValueError, match='guide must have the output shape'):
        dpp2d(x, _t(1, 3, 6, 6), torch.ones(3), torch.ones(3))
    with pytest.raises(ValueError, match='int64'):
        dpp_box_guide(_t(1, 1, 1, 1), BIG, 1, BIG // 2)


# Arguments the ops once passed on to the kernels (which read past the logit, the guide,
# alpha or the bias, read float8 data as float64, or wrapped the window arithmetic), against
# the real kernels: in a child process, so that a regression fails this test instead of
# killing pytest.
_CRASHERS = r'''
import torch
from lip_mmdet.ops import dpp_filter_guide
OPS = torch.ops.lip_mmdet
t = torch.randn
calls = {
    'logit 2x2': lambda b: OPS.lip2d(t(1, 3, 256, 256), t(1, 3, 2, 2), [3, 3], [2, 2], [1, 1],
                                     b),
    'padding 2 of 3': lambda b: OPS.lip2d(t(1, 1, 5, 5), t(1, 1, 5, 5), [3, 3], [1, 1], [2, 2],
                                          b),
    'empty map': lambda b: OPS.lip2d(t(1, 1, 0, 4), t(1, 1, 0, 4), [2, 2], [2, 2], [1, 1], b),
    'guide 6x6': lambda b: OPS.dpp2d(t(1, 3, 6, 6), t(1, 3, 64, 64), t(3), t(3), True, [2, 2],
                                     [2, 2], [0, 0, 0, 0], b),
    'alpha (1,)': lambda b: OPS.dpp2d(t(1, 3, 6, 6), t(1, 3, 3, 3), t(1), t(3), True, [2, 2],
                                      [2, 2], [0, 0, 0, 0], b),
    'kernel 2**62': lambda b: OPS.dpp2d(t(1, 1, 1, 1), t(1, 1, 1, 1), t(1), t(1), False,
                                        [2**62, 2**62], [1, 1], [2**61] * 4, b),
    'bias (1,)': lambda b: OPS.dpp_filter_guide(t(1, 3, 6, 6), t(3, 1, 3, 3), t(1), [2, 2],
                                                [2, 2], [0, 0, 0, 0], b),
    'bias (1,), wrapper': lambda b: dpp_filter_guide(t(1, 3, 6, 6), t(3, 1, 3, 3), t(1),
                                                     backend=b),
    'float8': lambda b: OPS.lip2d(*(t(1, 1, 6, 6).to(torch.float8_e4m3fn), ) * 2, [3, 3],
                                  [2, 2], [1, 1], b),
}
for backend in ('cpu_kernel', 'torch'):
    for name, call in calls.items():
        try:
            call(backend)
            print(name, backend, 'returned')
        except (ValueError, TypeError) as error:
            print(name, backend, type(error).__name__)
print('survived')
'''


def test_former_crashers_raise_in_a_child_process():
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get(
        'PYTHONPATH', '')]))
    result = subprocess.run([sys.executable, '-c', _CRASHERS], cwd=root, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == 'survived' and len(lines) == 19, result.stdout
    assert all(line.endswith(('ValueError', 'TypeError')) for line in lines[:-1]), result.stdout


def test_compiled_graphs_and_exported_programs_check_the_arguments():
    x, small = _t(1, 2, 8, 8), _t(1, 2, 2, 2)

    def pool(a, b):
        return OPS.lip2d(a, b, [3, 3], [2, 2], [1, 1], 'auto')

    torch._dynamo.reset()
    with pytest.raises(Exception, match='x and logit must have the same shape'):
        torch.compile(pool, backend='aot_eager', fullgraph=True)(x, small)

    class Pool(torch.nn.Module):

        def forward(self, a, b):
            return pool(a, b)

    with pytest.raises(Exception, match='x and logit must have the same shape'):
        torch.export.export(Pool(), (x, small))


def test_export_with_dynamic_sizes_keeps_them_dynamic():
    """The checks compare symbolic sizes without pinning them (the int64 bounds are decided
    on the concrete sizes, in the implementation)."""

    class Pools(torch.nn.Module):

        def forward(self, a, b):
            guide = dpp_box_guide(a, 3, 2, 1)
            return lip2d(a, b) + dpp2d(a, guide, torch.ones(2), torch.ones(2), 'sym', 3, 2, 1)

    height, width = torch.export.Dim('height', min=4), torch.export.Dim('width', min=4)
    shapes = ({2: height, 3: width}, ) * 2
    program = torch.export.export(Pools(), (_t(1, 2, 8, 8), _t(1, 2, 8, 8)),
                                  dynamic_shapes=shapes)
    a, b = _t(1, 2, 11, 6), _t(1, 2, 11, 6)
    torch.testing.assert_close(program.module()(a, b), Pools()(a, b))


@pytest.mark.skipif(not HAS_TRITON, reason='needs triton')
def test_triton_launch_wrappers_validate():
    from lip_mmdet.ops import triton_pooling
    x = _t(1, 2, 8, 8)
    with pytest.raises(ValueError, match='x and logit must have the same shape'):
        triton_pooling.lip2d_forward(x, _t(1, 2, 2, 2), (3, 3), (2, 2), (1, 1))
    with pytest.raises(ValueError, match='grad must have the output shape'):
        triton_pooling.lip2d_backward(x, x, x, (3, 3), (2, 2), (1, 1))
    with pytest.raises(ValueError, match='guide must have the output shape'):
        triton_pooling.dpp2d_forward(x, x, torch.ones(2), torch.ones(2), True, (2, 2), (2, 2),
                                     (0, 0, 0, 0))
    with pytest.raises(ValueError, match=r'lam must have shape \(2,\)'):
        triton_pooling.dpp2d_backward(x, _t(1, 2, 4, 4), torch.ones(2), torch.ones(1),
                                      _t(1, 2, 4, 4), True, (2, 2), (2, 2), (0, 0, 0, 0))


@pytest.mark.skipif(not HAS_TRITON, reason='needs triton')
def test_auto_gives_windows_too_large_for_triton_to_pytorch_ops():
    from lip_mmdet.ops.dispatch import TRITON_MAX_TAPS, implementation
    with FakeTensorMode():  # a CUDA tensor's metadata, without a CUDA device
        x = torch.empty(1, 2, 16, 16, device='cuda')
    assert implementation(x, 'auto', (3, 3)) == 'triton'
    assert implementation(x, 'auto', (8, 8)) == 'triton' and TRITON_MAX_TAPS == 64
    assert implementation(x, 'auto', (9, 8)) == 'torch'


# ------------------------------------------------------------------------------- numerics

def _window_range(x, kernel, stride, padding):
    """(lowest, highest) valid value of each window, float64 (N, C, Ho, Wo)."""
    values = unfold_windows(x.double(), kernel, stride, padding)
    valid = unfold_windows(torch.ones_like(x, dtype=torch.float64), kernel, stride,
                           padding) > 0
    low = values.masked_fill(~valid, float('inf')).amin(1)
    high = values.masked_fill(~valid, float('-inf')).amax(1)
    return low, high


def _assert_inside_windows(out, x, *window):
    low, high = (t.reshape(out.shape) for t in _window_range(x, *window))
    slack = 1e-2 * torch.maximum(low.abs(), high.abs()).clamp_min(1)
    assert not out.isnan().any()
    assert ((out.double() >= low - slack) & (out.double() <= high + slack)).all()


@INTERPRETER_OVERFLOW
@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('dtype', DTYPES)
def test_no_nan_from_the_largest_logits_and_lambdas(backend, dtype):
    """Logits and lambda up to the dtype's largest finite value: every output is a finite
    convex combination of its window, every gradient NaN-free."""
    largest = torch.finfo(dtype).max
    x = (_t(2, 3, 7, 6, dtype=torch.float64) * 10).to(dtype)
    signs = _t(2, 3, 7, 6, dtype=torch.float64)
    logit = torch.where(signs > 0.5, largest, torch.where(signs < -0.5, -largest, signs * 0))
    xr, lr = x.clone().requires_grad_(), logit.to(dtype).requires_grad_()
    out = lip2d(xr, lr, backend=backend)
    _assert_inside_windows(out, x, 3, 2, 1)
    grads = torch.autograd.grad(out.sum(), (xr, lr))
    assert not any(g.isnan().any() for g in grads)

    param_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    biggest = torch.finfo(param_dtype).max
    guide = dpp_box_guide(x, 3, 2, 1)
    for lam_value in (1e30, biggest / 2, biggest):
        for reward in ('sym', 'asym'):
            xr = x.clone().requires_grad_()
            alpha = torch.tensor([1e-3, 1.0, 2e4], dtype=param_dtype, requires_grad=True)
            lam = torch.full((3, ), lam_value, dtype=param_dtype, requires_grad=True)
            out = dpp2d(xr, guide, alpha, lam, reward, 3, 2, 1, backend=backend)
            _assert_inside_windows(out, x, 3, 2, 1)
            grads = torch.autograd.grad(out.sum(), (xr, alpha, lam))
            assert not any(g.isnan().any() for g in grads), (lam_value, reward)


@INTERPRETER_OVERFLOW
@pytest.mark.parametrize('backend', BACKENDS)
def test_negative_lambda_output_stays_finite(backend):
    """The modules keep lambda positive (exp of a parameter); the ops take any value, and a
    negative one rewards the pixels closest to the guide, still without NaN."""
    x = _t(1, 3, 6, 7, dtype=torch.float64) * 10
    guide = dpp_box_guide(x, 3, 2, 1)
    for lam_value in (-1.0, -1e30, -torch.finfo(torch.float64).max):
        for reward in ('sym', 'asym'):
            out = dpp2d(x, guide, torch.ones(3, dtype=torch.float64),
                        torch.full((3, ), lam_value, dtype=torch.float64), reward, 3, 2, 1,
                        backend=backend)
            _assert_inside_windows(out, x, 3, 2, 1)
