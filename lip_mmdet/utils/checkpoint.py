"""One allow-listed ``torch.load`` for every checkpoint mmengine reads, whatever its source.

torch >= 2.6 makes ``torch.load`` default to ``weights_only=True``, and mmengine 0.10.7 does not
pass that argument, so ``load_from``, ``--resume`` and ``tools/test.py CKPT`` fail on the very
checkpoints mmengine's Runner saved: they carry numpy scalars/arrays and ``HistoryBuffer``
objects. Its download paths (``http(s)://``, ``torchvision://``, ``open-mmlab://``, ``mmcls://``
through ``torch.hub.load_state_dict_from_url``) even unpickle with ``weights_only=False``.

Here the few types mmengine writes are added to torch's allow-list, each with a stand-in that
checks what it restores, and every scheme of mmengine's ``CheckpointLoader`` is re-registered
so that all of them end in :func:`load_checkpoint_file`: ``torch.load(weights_only=True)``.
A checkpoint carrying anything else is refused (:class:`UnsafeCheckpointError`); a file that
is not a checkpoint at all is reported as such (:class:`UnreadableCheckpointError`); a remote
file that cannot be fetched says where to put it (:class:`CheckpointUnavailableError`).
"""
import codecs
import contextlib
import contextvars
import io
import math
import os
import os.path as osp
import pickle
import re
import tempfile
import urllib.error
import urllib.request
import zipfile
from urllib.parse import urlparse

import numpy as np
import torch
from mmengine.dist import get_dist_info
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner.checkpoint import (
    CheckpointLoader,
    _get_mmengine_home,
    _process_mmcls_checkpoint,
    get_deprecated_model_names,
    get_external_models,
    get_mmcls_models,
)
from mmengine.utils import digit_version

__all__ = [
    'MIN_TORCH', 'MMENGINE_SAFE_GLOBALS', 'UnsafeCheckpointError', 'UnreadableCheckpointError',
    'CheckpointUnavailableError', 'CHECKPOINT_ERRORS', 'check_torch_version',
    'install_safe_checkpoint_loading', 'hub_cache_file', 'load_checkpoint_file',
    'load_from_local', 'load_from_url', 'resolve_checkpoint_url', 'SAFE_SCHEMES'
]

#: ``add_safe_globals`` with ``(object, 'module.name')`` stand-ins, which the allow-list
#: below relies on, and ``weights_only=True`` as the default both arrived in torch 2.6.
MIN_TORCH = '2.6.0'


def check_torch_version(version: str = torch.__version__) -> None:
    """Raise ImportError unless ``version`` is at least :data:`MIN_TORCH`."""
    if digit_version(version) < digit_version(MIN_TORCH):
        raise ImportError(
            f'lip_mmdet needs torch >= {MIN_TORCH}, found {version}: its checkpoint loading '
            'allow-lists mmengine\'s types with torch.serialization.add_safe_globals((object, '
            'name)) stand-ins, which older torch lacks. Upgrade torch.')


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint holds a pickled object outside the allow-list."""


class UnreadableCheckpointError(ValueError):
    """A file is not a checkpoint ``torch.load`` can read (text, empty, truncated, damaged)."""


class CheckpointUnavailableError(FileNotFoundError):
    """A checkpoint is not there: a local file that does not exist, or a remote one neither in
    the local cache nor downloadable now."""


#: What a loader raises for a checkpoint the user gave that cannot be used.
CHECKPOINT_ERRORS = (UnsafeCheckpointError, UnreadableCheckpointError, CheckpointUnavailableError)

# Our stand-ins prefix their refusals with this, so a refusal is told from a damaged file.
_REFUSED = 'refused:'


# ... and a refusal for asking to allocate too much with this.
_OVER_BOUND = 'over the bound: '


def _refuse(message):
    return pickle.UnpicklingError(f'{_REFUSED} {message}')


# --- the allow-list -----------------------------------------------------------------------
#
# A pickle builds an object in two steps: a call (REDUCE / NEWOBJ) and then a BUILD that hands
# the new object its state; torch's weights-only unpickler allows a BUILD on any instance of an
# allow-listed type and lets the memo (BINPUT / BINGET) reach an object again after either
# step. numpy's own ``ndarray.__setstate__`` and ``dtype.__setstate__`` trust their state (a
# dtype's fields and flags, an array's raw bytes), so neither numpy type nor any dtype class is
# on the allow-list. The stand-ins below build arrays, dtypes and scalars themselves, from numeric
# dtypes only, once, and from exactly the bytes the file gives.

#: The dtype kinds an array, scalar or dtype in a checkpoint may have: bool, signed and
#: unsigned int, float, complex. Object, void (structured, subarray), string, datetime are not.
NUMERIC_KINDS = 'biufc'

#: What a file may allocate outside its tensor storages (numpy arrays and scalars, ``bytes`` and
#: ``bytearray`` objects), in bytes: this floor plus ``ALLOCATION_PER_FILE_BYTE`` per byte of the
#: file. Genuine checkpoints carry every such byte in the file itself, once or twice (the pickled
#: string and the array made from it); a file that asks for more is refused before it allocates.
ALLOCATION_FLOOR = 16 << 20
ALLOCATION_PER_FILE_BYTE = 4

_DTYPE_SPEC = re.compile(r'([biufc])(\d{1,2})')


class _Budget:
    """Bytes a load may still allocate outside its tensor storages."""

    def __init__(self, file_size):
        self.limit = ALLOCATION_FLOOR + ALLOCATION_PER_FILE_BYTE * max(file_size, 0)
        self.used = 0

    def charge(self, nbytes, what):
        self.used += nbytes
        if self.used > self.limit:
            raise _refuse(f'{_OVER_BOUND}{what}, which brings what it allocates outside its '
                          f'tensors to {self.used} bytes, more than the {self.limit} bytes '
                          'allowed for a file of its size')


# The budget of the load running in this thread (context), if it runs through
# load_checkpoint_file. A plain torch.load has none: it knows no file size to derive one
# from, and stays as bounded as torch makes it.
_current_budget = contextvars.ContextVar('lip_mmdet_checkpoint_budget', default=None)


def _charge(nbytes, what):
    budget = _current_budget.get()
    if budget is not None:
        budget.charge(nbytes, what)


class _Dtype:
    """Stands in for ``numpy.dtype`` while unpickling: a numeric dtype, built once.

    numpy pickles a dtype as the call ``numpy.dtype('f8', False, True)`` followed by a BUILD of
    ``(3, '<', None, None, None, -1, -1, 0)``. The call must name a numeric type by kind and
    size and the state must be exactly that canonical one (only the byte order varies), so no
    field, subarray, object item or flag can be given. The real dtype is made only then; the
    object itself stays a placeholder that :func:`load_checkpoint_file` replaces.
    """

    def __new__(cls, spec=None, align=False, copy=True):
        # REDUCE calls the class, NEWOBJ calls __new__: both go through this check
        match = _DTYPE_SPEC.fullmatch(spec) if type(spec) is str else None
        if match is None or align is not False or copy is not True:
            raise _refuse(f'numpy.dtype({spec!r:.40}, {align!r:.10}, {copy!r:.10}), which is '
                          f'not a numeric dtype ({NUMERIC_KINDS}) written the way numpy '
                          'writes one')
        try:
            base = np.dtype(spec)
        except TypeError:
            base = None
        if (base is None or base.kind not in NUMERIC_KINDS or base.itemsize !=
                int(match.group(2)) or base.fields is not None or base.subdtype is not None):
            raise _refuse(f'numpy.dtype({spec!r}), which is not a numeric dtype')
        self = object.__new__(cls)
        self._base = base
        self._dtype = None
        return self

    def __setstate__(self, state):
        if self._dtype is not None:
            raise _refuse('a second BUILD of a numpy dtype')
        single = self._base.itemsize == 1
        if (type(state) is not tuple or len(state) != 8 or state[0] != 3
                or state[1] not in (('|', ) if single else ('<', '>'))
                or state[2:] != (None, None, None, -1, -1, 0)):
            raise _refuse(f'numpy dtype {self._base} with the state {state!r:.80}, not the '
                          'plain state numpy writes for a numeric dtype')
        self._dtype = self._base if single else self._base.newbyteorder(state[1])

    @property
    def dtype(self):
        """The real ``numpy.dtype``; refused when the pickle never gave the state."""
        if self._dtype is None:
            raise _refuse('a numpy dtype used without its state')
        return self._dtype


def _extent(shape, nbytes):
    """What an array or tensor of ``shape`` holding ``nbytes`` costs whoever uses it.

    Its bytes; for an empty one, a byte per element of its non-empty dimensions: an array of
    shape (2**32, 0) holds nothing, and its ``tolist()`` makes 2**32 lists.
    """
    return nbytes if nbytes else math.prod(n for n in shape if n)


def _checked_dtype(dtype, where):
    if type(dtype) is not _Dtype:
        raise _refuse(f'{where} whose dtype is a {type(dtype).__name__}, not a numpy dtype')
    return dtype.dtype


def _bytes_of(data, where):
    if type(data) is not bytes:
        raise _refuse(f'{where} whose data is a {type(data).__name__}, not bytes')
    return data


class _Array(np.ndarray):
    """Stands in for ``numpy.ndarray`` while unpickling: an array of a numeric dtype whose
    bytes are exactly those the file gives, built once.

    numpy pickles an array as ``_reconstruct(ndarray, (0,), b'b')`` (an empty array) followed
    by a BUILD of ``(1, shape, dtype, is_fortran, data)``. Here the dtype must be a
    :class:`_Dtype`, ``data`` a ``bytes`` object of ``prod(shape) * itemsize`` bytes, and the
    BUILD comes once: a second one through the memo, after the array was handed to something
    else, is refused. It cannot be called (``numpy.ndarray(shape, dtype, buffer, offset,
    strides)`` would read where it is told). It pickles as a plain ``numpy.ndarray``, and
    :func:`load_checkpoint_file` hands out plain arrays.
    """

    def __new__(cls, *args, **kwargs):
        raise _refuse('a call of numpy.ndarray(...), which is not how numpy pickles an array')

    def __setstate__(self, state):
        if self.__dict__.get('_built'):
            raise _refuse('a second BUILD of a numpy array')
        if type(state) is not tuple or len(state) != 5 or state[0] != 1:
            raise _refuse(f'a numpy array state {state!r:.80}, not (1, shape, dtype, '
                          'is_fortran, data)')
        _, shape, dtype, fortran, data = state
        if (type(shape) is not tuple or len(shape) > 32
                or any(type(n) is not int or n < 0 for n in shape)):
            raise _refuse(f'a numpy array of shape {shape!r:.80}, not a tuple of at most 32 '
                          'non-negative ints')
        dtype = _checked_dtype(dtype, 'a numpy array')
        if type(fortran) is not bool:
            raise _refuse(f'a numpy array whose order flag is {fortran!r:.20}, not a bool')
        data = _bytes_of(data, 'a numpy array')
        nbytes = math.prod(shape) * dtype.itemsize
        if len(data) != nbytes:
            raise _refuse(f'a numpy array of shape {shape} and dtype {dtype} ({nbytes} bytes) '
                          f'given {len(data)} bytes')
        _charge(_extent(shape, nbytes), f'a numpy array of shape {shape}')
        np.ndarray.__setstate__(self, (1, shape, dtype, fortran, data))
        self.__dict__['_built'] = True

    def __reduce__(self):
        return self.view(np.ndarray).__reduce__()

    def __reduce_ex__(self, protocol):
        return self.view(np.ndarray).__reduce_ex__(protocol)


def _reconstruct(cls, shape, typecode):
    """Stands in for ``numpy.core.multiarray._reconstruct``: only the empty array numpy's
    pickles start from, of the stand-in type."""
    if cls is not _Array or shape != (0, ) or typecode != b'b':
        raise _refuse(f'_reconstruct({getattr(cls, "__name__", cls)!r:.40}, {shape!r:.40}, '
                      f'{typecode!r:.20}), not the empty array numpy pickles an array from')
    return np.core.multiarray._reconstruct(_Array, (0, ), b'b')


def _scalar(dtype, data=None):
    """Stands in for ``numpy.core.multiarray.scalar``: a numeric scalar from exactly its
    ``itemsize`` bytes."""
    dtype = _checked_dtype(dtype, 'a numpy scalar')
    data = _bytes_of(data, 'a numpy scalar')
    if len(data) != dtype.itemsize:
        raise _refuse(f'a numpy {dtype} scalar given {len(data)} bytes, not {dtype.itemsize}')
    _charge(dtype.itemsize, 'a numpy scalar')
    return np.frombuffer(data, dtype=dtype)[0]


def _numpy_globals():
    # numpy 1.x (pinned: numpy<2) pickles through numpy.core.multiarray, numpy 2 through
    # numpy._core.multiarray: both names lead to the same stand-ins.
    names = []
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        names += [(_reconstruct, f'{module}._reconstruct'), (_scalar, f'{module}.scalar')]
    return [*names, (_Array, 'numpy.ndarray'), (_Dtype, 'numpy.dtype')]


_HISTORY_STATISTICS = ('min', 'max', 'current', 'mean')
_HISTORY_ARRAYS = ('_log_history', '_count_history')
_HISTORY_KEYS = ('max_length', *_HISTORY_ARRAYS)


def _history_problem(state):
    """Why ``state`` (without ``statistics_methods``) is not a HistoryBuffer's, or None."""
    if type(state) is not dict:
        return f'HistoryBuffer state of type {type(state).__name__}, not a dict'
    if set(state) != set(_HISTORY_KEYS):
        return (f'HistoryBuffer state with keys {sorted(map(str, state))}, expected '
                f'{sorted(_HISTORY_KEYS)} and statistics_methods')
    max_length = state['max_length']
    if type(max_length) is not int or max_length <= 0:
        return f'HistoryBuffer.max_length {max_length!r:.40}, not a positive int'
    arrays = [state[key] for key in _HISTORY_ARRAYS]
    for key, array in zip(_HISTORY_ARRAYS, arrays):
        if (not isinstance(array, np.ndarray) or array.ndim != 1
                or array.dtype.kind not in 'biuf'):
            return f'HistoryBuffer.{key} that is not a 1-D numeric numpy array'
    if len(arrays[0]) != len(arrays[1]):
        return 'HistoryBuffer histories that differ in length'
    return None


class _RestoredHistoryBuffer(HistoryBuffer):
    """Stands in for ``HistoryBuffer`` while unpickling and checks the state it receives.

    ``HistoryBuffer.__setstate__`` merges the pickled ``statistics_methods`` into the
    class-wide table that ``statistics(name)`` calls, so an unchecked state could make every
    later ``buffer.statistics('mean')`` call another allowed callable. The state must be what
    mmengine writes: ``max_length`` (a positive int), two 1-D numeric arrays of equal length
    and ``statistics_methods`` mapping some of min / max / current / mean to HistoryBuffer's
    own methods. The buffer keeps copies of the arrays, which nothing in the pickle can reach
    afterwards, and becomes a plain ``HistoryBuffer`` (mmengine's ``__setstate__`` runs), so a
    checkpoint saved later records mmengine's class. :func:`load_checkpoint_file` checks the
    finished buffers once more.
    """

    def __init__(self, *args, **kwargs):
        # NEWOBJ (``__new__``) + BUILD is how a HistoryBuffer is pickled; a call is not.
        raise _refuse('a call of HistoryBuffer(...), which is not how mmengine pickles it')

    def __setstate__(self, state):
        if type(state) is not dict:
            raise _refuse(f'HistoryBuffer state of type {type(state).__name__}, not a dict')
        state = dict(state)
        methods = state.pop('statistics_methods', {})
        problem = _history_problem(state)
        if problem:
            raise _refuse(problem)
        for key in _HISTORY_ARRAYS:
            if type(state[key]) is _Array and not state[key].__dict__.get('_built'):
                raise _refuse(f'HistoryBuffer.{key} given before its array was built')
            state[key] = np.array(state[key], subok=False)  # a copy the memo cannot reach
        if type(methods) is not dict or any(
                name not in _HISTORY_STATISTICS or method is not getattr(HistoryBuffer, name)
                for name, method in methods.items()):
            raise _refuse('HistoryBuffer statistics_methods other than min/max/current/mean '
                          'mapped to HistoryBuffer\'s own methods')
        self.__class__ = HistoryBuffer
        HistoryBuffer.__setstate__(self, dict(state, statistics_methods=methods))


def _history_buffer_getattr(owner, name):
    """Stands in for ``builtins.getattr`` while unpickling.

    A ``HistoryBuffer`` pickles its statistics methods as ``getattr(HistoryBuffer, 'mean')``.
    Allowing the real ``getattr`` would let a file reach any attribute of any allowed object,
    so only those four lookups are resolved.
    """
    # identity: ``in`` would call the owner's __eq__, and the owner is anything in the file
    if (owner is HistoryBuffer or owner is _RestoredHistoryBuffer) and name in _HISTORY_STATISTICS:
        return getattr(HistoryBuffer, name)
    owner_name = ('HistoryBuffer' if owner is _RestoredHistoryBuffer
                  else getattr(owner, '__name__', type(owner).__name__))
    raise _refuse(f'getattr({owner_name!s:.40}, {name!r:.40}), not one of the four '
                  'HistoryBuffer statistics lookups')


def _empty_bytes(*args):
    """Stands in for ``builtins.bytes`` while unpickling.

    Pickle protocol 2 (torch.save's) writes an empty ``bytes`` as the call ``bytes()``, e.g. in
    the data of an empty numpy array; non-empty ones go through the allowed ``_codecs.encode``.
    Only that argument-free call is accepted (``bytes(10**12)`` would allocate a terabyte).
    """
    if args:
        raise _refuse(f'a call of bytes with arguments {args!r:.40}; only bytes() is allowed')
    return b''


def _bounded_encode(text, encoding='utf-8', errors='strict'):
    """``_codecs.encode`` (how protocol 2 writes non-empty bytes), counted against the
    file's allocation bound: one string in the file can be encoded any number of times."""
    result = codecs.encode(text, encoding, errors)
    _charge(len(result), f'bytes of length {len(result)}')
    return result


def _bounded_bytearray(*args):
    """``bytearray``, counted against the file's allocation bound (``bytearray(10**9)`` is
    a gigabyte of zeros from a few bytes of pickle)."""
    if args and type(args[0]) is int:
        _charge(max(args[0], 0), f'bytearray({args[0]})')
    result = bytearray(*args)
    _charge(0 if args and type(args[0]) is int else len(result),
            f'a bytearray of length {len(result)}')
    return result


#: torch's own allow-list entries that allocate what their arguments ask for, replaced by
#: versions that count against the bound of the load running (none outside
#: :func:`load_checkpoint_file`: then they are torch's).
_BOUNDED_TORCH_GLOBALS = {'_codecs.encode': _bounded_encode,
                          'builtins.bytearray': _bounded_bytearray}


def _install_bounded_torch_globals():
    """Put :data:`_BOUNDED_TORCH_GLOBALS` into torch's default allow-list (idempotent).

    torch keeps that list in one cached dict that every load consults, so the entries are
    replaced there, for good rather than around each load: swapping them back and forth would
    race with a load in another thread. Checked again at each load, since clearing torch's
    cache brings its own entries back.
    """
    allowed = torch._weights_only_unpickler._get_allowed_globals()
    for key, bounded in _BOUNDED_TORCH_GLOBALS.items():
        if key in allowed and allowed[key] is not bounded:
            allowed[key] = bounded


@contextlib.contextmanager
def _bounded_allocations(file_size):
    """Within the block, the allocating callables a checkpoint can reach count against the
    bound of a file of ``file_size`` bytes."""
    _install_bounded_torch_globals()
    token = _current_budget.set(_Budget(file_size))
    try:
        yield
    finally:
        _current_budget.reset(token)


#: Everything besides tensors and plain containers that mmengine's Runner writes into a
#: checkpoint (message hub history buffers, numpy scalars and arrays in ``meta`` and
#: ``runtime_info``), each as a checking stand-in registered under the name the pickle uses.
MMENGINE_SAFE_GLOBALS = (
    *_numpy_globals(),
    (_RestoredHistoryBuffer, f'{HistoryBuffer.__module__}.{HistoryBuffer.__qualname__}'),
    (_history_buffer_getattr, 'builtins.getattr'),
    (_empty_bytes, 'builtins.bytes'),
)


# The stand-ins are callables a file reaches by name; as values in a loaded checkpoint they
# would hand that reach to whoever uses the checkpoint.
_STAND_IN_IDS = {id(standin): name for standin, name in MMENGINE_SAFE_GLOBALS}
_STAND_IN_IDS.update({id(standin): name for name, standin in _BOUNDED_TORCH_GLOBALS.items()})


def _finished(result, storage_bytes=None):
    """The loaded object with plain numpy arrays and dtypes in place of the stand-ins, after
    checking every HistoryBuffer as it is now and counting what each tensor reads beyond its
    storage against the bound; raises the refusal of anything left unfinished.

    Runs once unpickling is over, so no later opcode can change what it checked. Iterative:
    a pickle may nest containers deeper than Python's recursion limit, and the memo can make
    a list contain itself.

    Args:
        result: what ``torch.load`` returned.
        storage_bytes (int, optional): the bytes the file holds for tensor storages; the
            tensors' storages together may hold no more, beyond what the allocation bound
            lets a file make (torch's own ``torch.FloatTensor(n)`` makes storages from
            nothing).
    """
    replaced = {}  # id(old) -> new, for containers and stand-ins
    storages = {}  # (device, data pointer) -> bytes, of the tensors' storages
    order = []  # containers in post-order
    seen = {id(result)}
    stack = [(result, iter(_children(result)))]
    while stack:
        obj, children = stack[-1]
        child = next(children, stack)
        if child is stack:
            stack.pop()
            order.append(obj)
            continue
        if id(child) not in seen:
            seen.add(id(child))
            stack.append((child, iter(_children(child))))
    for obj in order:
        new = _finish_one(obj, replaced, storages)
        if new is not obj:
            replaced[id(obj)] = new
    total = sum(storages.values())
    if storage_bytes is not None and total > storage_bytes:
        _charge(total - storage_bytes, f'tensor storages of {total} bytes, {storage_bytes} of '
                'them in the file')
    result = replaced.get(id(result), result)
    # A tuple is rebuilt with its replaced items, and a list refers to the tuple's new copy
    # only when the list finishes after it; in a cycle through the memo (a tuple holding a
    # list holding that tuple) one may not, so what comes out is walked once more.
    for obj in _reachable(result):
        if type(obj) in (_Array, _Dtype, _RestoredHistoryBuffer):
            raise _refuse('a numpy value or HistoryBuffer inside a cycle of containers')
    return result


def _reachable(root):
    seen, stack = {id(root)}, [root]
    while stack:
        obj = stack.pop()
        yield obj
        for child in _children(obj):
            if id(child) not in seen:
                seen.add(id(child))
                stack.append(child)


def _children(obj):
    kind = type(obj)
    if kind in (list, tuple, set, frozenset):
        return list(obj)
    if isinstance(obj, dict):  # dict, OrderedDict, Counter
        return [*obj.keys(), *obj.values()]
    if kind is HistoryBuffer:
        return list(obj.__dict__.values())
    if isinstance(obj, torch.Tensor):  # attributes and a gradient a pickle can set
        return [*vars(obj).values(), *([obj.grad] if obj.grad is not None else [])]
    return ()


def _finish_one(obj, replaced, storages):
    kind = type(obj)
    if kind is _Array:
        if not obj.__dict__.get('_built'):
            raise _refuse('a numpy array without its state')
        return np.array(obj, subok=False)  # a plain array no opcode has seen
    if kind is _Dtype:
        return obj.dtype
    if kind is _RestoredHistoryBuffer:
        raise _refuse('a HistoryBuffer without its state')
    if isinstance(obj, (torch.UntypedStorage, torch.storage.TypedStorage)):
        untyped = obj if isinstance(obj, torch.UntypedStorage) else obj._untyped_storage
        if untyped.device.type != 'meta':
            key = (str(untyped.device), untyped.data_ptr())
            storages[key] = max(storages.get(key, 0), untyped.nbytes())
        return obj
    if isinstance(obj, torch.Tensor) and obj.layout is torch.strided:
        # torch checks that a tensor stays inside its storage, not how often it reads the
        # storage: a size (10**6, 10**6) view with strides (0, 0) over one element is 10**12
        # elements to whoever sums or copies it
        storage = obj.untyped_storage()
        stored = storage.nbytes()
        extent = _extent(obj.shape, obj.numel() * obj.element_size())
        if extent > stored:
            _charge(extent - stored, f'a tensor of shape {tuple(obj.shape)} over a storage '
                    f'of {stored} bytes')
        if obj.device.type != 'meta':  # a meta storage has a size and no memory
            key = (str(obj.device), storage.data_ptr())
            storages[key] = max(storages.get(key, 0), stored)
        return obj
    if id(obj) in _STAND_IN_IDS:
        raise _refuse(f'the stand-in for {_STAND_IN_IDS[id(obj)]} itself, not something it made')
    if any(obj is getattr(HistoryBuffer, name) for name in _HISTORY_STATISTICS):
        # mmengine writes them only into a HistoryBuffer's state, which consumes them
        raise _refuse(f'HistoryBuffer.{obj.__name__} outside a HistoryBuffer\'s state')
    if kind is HistoryBuffer:
        state = {key: value for key, value in obj.__dict__.items()}
        problem = _history_problem(state)
        if problem:
            raise _refuse(problem)
        for key in _HISTORY_ARRAYS:
            if type(state[key]) is not np.ndarray:
                raise _refuse(f'HistoryBuffer.{key} that is not a plain numpy array')
        return obj
    if not replaced:
        return obj
    if kind is list:
        obj[:] = [replaced.get(id(item), item) for item in obj]
    elif isinstance(obj, dict):
        if any(id(key) in replaced for key in obj):
            items = [(replaced.get(id(k), k), replaced.get(id(v), v)) for k, v in obj.items()]
            obj.clear()
            obj.update(items)
        else:
            for key, value in obj.items():
                if id(value) in replaced:
                    obj[key] = replaced[id(value)]
    elif kind in (tuple, set, frozenset):
        if any(id(item) in replaced for item in obj):
            return kind(replaced.get(id(item), item) for item in obj)
    return obj


# --- reading one file ---------------------------------------------------------------------

_REFUSED_NAME = re.compile(r"GLOBAL ([\w.]+) (?:was not an allowed|whose module)"
                           r"|got <class '([\w.]+)'>|unrecognized function (\S+)")
# torch's refusals of an opcode applied to the wrong kind of object (BUILD on a dict, APPEND
# to a tuple, NEWOBJ of a function, ...)
_REFUSED_OPCODE = re.compile(r"Can only (build|append to|extend|create new object|SETITEMS?)\b"
                             r".*?but got <class '([\w.]+)'>", re.DOTALL)
_OPCODES = {'build': 'BUILD', 'append to': 'APPEND', 'extend': 'APPENDS',
            'create new object': 'NEWOBJ'}


def _culprit(message):
    """(refused object, whether a stand-in's check refused it) from a weights-only error;
    (None, False) when the data is damaged rather than refused."""
    if _REFUSED in message:
        return message.split(_REFUSED, 1)[1].strip().splitlines()[0], True
    match = _REFUSED_OPCODE.search(message)
    if match:
        opcode = _OPCODES.get(match.group(1), match.group(1))
        return f'a pickle {opcode} applied to a `{match.group(2)}`', True
    match = _REFUSED_NAME.search(message)
    return (next((g for g in match.groups() if g), None) if match else None), False


def _describe_refusal(name, culprit, checked):
    if culprit.startswith(_OVER_BOUND):
        return f'Refusing to load checkpoint {name}: it asks for {culprit[len(_OVER_BOUND):]}.'
    what = (culprit if checked else
            f'a pickled object of type `{culprit}`, which is not a tensor nor one of the types '
            'mmengine itself writes into checkpoints')
    return (
        f'Refusing to load checkpoint {name}: it contains {what}. lip_mmdet loads every '
        'checkpoint (local file, URL, torchvision://, open-mmlab://, ...) with '
        'torch.load(weights_only=True) so that a checkpoint cannot run code. If you trust this '
        'file, either re-save its weights once, e.g.\n'
        f"  ckpt = torch.load('{name}', weights_only=False)\n"
        "  torch.save({'state_dict': ckpt['state_dict']}, 'clean.pth')\n"
        'or allow that one type in your own code with '
        'torch.serialization.add_safe_globals([ThatType]).')


def _first_line(text, limit=300):
    line = text.strip().splitlines()[0] if text.strip() else ''
    return line if len(line) <= limit else line[:limit] + '...'


def _why_unreadable(error, head):
    text = str(error)
    if head and not head.startswith((b'PK', b'\x80')):  # zip archive / pickle protocol >= 2
        return (f'it is neither a torch.save zip archive nor a legacy torch pickle '
                f'(it starts with {head!r})')
    if isinstance(error, EOFError) or 'unexpected EOF' in text:
        return 'it ends early (truncated)'
    if 'zip archive' in text or isinstance(error, zipfile.BadZipFile):
        return 'it is a damaged or truncated zip archive (' + _first_line(text.split('.')[0]) + ')'
    if 'inline_container' in text or 'PytorchStreamReader' in text:
        return 'it is a zip archive, but not one torch.save wrote (' + \
            _first_line(text.rsplit('] ', 1)[-1]).strip(' .') + ')'
    if isinstance(error, MemoryError) or "can't allocate memory" in text:
        return 'it asks for more memory than this machine can give'
    if 'resize storage' in text or 'Storage size calculation overflowed' in text:
        return ('a tensor in it reaches beyond the bytes its storage has in the file '
                f'({_first_line(text)})')
    if isinstance(error, pickle.UnpicklingError):
        return 'its pickled data is damaged'
    return f'it could not be read ({type(error).__name__}: {_first_line(text)})'


def _file_size(file):
    """Bytes in ``file`` (a path or a seekable file object), 0 when it cannot tell."""
    if isinstance(file, str):
        return osp.getsize(file)
    try:
        position = file.tell()
        size = file.seek(0, os.SEEK_END)
        file.seek(position)
        return size
    except (AttributeError, OSError, ValueError):
        return 0


def _head(file):
    try:
        if isinstance(file, str):
            with open(file, 'rb') as stream:
                return stream.read(12)
        file.seek(0)
        return file.read(12)
    except (AttributeError, OSError, ValueError):
        return b''


def _check_container(file, name, size):
    """Refuse a file whose container (zip archive or legacy pickles) declares more tensor
    bytes than it holds, before torch allocates them; and a file that is neither.

    Returns:
        int | None: the bytes the file holds for tensor storages (its zip records, or for a
        legacy file its size), None when that is left to torch's reader.
    """
    position = None if isinstance(file, str) else file.tell()
    head = _head(file)
    unreadable, storage_bytes = None, size
    if head.startswith(b'PK'):
        try:
            unreadable, storage_bytes = _record_problem(file, size)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError):
            storage_bytes = None  # torch's reader says what is damaged
    elif not head.startswith(b'\x80'):
        # torch would also try its tar format (torch < 0.4), whose storages it sizes by
        # headers in the file before reading them; it is not read here
        unreadable = _why_unreadable(None, head) if head else 'it is empty'
    else:
        with (open(file, 'rb') if isinstance(file, str) else contextlib.nullcontext(file)
              ) as stream, _bounded_allocations(size):
            unreadable = _legacy_storage_problem(stream, size)
    if position is not None:
        file.seek(position)
    if unreadable:
        raise UnreadableCheckpointError(f'{name} is not a readable checkpoint: {unreadable}')
    return storage_bytes


def _all_records_stored(path):
    """Whether ``path`` is a zip archive whose records are all stored (not compressed)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


# deflate cannot expand data more than 1032-fold; a record that says it does lies about its size
_MAX_DEFLATE_RATIO = 1032


def _record_problem(file, size):
    """``(why the zip archive file cannot hold the records it declares, or None, the bytes
    of its storage records)``.

    torch allocates each storage at the size the pickle gives, which must equal its record's
    declared size; a declared size no stored or deflated record can have is refused before.
    Every other record (the pickle above all) is read whole into memory, so it is bounded
    like what the file allocates outside its tensors: a deflated pickle of zeros unpacks
    1000-fold.
    """
    storage_bytes = 0
    bound = _Budget(size).limit
    with zipfile.ZipFile(file) as archive:
        for info in archive.infolist():
            stored = info.compress_type == zipfile.ZIP_STORED
            limit = info.compress_size * (1 if stored else _MAX_DEFLATE_RATIO) + 1024
            if info.file_size > limit:
                return (f'its record {info.filename} says it holds {info.file_size} bytes, '
                        f'more than its {info.compress_size} bytes in the file can'), None
            if '/data/' in info.filename:
                storage_bytes += info.file_size
            elif info.file_size > bound:
                return (f'its record {info.filename} unpacks to {info.file_size} bytes, more '
                        f'than the {bound} bytes allowed for a file of its size'), None
    return None, storage_bytes


def _legacy_storage_problem(file, limit):
    """Why the legacy (non-zip) checkpoint ``file`` would make torch allocate more storage
    than ``limit`` bytes, or None.

    torch's legacy loader allocates each storage at the element count the pickle gives and
    only then reads its bytes from the file, and its storages are resizable: a tensor placed
    past the end of one grows it (an offset of 2**31 in a 970-byte file made 8 GiB). Here the
    pickle is read first, as torch reads it, with the storages on the meta device (sizes, no
    memory), to add up what they declare and see whether a tensor grew one. A problem of
    another kind is left to the real load, which meets it too.
    """
    from torch import _weights_only_unpickler as restricted
    roots, views = {}, {}  # key -> (meta storage, declared bytes)

    def persistent_load(saved_id):
        _, storage_type, key, _, numel, view_metadata = saved_id
        dtype = storage_type.dtype
        element_size = torch._utils._element_size(dtype)
        if key not in roots:
            nbytes = max(numel * element_size, 0)
            if sum(declared for _, declared in roots.values()) + nbytes > limit:
                raise _OverLimit
            roots[key] = (torch.UntypedStorage(nbytes, device='meta'), nbytes)
        storage = roots[key][0]
        if view_metadata is not None:
            view_key, offset, view_size = view_metadata
            if view_key not in views:
                view = storage[offset * element_size:(offset + view_size) * element_size]
                views[view_key] = (view, view.nbytes())
            storage = views[view_key][0]
        return torch.storage.TypedStorage(wrap_storage=storage, dtype=dtype, _internal=True)

    try:
        file.seek(0)
        for _ in range(3):  # magic number, protocol version, system information
            restricted.Unpickler(file, encoding='utf-8').load()
        unpickler = restricted.Unpickler(file, encoding='utf-8')
        unpickler.persistent_load = persistent_load
        unpickler.load()
    except _OverLimit:
        return ('its tensors declare more bytes than the whole file has (a legacy checkpoint '
                'holds every byte of its tensors)')
    except Exception:  # noqa: BLE001  the real load reports what is wrong
        pass
    # also after a failure: the real load grows a storage before it meets the failure
    for storage, declared in [*roots.values(), *views.values()]:
        if storage.nbytes() > declared:
            return (f'a tensor in it reaches beyond the {declared} bytes its storage has in '
                    f'the file (to {storage.nbytes()})')
    return None


class _OverLimit(Exception):
    pass


def load_checkpoint_file(file, map_location=None, name=None, mmap=False):
    """``torch.load(file, weights_only=True)`` with mmengine's types allowed, clear errors.

    Besides tensors and plain containers only numeric numpy arrays, scalars and dtypes,
    mmengine's ``HistoryBuffer`` and empty ``bytes`` are built, each checked (see
    :data:`MMENGINE_SAFE_GLOBALS`), and what the file allocates outside its tensor storages
    is bounded by its size (:data:`ALLOCATION_FLOOR`, :data:`ALLOCATION_PER_FILE_BYTE`).
    Every failure to load is one of :data:`CHECKPOINT_ERRORS`, with a one-line reason.

    Args:
        file (str | os.PathLike | file object): a local file, or the bytes of one.
        map_location: as in ``torch.load``.
        name (str, optional): how messages name the checkpoint (e.g. its URL). Default: file.
        mmap (bool): memory-map the tensors of a zip checkpoint whose records are all stored
            uncompressed instead of reading them; torch cannot map a compressed record, so
            any other file is read as without it.

    Raises:
        CheckpointUnavailableError: ``file`` is a path that does not exist (a
            ``FileNotFoundError``).
        UnreadableCheckpointError: it is a directory, empty, not a torch checkpoint, or
            cannot be loaded for another reason (the message gives it).
        UnsafeCheckpointError: it holds a pickled object outside the allow-list, or asks to
            allocate more than its size allows.
    """
    if isinstance(file, (str, os.PathLike)):
        file = osp.expanduser(os.fspath(file))
        name = name or file
        if osp.isdir(file):
            raise UnreadableCheckpointError(
                f'{name} is not a readable checkpoint: it is a directory, not a file')
        if not osp.isfile(file):
            raise CheckpointUnavailableError(f'checkpoint {name} can not be found.')
        if osp.getsize(file) == 0:
            raise UnreadableCheckpointError(f'{name} is not a readable checkpoint: '
                                            'the file is empty')
        mmap = mmap and _all_records_stored(file)
    else:
        mmap = False
    name = name or repr(file)
    size = _file_size(file)
    storage_bytes = _check_container(file, name, size)
    try:
        with _bounded_allocations(size):
            result = torch.load(file, map_location=map_location, weights_only=True,
                                mmap=mmap)
            return _finished(result, storage_bytes)
    except (Exception, MemoryError) as error:  # every failure becomes one checkpoint error
        culprit, checked = (_culprit(str(error)) if isinstance(error, pickle.UnpicklingError)
                            else (None, False))
        if culprit:
            raise UnsafeCheckpointError(_describe_refusal(name, culprit, checked)) from None
        raise UnreadableCheckpointError(f'{name} is not a readable checkpoint: '
                                        f'{_why_unreadable(error, _head(file))}') from None


# --- the sources mmengine resolves --------------------------------------------------------

def load_from_local(filename, map_location=None):
    """mmengine's loader for plain paths."""
    return load_checkpoint_file(filename, map_location=map_location)


def hub_cache_file(url, model_dir=None):
    """Where ``torch.hub`` keeps (and looks for) the download of ``url``."""
    model_dir = model_dir or osp.join(torch.hub.get_dir(), 'checkpoints')
    return osp.join(model_dir, osp.basename(urlparse(url).path))


def _unavailable(url, cached, reason):
    return CheckpointUnavailableError(
        f'Checkpoint {url} is not in the torch hub cache and cannot be downloaded now '
        f'({reason}). Download it where there is network access and put it at\n  {cached}\n'
        '(the torch hub cache; TORCH_HOME moves it), or save it anywhere and give that local '
        'path instead of the URL.')


def _download(url, cached, progress):
    if osp.isfile(cached):
        return
    os.makedirs(osp.dirname(cached), exist_ok=True)
    try:
        # writes a temporary file next to ``cached`` and renames it when complete
        torch.hub.download_url_to_file(url, cached, progress=progress)
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise _unavailable(url, cached, getattr(error, 'reason', error)) from None


def load_from_url(url, map_location=None, model_dir=None, progress=os.isatty(0)):
    """Fetch ``url`` into the torch hub cache unless it is there, then load it safely.

    In a distributed run local rank 0 downloads first, as mmengine does.
    """
    cached = hub_cache_file(url, model_dir)
    if not osp.basename(cached):
        raise CheckpointUnavailableError(f'checkpoint URL {url} does not name a file')
    rank, world_size = get_dist_info()
    if rank == 0:
        _download(url, cached, progress)
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            _download(url, cached, progress)
    return load_checkpoint_file(cached, map_location=map_location,
                                name=f'{url} (cached at {cached})')


def _torchvision_urls(name):
    # mmengine ships torchvision 0.12's table; torchvision itself is needed only for newer
    # names (e.g. 'resnet50.imagenet1k_v2'), so it is imported only then.
    import mmengine
    urls = mmengine.load(osp.join(mmengine.__path__[0], 'hub', 'torchvision_0.12.json'))
    if name in urls:
        return urls
    try:
        from mmengine.runner.checkpoint import get_torchvision_models
        return get_torchvision_models()
    except Exception as error:  # not installed, or a build whose ops fail to load
        raise CheckpointUnavailableError(
            f'torchvision://{name} is not in mmengine\'s table of torchvision weights (names '
            f'such as {", ".join(sorted(urls)[:4])}, ...), and newer names need torchvision, '
            f'which cannot be imported ({type(error).__name__}: {error}). Use one of those '
            'names, the weights\' URL or a local file.') from None


def resolve_checkpoint_url(filename):
    """The URL (or mmengine-home file) behind a ``torchvision://``, ``modelzoo://``,
    ``open-mmlab://``, ``openmmlab://`` or ``mmcls://`` name; other paths come back as they are.

    Raises:
        CheckpointUnavailableError: the name is in none of mmengine's tables.
    """
    scheme, sep, name = filename.partition('://')
    if not sep:
        return filename
    if scheme in ('torchvision', 'modelzoo'):
        urls = _torchvision_urls(name)
    elif scheme in ('open-mmlab', 'openmmlab'):
        urls = get_external_models()
        name = get_deprecated_model_names().get(name, name)
    elif scheme == 'mmcls':
        urls = get_mmcls_models()
    else:
        return filename
    if name not in urls:
        raise CheckpointUnavailableError(
            f'{filename}: mmengine knows no checkpoint named {name!r} for {scheme}:// '
            '(see mmengine/hub/*.json). Use a URL or a local file.')
    target = urls[name]
    if not target.startswith(('http://', 'https://')):
        target = osp.join(_get_mmengine_home(), target)
    return target


def load_from_model_zoo(filename, map_location=None):
    """torchvision:// modelzoo:// open-mmlab:// openmmlab:// mmcls://: resolve, then load."""
    target = resolve_checkpoint_url(filename)
    if target.startswith(('http://', 'https://')):
        checkpoint = load_from_url(target, map_location=map_location)
    else:
        checkpoint = load_checkpoint_file(target, map_location=map_location,
                                          name=f'{filename} ({target})')
    if filename.startswith('mmcls://'):
        checkpoint = _process_mmcls_checkpoint(checkpoint)
    return checkpoint


def load_from_pavi(filename, map_location=None):
    """pavi://: download into a temporary folder, then load safely."""
    try:
        from pavi import modelcloud
    except ImportError:
        raise CheckpointUnavailableError(f'{filename} needs the pavi package, which is not '
                                         'installed') from None
    model = modelcloud.get(filename[len('pavi://'):])
    with tempfile.TemporaryDirectory() as tmp_dir:
        downloaded = osp.join(tmp_dir, model.name)
        model.download(downloaded)
        return load_checkpoint_file(downloaded, map_location=map_location, name=filename)


def load_from_object_storage(filename, map_location=None, backend='petrel'):
    """s3:// and petrel:// through mmengine's file backend, then load the bytes safely."""
    from mmengine.fileio import get_file_backend
    try:
        data = get_file_backend(filename, backend_args={'backend': backend}).get(filename)
    except ImportError as error:
        raise CheckpointUnavailableError(f'{filename} needs {error.name or "a client"} for '
                                         f'the {backend} backend: {error}') from None
    with io.BytesIO(data) as buffer:
        return load_checkpoint_file(buffer, map_location=map_location, name=filename)


#: Our loader for every prefix mmengine 0.10.7 registers (``''`` is the local file).
SAFE_SCHEMES = {
    '': load_from_local,
    'http://': load_from_url,
    'https://': load_from_url,
    'torchvision://': load_from_model_zoo,
    'modelzoo://': load_from_model_zoo,
    'open-mmlab://': load_from_model_zoo,
    'openmmlab://': load_from_model_zoo,
    'mmcls://': load_from_model_zoo,
    'pavi://': load_from_pavi,
    r'(\S+\:)?s3://': load_from_object_storage,
    r'(\S+\:)?petrel://': load_from_object_storage,
}


def _unknown_scheme_loader(prefix):

    def refuse(filename, map_location=None):
        raise UnsafeCheckpointError(
            f'Refusing to load checkpoint {filename}: its scheme {prefix!r} was registered with '
            'mmengine by another package, and lip_mmdet cannot tell whether that loader '
            'unpickles safely. Download the file and give its local path.')

    return refuse


def _safe_checkpoint_loader(cls, path):
    """``CheckpointLoader._get_checkpoint_loader``: the scheme is matched as mmengine matches
    it, and ours loads it; a scheme that is not one of ours gets a loader that refuses.

    Deciding at each load (not only when lip_mmdet is imported) keeps that true for schemes
    registered later, and for ours if another package registers its loader in their place.
    """
    for prefix in cls._schemes:
        if re.match(prefix, path) is not None:
            return SAFE_SCHEMES.get(prefix) or _unknown_scheme_loader(prefix)
    return SAFE_SCHEMES['']


def install_safe_checkpoint_loading():
    """Make every checkpoint load of this process allow-listed: allow mmengine's checkpoint
    types in ``torch.load`` (through the checking stand-ins) and route every scheme of
    mmengine's ``CheckpointLoader`` through :func:`load_checkpoint_file`; a scheme some other
    package registers, before or after this call, is refused rather than left unchecked.

    ``import lip_mmdet`` calls it; importing this module does not. Idempotent.

    Raises:
        ImportError: torch is older than :data:`MIN_TORCH`.
    """
    check_torch_version()
    torch.serialization.add_safe_globals(list(MMENGINE_SAFE_GLOBALS))
    _install_bounded_torch_globals()
    for prefix in list(CheckpointLoader._schemes):
        if prefix not in SAFE_SCHEMES:
            CheckpointLoader.register_scheme(prefixes=prefix, force=True,
                                             loader=_unknown_scheme_loader(prefix))
    for prefix, loader in SAFE_SCHEMES.items():
        CheckpointLoader.register_scheme(prefixes=prefix, loader=loader, force=True)
    CheckpointLoader._get_checkpoint_loader = classmethod(_safe_checkpoint_loader)
