"""Per-layer pooling behaviour over training, from ``PoolingStatsHook``'s logs or a checkpoint.

A run is a work dir (its ``<timestamp>/vis_data/scalars.json`` files, oldest first, holding
``<prefix>/<layer>/<statistic>`` records) or a checkpoint file; a work dir without logged
statistics falls back to its newest checkpoint. A checkpoint gives DPP's lambda and alpha
(from ``log_lambda`` / ``log_alpha``), final values only; LIP's effective window depends on
the input, so it comes from the logs only.
"""
import glob
import json
import os.path as osp
import re
from typing import Dict, List, Sequence

__all__ = ['load_pooling_history', 'plot_pooling_runs', 'STATISTICS']

#: statistic -> (axis label, reference lines)
STATISTICS = {
    'eff_window': ('LIP effective window exp(H)\n(1 = max-like, 9 = 3x3 average)', (1.0, 9.0)),
    'lambda_mean': ('DPP lambda, mean over channels\n(0 = average; large = max-like)', (1.0, )),
    'alpha_mean': ('DPP alpha, mean over channels', (1.0, )),
}
_SPREAD = {'lambda_mean': 'lambda_std', 'alpha_mean': 'alpha_std'}
_KEY = re.compile(r'^(?P<prefix>[^/]+)/(?P<layer>.+)/(?P<stat>eff_window|lambda_mean|'
                  r'lambda_std|alpha_mean|alpha_std)$')
LOG_ALPHA_MAX = 10.0


def _depth_key(layer: str):
    """Stem first, then stage and block number (layer2.0 < layer3.0), then the name."""
    match = re.search(r'layer(\d+)\.(\d+)', layer)
    return (int(match.group(1)), int(match.group(2)), layer) if match else (0, 0, layer)


def _from_scalars(paths: Sequence[str]) -> Dict:
    """``{stat: {layer: {iter: value}}}`` from scalar logs; one entry per measured iter."""
    series: Dict[str, Dict[str, Dict[int, float]]] = {}
    for path in paths:
        with open(path) as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                for key, value in record.items():
                    match = _KEY.match(key)
                    if not match:
                        continue
                    step = int(record.get(f'{match.group("prefix")}/iter',
                                          record.get('step', 0)))
                    series.setdefault(match.group('stat'), {}).setdefault(
                        match.group('layer'), {})[step] = float(value)
    return series


def _from_checkpoint(path: str) -> Dict:
    """DPP lambda / alpha statistics of a checkpoint (at its iteration, else 0)."""
    import torch
    from mmengine.runner.checkpoint import _load_checkpoint

    checkpoint = _load_checkpoint(path, map_location='cpu', logger='silent')
    state = checkpoint.get('state_dict', checkpoint)
    step = int((checkpoint.get('meta') or {}).get('iter', 0) or 0)
    series: Dict[str, Dict[str, Dict[int, float]]] = {}
    for key, value in state.items():
        for param, stat in (('log_lambda', 'lambda'), ('log_alpha', 'alpha')):
            if not key.endswith('.' + param):
                continue
            layer = key[:-len(param) - 1]
            raw = value.float()
            values = torch.exp(raw.clamp(max=LOG_ALPHA_MAX) if stat == 'alpha' else raw)
            std = float(values.std()) if values.numel() > 1 else 0.0
            series.setdefault(f'{stat}_mean', {}).setdefault(layer, {})[step] = \
                float(values.mean())
            series.setdefault(f'{stat}_std', {}).setdefault(layer, {})[step] = std
    return series


def _newest_checkpoint(work_dir: str):
    found = sorted(glob.glob(osp.join(work_dir, '*.pth')), key=osp.getmtime)
    return found[-1] if found else None


def load_pooling_history(path: str) -> Dict:
    """A run's pooling statistics.

    Args:
        path: a work dir or a checkpoint file.

    Returns:
        ``dict(source=path read, series={stat: {layer: {iter: value}}})``.

    Raises:
        FileNotFoundError: ``path`` does not exist, or holds no pooling statistics.
    """
    if osp.isfile(path):
        series, source = _from_checkpoint(path), path
    elif osp.isdir(path):
        logs = sorted(glob.glob(osp.join(path, '*', 'vis_data', 'scalars.json')))
        series, source = _from_scalars(logs), ', '.join(logs)
        checkpoint = _newest_checkpoint(path)
        if not series and checkpoint:
            series, source = _from_checkpoint(checkpoint), checkpoint
    else:
        raise FileNotFoundError(f'{path}: no such work dir or checkpoint')
    if not series:
        raise FileNotFoundError(
            f'{path}: no pooling statistics (PoolingStatsHook records in '
            '*/vis_data/scalars.json, or DPP parameters in a checkpoint)')
    return dict(source=source, series=series)


def plot_pooling_runs(runs: Sequence[Dict], names: Sequence[str], out_file: str) -> str:
    """One column per run; per statistic two panels: each layer's value over training
    iterations, and the final value per layer depth (error bar: spread over channels for
    DPP). Dotted lines mark the reference values (LIP: 1 and 9; DPP: 1, the initial value).
    """
    from matplotlib.figure import Figure

    panels: List[List] = []
    for run in runs:
        panels.append([stat for stat in STATISTICS if stat in run['series']])
    rows = 2 * max(len(p) for p in panels)
    fig = Figure(figsize=(5.5 * len(runs), 3.2 * rows))
    axes = fig.subplots(rows, len(runs), squeeze=False)
    for column, (run, name, stats) in enumerate(zip(runs, names, panels)):
        for index, stat in enumerate(stats):
            label, references = STATISTICS[stat]
            layers = sorted(run['series'][stat], key=_depth_key)
            history, final = axes[2 * index, column], axes[2 * index + 1, column]
            spreads = run['series'].get(_SPREAD.get(stat, ''), {})
            finals, errors = [], []
            for layer in layers:
                points = sorted(run['series'][stat][layer].items())
                history.plot([p[0] for p in points], [p[1] for p in points],
                             marker='.' if len(points) < 30 else None,
                             label=layer.replace('backbone.', ''))
                finals.append(points[-1][1])
                last = sorted(spreads.get(layer, {}).items())
                errors.append(last[-1][1] if last else 0.0)
            for ax in (history, final):
                for value in references:
                    ax.axhline(value, color='gray', linestyle=':', linewidth=0.8)
            history.set_title(f'{name}: over training', fontsize=9)
            history.set_xlabel('iteration')
            history.set_ylabel(label, fontsize=8)
            history.legend(fontsize=6)
            depth = range(len(layers))
            final.errorbar(depth, finals, yerr=errors if any(errors) else None, fmt='o-',
                           capsize=3)
            final.set_xticks(list(depth))
            final.set_xticklabels([layer.replace('backbone.', '') for layer in layers],
                                  rotation=30, fontsize=6, ha='right')
            final.set_title(f'{name}: final value by depth', fontsize=9)
            final.set_ylabel(label, fontsize=8)
            if stat == 'lambda_mean' and all(v > 0 for v in finals) and \
                    max(finals) / min(finals) > 20:
                final.set_yscale('log')
        for index in range(2 * len(stats), rows):
            axes[index, column].axis('off')
    fig.tight_layout()
    fig.savefig(out_file, dpi=100)
    return out_file
