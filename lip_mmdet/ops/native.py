"""Builds and loads the fused CPU kernels of ``csrc/`` (lip2d and dpp2d; plain C ABI, ctypes).

The library has no torch headers, so it compiles in a few seconds with the system C++
compiler the first time it is needed, into a cache keyed by the source, the flags and the
compiler. When there is no compiler or the build fails, :func:`pooling_cpu_library` returns
None (with one warning) and the ops use their pure-PyTorch paths, which give the same results.
A cached library that no longer loads (e.g. a truncated file) is rebuilt once.

Every entry point validates its sizes (checked 64-bit arithmetic, the window relations its
indexing relies on) and returns a status code; :func:`run_kernel` also checks each tensor's
device, dtype, layout and element count against the sizes, and turns a nonzero status into
a ``ValueError`` that names the problem. The library exports ``lip_mmdet_pooling_abi()``; a
library whose version differs from :data:`ABI_VERSION` (built from other sources, with
another argument layout) is never called.

The ops call these kernels only inside their custom-op implementations
(:mod:`lip_mmdet.ops.lip`, :mod:`lip_mmdet.ops.dpp`), so the loader's lock, the ctypes call
and the thread count never reach ``torch.compile`` or ``torch.export``.

Environment:
    LIP_MMDET_NATIVE=0   never build or load the library (pure-PyTorch path only).
    LIP_MMDET_CACHE=DIR  cache root (default ``~/.cache/lip_mmdet``); the library goes in
                         ``DIR/ops``.
    CXX                  compiler to use (default ``c++``, then ``g++``). When set, it must
                         name an executable: otherwise the kernels are not built (one
                         warning says so) rather than built by another compiler.
"""
import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Optional

import torch

__all__ = ['pooling_cpu_library', 'native_enabled', 'run_kernel', 'ABI_VERSION']

#: The version ``lip_mmdet_pooling_abi()`` must return (``LIP_MMDET_POOLING_ABI`` in
#: ``csrc/checks.h``): the entry points' argument layout and status codes.
ABI_VERSION = 2

_MIN_ELEMENTS_PER_THREAD = 1 << 15

_CSRC = Path(__file__).with_name('csrc')
_SOURCES = (_CSRC / 'lip2d_cpu.cpp', _CSRC / 'dpp2d_cpu.cpp', _CSRC / 'abi.cpp')
_HEADERS = (_CSRC / 'checks.h', _CSRC / 'vec_math.h', _CSRC / 'parallel.h')
_lock = threading.Lock()
_state = {'tried': False, 'library': None}

# Status codes of the entry points (lip_mmdet::Status in csrc/checks.h).
_STATUS = {
    2: 'a size is not positive (or the plane count is negative or not a multiple of the '
       'channel count)',
    3: 'invalid window: kernel and stride must be positive and each padding in [0, kernel)',
    4: 'the output size is not the one the input size, kernel, stride and padding give',
    5: 'a size, index or byte count overflows 64-bit arithmetic',
    6: 'the thread count is outside [1, 4096]',
    7: 'shift_range must lie in [0, 80]',
    8: 'a tensor pointer is null',
}


def native_enabled() -> bool:
    """Whether the environment allows the compiled kernels (``LIP_MMDET_NATIVE`` != '0')."""
    return os.environ.get('LIP_MMDET_NATIVE', '1') != '0'


def _compiler() -> str:
    """Path of the C++ compiler to build with; raises RuntimeError naming what is missing."""
    requested = os.environ.get('CXX')
    if requested:
        found = shutil.which(requested)
        if found is None:
            raise RuntimeError(f'CXX={requested!r} is not an executable compiler (unset CXX '
                               'to use c++ or g++ from PATH)')
        return found
    for candidate in ('c++', 'g++'):
        if shutil.which(candidate):
            return shutil.which(candidate)
    raise RuntimeError('no C++ compiler found (install g++ or set CXX)')


def _flags():
    # -fno-trapping-math lets the compiler vectorise the selects in the exp polynomial; it
    # changes no result. No -ffast-math: it would alter rounding and, linked, the FPU state.
    flags = ['-O3', '-std=c++17', '-shared', '-fPIC', '-pthread', '-fno-trapping-math',
             '-fno-math-errno']
    if torch.backends.cpu.get_cpu_capability() in ('AVX2', 'AVX512'):
        flags += ['-mavx2', '-mfma']
    return flags


def _build(compiler: str, rebuild: bool = False) -> Path:
    """Path of the compiled library in the cache, compiling it unless it is there (or
    ``rebuild`` is set)."""
    flags = _flags()
    version = subprocess.run([compiler, '--version'], capture_output=True, text=True,
                             timeout=60).stdout
    code = b''.join(path.read_bytes() for path in (*_SOURCES, *_HEADERS))
    key = hashlib.sha256(code + ' '.join(flags).encode() + version.encode()).hexdigest()[:16]
    root = os.environ.get('LIP_MMDET_CACHE') or os.path.join(
        os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache'), 'lip_mmdet')
    target = Path(root) / 'ops' / f'pooling_cpu_{key}.so'
    if target.exists() and not rebuild:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build to a private name, then rename: concurrent processes never load a partial file.
    fd, tmp = tempfile.mkstemp(suffix='.so', dir=target.parent)
    os.close(fd)
    try:
        result = subprocess.run([compiler, *flags, *map(str, _SOURCES), '-o', tmp],
                                capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise RuntimeError(f'{compiler} failed:\n{result.stderr[-2000:]}')
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


class _Stale(Exception):
    """A library built for another argument layout."""


def _bind(path: Path) -> ctypes.CDLL:
    """Loads ``path``, checks its ABI version and declares the kernels' signatures."""
    library = ctypes.CDLL(str(path))
    abi = library.lip_mmdet_pooling_abi  # AttributeError for a library older than the check
    abi.argtypes, abi.restype = [], ctypes.c_int64
    if abi() != ABI_VERSION:
        raise _Stale(f'ABI version {abi()}, expected {ABI_VERSION}')
    pointer, sizes, c_int = ctypes.c_void_p, ctypes.POINTER(ctypes.c_int64), ctypes.c_int
    signatures = {
        'lip2d_forward': [pointer] * 3 + [sizes, ctypes.c_double, c_int],
        'lip2d_backward': [pointer] * 5 + [sizes, ctypes.c_double, c_int],
        'dpp2d_forward': [pointer] * 5 + [sizes, c_int, c_int],
        'dpp2d_backward': [pointer] * 9 + [sizes, c_int, c_int],
        'dpp_filter_guide_forward': [pointer] * 4 + [sizes, c_int],
        'dpp_filter_guide_backward': [pointer] * 6 + [sizes, c_int],
    }
    for name, argtypes in signatures.items():
        for suffix in ('f32', 'f64'):
            function = getattr(library, f'{name}_{suffix}')
            function.argtypes = argtypes
            function.restype = c_int
    return library


def pooling_cpu_library() -> Optional[ctypes.CDLL]:
    """The compiled lip2d/dpp2d CPU kernels, built on first use; None if unavailable."""
    if not native_enabled():
        return None
    with _lock:
        if not _state['tried']:
            _state['tried'] = True
            try:
                compiler = _compiler()
                path = _build(compiler)
                try:
                    _state['library'] = _bind(path)
                except (OSError, AttributeError, _Stale) as error:
                    # A cached file that does not load (truncated, foreign) is rebuilt once
                    # rather than making every later process fall back.
                    warnings.warn(f'lip_mmdet: cached CPU pooling kernels {path} do not load '
                                  f'({error}); rebuilding them', stacklevel=2)
                    _state['library'] = _bind(_build(compiler, rebuild=True))
            except Exception as error:  # any build/load failure means: use the torch path
                warnings.warn(f'lip_mmdet: fused CPU pooling kernels unavailable, using the '
                              f'pure-PyTorch path ({error})', stacklevel=2)
        return _state['library']


def _plane_sizes(sizes, channels_at):
    """(input elements, output elements, channels, planes) from a kernel's sizes."""
    planes = sizes[0]
    channels = sizes[1] if channels_at else 1
    h, w, oh, ow = sizes[1 + channels_at:5 + channels_at]
    return planes * h * w, planes * oh * ow, channels, planes


# Per kernel: the sizes' length, whether sizes[1] is the channel count, and each tensor's
# element count from (input, output, channels, planes) elements; 'f64' marks the float64
# per-plane accumulators.
_KERNELS = {
    'lip2d_forward': (11, 0, lambda i, o, c, p: (i, i, o)),
    'lip2d_backward': (11, 0, lambda i, o, c, p: (i, i, o, i, i)),
    'dpp2d_forward': (14, 1, lambda i, o, c, p: (i, o, c, c, o)),
    'dpp2d_backward': (14, 1, lambda i, o, c, p: (i, o, c, c, o, i, o, ('f64', p), ('f64', p))),
    'dpp_filter_guide_forward': (10, 1, lambda i, o, c, p: (i, 9 * c, c, o)),
    'dpp_filter_guide_backward': (10, 1, lambda i, o, c, p: (i, 9 * c, o, i, ('f64', 9 * p),
                                                            ('f64', p))),
}


def _check_call(name: str, tensors, sizes) -> None:
    """Raises ValueError/TypeError unless ``tensors`` are what kernel ``name`` reads and
    writes for ``sizes``: the C side can check the sizes, not the buffers."""
    if name not in _KERNELS:
        raise ValueError(f'unknown CPU kernel {name!r}')
    length, channels_at, counts = _KERNELS[name]
    # ctypes would silently wrap a Python int outside int64.
    if len(sizes) != length or not all(isinstance(s, int) and not isinstance(s, bool)
                                       and -(1 << 63) <= s < (1 << 63) for s in sizes):
        raise ValueError(f'CPU kernel {name} takes {length} int64 sizes, got {tuple(sizes)!r}')
    expected = counts(*_plane_sizes(sizes, channels_at))
    if len(tensors) != len(expected):
        raise ValueError(f'CPU kernel {name} takes {len(expected)} tensors, got {len(tensors)}')
    dtype = tensors[0].dtype
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f'CPU kernel {name} computes in float32 or float64, got {dtype}')
    for index, (tensor, count) in enumerate(zip(tensors, expected)):
        want = dtype
        if isinstance(count, tuple):
            want, count = torch.float64, count[1]
        if not isinstance(tensor, torch.Tensor) or tensor.device.type != 'cpu':
            raise TypeError(f'CPU kernel {name}: tensor {index} is not a CPU tensor')
        if tensor.dtype != want:
            raise TypeError(f'CPU kernel {name}: tensor {index} has dtype {tensor.dtype}, '
                            f'expected {want}')
        if not tensor.is_contiguous():
            raise ValueError(f'CPU kernel {name}: tensor {index} is not contiguous')
        if tensor.numel() != count:
            raise ValueError(f'CPU kernel {name}: tensor {index} has {tensor.numel()} '
                             f'elements, the sizes {tuple(sizes)} give {count}')


def run_kernel(library: ctypes.CDLL, name: str, tensors, sizes, *scalars) -> None:
    """Calls ``{name}_f32`` or ``{name}_f64`` (by the first tensor's dtype) with the tensors'
    data pointers, the int64 ``sizes``, ``scalars`` and a thread count; raises on failure.

    Args:
        library: the library of :func:`pooling_cpu_library`.
        name: the kernel, e.g. 'lip2d_forward'.
        tensors: contiguous CPU tensors in the kernel's order, with the element counts the
            sizes give (checked here); they stay referenced for the call (in the tuple).
        sizes: the kernel's int64 sizes (checked by the kernel itself).
        scalars: the kernel's remaining arguments before the thread count.

    Raises:
        ValueError: the tensors do not match the sizes, or the kernel rejected the sizes
            (the message names the problem); TypeError: a wrong device or dtype;
            RuntimeError: the kernel failed (out of memory).
    """
    _check_call(name, tensors, sizes)
    suffix = 'f32' if tensors[0].dtype == torch.float32 else 'f64'
    threads = max(1, min(torch.get_num_threads(), 4096,
                         tensors[0].numel() // _MIN_ELEMENTS_PER_THREAD))
    status = getattr(library, f'{name}_{suffix}')(
        *(t.data_ptr() for t in tensors), (ctypes.c_int64 * len(sizes))(*sizes), *scalars,
        threads)
    if status in _STATUS:
        raise ValueError(f'CPU kernel {name}: {_STATUS[status]} (sizes {tuple(sizes)})')
    if status != 0:
        raise RuntimeError(f'CPU kernel {name} failed (out of memory?)')
