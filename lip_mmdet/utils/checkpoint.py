"""Safe loading of mmengine checkpoints under torch >= 2.6.

torch >= 2.6 makes ``torch.load`` default to ``weights_only=True``, and mmengine 0.10.7 does not
pass that argument, so ``load_from``, ``--resume`` and ``tools/test.py CKPT`` fail on the very
checkpoints mmengine's Runner saved: they carry numpy scalars/arrays and ``HistoryBuffer``
objects. Instead of turning ``weights_only`` off, the few types mmengine writes are added to
torch's allow-list, and mmengine's local-file loader is wrapped so that a checkpoint carrying
anything else is refused with an error that names the object and says what to do.
"""
import os.path as osp
import pickle
import re

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader


def _numpy_globals():
    # numpy 1.x (pinned: numpy<2) pickles scalars and arrays through numpy.core.multiarray.
    multiarray = np.core.multiarray
    dtype_classes = {type(np.dtype(code)) for code in '?bBhHiIlLqQefdgFDG'}
    return [multiarray.scalar, multiarray._reconstruct, np.ndarray, np.dtype,
            *sorted(dtype_classes, key=lambda cls: cls.__name__)]


_HISTORY_STATISTICS = ('min', 'max', 'current', 'mean')


def _history_buffer_getattr(owner, name):
    """Stands in for ``builtins.getattr`` while unpickling.

    A ``HistoryBuffer`` pickles its statistics methods as ``getattr(HistoryBuffer, 'mean')``.
    Allowing the real ``getattr`` would let a file reach any attribute of any allowed object,
    so only those four lookups are resolved.
    """
    if owner is HistoryBuffer and name in _HISTORY_STATISTICS:
        return getattr(owner, name)
    raise pickle.UnpicklingError(
        f'GLOBAL getattr({getattr(owner, "__name__", type(owner).__name__)}, {name!r}) '
        'is not one of the HistoryBuffer statistics lookups mmengine writes')


#: Everything besides tensors and plain containers that mmengine's Runner writes into a
#: checkpoint (message hub history buffers, numpy scalars in ``meta``).
MMENGINE_SAFE_GLOBALS = (HistoryBuffer, *_numpy_globals(),
                         (_history_buffer_getattr, 'builtins.getattr'))

_GLOBAL_IN_MESSAGE = re.compile(r"GLOBAL ([\w.]+)|got <class '([\w.]+)'>")


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint holds a pickled object outside the allow-list."""


def _describe_refusal(filename, error):
    match = _GLOBAL_IN_MESSAGE.search(str(error))
    culprit = next((g for g in match.groups() if g), None) if match else None
    what = f'a pickled object of type `{culprit}`' if culprit else 'a pickled object'
    return (
        f'Refusing to load checkpoint {filename!r}: it contains {what}, which is not a tensor '
        'nor one of the types mmengine itself writes into checkpoints. lip_mmdet loads '
        'checkpoints with torch.load(weights_only=True) so that a checkpoint cannot run code. '
        'If you trust this file, either re-save its weights once, e.g.\n'
        f"  ckpt = torch.load({filename!r}, weights_only=False)\n"
        f"  torch.save({{'state_dict': ckpt['state_dict']}}, 'clean.pth')\n"
        'or allow that one type in your own code with '
        'torch.serialization.add_safe_globals([ThatType]).')


def load_from_local(filename, map_location=None):
    """Load a local checkpoint with ``weights_only=True`` and mmengine's types allowed.

    Replaces mmengine's loader for plain paths; raises :class:`UnsafeCheckpointError` when the
    file carries any other pickled object.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint {filename} can not be found.')
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise UnsafeCheckpointError(_describe_refusal(filename, error)) from None


def enable_safe_mmengine_checkpoints():
    """Allow mmengine's checkpoint types in ``torch.load`` and route mmengine's local loads
    through :func:`load_from_local`. Idempotent."""
    torch.serialization.add_safe_globals(list(MMENGINE_SAFE_GLOBALS))
    CheckpointLoader.register_scheme(prefixes='', loader=load_from_local, force=True)
