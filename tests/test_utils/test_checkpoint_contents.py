"""What the allow-list accepts inside a checkpoint: everything mmengine's Runner writes (empty
numpy arrays and history buffers included), and HistoryBuffers only with the state mmengine
gives them."""
import copyreg

import numpy as np
import pytest
import torch
from checkpoint_payloads import CreatesFile
from mmengine.hooks import Hook
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner.checkpoint import _load_checkpoint
from test_checkpoint import _runner

from lip_mmdet.utils import UnsafeCheckpointError


class RecordsEmptyResults(Hook):
    """What a metric with nothing to report leaves in the message hub: an empty array in the
    runtime info and a history buffer that was never updated."""

    def after_train_epoch(self, runner):
        runner.message_hub.update_info('val/empty_per_class', np.zeros((0, 3)))
        runner.message_hub.update_info('val/empty_flat', np.array([]))
        runner.message_hub.update_info('val/never_logged', HistoryBuffer())


def test_runner_resumes_from_checkpoint_with_empty_arrays(tmp_path):
    first = _runner(tmp_path / 'first', max_epochs=1, custom_hooks=[RecordsEmptyResults()])
    first.train()
    ckpt_path = tmp_path / 'first' / 'epoch_1.pth'
    info = torch.load(ckpt_path, weights_only=False)['message_hub']['runtime_info']
    assert info['val/empty_per_class'].shape == (0, 3)  # the Runner did write them

    resumed = _runner(tmp_path / 'resumed', max_epochs=2, resume=True, load_from=str(ckpt_path))
    resumed.train()
    assert resumed.epoch == 2
    assert resumed.message_hub.get_info('val/empty_per_class').shape == (0, 3)
    never = resumed.message_hub.get_info('val/never_logged')
    assert type(never) is HistoryBuffer and len(never.data[0]) == 0


@pytest.mark.parametrize('value', [np.array([]), np.zeros((0, 3)), np.zeros(0, np.int64),
                                   np.array([], dtype=np.float32), b''])
def test_empty_values_load(tmp_path, value):
    path = tmp_path / 'empty.pth'
    torch.save({'value': value, 'buffer': HistoryBuffer()}, path)
    loaded = _load_checkpoint(str(path))
    if isinstance(value, np.ndarray):
        assert loaded['value'].shape == value.shape and loaded['value'].dtype == value.dtype
    else:
        assert loaded['value'] == b''
    assert type(loaded['buffer']) is HistoryBuffer
    assert loaded['buffer'].data[0].size == 0


class CallsBytes:
    """Pickles as ``bytes(10**12)``: the bytes global with an argument."""

    def __reduce__(self):
        return bytes, (10**12, )


def test_bytes_only_without_arguments(tmp_path):
    path = tmp_path / 'big.pth'
    torch.save({'x': CallsBytes()}, path)
    with pytest.raises(UnsafeCheckpointError, match='bytes'):
        _load_checkpoint(str(path))


def forged_buffer(state):
    """A HistoryBuffer that pickles with the given state (NEWOBJ + BUILD, as mmengine's)."""
    buffer = HistoryBuffer()
    buffer.__reduce_ex__ = lambda protocol: (copyreg.__newobj__, (HistoryBuffer, ), state)
    return buffer


def _genuine_state():
    return HistoryBuffer([1.0, 2.0], [1, 1]).__getstate__()


@pytest.mark.parametrize('change, reason', [
    (dict(statistics_methods={'mean': np.core.multiarray._reconstruct}), 'statistics_methods'),
    (dict(statistics_methods={'sum': HistoryBuffer.mean}), 'statistics_methods'),
    (dict(extra=1), 'keys'),
    (dict(max_length='1000'), 'max_length'),
    (dict(max_length=True), 'max_length'),
    (dict(_log_history=np.zeros((2, 2))), '_log_history'),
    (dict(_log_history=np.array([1 + 1j, 2j])), '_log_history'),
    (dict(_count_history=np.array([1])), 'differ'),
], ids=['foreign_method', 'unknown_statistic', 'extra_key', 'str_length', 'bool_length',
        '2d_history', 'complex_history', 'length_mismatch'])
def test_history_buffer_state_is_checked(tmp_path, change, reason):
    path = tmp_path / 'buffer.pth'
    torch.save({'buffer': forged_buffer(dict(_genuine_state(), **change))}, path)
    before = dict(HistoryBuffer._statistics_methods)
    with pytest.raises(UnsafeCheckpointError, match=reason):
        _load_checkpoint(str(path))
    assert HistoryBuffer._statistics_methods == before  # the class-wide table is untouched


def test_history_buffer_missing_state_is_refused(tmp_path):
    state = _genuine_state()
    del state['_count_history']
    path = tmp_path / 'buffer.pth'
    torch.save({'buffer': forged_buffer(state)}, path)
    with pytest.raises(UnsafeCheckpointError, match='keys'):
        _load_checkpoint(str(path))


def test_genuine_history_buffer_round_trips(tmp_path):
    path = tmp_path / 'buffer.pth'
    torch.save({'buffer': HistoryBuffer([1.0, 2.0], [1, 1])}, path)
    loaded = _load_checkpoint(str(path))['buffer']
    assert type(loaded) is HistoryBuffer and loaded.statistics('mean') == 1.5
    assert 'statistics_methods' not in loaded.__dict__


def test_history_buffer_payload_in_state_is_refused_without_running(tmp_path):
    marker = tmp_path / 'marker'
    path = tmp_path / 'buffer.pth'
    state = dict(_genuine_state(), max_length=CreatesFile(marker))
    torch.save({'buffer': forged_buffer(state)}, path)
    with pytest.raises(UnsafeCheckpointError):
        _load_checkpoint(str(path))
    assert not marker.exists()
