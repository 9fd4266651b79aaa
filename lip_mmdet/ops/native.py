"""Builds and loads the fused CPU kernels of ``csrc/`` (lip2d and dpp2d; plain C ABI, ctypes).

The library has no torch headers, so it compiles in a few seconds with the system C++
compiler the first time it is needed, into a cache keyed by the sources, the flags and the
compiler. When there is no compiler or the build fails, :func:`pooling_cpu_library` returns
None (with one warning) and the ops use their pure-PyTorch paths, which give the same results.

The ops call these kernels only inside their custom-op implementations
(:mod:`lip_mmdet.ops.lip`, :mod:`lip_mmdet.ops.dpp`), so the loader's lock, the ctypes call
and the thread count never reach ``torch.compile`` or ``torch.export``.

How the cache is trusted. Loading a shared library runs its constructors, so a library is
loaded only if it is known to be the one this process (or an earlier one of this user)
built:

* The cache directory (the root and its ``ops`` folder) is created private (0700). It is
  used only if both are directories owned by the effective user and writable by no one else,
  checked on the opened directories (``fstat``), and every file is then opened relative to
  the opened ``ops`` folder without following links: renaming or replacing a path component
  after the check changes nothing. Otherwise (a shared ``LIP_MMDET_CACHE``, a cache made by
  another user): one warning, and the library is built in a private temporary directory for
  this process and not cached.
* The compiler writes into a private temporary directory; the loader hashes the bytes it
  built, installs them in the cache under a new file name
  (``pooling_cpu_<key>.<random>.so``, mode 0600, by atomic rename) and then records
  ``<sha256>  <file name>`` in ``pooling_cpu_<key>.sha256`` (the sha256sum format, also by
  atomic rename). ``<key>`` hashes the sources, the flags and the compiler. A rebuild removes
  only the library it replaces (one that failed its check or its load): of two processes
  building at once, the second record wins and the first library stays for its readers. A
  cache that cannot be written (a full disk): one warning, the kernels still load.
* A later process reads the record and the library through file descriptors, checks that
  both are regular files owned by the user and writable by no one else (else: one warning,
  private build), hashes the library's bytes and compares the hash with the record (a
  mismatch: one warning, rebuild). It then loads exactly the bytes it hashed, copied into an
  anonymous in-memory file (``memfd_create``) that ``dlopen`` opens as
  ``/proc/self/fd/<n>``; so nothing can change the file between the check and the load.
* The library exports ``lip_mmdet_pooling_abi()``; a library whose version differs from
  :data:`ABI_VERSION` (built from other sources, with another argument layout) is never
  called. A cached library that does not load, lacks a symbol or has another ABI version is
  rebuilt under a new file name (one warning); as each load is a new in-memory file, the
  process's ``dlopen`` never serves the old one again, so the recovery works in-process.

Every entry point takes its sizes as one :class:`KernelGeometry` (a named field per size),
validates them (checked 64-bit arithmetic, the window relations its indexing relies on) and
returns a status code; :func:`run_kernel` also checks each tensor's device, dtype, layout and
element count against the geometry, and turns a nonzero status into a ``ValueError`` that
names the problem.

Environment:
    LIP_MMDET_NATIVE=0    never build or load the library (pure-PyTorch path only).
    LIP_MMDET_CACHE=DIR   cache root (default ``$XDG_CACHE_HOME/lip_mmdet``, else
                          ``~/.cache/lip_mmdet``); the library goes in ``DIR/ops``.
    LIP_MMDET_SANITIZE=1  build with AddressSanitizer and UndefinedBehaviorSanitizer (its own
                          cache key); the process must run with the ASan runtime preloaded,
                          see :func:`sanitizer_environment`.
    CXX                   compiler to use (default ``c++``, then ``g++``). When set, it must
                          name an executable: otherwise the kernels are not built (one
                          warning says so) rather than built by another compiler.
"""
import ctypes
import hashlib
import os
import re
import secrets
import shutil
import stat
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

__all__ = ['pooling_cpu_library', 'native_enabled', 'run_kernel', 'sanitizer_environment',
           'ABI_VERSION', 'KernelGeometry']

#: The version ``lip_mmdet_pooling_abi()`` must return (``LIP_MMDET_POOLING_ABI`` in
#: ``csrc/checks.h``): the entry points' argument layout and status codes.
ABI_VERSION = 3

_MIN_ELEMENTS_PER_THREAD = 1 << 15

_CSRC = Path(__file__).with_name('csrc')
_SOURCES = (_CSRC / 'lip2d_cpu.cpp', _CSRC / 'dpp2d_cpu.cpp', _CSRC / 'abi.cpp')
_HEADERS = (_CSRC / 'checks.h', _CSRC / 'vec_math.h', _CSRC / 'parallel.h')
_lock = threading.Lock()
_state = {'tried': False, 'library': None}
# In-memory files of the loaded libraries: kept open for the life of the process, so that no
# later load gets the same /proc/self/fd/<n> name, which dlopen would answer from its cache.
_loaded_files = []

_SANITIZER_FLAGS = ('-fsanitize=address,undefined', '-fno-sanitize-recover=all',
                    '-fno-omit-frame-pointer', '-g')

# Status codes of the entry points (lip_mmdet::Status in csrc/checks.h).
_STATUS = {
    2: 'a size is not positive (or the plane count is negative or not a multiple of the '
       'channel count)',
    3: 'invalid window: kernel and stride must be positive and each padding in [0, kernel) '
       '(the filter guide: a 3x3 window)',
    4: 'the output size is not the one the input size, kernel, stride and padding give',
    5: 'a size, index or byte count overflows 64-bit arithmetic',
    6: 'the thread count is outside [1, 4096]',
    7: 'shift_range must lie in [0, 80]',
    8: 'a tensor pointer is null',
}


def native_enabled() -> bool:
    """Whether the environment allows the compiled kernels (``LIP_MMDET_NATIVE`` != '0')."""
    return os.environ.get('LIP_MMDET_NATIVE', '1') != '0'


def _sanitized() -> bool:
    return os.environ.get('LIP_MMDET_SANITIZE', '0') == '1'


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
    # Floating-point contraction (FMA) stays on: the max-shift of dpp2d is written so that
    # no contraction can change it (see csrc/dpp2d_cpu.cpp).
    flags = ['-O3', '-std=c++17', '-shared', '-fPIC', '-pthread', '-fno-trapping-math',
             '-fno-math-errno']
    if torch.backends.cpu.get_cpu_capability() in ('AVX2', 'AVX512'):
        flags += ['-mavx2', '-mfma']
    if _sanitized():
        flags += _SANITIZER_FLAGS
    return flags


def _compiler_environment() -> Dict[str, str]:
    # The compiler is no sanitized program: it does not get the ASan runtime preloaded.
    env = dict(os.environ)
    env.pop('LD_PRELOAD', None)
    return env


def _key(compiler: str, flags) -> str:
    """Hash of everything the library's bytes depend on: sources, flags, compiler."""
    version = subprocess.run([compiler, '--version'], capture_output=True, text=True,
                             timeout=60, env=_compiler_environment()).stdout
    digest = hashlib.sha256()
    for path in (*_SOURCES, *_HEADERS):
        digest.update(path.name.encode() + b'\0' + path.read_bytes() + b'\0')
    digest.update(' '.join(flags).encode() + b'\0' + compiler.encode() + b'\0' +
                  version.encode())
    return digest.hexdigest()[:16]


def _compile(compiler: str, flags) -> bytes:
    """The library's bytes, compiled in a private temporary directory."""
    with tempfile.TemporaryDirectory(prefix='lip_mmdet_build_') as build_dir:
        output = os.path.join(build_dir, 'pooling_cpu.so')
        result = subprocess.run([compiler, *flags, *map(str, _SOURCES), '-o', output],
                                capture_output=True, text=True, timeout=300,
                                env=_compiler_environment())
        if result.returncode != 0:
            raise RuntimeError(f'{compiler} failed:\n{result.stderr[-2000:]}')
        with open(output, 'rb') as built:
            return built.read()


# ---------------------------------------------------------------------------------------
# The cache and its trust checks


class _Untrusted(Exception):
    """A cache directory or file that another user could have written."""


class _Mismatch(Exception):
    """A cached library whose bytes are not the ones its record names (``name``: its file
    name, None if the record is unreadable)."""

    def __init__(self, message: str, name: Optional[str] = None):
        super().__init__(message)
        self.name = name


def _cache_root() -> Path:
    return Path(os.environ.get('LIP_MMDET_CACHE') or os.path.join(
        os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache'), 'lip_mmdet'))


def _check_private(info: os.stat_result, what: str, kind) -> None:
    """Raises _Untrusted unless ``info`` is a ``kind`` (stat.S_ISDIR / S_ISREG) owned by the
    effective user and writable by no one else."""
    if not kind(info.st_mode):
        raise _Untrusted(f'{what} is not a {"directory" if kind is stat.S_ISDIR else "file"}')
    if info.st_uid != os.geteuid():
        raise _Untrusted(f'{what} is owned by uid {info.st_uid}, not by this user '
                         f'(uid {os.geteuid()})')
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise _Untrusted(f'{what} is writable by others (mode {stat.S_IMODE(info.st_mode):o})')


def _open_cache() -> int:
    """File descriptor of the private ``ops`` folder of the cache (created 0700); raises
    _Untrusted if the cache root or the folder is not private to this user."""
    root = _cache_root()
    os.makedirs(root, mode=0o700, exist_ok=True)
    # The root may be reached through links (a linked ~/.cache); what is checked is the
    # directory actually opened.
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _check_private(os.fstat(root_fd), f'cache directory {root}', stat.S_ISDIR)
        try:
            os.mkdir('ops', mode=0o700, dir_fd=root_fd)
        except FileExistsError:
            pass
        try:
            ops_fd = os.open('ops', os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                             dir_fd=root_fd)
        except OSError as error:  # a link or a file in its place
            raise _Untrusted(f'cache directory {root / "ops"} cannot be opened as a '
                             f'directory ({error})') from error
        try:
            _check_private(os.fstat(ops_fd), f'cache directory {root / "ops"}', stat.S_ISDIR)
        except BaseException:
            os.close(ops_fd)
            raise
        return ops_fd
    finally:
        os.close(root_fd)


def _read_private(dir_fd: int, name: str, what: str) -> Optional[bytes]:
    """Bytes of regular file ``name`` in ``dir_fd`` (not following links), None if absent;
    raises _Untrusted if it is not private to this user."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                     dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as error:  # ELOOP: a link
        raise _Untrusted(f'{what} cannot be opened as a file ({error})') from error
    with os.fdopen(fd, 'rb') as file:
        _check_private(os.fstat(file.fileno()), what, stat.S_ISREG)
        return file.read()


def _record_name(key: str) -> str:
    return f'pooling_cpu_{key}.sha256'


def _read_cached(ops_fd: int, key: str, folder: Path) -> Optional[Tuple[bytes, str]]:
    """The cached library's bytes after the checks, and its file name (None when nothing is
    cached); raises _Untrusted or _Mismatch."""
    record = _read_private(ops_fd, _record_name(key), f'cache record {folder / _record_name(key)}')
    if record is None:
        return None
    match = re.fullmatch(rf'([0-9a-f]{{64}})  (pooling_cpu_{key}\.[0-9a-f]+\.so)\n',
                         record.decode('ascii', 'replace'))
    if match is None:
        raise _Mismatch(f'cache record {folder / _record_name(key)} is malformed')
    digest, name = match.groups()
    data = _read_private(ops_fd, name, f'cached library {folder / name}')
    if data is None:
        raise _Mismatch(f'cached library {folder / name} is missing')
    if hashlib.sha256(data).hexdigest() != digest:
        raise _Mismatch(f'cached library {folder / name} does not match its recorded sha256',
                        name)
    return data, name


def _write_private(dir_fd: int, name: str, data: bytes) -> None:
    """Writes ``name`` in ``dir_fd`` atomically (a private temporary name, then a rename), so
    that concurrent processes never read a partial file."""
    tmp = f'.{name}.{secrets.token_hex(6)}.tmp'
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, 'wb') as file:
            file.write(data)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        raise


def _install(ops_fd: int, key: str, data: bytes, replaces: Optional[str]) -> None:
    """Caches ``data`` under a new file name and records its sha256, then removes
    ``replaces``, the file name of a cached library that failed its check or its load.

    Only that one: a process building at the same time as another (both found no record)
    leaves the other's library in place, as a third process may be reading it.
    """
    name = f'pooling_cpu_{key}.{secrets.token_hex(6)}.so'
    _write_private(ops_fd, name, data)
    digest = hashlib.sha256(data).hexdigest()
    _write_private(ops_fd, _record_name(key), f'{digest}  {name}\n'.encode('ascii'))
    if replaces:
        try:
            os.unlink(replaces, dir_fd=ops_fd)
        except OSError:
            pass


# ---------------------------------------------------------------------------------------
# Loading


class _Stale(Exception):
    """A library built for another argument layout."""


def _asan_runtime_loaded() -> bool:
    with open('/proc/self/maps') as maps:
        return any('libasan' in line for line in maps)


def _dlopen_bytes(data: bytes) -> ctypes.CDLL:
    """Loads the library whose bytes are ``data`` (exactly these bytes, see the module
    docstring)."""
    if _sanitized() and not _asan_runtime_loaded():
        # Loading it would make the ASan runtime end the process.
        raise RuntimeError('LIP_MMDET_SANITIZE=1 needs the ASan runtime preloaded (run with '
                           'lip_mmdet.ops.native.sanitizer_environment())')
    if hasattr(os, 'memfd_create'):
        fd = os.memfd_create('lip_mmdet_pooling_cpu.so', os.MFD_CLOEXEC)
        _loaded_files.append(fd)  # before the write: never closed, so never reused
        with open(fd, 'wb', closefd=False) as file:
            file.write(data)
        return ctypes.CDLL(f'/proc/self/fd/{fd}')
    # Without memfd: a new file in a private directory, its name never used again.
    folder = tempfile.mkdtemp(prefix='lip_mmdet_load_')
    path = os.path.join(folder, 'pooling_cpu.so')
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, 'wb') as file:
        file.write(data)
    _loaded_files.append(path)
    return ctypes.CDLL(path)


class KernelGeometry(ctypes.Structure):
    """The sizes of one CPU kernel call, by name (``PoolGeometry`` in ``csrc/checks.h``).

    ``planes`` = N * C planes of ``height`` x ``width`` pooled to ``out_height`` x
    ``out_width`` by a ``kh`` x ``kw`` window at stride (``sh``, ``sw``) with padding
    ``pad_top``, ``pad_bottom``, ``pad_left``, ``pad_right``. The filter guide's window is
    its 3x3 filter and its offsets are ``pad_top``, ``pad_left``.
    """
    _fields_ = [(name, ctypes.c_int64) for name in (
        'planes', 'channels', 'height', 'width', 'out_height', 'out_width', 'kh', 'kw', 'sh',
        'sw', 'pad_top', 'pad_bottom', 'pad_left', 'pad_right')]

    @classmethod
    def of(cls, x_shape, out_size, kernel, stride, pads) -> 'KernelGeometry':
        """The geometry of pooling an (N, C, H, W) map to ``out_size`` (Ho, Wo) with the
        window (kh, kw), stride (sh, sw) and pads (top, bottom, left, right).

        Raises ValueError for a value that is not an int in the int64 range (ctypes would
        wrap it silently).
        """
        n, channels, height, width = x_shape
        values = (n * channels, channels, height, width, *out_size, *kernel, *stride, *pads)
        if len(values) != len(cls._fields_) or not all(
                type(v) is int and -(1 << 63) <= v < (1 << 63) for v in values):
            raise ValueError(f'CPU kernel geometry takes {len(cls._fields_)} int64 values, got '
                             f'{values!r}')
        return cls(*values)

    def __repr__(self) -> str:
        return 'KernelGeometry(' + ', '.join(f'{name}={getattr(self, name)}'
                                             for name, _ in self._fields_) + ')'


def _bind(data: bytes, origin: str) -> ctypes.CDLL:
    """Loads ``data``, checks its ABI version and declares the kernels' signatures."""
    library = _dlopen_bytes(data)
    library.lip_mmdet_origin = origin
    abi = library.lip_mmdet_pooling_abi  # AttributeError for a library older than the check
    abi.argtypes, abi.restype = [], ctypes.c_int64
    if abi() != ABI_VERSION:
        raise _Stale(f'ABI version {abi()}, expected {ABI_VERSION}')
    pointer, geometry, c_int = ctypes.c_void_p, ctypes.POINTER(KernelGeometry), ctypes.c_int
    signatures = {
        'lip2d_forward': [pointer] * 3 + [geometry, ctypes.c_double, c_int],
        'lip2d_backward': [pointer] * 5 + [geometry, ctypes.c_double, c_int],
        'dpp2d_forward': [pointer] * 5 + [geometry, c_int, c_int],
        'dpp2d_backward': [pointer] * 9 + [geometry, c_int, c_int],
        'dpp_filter_guide_forward': [pointer] * 4 + [geometry, c_int],
        'dpp_filter_guide_backward': [pointer] * 6 + [geometry, c_int],
    }
    for name, argtypes in signatures.items():
        for suffix in ('f32', 'f64'):
            function = getattr(library, f'{name}_{suffix}')
            function.argtypes = argtypes
            function.restype = c_int
    return library


def _load_or_build() -> ctypes.CDLL:
    compiler = _compiler()
    flags = _flags()
    key = _key(compiler, flags)
    folder = _cache_root() / 'ops'
    try:
        ops_fd = _open_cache()
    except _Untrusted as error:
        warnings.warn(f'lip_mmdet: not using the kernel cache: {error}; building the CPU '
                      'pooling kernels in a private directory for this process', stacklevel=4)
        return _bind(_compile(compiler, flags), 'private build')
    replaces = None
    try:
        try:
            cached = _read_cached(ops_fd, key, folder)
        except _Untrusted as error:
            warnings.warn(f'lip_mmdet: not using the kernel cache: {error}; building the CPU '
                          'pooling kernels in a private directory for this process',
                          stacklevel=4)
            return _bind(_compile(compiler, flags), 'private build')
        except _Mismatch as error:
            warnings.warn(f'lip_mmdet: {error}; rebuilding the CPU pooling kernels',
                          stacklevel=4)
            cached, replaces = None, error.name
        if cached is not None:
            try:
                return _bind(cached[0], f'cache {folder}')
            except (OSError, AttributeError, _Stale) as error:
                # A cached file that does not load (truncated, built from other sources) is
                # rebuilt under a new name rather than making every later process fall back.
                warnings.warn(f'lip_mmdet: cached CPU pooling kernels in {folder} do not load '
                              f'({error}); rebuilding them', stacklevel=4)
                replaces = cached[1]
        data = _compile(compiler, flags)
        try:
            _install(ops_fd, key, data, replaces)
        except OSError as error:  # a full disk: the kernels still work, uncached
            warnings.warn(f'lip_mmdet: could not cache the CPU pooling kernels in {folder} '
                          f'({error})', stacklevel=4)
            return _bind(data, 'private build')
        return _bind(data, f'cache {folder}')
    finally:
        os.close(ops_fd)


def pooling_cpu_library() -> Optional[ctypes.CDLL]:
    """The compiled lip2d/dpp2d CPU kernels, built on first use; None if unavailable."""
    if not native_enabled():
        return None
    with _lock:
        if not _state['tried']:
            _state['tried'] = True
            try:
                _state['library'] = _load_or_build()
            except Exception as error:  # any build/load failure means: use the torch path
                warnings.warn(f'lip_mmdet: fused CPU pooling kernels unavailable, using the '
                              f'pure-PyTorch path ({error})', stacklevel=2)
        return _state['library']


def sanitizer_environment(env: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Environment for a Python process that runs the kernels built with AddressSanitizer and
    UndefinedBehaviorSanitizer (``LIP_MMDET_SANITIZE=1``).

    ``LD_PRELOAD`` gets the compiler's ASan runtime, which must come before every other
    library, and its C++ runtime: ASan intercepts C++ exceptions and has to find the real
    ``__cxa_throw`` when it starts, before the Python extensions written in C++ load it (a
    throw would otherwise stop the process). No leak report (CPython keeps objects alive at
    exit by design); any report ends the process with a nonzero status.

    Args:
        env: the environment to extend (default: ``os.environ``).

    Returns:
        A new dict; raises RuntimeError if the compiler has no ASan runtime.
    """
    env = dict(os.environ if env is None else env)
    compiler = _compiler()
    runtimes = []
    for name in ('libasan.so', 'libstdc++.so'):
        path = subprocess.run([compiler, f'-print-file-name={name}'], capture_output=True,
                              text=True, timeout=60, env=_compiler_environment()).stdout.strip()
        if not os.path.isabs(path) or not os.path.exists(path):
            raise RuntimeError(f'the compiler {compiler} has no {name} ({path!r})')
        runtimes.append(os.path.realpath(path))
    preload = ' '.join([*runtimes, env.get('LD_PRELOAD', '')]).strip()
    env.update(LIP_MMDET_SANITIZE='1', LD_PRELOAD=preload,
               ASAN_OPTIONS='detect_leaks=0:halt_on_error=1',
               UBSAN_OPTIONS='print_stacktrace=1:halt_on_error=1')
    return env


# ---------------------------------------------------------------------------------------
# Calling


# Per kernel, each tensor's element count from (input, output, channels, planes) elements;
# 'f64' marks the float64 per-plane accumulators.
_KERNELS = {
    'lip2d_forward': lambda i, o, c, p: (i, i, o),
    'lip2d_backward': lambda i, o, c, p: (i, i, o, i, i),
    'dpp2d_forward': lambda i, o, c, p: (i, o, c, c, o),
    'dpp2d_backward': lambda i, o, c, p: (i, o, c, c, o, i, o, ('f64', p), ('f64', p)),
    'dpp_filter_guide_forward': lambda i, o, c, p: (i, 9 * c, c, o),
    'dpp_filter_guide_backward': lambda i, o, c, p: (i, 9 * c, o, i, ('f64', 9 * p),
                                                     ('f64', p)),
}


def _check_call(name: str, tensors, geometry: KernelGeometry) -> None:
    """Raises ValueError/TypeError unless ``tensors`` are what kernel ``name`` reads and
    writes for ``geometry``: the C side can check the geometry, not the buffers."""
    if name not in _KERNELS:
        raise ValueError(f'unknown CPU kernel {name!r}')
    if not isinstance(geometry, KernelGeometry):
        raise TypeError(f'CPU kernel {name} takes a KernelGeometry, got '
                        f'{type(geometry).__name__}')
    g = geometry
    expected = _KERNELS[name](g.planes * g.height * g.width, g.planes * g.out_height *
                              g.out_width, g.channels, g.planes)
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
                             f'elements, the geometry gives {count} ({geometry!r})')


def run_kernel(library: ctypes.CDLL, name: str, tensors, geometry: KernelGeometry,
               *scalars) -> None:
    """Calls ``{name}_f32`` or ``{name}_f64`` (by the first tensor's dtype) with the tensors'
    data pointers, the ``geometry``, ``scalars`` and a thread count; raises on failure.

    Args:
        library: the library of :func:`pooling_cpu_library`.
        name: the kernel, e.g. 'lip2d_forward'.
        tensors: contiguous CPU tensors in the kernel's order, with the element counts the
            geometry gives (checked here); they stay referenced for the call (in the tuple).
        geometry: the call's sizes (checked by the kernel itself).
        scalars: the kernel's remaining arguments before the thread count.

    Raises:
        ValueError: the tensors do not match the geometry, or the kernel rejected it (the
            message names the problem); TypeError: a wrong device or dtype;
            RuntimeError: the kernel failed (out of memory).
    """
    _check_call(name, tensors, geometry)
    suffix = 'f32' if tensors[0].dtype == torch.float32 else 'f64'
    threads = max(1, min(torch.get_num_threads(), 4096,
                         tensors[0].numel() // _MIN_ELEMENTS_PER_THREAD))
    status = getattr(library, f'{name}_{suffix}')(
        *(t.data_ptr() for t in tensors), ctypes.byref(geometry), *scalars, threads)
    if status in _STATUS:
        raise ValueError(f'CPU kernel {name}: {_STATUS[status]} ({geometry!r})')
    if status != 0:
        raise RuntimeError(f'CPU kernel {name} failed (out of memory?)')
