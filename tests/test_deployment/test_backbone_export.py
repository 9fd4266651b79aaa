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
    onnxruntime_runs,
)

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


def _export(exporter, names, tmp):
    """(model, path, ONNX Runtime outputs per size) of the variants ``names`` in one module
    exported once."""
    model = Variants(names)
    path = str(tmp / f'{exporter}.onnx')
    export_onnx(model, (_x(EXPORT_SIZE, 0), ), path, exporter=exporter, optimize=False)
    runs = onnxruntime_runs(path, [(_x(size, seed), ) for seed, size in enumerate(SIZES)])
    return model, path, runs


@pytest.fixture(scope='module')
def torchscript_export(tmp_path_factory):
    return _export('torchscript', list(VARIANTS), tmp_path_factory.mktemp('torchscript'))


@pytest.fixture(scope='module')
def dynamo_export(tmp_path_factory):
    return _export('dynamo', DYNAMO_VARIANTS, tmp_path_factory.mktemp('dynamo'))


def _assert_standard_and_matching(exported, name):
    model, path, runs = exported
    assert non_standard_nodes(path) == []
    index = model.names.index(name)
    first = sum(len(m.out_indices) for m in model.models[:index])
    count = len(model.models[index].out_indices)
    for seed, size in enumerate(SIZES):
        with torch.no_grad():
            reference = flatten_outputs(model.models[index](_x(size, seed)))
        outputs = runs[seed][first:first + count]
        difference = largest_relative_difference(reference, outputs)
        assert difference <= PARITY_TOLERANCE, (size, difference)


@pytest.mark.parametrize('name', list(VARIANTS))
def test_variant_exports_with_torchscript_and_matches_onnxruntime(torchscript_export, name):
    _assert_standard_and_matching(torchscript_export, name)


@pytest.mark.parametrize('name', DYNAMO_VARIANTS)
def test_variant_exports_with_dynamo_and_matches_onnxruntime(dynamo_export, name):
    _assert_standard_and_matching(dynamo_export, name)
