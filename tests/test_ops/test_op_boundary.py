"""The custom-op boundary: opcheck, torch.compile without graph breaks, torch.export, double
backward, NaN locality and backend selection (CPU kernel and PyTorch-ops implementations)."""
import pytest
import torch
import torch._dynamo
import torch.nn.functional as F

from lip_mmdet.ops import (
    POOLING_BACKENDS,
    dpp2d,
    dpp_box_guide,
    dpp_filter_box_init,
    dpp_filter_guide,
    lip2d,
)

BACKENDS = ('cpu_kernel', 'torch')
OPS = torch.ops.lip_mmdet


def _randn(*shape, dtype=torch.float64, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _lip_args(dtype, window=((3, 3), (2, 2), (1, 1))):
    x, logit = _randn(2, 3, 7, 6, dtype=dtype), _randn(2, 3, 7, 6, dtype=dtype, seed=1) * 3
    return x, logit, *window


def _dpp_args(dtype, asym, window=((3, 3), (2, 2), (1, 1, 1, 1))):
    x = _randn(2, 3, 7, 6, dtype=dtype)
    guide = dpp_box_guide(x, *window, backend='torch') + 0.1  # at the window's output size
    alpha = torch.tensor([0.5, 1.0, 2.0], dtype=dtype)
    lam = torch.tensor([0.3, 1.0, 4.0], dtype=dtype)
    return x, guide, alpha, lam, asym, *window


def _filter_args(dtype, window=((2, 2), (2, 2), (0, 1, 0, 1))):
    x = _randn(2, 3, 7, 6, dtype=dtype)
    return x, _randn(3, 1, 3, 3, dtype=dtype, seed=2), _randn(3, dtype=dtype, seed=3), *window


def _requiring_grad(args):
    return tuple(a.clone().requires_grad_() if isinstance(a, torch.Tensor) else a
                 for a in args)


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_opcheck_every_op(backend, dtype):
    forward_calls = [
        (OPS.lip2d, _lip_args(dtype)),
        (OPS.dpp2d, _dpp_args(dtype, True)),
        (OPS.dpp2d, _dpp_args(dtype, False, ((2, 2), (1, 1), (0, 1, 0, 1)))),
        (OPS.dpp_filter_guide, _filter_args(dtype)),
    ]
    for op, args in forward_calls:
        torch.library.opcheck(op, (*_requiring_grad(args), backend))
    # The backward ops take the output gradient after the saved tensors; their own backward
    # is an error by design, so they are checked on inputs that do not require grad.
    x, logit, *window = _lip_args(dtype)
    grad = _randn(2, 3, 4, 3, dtype=dtype, seed=4)
    torch.library.opcheck(OPS.lip2d_backward, (x, logit, grad, *window, backend))
    x, guide, alpha, lam, asym, *window = _dpp_args(dtype, True)
    torch.library.opcheck(OPS.dpp2d_backward,
                          (x, guide, alpha, lam, grad, asym, *window, backend))
    x, weight, bias, *window = _filter_args(dtype)
    grad = _randn(2, 3, 4, 3, dtype=dtype, seed=5)
    torch.library.opcheck(OPS.dpp_filter_guide_backward,
                          (x, weight, bias, grad, *window, backend))


def test_opcheck_half_precision_and_channels_last():
    x, logit, *window = _lip_args(torch.float32)
    x, logit = (t.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
                for t in (x, logit))
    torch.library.opcheck(OPS.lip2d, (*_requiring_grad((x, logit)), *window, 'auto'))
    x, guide, alpha, lam, asym, *window = _dpp_args(torch.float32, True)
    x, guide = (t.half().contiguous(memory_format=torch.channels_last) for t in (x, guide))
    torch.library.opcheck(OPS.dpp2d, (*_requiring_grad((x, guide, alpha, lam)), asym,
                                      *window, 'auto'))


class _Pools(torch.nn.Module):
    """Every public op in one module: LIP, Lite-DPP (sym) and Full-DPP (asym)."""

    def __init__(self, backend):
        super().__init__()
        self.backend = backend
        self.weight = torch.nn.Parameter(dpp_filter_box_init(3).float().expand(4, 1, 3, 3) + 0)
        self.bias = torch.nn.Parameter(torch.zeros(4))
        self.alpha = torch.nn.Parameter(torch.ones(4))
        self.lam = torch.nn.Parameter(torch.full((1, ), 2.0))

    def forward(self, x, logit):
        b = self.backend
        lip = lip2d(x, logit, backend=b)
        lite = dpp2d(x, dpp_box_guide(x, 3, 2, 1, backend=b), self.alpha, self.lam, 'sym', 3,
                     2, 1, backend=b)
        full = dpp2d(x, dpp_filter_guide(x, self.weight, self.bias, 3, 2, 1, backend=b),
                     self.alpha, self.lam, 'asym', 3, 2, 1, backend=b)
        return lip + lite * full


def _inputs(shape=(2, 4, 9, 8)):
    return (_randn(*shape, dtype=torch.float32).requires_grad_(),
            (_randn(*shape, dtype=torch.float32, seed=1) * 4).requires_grad_())


def _value_and_grads(module, x, logit):
    out = module(x, logit)
    params = list(module.parameters())
    return (out, *torch.autograd.grad(out.square().sum(), [x, logit, *params]))


@pytest.mark.parametrize('backend', ('auto', 'torch'))
def test_no_graph_breaks(backend):
    explanation = torch._dynamo.explain(_Pools(backend))(*_inputs())
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1


def test_compiled_equals_eager_with_dynamic_shapes():
    # Inductor runs on every layer in tests/test_models/test_compile.py.
    torch._dynamo.reset()
    module = _Pools('auto')
    compiled = torch.compile(module, backend='aot_eager', fullgraph=True, dynamic=True)
    for shape in ((2, 4, 9, 8), (1, 4, 12, 7)):
        x, logit = _inputs(shape)
        for got, expected in zip(_value_and_grads(compiled, x, logit),
                                 _value_and_grads(module, x, logit)):
            torch.testing.assert_close(got, expected)


def test_export_every_op():
    x, logit = (t.detach() for t in _inputs())
    module = _Pools('auto')
    program = torch.export.export(module, (x, logit))
    targets = {str(node.target) for node in program.graph.nodes if node.op == 'call_function'}
    assert {'lip_mmdet.lip2d.default', 'lip_mmdet.dpp2d.default',
            'lip_mmdet.dpp_filter_guide.default'} <= targets
    torch.testing.assert_close(program.module()(x, logit), module(x, logit))


def test_double_backward_is_a_clear_error():
    x, logit = _inputs()
    module = _Pools('auto')
    for output in (lip2d(x, logit), module(x, logit) - lip2d(x, logit)):
        first = torch.autograd.grad(output.sum(), x, create_graph=True)[0]
        with pytest.raises(RuntimeError, match='second-order gradients'):
            first.sum().backward()


@pytest.mark.parametrize('backend', BACKENDS)
def test_nan_stays_in_the_windows_that_contain_it(backend):
    x, logit = (t.detach() for t in _inputs((1, 2, 10, 10)))
    for poisoned in (x, logit):
        xs, ls = x.clone(), logit.clone()
        (xs if poisoned is x else ls)[0, 0, 4, 4] = float('nan')
        xs.requires_grad_()
        ls.requires_grad_()
        out = lip2d(xs, ls, backend=backend)
        # Pixel (4, 4) lies in the 3x3/s2/p1 windows of output rows/columns 2 only.
        expected = torch.zeros_like(out, dtype=torch.bool)
        expected[0, 0, 2, 2] = True
        assert torch.equal(out.isnan(), expected)
        out.backward(torch.ones_like(out))
        # Gradients go NaN only on the pixels of that window (rows/columns 3..5).
        bad = torch.zeros_like(xs, dtype=torch.bool)
        bad[0, 0, 3:6, 3:6] = True
        assert not ls.grad[~bad].isnan().any() and not xs.grad[~bad].isnan().any()
    alpha, lam = torch.ones(2), torch.ones(2)
    xs = x.clone()
    xs[0, 1, 4, 4] = float('nan')
    for reward in ('sym', 'asym'):
        out = dpp2d(xs, dpp_box_guide(xs, 3, 2, 1, backend=backend), alpha, lam, reward, 3, 2,
                    1, backend=backend)
        assert out.isnan().sum() == 1 and out[0, 1, 2, 2].isnan()


def test_backend_choice_and_errors(monkeypatch):
    x, logit = (t.detach() for t in _inputs())
    assert POOLING_BACKENDS == ('auto', 'cpu_kernel', 'triton', 'torch')
    with pytest.raises(ValueError, match='unknown backend'):
        lip2d(x, logit, backend='cuda')
    with pytest.raises(ValueError, match='needs CPU tensors'):
        lip2d(x.to('meta'), logit.to('meta'), backend='cpu_kernel')
    monkeypatch.setenv('TRITON_INTERPRET', '0')
    with pytest.raises(RuntimeError, match='TRITON_INTERPRET=1'):
        lip2d(x, logit, backend='triton')
    # The meta device (any device without a kernel) gets shapes from the fake implementation.
    meta = lip2d(x.to('meta'), logit.to('meta'))
    assert meta.shape == F.avg_pool2d(x, 3, 2, 1).shape


def test_flop_counter_counts_the_filter_guide_as_a_depthwise_convolution():
    from torch.utils.flop_counter import FlopCounterMode
    x, logit = _inputs()
    module = _Pools('auto')
    with FlopCounterMode(display=False) as counter:
        out = module(x, logit)
    # Two guides (on CPU the Lite box guide is the filter op with box taps), 2 FLOPs per
    # multiply-add, 9 per guide pixel; the pooling arithmetic is not counted.
    guide_flops = 2 * 2 * 9 * out.numel()
    assert counter.get_total_flops() == guide_flops
    with FlopCounterMode(display=False) as counter:
        out.sum().backward()
    assert counter.get_total_flops() == 2 * guide_flops


@pytest.mark.parametrize('backend', BACKENDS)
def test_every_backend_saves_only_the_inputs(backend):
    x, logit = _inputs()
    module = _Pools(backend)
    guide = dpp_filter_guide(x, module.weight, module.bias, 3, 2, 1, backend=backend)
    calls = [(lambda: lip2d(x, logit, backend=backend), (x, logit)),
             (lambda: dpp2d(x, guide, module.alpha, module.lam, 'asym', 3, 2, 1,
                            backend=backend), (x, guide, module.alpha, module.lam)),
             (lambda: dpp_filter_guide(x, module.weight, module.bias, 3, 2, 1,
                                       backend=backend), (x, module.weight, module.bias))]
    for call, inputs in calls:
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(
                lambda t, saved=saved: saved.append(t) or t, lambda t: t):
            call()
        assert sorted(t.data_ptr() for t in saved) == sorted(t.data_ptr() for t in inputs)
