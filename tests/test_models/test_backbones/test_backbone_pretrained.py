"""Converting official LIP-ResNet checkpoints and loading ResNet checkpoints into our backbones."""
import logging

import pytest
import torch
import torch.nn.functional as F
from mmdet.models.backbones import ResNet
from mmengine.logging import MMLogger

import lip_mmdet  # noqa: F401
from lip_mmdet.models.backbones import (
    DPPResNet,
    LIPResNet,
    convert_official_lip,
    infer_resnet_depth,
)

from tool_scripts import run_as_script

# Every key of the official lip_resnet-50.pth beyond a standard ResNet-50.
OFFICIAL_LIP_ONLY = {'maxpool.logit.conv.weight', 'maxpool.logit.bn.weight',
                     'maxpool.logit.bn.bias'}
for _L in (2, 3, 4):
    for _part in ('conv1', 'bn1', 'conv2', 'bn2'):
        OFFICIAL_LIP_ONLY |= {f'layer{_L}.0.bottleneck_shared.logit.{_part}.weight'}
        if _part.startswith('bn'):
            OFFICIAL_LIP_ONLY.add(f'layer{_L}.0.bottleneck_shared.logit.{_part}.bias')
    for _owner in ('conv2.0', 'downsample.lip'):
        OFFICIAL_LIP_ONLY |= {f'layer{_L}.0.{_owner}.postprocessing.conv.weight',
                              f'layer{_L}.0.{_owner}.postprocessing.bn.weight',
                              f'layer{_L}.0.{_owner}.postprocessing.bn.bias'}
    OFFICIAL_LIP_ONLY.add(f'layer{_L}.0.conv2.1.weight')


def official_lip_state(depth=50, seed=0):
    """A state dict in the official layout and shapes, with random values and an fc."""
    torch.manual_seed(seed)
    model = LIPResNet(depth=depth)
    state = {}
    for key, value in model.state_dict().items():
        key = key.replace('layer1.0.downsample.0.', 'layer1.0.downsample.conv.')
        key = key.replace('layer1.0.downsample.1.', 'layer1.0.downsample.bn.')
        state[key] = torch.randn_like(value) if value.is_floating_point() else value.clone()
    state['fc.weight'] = torch.randn(1000, 2048)
    state['fc.bias'] = torch.randn(1000)
    return state


def torchvision_resnet_state(depth, seed=0):
    """A torchvision-layout ResNet state dict (mmdet's ResNet has the same keys) with an fc."""
    torch.manual_seed(seed)
    model = ResNet(depth=depth)
    state = {k: torch.randn_like(v) if v.is_floating_point() else v.clone()
             for k, v in model.state_dict().items()}
    state['fc.weight'] = torch.randn(1000, model.feat_dim)
    state['fc.bias'] = torch.randn(1000)
    return state


class _Records(logging.Handler):

    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def log_records():
    logger = MMLogger.get_current_instance()
    handler = _Records()
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)


def test_official_layout_differs_only_by_documented_keys():
    state = official_lip_state()
    standard = set(ResNet(depth=50).state_dict())
    standard = {k.replace('downsample.0.', 'downsample.conv.').replace('downsample.1.',
                                                                       'downsample.bn.')
                for k in standard}
    standard -= {f'layer{L}.0.conv2.weight' for L in (2, 3, 4)}
    assert set(state) == standard | OFFICIAL_LIP_ONLY | {'fc.weight', 'fc.bias'}


def test_converter_tool_round_trip(tmp_path, monkeypatch):
    source = official_lip_state()
    src, dst = tmp_path / 'lip_resnet-50.pth', tmp_path / 'out' / 'lip_r50_mmdet.pth'
    torch.save(source, src)
    assert run_as_script('model_converters/lip2mmdet.py', [src, dst], monkeypatch) == 0
    saved = torch.load(dst, map_location='cpu')
    assert saved['meta']['depth'] == 50
    assert saved['meta']['dropped_keys'] == ['fc.bias', 'fc.weight']
    model = LIPResNet(depth=50)
    model.load_state_dict(saved['state_dict'], strict=True)
    torch.testing.assert_close(model.layer1[0].downsample[0].weight,
                               source['layer1.0.downsample.conv.weight'])
    torch.testing.assert_close(model.maxpool.logit.conv.weight, source['maxpool.logit.conv.weight'])
    torch.testing.assert_close(model.layer3[0].downsample.lip.postprocessing.bn.bias,
                               source['layer3.0.downsample.lip.postprocessing.bn.bias'])
    assert len(saved['state_dict']) == len(source) - 2


def test_converter_rejects_the_wrong_depth():
    state = official_lip_state()
    with pytest.raises(ValueError, match=r'not in the source: layer3\.6\.conv1\.weight'):
        convert_official_lip(state, depth=101)


def test_converter_names_unfilled_and_unused_keys():
    state = official_lip_state()
    del state['layer2.0.conv2.1.weight']
    state['layer2.0.conv2.weight'] = torch.randn(128, 128, 3, 3)
    with pytest.raises(ValueError) as info:
        convert_official_lip(state)
    assert 'layer2.0.conv2.1.weight' in str(info.value)
    assert 'unused: layer2.0.conv2.weight' in str(info.value)
    with pytest.raises(ValueError, match='maxpool.logit.conv.weight'):
        convert_official_lip(torchvision_resnet_state(50), depth=50)


def test_pretrained_torchvision_checkpoint_into_lip_resnet(tmp_path, log_records):
    source = torchvision_resnet_state(50)
    path = tmp_path / 'resnet50.pth'
    torch.save(source, path)
    torch.manual_seed(1)
    model = LIPResNet(depth=50, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    state = model.state_dict()
    for key in ('conv1.weight', 'layer1.0.downsample.0.weight', 'layer4.2.bn3.running_var',
                'layer2.0.conv1.weight', 'layer3.0.bn2.bias'):
        torch.testing.assert_close(state[key], source[key], msg=key)
    torch.testing.assert_close(state['layer2.0.downsample.conv.weight'],
                               source['layer2.0.downsample.0.weight'])
    torch.testing.assert_close(state['layer4.0.downsample.bn.running_mean'],
                               source['layer4.0.downsample.1.running_mean'])
    # LIP parameters keep their initialisation: LIP still pools as 3x3 average pooling.
    assert torch.all(state['maxpool.logit.conv.weight'] == 0)
    assert torch.all(state['layer3.0.conv2.0.postprocessing.conv.weight'] == 0)
    x = torch.randn(1, 64, 9, 11)
    torch.testing.assert_close(model.maxpool(x), F.avg_pool2d(x, 3, 2, 1, count_include_pad=False))
    log = '\n'.join(log_records)
    assert 'new parameters not in the checkpoint keep their initialisation' in log
    assert 'maxpool.logit.conv.weight' in log and 'layer2.0.conv2.1.weight' in log
    assert 'checkpoint keys unused' in log
    assert 'layer2.0.conv2.weight' in log and 'fc.weight' in log


def test_pretrained_official_and_detector_checkpoints(tmp_path):
    source = official_lip_state()
    path = tmp_path / 'detector.pth'
    wrapped = {f'module.backbone.{k}': v for k, v in source.items()}
    wrapped['module.neck.conv.weight'] = torch.zeros(1)
    torch.save({'state_dict': wrapped, 'meta': {}}, path)
    model = LIPResNet(depth=50, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    state = model.state_dict()
    torch.testing.assert_close(state['layer1.0.downsample.1.weight'],
                               source['layer1.0.downsample.bn.weight'])
    torch.testing.assert_close(state['layer2.0.bottleneck_shared.logit.conv2.weight'],
                               source['layer2.0.bottleneck_shared.logit.conv2.weight'])


def test_pretrained_into_dpp_resnet(tmp_path, log_records):
    source = torchvision_resnet_state(18)
    path = tmp_path / 'resnet18.pth'
    torch.save(source, path)
    model = DPPResNet(depth=18, pretrained=str(path))
    before = {n: p.clone() for n, p in model.named_parameters() if 'pool' in n}
    model.init_weights()
    state = model.state_dict()
    for key, value in source.items():
        if not key.startswith('fc.'):
            torch.testing.assert_close(state[key], value, msg=key)
    for name, value in before.items():
        torch.testing.assert_close(state[name], value, msg=name)
    unused_line = next(m for m in log_records if 'checkpoint keys unused' in m)
    assert unused_line.endswith('fc.weight, fc.bias')


@pytest.mark.parametrize('checkpoint_depth,model_depth,message', [
    (50, 18, r'shape mismatch[\s\S]*layer1\.0\.conv1\.weight: checkpoint \(64, 64, 1, 1\)'),
    (34, 18, r'belong to modules LIPResNet-18 does not have \(wrong depth\?\): layer1\.2\.'),
    (18, 34, r'missing from the checkpoint \(wrong depth or not a ResNet checkpoint\): '
     r'layer1\.2\.conv1\.weight'),
])
def test_pretrained_wrong_depth_fails_naming_keys(tmp_path, checkpoint_depth, model_depth,
                                                  message):
    path = tmp_path / f'resnet{checkpoint_depth}.pth'
    torch.save(torchvision_resnet_state(checkpoint_depth), path)
    model = LIPResNet(depth=model_depth, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(ValueError, match=message):
        model.init_weights()


def test_missing_checkpoint_file_says_how_to_make_one(tmp_path):
    path = tmp_path / 'nowhere' / 'lip_r50.pth'
    model = LIPResNet(depth=18, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(FileNotFoundError) as info:
        model.init_weights()
    message = str(info.value)
    assert str(path) in message and 'lip2mmdet.py' in message
    assert 'init_cfg=None' in message


def test_converter_infers_the_depth_from_block_counts():
    keys = [f'layer{s + 1}.{b}.conv1.weight'
            for s, blocks in enumerate((3, 4, 23, 3)) for b in range(blocks)]
    assert infer_resnet_depth(dict.fromkeys(keys)) == 101
    with pytest.raises(ValueError, match=r'blocks per stage \(2, 2, 2, 2\)'):
        infer_resnet_depth(dict.fromkeys(f'layer{s}.{b}.conv1.weight' for s in (1, 2, 3, 4)
                                         for b in (0, 1)))
