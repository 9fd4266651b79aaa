"""The versions setup.cfg declares, the ones tools/setup_env.sh installs, and the environment
the tests run in agree."""
import configparser
import re
from importlib import metadata

import pytest
import torch
from mmengine.utils import digit_version
from packaging.requirements import Requirement

from lip_mmdet.utils.checkpoint import MIN_TORCH

from tiny_run import REPO, TOOLS


def _requirements():
    config = configparser.ConfigParser()
    config.read(REPO / 'setup.cfg')
    return [Requirement(line) for line in config['options']['install_requires'].splitlines()
            if line.strip()]


def _setup_pins():
    script = (TOOLS / 'setup_env.sh').read_text()
    pins = dict(re.findall(r'"(mmengine|mmdet)==([\d.]+)"', script))
    pins['torch'] = re.search(r'TORCH_VERSION:-([\d.]+)}', script).group(1)
    pins['mmcv'] = re.search(r'^MMCV_VERSION=([\d.]+)$', script, re.MULTILINE).group(1)
    return pins


def test_every_bound_has_a_reason_next_to_it():
    lines = (REPO / 'setup.cfg').read_text().split('install_requires =')[1].splitlines()
    bounded = [i for i, line in enumerate(lines)
               if re.match(r'\s+(torch|mmcv|mmengine|mmdet|numpy)\b', line)]
    assert len(bounded) == 5
    assert all(lines[i - 1].strip().startswith('#') for i in bounded)


@pytest.mark.parametrize('name', ['torch', 'mmcv', 'mmengine', 'mmdet'])
def test_the_set_up_installs_a_version_inside_the_declared_range(name):
    requirement = next(r for r in _requirements() if r.name == name)
    assert requirement.specifier.contains(_setup_pins()[name]), (requirement, _setup_pins())


def test_setup_cfg_declares_no_torch_the_loader_refuses():
    """setup.cfg may ask for more (what the whole package needs), never for less."""
    torch_bound = next(r for r in _requirements() if r.name == 'torch')
    declared = next(spec.version for spec in torch_bound.specifier if spec.operator == '>=')
    assert digit_version(declared) >= digit_version(MIN_TORCH)
    assert digit_version(torch.__version__) >= digit_version(declared)


def test_the_installed_stack_satisfies_every_requirement():
    for requirement in _requirements():
        installed = metadata.version(requirement.name)
        assert requirement.specifier.contains(installed, prereleases=True), (
            f'{requirement.name} {installed} is outside {requirement}')
