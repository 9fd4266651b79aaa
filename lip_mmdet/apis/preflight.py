"""Checks run by tools/train.py and tools/test.py before building a Runner.

Each check raises :class:`PreflightError` with a message meant for a person: which path was
looked for, how to put the missing thing in place, and how to try the project without it. The
tools print that message and exit non-zero instead of letting a traceback from deep inside a
dataset or checkpoint loader reach the user.
"""
import os
import os.path as osp
import urllib.error
import urllib.request

import torch

from ..utils.checkpoint import (
    CHECKPOINT_ERRORS,
    CheckpointUnavailableError,
    hub_cache_file,
    load_checkpoint_file,
    resolve_checkpoint_url,
)

__all__ = [
    'PreflightError', 'check_amp', 'check_checkpoint', 'check_datasets',
    'check_pretrained_weights', 'check_work_dir', 'dataset_paths', 'leaf_datasets'
]

# Seconds to wait for the server of a checkpoint that is not in the torch hub cache.
DOWNLOAD_PROBE_TIMEOUT = 10

COCO_LAYOUT = """\
The COCO configs expect COCO 2017 under data/coco/, relative to the directory you run from:
  data/coco/annotations/instances_train2017.json
  data/coco/annotations/instances_val2017.json
  data/coco/train2017/   (118k images)
  data/coco/val2017/     (5k images)
Download it from https://cocodataset.org/#download, or link a copy you already have:
  mkdir -p data && ln -s /path/to/coco data/coco
or point the config at it: --cfg-options train_dataloader.dataset.data_root=/path/to/coco/
(likewise val_dataloader, test_dataloader and val_evaluator.ann_file). See docs/detection.md."""

DEMO_HINT = ('To try the whole pipeline without COCO or pretrained weights, run the embedded '
             'demo instead: make demo')

# How to make the checkpoint files the configs under configs/ point at, by file name.
CHECKPOINT_RECIPES = {
    'lip_resnet50_mmdet.pth': (
        'Convert the official LIP-ResNet-50 ImageNet weights (lip_resnet-50.pth, linked from '
        'https://github.com/sebgao/LIP) to mmdet key names:\n'
        '  python tools/model_converters/lip2mmdet.py lip_resnet-50.pth '
        'checkpoints/lip_resnet50_mmdet.pth'),
    'lip_resnet101_mmdet.pth': (
        'Convert the official LIP-ResNet-101 ImageNet weights (lip_resnet-101.pth, linked from '
        'https://github.com/sebgao/LIP) to mmdet key names:\n'
        '  python tools/model_converters/lip2mmdet.py lip_resnet-101.pth '
        'checkpoints/lip_resnet101_mmdet.pth'),
    'resnet50-0676ba61.pth': (
        'Download the torchvision ImageNet ResNet-50 weights (the file behind mmdet\'s '
        'torchvision://resnet50):\n'
        '  mkdir -p checkpoints && curl -L -o checkpoints/resnet50-0676ba61.pth '
        'https://download.pytorch.org/models/resnet50-0676ba61.pth'),
}


class PreflightError(RuntimeError):
    """Something a run needs is missing or unusable; the message says what to do."""


def _is_remote(path):
    # URLs and mmengine prefixes (torchvision://, open-mmlab://, s3://) are resolved by
    # mmengine's own loaders, not looked up on the local disk.
    return '://' in str(path)


def _join(data_root, path):
    if not data_root or osp.isabs(path) or _is_remote(path):
        return path
    return osp.join(data_root, path)


def leaf_datasets(dataset_cfg):
    """Yield the dataset configs that read files, looking through wrapper datasets."""
    if dataset_cfg.get('datasets') is not None:  # ConcatDataset
        for child in dataset_cfg['datasets']:
            yield from leaf_datasets(child)
    elif dataset_cfg.get('dataset') is not None:  # RepeatDataset, ClassBalancedDataset, ...
        yield from leaf_datasets(dataset_cfg['dataset'])
    else:
        yield dataset_cfg


def dataset_paths(dataset_cfg):
    """Return ``[(what, path), ...]``: the annotation files and image folders a dataset reads.

    Paths are combined with ``data_root`` the way mmengine's ``BaseDataset`` does.
    """
    paths = []
    for leaf in leaf_datasets(dataset_cfg):
        data_root = leaf.get('data_root') or ''
        if leaf.get('ann_file'):
            paths.append(('annotation file', _join(data_root, leaf['ann_file'])))
        for key, prefix in (leaf.get('data_prefix') or {}).items():
            if prefix:
                paths.append((f'{key} folder', _join(data_root, prefix)))
    return paths


def check_datasets(cfg, splits):
    """Raise :class:`PreflightError` when a file of ``cfg.<split>_dataloader`` is missing.

    Args:
        cfg (mmengine.Config): the full config.
        splits (Sequence[str]): e.g. ``('train', 'val')`` or ``('test',)``; a split whose
            dataloader is not configured (None) is skipped.
    """
    missing = []
    for split in splits:
        loader = cfg.get(f'{split}_dataloader')
        if not loader or not loader.get('dataset'):
            continue
        for what, path in dataset_paths(loader['dataset']):
            exists = osp.isfile(path) if what == 'annotation file' else osp.isdir(path)
            if not _is_remote(path) and not exists:
                missing.append(f'  {split}_dataloader {what}: {path} '
                               f'(absolute: {osp.abspath(path)})')
    if missing:
        raise PreflightError('Dataset not found. Looked for:\n' + '\n'.join(missing) + '\n\n' +
                             COCO_LAYOUT + '\n\n' + DEMO_HINT)


def _download_problem(url):
    """Why ``url`` cannot be downloaded now, or None when its server answers."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method='HEAD'),
                                    timeout=DOWNLOAD_PROBE_TIMEOUT):
            return None
    except urllib.error.HTTPError as error:
        # some servers refuse HEAD; only "no such file" settles it
        return f'HTTP {error.code} {error.reason}' if error.code in (404, 410) else None
    except (urllib.error.URLError, OSError, ValueError) as error:
        return str(getattr(error, 'reason', error))


def _usable(path, role, name=None):
    """Raise :class:`PreflightError` unless the local file ``path`` loads (allow-list, not
    damaged). ``name``: how the message names it.

    The file is loaded the way the Runner will load it, tensors read: a memory-mapped load
    takes another path through torch (it cannot map a compressed record, and it slices the
    mapped file by offsets where the real load reads each record), so it could refuse a file
    the real load accepts, or accept one it refuses.
    """
    try:
        load_checkpoint_file(path, map_location='cpu', name=name)
    except CHECKPOINT_ERRORS as err:
        raise PreflightError(f'{role.capitalize()}: {err}') from None


def _check_remote(path, role):
    try:
        target = resolve_checkpoint_url(path)
    except CheckpointUnavailableError as err:
        raise PreflightError(f'{role.capitalize()}: {err}') from None
    if not target.startswith(('http://', 'https://')):
        if target != path:  # an open-mmlab:// entry naming a file in the mmengine home
            check_checkpoint(target, role)
        return  # pavi://, s3://: only their own clients can tell
    cached = hub_cache_file(target)
    if osp.isfile(cached):
        return _usable(cached, role, name=f'{path} (cached at {cached})')
    problem = _download_problem(target)
    if problem is not None:
        via = '' if target == path else f' ({target})'
        raise PreflightError(
            f'{role.capitalize()} {path}{via} is not in the torch hub cache and cannot be '
            f'downloaded now ({problem}).\nDownload {target}\nwhere there is network access '
            f'and put it at\n  {cached}\n(the torch hub cache; TORCH_HOME moves it), or save '
            'it anywhere and give that local path instead.')


def check_checkpoint(path, role):
    """Raise :class:`PreflightError` unless the checkpoint ``path`` can be had and loaded.

    A local file must exist and load with the allow-list, as the Runner would load it. A URL
    or ``torchvision://`` / ``open-mmlab://`` / ``mmcls://`` name must resolve and
    be in the torch hub cache (then it is checked like a local file) or downloadable now.
    ``pavi://`` and ``s3://`` paths are left to their clients.

    Args:
        path (str): checkpoint path or URL.
        role (str): what the file is for, used in the message (e.g. 'checkpoint to test').
    """
    if _is_remote(path):
        return _check_remote(path, role)
    if osp.isfile(path) or osp.isdir(path):
        return _usable(path, role)
    recipe = CHECKPOINT_RECIPES.get(osp.basename(path))
    how = recipe or 'See docs/detection.md for how each checkpoint is made.'
    raise PreflightError(f'{role.capitalize()} not found: {path} (absolute: '
                         f'{osp.abspath(path)}).\n{how}\n\n{DEMO_HINT}')


def check_work_dir(work_dir):
    """Create ``work_dir`` (as the Runner would) or raise :class:`PreflightError` saying why."""
    try:
        os.makedirs(work_dir, exist_ok=True)
    except OSError as err:
        raise PreflightError(f'Cannot create the work dir {work_dir}: {err.strerror or err}. '
                             'Choose another with --work-dir.') from None
    if not os.access(work_dir, os.W_OK | os.X_OK):
        raise PreflightError(f'The work dir {work_dir} is not writable. Choose another with '
                             '--work-dir.')


def _pretrained_checkpoints(init_cfg):
    init_cfgs = init_cfg if isinstance(init_cfg, (list, tuple)) else [init_cfg]
    return [c['checkpoint'] for c in init_cfgs
            if c and c.get('type') == 'Pretrained' and c.get('checkpoint')]


def check_pretrained_weights(model_cfg):
    """Check the ``Pretrained`` checkpoints named in the model's and backbone's ``init_cfg``."""
    owners = [('model', model_cfg), ('backbone', model_cfg.get('backbone') or {})]
    for name, owner in owners:
        for path in _pretrained_checkpoints(owner.get('init_cfg')):
            hint_key = f'model.{name}.init_cfg' if name != 'model' else 'model.init_cfg'
            try:
                check_checkpoint(path, f'pretrained {name} checkpoint')
            except PreflightError as err:
                raise PreflightError(
                    f'{err}\nTo train without it (random init), pass '
                    f'--cfg-options {hint_key}=None') from None


def check_amp(cfg):
    """Mixed precision in mmengine (``AmpOptimWrapper``) needs a CUDA device."""
    wrapper = cfg.get('optim_wrapper') or {}
    if wrapper.get('type') == 'AmpOptimWrapper' and not torch.cuda.is_available():
        raise PreflightError(
            'Mixed precision (--amp, AmpOptimWrapper) needs a CUDA GPU, and none is available '
            f'(torch {torch.__version__}, torch.cuda.is_available() is False). '
            'Train without --amp on this machine.')
