"""The fused CPU kernels' loader: a missing CXX is reported, a corrupt cached library rebuilt."""
import warnings

import pytest
import torch

from lip_mmdet.ops import lip2d, lip2d_naive, native


@pytest.fixture
def fresh_loader(monkeypatch, tmp_path):
    """A loader that has not tried yet, caching into ``tmp_path``."""
    monkeypatch.setattr(native, '_state', {'tried': False, 'library': None})
    monkeypatch.setenv('LIP_MMDET_CACHE', str(tmp_path))
    return tmp_path


def _load_recording_warnings():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        library = native.pooling_cpu_library()
        again = native.pooling_cpu_library()
    assert again is library
    return library, [str(w.message) for w in caught]


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


def test_truncated_cached_library_is_rebuilt(monkeypatch, tmp_path):
    built = native._build(native._compiler())  # in the default cache (built if missing)
    monkeypatch.setattr(native, '_state', {'tried': False, 'library': None})
    monkeypatch.setenv('LIP_MMDET_CACHE', str(tmp_path))
    # The same library under its own name in the test cache, cut short (as a full disk or a
    # killed copy leaves it): loading it fails with "file too short".
    cached = tmp_path / 'ops' / built.name
    cached.parent.mkdir(parents=True)
    cached.write_bytes(built.read_bytes()[:100])
    library, messages = _load_recording_warnings()
    assert library is not None and native.Path(library._name) == cached
    assert len(messages) == 1 and 'rebuilding' in messages[0]
    assert cached.stat().st_size > 100
    x, logit = torch.randn(1, 2, 5, 5), torch.randn(1, 2, 5, 5)
    torch.testing.assert_close(lip2d(x, logit, backend='cpu_kernel'), lip2d_naive(x, logit))
