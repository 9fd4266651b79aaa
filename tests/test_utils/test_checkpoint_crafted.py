"""Crafted checkpoints: each one a way a file could crash the loading process, make it read
memory it does not own, allocate without bound or change what was checked. Each is loaded in
a child process (a crash fails the test instead of ending the session), through mmengine's
loader unless said otherwise, and must end in one of the package's checkpoint errors.
"""
import io
import struct
import zipfile

import numpy as np
import pytest
import torch
from checkpoint_worker import LoaderWorker, rss_bound_kb
from crafted_pickles import (
    G,
    build,
    call,
    dct,
    declare_record_size,
    dumps,
    encoded,
    legacy_checkpoint,
    newobj,
    numpy_array,
    numpy_dtype,
    object_dtype_array,
    object_pointer_array,
    persistent,
    recall,
    remember,
    tup,
    zip_checkpoint,
)

from lip_mmdet.apis.preflight import check_checkpoint
from lip_mmdet.utils import (
    CHECKPOINT_ERRORS,
    UnreadableCheckpointError,
    UnsafeCheckpointError,
    load_checkpoint_file,
)
from lip_mmdet.utils.checkpoint import ALLOCATION_FLOOR

REFUSED = 'UnsafeCheckpointError'
UNREADABLE = 'UnreadableCheckpointError'
HISTORY_BUFFER = G('mmengine.logging.history_buffer', 'HistoryBuffer')


@pytest.fixture(scope='module')
def worker(tmp_path_factory):
    child = LoaderWorker(tmp_path_factory.mktemp('checkpoint_worker'))
    yield child
    child.close()


def _write(tmp_path, body, name='crafted.pth'):
    path = tmp_path / name
    path.write_bytes(zip_checkpoint(dumps(body)))
    return path


def _assert_outcome(result, outcome, *words):
    assert result['outcome'] == outcome, result
    for word in words:
        assert word in result['detail'], result


# --- numpy: nothing built that the allow-list cannot check ---------------------------------

@pytest.mark.parametrize('how, outcome', [
    ('mmengine', REFUSED), ('preflight', 'PreflightError'), ('pretrained', REFUSED),
    ('torch.load', 'UnpicklingError')])
def test_object_pointer_array_is_refused_on_every_path(worker, tmp_path, how, outcome):
    # with numpy's dtype classes allowed as BUILD targets this 300-byte file loaded, and
    # reading the array's field dereferenced an address from the file (SIGSEGV)
    path = _write(tmp_path, dct(('state_dict', dct()), ('meta', object_pointer_array())))
    result = worker.load(path, how=how)
    _assert_outcome(result, outcome)
    if how != 'torch.load':  # torch's own message for a refusal in a plain torch.load
        assert str(path) in result['detail'] and "numpy.dtype('O8'" in result['detail']


def test_object_pointer_array_from_the_hub_cache_is_refused(worker, tmp_path):
    cache = tmp_path / 'torch_home' / 'hub' / 'checkpoints'
    cache.mkdir(parents=True)
    (cache / 'resnet18-f37072fd.pth').write_bytes(
        zip_checkpoint(dumps(dct(('x', object_pointer_array())))))
    result = worker.load('torchvision://resnet18',
                         env=dict(TORCH_HOME=str(tmp_path / 'torch_home')))
    _assert_outcome(result, REFUSED, 'download.pytorch.org/models/resnet18-f37072fd.pth',
                    str(cache / 'resnet18-f37072fd.pth'))


@pytest.mark.parametrize('body, why', [
    (object_dtype_array(), "numpy.dtype('O8'"),
    (numpy_array((1, ), numpy_dtype('V8', '|'), bytes(8)), "numpy.dtype('V8'"),
    (numpy_array((1, ), numpy_dtype('f8', '<', (3, '<', tup(numpy_dtype('f8'), tup(2)), None,
                                                None, -1, -1, 0)), bytes(8)),
     'not the plain state'),
    (numpy_array((1, ), numpy_dtype('f8', '<', (3, '<', None, None, None, 8, 1, 63)),
                 bytes(8)), 'not the plain state'),
    (call(G('numpy', 'dtype'), 'f8,O', False, True), "numpy.dtype('f8,O'"),
    (call(G('numpy.core.multiarray', 'scalar'), call(G('numpy', 'dtype'), 'O8', False, True),
          struct.pack('<Q', 0x41414141)), "numpy.dtype('O8'"),
    (build(call(G('numpy.core.multiarray', '_reconstruct'), G('numpy', 'ndarray'), tup(0),
                encoded(b'b')), tup(1, tup(2), numpy_dtype('f8'), False, [1.0, 2.0])),
     'whose data is a list'),
    (call(G('numpy', 'ndarray'), tup(2), numpy_dtype('f8'), bytes(16), 0, tup(-8)),
     'a call of numpy.ndarray'),
    (call(G('numpy.core.multiarray', '_reconstruct'), G('numpy.dtypes', 'Float64DType'),
          tup(0), encoded(b'b')), 'Float64DType'),
], ids=['object_dtype', 'void_dtype', 'subarray_state', 'flags_state', 'structured_spec',
        'object_scalar', 'list_data', 'ndarray_call', 'dtype_class'])
def test_non_numeric_numpy_is_refused(worker, tmp_path, body, why):
    _assert_outcome(worker.load(_write(tmp_path, dct(('x', body)))), REFUSED, why)


def test_dtype_state_is_given_once(worker, tmp_path):
    # a second BUILD through the memo would rewrite a dtype arrays were already made with
    array = numpy_array((2, ), remember('dtype', numpy_dtype('f8')), bytes(16))
    again = build(recall('dtype'), tup(3, '|', None, tup('a'), None, 8, 1, 0))
    result = worker.load(_write(tmp_path, tup(array, again)))
    _assert_outcome(result, REFUSED, 'a second BUILD of a numpy dtype')


def test_genuine_numpy_values_round_trip(worker, tmp_path):
    path = tmp_path / 'genuine.pth'
    torch.save({'arrays': [np.arange(6, dtype='>i4').reshape(2, 3), np.zeros((0, 3)),
                           np.asfortranarray(np.ones((2, 2))), np.array([1 + 2j])],
                'scalars': [np.float16(0.5), np.uint8(7), np.bool_(True)],
                'dtypes': [np.dtype('f4'), np.dtype('>u2')]}, path)
    assert worker.load(path)['outcome'] == 'loaded'
    loaded = load_checkpoint_file(path)
    assert all(type(a) is np.ndarray for a in loaded['arrays'])
    np.testing.assert_array_equal(loaded['arrays'][0], np.arange(6).reshape(2, 3))
    assert loaded['arrays'][2].flags['F_CONTIGUOUS']
    assert loaded['scalars'] == [0.5, 7, True] and loaded['dtypes'][1] == np.dtype('>u2')
    resaved = io.BytesIO()
    torch.save(loaded, resaved)  # plain numpy types, loadable again
    assert load_checkpoint_file(io.BytesIO(resaved.getvalue()))['dtypes'][0] == np.float32


# --- HistoryBuffer: checked as it ends up ---------------------------------------------------

def _history_state(logs, counts):
    return dct(('max_length', 10), ('_log_history', logs), ('_count_history', counts))


def test_memo_cannot_rebuild_history_arrays_after_the_check(worker, tmp_path):
    logs = remember('logs', numpy_array((2, ), numpy_dtype('f8'), bytes(16)))
    counts = numpy_array((2, ), numpy_dtype('i8'), bytes(16))
    buffer = build(newobj(HISTORY_BUFFER), _history_state(logs, counts))
    # after the buffer checked its state: BINGET of the log array and a new BUILD of it
    rebuilt = build(recall('logs'), tup(1, tup(3), numpy_dtype('f8'), False, bytes(24)))
    result = worker.load(_write(tmp_path, tup(buffer, rebuilt)))
    _assert_outcome(result, REFUSED, 'a second BUILD of a numpy array')


def test_history_arrays_must_be_built_before_the_check(worker, tmp_path):
    empty = call(G('numpy.core.multiarray', '_reconstruct'), G('numpy', 'ndarray'), tup(0),
                 encoded(b'b'))
    counts = numpy_array((0, ), numpy_dtype('i8'), b'')
    buffer = build(newobj(HISTORY_BUFFER), _history_state(empty, counts))
    result = worker.load(_write(tmp_path, buffer))
    _assert_outcome(result, REFUSED, 'before its array was built')


def test_unfinished_objects_are_refused(worker, tmp_path):
    body = tup(newobj(HISTORY_BUFFER))  # never given its state
    _assert_outcome(worker.load(_write(tmp_path, body)), REFUSED, 'without its state')
    body = call(G('numpy.core.multiarray', '_reconstruct'), G('numpy', 'ndarray'), tup(0),
                encoded(b'b'))
    _assert_outcome(worker.load(_write(tmp_path, body)), REFUSED, 'without its state')
    body = dct(('getattr', G('builtins', 'getattr')))  # a stand-in handed out as a value
    _assert_outcome(worker.load(_write(tmp_path, body)), REFUSED, 'builtins.getattr')
    body = dct(('max', call(G('builtins', 'getattr'), HISTORY_BUFFER, 'max')))
    _assert_outcome(worker.load(_write(tmp_path, body)), REFUSED,
                    "HistoryBuffer.max outside a HistoryBuffer's state")


def test_deep_nesting_and_cycles_load(worker, tmp_path):
    # the unpickler builds 50000 nested lists from 100 KB without recursing; so must the
    # loader's check of the finished objects, and a list may contain itself through the memo
    depth = 50_000
    deep = b']' * depth + b'a' * (depth - 1)  # EMPTY_LIST x n, APPEND x n-1
    itself = b']q\x00h\x00a'  # EMPTY_LIST, BINPUT 0, BINGET 0, APPEND
    path = tmp_path / 'deep.pth'
    path.write_bytes(zip_checkpoint(b'\x80\x02(' + deep + itself + b't.'))
    _assert_outcome(worker.load(path), 'loaded')
    nested, cycle = load_checkpoint_file(path)
    assert cycle[0] is cycle
    for _ in range(depth - 1):
        nested = nested[0]
    assert nested == []


def test_numpy_value_in_a_cycle_through_a_tuple_is_refused(worker, tmp_path):
    # L = [T], T = (dtype, L) and the file's object (T, L): the loader rebuilds T with a
    # plain dtype after it finished L, which still holds the T it was given
    dtype = dumps(numpy_dtype('f8'))[2:-1]  # memoised at 0, 1, ...
    put, get = (lambda n: b'r' + struct.pack('<I', n)), (lambda n: b'j' + struct.pack('<I', n))
    data = (b'\x80\x02' + b']' + put(1000)  # L
            + b'(' + dtype + get(1000) + b't' + put(1001)  # T = (dtype, L)
            + b'a'  # L.append(T)
            + b'(' + get(1001) + get(1000) + b't.')  # (T, L)
    path = tmp_path / 'cycle.pth'
    path.write_bytes(zip_checkpoint(data))
    _assert_outcome(worker.load(path), REFUSED, 'inside a cycle of containers')


# --- allocation: bounded by the file's size -----------------------------------------------

@pytest.mark.parametrize('body', [
    call(G('builtins', 'bytearray'), 300_000_000),
    call(G('builtins', 'bytearray'), 2**50),
    numpy_array((2**40, ), numpy_dtype('u1', '|'), b''),
    numpy_array((100_000_000, ), numpy_dtype('u1', '|'), b'\x00'),
    call(G('builtins', 'bytes'), 10**12),
], ids=['bytearray_300MB', 'bytearray_1PB', 'array_1TB', 'array_100MB', 'bytes_1TB'])
def test_tiny_file_cannot_ask_for_a_large_allocation(worker, tmp_path, body):
    path = _write(tmp_path, dct(('x', body)))
    result = worker.load(path)
    _assert_outcome(result, REFUSED, str(path))
    assert result['rss_growth_kb'] < rss_bound_kb(path), result


def test_what_values_cost_their_user_counts(worker, tmp_path):
    # an empty array of 2**32 rows (tolist() makes 2**32 lists), and a 10**12-element view
    # with zero strides over one float
    empty_rows = numpy_array((2**32, 0), numpy_dtype('f8'), b'')
    _assert_outcome(worker.load(_write(tmp_path, dct(('x', empty_rows)))), REFUSED,
                    'a numpy array of shape (4294967296, 0)')
    path = tmp_path / 'expanded.pth'
    view = _tensor((10**6, 10**6), (0, 0), numel=1)
    path.write_bytes(zip_checkpoint(dumps(dct(('w', view))), {'0': bytes(4)}))
    _assert_outcome(worker.load(path), REFUSED, 'a tensor of shape (1000000, 1000000)')


@pytest.mark.parametrize('body', [
    call(G('torch', 'FloatTensor'), 100_000_000),
    call(G('torch.storage', 'UntypedStorage'), 400_000_000),
    call(G('torch', 'ByteTensor'), 10**13),
], ids=['FloatTensor_400MB', 'UntypedStorage_400MB', 'ByteTensor_10TB'])
def test_storages_made_from_nothing_are_bounded(worker, tmp_path, body):
    # torch's own allow-list lets a pickle call its tensor and storage classes with a size
    path = _write(tmp_path, dct(('x', body)))
    result = worker.load(path)
    assert result['outcome'] in (REFUSED, UNREADABLE), result
    assert str(path) in result['detail']
    assert result['rss_growth_kb'] < rss_bound_kb(path), result


def test_genuine_views_and_empty_values_load(tmp_path):
    path = tmp_path / 'views.pth'
    torch.save({'expanded': torch.ones(1).expand(1000), 'empty': torch.zeros(0, 80),
                'boxes': np.zeros((0, 4), np.float32)}, path)
    loaded = load_checkpoint_file(path)
    assert loaded['expanded'].shape == (1000, ) and loaded['expanded'].stride() == (0, )
    assert loaded['empty'].shape == (0, 80) and loaded['boxes'].shape == (0, 4)


def test_repeated_bytes_count_against_the_file_size(worker, tmp_path):
    # one 1 MB string in the file, encoded 100 times: 100 MB from a 1 MB file
    path = tmp_path / 'amplified.pth'
    copies = [call(G('_codecs', 'encode'), remember('text', 'x' * (1 << 20)), 'latin1')]
    copies += [call(G('_codecs', 'encode'), recall('text'), 'latin1') for _ in range(99)]
    path.write_bytes(zip_checkpoint(dumps(copies)))
    result = worker.load(path)
    _assert_outcome(result, REFUSED, str(path), 'allowed for a file of its size')
    assert result['rss_growth_kb'] < rss_bound_kb(path), result


def test_bytes_within_the_bound_load(tmp_path):
    path = _write(tmp_path, dct(('x', call(G('builtins', 'bytearray'), ALLOCATION_FLOOR // 2))))
    assert len(load_checkpoint_file(path)['x']) == ALLOCATION_FLOOR // 2


# --- tensors: bounded by their storage's bytes in the file ---------------------------------

def _tensor(size, stride, offset=0, numel=4):
    storage = persistent('storage', G('torch', 'FloatStorage'), '0', 'cpu', numel)
    return call(G('torch._utils', '_rebuild_tensor_v2'), storage, offset, tup(*size),
                tup(*stride), False, call(G('collections', 'OrderedDict')))


@pytest.mark.parametrize('tensor, why', [
    (_tensor((5, ), (1, )), 'reaches beyond the bytes its storage has'),
    (_tensor((2**62, ), (1, )), 'reaches beyond the bytes its storage has'),
    (_tensor((4, ), (1, ), offset=2**62), 'reaches beyond the bytes its storage has'),
    # torch 2.13 compares a storage with its record; 2.8 and 2.9 return the storage, and the
    # loader's check of the result refuses it (UnsafeCheckpointError)
    (_tensor((4, ), (1, ), numel=2**40), ('record size', 'asks for tensor storages of')),
], ids=['past_the_end', 'size_overflow', 'offset_overflow', 'numel_past_the_record'])
def test_tensor_outside_its_storage_is_one_message(tmp_path, tensor, why):
    path = tmp_path / 'tensor.pth'
    path.write_bytes(zip_checkpoint(dumps(dct(('w', tensor))), {'0': bytes(16)}))
    with pytest.raises(CHECKPOINT_ERRORS) as excinfo:
        load_checkpoint_file(path)
    message = str(excinfo.value)
    if isinstance(excinfo.value, UnreadableCheckpointError):
        assert message.startswith(f'{path} is not a readable checkpoint: ')
    else:
        assert isinstance(excinfo.value, UnsafeCheckpointError) and str(path) in message
    assert any(reason in message for reason in ((why, ) if isinstance(why, str) else why))
    assert '\n' not in message


def test_legacy_storage_larger_than_the_file_is_refused_before_allocation(worker, tmp_path):
    # torch's legacy loader allocates what the pickle declares, then reads: this 700-byte
    # file had it allocate 4 GiB and spend seconds on it before its reading failed
    storage = persistent('storage', G('torch', 'BoolStorage'), '0', 'cpu', 2**32, None)
    tensor = call(G('torch._utils', '_rebuild_tensor'), storage, 0, tup(3, 3, 4),
                  tup(0, 2**31 - 1, 2))
    path = tmp_path / 'legacy.pth'
    path.write_bytes(legacy_checkpoint(dumps(dct(('w', tensor))), {'0': (2**32, bytes(4))}))
    result = worker.load(path)
    _assert_outcome(result, UNREADABLE, 'declare more bytes than the whole file has')
    assert result['rss_growth_kb'] < rss_bound_kb(path), result


def test_legacy_tensor_past_its_storage_is_refused_before_allocation(worker, tmp_path):
    # legacy storages are resizable: a tensor at offset 2**31 of a 1-element storage grew it
    # to 8 GiB (and the child's peak memory with it) before the load failed
    storage = persistent('storage', G('torch', 'IntStorage'), '0', 'cpu', 1, None)
    tensor = call(G('torch._utils', '_rebuild_tensor_v2'), storage, 2**31 - 1, tup(), tup(),
                  False, call(G('collections', 'OrderedDict')))
    path = tmp_path / 'legacy.pth'
    path.write_bytes(legacy_checkpoint(dumps(dct(('w', tensor))), {'0': (1, bytes(4))}))
    result = worker.load(path)
    _assert_outcome(result, UNREADABLE, 'reaches beyond the 4 bytes its storage has')
    assert result['rss_growth_kb'] < rss_bound_kb(path), result


def test_genuine_legacy_checkpoint_loads(tmp_path):
    path = tmp_path / 'legacy.pth'
    weight = torch.arange(6.).view(2, 3)
    torch.save({'state_dict': {'w': weight, 'row': weight[1], 'col': weight[:, 2]},
                'meta': {'n': np.int64(3)}}, path, _use_new_zipfile_serialization=False)
    loaded = load_checkpoint_file(path)
    state = loaded['state_dict']
    assert torch.equal(state['w'], weight) and torch.equal(state['col'], weight[:, 2])
    assert state['row'].untyped_storage().data_ptr() == state['w'].untyped_storage().data_ptr()
    assert loaded['meta']['n'] == 3


def test_zip_record_declaring_more_than_it_holds_is_refused(tmp_path):
    body = dct(('w', _tensor((4, ), (1, ), numel=3 * 10**9)))
    path = tmp_path / 'declared.pth'
    path.write_bytes(declare_record_size(zip_checkpoint(dumps(body), {'0': bytes(16)}),
                                         'archive/data/0', 3 * 10**9))
    with pytest.raises(UnreadableCheckpointError, match='says it holds 3000000000 bytes'):
        load_checkpoint_file(path)


def test_deflated_pickle_is_bounded_by_the_file_size(tmp_path):
    # 64 MiB of pickle (a string of zeros) deflates to about 64 KiB; torch reads it whole
    body = dumps(dct(('x', '\0' * (64 << 20))))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, 'w', compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr('archive/data.pkl', body)
        archive.writestr('archive/version', '3\n')
    path = tmp_path / 'bomb.pth'
    path.write_bytes(buffer.getvalue())
    assert path.stat().st_size < 1 << 20
    with pytest.raises(UnreadableCheckpointError, match='archive/data.pkl unpacks to'):
        load_checkpoint_file(path)


def test_preflight_accepts_what_the_load_accepts_compressed_records(tmp_path):
    # torch.save stores records; an archive tool may deflate them, and torch reads both
    path = tmp_path / 'deflated.pth'
    body = dct(('state_dict', dct(('w', _tensor((4, ), (1, ))))))
    path.write_bytes(zip_checkpoint(dumps(body), {'0': struct.pack('<4f', 1, 2, 3, 4)},
                                    compress={'0'}))
    expected = torch.tensor([1., 2., 3., 4.])
    assert torch.equal(load_checkpoint_file(path)['state_dict']['w'], expected)
    assert torch.equal(load_checkpoint_file(path, mmap=True)['state_dict']['w'], expected)
    check_checkpoint(str(path), 'checkpoint to test')
