"""Importance maps of LIP / DPP backbones on real images of the generated dataset."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.registry import init_default_scope
from PIL import Image

from lip_mmdet.models.layers import pooling_layers
from lip_mmdet.visualization import (
    RANDOM_INIT,
    compute_pooling_maps,
    find_gt_boxes,
    load_pooling_model,
    show_pooling,
)

REPO = Path(__file__).resolve().parents[2]
LIP_DEMO = REPO / 'configs' / 'demo' / 'faster_rcnn_lip_r18_demo.py'
LIP_NAMES = ['maxpool.lip', 'layer2.0.pool.lip', 'layer3.0.pool.lip', 'layer4.0.pool.lip']


@pytest.fixture(scope='module')
def demo_on_tiny(tiny_coco, tmp_path_factory):
    """The LIP demo config reading the tiny dataset's val split (images of 128 px)."""
    root = tmp_path_factory.mktemp('maps')
    config = root / 'lip_demo_tiny.py'
    val = dict(dataset=dict(data_root=tiny_coco['data_root'], ann_file=tiny_coco['val_ann'],
                            data_prefix=dict(img=tiny_coco['val_img_prefix'])))
    config.write_text(f'_base_ = {str(LIP_DEMO)!r}\nval_dataloader = {val!r}\n')
    with open(tiny_coco['val_ann']) as f:
        coco = json.load(f)
    images = [tiny_coco['val_img_prefix'] + e['file_name'] for e in coco['images'][:2]]
    return dict(root=root, config=str(config), images=images, coco=coco)


def perturbed_checkpoint(config, path):
    """A checkpoint whose LIP logit convs are random: each layer favours other pixels."""
    cfg = Config.fromfile(config)
    init_default_scope('mmdet')
    model = MODELS.build(dict(cfg.model, backbone=dict(cfg.model.backbone, init_cfg=None)))
    torch.manual_seed(0)
    with torch.no_grad():
        for _, layer in pooling_layers(model):
            layer.postprocessing.conv.weight.normal_(0, 0.5)
    torch.save(dict(state_dict=model.state_dict(), meta=dict(iter=7)), path)
    return str(path)


def test_random_initialisation_is_average_pooling_everywhere(demo_on_tiny):
    model = load_pooling_model(demo_on_tiny['config'])
    assert model.label == RANDOM_INIT
    result = compute_pooling_maps(model, demo_on_tiny['images'][0])
    assert result['image'].shape == (192, 192, 3)  # the test pipeline's Resize to 192
    assert [m.name for m in result['maps']] == LIP_NAMES
    assert [m.stride for m in result['maps']] == [4, 8, 16, 32]
    for layer_map in result['maps']:
        assert layer_map.importance.shape == (192, 192)
        np.testing.assert_allclose(layer_map.importance, 1.0, atol=1e-5)


def test_trained_weights_give_different_maps_per_layer(demo_on_tiny, tmp_path):
    checkpoint = perturbed_checkpoint(demo_on_tiny['config'], tmp_path / 'lip.pth')
    model = load_pooling_model(demo_on_tiny['config'], checkpoint)
    assert model.label == 'lip.pth'
    maps = [m.importance for m in compute_pooling_maps(model, demo_on_tiny['images'][0])['maps']]
    for a in range(len(maps)):
        assert maps[a].std() > 0.01  # not uniform
        assert maps[a].min() >= 0
        for b in range(a):
            assert not np.allclose(maps[a], maps[b], atol=1e-3)
    out = show_pooling(demo_on_tiny['config'], checkpoint, demo_on_tiny['images'],
                       str(tmp_path / 'out'))
    names = [Path(p).name for p in out]
    assert names == [Path(i).stem + '_pooling.png' for i in demo_on_tiny['images']]
    picture = np.asarray(Image.open(out[0]).convert('RGB')).astype(np.int16)
    assert picture.shape == (340, 5 * 320, 3)  # the image + 4 layers, 320 x 340 px panels
    panels = [picture[60:320, 320 * i + 20:320 * i + 260] for i in range(1, 5)]
    for a in range(4):
        for b in range(a):
            assert np.abs(panels[a] - panels[b]).mean() > 1.0
    combined = show_pooling(demo_on_tiny['config'], checkpoint, demo_on_tiny['images'],
                            str(tmp_path / 'out'), combined='both.png')
    assert np.asarray(Image.open(combined[0])).shape[:2] == (2 * 340, 5 * 320)


def test_ground_truth_boxes_come_from_the_dataset(demo_on_tiny, tmp_path):
    cfg = Config.fromfile(demo_on_tiny['config'])
    image = demo_on_tiny['images'][1]
    coco = demo_on_tiny['coco']
    image_id = coco['images'][1]['id']
    expected = [a['bbox'] for a in coco['annotations'] if a['image_id'] == image_id]
    boxes = find_gt_boxes(cfg, image)
    assert len(expected) > 0 and boxes.shape == (len(expected), 4)
    np.testing.assert_allclose(boxes[:, 2:] - boxes[:, :2], np.array(expected)[:, 2:],
                               rtol=1e-6)
    elsewhere = tmp_path / Path(image).name
    shutil.copy(image, elsewhere)
    assert find_gt_boxes(cfg, str(elsewhere)) is None


def test_bare_backbone_config_without_pipeline(tmp_path, demo_on_tiny):
    config = tmp_path / 'dpp_backbone.py'
    config.write_text("custom_imports = dict(imports=['lip_mmdet'], "
                      "allow_failed_imports=False)\n"
                      "model = dict(type='DPPResNet', depth=18)\n")
    model = load_pooling_model(str(config))
    result = compute_pooling_maps(model, demo_on_tiny['images'][0])
    assert result['image'].shape == (128, 128, 3)  # no Resize: the file's own size
    assert [m.name for m in result['maps']] == ['maxpool', 'layer2.0.pool', 'layer3.0.pool',
                                                'layer4.0.pool']
    assert [m.stride for m in result['maps']] == [4, 8, 16, 32]
    # DPP with lambda = 1 already weighs pixels by their difference to the window mean
    assert result['maps'][0].importance.std() > 0.01


def test_refuses_models_without_pooling_and_foreign_checkpoints(demo_on_tiny, tmp_path):
    with pytest.raises(ValueError, match='no LIP or DPP pooling layer'):
        load_pooling_model(str(REPO / 'configs' / 'demo' / 'faster_rcnn_r18_demo.py'))
    foreign = tmp_path / 'foreign.pth'
    torch.save(dict(state_dict={'other.weight': torch.zeros(1)}), foreign)
    with pytest.raises(ValueError, match='holds no parameter'):
        load_pooling_model(demo_on_tiny['config'], str(foreign))
    with pytest.raises(FileNotFoundError, match='missing.png'):
        show_pooling(demo_on_tiny['config'], None, [str(tmp_path / 'missing.png')],
                     str(tmp_path / 'never'))
    assert not (tmp_path / 'never').exists()


def test_demo_picture_for_a_trained_run_and_none_for_the_stock_twin(tiny_coco, tmp_path):
    from lip_mmdet.visualization import demo_importance_maps
    stock = REPO / 'configs' / 'demo' / 'faster_rcnn_r18_demo.py'
    assert demo_importance_maps(str(stock), str(tmp_path), tiny_coco['data_root']) is None
    # a work dir whose last checkpoint is a LIP model: two validation rows with their boxes
    checkpoint = perturbed_checkpoint(str(LIP_DEMO), tmp_path / 'epoch_1.pth')
    (tmp_path / 'last_checkpoint').write_text(checkpoint)
    picture = demo_importance_maps(str(LIP_DEMO), str(tmp_path), tiny_coco['data_root'])
    assert picture == str(tmp_path / 'pooling_importance.png')
    assert Image.open(picture).size == (5 * 320, 2 * 340)
