"""LIPResNet and DPPResNet say what is wrong with an argument (mmdet's ResNet asserts, or
builds and silently returns nothing), and behave as nn.Modules (``eval()`` returns the model)."""
import pytest
import torch
from mmdet.models.backbones import ResNet

from lip_mmdet.models.backbones import DPPResNet, LIPResNet

BACKBONES = [LIPResNet, DPPResNet]


@pytest.mark.parametrize('backbone', BACKBONES, ids=lambda b: b.__name__)
@pytest.mark.parametrize('kwargs, error, words', [
    (dict(out_indices=(0, 4)), ValueError, 'out_indices must be'),
    (dict(out_indices=(-1, )), ValueError, 'negative indices are not supported'),
    (dict(out_indices=()), ValueError, 'non-empty'),
    (dict(num_stages=0), ValueError, 'num_stages must be 1, 2, 3 or 4, got 0'),
    (dict(num_stages=5), ValueError, 'num_stages must be 1, 2, 3 or 4, got 5'),
    (dict(strides=(1, 2, 2)), ValueError, 'strides needs one entry per stage (4'),
    (dict(dilations=(1, 1)), ValueError, 'dilations needs one entry per stage (4'),
    (dict(num_stages=2, out_indices=(0, 1)), ValueError, 'strides needs one entry per stage (2'),
    (dict(strides=(1, 2, 0, 2)), ValueError, 'strides must be positive ints'),
    (dict(frozen_stages=7), ValueError, 'frozen_stages must be -1 (none frozen) .. 4'),
    (dict(frozen_stages=-2), ValueError, 'frozen_stages must be -1'),
    (dict(depth=42), KeyError, 'invalid depth 42'),
    (dict(dcn=dict(type='DCNv2', deform_groups=1), stage_with_dcn=(False, True)), ValueError,
     'stage_with_dcn needs one bool per stage'),
], ids=['out_of_range', 'negative', 'empty', 'no_stages', 'five_stages', 'short_strides',
        'short_dilations', 'strides_vs_num_stages', 'zero_stride', 'frozen_too_many',
        'frozen_negative', 'depth', 'dcn_stage_list'])
def test_bad_argument_is_named(backbone, kwargs, error, words):
    kwargs = dict(dict(depth=18), **kwargs)
    with pytest.raises(error) as excinfo:
        backbone(**kwargs)
    message = str(excinfo.value)
    assert words in message and backbone.__name__ in message


@pytest.mark.parametrize('backbone', BACKBONES, ids=lambda b: b.__name__)
@pytest.mark.parametrize('depth', [18, 34])
def test_dcn_on_basic_block_depths_says_it_needs_bottlenecks(backbone, depth):
    with pytest.raises(ValueError, match='dcn needs Bottleneck blocks, i.e. depth 50, 101 or '
                                         f'152 \\(depth {depth} uses BasicBlock'):
        backbone(depth=depth, dcn=dict(type='DCNv2', deform_groups=1, fallback_on_stride=False),
                 stage_with_dcn=(False, False, True, True))


@pytest.mark.parametrize('backbone', BACKBONES, ids=lambda b: b.__name__)
def test_valid_reduced_stage_settings_still_build(backbone):
    model = backbone(depth=18, num_stages=2, strides=(1, 2), dilations=(1, 1), out_indices=(1, ),
                     frozen_stages=2).eval()
    outs = model(torch.rand(1, 3, 32, 32))
    assert [tuple(o.shape) for o in outs] == [(1, 128, 4, 4)]
    stock = ResNet(depth=18, num_stages=2, strides=(1, 2), dilations=(1, 1), out_indices=(1, ))
    stock.eval()  # returns None: mmdet's ResNet.train has no return
    assert [tuple(o.shape) for o in stock(torch.rand(1, 3, 32, 32))] == [(1, 128, 4, 4)]


@pytest.mark.parametrize('backbone', BACKBONES, ids=lambda b: b.__name__)
def test_train_and_eval_return_the_model(backbone):
    model = backbone(depth=18, frozen_stages=1, norm_eval=True)
    assert model.eval() is model and not model.training
    assert model.train() is model and model.training
    assert not model.layer1.training  # mmdet's freezing still applies
    assert model.train(False) is model and not model.layer2.training
