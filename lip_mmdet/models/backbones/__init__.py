from . import pooled_resnet
from .convert import convert_official_lip, infer_resnet_depth
from .dpp_resnet import DPPBottleneck, DPPResNet, build_dpp
from .lip_resnet import BottleneckLIPPool, LIPBottleneck, LIPResNet
from .pooled_resnet import *  # noqa: F401,F403
from .pretrained import apply_pretrained, fit_pretrained, match_state_dict

__all__ = [
    'LIPResNet', 'DPPResNet', 'LIPBottleneck', 'BottleneckLIPPool', 'DPPBottleneck',
    'build_dpp', 'convert_official_lip', 'infer_resnet_depth', 'fit_pretrained',
    'apply_pretrained', 'match_state_dict', *pooled_resnet.__all__
]
