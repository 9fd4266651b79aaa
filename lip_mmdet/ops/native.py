"""Builds and loads the fused CPU kernels of ``csrc/`` (plain C ABI, loaded with ctypes).

The library has no torch headers, so it compiles in a few seconds with the system C++
compiler the first time it is needed, into a cache keyed by the source, the flags and the
compiler. When there is no compiler or the build fails, :func:`lip2d_cpu_library` returns
None (with one warning) and the ops use their pure-PyTorch path, which gives the same results.

Environment:
    LIP_MMDET_NATIVE=0   never build or load the library (pure-PyTorch path only).
    LIP_MMDET_CACHE=DIR  cache root (default ``~/.cache/lip_mmdet``); the library goes in
                         ``DIR/ops``.
    CXX                  compiler to use (default ``c++``, then ``g++``).
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

__all__ = ['lip2d_cpu_library', 'native_enabled']

_SOURCE = Path(__file__).with_name('csrc') / 'lip2d_cpu.cpp'
_lock = threading.Lock()
_state = {'tried': False, 'library': None}


def native_enabled() -> bool:
    """Whether the environment allows the compiled kernels (``LIP_MMDET_NATIVE`` != '0')."""
    return os.environ.get('LIP_MMDET_NATIVE', '1') != '0'


def _compiler() -> Optional[str]:
    for candidate in (os.environ.get('CXX'), 'c++', 'g++'):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


def _flags():
    # -fno-trapping-math lets the compiler vectorise the selects in the exp polynomial; it
    # changes no result. No -ffast-math: it would alter rounding and, linked, the FPU state.
    flags = ['-O3', '-std=c++17', '-shared', '-fPIC', '-pthread', '-fno-trapping-math',
             '-fno-math-errno']
    if torch.backends.cpu.get_cpu_capability() in ('AVX2', 'AVX512'):
        flags += ['-mavx2', '-mfma']
    return flags


def _build(compiler: str) -> Path:
    flags = _flags()
    version = subprocess.run([compiler, '--version'], capture_output=True, text=True,
                             timeout=60).stdout
    key = hashlib.sha256(_SOURCE.read_bytes() + ' '.join(flags).encode()
                         + version.encode()).hexdigest()[:16]
    root = os.environ.get('LIP_MMDET_CACHE') or os.path.join(
        os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache'), 'lip_mmdet')
    target = Path(root) / 'ops' / f'lip2d_cpu_{key}.so'
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build to a private name, then rename: concurrent processes never load a partial file.
    fd, tmp = tempfile.mkstemp(suffix='.so', dir=target.parent)
    os.close(fd)
    try:
        result = subprocess.run([compiler, *flags, str(_SOURCE), '-o', tmp],
                                capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise RuntimeError(f'{compiler} failed:\n{result.stderr[-2000:]}')
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _bind(path: Path) -> ctypes.CDLL:
    library = ctypes.CDLL(str(path))
    pointer, sizes = ctypes.c_void_p, ctypes.POINTER(ctypes.c_int64)
    for suffix in ('f32', 'f64'):
        forward = getattr(library, f'lip2d_forward_{suffix}')
        forward.argtypes = [pointer, pointer, pointer, sizes, ctypes.c_double, ctypes.c_int]
        forward.restype = ctypes.c_int
        backward = getattr(library, f'lip2d_backward_{suffix}')
        backward.argtypes = [pointer, pointer, pointer, pointer, pointer, sizes,
                             ctypes.c_double, ctypes.c_int]
        backward.restype = ctypes.c_int
    return library


def lip2d_cpu_library() -> Optional[ctypes.CDLL]:
    """The compiled lip2d CPU kernels, building them on first use; None if unavailable."""
    if not native_enabled():
        return None
    with _lock:
        if not _state['tried']:
            _state['tried'] = True
            compiler = _compiler()
            try:
                if compiler is None:
                    raise RuntimeError('no C++ compiler found (set CXX)')
                _state['library'] = _bind(_build(compiler))
            except Exception as error:  # any build/load failure means: use the torch path
                warnings.warn(f'lip_mmdet: fused CPU lip2d kernel unavailable, using the '
                              f'pure-PyTorch path ({error})')
        return _state['library']
