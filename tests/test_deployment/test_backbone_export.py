"""Every LIP-ResNet / DPP-ResNet variant exports to standard ONNX operators and matches
PyTorch in ONNX Runtime at input sizes other than the export's: every variant with the
TorchScript exporter, and with the dynamo exporter every layer type (the shared LIP trunk,
Lite and Full guides, S3DPP) and both DPP placements. The variants left out of the dynamo
export differ from these by the reward (one Relu in the ops' graphs, which both exporters
build with the same code and tests/test_ops/test_onnx_export.py checks for both rewards) or
are LIP-ResNet-18, which the export tool's tests export with dynamo; a dynamo export costs
about 2 s per variant.

The variants keep one stage of one block, of stride 2 (the stem pooling and that block carry
every pooling placement), at width 16, with their pooling moved away from its initial
average pooling (the zero-initialised logit convs, alpha, lambda and the Full-DPP filters
perturbed with a fixed seed). All variants of an exporter go into one module exported once."""
import functools
import io

import pytest
import torch
from mmdet.registry import MODELS
from torch import nn

from lip_mmdet.deployment import (
    PARITY_TOLERANCE,
    export_onnx,
    flatten_outputs,
    largest_relative_difference,
    non_standard_nodes,
    onnxruntime_outputs,
    onnxruntime_runs,
)
from lip_mmdet.models.layers import LiteDPP

pytest.importorskip('onnxruntime')

SMALL = dict(num_stages=1, strides=(2, ), dilations=(1, ), out_indices=(0, ),
             base_channels=16)
EXPORT_SIZE = (32, 32)
# odd and mixed sides: every ceil-size padding and window position of the export size changes
SIZES = [EXPORT_SIZE, (45, 37), (26, 41)]


def _dpp(kind, reward, placement):
    return dict(type='DPPResNet', depth=18, dpp_placement=placement,
                dpp_cfg=dict(type=kind, reward=reward))


VARIANTS = {
    'lip_r18': dict(type='LIPResNet', depth=18),
    'lip_r50': dict(type='LIPResNet', depth=50, lip_width=16),
    **{f'{kind.lower()}_{reward}_{placement}': _dpp(kind, reward, placement)
       for kind in ('LiteDPP', 'FullDPP') for reward in ('sym', 'asym')
       for placement in ('after_add', 'replace_stride')},
    's3dpp_sym': dict(type='DPPResNet', depth=18, dpp_cfg=dict(type='S3DPP', reward='sym')),
}
# LIP-ResNet-18 goes through the dynamo exporter in tests/test_tools/test_export_onnx.py
DYNAMO_VARIANTS = ['lip_r50', 'fulldpp_sym_after_add', 'litedpp_asym_replace_stride',
                   's3dpp_sym']
# 2x2 windows with a ceil-size bottom/right padding (see docs/deployment.md, "What the ops and
# layers need"): exact once the DPP wrappers route traced paddings (TorchScript) and the
# layers compute ceil(H / stride) without a negative floor division (dynamo).
CEIL_PADDED = {name for name in VARIANTS if name.endswith('replace_stride')}


def perturbed(cfg):
    """The variant with its pooling away from average pooling, deterministically."""
    model = MODELS.build(dict(cfg, **SMALL))
    for name in model.res_layers:  # the first block: the one that pools
        del getattr(model, name)[1:]
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(('logit.conv.weight', 'postprocessing.conv.weight')):
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)
            elif name.endswith(('logit.bn.weight', 'postprocessing.bn.weight')):
                param.fill_(3.0)  # sharper logits, spread over the gate's (0, 12)
            elif name.endswith(('log_alpha', 'log_lambda')):
                param.copy_(torch.randn(param.shape, generator=gen))
            elif name.endswith('guide_weight'):
                param.add_(torch.randn(param.shape, generator=gen) * 0.2)
    return model.eval()


class Variants(nn.Module):
    def __init__(self, names):
        super().__init__()
        self.names = list(names)
        self.models = nn.ModuleList(perturbed(VARIANTS[n]) for n in self.names)

    def forward(self, x):
        return tuple(out for model in self.models for out in model(x))


def _x(size, seed):
    return torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(seed))


@functools.cache
def _torchscript_routes_traced_paddings() -> bool:
    try:
        torch.onnx.export(LiteDPP(1, ceil_output=True).eval(), (torch.rand(1, 1, 5, 5),),
                          io.BytesIO(), dynamo=False)
    except ValueError:
        return False
    return True


@functools.cache
def _dynamo_ceil_padding_exact(tmp) -> bool:
    path = str(tmp / 'ceil_probe.onnx')
    export_onnx(LiteDPP(1, ceil_output=True), (torch.rand(1, 1, 4, 4),), path,
                optimize=False)
    return onnxruntime_outputs(path, (torch.rand(1, 1, 5, 5),))[0].shape[2:] == (3, 3)


def _needs_op_change(exporter, tmp) -> bool:
    if exporter == 'torchscript':
        return not _torchscript_routes_traced_paddings()
    return not _dynamo_ceil_padding_exact(tmp)


@pytest.fixture(scope='module', params=['dynamo', 'torchscript'])
def exported(request, tmp_path_factory):
    """{group: (model, path or the export's exception, ONNX Runtime outputs per size)} of one
    exporter."""
    exporter, tmp = request.param, tmp_path_factory.mktemp(request.param)
    groups = {'ready': [n for n in VARIANTS if n not in CEIL_PADDED],
              'ceil_padded': sorted(CEIL_PADDED)}
    if exporter == 'dynamo':  # exports either way: one module, one exporter run
        groups = {'all': DYNAMO_VARIANTS}
    result = {}
    for group, names in groups.items():
        model = Variants(names)
        path = str(tmp / f'{group}.onnx')
        try:
            export_onnx(model, (_x(EXPORT_SIZE, 0),), path, exporter=exporter, optimize=False)
        except ValueError as err:
            result[group] = (model, err, None)
            continue
        runs = onnxruntime_runs(path, [(_x(size, seed),) for seed, size in enumerate(SIZES)])
        result[group] = (model, path, runs)
    return exporter, tmp, result


def _group(result, name):
    for entry in result.values():
        if name in entry[0].names:
            return entry
    raise KeyError(name)


@pytest.mark.parametrize('name', list(VARIANTS))
def test_variant_exports_to_standard_ops_and_matches_onnxruntime(exported, name):
    exporter, tmp, result = exported
    if exporter == 'dynamo' and name not in DYNAMO_VARIANTS:
        pytest.skip('covered by the variants exported with dynamo (see the module docstring)')
    model, path, runs = _group(result, name)
    if isinstance(path, Exception):
        if name in CEIL_PADDED and _needs_op_change(exporter, tmp):
            pytest.xfail(f'the DPP wrappers do not route traced paddings yet: {path}')
        raise path
    assert non_standard_nodes(path) == []
    index = model.names.index(name)
    first = sum(len(m.out_indices) for m in model.models[:index])
    count = len(model.models[index].out_indices)
    for seed, size in enumerate(SIZES):
        with torch.no_grad():
            reference = flatten_outputs(model.models[index](_x(size, seed)))
        outputs = runs[seed][first:first + count]
        difference = largest_relative_difference(reference, outputs)
        if difference > PARITY_TOLERANCE and name in CEIL_PADDED and _needs_op_change(
                exporter, tmp):
            pytest.xfail('the DPP layers compute ceil(H / stride) by a negative floor '
                         f'division, which the dynamo exporter translates as truncation ({size})')
        assert difference <= PARITY_TOLERANCE, (size, difference)
