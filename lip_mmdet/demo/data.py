"""A generated small-object detection dataset in COCO format.

The demo needs data that a CPU can learn from in minutes without downloads, yet that
exercises what LIP targets: mostly small objects on cluttered backgrounds. Each image is a
textured background (gradients, stripes, blotchy noise, sensor noise) with a few
non-overlapping shapes (the classes) and unlabelled strokes in vivid colours. Half of the
objects wear their class's hue and half a random one, so colour helps but the shape decides.
Object sizes are drawn per COCO-style area bin so most
objects are small (< 32^2 px) and many are tiny (< 16^2 px), with some medium and large ones.

Everything derives from ``seed``: image ``i`` of a split uses its own random stream
(``SeedSequence([seed, split, i])``), so the same arguments give the same bytes and asking
for more images does not change the earlier ones.

Every object carries its outline as a COCO polygon (``segmentation``), so the data also
serves instance segmentation (Mask R-CNN, ``metric='segm'``). Annotation ``area`` is the box
area ``w * h``, not the mask area, so that a ground-truth object and a detection with the same
box fall into the same size bin during bbox evaluation (the demo's main number).

A dataset is written into a temporary folder beside ``out_dir`` and renamed into place when
complete, so an interrupted run leaves no partial dataset behind.
"""
import colorsys
import json
import math
import os
import os.path as osp
import shutil
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

__all__ = ['DEMO_CLASSES', 'DEMO_SIZE_BINS', 'data_setting_name', 'make_demo_dataset']

DEMO_CLASSES: Tuple[str, ...] = ('circle', 'square', 'triangle', 'cross', 'diamond')

# Each class has a hue; an object wears it with this probability, else a random hue. Colour
# is then a useful but unreliable cue, and the rest must come from the shape.
_CLASS_HUES = tuple(i / len(DEMO_CLASSES) for i in range(len(DEMO_CLASSES)))
_CLASS_HUE_PROB = 0.5
_CLASS_HUE_JITTER = 0.04

# Unlabelled strokes (lines, arcs, dot clusters) drawn per image, in the objects' palette,
# so that a colour blob alone is not an object.
_DISTRACTORS_PER_IMAGE = (2, 6)

# name -> (min area, max area, sampling weight). Areas in px^2; the large bin is capped by
# the image size. Weights give ~75 % small objects, about half of them tiny.
DEMO_SIZE_BINS: Dict[str, Tuple[float, float, float]] = {
    'tiny': (7.0**2, 16.0**2, 0.40),
    'small': (16.0**2, 32.0**2, 0.35),
    'medium': (32.0**2, 96.0**2, 0.18),
    'large': (96.0**2, 192.0**2, 0.07),
}

_SPLITS = ('train', 'val')
# Bump when the output changes, so that reuse_existing and the per-setting folder names
# (data_setting_name) never mix data of two generator versions. 4: polygon masks.
GENERATOR_VERSION = 4
_MIN_SIDE = 5  # px; below this a shape is no longer recognisable


def _parse_size(image_size: Union[int, Sequence[int]]) -> Tuple[int, int]:
    if isinstance(image_size, (int, np.integer)):
        height = width = int(image_size)
    elif isinstance(image_size, (tuple, list)) and len(image_size) == 2:
        height, width = (int(v) for v in image_size)
    else:
        raise ValueError(
            f'image_size must be an int or an (H, W) pair, got {image_size!r}')
    if min(height, width) < 32:
        raise ValueError(f'image_size must be at least 32 px per side, got {(height, width)}')
    return height, width


def _smooth_noise(rng: np.random.Generator, height: int, width: int,
                  cell: int) -> np.ndarray:
    """Blotchy value noise in [0, 1], shape (H, W): coarse random grid, bilinear upscale."""
    grid_h = max(2, height // cell + 2)
    grid_w = max(2, width // cell + 2)
    coarse = rng.random((grid_h, grid_w)).astype(np.float32)
    upscaled = Image.fromarray(coarse).resize((width, height), Image.BILINEAR)
    return np.asarray(upscaled, dtype=np.float64)


def _random_vivid_colour(rng: np.random.Generator,
                         hue: Optional[float] = None) -> Tuple[int, int, int]:
    """A saturated RGB colour of ``hue`` (0-1; any hue when None)."""
    hue = rng.random() if hue is None else hue % 1.0
    rgb = colorsys.hsv_to_rgb(hue, rng.uniform(0.55, 1.0), rng.uniform(0.55, 1.0))
    return tuple(int(round(255 * c)) for c in rgb)


def _random_dull_colour(rng: np.random.Generator) -> np.ndarray:
    """A low-saturation RGB colour so that the coloured shapes stay the salient thing."""
    grey = rng.uniform(40, 200)
    return np.clip(grey + rng.normal(0, 25, size=3), 0, 255)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Textured background, float array (H, W, 3) in [0, 255]."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    colour_a, colour_b = _random_dull_colour(rng), _random_dull_colour(rng)
    kind = rng.integers(3)
    if kind == 0:  # linear gradient in a random direction
        angle = rng.uniform(0, 2 * math.pi)
        ramp = xs * math.cos(angle) + ys * math.sin(angle)
        mix = (ramp - ramp.min()) / max(np.ptp(ramp), 1e-6)
    elif kind == 1:  # soft stripes of random period and orientation
        angle = rng.uniform(0, math.pi)
        period = rng.uniform(6, 40)
        phase = xs * math.cos(angle) + ys * math.sin(angle)
        mix = 0.5 + 0.5 * np.sin(2 * math.pi * phase / period)
    else:  # blotches
        mix = _smooth_noise(rng, height, width, cell=int(rng.integers(8, 48)))
    image = colour_a + mix[..., None] * (colour_b - colour_a)
    # A second, finer blotch layer so no background is perfectly clean.
    detail = _smooth_noise(rng, height, width, cell=int(rng.integers(3, 10))) - 0.5
    image += detail[..., None] * rng.uniform(10, 40)
    return image


def _sample_box_size(rng: np.random.Generator, height: int,
                     width: int) -> Tuple[int, int]:
    """(w, h) of one object: a size bin by weight, then a log-uniform area within it."""
    max_side = int(0.6 * min(height, width))
    bins = [(lo, min(hi, max_side**2), weight)
            for lo, hi, weight in DEMO_SIZE_BINS.values() if lo < max_side**2]
    weights = np.array([b[2] for b in bins])
    lo, hi, _ = bins[rng.choice(len(bins), p=weights / weights.sum())]
    area = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    aspect = math.exp(rng.uniform(math.log(0.75), math.log(1.33)))
    box_w = int(round(math.sqrt(area * aspect)))
    box_h = int(round(math.sqrt(area / aspect)))
    return (min(max(box_w, _MIN_SIDE), max_side), min(max(box_h, _MIN_SIDE), max_side))


def _overlaps(box: Tuple[int, int, int, int], placed, gap: int = 2) -> bool:
    x, y, w, h = box
    for px, py, pw, ph in placed:
        if (x < px + pw + gap and px < x + w + gap and y < py + ph + gap
                and py < y + h + gap):
            return True
    return False


def _draw_shape(draw: ImageDraw.ImageDraw, label: int, box: Tuple[int, int, int, int],
                colour: Tuple[int, int, int], flip: bool) -> None:
    """Draw class ``label`` so that it touches all four sides of ``box`` (x, y, w, h)."""
    x0, y0, w, h = box
    x1, y1 = x0 + w - 1, y0 + h - 1
    name = DEMO_CLASSES[label]
    if name == 'circle':
        draw.ellipse([x0, y0, x1, y1], fill=colour)
    elif name == 'square':
        draw.rectangle([x0, y0, x1, y1], fill=colour)
    elif name == 'triangle':
        apex, base = (y1, y0) if flip else (y0, y1)
        draw.polygon([(x0, base), (x1, base), ((x0 + x1) / 2, apex)], fill=colour)
    elif name == 'cross':
        arm_w, arm_h = max(1, round(w / 3)), max(1, round(h / 3))
        cx0 = x0 + (w - arm_w) // 2
        cy0 = y0 + (h - arm_h) // 2
        draw.rectangle([cx0, y0, cx0 + arm_w - 1, y1], fill=colour)
        draw.rectangle([x0, cy0, x1, cy0 + arm_h - 1], fill=colour)
    elif name == 'diamond':
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=colour)
    else:  # pragma: no cover - DEMO_CLASSES and this function are edited together
        raise KeyError(name)


# vertices of the polygon that outlines an ellipse; 24 keep its area within 1.2 % of the
# true ellipse's, well below a pixel's worth for the demo's sizes
_ELLIPSE_VERTICES = 24


def _shape_polygon(label: int, box: Tuple[int, int, int, int], flip: bool) -> List[float]:
    """COCO polygon ``[x1, y1, x2, y2, ...]`` of the shape ``_draw_shape`` draws in ``box``.

    Coordinates are continuous: pixel ``(i, j)`` covers ``[i, i + 1] x [j, j + 1]``, so the
    polygon spans exactly the box ``[x, x + w] x [y, y + h]``.
    """
    x0, y0, w, h = box
    x1, y1 = x0 + w, y0 + h
    name = DEMO_CLASSES[label]
    if name == 'circle':
        cx, cy = x0 + w / 2, y0 + h / 2
        angles = np.linspace(0, 2 * math.pi, _ELLIPSE_VERTICES, endpoint=False)
        points = [(cx + w / 2 * math.cos(a), cy + h / 2 * math.sin(a)) for a in angles]
    elif name == 'square':
        points = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    elif name == 'triangle':
        apex, base = (y1, y0) if flip else (y0, y1)
        points = [(x0, base), (x1, base), (x0 + w / 2, apex)]
    elif name == 'cross':
        arm_w, arm_h = max(1, round(w / 3)), max(1, round(h / 3))
        ax0, ay0 = x0 + (w - arm_w) // 2, y0 + (h - arm_h) // 2
        ax1, ay1 = ax0 + arm_w, ay0 + arm_h
        points = [(ax0, y0), (ax1, y0), (ax1, ay0), (x1, ay0), (x1, ay1), (ax1, ay1),
                  (ax1, y1), (ax0, y1), (ax0, ay1), (x0, ay1), (x0, ay0), (ax0, ay0)]
    elif name == 'diamond':
        cx, cy = x0 + w / 2, y0 + h / 2
        points = [(cx, y0), (x1, cy), (cx, y1), (x0, cy)]
    else:  # pragma: no cover - DEMO_CLASSES and this function are edited together
        raise KeyError(name)
    return [round(float(v), 2) for point in points for v in point]


def _draw_distractor(draw: ImageDraw.ImageDraw, rng: np.random.Generator,
                     box: Tuple[int, int, int, int]) -> None:
    """A thin stroke inside ``box``: line, arc or a few dots."""
    x0, y0, w, h = box
    x1, y1 = x0 + w - 1, y0 + h - 1
    colour = _random_vivid_colour(rng)
    stroke = int(rng.integers(1, 3))
    kind = rng.integers(3)
    if kind == 0:
        ends = [(x0, y0), (x1, y1)] if rng.integers(2) else [(x0, y1), (x1, y0)]
        draw.line(ends, fill=colour, width=stroke)
    elif kind == 1:
        start = float(rng.uniform(0, 360))
        draw.arc([x0, y0, x1, y1], start, start + float(rng.uniform(60, 200)),
                 fill=colour, width=stroke)
    else:
        for _ in range(int(rng.integers(2, 5))):
            dx, dy = int(rng.integers(0, max(w - 2, 1))), int(rng.integers(0, max(h - 2, 1)))
            draw.rectangle([x0 + dx, y0 + dy, x0 + dx + 1, y0 + dy + 1], fill=colour)


def _place(rng: np.random.Generator, size: Tuple[int, int], height: int, width: int,
           placed) -> Optional[Tuple[int, int, int, int]]:
    """A free (x, y, w, h) spot for a box of ``size`` (w, h), or None when crowded."""
    box_w, box_h = size
    for _attempt in range(30):
        x = int(rng.integers(0, width - box_w + 1))
        y = int(rng.integers(0, height - box_h + 1))
        if not _overlaps((x, y, box_w, box_h), placed):
            return x, y, box_w, box_h
    return None


def _render_image(rng: np.random.Generator, height: int, width: int,
                  objects_per_image: Tuple[int, int]):
    """Returns (uint8 image (H, W, 3), list of (label, (x, y, w, h), polygon))."""
    canvas = Image.fromarray(
        np.clip(_background(rng, height, width), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    placed, objects = [], []
    low, high = _DISTRACTORS_PER_IMAGE
    for _ in range(int(rng.integers(low, high + 1))):
        # drawn as before and then clipped to the image, so images of 40 px and more keep
        # their bytes while narrower ones still fit
        stroke_w, stroke_h = (int(v) for v in rng.integers(8, 41, size=2))
        box = _place(rng, (min(stroke_w, width), min(stroke_h, height)), height, width,
                     placed)
        if box is not None:
            _draw_distractor(draw, rng, box)
            placed.append(box)
    num_objects = int(rng.integers(objects_per_image[0], objects_per_image[1] + 1))
    for _ in range(num_objects):
        box = _place(rng, _sample_box_size(rng, height, width), height, width, placed)
        if box is None:
            continue  # image too crowded for this one; fewer objects is fine
        label = int(rng.integers(len(DEMO_CLASSES)))
        hue = None
        if rng.random() < _CLASS_HUE_PROB:
            hue = _CLASS_HUES[label] + rng.uniform(-_CLASS_HUE_JITTER, _CLASS_HUE_JITTER)
        flip = bool(rng.integers(2))
        _draw_shape(draw, label, box, _random_vivid_colour(rng, hue), flip=flip)
        placed.append(box)
        objects.append((label, box, _shape_polygon(label, box, flip)))
    pixels = np.asarray(canvas, dtype=np.float64)
    pixels += rng.normal(0, rng.uniform(2, 8), size=pixels.shape)  # sensor noise
    return np.clip(np.round(pixels), 0, 255).astype(np.uint8), objects


def _generator_params(seed, num_images, height, width, objects_per_image, image_ext) -> Dict:
    """What a split was generated from; stored in its annotation file's ``info``."""
    return dict(version=GENERATOR_VERSION, seed=seed, num_images=num_images,
                image_size=[height, width], objects_per_image=list(objects_per_image),
                image_ext=image_ext)


def _write_split(out_dir: str, split_index: int, num_images: int, height: int, width: int,
                 seed: int, objects_per_image: Tuple[int, int], image_ext: str,
                 progress: bool) -> Dict:
    split = _SPLITS[split_index]
    os.makedirs(osp.join(out_dir, split), exist_ok=True)
    images, annotations = [], []
    for index in tqdm(range(num_images), desc=f'demo {split}', disable=not progress,
                      unit='img'):
        rng = np.random.default_rng(np.random.SeedSequence([seed, split_index, index]))
        pixels, objects = _render_image(rng, height, width, objects_per_image)
        file_name = f'{index:06d}.{image_ext}'
        save_kwargs = dict(quality=95, subsampling=0) if image_ext == 'jpg' else {}
        Image.fromarray(pixels).save(osp.join(out_dir, split, file_name), **save_kwargs)
        image_id = index + 1
        images.append(dict(id=image_id, file_name=file_name, height=height, width=width))
        for label, (x, y, w, h), polygon in objects:
            annotations.append(
                dict(id=len(annotations) + 1, image_id=image_id, category_id=label + 1,
                     bbox=[x, y, w, h], area=w * h, segmentation=[polygon], iscrowd=0))
    return dict(
        info=dict(description=f'lip_mmdet generated demo dataset ({split})',
                  generator=_generator_params(seed, num_images, height, width,
                                              objects_per_image, image_ext)),
        images=images,
        annotations=annotations,
        categories=[dict(id=i + 1, name=name, supercategory='shape')
                    for i, name in enumerate(DEMO_CLASSES)],
    )


def _checked_arguments(num_train, num_val, image_size, objects_per_image, image_ext):
    """Validated ``(num_train, num_val, height, width, (min, max) objects, image_ext)``."""
    height, width = _parse_size(image_size)
    if image_ext not in ('jpg', 'png'):
        raise ValueError(f"image_ext must be 'jpg' or 'png', got {image_ext!r}")
    if num_train < 0 or num_val < 0:
        raise ValueError(f'num_train and num_val must be >= 0, got {num_train}, {num_val}')
    low, high = objects_per_image
    if not 0 <= low <= high:
        raise ValueError(f'objects_per_image must be (min, max) with 0 <= min <= max, '
                         f'got {objects_per_image!r}')
    return int(num_train), int(num_val), height, width, (int(low), int(high)), image_ext


def data_setting_name(num_train: int = 400,
                      num_val: int = 100,
                      image_size: Union[int, Sequence[int]] = 256,
                      seed: int = 0,
                      objects_per_image: Tuple[int, int] = (4, 12),
                      image_ext: str = 'jpg') -> str:
    """Folder name that identifies a data setting, e.g. ``v4_train400_val100_192x192_obj6-16
    _seed0_jpg``: two settings (or generator versions) never share a folder.

    Takes the arguments of :func:`make_demo_dataset` that decide its output.
    """
    num_train, num_val, height, width, (low, high), image_ext = _checked_arguments(
        num_train, num_val, image_size, objects_per_image, image_ext)
    return (f'v{GENERATOR_VERSION}_train{num_train}_val{num_val}_{height}x{width}'
            f'_obj{low}-{high}_seed{seed}_{image_ext}')


def _dataset_is_current(paths: Dict[str, str], params: Dict[str, Dict]) -> bool:
    """Whether both splits under ``paths`` were generated from ``params`` and are complete."""
    for split in _SPLITS:
        try:
            with open(paths[f'{split}_ann']) as f:
                coco = json.load(f)
        except (OSError, ValueError):
            return False
        if coco.get('info', {}).get('generator') != params[split]:
            return False
        image_dir = paths[f'{split}_img_dir']
        if not all(osp.isfile(osp.join(image_dir, img['file_name']))
                   for img in coco['images']):
            return False
    return True


def make_demo_dataset(out_dir: str,
                      num_train: int = 400,
                      num_val: int = 100,
                      image_size: Union[int, Sequence[int]] = 256,
                      seed: int = 0,
                      progress: bool = True,
                      objects_per_image: Tuple[int, int] = (4, 12),
                      image_ext: str = 'jpg',
                      reuse_existing: bool = False,
                      overwrite: bool = False) -> Dict[str, str]:
    """Write the demo dataset under ``out_dir`` and return its paths.

    Layout: ``train/*.{jpg,png}``, ``val/*.{jpg,png}``,
    ``annotations/instances_{train,val}.json`` (COCO: images, annotations with ``bbox``
    xywh, ``segmentation`` (one polygon), ``area`` = w * h, ``iscrowd`` 0, categories
    1..len(DEMO_CLASSES)).

    The dataset is generated in a temporary folder beside ``out_dir`` and renamed to
    ``out_dir`` when complete: an error or an interruption leaves ``out_dir`` as it was.

    Args:
        out_dir: dataset root. It must not hold anything yet, unless ``reuse_existing``
            finds the same dataset there or ``overwrite`` allows replacing it.
        num_train: number of training images (>= 0).
        num_val: number of validation images (>= 0).
        image_size: ``S`` or ``(H, W)`` in pixels, at least 32.
        seed: the only source of randomness.
        progress: show a tqdm bar per split.
        objects_per_image: inclusive (min, max) number of objects tried per image.
        image_ext: ``'jpg'`` (quality 95, no chroma subsampling) or ``'png'``.
        reuse_existing: return at once when ``out_dir`` holds a complete dataset generated
            with the same parameters.
        overwrite: replace whatever ``out_dir`` holds (as a whole, once the new dataset is
            complete).

    Returns:
        dict with absolute paths ``data_root``, ``train_ann``, ``val_ann``,
        ``train_img_dir``, ``val_img_dir``.

    Raises:
        ValueError: an argument is out of range.
        FileExistsError: ``out_dir`` holds other files and ``overwrite`` is False.
    """
    num_train, num_val, height, width, objects, image_ext = _checked_arguments(
        num_train, num_val, image_size, objects_per_image, image_ext)
    out_dir = osp.abspath(out_dir)
    paths = dict(data_root=out_dir)
    for split in _SPLITS:
        paths[f'{split}_ann'] = osp.join(out_dir, 'annotations', f'instances_{split}.json')
        paths[f'{split}_img_dir'] = osp.join(out_dir, split)
    counts = dict(zip(_SPLITS, (num_train, num_val)))
    params = {split: _generator_params(seed, counts[split], height, width, objects, image_ext)
              for split in _SPLITS}
    occupied = osp.lexists(out_dir) and (not osp.isdir(out_dir) or os.listdir(out_dir))
    if occupied:
        if reuse_existing and _dataset_is_current(paths, params):
            return paths
        if not overwrite:
            raise FileExistsError(
                f'{out_dir} already holds other files (not this demo dataset: different '
                f'generation parameters or an older generator); choose an empty folder or '
                f'pass overwrite=True (--overwrite) to replace it')

    parent, name = osp.split(out_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f'.{name}.partial-', dir=parent)
    try:
        os.makedirs(osp.join(staging, 'annotations'))
        for split_index, split in enumerate(_SPLITS):
            coco = _write_split(staging, split_index, counts[split], height, width, seed,
                                objects, image_ext, progress)
            with open(osp.join(staging, 'annotations', f'instances_{split}.json'),
                      'w') as f:
                json.dump(coco, f)
        if osp.lexists(out_dir):
            # move the old content aside first: rename cannot replace a non-empty folder
            retired = tempfile.mkdtemp(prefix=f'.{name}.old-', dir=parent)
            os.rename(out_dir, osp.join(retired, name))
            os.rename(staging, out_dir)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.rename(staging, out_dir)
    finally:
        if osp.isdir(staging):
            shutil.rmtree(staging, ignore_errors=True)
    return paths
