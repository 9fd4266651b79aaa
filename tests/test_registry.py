"""The pooling layers in lip_mmdet's registry, reached from mmdet configs."""
import pytest
import torch
import torch.nn.functional as F
from mmdet.registry import MODELS

from lip_mmdet.models.layers import SimplifiedLIP
from lip_mmdet.registry import MODELS as LIP_MODELS


@pytest.mark.parametrize('cfg,size', [
    (dict(type='LiteDPP', channels=8, reward='asym'), (4, 4)),
    (dict(type='FullDPP', channels=8, reward='sym', kernel_size=3, stride=2, padding=1),
     (5, 5)),
    (dict(type='S3DPP', channels=8, reward='sym', guide='full', seed=0), (5, 5)),
])
def test_dpp_layers_build_from_mmdet_configs(cfg, size):
    """From an mmdet config as ``lip_mmdet.<name>``; not under mmdet's bare names."""
    layer = MODELS.build(dict(cfg, type=f"lip_mmdet.{cfg['type']}"))
    assert type(layer).__name__ == cfg['type']
    assert layer(torch.randn(2, 8, 9, 9)).shape == (2, 8, *size)
    assert MODELS.get(cfg['type']) is None


def test_only_the_stand_alone_lip_layer_is_registered():
    """SimplifiedLIP builds from an mmdet config as ``lip_mmdet.SimplifiedLIP`` (and starts as
    3x3 average pooling); the bottleneck's internal modules are not registered anywhere."""
    layer = MODELS.build(dict(type='lip_mmdet.SimplifiedLIP', channels=4))
    assert type(layer) is SimplifiedLIP
    assert LIP_MODELS.get('SimplifiedLIP') is SimplifiedLIP
    x = torch.randn(1, 4, 7, 6)
    out = layer(x)
    assert out.shape == (1, 4, 4, 3)
    torch.testing.assert_close(out, F.avg_pool2d(x, 3, 2, 1, count_include_pad=False))
    assert MODELS.get('SimplifiedLIP') is None  # not in mmdet's own namespace
    for name in ('SoftGate', 'BottleneckShared', 'BottleneckLIP'):
        assert LIP_MODELS.get(name) is None and MODELS.get(f'lip_mmdet.{name}') is None, name
