"""The fused CPU kernels' loader: compiler errors, the private cache, its content hashes, the
ABI check, in-process rebuilds, and libraries planted in a cache it must not trust."""
import hashlib
import json
import os
import stat
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lip_mmdet.ops import lip2d, lip2d_naive, native

# A uid that is not this process's: the owner of the "other user's" files below.
OTHER_UID = 65534 if os.geteuid() != 65534 else 65533
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason='giving a file away needs root')


@pytest.fixture
def fresh_loader(monkeypatch, tmp_path):
    """A loader that has not tried yet, caching into ``tmp_path / 'cache'``."""
    monkeypatch.setattr(native, '_state', {'tried': False, 'library': None})
    monkeypatch.setenv('LIP_MMDET_CACHE', str(tmp_path / 'cache'))
    return tmp_path / 'cache'


def _load_recording_warnings():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        library = native.pooling_cpu_library()
        again = native.pooling_cpu_library()
    assert again is library
    return library, [str(w.message) for w in caught]


def _reload():
    native._state.update(tried=False, library=None)
    return _load_recording_warnings()


def _assert_kernels_work(library):
    assert library is not None and library.lip_mmdet_pooling_abi() == native.ABI_VERSION
    x, logit = torch.randn(1, 2, 5, 5), torch.randn(1, 2, 5, 5)
    torch.testing.assert_close(lip2d(x, logit, backend='cpu_kernel'), lip2d_naive(x, logit))


@pytest.fixture(scope='module')
def built_library(tmp_path_factory):
    """Bytes of the library the default cache holds (what this process loaded)."""
    library = native.pooling_cpu_library()
    if library is None:
        pytest.skip('the fused CPU kernels are unavailable')
    path = tmp_path_factory.mktemp('built') / 'pooling_cpu.so'
    path.write_bytes(Path(library._name).read_bytes())  # /proc/self/fd/<n>: the bytes loaded
    return path


@pytest.fixture
def stand_in_compiler(tmp_path, built_library, monkeypatch):
    """``CXX``: a stand-in compiler (``.path``) that "builds" by copying ``built_library``
    (no seconds of compiling per test) and logs each build; ``.builds()`` counts them."""
    log = tmp_path / 'builds.log'
    script = tmp_path / 'stand-in-c++'
    script.write_text(
        '#!/bin/sh\n'
        'if [ "$1" = "--version" ]; then echo "stand-in c++ 1.0"; exit 0; fi\n'
        'out=; prev=\n'
        'for arg in "$@"; do [ "$prev" = "-o" ] && out="$arg"; prev="$arg"; done\n'
        f'echo build >> "{log}"\n'
        f'exec cp "${{LIP_MMDET_TEST_LIBRARY:-{built_library}}}" "$out"\n')
    script.chmod(0o755)
    monkeypatch.setenv('CXX', str(script))
    return SimpleNamespace(
        path=str(script),
        builds=lambda: len(log.read_text().splitlines()) if log.exists() else 0)


def _cache_files(cache):
    """(record path, library path) of the one key in ``cache / 'ops'``."""
    records = list((cache / 'ops').glob('*.sha256'))
    assert len(records) == 1
    digest, name = records[0].read_text().split()
    return records[0], cache / 'ops' / name, digest


def test_cxx_naming_a_missing_compiler_is_reported_once(fresh_loader, monkeypatch):
    monkeypatch.setenv('CXX', '/nonexistent/c++')
    library, messages = _load_recording_warnings()
    assert library is None
    assert len(messages) == 1 and "CXX='/nonexistent/c++' is not an executable" in messages[0]
    # The ops still work, on their PyTorch-ops path.
    x, logit = torch.randn(1, 2, 5, 5), torch.randn(1, 2, 5, 5)
    torch.testing.assert_close(lip2d(x, logit), lip2d_naive(x, logit))
    with pytest.raises(RuntimeError, match='unavailable'):
        lip2d(x, logit, backend='cpu_kernel')


def test_cache_is_private_hashed_and_reused(fresh_loader, stand_in_compiler):
    library, messages = _load_recording_warnings()
    assert messages == [] and stand_in_compiler.builds() == 1
    _assert_kernels_work(library)
    cache = fresh_loader
    record, path, digest = _cache_files(cache)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert stat.S_IMODE((cache / 'ops').stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert library._name.startswith('/proc/self/fd/')  # the bytes that were hashed
    # A new process (a fresh loader) finds it: nothing is rebuilt.
    again, messages = _reload()
    assert messages == [] and stand_in_compiler.builds() == 1
    _assert_kernels_work(again)


def test_changed_library_is_rebuilt_under_a_new_name(fresh_loader, stand_in_compiler):
    _load_recording_warnings()
    _, path, _ = _cache_files(fresh_loader)
    path.write_bytes(path.read_bytes()[:100])  # cut short (a full disk) or replaced
    library, messages = _reload()
    assert len(messages) == 1 and 'does not match its recorded sha256; rebuilding' in messages[0]
    assert stand_in_compiler.builds() == 2
    _, new_path, digest = _cache_files(fresh_loader)
    assert new_path != path and not path.exists()
    assert hashlib.sha256(new_path.read_bytes()).hexdigest() == digest
    _assert_kernels_work(library)


def test_library_that_does_not_load_is_rebuilt_in_process(fresh_loader, stand_in_compiler):
    _load_recording_warnings()
    record, path, _ = _cache_files(fresh_loader)
    # A truncated file whose record matches it (as a copy cut short before it was hashed
    # leaves it): the hash passes, dlopen fails ("file too short").
    truncated = path.read_bytes()[:100]
    path.write_bytes(truncated)
    record.write_text(f'{hashlib.sha256(truncated).hexdigest()}  {path.name}\n')
    library, messages = _reload()
    assert len(messages) == 1 and 'do not load' in messages[0] and 'rebuilding' in messages[0]
    assert stand_in_compiler.builds() == 2 and _cache_files(fresh_loader)[1] != path
    assert not path.exists()
    _assert_kernels_work(library)


def test_concurrent_builds_keep_each_others_library(fresh_loader, stand_in_compiler):
    """Two processes that found no record both build and install: the second record wins,
    the first library stays (a third process may be reading it)."""
    _load_recording_warnings()
    _, first, _ = _cache_files(fresh_loader)
    ops_fd = native._open_cache()
    try:
        key = first.name.split('.')[0][len('pooling_cpu_'):]
        native._install(ops_fd, key, first.read_bytes(), None)
    finally:
        os.close(ops_fd)
    _, second, _ = _cache_files(fresh_loader)
    assert second != first and first.exists()
    library, messages = _reload()
    assert messages == [] and stand_in_compiler.builds() == 1
    _assert_kernels_work(library)


@pytest.fixture(scope='module')
def stale_library(tmp_path_factory):
    """A library built from the sources with another ABI version (as an older or newer
    lip_mmdet, with another argument layout, leaves in the cache)."""
    folder = tmp_path_factory.mktemp('stale')
    for path in (*native._SOURCES, *native._HEADERS):
        text = path.read_text()
        if path.name == 'checks.h':
            old = f'#define LIP_MMDET_POOLING_ABI {native.ABI_VERSION}'
            assert old in text
            text = text.replace(old, '#define LIP_MMDET_POOLING_ABI 99')
        (folder / path.name).write_text(text)
    output = folder / 'stale.so'
    flags = [f for f in native._flags() if f != '-O3'] + ['-O0']  # seconds, not tens
    subprocess.run([native._compiler(), *flags, *(str(folder / p.name) for p in native._SOURCES),
                    '-o', str(output)], check=True, capture_output=True, timeout=600)
    return output


def test_library_of_another_abi_is_rebuilt_in_process(fresh_loader, stand_in_compiler,
                                                      stale_library):
    _load_recording_warnings()
    record, path, _ = _cache_files(fresh_loader)
    stale = stale_library.read_bytes()
    path.write_bytes(stale)
    record.write_text(f'{hashlib.sha256(stale).hexdigest()}  {path.name}\n')
    library, messages = _reload()
    assert len(messages) == 1 and f'ABI version 99, expected {native.ABI_VERSION}' in messages[0]
    assert 'rebuilding' in messages[0]
    assert stand_in_compiler.builds() == 2 and _cache_files(fresh_loader)[1] != path
    # The stale library was loaded in this process; the rebuilt one is a new object.
    _assert_kernels_work(library)


def test_sources_of_another_abi_are_never_called(fresh_loader, stand_in_compiler,
                                                 stale_library, monkeypatch):
    monkeypatch.setenv('LIP_MMDET_TEST_LIBRARY', str(stale_library))
    library, messages = _load_recording_warnings()
    assert library is None
    assert len(messages) == 1 and 'unavailable' in messages[0]
    assert f'ABI version 99, expected {native.ABI_VERSION}' in messages[0]


def test_untrusted_cache_builds_privately(fresh_loader, stand_in_compiler):
    cache = fresh_loader
    (cache / 'ops').mkdir(parents=True)
    cache.chmod(0o777)  # a shared cache: anyone could have planted a library
    library, messages = _load_recording_warnings()
    assert len(messages) == 1 and 'is writable by others (mode 777)' in messages[0]
    assert 'private directory' in messages[0]
    assert library.lip_mmdet_origin == 'private build'
    assert list((cache / 'ops').iterdir()) == []  # nothing written there
    _assert_kernels_work(library)


# ---------------------------------------------------------------------------------------
# Planted libraries: loading runs a library's constructor, so each case runs in a child
# process and the planted library's constructor would leave a marker file.

PLANTED_SOURCE = r'''
#include <stdio.h>
__attribute__((constructor)) static void planted(void) {
  FILE* marker = fopen(MARKER, "a");
  if (marker) { fputs("planted library loaded\n", marker); fclose(marker); }
}
long lip_mmdet_pooling_abi(void) { return ABI; }
'''

CHILD = r'''
import importlib.util, json, os, sys, warnings
spec = importlib.util.spec_from_file_location('native_under_test', sys.argv[1])
native = importlib.util.module_from_spec(spec)
spec.loader.exec_module(native)  # the loader alone: no package import, no mmdet
results = {}
for case, cache in json.loads(sys.argv[2]).items():
    os.environ['LIP_MMDET_CACHE'] = cache
    native._state.update(tried=False, library=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        library = native.pooling_cpu_library()
    results[case] = dict(warnings=[str(w.message) for w in caught],
                         origin=library and library.lip_mmdet_origin,
                         abi=library and library.lip_mmdet_pooling_abi())
print(json.dumps(results))
'''


@pytest.fixture(scope='module')
def planted_library(tmp_path_factory):
    """A library whose constructor appends to ``marker``, exporting the ABI symbol with the
    expected version (it would pass the ABI check)."""
    folder = tmp_path_factory.mktemp('planted')
    marker = folder / 'marker'
    source = folder / 'planted.c'
    source.write_text(PLANTED_SOURCE)
    output = folder / 'planted.so'
    subprocess.run([native._compiler(), '-x', 'c', '-shared', '-fPIC',
                    f'-DMARKER="{marker}"', f'-DABI={native.ABI_VERSION}', str(source),
                    '-o', str(output)], check=True, capture_output=True, timeout=300)
    return output, marker


def _plant(cache, key, library, *, record_digest=None, name=None):
    """Writes ``library`` into ``cache/ops`` and a record naming it (its own digest unless
    ``record_digest``); returns the library's path."""
    ops = cache / 'ops'
    ops.mkdir(parents=True, exist_ok=True)
    cache.chmod(0o700)
    ops.chmod(0o700)
    data = library.read_bytes()
    path = ops / (name or f'pooling_cpu_{key}.0123456789ab.so')
    path.write_bytes(data)
    path.chmod(0o600)
    digest = record_digest or hashlib.sha256(data).hexdigest()
    (ops / f'pooling_cpu_{key}.sha256').write_text(f'{digest}  {path.name}\n')
    return path


def test_planted_libraries_are_never_loaded(tmp_path, stand_in_compiler, planted_library,
                                            built_library):
    planted, marker = planted_library
    key = native._key(stand_in_compiler.path, native._flags())
    root = tmp_path / 'caches'
    caches, expected = {}, {}

    def case(name, message, origin='private build'):
        caches[name] = str(root / name)
        expected[name] = (message, origin)
        return root / name

    # A shared cache root, or its ops folder, writable by anyone.
    cache = case('shared root', 'is writable by others (mode 777)')
    _plant(cache, key, planted)
    cache.chmod(0o777)
    cache = case('shared ops folder', 'is writable by others (mode 777)')
    _plant(cache, key, planted)
    (cache / 'ops').chmod(0o777)
    # A private cache whose library anyone may overwrite.
    cache = case('library writable by others', 'is writable by others (mode 666)')
    _plant(cache, key, planted).chmod(0o666)
    # The ops folder is a link (to a folder someone else filled).
    cache = case('ops folder is a link', 'cannot be opened as a directory')
    _plant(root / 'elsewhere', key, planted)
    cache.mkdir(mode=0o700)
    (cache / 'ops').symlink_to(root / 'elsewhere' / 'ops')
    # The record is a link.
    cache = case('record is a link', 'cannot be opened as a file')
    _plant(cache, key, planted)
    record = cache / 'ops' / f'pooling_cpu_{key}.sha256'
    record.rename(cache / 'record')
    record.symlink_to(cache / 'record')
    # A library replaced after it was recorded: the hash catches it, the rebuild is cached.
    cache = case('library replaced', 'does not match its recorded sha256', origin='cache')
    _plant(cache, key, planted,
           record_digest=hashlib.sha256(built_library.read_bytes()).hexdigest())
    # A library under the name earlier versions derived from the sources (no record).
    cache = case('name of earlier versions', None, origin='cache')
    _plant(cache, key, planted, name=f'pooling_cpu_{key}.so')
    (cache / 'ops' / f'pooling_cpu_{key}.sha256').unlink()
    if os.geteuid() == 0:  # giving the cache or the library to another user needs root
        for part in ('root', 'ops folder', 'library'):
            cache = case(f'{part} of another user', f'is owned by uid {OTHER_UID}')
            path = _plant(cache, key, planted)
            owned = {'root': cache, 'ops folder': cache / 'ops', 'library': path}[part]
            os.chown(owned, OTHER_UID, -1)

    result = subprocess.run(
        [sys.executable, '-c', CHILD, native.__file__, json.dumps(caches)],
        capture_output=True, text=True, timeout=600, env=os.environ.copy())
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(result.stdout.strip().splitlines()[-1])
    assert not marker.exists(), marker.read_text()
    for name, (message, origin) in expected.items():
        got = results[name]
        assert got['abi'] == native.ABI_VERSION, (name, got)
        assert got['origin'].startswith(origin), (name, got)
        if message is None:
            assert got['warnings'] == [], (name, got)
        else:
            assert len(got['warnings']) == 1 and message in got['warnings'][0], (name, got)
