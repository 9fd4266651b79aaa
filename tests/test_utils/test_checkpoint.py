"""Checkpoints that mmengine's Runner saves must load back under torch >= 2.6 (weights_only),
and anything else pickled must still be refused with a clear error."""
import copy
import pickle

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.model import BaseModel
from mmengine.runner import Runner
from mmengine.runner.checkpoint import _load_checkpoint

import lip_mmdet  # noqa: F401  installs the safe loader
from lip_mmdet.utils import UnsafeCheckpointError


class TinyRegressor(BaseModel):

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, targets=None, mode='tensor'):
        outputs = self.linear(inputs)
        if mode == 'loss':
            return dict(loss=((outputs - targets) ** 2).mean())
        return outputs


def _dataset(n=16):
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(n, 2, generator=generator)
    return [dict(inputs=x, targets=x.sum(0, keepdim=True)) for x in inputs]


def _runner(work_dir, max_epochs, **kwargs):
    return Runner(
        model=TinyRegressor(),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=_dataset(),
            sampler=dict(type='DefaultSampler', shuffle=True),
            collate_fn=dict(type='default_collate'),
            batch_size=4),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9)),
        param_scheduler=dict(type='MultiStepLR', milestones=[1]),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1)),
        randomness=dict(seed=0),
        # mmengine keys the message hub by this name: one per test and run
        experiment_name=f'{work_dir.parent.name}_{work_dir.name}_{max_epochs}',
        **kwargs)


def test_runner_checkpoint_loads_back_through_resume_and_load_from(tmp_path):
    first = _runner(tmp_path / 'first', max_epochs=1)
    first.train()
    ckpt_path = tmp_path / 'first' / 'epoch_1.pth'
    assert ckpt_path.is_file()

    # What torch >= 2.6 rejects without the fix: mmengine writes numpy scalars and buffers.
    ckpt = _load_checkpoint(str(ckpt_path), map_location='cpu')
    assert isinstance(next(iter(ckpt['message_hub']['log_scalars'].values())), HistoryBuffer)
    assert ckpt['meta']['epoch'] == 1

    resumed = _runner(tmp_path / 'resumed', max_epochs=2, resume=True, load_from=str(ckpt_path))
    resumed.train()
    assert resumed.epoch == 2
    # The message hub came back too: the loss history spans both epochs (4 iterations each).
    losses, _ = resumed.message_hub.get_scalar('train/loss').data
    assert len(losses) == 8

    warm = _runner(tmp_path / 'warm', max_epochs=1, load_from=str(ckpt_path))
    warm.train()
    assert (tmp_path / 'warm' / 'epoch_1.pth').is_file()


def test_plain_torch_load_accepts_mmengine_types(tmp_path):
    buffer = HistoryBuffer()
    buffer.update(1.5)
    path = tmp_path / 'meta.pth'
    torch.save({'meta': {'seed': np.int64(3), 'lr': np.float32(0.02), 'arr': np.arange(3)},
                'buffer': copy.deepcopy(buffer)}, path)
    loaded = torch.load(path)  # weights_only=True by default
    assert loaded['meta']['seed'] == 3
    assert loaded['buffer'].mean() == 1.5
    np.testing.assert_array_equal(loaded['meta']['arr'], np.arange(3))


class Foreign:
    """A type mmengine never writes."""


class CallsGetattr:
    """Pickles as getattr(HistoryBuffer, '__init__'): getattr outside the statistics lookups."""

    def __reduce__(self):
        return getattr, (HistoryBuffer, '__init__')


@pytest.mark.parametrize('payload, culprit', [(Foreign(), 'Foreign'),
                                               (CallsGetattr(), 'getattr')])
def test_foreign_pickled_object_is_refused_with_clear_error(tmp_path, payload, culprit):
    path = tmp_path / 'foreign.pth'
    torch.save({'state_dict': {'w': torch.ones(1)}, 'extra': payload}, path)
    with pytest.raises(UnsafeCheckpointError) as excinfo:
        _load_checkpoint(str(path))
    message = str(excinfo.value)
    assert culprit in message
    assert 'weights_only=True' in message and 'add_safe_globals' in message
    assert isinstance(excinfo.value, pickle.UnpicklingError)


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match='nothere.pth'):
        _load_checkpoint(str(tmp_path / 'nothere.pth'))
