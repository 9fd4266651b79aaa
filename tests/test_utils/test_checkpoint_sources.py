"""Every source mmengine's CheckpointLoader resolves goes through the same allow-listed load.

No network is used: ``TORCH_HOME`` points at a temporary torch hub cache where the files a
download would produce are planted, ``MMENGINE_HOME`` at a temporary mmengine home, and the
proxy variables at a closed local port, so a download attempt fails at once.
"""
import io
import json
import os.path as osp

import pytest
import torch
from checkpoint_payloads import go_offline, payload_runs, save_payload
from mmdet.models.backbones import ResNet
from mmengine.runner.checkpoint import CheckpointLoader, _load_checkpoint
from test_checkpoint import _runner

from lip_mmdet.models.backbones import LIPResNet
from lip_mmdet.utils import CheckpointUnavailableError, UnsafeCheckpointError
from lip_mmdet.utils.checkpoint import (
    SAFE_SCHEMES,
    hub_cache_file,
    install_safe_checkpoint_loading,
    resolve_checkpoint_url,
)

# source -> the name mmengine's tables give the downloaded file (mmengine/hub/*.json)
URL_SOURCES = {
    'https://example.invalid/models/weights-0a1b2c3d.pth': 'weights-0a1b2c3d.pth',
    'http://example.invalid/models/weights-0a1b2c3d.pth': 'weights-0a1b2c3d.pth',
    'torchvision://resnet50': 'resnet50-0676ba61.pth',
    'modelzoo://resnet50': 'resnet50-0676ba61.pth',
    'open-mmlab://detectron/resnet50_caffe': 'resnet50_caffe-788b5fa3.pth',
    'openmmlab://detectron/resnet50_caffe': 'resnet50_caffe-788b5fa3.pth',
    'mmcls://vgg11': 'vgg11_batch256_imagenet_20210208-4271cd6c.pth',
}


@pytest.fixture
def offline_homes(tmp_path, monkeypatch):
    return go_offline(monkeypatch, tmp_path)


def test_payload_creates_its_marker_without_the_allow_list(tmp_path):
    assert payload_runs(tmp_path)


@pytest.mark.parametrize('source', sorted(URL_SOURCES))
def test_every_download_scheme_refuses_a_planted_payload(source, offline_homes, tmp_path):
    cached = offline_homes['hub'] / URL_SOURCES[source]
    marker = tmp_path / 'marker'
    save_payload(cached, marker)
    with pytest.raises(UnsafeCheckpointError, match='weights_only=True') as excinfo:
        _load_checkpoint(source, map_location='cpu')
    assert not marker.exists()
    assert 'exec' in str(excinfo.value)
    assert str(cached) in str(excinfo.value)


@pytest.mark.parametrize('source', sorted(URL_SOURCES))
def test_every_download_scheme_loads_a_clean_cached_file(source, offline_homes):
    cached = offline_homes['hub'] / URL_SOURCES[source]
    cached.parent.mkdir(parents=True, exist_ok=True)
    prefix = 'backbone.' if source.startswith('mmcls://') else ''  # mmcls strips it
    torch.save({'state_dict': {prefix + 'w': torch.arange(3.)}}, cached)
    loaded = _load_checkpoint(source, map_location='cpu')
    assert torch.equal(loaded['state_dict']['w'], torch.arange(3.))


def test_open_mmlab_local_entry_in_mmengine_home_is_refused(offline_homes, tmp_path):
    # open_mmlab.json in MMENGINE_HOME may map a name to a file inside that home
    home = offline_homes['mmengine']
    (home / 'open_mmlab.json').write_text(json.dumps({'planted': 'planted.pth'}))
    marker = tmp_path / 'marker'
    save_payload(home / 'planted.pth', marker)
    with pytest.raises(UnsafeCheckpointError):
        _load_checkpoint('open-mmlab://planted')
    assert not marker.exists()


def test_object_storage_bytes_are_loaded_with_the_allow_list(tmp_path):
    # s3:// and petrel:// hand the downloaded bytes to the same loader
    from lip_mmdet.utils import load_checkpoint_file
    marker = tmp_path / 'marker'
    data = save_payload(tmp_path / 'p.pth', marker).read_bytes()
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint_file(io.BytesIO(data), name='s3://bucket/p.pth')
    assert not marker.exists()


@pytest.mark.parametrize('source', ['s3://bucket/ckpt.pth', 'petrel://bucket/ckpt.pth',
                                    'pavi://model/ckpt.pth'])
def test_storage_schemes_without_their_client_say_what_is_missing(source):
    with pytest.raises(CheckpointUnavailableError, match=source.split(':')[0]):
        _load_checkpoint(source)


def test_every_registered_scheme_is_ours():
    for prefix, loader in CheckpointLoader._schemes.items():
        assert SAFE_SCHEMES.get(prefix) is loader, prefix


def test_scheme_registered_by_another_package_is_refused(tmp_path):
    marker = tmp_path / 'marker'
    path = save_payload(tmp_path / 'p.pth', marker)

    def unpickle_anything(filename, map_location=None):
        return torch.load(filename[len('elsewhere://'):], weights_only=False)

    CheckpointLoader.register_scheme('elsewhere://', loader=unpickle_anything)
    try:
        install_safe_checkpoint_loading()
        with pytest.raises(UnsafeCheckpointError, match='elsewhere://'):
            _load_checkpoint(f'elsewhere://{path}')
    finally:
        del CheckpointLoader._schemes['elsewhere://']
    assert not marker.exists()


def test_scheme_registered_after_import_is_refused(tmp_path):
    marker = tmp_path / 'marker'
    path = save_payload(tmp_path / 'p.pth', marker)

    def unpickle_anything(filename, map_location=None):
        return torch.load(filename.split('://', 1)[1], weights_only=False)

    CheckpointLoader.register_scheme('later://', loader=unpickle_anything)
    try:
        with pytest.raises(UnsafeCheckpointError, match='later://'):
            _load_checkpoint(f'later://{path}')
    finally:
        del CheckpointLoader._schemes['later://']
    assert not marker.exists()


def test_our_scheme_registered_again_by_another_package_stays_ours(offline_homes, tmp_path):
    marker = tmp_path / 'marker'
    save_payload(offline_homes['hub'] / 'weights-0a1b2c3d.pth', marker)
    ours = CheckpointLoader._schemes['https://']

    def unpickle_anything(filename, map_location=None):
        return torch.load(hub_cache_file(filename), weights_only=False)

    CheckpointLoader.register_scheme('https://', loader=unpickle_anything, force=True)
    try:
        with pytest.raises(UnsafeCheckpointError, match='weights-0a1b2c3d.pth'):
            _load_checkpoint('https://example.invalid/models/weights-0a1b2c3d.pth')
    finally:
        CheckpointLoader.register_scheme('https://', loader=ours, force=True)
    assert not marker.exists()


def test_missing_download_says_where_to_put_the_file(offline_homes):
    url = resolve_checkpoint_url('torchvision://resnet50')
    assert url == 'https://download.pytorch.org/models/resnet50-0676ba61.pth'
    with pytest.raises(CheckpointUnavailableError) as excinfo:
        _load_checkpoint('torchvision://resnet50')
    message = str(excinfo.value)
    assert url in message and hub_cache_file(url) in message
    assert osp.join(str(offline_homes['hub']), 'resnet50-0676ba61.pth') == hub_cache_file(url)


def test_unknown_model_zoo_name_is_named(offline_homes):
    with pytest.raises(CheckpointUnavailableError, match='no_such_net'):
        _load_checkpoint('open-mmlab://no_such_net')
    with pytest.raises(CheckpointUnavailableError, match='torchvision'):
        _load_checkpoint('torchvision://no_such_net')


@pytest.mark.parametrize('backbone', [
    lambda init_cfg: ResNet(depth=18, init_cfg=init_cfg),
    lambda init_cfg: LIPResNet(depth=18, init_cfg=init_cfg),
], ids=['mmdet_ResNet', 'LIPResNet'])
def test_init_cfg_pretrained_url_is_refused(backbone, offline_homes, tmp_path):
    marker = tmp_path / 'marker'
    save_payload(offline_homes['hub'] / 'resnet18-f37072fd.pth', marker)
    model = backbone(dict(type='Pretrained', checkpoint='torchvision://resnet18'))
    with pytest.raises(UnsafeCheckpointError):
        model.init_weights()
    assert not marker.exists()


@pytest.mark.parametrize('resume', [False, True], ids=['load_from', 'resume'])
def test_runner_load_from_url_is_refused(resume, offline_homes, tmp_path):
    marker = tmp_path / 'marker'
    url = 'https://example.invalid/work_dirs/epoch_12-0a1b2c3d.pth'
    save_payload(offline_homes['hub'] / 'epoch_12-0a1b2c3d.pth', marker)
    runner = _runner(tmp_path / 'run', max_epochs=1, load_from=url, resume=resume)
    with pytest.raises(UnsafeCheckpointError, match='epoch_12-0a1b2c3d.pth'):
        runner.train()
    assert not marker.exists()
