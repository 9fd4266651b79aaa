"""Checkpoints that would run code if unpickled without the allow-list.

A refusal test plants one of these and then checks that its marker file was never created:
the proof that no code ran, not merely that an error was raised.
"""
import os
import os.path as osp

import torch


class CreatesFile:
    """Unpickles as ``exec("open(marker, 'w').close()")``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f'open({self.marker!r}, "w").close()', )


def save_payload(path, marker, state_dict=None):
    """Write a checkpoint at ``path`` holding weights and a payload that creates ``marker``."""
    os.makedirs(osp.dirname(str(path)), exist_ok=True)
    state_dict = {'w': torch.ones(2)} if state_dict is None else state_dict
    torch.save({'state_dict': state_dict, 'extra': CreatesFile(marker)}, str(path))
    return path


def payload_runs(tmp_path):
    """True when the payload creates its file under an unrestricted load (control check)."""
    marker = tmp_path / 'control_marker'
    path = save_payload(tmp_path / 'control' / 'control.pth', marker)
    torch.load(str(path), weights_only=False)
    ran = marker.exists()
    if ran:
        marker.unlink()
    return ran


def go_offline(monkeypatch, root):
    """Temporary torch hub cache and mmengine home under ``root``, and every proxy variable at
    a closed local port so that a download attempt fails at once. Returns the hub's
    checkpoint folder and the mmengine home."""
    torch_home, mmengine_home = root / 'torch_home', root / 'mmengine_home'
    mmengine_home.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv('TORCH_HOME', str(torch_home))
    monkeypatch.setenv('MMENGINE_HOME', str(mmengine_home))
    for var in ('http_proxy', 'https_proxy', 'HTTP_PROXY', 'HTTPS_PROXY'):
        monkeypatch.setenv(var, 'http://127.0.0.1:9')
    for var in ('no_proxy', 'NO_PROXY'):
        monkeypatch.delenv(var, raising=False)
    return dict(hub=torch_home / 'hub' / 'checkpoints', mmengine=mmengine_home)
