"""LIP and DPP learned pooling for MMDetection 3.x.

``lip_mmdet.ops`` (the pooling ops) and ``lip_mmdet.models.layers`` (the pooling layers)
import and run with torch alone (triton optional), in any PyTorch model.

With mmdet installed, ``import lip_mmdet`` (what ``custom_imports=dict(imports=['lip_mmdet'])``
in a config does) also does exactly this, for the whole process:

1. installs safe checkpoint loading: mmengine's checkpoint loaders (local files, URLs, the
   ``torchvision://``-style schemes) go through :mod:`lip_mmdet.utils.checkpoint`, which
   never runs code from a file and bounds what it allocates, and they load the checkpoints
   this package saves under torch >= 2.6;
2. registers the backbones (``LIPResNet``, ``DPPResNet``), the metric
   (``SizeAwareCocoMetric``), the hooks and the demo dataset in mmdet's registries, and the
   pooling layers in :data:`lip_mmdet.registry.MODELS` (a child of mmdet's ``MODELS``).

Without mmdet it does nothing else.
"""
# The order matters, so isort's is not applied: utils first (it makes mmengine's checkpoint
# loading safe before anything can load one), engine after models (its hooks read the
# pooling layers).
from .environment import mmdet_installed  # noqa: I001
from .version import __version__

if mmdet_installed():
    from . import (  # noqa: F401
        demo,
        engine,  # noqa: F401
        evaluation,
        models,
        ops,
        utils,  # noqa: F401
    )

__all__ = ['__version__']
