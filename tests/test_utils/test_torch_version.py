"""The torch versions the checkpoint loading refuses, with its reason."""
import re

import pytest

from lip_mmdet.utils.checkpoint import check_torch_version


@pytest.mark.parametrize('version', ['2.0.1', '2.4.1', '2.5.1+cu121'])
def test_older_torch_is_refused_with_the_reason(version):
    with pytest.raises(ImportError, match=rf'needs torch >= 2\.6\.0, found {re.escape(version)}'):
        check_torch_version(version)


@pytest.mark.parametrize('version', ['2.6.0', '2.11.0+cu130', '2.13.0+cpu'])
def test_supported_torch_passes(version):
    check_torch_version(version)

