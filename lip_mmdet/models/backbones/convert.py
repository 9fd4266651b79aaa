"""Conversion of the official LIP-ResNet checkpoints (``lip_resnet-50.pth``, ``-101.pth``).

The official state dict differs from :class:`LIPResNet`'s only in ``layer1.0``'s shortcut
(``downsample.{conv,bn}`` there, mmdet's ``downsample.{0,1}`` here) and in the classifier
``fc.*``, which a backbone drops. Conversion is strict: every backbone tensor must be filled
and every source key used.
"""
import re
from typing import Dict, Optional, Tuple

import torch

from .lip_resnet import LIPResNet
from .pretrained import _IGNORED_WHEN_MISSING, _join, extract_state_dict, match_state_dict

__all__ = ['infer_resnet_depth', 'convert_official_lip']

# Bottleneck blocks per stage -> depth (mmdet ResNet.arch_settings).
_DEPTH_BY_BLOCKS = {
    blocks: depth
    for depth, (_, blocks) in LIPResNet.arch_settings.items() if depth >= 50
}


def infer_resnet_depth(state_dict: Dict[str, torch.Tensor]) -> int:
    """Depth of a Bottleneck ResNet state dict from its number of blocks per stage."""
    counts = [0, 0, 0, 0]
    for key in state_dict:
        found = re.match(r'layer([1-4])\.(\d+)\.', key)
        if found:
            stage = int(found.group(1)) - 1
            counts[stage] = max(counts[stage], int(found.group(2)) + 1)
    depth = _DEPTH_BY_BLOCKS.get(tuple(counts))
    if depth is None:
        raise ValueError(f'cannot infer the depth: blocks per stage {tuple(counts)} match no '
                         f'LIP-ResNet ({ {d: b for b, d in _DEPTH_BY_BLOCKS.items()} })')
    return depth


def convert_official_lip(checkpoint: dict, depth: Optional[int] = None
                         ) -> Tuple[Dict[str, torch.Tensor], dict]:
    """Renames an official LIP-ResNet checkpoint to :class:`LIPResNet` keys.

    Args:
        checkpoint: the loaded official file (a bare state dict; ``state_dict`` / ``module.``
            wrappers are accepted too).
        depth: 50 / 101 / 152; inferred from the block counts when None.

    Returns:
        (state dict of LIPResNet(depth), info dict with ``depth`` and ``dropped_keys``).

    Raises:
        ValueError naming the keys when a backbone tensor stays unfilled, a source key goes
        unused or a shape differs (e.g. the wrong ``depth``).
    """
    source = extract_state_dict(checkpoint)
    dropped = sorted(k for k in source if k.startswith('fc.'))
    source = {k: v for k, v in source.items() if not k.startswith('fc.')}
    if depth is None:
        depth = infer_resnet_depth(source)
    model = LIPResNet(depth=depth)
    target = model.state_dict()
    result = match_state_dict(target, source)
    missing = [k for k in result.missing if not k.endswith(_IGNORED_WHEN_MISSING)]
    problems = []
    if missing:
        problems.append(f'{len(missing)} LIPResNet-{depth} tensors not in the source: '
                        f'{_join(missing)}')
    if result.unused:
        problems.append(f'{len(result.unused)} source keys unused: {_join(result.unused)}')
    if result.mismatched:
        problems.append('shape mismatch (source vs LIPResNet):\n' +
                        result.describe_mismatches())
    if problems:
        raise ValueError(f'the checkpoint is not an official LIP-ResNet-{depth}:\n' +
                         '\n'.join(problems))
    converted = {k: result.matched.get(k, target[k]) for k in target}
    model.load_state_dict(converted, strict=True)
    return converted, dict(depth=depth, dropped_keys=dropped)
