import hashlib
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO

from lip_mmdet.demo import DEMO_CLASSES, data_setting_name, make_demo_dataset
from lip_mmdet.demo import data as demo_data
from lip_mmdet.evaluation import SizeAwareCocoMetric

from tool_scripts import tool_main


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
    paths = make_demo_dataset(str(tmp_path / 'data'), **kwargs)
    image = os.path.join(paths['train_img_dir'], '000000.jpg')
    os.utime(image, (0, 0))
    make_demo_dataset(str(tmp_path / 'data'), reuse_existing=True, **kwargs)
    assert os.path.getmtime(image) == 0  # kept
    before = _digest(tmp_path / 'data')
    # other parameters: refused, and what earlier runs were evaluated on stays as it was
    with pytest.raises(FileExistsError, match='overwrite'):
        make_demo_dataset(str(tmp_path / 'data'), reuse_existing=True,
                          **dict(kwargs, seed=1))
    assert _digest(tmp_path / 'data') == before
    make_demo_dataset(str(tmp_path / 'data'), overwrite=True, **dict(kwargs, num_train=3))
    assert os.path.getmtime(image) > 0  # replaced as a whole
    assert len(os.listdir(paths['train_img_dir'])) == 3
    # an incomplete dataset is not reused
    os.remove(os.path.join(paths['val_img_dir'], '000000.jpg'))
    with pytest.raises(FileExistsError):
        make_demo_dataset(str(tmp_path / 'data'), reuse_existing=True,
                          **dict(kwargs, num_train=3))
    assert os.listdir(tmp_path) == ['data']  # no staging folders left behind


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    """The dataset appears only when complete; an old one survives a failed overwrite."""
    kwargs = dict(num_train=4, num_val=2, image_size=64, progress=False)
    render = demo_data._render_image
    calls = []

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 5:  # the first validation image
            raise KeyboardInterrupt
        return render(*args)

    monkeypatch.setattr(demo_data, '_render_image', interrupted)
    with pytest.raises(KeyboardInterrupt):
        make_demo_dataset(str(tmp_path / 'new'), **kwargs)
    assert os.listdir(tmp_path) == []

    monkeypatch.setattr(demo_data, '_render_image', render)
    make_demo_dataset(str(tmp_path / 'old'), **kwargs)
    before = _digest(tmp_path / 'old')
    calls.clear()
    monkeypatch.setattr(demo_data, '_render_image', interrupted)
    with pytest.raises(KeyboardInterrupt):
        make_demo_dataset(str(tmp_path / 'old'), overwrite=True, **dict(kwargs, seed=3))
    assert _digest(tmp_path / 'old') == before
    assert os.listdir(tmp_path) == ['old']


@pytest.mark.parametrize('image_size', [32, (1000, 32), (32, 1000), (33, 47)])
def test_every_accepted_size_generates(tmp_path, image_size):
    """The smallest sizes the validation accepts: strokes and shapes still fit."""
    paths = make_demo_dataset(str(tmp_path), num_train=6, num_val=2, image_size=image_size,
                              progress=False)
    coco = COCO(paths['train_ann'])
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    for img in coco.loadImgs(coco.getImgIds()):
        assert (img['height'], img['width']) == (height, width)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=img['id'])):
            x, y, w, h = ann['bbox']
            assert x + w <= width and y + h <= height
    assert len(coco.getAnnIds()) > 0


def test_setting_names_differ_per_setting():
    base = dict(num_train=400, num_val=100, image_size=192, objects_per_image=(6, 16))
    name = data_setting_name(**base)
    assert name == 'v4_train400_val100_192x192_obj6-16_seed0_jpg'
    others = {data_setting_name(**dict(base, **change)) for change in (
        dict(num_train=40), dict(num_val=10), dict(image_size=(192, 128)), dict(seed=1),
        dict(objects_per_image=(6, 15)), dict(image_ext='png'))}
    assert len(others) == 6 and name not in others


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
            # area is the box area, so GT and detected boxes share size bins
            assert ann['area'] == w * h
            # the polygon outlines the object inside its box and reaches all four sides
            # (a pointed end, e.g. a triangle's apex, may rasterise a pixel short)
            ys, xs = np.nonzero(coco.annToMask(ann))
            extent = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            box = np.array([x, y, x + w, y + h])
            assert (extent[:2] >= box[:2]).all() and (extent[2:] <= box[2:]).all()
            assert np.abs(extent - box).max() <= 1, (extent, box)
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
    (dict(image_size=(31, 1000)), 'at least 32'),
    (dict(image_ext='bmp'), 'image_ext'),
    (dict(num_train=-1), 'num_train'),
    (dict(objects_per_image=(5, 2)), 'objects_per_image'),
])
def test_bad_arguments_are_named(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_demo_dataset(str(tmp_path), progress=False, **kwargs)


def _drawn_pixels(pixels, ann):
    """Pixels of the object's colour inside its box (the colour at the box centre)."""
    x, y, w, h = ann['bbox']
    centre = pixels[y + h // 2 - 1:y + h // 2 + 2, x + w // 2 - 1:x + w // 2 + 2]
    colour = np.median(centre.reshape(-1, 3), axis=0)
    drawn = np.zeros(pixels.shape[:2], dtype=bool)
    drawn[y:y + h, x:x + w] = np.linalg.norm(pixels[y:y + h, x:x + w] - colour, axis=-1) < 45
    return drawn


def test_polygons_match_the_drawn_shapes(tmp_path):
    paths = make_demo_dataset(str(tmp_path), num_train=6, num_val=0, image_size=128,
                              progress=False, image_ext='png')
    coco = COCO(paths['train_ann'])
    ious = {}
    for img in coco.loadImgs(coco.getImgIds()):
        pixels = np.asarray(Image.open(os.path.join(paths['train_img_dir'],
                                                    img['file_name'])), dtype=np.float64)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=img['id'])):
            if ann['area'] < 16**2:
                continue  # a pixel of anti-aliasing is a large share of a tiny object
            mask = coco.annToMask(ann).astype(bool)
            drawn = _drawn_pixels(pixels, ann)
            iou = (mask & drawn).sum() / (mask | drawn).sum()
            ious.setdefault(DEMO_CLASSES[ann['category_id'] - 1], []).append(iou)
    assert set(ious) == set(DEMO_CLASSES)
    # colour thresholding of a noisy rendering costs a few edge pixels; a box-shaped mask
    # would give a circle 0.79, a triangle or a diamond 0.5, a cross 0.56
    for name, values in ious.items():
        assert np.median(values) > 0.85, (name, values)


def _mask_samples(coco, masks_of):
    """mmdet data samples predicting, for every ground-truth object, its box and
    ``masks_of(ann)`` (a (H, W) bool array)."""
    samples = []
    for img in coco.loadImgs(coco.getImgIds()):
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img['id']))
        boxes = [[x, y, x + w, y + h] for x, y, w, h in (a['bbox'] for a in anns)]
        masks = np.stack([masks_of(a) for a in anns]) if anns else np.zeros(
            (0, img['height'], img['width']), dtype=bool)
        samples.append(dict(
            img_id=img['id'], ori_shape=(img['height'], img['width']),
            pred_instances=dict(
                bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                scores=torch.full((len(anns),), 0.9),
                labels=torch.tensor([a['category_id'] - 1 for a in anns], dtype=torch.int64),
                masks=torch.from_numpy(masks))))
    return samples


def _box_mask(coco, ann):
    img = coco.imgs[ann['image_id']]
    mask = np.zeros((img['height'], img['width']), dtype=bool)
    x, y, w, h = ann['bbox']
    mask[y:y + h, x:x + w] = True
    return mask


def test_segm_evaluation_on_the_demo_data(tiny_coco, tmp_path):
    """SizeAwareCocoMetric(metric='segm') on the generated masks: the true masks score 1 in
    every bin with objects; box-shaped masks score well below their boxes' bbox AP."""
    coco = COCO(tiny_coco['val_ann'])
    num_gt = {}
    for name, masks_of in (('true', lambda a: coco.annToMask(a).astype(bool)),
                           ('boxes', lambda a: _box_mask(coco, a))):
        metric = SizeAwareCocoMetric(ann_file=tiny_coco['val_ann'], metric=['bbox', 'segm'],
                                     out_dir=str(tmp_path / name))
        metric.dataset_meta = dict(classes=DEMO_CLASSES)
        samples = _mask_samples(coco, masks_of)
        metric.process({}, samples)
        results = metric.evaluate(size=len(samples))
        with open(tmp_path / name / 'size_aware_metrics.json') as f:
            bins = json.load(f)['metrics']['segm']['bins']
        num_gt[name] = {b: entry['num_gt'] for b, entry in bins.items()}
        populated = [b for b, n in num_gt[name].items() if n > 0]
        assert len(populated) >= 2
        assert results['coco/bbox_mAP'] == 1.0
        if name == 'true':
            assert results['coco/segm_mAP'] == 1.0
            assert all(results[f'coco/segm_mAP_{b}'] == 1.0 for b in populated)
        else:
            assert results['coco/segm_mAP'] < 0.7
    assert num_gt['true'] == num_gt['boxes']


def test_make_demo_dataset_tool(tmp_path, capsys):
    main = tool_main('data/make_demo_dataset.py')
    args = ['--out', str(tmp_path / 'd'), '--num-train', '2', '--num-val', '1', '--size',
            '1000', '32', '--no-progress']
    assert main(args) == 0
    assert f'data_root: {tmp_path / "d"}' in capsys.readouterr().out
    before = _digest(tmp_path / 'd')
    for bad_args, message in ((args + ['--seed', '1'], 'already holds other files'),
                              (args[:6] + ['--size', '1', '2', '3'], '--size takes S or H W'),
                              (args[:6] + ['--size', '20'], 'at least 32')):
        assert main(bad_args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith('error: ') and message in err[0], err
    assert _digest(tmp_path / 'd') == before
    assert main(args + ['--seed', '1', '--overwrite']) == 0
    assert _digest(tmp_path / 'd') != before
