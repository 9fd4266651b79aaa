"""LIP and DPP learned pooling for MMDetection 3.x.

Importing this package registers its ops, layers, backbones, metrics and hooks in
mmdet's registries, and lets mmengine load the checkpoints it saves under torch >= 2.6.
"""
# The order matters, so isort's is not applied: utils first (it makes mmengine's checkpoint
# loading safe before anything can load one), engine after models (its hooks read the
# pooling layers).
from .version import __version__  # noqa: I001
from . import utils  # noqa: F401
from . import demo, evaluation, models, ops  # noqa: F401
from . import engine  # noqa: F401

__all__ = ['__version__']
