from ..environment import mmdet_installed
from .layers import *  # noqa: F401,F403

if mmdet_installed():
    from .backbones import *  # noqa: F401,F403
