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
import io
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
    'enable_safe_mmengine_checkpoints', 'hub_cache_file', 'load_checkpoint_file',
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
    """A remote checkpoint is neither in the local cache nor downloadable now."""


#: What a loader raises for a checkpoint the user gave that cannot be used.
CHECKPOINT_ERRORS = (UnsafeCheckpointError, UnreadableCheckpointError, CheckpointUnavailableError)

# Our stand-ins prefix their refusals with this, so a refusal is told from a damaged file.
_REFUSED = 'refused:'


def _refuse(message):
    return pickle.UnpicklingError(f'{_REFUSED} {message}')


# --- the allow-list -----------------------------------------------------------------------

def _numpy_globals():
    # numpy 1.x (pinned: numpy<2) pickles scalars and arrays through numpy.core.multiarray.
    multiarray = np.core.multiarray
    dtype_classes = {type(np.dtype(code)) for code in '?bBhHiIlLqQefdgFDG'}
    return [multiarray.scalar, multiarray._reconstruct, np.ndarray, np.dtype,
            *sorted(dtype_classes, key=lambda cls: cls.__name__)]


_HISTORY_STATISTICS = ('min', 'max', 'current', 'mean')
_HISTORY_ARRAYS = ('_log_history', '_count_history')


class _RestoredHistoryBuffer(HistoryBuffer):
    """Stands in for ``HistoryBuffer`` while unpickling and checks the state it receives.

    ``HistoryBuffer.__setstate__`` merges the pickled ``statistics_methods`` into the
    class-wide table that ``statistics(name)`` calls, so an unchecked state could make every
    later ``buffer.statistics('mean')`` call another allowed callable. The state must be what
    mmengine writes: ``max_length`` (a positive int), two 1-D numeric arrays of equal length
    and ``statistics_methods`` mapping some of min / max / current / mean to HistoryBuffer's
    own methods. Once checked the object becomes a plain ``HistoryBuffer`` (mmengine's
    ``__setstate__`` runs), so a checkpoint saved later records mmengine's class.
    """

    def __init__(self, *args, **kwargs):
        # NEWOBJ (``__new__``) + BUILD is how a HistoryBuffer is pickled; a call is not.
        raise _refuse('a call of HistoryBuffer(...), which is not how mmengine pickles it')

    def __setstate__(self, state):
        if type(state) is not dict:
            raise _refuse(f'HistoryBuffer state of type {type(state).__name__}, not a dict')
        required = {'max_length', *_HISTORY_ARRAYS}
        keys = set(state)
        if not required <= keys <= required | {'statistics_methods'}:
            raise _refuse(f'HistoryBuffer state with keys {sorted(map(str, keys))}, expected '
                          f'{sorted(required)} and statistics_methods')
        max_length = state['max_length']
        if type(max_length) is not int or max_length <= 0:
            raise _refuse(f'HistoryBuffer.max_length {max_length!r}, not a positive int')
        arrays = [state[key] for key in _HISTORY_ARRAYS]
        for key, array in zip(_HISTORY_ARRAYS, arrays):
            if (type(array) is not np.ndarray or array.ndim != 1
                    or array.dtype.kind not in 'biuf'):
                raise _refuse(f'HistoryBuffer.{key} that is not a 1-D numeric numpy array')
        if len(arrays[0]) != len(arrays[1]):
            raise _refuse('HistoryBuffer histories that differ in length')
        methods = state.get('statistics_methods', {})
        if type(methods) is not dict or any(
                name not in _HISTORY_STATISTICS or method is not getattr(HistoryBuffer, name)
                for name, method in methods.items()):
            raise _refuse('HistoryBuffer statistics_methods other than min/max/current/mean '
                          'mapped to HistoryBuffer\'s own methods')
        self.__class__ = HistoryBuffer
        HistoryBuffer.__setstate__(self, state)


def _history_buffer_getattr(owner, name):
    """Stands in for ``builtins.getattr`` while unpickling.

    A ``HistoryBuffer`` pickles its statistics methods as ``getattr(HistoryBuffer, 'mean')``.
    Allowing the real ``getattr`` would let a file reach any attribute of any allowed object,
    so only those four lookups are resolved.
    """
    if owner in (HistoryBuffer, _RestoredHistoryBuffer) and name in _HISTORY_STATISTICS:
        return getattr(HistoryBuffer, name)
    raise _refuse(f'getattr({getattr(owner, "__name__", type(owner).__name__)}, '
                  f'{name!r}), not one of the four HistoryBuffer statistics lookups')


def _empty_bytes(*args):
    """Stands in for ``builtins.bytes`` while unpickling.

    Pickle protocol 2 (torch.save's) writes an empty ``bytes`` as the call ``bytes()``, e.g. in
    the data of an empty numpy array; non-empty ones go through the allowed ``_codecs.encode``.
    Only that argument-free call is accepted (``bytes(10**12)`` would allocate a terabyte).
    """
    if args:
        raise _refuse(f'a call of bytes with arguments {args!r:.40}; only bytes() is allowed')
    return b''


#: Everything besides tensors and plain containers that mmengine's Runner writes into a
#: checkpoint (message hub history buffers, numpy scalars and arrays in ``meta`` and
#: ``runtime_info``), the last three as checking stand-ins.
MMENGINE_SAFE_GLOBALS = (
    *_numpy_globals(),
    (_RestoredHistoryBuffer, f'{HistoryBuffer.__module__}.{HistoryBuffer.__qualname__}'),
    (_history_buffer_getattr, 'builtins.getattr'),
    (_empty_bytes, 'builtins.bytes'),
)


# --- reading one file ---------------------------------------------------------------------

_REFUSED_NAME = re.compile(r"GLOBAL ([\w.]+) (?:was not an allowed|whose module)"
                           r"|got <class '([\w.]+)'>|unrecognized function (\S+)")


def _culprit(message):
    """(refused object, whether a stand-in's check refused it) from a weights-only error;
    (None, False) when the data is damaged rather than refused."""
    if _REFUSED in message:
        return message.split(_REFUSED, 1)[1].strip().splitlines()[0], True
    match = _REFUSED_NAME.search(message)
    return (next((g for g in match.groups() if g), None) if match else None), False


def _describe_refusal(name, culprit, checked):
    what = (f'{culprit}, which is not how mmengine writes it' if checked else
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


def _why_unreadable(error, head):
    text = str(error)
    if head and not head.startswith((b'PK', b'\x80')):  # zip archive / pickle protocol >= 2
        return (f'it is neither a torch.save zip archive nor a legacy torch pickle '
                f'(it starts with {head!r})')
    if isinstance(error, EOFError) or 'unexpected EOF' in text:
        return 'it ends early (truncated)'
    if 'zip archive' in text or isinstance(error, zipfile.BadZipFile):
        return 'it is a damaged or truncated zip archive (' + text.split('.')[0] + ')'
    if 'inline_container' in text or 'PytorchStreamReader' in text:
        return 'it is a zip archive, but not one torch.save wrote (' + \
            text.rsplit('] ', 1)[-1].strip(' .') + ')'
    if isinstance(error, pickle.UnpicklingError):
        return 'its pickled data is damaged'
    return f'it could not be read ({type(error).__name__}: {text})'


def _is_read_failure(error):
    if isinstance(error, RuntimeError):
        # map_location / device errors are about a readable file; keep their own message.
        text = str(error)
        return any(s in text for s in ('zip archive', 'unexpected EOF', 'corrupted',
                                       'magic number', 'inline_container',
                                       'PytorchStreamReader'))
    return isinstance(error, (EOFError, KeyError, UnicodeDecodeError, ValueError,
                              IndexError, TypeError, AttributeError, OverflowError,
                              zipfile.BadZipFile, pickle.UnpicklingError))


def load_checkpoint_file(file, map_location=None, name=None, mmap=False):
    """``torch.load(file, weights_only=True)`` with mmengine's types allowed, clear errors.

    Args:
        file (str | os.PathLike | file object): a local file, or the bytes of one.
        map_location: as in ``torch.load``.
        name (str, optional): how messages name the checkpoint (e.g. its URL). Default: file.
        mmap (bool): memory-map a zip checkpoint instead of reading its tensors (a cheap check
            that the file loads).

    Raises:
        FileNotFoundError: ``file`` is a path that does not exist.
        UnreadableCheckpointError: it is a directory, empty, or not a torch checkpoint.
        UnsafeCheckpointError: it holds a pickled object outside the allow-list.
    """
    path = None
    if isinstance(file, (str, os.PathLike)):
        path = osp.expanduser(os.fspath(file))
        name = name or path
        if osp.isdir(path):
            raise UnreadableCheckpointError(
                f'{name} is not a readable checkpoint: it is a directory, not a file')
        if not osp.isfile(path):
            raise FileNotFoundError(f'checkpoint {name} can not be found.')
        if osp.getsize(path) == 0:
            raise UnreadableCheckpointError(f'{name} is not a readable checkpoint: '
                                            'the file is empty')
        mmap = mmap and zipfile.is_zipfile(path)
        file = path
    name = name or repr(file)
    try:
        return torch.load(file, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as error:
        culprit, checked = (_culprit(str(error)) if isinstance(error, pickle.UnpicklingError)
                            else (None, False))
        if culprit:
            raise UnsafeCheckpointError(_describe_refusal(name, culprit, checked)) from None
        if not _is_read_failure(error):
            raise
        head = b''
        if path is not None:
            with open(path, 'rb') as stream:
                head = stream.read(12)
        raise UnreadableCheckpointError(f'{name} is not a readable checkpoint: '
                                        f'{_why_unreadable(error, head)}') from None


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


def enable_safe_mmengine_checkpoints():
    """Allow mmengine's checkpoint types in ``torch.load`` and route every scheme of
    mmengine's ``CheckpointLoader`` through :func:`load_checkpoint_file`; a scheme some other
    package registered is refused rather than left unchecked. Idempotent."""
    check_torch_version()
    torch.serialization.add_safe_globals(list(MMENGINE_SAFE_GLOBALS))
    for prefix in list(CheckpointLoader._schemes):
        if prefix not in SAFE_SCHEMES:
            CheckpointLoader.register_scheme(prefixes=prefix, force=True,
                                             loader=_unknown_scheme_loader(prefix))
    for prefix, loader in SAFE_SCHEMES.items():
        CheckpointLoader.register_scheme(prefixes=prefix, loader=loader, force=True)
