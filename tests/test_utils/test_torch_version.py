"""The torch versions lip_mmdet declares include only ones its checkpoint loading works with."""
import configparser
import re
from pathlib import Path

import pytest
import torch
from mmengine.utils import digit_version

from lip_mmdet.utils.checkpoint import MIN_TORCH, check_torch_version

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize('version', ['2.0.1', '2.4.1', '2.5.1+cu121'])
def test_older_torch_is_refused_with_the_reason(version):
    with pytest.raises(ImportError, match=rf'needs torch >= 2\.6\.0, found {re.escape(version)}'):
        check_torch_version(version)


@pytest.mark.parametrize('version', ['2.6.0', '2.11.0+cu130', '2.13.0+cpu'])
def test_supported_torch_passes(version):
    check_torch_version(version)


def test_setup_cfg_declares_no_torch_the_loader_refuses():
    """setup.cfg may ask for more (what the whole package needs), never for less."""
    config = configparser.ConfigParser()
    config.read(REPO / 'setup.cfg')
    requirements = config['options']['install_requires'].split()
    declared = next(r for r in requirements if r.startswith('torch>='))[len('torch>='):]
    assert digit_version(declared) >= digit_version(MIN_TORCH)
    assert digit_version(torch.__version__) >= digit_version(declared)
