"""LIP and DPP learned pooling for MMDetection 3.x.

Importing this package registers its ops, layers, backbones, metrics and hooks in
mmdet's registries, and lets mmengine load the checkpoints it saves under torch >= 2.6.
"""
from .version import __version__
from . import utils  # noqa: F401  (first: checkpoint loading fix)
from . import demo, evaluation, models, ops  # noqa: F401
from . import engine  # noqa: F401  (after models: its hooks read the pooling layers)

__all__ = ['__version__']
