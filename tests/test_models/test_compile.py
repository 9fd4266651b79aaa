"""LIP-ResNet and DPP-ResNet under torch.compile (one graph, compiled == eager in training and
eval, static and dynamic shapes) and torch.export of every LIP and DPP layer.

Compiling whole backbones is slow on CPU, so backbones are cut to two stages (stem, a stride-1
and a stride-2 stage: every kind of block; deeper stages repeat them), traced by Dynamo alone
(a graph break fails ``fullgraph=True``) and compiled end to end with aot_eager; changing input
sizes (dynamic shapes) and Inductor run on a module holding every layer."""
import pytest
import torch
import torch._dynamo
import torch._inductor.config
from mmdet.registry import MODELS
from torch import nn
from torch._dynamo.testing import CompileCounterWithBackend

from lip_mmdet.models.layers import (
    S3DPP,
    BottleneckLIP,
    BottleneckShared,
    FullDPP,
    LiteDPP,
    SimplifiedLIP,
)

TWO_STAGES = dict(num_stages=2, strides=(1, 2), dilations=(1, 1), out_indices=(0, 1))
BACKBONES = {
    'lip18': dict(type='LIPResNet', depth=18),
    'lip50': dict(type='LIPResNet', depth=50),
    'lite': dict(type='DPPResNet', depth=18, dpp_cfg=dict(type='LiteDPP')),
    'full_after_add': dict(type='DPPResNet', depth=18, dpp_placement='after_add',
                           dpp_cfg=dict(type='FullDPP', reward='sym')),
    's3': dict(type='DPPResNet', depth=18, dpp_cfg=dict(type='S3DPP', guide='full')),
    's3_after_add': dict(type='DPPResNet', depth=18, dpp_placement='after_add',
                         dpp_cfg=dict(type='S3DPP', reward='asym')),
}


def _randomise_pooling(model):
    """Random logit convs and DPP parameters: not the initialisation at which every pool is
    an average."""
    torch.manual_seed(0)
    with torch.no_grad():
        for key, param in model.named_parameters():
            if 'postprocessing.conv' in key or 'logit.conv' in key:
                param.normal_(0, 0.1)
            elif 'log_lambda' in key or 'log_alpha' in key or 'guide_' in key:
                param.add_(torch.rand_like(param) - 0.5)
    return model


def _backbone(name, **overrides):
    model = MODELS.build(dict(BACKBONES[name], **overrides))
    model.init_weights()
    return _randomise_pooling(model)


def _run(model, x, train):
    """Outputs and the gradients of input and parameters, with S3 sampling seeded alike."""
    model.train(train)
    torch.manual_seed(1)
    x = x.detach().requires_grad_()
    outs = model(x)
    loss = sum(o.square().mean() for o in outs)
    return (*outs, *torch.autograd.grad(loss, [x, *model.parameters()], allow_unused=True))


def _assert_same(got, expected):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert (g is None) == (e is None)
        if e is not None:
            torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)


def _dynamo_only(graph_module, example_inputs):
    return graph_module.forward


# lip50 is traced with fullgraph=True in both modes by test_compiled_backbone_equals_eager
@pytest.mark.parametrize('name', [name for name in BACKBONES if name != 'lip50'])
def test_backbone_is_one_graph(name):
    model = _backbone(name, **TWO_STAGES)
    torch._dynamo.reset()
    for train in (True, False):  # the modes take different paths (S3 sampling)
        model.train(train)
        torch.compile(model, backend=_dynamo_only, fullgraph=True)(torch.randn(1, 3, 64, 96))


def test_compiled_backbone_equals_eager():
    # The DPP layers' compiled values are checked on _EveryLayer below.
    torch._dynamo.reset()
    model = _backbone('lip50', **TWO_STAGES)
    compiled = torch.compile(model, backend='aot_eager', fullgraph=True)
    x = torch.randn(1, 3, 64, 96)
    for train in (True, False):
        _assert_same(_run(compiled, x, train), _run(model, x, train))


class _EveryLayer(nn.Module):
    """Every LIP and DPP layer on one (N, 4, H, W) input; returns their outputs."""

    def __init__(self):
        super().__init__()
        self.stem = SimplifiedLIP(4)
        self.shared = BottleneckShared(4, width=8)
        self.lip = BottleneckLIP(4, width=8)
        self.lite = LiteDPP(4, 'sym', 3, 2, 1)
        self.full = FullDPP(4)
        self.s3 = S3DPP(4, guide='full')
        _randomise_pooling(self)

    def forward(self, x):
        return (self.stem(x), self.lip(x, self.shared(x)), self.lite(x), self.full(x),
                self.s3(x))


def test_compiled_layers_equal_eager_as_sizes_change():
    # Detection batches change size: one dynamic graph serves them (eval mode is compiled
    # with the backbone above). Sizes stay even (mmdet pads images to multiples of 32) and
    # batches above 1: S3 sampling branches on the parity of H and W, and Dynamo specialises
    # sizes 0 and 1, so those changes compile another graph (docs/pooling.md).
    torch._dynamo.reset()
    module = _EveryLayer()
    counter = CompileCounterWithBackend('aot_eager')
    compiled = torch.compile(module, backend=counter, fullgraph=True, dynamic=True)
    graphs_compiled = []
    for shape in [(2, 4, 10, 12), (3, 4, 14, 8), (2, 4, 6, 18)]:
        x = torch.randn(shape)
        _assert_same(_run(compiled, x, True), _run(module, x, True))
        graphs_compiled.append(counter.frame_count)
    assert len(set(graphs_compiled)) == 1, graphs_compiled  # no recompilation


def test_inductor_trains_every_layer_with_dynamic_shapes():
    torch._dynamo.reset()
    module = _EveryLayer()
    compiled = torch.compile(module, fullgraph=True, dynamic=True)
    x = torch.randn(2, 4, 10, 12)
    # Eager's random numbers for S3 sampling (Inductor otherwise draws its own).
    with torch._inductor.config.patch(fallback_random=True):
        _assert_same(_run(compiled, x, True), _run(module, x, True))


@pytest.mark.parametrize('name', ['stem', 'lip', 'lite', 'full', 's3'])
def test_export_every_layer(name):
    layer = getattr(_EveryLayer(), name).eval()
    x = torch.randn(2, 4, 11, 10)
    inputs = (x, BottleneckShared(4, width=8)(x).detach()) if name == 'lip' else (x, )
    program = torch.export.export(layer, inputs)
    ops = {str(node.target) for node in program.graph.nodes if node.op == 'call_function'}
    assert any(op.startswith('lip_mmdet.') for op in ops)
    torch.testing.assert_close(program.module()(*inputs), layer(*inputs))
