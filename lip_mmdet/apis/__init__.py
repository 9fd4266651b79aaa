"""What the command-line tools run, as functions: ``tools/train.py`` and ``tools/test.py`` are
:func:`train_main` and :func:`test_main`, and the steps behind them (argument parsing, config
loading, the preflight checks that turn a missing dataset or checkpoint into one readable
message, building the Runner) can be called from scripts and notebooks.

The name follows ``mmdet.apis``, where MMDetection users look for the functions that drive
detection from Python (``init_detector``, ``inference_detector``; in MMDetection 2.x also
``train_detector``, the body of its ``tools/train.py``). Checkpoint safety is not part of
it: the allow-listed loading lives in :mod:`lip_mmdet.utils.checkpoint` and holds for every
checkpoint the process loads, through these functions or not.
"""
from . import launch, preflight
from .launch import *  # noqa: F401,F403
from .preflight import *  # noqa: F401,F403

__all__ = [*launch.__all__, *preflight.__all__]
