"""Loading ResNet-family checkpoints into backbones whose layout differs from the stock one.

Three layouts meet here: torchvision / mmdet ResNet (shortcut ``downsample.0`` / ``.1``), the
official LIP-ResNet (shortcut ``downsample.conv`` / ``.bn``, also in ``layer1.0``) and ours (the
official names in the stride-2 blocks, mmdet's in ``layer1.0``). A key of ours is looked up in
a checkpoint under its own name first, then under the other shortcut spelling.
"""
import copy
import os.path as osp
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
from mmengine.logging import MMLogger
from mmengine.runner.checkpoint import _load_checkpoint
from torch import nn

__all__ = ['strip_pretrained', 'StateDictMatch', 'key_aliases', 'match_state_dict',
           'extract_state_dict', 'read_checkpoint', 'fit_pretrained', 'apply_pretrained',
           'new_parameter_keys']

# (torchvision / mmdet spelling, official LIP spelling) of the shortcut's conv and norm.
_SHORTCUT_SPELLINGS = (('.downsample.0.', '.downsample.conv.'),
                       ('.downsample.1.', '.downsample.bn.'))
_IGNORED_WHEN_MISSING = 'num_batches_tracked'


def key_aliases(key: str) -> List[str]:
    """Names under which a checkpoint may hold our parameter ``key``, best first."""
    names = [key]
    for stock, official in _SHORTCUT_SPELLINGS:
        if stock in key:
            names.append(key.replace(stock, official))
        elif official in key:
            names.append(key.replace(official, stock))
    return names


@dataclass
class StateDictMatch:
    """Outcome of matching a checkpoint's state dict against a model's.

    ``matched`` maps our keys to checkpoint tensors of the right shape; ``missing`` lists our
    keys the checkpoint lacks; ``unused`` the checkpoint keys nothing took; ``mismatched`` holds
    ``(checkpoint key, our key, checkpoint shape, our shape)`` for same-named, wrong-shaped pairs.
    """
    matched: Dict[str, torch.Tensor] = field(default_factory=dict)
    missing: List[str] = field(default_factory=list)
    unused: List[str] = field(default_factory=list)
    mismatched: List[Tuple[str, str, tuple, tuple]] = field(default_factory=list)

    def describe_mismatches(self) -> str:
        return '\n'.join(f'  {src}: checkpoint {tuple(s)} vs model {ours} {tuple(o)}'
                         for src, ours, s, o in self.mismatched)


def match_state_dict(model_state: Dict[str, torch.Tensor],
                     checkpoint_state: Dict[str, torch.Tensor]) -> StateDictMatch:
    """Pairs every key of ``model_state`` with the checkpoint entry of one of its aliases."""
    result = StateDictMatch()
    taken = set()
    for key, target in model_state.items():
        source = next((name for name in key_aliases(key)
                       if name in checkpoint_state and name not in taken), None)
        if source is None:
            result.missing.append(key)
            continue
        taken.add(source)
        value = checkpoint_state[source]
        if tuple(value.shape) != tuple(target.shape):
            result.mismatched.append((source, key, tuple(value.shape), tuple(target.shape)))
        else:
            result.matched[key] = value
    result.unused = [k for k in checkpoint_state if k not in taken]
    return result


def extract_state_dict(checkpoint: dict, prefix: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """The backbone weights of a loaded checkpoint.

    Unwraps ``state_dict``, strips a ``module.`` (DataParallel) prefix and, for a detector
    checkpoint, keeps only the ``backbone.`` entries (or those under ``prefix`` when given).
    """
    if not isinstance(checkpoint, dict):
        raise TypeError(f'a checkpoint must be a dict, got {type(checkpoint).__name__}')
    state = checkpoint.get('state_dict', checkpoint)
    state = {(k[len('module.'):] if k.startswith('module.') else k): v for k, v in state.items()}
    if prefix is None and any(k.startswith('backbone.') for k in state):
        prefix = 'backbone.'
    if prefix:
        prefix = prefix if prefix.endswith('.') else prefix + '.'
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if not state:
            raise KeyError(f'the checkpoint has no key starting with {prefix!r}')
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ValueError('the checkpoint holds no tensors')
    return tensors


def read_checkpoint(path: str, hint: str = '', prefix: Optional[str] = None,
                    map_location='cpu') -> Dict[str, torch.Tensor]:
    """Loads ``path`` (a local file or any mmengine URI) and returns its backbone state dict.

    A local path that does not exist raises FileNotFoundError naming it, followed by ``hint``.
    """
    if '://' not in path:
        resolved = osp.abspath(osp.expanduser(path))
        if not osp.isfile(resolved):
            raise FileNotFoundError(f'pretrained checkpoint {path!r} not found (looked for '
                                    f'{resolved}). {hint}'.strip())
    return extract_state_dict(_load_checkpoint(path, map_location=map_location), prefix)


def new_parameter_keys(model: nn.Module) -> List[str]:
    """State-dict keys that a stock ResNet checkpoint cannot provide.

    Every module may list, in ``new_submodules``, the names of its children (dotted paths
    allowed) that have no counterpart in a stock ResNet; their entries are the new keys.
    """
    prefixes = []
    for name, module in model.named_modules():
        for child in getattr(module, 'new_submodules', ()):
            prefixes.append(f'{name}.{child}.' if name else f'{child}.')
    return [k for k in model.state_dict() if k.startswith(tuple(prefixes))]


def _join(keys, limit: int = 60) -> str:
    shown = ', '.join(keys[:limit])
    return shown + (f', ... ({len(keys) - limit} more)' if len(keys) > limit else '')


def fit_pretrained(model: nn.Module, path: str, hint: str = '', prefix: Optional[str] = None,
                   map_location='cpu') -> StateDictMatch:
    """Reads a ResNet-layout checkpoint and pairs it with ``model``'s parameters.

    Parameters listed by :func:`new_parameter_keys` may be absent. Raises ValueError naming
    the keys when the checkpoint does not fit: a stock parameter missing or a block the model
    lacks (wrong depth), or a shape mismatch. Nothing is loaded yet.
    """
    state = read_checkpoint(path, hint=hint, prefix=prefix, map_location=map_location)
    result = match_state_dict(model.state_dict(), state)
    new_keys = set(new_parameter_keys(model))
    missing = [k for k in result.missing
               if k not in new_keys and not k.endswith(_IGNORED_WHEN_MISSING)]
    modules = {name for name, _ in model.named_modules()}
    foreign = [k for k in result.unused
               if not k.startswith('fc.') and k.rpartition('.')[0] not in modules]
    name = _model_name(model)
    problems = []
    if result.mismatched:
        problems.append('shape mismatch (checkpoint vs model):\n' + result.describe_mismatches())
    if missing:
        problems.append(f'{len(missing)} ResNet parameters missing from the checkpoint '
                        f'(wrong depth or not a ResNet checkpoint): {_join(missing)}')
    if foreign:
        problems.append(f'{len(foreign)} checkpoint keys belong to modules {name} does not '
                        f'have (wrong depth?): {_join(foreign)}')
    if problems:
        raise ValueError(f'checkpoint {path!r} does not fit {name}:\n' + '\n'.join(problems))
    return result


def _model_name(model: nn.Module) -> str:
    return type(model).__name__ + (f'-{model.depth}' if hasattr(model, 'depth') else '')


def apply_pretrained(model: nn.Module, fitted: StateDictMatch, path: str) -> None:
    """Loads what :func:`fit_pretrained` matched; logs the new and the unused keys."""
    model.load_state_dict(fitted.matched, strict=False)
    new_keys = set(new_parameter_keys(model))
    kept = [k for k in fitted.missing if k in new_keys]
    name = _model_name(model)
    logger = MMLogger.get_current_instance()
    logger.info(f'{name}: loaded {len(fitted.matched)} tensors from {path}')
    logger.info(f'{name}: {len(kept)} new parameters not in the checkpoint keep their '
                f'initialisation: {_join(kept) or "none"}')
    logger.info(f'{name}: {len(fitted.unused)} checkpoint keys unused: '
                f'{_join(fitted.unused) or "none"}')


def strip_pretrained(model_cfg: dict) -> dict:
    """A copy of a model config without ``Pretrained`` init_cfgs (weights come from the
    checkpoint to export, or stay as built)."""
    model_cfg = copy.deepcopy(model_cfg)
    for owner in (model_cfg, model_cfg.get('backbone') or {}):
        init_cfg = owner.get('init_cfg')
        if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
            owner['init_cfg'] = None
        elif isinstance(init_cfg, (list, tuple)):
            owner['init_cfg'] = [c for c in init_cfg if c.get('type') != 'Pretrained'] or None
    return model_cfg
