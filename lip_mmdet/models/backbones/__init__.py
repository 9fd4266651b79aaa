from .convert import convert_official_lip, infer_resnet_depth
from .dpp_resnet import DPPBottleneck, DPPResNet, build_dpp
from .lip_resnet import BottleneckLIPPool, LIPBottleneck, LIPResNet
from .pooled_resnet import (
    PooledBasicBlock,
    PooledBottleneck,
    PooledResNet,
    PooledShortcut,
    PostPooledBasicBlock,
    PostPooledBottleneck,
)
from .pretrained import apply_pretrained, fit_pretrained, match_state_dict

__all__ = [
    'LIPResNet', 'DPPResNet', 'PooledResNet', 'LIPBottleneck', 'BottleneckLIPPool',
    'DPPBottleneck', 'PooledBottleneck', 'PooledBasicBlock', 'PooledShortcut',
    'PostPooledBottleneck', 'PostPooledBasicBlock', 'build_dpp', 'convert_official_lip',
    'infer_resnet_depth', 'fit_pretrained', 'apply_pretrained', 'match_state_dict'
]
