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

from .ap_table import ap_table, format_ap

__all__ = ['REPORT_FILE', 'format_comparison', 'gt_count_mismatch', 'load_run_metrics',
           'plot_ap_by_size', 'run_names']

REPORT_FILE = 'size_aware_metrics.json'
COCO_KEYS = ('mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l')
_COCO_SIZE_LABELS = {'mAP_s': 'COCO small (<32²)', 'mAP_m': 'COCO medium',
                     'mAP_l': 'COCO large (>96²)'}


def _from_report(path: str, metric: str) -> Optional[Dict]:
    """A run's numbers from its report; None when the report has no ``metric`` numbers
    because that metric was not evaluated (the scalar logs may still have them)."""
    try:
        with open(path) as f:
            report = json.load(f)
    except ValueError:
        raise ValueError(f'{path} is empty or not valid JSON (was the evaluation '
                         f'interrupted while writing it?)') from None
    if not isinstance(report, dict):
        raise ValueError(f'{path} is not a {REPORT_FILE} report (a JSON object)')
    if metric in report.get('no_predictions', ()):
        raise ValueError(f'{path}: the evaluation had no {metric} predictions (the model '
                         f'detected nothing), so there are no {metric} numbers to compare')
    coco = {k[len(metric) + 1:]: v for k, v in report.get('coco', {}).items()
            if k.startswith(f'{metric}_')}
    bins_report = report.get('metrics', {}).get(metric)
    if 'mAP' not in coco or bins_report is None:
        return None
    bins = bins_report['bins']
    return dict(coco={k: coco[k] for k in COCO_KEYS if k in coco},
                bins={name: entry['AP'] for name, entry in bins.items()},
                bin_areas={name: entry['area'] for name, entry in bins.items()},
                num_gt={name: entry['num_gt'] for name, entry in bins.items()},
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
    'source': path}``; from a report also ``'bin_areas': {name: [lo, hi]}`` and
    ``'num_gt': {name: ground-truth objects}``.

    Raises:
        FileNotFoundError: the work dir does not exist or holds no ``metric`` numbers.
        ValueError: the report is unreadable or records that there were no predictions.
    """
    if not osp.isdir(work_dir):
        raise FileNotFoundError(f'work dir {work_dir!r} does not exist')
    report_path = osp.join(work_dir, REPORT_FILE)
    evaluated = None
    if osp.isfile(report_path):
        run = _from_report(report_path, metric)
        if run is not None:
            return run
        with open(report_path) as f:
            evaluated = sorted(json.load(f).get('metrics', {}))
    key_pattern = re.compile(rf'(?:^|/){re.escape(metric)}_mAP$')
    candidates = (glob.glob(osp.join(work_dir, '*', 'vis_data', '*.json'))
                  + glob.glob(osp.join(work_dir, '*', '*.json')))
    for path in sorted(candidates, key=osp.getmtime, reverse=True):
        record = _last_record_with(path, key_pattern)
        if record is not None:
            run = _from_scalars(record, metric)
            run.update(source=path, epoch=record.get('epoch'), iter=record.get('step'))
            return run
    if evaluated:
        raise FileNotFoundError(
            f'no {metric} metrics in {work_dir!r}: the run was evaluated for '
            f'{", ".join(evaluated)} only ({report_path})')
    raise FileNotFoundError(
        f'no {metric} metrics in {work_dir!r}: looked for {REPORT_FILE} and for '
        f'"{metric}_mAP" in */vis_data/*.json and */*.json (has the run been evaluated?)')


def run_names(paths: Sequence[str], names: Optional[Sequence[str]] = None,
              what: str = 'runs') -> List[str]:
    """The names of runs given by folder or file: ``names`` when given, else each path's last
    component. Raises ValueError when ``names`` does not give one name per path (``what``
    says what the paths are in the message)."""
    if not names:
        return [osp.basename(osp.normpath(path)) for path in paths]
    if len(names) != len(paths):
        raise ValueError(f'--names has {len(names)} entries for {len(paths)} {what}')
    return list(names)


def gt_count_mismatch(runs: Sequence[Dict], names: Sequence[str]) -> Optional[str]:
    """A warning when runs that report ground-truth counts per bin report different ones
    (they were evaluated on different validation sets); None when they agree."""
    counted = [(name, run['num_gt']) for name, run in zip(names, runs) if run.get('num_gt')]
    if len({tuple(sorted(counts.items())) for _, counts in counted}) <= 1:
        return None
    listed = '; '.join(f'{name}: ' + ', '.join(f'{b} {n}' for b, n in counts.items())
                       for name, counts in counted)
    return (f'the runs were evaluated on different validation sets (ground-truth objects '
            f'per bin differ: {listed}); their APs are not directly comparable')


def _size_columns(runs: Sequence[Dict]) -> List[str]:
    """Size bins present in any run, first-seen order; COCO s/m/l when none has bins."""
    columns: List[str] = []
    for run in runs:
        columns += [name for name in run['bins'] if name not in columns]
    return columns


def _bin_sides(name: str, runs: Sequence[Dict]) -> Optional[str]:
    """The object side range of bin ``name`` in px (e.g. ``16-32 px``) when a report gave
    its area range, else None."""
    for run in runs:
        if name in run.get('bin_areas', {}):
            low, high = (float(v) ** 0.5 for v in run['bin_areas'][name])
            if high >= 1e4:
                return f'> {low:.0f} px'
            if low == 0:
                return f'< {high:.0f} px'
            return f'{low:.0f}-{high:.0f} px'
    return None


def _gt_counts(name: str, runs: Sequence[Dict]) -> List[int]:
    """The distinct ground-truth counts the runs report for bin ``name``."""
    return list(dict.fromkeys(run['num_gt'][name] for run in runs
                              if name in run.get('num_gt', {})))


def _bin_label(name: str, runs: Sequence[Dict]) -> str:
    """Chart label: ``name``, its side range and its ground-truth count(s)."""
    sides = _bin_sides(name, runs)
    label = name if sides is None else f'{name}\n({sides})'
    counts = _gt_counts(name, runs)
    if counts:
        label += '\nn=' + '/'.join(str(n) for n in counts)
    return label


_COCO_ROW_LABELS = {'mAP': 'AP', 'mAP_50': 'AP50', 'mAP_75': 'AP75',
                    'mAP_s': 'AP_s (COCO, < 32 px)', 'mAP_m': 'AP_m (COCO, 32-96 px)',
                    'mAP_l': 'AP_l (COCO, > 96 px)'}


def format_comparison(runs: Sequence[Dict], names: Sequence[str]) -> str:
    """Text table with one column per run and one row per number (AP, AP50, AP75, COCO's
    s/m/l, then every size bin), narrow enough for a terminal. A ``#gt`` column gives the
    ground-truth objects per bin (one column per run when the runs disagree)."""
    bins = _size_columns(runs)
    counted = [(name, run['num_gt']) for name, run in zip(names, runs) if run.get('num_gt')]
    if gt_count_mismatch(runs, names) is None:
        counted = counted[:1]
    gt_titles = ['#gt' if len(counted) == 1 else f'#gt {name}' for name, _ in counted]
    rows = [[''] + list(names) + gt_titles]
    for key in COCO_KEYS:
        rows.append([_COCO_ROW_LABELS[key]] + [format_ap(run['coco'].get(key)) for run in runs]
                    + [''] * len(counted))
    for name in bins:
        sides = _bin_sides(name, runs)
        rows.append([f'AP_{name}' + ('' if sides is None else f' ({sides})')]
                    + [format_ap(run['bins'].get(name)) for run in runs]
                    + [str(counts[name]) if name in counts else '-' for _, counts in counted])
    return ap_table(rows, right_aligned=range(1, len(rows[0])))


def _noise(ap: float, num_gt: Optional[int]) -> float:
    """sqrt(AP (1 - AP) / n): the binomial standard error of a rate measured on n objects,
    a rough scale for how much a bin's AP can move when its few objects change."""
    if not num_gt or ap is None or ap < 0:
        return 0.0
    return (ap * (1 - ap) / num_gt) ** 0.5


def plot_ap_by_size(runs: Sequence[Dict], names: Sequence[str], out_file: str,
                    title: str = 'AP by object size') -> str:
    """Grouped bar chart (one group per size bin, one bar per run) saved to ``out_file``.

    Bins are labelled with their ground-truth count ``n`` and, where the run reports it,
    each bar carries an error bar of +-sqrt(AP (1 - AP) / n), so that a bin with a handful
    of objects shows how little its AP differences mean. A value of -1 (no ground truth of
    that size) or a missing bin draws no bar.
    """
    from matplotlib.figure import Figure

    bins = _size_columns(runs)
    if bins:
        labels = [_bin_label(b, runs) for b in bins]
        values = [[run['bins'].get(b) for b in bins] for run in runs]
        errors = [[_noise(run['bins'].get(b), run.get('num_gt', {}).get(b)) for b in bins]
                  for run in runs]
    else:
        labels = [_COCO_SIZE_LABELS[k] for k in ('mAP_s', 'mAP_m', 'mAP_l')]
        values = [[run['coco'].get(k) for k in ('mAP_s', 'mAP_m', 'mAP_l')] for run in runs]
        errors = [[0.0] * 3 for _ in runs]
    width = 0.8 / max(len(runs), 1)
    fig = Figure(figsize=(max(6.0, 1.6 * len(labels) * max(len(runs), 1) ** 0.5), 4.4))
    ax = fig.subplots()
    for r, (name, run_values, run_errors) in enumerate(zip(names, values, errors)):
        xs = [i + (r - (len(runs) - 1) / 2) * width for i in range(len(labels))]
        heights = [v if v is not None and v >= 0 else 0.0 for v in run_values]
        bars = ax.bar(xs, heights, width=width, label=name)
        for bar, value, error in zip(bars, run_values, run_errors):
            if value is None or value < 0:
                bar.set_visible(False)
                continue
            centre = bar.get_x() + bar.get_width() / 2
            if error > 0:
                ax.errorbar(centre, value, yerr=error, color='black', capsize=3,
                            linewidth=1)
            ax.annotate(f'{value:.2f}', (centre, value + error), ha='center', va='bottom',
                        fontsize=7)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels)
    ax.set_ylabel('AP @[.50:.95]')
    ax.set_ylim(0, 1.1)
    ax.set_title(title)
    ax.legend()
    if any(e > 0 for run_errors in errors for e in run_errors):
        fig.text(0.01, 0.01, 'n: ground-truth objects per bin; error bars: '
                 '\u00b1\u221a(AP(1\u2212AP)/n), a rough scale of the noise of bins with '
                 'few objects', fontsize=7, ha='left', va='bottom')
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(out_file, dpi=120)
    return out_file
