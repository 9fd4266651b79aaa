"""On a CUDA GPU (marked ``cuda``: deselected where torch sees none; ``make gpu-check`` runs
them): the ops compiled and exported on CUDA tensors, backbone training steps in float32 and
bfloat16 autocast, and a Faster R-CNN training iteration with ``--amp``'s optimiser wrapper.
The Triton kernels against float64 references on the device are tests/test_ops/test_triton.py,
and the configs' float32 training iterations tests/test_tools/test_configs.py (both take the
GPU when there is one)."""
import math

import pytest
import torch
from mmdet.registry import MODELS
from mmengine.config import Config

from lip_mmdet.apis.launch import build_runner
from lip_mmdet.models.layers import FullDPP, LiteDPP, SimplifiedLIP

from tiny_run import REPO, tiny_options

pytestmark = pytest.mark.cuda
DEVICE = 'cuda'


def _moved_away_from_average_pooling(layer):
    """The layer with random logit/guide parameters, so that its pooling is not uniform."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in layer.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    return layer


@pytest.mark.parametrize('layer_type', [SimplifiedLIP, LiteDPP, FullDPP])
def test_compiled_and_exported_layers_match_eager_on_cuda(layer_type):
    layer = _moved_away_from_average_pooling(layer_type(8)).to(DEVICE).eval()
    x = torch.randn(2, 8, 33, 31, device=DEVICE)
    with torch.no_grad():
        eager = layer(x)
        compiled = torch.compile(layer, fullgraph=True)(x)
        exported = torch.export.export(layer, (x, )).module()(x)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(exported, eager, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('backbone', ['LIPResNet', 'DPPResNet'])
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_backbone_training_step_on_cuda(backbone, dtype):
    model = MODELS.build(dict(type=backbone, depth=18)).to(DEVICE).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(2, 3, 160, 224, device=DEVICE)
    for _ in range(2):
        with torch.autocast('cuda', dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            outs = model(x)
            loss = sum(out.float().square().mean() for out in outs)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        assert math.isfinite(loss.item())
        assert all(torch.isfinite(p.grad).all() for p in model.parameters()
                   if p.grad is not None)


def test_faster_rcnn_trains_an_iteration_with_amp(tiny_coco, tmp_path):
    config = REPO / 'configs' / 'faster_rcnn_lip_r50.py'
    cfg = Config.fromfile(str(config))
    cfg.merge_from_dict(tiny_options(cfg, tiny_coco))
    cfg.work_dir = str(tmp_path)
    cfg.default_hooks.checkpoint = None
    cfg.experiment_name = 'faster_rcnn_lip_r50_amp'
    cfg.launcher = 'none'
    cfg.optim_wrapper.type = 'AmpOptimWrapper'  # what tools/train.py --amp sets
    cfg.optim_wrapper.loss_scale = 'dynamic'
    runner = build_runner(cfg)
    runner.train()
    assert runner.iter == 1
    assert next(runner.model.parameters()).device.type == 'cuda'
    assert math.isfinite(runner.message_hub.get_scalar('train/loss').current())
