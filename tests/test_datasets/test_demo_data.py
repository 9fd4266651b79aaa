import hashlib
import json
import os

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from lip_mmdet.datasets import DEMO_CLASSES, make_demo_dataset


def _digest(root):
    """sha256 of every file under root, keyed by relative path."""
    digests = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, 'rb') as f:
                digests[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return digests


def test_same_seed_same_bytes_and_new_seed_differs(tmp_path):
    kwargs = dict(num_train=3, num_val=2, image_size=96, progress=False)
    make_demo_dataset(str(tmp_path / 'a'), seed=7, **kwargs)
    make_demo_dataset(str(tmp_path / 'b'), seed=7, **kwargs)
    make_demo_dataset(str(tmp_path / 'c'), seed=8, **kwargs)
    digest_a = _digest(tmp_path / 'a')
    assert len(digest_a) == 3 + 2 + 2
    assert digest_a == _digest(tmp_path / 'b')
    digest_c = _digest(tmp_path / 'c')
    assert all(digest_a[k] != digest_c[k] for k in digest_a)


def test_more_images_keep_the_earlier_ones(tmp_path):
    make_demo_dataset(str(tmp_path / 'few'), num_train=2, num_val=1, image_size=64,
                      progress=False)
    make_demo_dataset(str(tmp_path / 'many'), num_train=4, num_val=1, image_size=64,
                      progress=False)
    few, many = _digest(tmp_path / 'few'), _digest(tmp_path / 'many')
    for name in ('train/000000.jpg', 'train/000001.jpg', 'val/000000.jpg'):
        assert few[name] == many[name]


def test_reuse_existing_only_when_parameters_match(tmp_path):
    kwargs = dict(num_train=2, num_val=1, image_size=64, progress=False)
    paths = make_demo_dataset(str(tmp_path), **kwargs)
    image = os.path.join(paths['train_img_dir'], '000000.jpg')
    os.utime(image, (0, 0))
    make_demo_dataset(str(tmp_path), reuse_existing=True, **kwargs)
    assert os.path.getmtime(image) == 0  # kept
    make_demo_dataset(str(tmp_path), reuse_existing=True, **dict(kwargs, seed=1))
    assert os.path.getmtime(image) > 0  # other seed: written again
    os.remove(os.path.join(paths['val_img_dir'], '000000.jpg'))
    make_demo_dataset(str(tmp_path), reuse_existing=True, **dict(kwargs, seed=1))
    assert os.path.isfile(os.path.join(paths['val_img_dir'], '000000.jpg'))


@pytest.mark.parametrize('split', ['train', 'val'])
def test_annotations_are_valid_coco(tiny_coco, split):
    coco = COCO(tiny_coco[f'{split}_ann'])
    assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(DEMO_CLASSES)
    assert len(coco.getImgIds()) == {'train': 8, 'val': 4}[split]
    assert len(coco.getAnnIds()) > 0
    ann_ids = [a['id'] for a in coco.dataset['annotations']]
    assert len(set(ann_ids)) == len(ann_ids)
    for img in coco.loadImgs(coco.getImgIds()):
        pixels = np.asarray(Image.open(tiny_coco[f'{split}_img_prefix'] + img['file_name']))
        assert pixels.shape == (img['height'], img['width'], 3)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=img['id'])):
            x, y, w, h = ann['bbox']
            assert w >= 5 and h >= 5
            assert x >= 0 and y >= 0
            assert x + w <= img['width'] and y + h <= img['height']
            # area is the box area (no masks), so GT and detections share size bins
            assert ann['area'] == w * h
            assert ann['iscrowd'] == 0
            assert ann['category_id'] in coco.cats


def test_shapes_fill_their_boxes_exactly(tmp_path):
    """Each shape touches all four sides of its box and does not spill outside it."""
    paths = make_demo_dataset(str(tmp_path), num_train=6, num_val=0, image_size=128,
                              progress=False, image_ext='png')
    coco = COCO(paths['train_ann'])
    checked = 0
    for img in coco.loadImgs(coco.getImgIds()):
        pixels = np.asarray(Image.open(os.path.join(paths['train_img_dir'],
                                                    img['file_name'])), dtype=np.float64)
        padded = np.pad(pixels, ((1, 1), (1, 1), (0, 0)), constant_values=-1e3)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=img['id'])):
            x, y, w, h = ann['bbox']
            centre = pixels[y + h // 2 - 1:y + h // 2 + 2, x + w // 2 - 1:x + w // 2 + 2]
            colour = np.median(centre.reshape(-1, 3), axis=0)
            # box plus a one-pixel margin, in padded coordinates
            window = padded[y:y + h + 2, x:x + w + 2]
            is_shape = np.linalg.norm(window - colour, axis=-1) < 45
            inner = is_shape[1:-1, 1:-1]
            assert inner[0].any() and inner[-1].any(), ann
            assert inner[:, 0].any() and inner[:, -1].any(), ann
            for margin_line in (is_shape[0], is_shape[-1], is_shape[:, 0], is_shape[:, -1]):
                assert margin_line.mean() < 0.5, ann
            checked += 1
    assert checked > 10


def test_mostly_small_objects(tmp_path):
    paths = make_demo_dataset(str(tmp_path), num_train=30, num_val=0, image_size=256,
                              progress=False)
    with open(paths['train_ann']) as f:
        areas = np.array([a['area'] for a in json.load(f)['annotations']])
    assert (areas < 32**2).mean() > 0.6
    assert (areas < 16**2).mean() > 0.25
    assert (areas >= 96**2).sum() > 0  # some large ones too
    assert ((areas >= 32**2) & (areas < 96**2)).sum() > 0


@pytest.mark.parametrize('kwargs, match', [
    (dict(image_size=(64, 64, 3)), 'image_size'),
    (dict(image_size=16), 'at least 32'),
    (dict(image_ext='bmp'), 'image_ext'),
    (dict(num_train=-1), 'num_train'),
    (dict(objects_per_image=(5, 2)), 'objects_per_image'),
])
def test_bad_arguments_are_named(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_demo_dataset(str(tmp_path), progress=False, **kwargs)
