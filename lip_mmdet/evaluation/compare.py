"""Side-by-side comparison of detection runs (work dirs) by AP and AP per object size.

A run's numbers come from, in order of preference:

1. ``<work_dir>/size_aware_metrics.json``, the report ``SizeAwareCocoMetric`` writes;
2. the last record holding ``<prefix>/<metric>_mAP`` in mmengine's scalar logs,
   newest first: ``<work_dir>/<timestamp>/vis_data/*.json``, then
   ``<work_dir>/<timestamp>/*.json``.

Scalar logs carry the size bins too when the run used ``SizeAwareCocoMetric``
(``coco/bbox_mAP_tiny``...); with the stock ``CocoMetric`` only COCO's s/m/l exist.
"""
import glob
import json
import os.path as osp
import re
from typing import Dict, List, Optional, Sequence

from terminaltables import AsciiTable

__all__ = ['load_run_metrics', 'format_comparison', 'plot_ap_by_size', 'REPORT_FILE']

REPORT_FILE = 'size_aware_metrics.json'
COCO_KEYS = ('mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l')
_COCO_SIZE_LABELS = {'mAP_s': 'COCO small (<32²)', 'mAP_m': 'COCO medium',
                     'mAP_l': 'COCO large (>96²)'}


def _from_report(path: str, metric: str) -> Optional[Dict]:
    with open(path) as f:
        report = json.load(f)
    coco = {k[len(metric) + 1:]: v for k, v in report.get('coco', {}).items()
            if k.startswith(f'{metric}_')}
    bins_report = report.get('metrics', {}).get(metric)
    if 'mAP' not in coco or bins_report is None:
        return None
    return dict(coco={k: coco[k] for k in COCO_KEYS if k in coco},
                bins={name: entry['AP'] for name, entry in bins_report['bins'].items()},
                bin_areas={name: entry['area'] for name, entry in bins_report['bins'].items()},
                source=path, epoch=report.get('epoch'), iter=report.get('iter'))


def _from_scalars(record: Dict, metric: str) -> Dict:
    """Split a flat scalar record (``coco/bbox_mAP_tiny``: ...) into COCO keys and bins."""
    coco, bins = {}, {}
    pattern = re.compile(rf'(?:^|/){re.escape(metric)}_(mAP(?:_\w+)?)$')
    for key, value in record.items():
        match = pattern.search(key)
        if not match:
            continue
        name = match.group(1)
        if name in COCO_KEYS:
            coco[name] = value
        elif name.startswith('mAP_'):
            bins[name[len('mAP_'):]] = value
    return dict(coco=coco, bins=bins)


def _last_record_with(path: str, key_pattern: re.Pattern) -> Optional[Dict]:
    found = None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and any(key_pattern.search(k) for k in record):
                found = record
    return found


def load_run_metrics(work_dir: str, metric: str = 'bbox') -> Dict:
    """AP numbers of one run: ``{'coco': {mAP, mAP_50, ...}, 'bins': {name: AP},
    'source': path}`` (from a report also ``'bin_areas': {name: [lo, hi]}``); raises
    FileNotFoundError naming what was searched."""
    if not osp.isdir(work_dir):
        raise FileNotFoundError(f'work dir {work_dir!r} does not exist')
    report_path = osp.join(work_dir, REPORT_FILE)
    if osp.isfile(report_path):
        run = _from_report(report_path, metric)
        if run is not None:
            return run
    key_pattern = re.compile(rf'(?:^|/){re.escape(metric)}_mAP$')
    candidates = (glob.glob(osp.join(work_dir, '*', 'vis_data', '*.json'))
                  + glob.glob(osp.join(work_dir, '*', '*.json')))
    for path in sorted(candidates, key=osp.getmtime, reverse=True):
        record = _last_record_with(path, key_pattern)
        if record is not None:
            run = _from_scalars(record, metric)
            run.update(source=path, epoch=record.get('epoch'), iter=record.get('step'))
            return run
    raise FileNotFoundError(
        f'no {metric} metrics in {work_dir!r}: looked for {REPORT_FILE} and for '
        f'"{metric}_mAP" in */vis_data/*.json and */*.json')


def _size_columns(runs: Sequence[Dict]) -> List[str]:
    """Size bins present in any run, first-seen order; COCO s/m/l when none has bins."""
    columns: List[str] = []
    for run in runs:
        columns += [name for name in run['bins'] if name not in columns]
    return columns


def _bin_label(name: str, runs: Sequence[Dict]) -> str:
    """``name`` plus its object side range in px when a report gave its area range."""
    for run in runs:
        if name in run.get('bin_areas', {}):
            low, high = (float(v) ** 0.5 for v in run['bin_areas'][name])
            if high >= 1e4:
                sides = f'> {low:.0f} px'
            elif low == 0:
                sides = f'< {high:.0f} px'
            else:
                sides = f'{low:.0f}-{high:.0f} px'
            return f'{name}\n({sides})'
    return name


def _cell(value) -> str:
    return '-' if value is None else f'{value:.3f}'


def format_comparison(runs: Sequence[Dict], names: Sequence[str]) -> str:
    """Text table: one row per run, AP/AP50/AP75, COCO s/m/l and every size bin."""
    bins = _size_columns(runs)
    header = ['run', 'AP', 'AP50', 'AP75', 'AP_s', 'AP_m', 'AP_l'] + [f'AP_{b}' for b in bins]
    rows = [header]
    for name, run in zip(names, runs):
        rows.append([name] + [_cell(run['coco'].get(k)) for k in COCO_KEYS]
                    + [_cell(run['bins'].get(b)) for b in bins])
    return AsciiTable(rows).table


def plot_ap_by_size(runs: Sequence[Dict], names: Sequence[str], out_file: str,
                    title: str = 'AP by object size') -> str:
    """Grouped bar chart (one group per size bin, one bar per run) saved to ``out_file``.

    A value of -1 (no ground truth of that size) or a missing bin draws no bar.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    bins = _size_columns(runs)
    if bins:
        labels = [_bin_label(b, runs) for b in bins]
        values = [[run['bins'].get(b) for b in bins] for run in runs]
    else:
        labels = [_COCO_SIZE_LABELS[k] for k in ('mAP_s', 'mAP_m', 'mAP_l')]
        values = [[run['coco'].get(k) for k in ('mAP_s', 'mAP_m', 'mAP_l')] for run in runs]
    width = 0.8 / max(len(runs), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(labels) * max(len(runs), 1) ** 0.5),
                                    4.0))
    for r, (name, run_values) in enumerate(zip(names, values)):
        xs = [i + (r - (len(runs) - 1) / 2) * width for i in range(len(labels))]
        heights = [v if v is not None and v >= 0 else 0.0 for v in run_values]
        bars = ax.bar(xs, heights, width=width, label=name)
        for bar, value in zip(bars, run_values):
            if value is None or value < 0:
                bar.set_visible(False)
                continue
            ax.annotate(f'{value:.2f}', (bar.get_x() + bar.get_width() / 2, value),
                        ha='center', va='bottom', fontsize=7)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels)
    ax.set_ylabel('AP @[.50:.95]')
    ax.set_ylim(0, 1.05)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_file, dpi=120)
    plt.close(fig)
    return out_file
