"""The Triton kernels of lip2d and dpp2d (backend='triton'): on a CUDA device when there is one,
else in Triton's interpreter on CPU tensors (tiny shapes: the interpreter is slow)."""
import pytest
import torch
import torch.nn.functional as F

from lip_mmdet.ops import dpp2d, dpp_box_guide, lip2d

from reference_pooling import reference_dpp, reference_lip

pytest.importorskip('triton')  # installed by tools/setup_env.sh where wheels exist

DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'
OPS = torch.ops.lip_mmdet
WINDOWS = [(3, 2, 1), (2, 2, 0), (3, 1, 1), (5, 3, 2), ((3, 2), (2, 1), (1, 0))]
DPP_WINDOWS = [(2, 2, 0), (3, 2, 1), ((2, 3), (2, 1), (1, 1)), (2, 1, (0, 1, 0, 1))]
# float32 accumulation, output rounded to the input dtype
TOLERANCES = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}


def _randn(*shape, dtype=torch.float64, seed=0, scale=1.0):
    t = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (t * scale).to(dtype=dtype, device=DEVICE)


def _grads(fn, inputs, seed=7):
    inputs = [t.detach().requires_grad_() for t in inputs]
    out = fn(*inputs)
    grad = _randn(*out.shape, dtype=out.dtype, seed=seed)
    return (out, *torch.autograd.grad(out, inputs, grad))


@pytest.mark.parametrize('window', WINDOWS)
def test_lip_matches_float64_references(window):
    # Logit scale 30: window maxima far apart, the shift matters.
    x, logit = _randn(2, 3, 7, 6), _randn(2, 3, 7, 6, seed=1, scale=30)
    out, *grads = _grads(lambda a, b: lip2d(a, b, *window, backend='triton'), (x, logit))
    assert out.shape == F.avg_pool2d(x, *window).shape
    torch.testing.assert_close(out, reference_lip(x, logit, *window).to(DEVICE), rtol=1e-12,
                               atol=1e-12)
    # The PyTorch-ops backward is gradchecked in test_lip.py.
    _, *expected = _grads(lambda a, b: lip2d(a, b, *window, backend='torch'), (x, logit))
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_lip_gradcheck():
    x, logit = _randn(1, 1, 4, 4), _randn(1, 1, 4, 4, seed=1, scale=5)
    assert torch.autograd.gradcheck(lambda a, b: lip2d(a, b, backend='triton'),
                                    (x.requires_grad_(), logit.requires_grad_()))


@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16])
def test_lip_half_precision_and_extreme_logits(dtype):
    x = _randn(2, 3, 9, 8, dtype=dtype)
    logit = (_randn(2, 3, 9, 8, seed=1, dtype=torch.float32) * 1e4).clamp(-6e4, 6e4).to(dtype)
    out, grad_x, grad_l = _grads(lambda a, b: lip2d(a, b, backend='triton'), (x, logit))
    assert out.dtype == grad_x.dtype == grad_l.dtype == dtype
    assert all(t.isfinite().all() for t in (out, grad_x, grad_l))
    tol = TOLERANCES[dtype]
    torch.testing.assert_close(out.double(), reference_lip(x, logit).to(DEVICE), rtol=tol,
                               atol=tol)
    _, *expected = _grads(lambda a, b: lip2d(a, b, backend='torch'),
                          (x.double(), logit.double()))
    for got, want in zip((grad_x, grad_l), expected):
        torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol)


def test_lip_channels_last_and_strided_inputs():
    x = _randn(2, 3, 9, 7, dtype=torch.float32)
    logit = _randn(2, 3, 9, 7, seed=1, scale=4, dtype=torch.float32)
    last = [t.contiguous(memory_format=torch.channels_last) for t in (x, logit)]
    every_other_column = [torch.cat([t, t], dim=3)[..., ::2] for t in (x, logit)]
    for inputs in (last, every_other_column):
        got = _grads(lambda a, b: lip2d(a, b, backend='triton'), inputs)
        expected = _grads(lambda a, b: lip2d(a, b, backend='torch'),
                          [t.contiguous() for t in inputs])
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e)


def test_nan_stays_local():
    x = _randn(1, 1, 10, 10, dtype=torch.float32)
    logit = _randn(1, 1, 10, 10, seed=1, dtype=torch.float32)
    logit[0, 0, 4, 4] = float('nan')
    out, grad_x, grad_l = _grads(lambda a, b: lip2d(a, b, backend='triton'), (x, logit))
    assert out.isnan().sum() == 1 and out[0, 0, 2, 2].isnan()
    outside = torch.ones_like(grad_x, dtype=torch.bool)
    outside[0, 0, 3:6, 3:6] = False
    assert not grad_x[outside].isnan().any() and not grad_l[outside].isnan().any()
    x[0, 0, 4, 4] = float('nan')
    alpha, lam = _randn(1).abs().float() + 0.5, _randn(1, seed=2).abs().float() + 0.5
    for reward in ('sym', 'asym'):
        out = dpp2d(x, dpp_box_guide(x, 3, 2, 1), alpha, lam, reward, 3, 2, 1,
                    backend='triton')
        assert out.isnan().sum() == 1 and out[0, 0, 2, 2].isnan()


def _dpp_inputs(window, dtype=torch.float64, shape=(2, 3, 7, 6), scale=1.0):
    x = _randn(*shape, dtype=dtype, scale=scale)
    guide = dpp_box_guide(x, *window, backend='torch') + 0.1  # asym sees clamped pixels
    alpha = torch.tensor([0.5, 1.0, 3.0], dtype=torch.float64, device=DEVICE)
    lam = torch.tensor([0.3, 1.0, 4.0], dtype=torch.float64, device=DEVICE)
    return x, guide, alpha, lam


@pytest.mark.parametrize('reward', ['sym', 'asym'])
@pytest.mark.parametrize('window', DPP_WINDOWS)
def test_dpp_matches_float64_references(reward, window):
    inputs = _dpp_inputs(window)
    out, *grads = _grads(lambda *t: dpp2d(*t, reward, *window, backend='triton'), inputs)
    torch.testing.assert_close(out, reference_dpp(*inputs, reward, *window).to(DEVICE))
    # The PyTorch-ops backward is gradchecked in test_dpp.py.
    _, *expected = _grads(lambda *t: dpp2d(*t, reward, *window, backend='torch'), inputs)
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_dpp_gradcheck():
    x, guide, alpha, lam = _dpp_inputs((2, 2, 0), shape=(1, 3, 4, 3))
    assert torch.autograd.gradcheck(
        lambda *t: dpp2d(*t, 'asym', 2, 2, 0, backend='triton'),
        [t.requires_grad_() for t in (x, guide, alpha, lam)])


@pytest.mark.parametrize('reward', ['sym', 'asym'])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize('lam', [1.0, 1e5])
def test_dpp_half_precision_and_huge_lambda(reward, dtype, lam):
    x, guide, alpha, _ = _dpp_inputs((3, 2, 1), dtype, scale=30)
    lams = torch.full((3, ), lam, device=DEVICE)
    alpha = alpha.float()
    out, *grads = _grads(lambda *t: dpp2d(*t, reward, 3, 2, 1, backend='triton'),
                         (x, guide, alpha, lams))
    assert out.dtype == dtype and all(t.isfinite().all() for t in (out, *grads))
    expected = dpp2d(x.double(), guide.double(), alpha.double(), lams.double(), reward, 3, 2,
                     1, backend='torch')
    # lambda / 2 multiplies the log-reward rounding error and x is ~30 (as in test_dpp.py).
    tol = {torch.float32: 2e-3, torch.float16: 5e-2, torch.bfloat16: 5e-1}[dtype]
    torch.testing.assert_close(out.double(), expected, rtol=tol, atol=tol)


def test_opcheck_triton_ops():
    x, logit = _randn(2, 3, 7, 6), _randn(2, 3, 7, 6, seed=1, scale=3)
    window = ((3, 3), (2, 2), (1, 1))
    torch.library.opcheck(OPS.lip2d, (x.requires_grad_(), logit.requires_grad_(), *window,
                                      'triton'))
    grad = _randn(2, 3, 4, 3, seed=2)
    torch.library.opcheck(OPS.lip2d_backward, (x.detach(), logit.detach(), grad, *window,
                                               'triton'))
    x, guide, alpha, lam = _dpp_inputs((3, 2, 1))
    dpp_window = ((3, 3), (2, 2), (1, 1, 1, 1))
    torch.library.opcheck(OPS.dpp2d, (*(t.requires_grad_() for t in (x, guide, alpha, lam)),
                                      True, *dpp_window, 'triton'))
    torch.library.opcheck(OPS.dpp2d_backward, (x.detach(), guide.detach(), alpha.detach(),
                                               lam.detach(), grad, False, *dpp_window,
                                               'triton'))


def test_compiles_without_graph_breaks():
    x, logit = _randn(2, 3, 7, 6), _randn(2, 3, 7, 6, seed=1, scale=3)
    alpha, lam = torch.ones(3, dtype=torch.float64), torch.full((3, ), 2.0, dtype=torch.float64)

    def pools(a, b):
        return (lip2d(a, b, backend='triton')
                * dpp2d(a, dpp_box_guide(a, 3, 2, 1), alpha, lam, 'sym', 3, 2, 1,
                        backend='triton'))

    compiled = torch.compile(pools, backend='aot_eager', fullgraph=True)
    got = _grads(compiled, (x, logit))
    for g, e in zip(got, _grads(pools, (x, logit))):
        torch.testing.assert_close(g, e)


def test_kernels_compile_for_real_gpus_without_spills(tmp_path):
    """The interpreter runs kernels as Python; Triton's compiler (to PTX, then ptxas: no GPU
    needed) also checks what only compiled kernels must obey (types, constexpr globals). Every
    kernel, for sm_80 and sm_90, float32 and bfloat16 maps: compiled, and no register spills
    (local memory traffic in the window loops)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    out = tmp_path / 'resources.json'
    result = subprocess.run(
        [sys.executable, str(root / 'tools' / 'analysis' / 'triton_resources.py'), '--arch', '80',
         '90', '--dtype', 'float32', 'bfloat16', '--out', str(out)],
        env=env, cwd=root, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.read_text())['kernels']
    assert len(rows) == 2 * 2 * 6
    spilled = [row for row in rows if row['spill_stores'] or row['spill_loads'] or row['stack']]
    assert not spilled, spilled
    assert all(0 < row['occupancy'] <= 1 for row in rows)
