"""A file that is not a checkpoint is reported as such: one message naming it and saying why."""
import io
import zipfile

import pytest
import torch
from mmengine.runner.checkpoint import _load_checkpoint

from lip_mmdet.utils import UnreadableCheckpointError, load_checkpoint_file


def _valid_bytes(tmp_path, **kwargs):
    path = tmp_path / 'valid.pth'
    torch.save({'state_dict': {'w': torch.arange(64.)}}, path, **kwargs)
    return path.read_bytes()


def _text(tmp_path):
    return b'hello, this is a README\n'


def _binary_noise(tmp_path):
    return bytes(range(256))


def _truncated_zip(tmp_path):
    data = _valid_bytes(tmp_path)
    return data[:len(data) // 2]


def _corrupt_zip(tmp_path):
    data = bytearray(_valid_bytes(tmp_path))
    data[200:260] = bytes(60)  # zeroes across the pickled record
    return bytes(data)


def _truncated_legacy(tmp_path):
    data = _valid_bytes(tmp_path, _use_new_zipfile_serialization=False)
    return data[:-20]


def _empty(tmp_path):
    return b''


def _other_zip(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, 'w') as archive:
        archive.writestr('notes.txt', 'hello')
    return buffer.getvalue()


@pytest.mark.parametrize('make, why', [
    (_text, 'neither a torch.save zip archive nor a legacy torch pickle'),
    (_binary_noise, 'neither a torch.save zip archive nor a legacy torch pickle'),
    (_truncated_zip, 'damaged or truncated zip archive'),
    (_corrupt_zip, 'damaged'),
    (_truncated_legacy, 'truncated'),
    (_empty, 'the file is empty'),
    (_other_zip, 'a zip archive, but not one torch.save wrote'),
], ids=['text', 'binary_noise', 'truncated_zip', 'corrupt_zip', 'truncated_legacy', 'empty',
        'other_zip'])
def test_not_a_checkpoint_is_one_clear_message(tmp_path, make, why):
    path = tmp_path / 'not_a_checkpoint.pth'
    path.write_bytes(make(tmp_path))
    with pytest.raises(UnreadableCheckpointError) as excinfo:
        _load_checkpoint(str(path))
    message = str(excinfo.value)
    assert message.startswith(f'{path} is not a readable checkpoint: ')
    assert why in message
    assert 'pickled object' not in message and '\n' not in message


def test_directory_is_reported_as_a_directory(tmp_path):
    with pytest.raises(UnreadableCheckpointError, match='is a directory'):
        _load_checkpoint(str(tmp_path))


def test_mmap_check_reads_the_same_file(tmp_path):
    path = tmp_path / 'valid.pth'
    path.write_bytes(_valid_bytes(tmp_path))
    assert torch.equal(load_checkpoint_file(path, mmap=True)['state_dict']['w'],
                       torch.arange(64.))
    path.write_bytes(_truncated_zip(tmp_path))
    with pytest.raises(UnreadableCheckpointError, match='zip archive'):
        load_checkpoint_file(path, mmap=True)
