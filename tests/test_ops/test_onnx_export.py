"""ONNX translations of the pooling ops: standard operators only, ONNX Runtime parity at sizes
other than the export's, both exporters, opsets 17 and 18 (and 11, mmdeploy's default, for
TorchScript), float16 safety, traced paddings.

Every case of an exporter and opset goes into one module (an "op zoo") exported once, so the
exporters' fixed cost (about 2 s for dynamo) is paid once per file."""
import numpy as np
import onnxruntime  # noqa: F401  (a test dependency: its absence must fail)
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lip_mmdet.deployment import (
    export_onnx,
    flatten_outputs,
    largest_relative_difference,
    non_standard_nodes,
    onnxruntime_outputs,
    onnxruntime_runs,
)
from lip_mmdet.ops import dpp2d, dpp_box_guide, dpp_filter_guide, lip2d, onnx_export

#: float32 parity of a single op: its graph sums the same terms in another order.
TOLERANCE = 1e-5

LIP_WINDOWS = [(3, 2, 1), (2, 2, 0), (3, 1, 1), ((3, 2), (2, 1), (1, 0))]
# (kernel, stride, padding) of dpp2d and its guides: the paper's 2x2, the stem's 3x3/s2/p1, a
# stride-1 window with 'same' (top, bottom, left, right) padding (S3DPP's), and windows whose
# 3x3 filter is cropped (5x5) or padded beyond the window (1x1).
DPP_WINDOWS = [(2, 2, 0), (3, 2, 1), (2, 1, (0, 1, 0, 1)), (5, 2, 2), (1, 1, 0)]
CHANNELS = 3
# the export size, and sizes with odd and mixed sides
SIZES = [(12, 12), (17, 10), (9, 15)]


def _param(*shape, seed, low=0.0, high=1.0):
    gen = torch.Generator().manual_seed(seed)
    return nn.Parameter(low + (high - low) * torch.rand(shape, generator=gen))


class Zoo(nn.Module):
    """Every case on one input: LIP windows (logits of scale 4 from the input), DPP with both
    rewards, box and filter guides, and the filter guide alone; ``small``: one case of each
    op (what an opset changes is per operator, not per window)."""

    def __init__(self, small=False):
        super().__init__()
        self.lip_windows = LIP_WINDOWS[:1] if small else LIP_WINDOWS
        self.dpp_windows = DPP_WINDOWS[:1] if small else DPP_WINDOWS
        self.alpha = _param(CHANNELS, seed=1, low=0.3, high=2.0)
        self.lam = _param(CHANNELS, seed=2, low=0.3, high=6.0)
        self.weight = _param(CHANNELS, 1, 3, 3, seed=3, low=-1.0, high=1.0)
        self.bias = _param(CHANNELS, seed=4, low=-0.5, high=0.5)

    def forward(self, x):
        logit = torch.sin(3 * x) * 4
        outs = [lip2d(x, logit, *window) for window in self.lip_windows]
        for k, s, p in self.dpp_windows:
            full = dpp_filter_guide(x, self.weight, self.bias, k, s, p)
            outs.append(full)
            for reward in ('asym', 'sym'):
                outs.append(dpp2d(x, dpp_box_guide(x, k, s, p), self.alpha, self.lam, reward,
                                  k, s, p))
                outs.append(dpp2d(x, full, self.alpha, self.lam, reward, k, s, p))
        return tuple(outs)


def _input(*size, seed=0):
    return torch.randn(1, CHANNELS, *size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope='module', params=[('dynamo', 18), ('dynamo', 17), ('torchscript', 18),
                                        ('torchscript', 17), ('torchscript', 11)],
                ids=lambda p: f'{p[0]}-{p[1]}')
def zoo_file(request, tmp_path_factory):
    exporter, opset = request.param
    model = Zoo(small=opset < 18).eval()
    path = str(tmp_path_factory.mktemp('zoo') / f'zoo_{exporter}_{opset}.onnx')
    export_onnx(model, (_input(12, 12),), path, exporter=exporter, opset=opset, optimize=False)
    runs = onnxruntime_runs(path, [(_input(*size, seed=sum(size)),) for size in SIZES])
    return model, path, opset, dict(zip(SIZES, runs))


def test_holds_standard_operators_only(zoo_file):
    import onnx

    _, path, opset, _ = zoo_file
    assert non_standard_nodes(path) == []
    imports = {o.domain: o.version for o in onnx.load(path).opset_import}
    assert imports.get('', imports.get('ai.onnx')) == opset


@pytest.mark.parametrize('size', SIZES)
def test_matches_pytorch_at_any_size(zoo_file, size):
    model, _, _, runs = zoo_file
    with torch.no_grad():
        reference = flatten_outputs(model(_input(*size, seed=sum(size))))
    outputs = runs[size]
    for index, (ref, out) in enumerate(zip(reference, outputs)):
        difference = largest_relative_difference([ref], [out])
        assert difference <= TOLERANCE, (index, difference)


def test_graph_shifts_each_window_by_its_maximum(zoo_file):
    """The LIP graph takes the window maxima with MaxPool, exponentials and strided Slices."""
    import onnx

    _, path, _, _ = zoo_file
    ops = [node.op_type for node in onnx.load(path).graph.node]
    assert 'MaxPool' in ops and 'Exp' in ops and 'Slice' in ops


class LipModule(nn.Module):
    def forward(self, x, logit):
        return lip2d(x, logit)


def _float16_arithmetic(path, inputs):
    """The file run by ONNX's reference evaluator, which rounds every node's result to its
    dtype: ONNX Runtime's CPU kernels compute float16 nodes in float32 (it inserts casts)
    and keep float32 between them, so they would not show a float16 overflow."""
    from onnx.reference import ReferenceEvaluator

    evaluator = ReferenceEvaluator(path)
    names = [i.name for i in evaluator.proto_.graph.input]
    return evaluator.run(None, {n: t.numpy() for n, t in zip(names, inputs)})[0]


@pytest.mark.parametrize('exporter', ['dynamo', 'torchscript'])
def test_lip_float16_stays_finite_where_the_textbook_formula_overflows(exporter, tmp_path):
    """Logits near the gate's maximum (12): e^12 = 1.6e5 > 65504, float16's largest value.
    The exported graph, computed in float16 node by node, stays finite and close to the
    float32 op (and so does ONNX Runtime on it); the textbook formula's graph overflows in
    the same evaluation (so the check can fail)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 10, 10, generator=gen)
    logit = 11.0 + torch.rand(1, 4, 10, 10, generator=gen) * 0.99
    half = (x.half(), logit.half())
    path = str(tmp_path / 'lip16.onnx')
    export_onnx(LipModule(), half, path, exporter=exporter, optimize=False)
    expected = lip2d(x, logit).numpy()
    for out in (_float16_arithmetic(path, half), onnxruntime_outputs(path, half)[0]):
        assert out.dtype == np.float16 and np.isfinite(out).all()
        assert np.abs(out.astype(np.float32) - expected).max() <= 1e-2 * np.abs(expected).max()

    class Textbook(nn.Module):
        def forward(self, x, logit):
            weight = torch.exp(logit)
            return F.avg_pool2d(x * weight, 3, 2, 1) / F.avg_pool2d(weight, 3, 2, 1)

    naive = str(tmp_path / 'naive16.onnx')
    export_onnx(Textbook(), half, naive, exporter='torchscript')
    assert not np.isfinite(_float16_arithmetic(naive, half)).all()


def test_lip_large_logits_stay_exact(tmp_path):
    """Logits up to 200 apart: every exponent the graph takes is <= 0, so float32 gives the
    op's result where exp(logit) alone would be inf."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 9, 9, generator=gen)
    logit = torch.randn(1, 2, 9, 9, generator=gen) * 100
    path = str(tmp_path / 'lip_large.onnx')
    export_onnx(LipModule(), (x, logit), path, exporter='torchscript')
    out = onnxruntime_outputs(path, (x, logit))[0]
    assert largest_relative_difference([lip2d(x, logit)], [out]) <= TOLERANCE


class CeilPaddedDpp(nn.Module):
    """DPP whose bottom/right padding grows with the input so the output has ceil(H/2) rows,
    computed from the input's shape as the DPP layers' ``ceil_output`` does, through the
    traced-size paths."""

    def __init__(self, full):
        super().__init__()
        self.full = full
        self.alpha = _param(CHANNELS, seed=5, low=0.3, high=2.0)
        self.lam = _param(CHANNELS, seed=6, low=0.3, high=6.0)
        self.weight = _param(CHANNELS, 1, 3, 3, seed=7, low=-1.0, high=1.0)

    def forward(self, x):
        height, width = x.shape[2:]
        pads = (0, (height + 1) // 2 * 2 - height, 0, (width + 1) // 2 * 2 - width)
        route = onnx_export.has_traced_sizes(pads)
        box = onnx_export.traced_dpp_box_guide if route else dpp_box_guide
        filt = onnx_export.traced_dpp_filter_guide if route else dpp_filter_guide
        pool = onnx_export.traced_dpp2d if route else dpp2d
        guide = filt(x, self.weight, None, 2, 2, pads) if self.full else box(x, 2, 2, pads)
        return pool(x, guide, self.alpha, self.lam, 'asym', 2, 2, pads)


@pytest.mark.parametrize('full', [False, True], ids=['box', 'filter'])
def test_traced_size_padding_stays_dynamic_under_torchscript(full, tmp_path):
    model = CeilPaddedDpp(full).eval()
    path = str(tmp_path / 'ceil.onnx')
    export_onnx(model, (_input(9, 8),), path, exporter='torchscript')
    assert non_standard_nodes(path) == []
    for size in [(9, 8), (12, 12), (7, 13)]:
        x = _input(*size, seed=3)
        out = onnxruntime_outputs(path, (x,))[0]
        assert out.shape[2:] == ((size[0] + 1) // 2, (size[1] + 1) // 2)
        assert largest_relative_difference([model(x)], [out]) <= TOLERANCE, size


def test_translation_table_names_every_forward_op_and_exports(tmp_path):
    """The explicit ``custom_translation_table`` (the fallback the docs name) exports too."""
    table = onnx_export.onnx_translation_table()
    ops = torch.ops.lip_mmdet
    assert set(table) == {ops.lip2d.default, ops.dpp2d.default, ops.dpp_filter_guide.default}
    x, logit = _input(9, 9), _input(9, 9, seed=1)
    path = str(tmp_path / 'table.onnx')
    torch.onnx.export(LipModule(), (x, logit), path, dynamo=True, verbose=False,
                      custom_translation_table=table, optimize=False)
    assert non_standard_nodes(path) == []
    out = onnxruntime_outputs(path, (x, logit))[0]
    assert largest_relative_difference([lip2d(x, logit)], [out]) <= TOLERANCE


def test_translations_take_the_op_schemas_argument_names():
    """Some torch releases (2.9) match a custom translation to a node by argument name."""
    import inspect
    for op, translation in onnx_export.onnx_translation_table().items():
        schema_names = [argument.name for argument in op._schema.arguments]
        assert list(inspect.signature(translation).parameters) == schema_names, op


def test_translations_and_deployment_import_onnx_packages_only_where_used():
    """At module level the translations and lip_mmdet.deployment import torch and the
    standard library only: onnx, onnxscript and onnxruntime are imported by the functions
    that build or run a graph (importing lip_mmdet stays as fast as before)."""
    import ast

    import lip_mmdet.deployment

    for module in (onnx_export, lip_mmdet.deployment):
        tree = ast.parse(open(module.__file__).read())
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        names = {alias.name.split('.')[0] for n in top if isinstance(n, ast.Import)
                 for alias in n.names}
        names |= {n.module.split('.')[0] for n in top
                  if isinstance(n, ast.ImportFrom) and n.module and not n.level}
        assert not names & {'onnx', 'onnxscript', 'onnxruntime', 'onnx_ir'}, module.__name__
