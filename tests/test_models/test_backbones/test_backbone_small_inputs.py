"""LIPResNet and DPPResNet take every input size stock mmdet ResNet takes, tiny or thin, in
train and eval mode, and give stock ResNet's output sizes."""
import copy
import functools

import pytest
import torch
from mmdet.models.backbones import ResNet

from lip_mmdet.models.backbones import DPPResNet, LIPResNet
from lip_mmdet.models.layers import InstanceNorm2dAnySize, LiteDPP

VARIANTS = {
    'lip18': lambda: LIPResNet(depth=18),
    'lip50': lambda: LIPResNet(depth=50),
    'lip50_bottleneck_stem': lambda: LIPResNet(depth=50, stem_lip='bottleneck'),
    'dpp18': lambda: DPPResNet(depth=18),
    'dpp50': lambda: DPPResNet(depth=50),
    'dpp50_full_sym': lambda: DPPResNet(depth=50, dpp_cfg=dict(type='FullDPP', reward='sym')),
    'dpp50_s3': lambda: DPPResNet(depth=50, dpp_cfg=dict(type='S3DPP')),
    'dpp18_after_add': lambda: DPPResNet(depth=18, dpp_placement='after_add'),
    'dpp18_window2': lambda: DPPResNet(depth=18, dpp_cfg=dict(type='LiteDPP', kernel_size=2)),
}
# (H, W): the smallest image, one that ends in 1x1 maps, thin ones, odd sizes
SIZES = [(1, 1), (7, 9), (2, 3), (1000, 3), (3, 1000), (33, 65)]


@functools.cache
def _stock(depth):
    return ResNet(depth=depth)


@functools.cache
def _stock_sizes(depth, size, batch, training):
    model = _stock(depth)
    model.train(training)
    with torch.no_grad():
        return [tuple(o.shape[2:]) for o in model(torch.rand(batch, 3, *size))]


@functools.cache
def _built(variant):
    torch.manual_seed(0)
    return VARIANTS[variant]()


def _fresh(variant):
    """The variant as built from seed 0; building once and copying saves ~0.15 s a test."""
    return copy.deepcopy(_built(variant))


@pytest.mark.parametrize('size', SIZES, ids=lambda s: f'{s[0]}x{s[1]}')
@pytest.mark.parametrize('variant', sorted(VARIANTS))
def test_sizes_match_stock_resnet_in_train_and_eval(variant, size):
    model = _fresh(variant)
    torch.manual_seed(0)
    # batch 2 in train mode: stock ResNet's BatchNorm needs 2 values per channel there
    for training, batch in ((False, 1), (True, 2)):
        model.train(training)
        x = torch.rand(batch, 3, *size, requires_grad=training)
        outs = model(x)
        assert [tuple(o.shape[2:]) for o in outs] == _stock_sizes(model.depth, size, batch,
                                                                   training)
        assert all(torch.isfinite(o).all() for o in outs)
        if training:
            sum(o.sum() for o in outs).backward()
            assert torch.isfinite(x.grad).all()


def test_issue_example_sizes_of_resnet50():
    sizes = [tuple(o.shape[2:]) for o in LIPResNet(depth=50).eval()(torch.rand(1, 3, 7, 9))]
    assert sizes == [(2, 3), (1, 2), (1, 1), (1, 1)]


def test_instance_norm_of_one_pixel_is_its_limit():
    norm = InstanceNorm2dAnySize(4, affine=True)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    x = torch.randn(2, 4, 1, 1, requires_grad=True)
    out = norm(x)
    torch.testing.assert_close(out, norm.bias.view(1, 4, 1, 1).expand(2, 4, 1, 1))
    out.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    # what the stock normalisation gives a map whose pixels all equal that one pixel
    repeated = x.detach().expand(2, 4, 2, 3)
    # (float32 rounding of the mean, divided by sqrt(eps) = 3e-3, leaves up to ~3e-5)
    torch.testing.assert_close(norm(repeated)[..., :1, :1], out.detach(), atol=1e-4, rtol=0)
    # other sizes: exactly the stock layer
    y = torch.randn(2, 4, 3, 5)
    stock = torch.nn.InstanceNorm2d(4, affine=True)
    stock.load_state_dict(norm.state_dict())
    torch.testing.assert_close(norm(y), stock(y))


def test_dpp_window_larger_than_the_input_pools_the_pixels_it_holds():
    pool = LiteDPP(3, kernel_size=2, stride=2, ceil_output=True)
    x = torch.randn(1, 3, 1, 1)
    torch.testing.assert_close(pool(x), x)  # one pixel pools to itself
    y = torch.randn(1, 3, 3, 5)
    out = pool(y)
    assert out.shape == (1, 3, 2, 3)
    torch.testing.assert_close(out[:, :, -1:, -1:], y[:, :, -1:, -1:])  # corner window: 1 pixel
    # where the windows fit, exactly the floor-sized pooling
    exact = LiteDPP(3, kernel_size=2, stride=2)
    exact.load_state_dict(pool.state_dict())
    torch.testing.assert_close(out[:, :, :1, :2], exact(y))
