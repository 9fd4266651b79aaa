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
from .launch import (
    CONFIG_EXTENSIONS,
    build_runner,
    check_checkpoint_fits,
    check_train_config,
    checkpoint_fit,
    load_test_config,
    load_train_config,
    parse_cfg_options,
    test_main,
    test_parser,
    train_main,
    train_parser,
)
from .preflight import (
    PreflightError,
    check_amp,
    check_checkpoint,
    check_datasets,
    check_pretrained_weights,
    check_work_dir,
    dataset_paths,
    leaf_datasets,
)

__all__ = [
    'CONFIG_EXTENSIONS', 'PreflightError', 'build_runner',
    'check_amp', 'check_checkpoint', 'check_checkpoint_fits', 'check_datasets',
    'check_pretrained_weights', 'check_train_config', 'check_work_dir', 'checkpoint_fit',
    'dataset_paths', 'leaf_datasets', 'load_test_config', 'load_train_config',
    'parse_cfg_options', 'test_main', 'test_parser', 'train_main', 'train_parser'
]
