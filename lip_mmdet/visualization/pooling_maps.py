"""Importance maps: what each LIP / DPP pooling layer of a backbone favours in an image.

The image goes through the config's test pipeline and data preprocessor, then through the
backbone with a forward hook on every pooling layer (``pooling_layers``); each hook asks its
layer for :meth:`~lip_mmdet.models.layers.PoolingWeightsMixin.importance` of the very
inputs of that forward: the layer's normalised window weights folded back onto its input
pixels, relative to average pooling (1 = the weight average pooling gives a pixel, > 1 = the
layer favours it), averaged over channels.
"""
import json
import os
import os.path as osp
from copy import deepcopy
from typing import Dict, List, NamedTuple, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner.checkpoint import _load_checkpoint, load_state_dict

from lip_mmdet.apis.preflight import _join, leaf_datasets
from lip_mmdet.models.backbones.pretrained import strip_pretrained
from lip_mmdet.models.layers import pooling_layers

__all__ = ['PoolingModel', 'LayerMap', 'load_pooling_model', 'compute_pooling_maps',
           'find_gt_boxes', 'draw_pooling_maps', 'show_pooling', 'last_checkpoint',
           'demo_importance_maps', 'RANDOM_INIT']

RANDOM_INIT = 'random initialisation'
# mmdet's ImageNet normalisation, for bare backbone configs that name no preprocessor
DEFAULT_PREPROCESSOR = dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
                            std=[58.395, 57.12, 57.375], bgr_to_rgb=True,
                            pad_size_divisor=32)
DEFAULT_PIPELINE = [dict(type='LoadImageFromFile'), dict(type='PackDetInputs')]
PANEL_INCHES = 3.2
DPI = 100


class PoolingModel(NamedTuple):
    """A backbone ready for :func:`compute_pooling_maps`."""
    cfg: Config
    backbone: torch.nn.Module
    preprocessor: torch.nn.Module
    pipeline: object
    label: str  # checkpoint file name, or RANDOM_INIT


class LayerMap(NamedTuple):
    name: str
    stride: int
    importance: np.ndarray  # (H, W) at the preprocessed image's size, mean over channels


def _test_pipeline(cfg: Config) -> list:
    loader = cfg.get('test_dataloader') or cfg.get('val_dataloader')
    pipeline = None
    if loader and loader.get('dataset'):
        pipeline = next(leaf_datasets(loader['dataset'])).get('pipeline')
    pipeline = deepcopy(pipeline or cfg.get('test_pipeline') or DEFAULT_PIPELINE)
    # any image may be shown: annotations are looked up separately (find_gt_boxes)
    steps = [s for s in pipeline if 'LoadAnnotations' not in s['type']]
    for step in steps:
        if step['type'] == 'PackDetInputs':
            step['meta_keys'] = ('img_path', 'ori_shape', 'img_shape', 'scale_factor')
    return steps


def load_pooling_model(config: str, checkpoint: Optional[str] = None,
                       cfg_options: Optional[Dict] = None) -> PoolingModel:
    """Build the config's backbone (of a detector, or a bare backbone config) on the CPU.

    Args:
        config: config file; ``model`` is a detector with a ``backbone`` or a backbone.
        checkpoint: weights (a detector's or a backbone's state dict, as mmengine saves
            them); None keeps the random initialisation (``Pretrained`` init_cfgs are
            dropped so the result does not depend on files the config names).
        cfg_options: settings merged into the config (``{'val_dataloader.dataset.data_root':
            ...}``).

    Raises:
        ValueError: the model has no LIP / DPP pooling layer, or the checkpoint has no
            parameter of it.
    """
    from mmcv.transforms import Compose
    from mmdet.registry import MODELS, TRANSFORMS

    cfg = Config.fromfile(config)
    cfg.merge_from_dict(dict(cfg_options or {}))
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model = MODELS.build(strip_pretrained(cfg.model))
    model.init_weights()
    label = RANDOM_INIT
    if checkpoint is not None:
        state = _load_checkpoint(checkpoint, map_location='cpu', logger='silent')
        state = state.get('state_dict', state)
        prefix = '' if hasattr(model, 'backbone') else 'backbone.'
        state = {k[len('module.'):] if k.startswith('module.') else k: v
                 for k, v in state.items()}
        if prefix and any(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if not set(state) & set(model.state_dict()):
            raise ValueError(f'checkpoint {checkpoint} holds no parameter of the model of '
                             f'{config}')
        load_state_dict(model, state, strict=False)
        label = osp.basename(checkpoint)
    backbone = model.backbone if hasattr(model, 'backbone') else model
    if not pooling_layers(backbone):
        raise ValueError(f'the backbone of {config} ({type(backbone).__name__}) has no LIP or '
                         'DPP pooling layer')
    if hasattr(model, 'data_preprocessor') and hasattr(model, 'backbone'):
        preprocessor = model.data_preprocessor
    else:
        preprocessor = MODELS.build(cfg.get('data_preprocessor') or DEFAULT_PREPROCESSOR)
    pipeline = Compose([TRANSFORMS.build(step) for step in _test_pipeline(cfg)])
    backbone.eval()  # (mmdet's ResNet.train returns None, so not chained)
    preprocessor.eval()
    return PoolingModel(cfg, backbone, preprocessor, pipeline, label)


def compute_pooling_maps(pooling_model: PoolingModel, image: str) -> Dict:
    """Run one image; return its display image, metainfo and one :class:`LayerMap` per
    pooling layer (module order).

    Returns:
        ``dict(image=(h, w, 3) uint8 RGB as the network saw it (before padding),
        meta=metainfo, maps=[LayerMap, ...])``.
    """
    data = pooling_model.pipeline(dict(img_path=image, img_id=0))
    with torch.no_grad():
        batch = pooling_model.preprocessor(
            dict(inputs=[data['inputs']], data_samples=[data['data_samples']]), False)
    inputs = batch['inputs']
    padded = inputs.shape[-2:]
    height, width = data['inputs'].shape[-2:]
    found: List[LayerMap] = []

    def hook_for(name):

        def record(module, args, output):
            importance = module.importance(*args).mean(1, keepdim=True)  # (1, 1, h, w)
            stride = max(1, round(padded[0] / output.shape[-2]))
            full = F.interpolate(importance.float(), size=padded, mode='bilinear',
                                 align_corners=False)
            found.append(LayerMap(name, stride, full[0, 0, :height, :width].numpy()))

        return record

    handles = [layer.register_forward_hook(hook_for(name))
               for name, layer in pooling_layers(pooling_model.backbone)]
    try:
        with torch.no_grad():
            pooling_model.backbone(inputs)
    finally:
        for handle in handles:
            handle.remove()
    rgb = data['inputs'].permute(1, 2, 0).numpy()[..., ::-1].copy()  # packed images are BGR
    return dict(image=rgb, meta=data['data_samples'].metainfo, maps=found)


def _annotation_sources(cfg: Config):
    for split in ('test', 'val', 'train'):
        loader = cfg.get(f'{split}_dataloader')
        if not loader or not loader.get('dataset'):
            continue
        for leaf in leaf_datasets(loader['dataset']):
            root = leaf.get('data_root') or ''
            if leaf.get('ann_file'):
                prefix = (leaf.get('data_prefix') or {}).get('img', '')
                yield _join(root, leaf['ann_file']), _join(root, prefix)


def find_gt_boxes(cfg: Config, image: str) -> Optional[np.ndarray]:
    """Ground-truth boxes (K, 4) xyxy in original pixels of ``image`` in the config's COCO
    annotation files (test, val, then train split), or None when no file lists it.

    An image is matched by its path (annotation ``file_name`` joined to the image folder).
    """
    target = osp.realpath(image)
    seen = set()
    for ann_file, img_dir in _annotation_sources(cfg):
        if ann_file in seen or not osp.isfile(ann_file):
            continue
        seen.add(ann_file)
        with open(ann_file) as f:
            coco = json.load(f)
        ids = [entry['id'] for entry in coco.get('images', [])
               if osp.realpath(osp.join(img_dir, entry['file_name'])) == target]
        if ids:
            boxes = [a['bbox'] for a in coco.get('annotations', [])
                     if a['image_id'] == ids[0] and not a.get('iscrowd', 0)]
            xywh = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
            return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    return None


def draw_pooling_maps(rows: Sequence[Dict], out_file: str, title: str) -> str:
    """One row per image: the image, then one panel per pooling layer with its importance
    overlaid (diverging colours centred on 1, red = favoured, blue = suppressed, from the
    layer's 1st to its 99th percentile), titled with the layer name and stride; ground-truth
    boxes (``row['boxes']``, xyxy in the shown image's pixels) drawn on every panel. The PNG
    is (1 + layers) * 320 px wide, 340 px per row high.
    """
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    columns = 1 + max(len(row['maps']) for row in rows)
    fig = Figure(figsize=(columns * PANEL_INCHES, len(rows) * (PANEL_INCHES + 0.2)))
    axes = fig.subplots(len(rows), columns, squeeze=False)
    for axes_row, row in zip(axes, rows):
        gray = row['image'].mean(axis=2)
        panels = [(None, 'input (test pipeline)')] + [
            (m, f'{m.name}\nstride {m.stride}') for m in row['maps']]
        for ax, (layer_map, text) in zip(axes_row, panels):
            if layer_map is None:
                ax.imshow(row['image'])
            else:
                ax.imshow(gray, cmap='gray')
                # diverging around 1 (average pooling): red favoured, blue suppressed
                low, high = np.percentile(layer_map.importance, [1, 99])
                norm = TwoSlopeNorm(vcenter=1.0, vmin=min(float(low), 1 - 1e-3),
                                    vmax=max(float(high), 1 + 1e-3))
                shown = ax.imshow(layer_map.importance, cmap='RdBu_r', norm=norm, alpha=0.7)
                fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
            for x1, y1, x2, y2 in (row.get('boxes') if row.get('boxes') is not None
                                   else []):
                ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False,
                                       edgecolor='cyan', linewidth=0.8))
            ax.set_title(text, fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
        for ax in axes_row[len(panels):]:
            ax.axis('off')
    fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(left=0.01, right=0.97, bottom=0.02, top=0.86 if len(rows) == 1 else 0.92,
                        wspace=0.25, hspace=0.3)
    fig.savefig(out_file, dpi=DPI)
    return out_file


def _row(pooling_model: PoolingModel, image: str) -> Dict:
    row = compute_pooling_maps(pooling_model, image)
    boxes = find_gt_boxes(pooling_model.cfg, image)
    if boxes is not None:
        w_scale, h_scale = row['meta'].get('scale_factor', (1.0, 1.0))
        boxes = boxes * np.array([w_scale, h_scale, w_scale, h_scale], dtype=np.float32)
    row['boxes'] = boxes
    return row


def show_pooling(config: str, checkpoint: Optional[str], images: Sequence[str],
                 out_dir: str, combined: Optional[str] = None,
                 cfg_options: Optional[Dict] = None) -> List[str]:
    """Draw the importance maps of ``images``.

    Args:
        config, checkpoint, cfg_options: as :func:`load_pooling_model`.
        images: image files.
        out_dir: output folder (created).
        combined: file name for one PNG with a row per image; None writes one PNG per image,
            ``<image stem>_pooling.png``.

    Returns:
        The written PNG paths. Every image is processed before anything is written.
    """
    missing = [image for image in images if not osp.isfile(image)]
    if missing:
        raise FileNotFoundError(f'image not found: {", ".join(missing)}')
    pooling_model = load_pooling_model(config, checkpoint, cfg_options)
    rows = [_row(pooling_model, image) for image in images]
    title = f'{osp.basename(config)} ({pooling_model.label}): importance relative to ' \
            'average pooling, mean over channels'
    os.makedirs(out_dir, exist_ok=True)
    if combined is not None:
        return [draw_pooling_maps(rows, osp.join(out_dir, combined), title)]
    return [draw_pooling_maps([row], osp.join(
        out_dir, f'{osp.splitext(osp.basename(image))[0]}_pooling.png'), title)
        for row, image in zip(rows, images)]


def last_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint mmengine's Runner saved last in ``work_dir`` (its ``last_checkpoint``
    file), or None."""
    pointer = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(pointer):
        return None
    with open(pointer) as f:
        path = f.read().strip()
    return path if osp.isfile(path) else None


def demo_importance_maps(config: str, work_dir: str, data_root: str, num_images: int = 2,
                         out_name: str = 'pooling_importance.png') -> Optional[str]:
    """The demo's picture: importance maps of the first ``num_images`` validation images of
    the demo dataset in ``data_root`` (one row each, boxes drawn) for the run's last
    checkpoint, written to ``work_dir``.

    Returns:
        The PNG path, or None when the model has no pooling layer (the stock ResNet twin).
    """
    from mmdet.registry import MODELS

    cfg = Config.fromfile(config)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    backbone_cfg = cfg.model.get('backbone', cfg.model)
    if not pooling_layers(MODELS.build(dict(backbone_cfg, init_cfg=None))):
        return None
    root = data_root.rstrip('/') + '/'
    with open(osp.join(root, 'annotations', 'instances_val.json')) as f:
        entries = sorted(json.load(f)['images'], key=lambda e: e['id'])[:num_images]
    images = [osp.join(root, 'val', e['file_name']) for e in entries]
    options = {f'{split}_dataloader.dataset.data_root': root
               for split in ('train', 'val', 'test')}
    return show_pooling(config, last_checkpoint(work_dir), images, work_dir,
                        combined=out_name, cfg_options=options)[0]
