"""The embedded CPU demo: its generated small-object dataset, its progress display and its
training run."""
from .data import DEMO_CLASSES, DEMO_SIZE_BINS, data_setting_name, make_demo_dataset
from .progress import ProgressLineHook
from .train import (
    add_demo_run_args,
    demo_config,
    fit_schedule,
    prepare_demo_data,
    train_demo,
    use_demo_data,
)

__all__ = [
    'DEMO_CLASSES', 'DEMO_SIZE_BINS', 'ProgressLineHook', 'add_demo_run_args',
    'data_setting_name', 'demo_config',
    'fit_schedule', 'make_demo_dataset', 'prepare_demo_data', 'train_demo', 'use_demo_data'
]
