"""Seed studies: train several configs with several seeds, then compare them with error bars.

:func:`run_seed_study` trains every (config, seed) pair with a training function (the demo's
``lip_mmdet.demo.train_demo``), skipping pairs whose result file already exists, so an
interrupted study resumes where it stopped. :func:`summarize_study` reduces the results to

* per config and metric: mean, sample standard deviation (n - 1) and the values;
* per config other than the first, and metric: the paired difference ``config - first`` for
  every seed both ran, its mean and standard deviation, and the 95% confidence interval of
  the mean difference from Student's t distribution with n - 1 degrees of freedom.

The t quantile is computed here (no SciPy needed): the t CDF is expressed through the
regularized incomplete beta function, evaluated with its continued fraction (modified Lentz
method), and inverted by bisection.
"""
import json
import math
import os
import os.path as osp
import shutil
import time
from typing import Callable, Dict, List, Mapping, Optional, Sequence

__all__ = ['t_cdf', 't_quantile', 'mean_interval', 'run_metrics', 'summarize_study',
           'format_study', 'run_seed_study', 'RESULT_FILE', 'STUDY_FILE',
           'BASE_METRICS']

RESULT_FILE = 'seed_study_result.json'
STUDY_FILE = 'seed_study.json'
#: (name in the study, key in a run's ``coco`` dict); size bins follow as ``AP_<bin>``
BASE_METRICS = (('AP', 'mAP'), ('AP50', 'mAP_50'), ('AP_s', 'mAP_s'))


# --- Student's t distribution ------------------------------------------------------------
def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz, rel. tol 1e-15)."""
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 10000):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < eps:
            return result
    raise ArithmeticError(f'incomplete beta continued fraction did not converge '
                          f'(a={a}, b={b}, x={x})')


def _regularized_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x)
                 + b * math.log1p(-x))
    # the continued fraction converges fast for x < (a + 1) / (a + b + 2); use symmetry else
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` > 0 degrees of freedom."""
    if df <= 0:
        raise ValueError(f'degrees of freedom must be positive, got {df}')
    tail = 0.5 * _regularized_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p (0 < p < 1), to about 1e-12 relative."""
    if not 0.0 < p < 1.0:
        raise ValueError(f'p must lie in (0, 1), got {p}')
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        low, high = high, 2.0 * high
    for _ in range(200):
        mid = 0.5 * (low + high)
        if t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
        if high - low <= 1e-13 * max(1.0, high):
            break
    return 0.5 * (low + high)


def mean_interval(values: Sequence[float], level: float = 0.95) -> Dict:
    """Mean, sample std and the t confidence interval of the mean of ``values``.

    Returns:
        ``dict(n, mean, std, t, low, high)``; with fewer than two values ``std``, ``t``,
        ``low`` and ``high`` are None (no spread can be estimated).
    """
    n = len(values)
    if n == 0:
        return dict(n=0, mean=None, std=None, t=None, low=None, high=None)
    mean = sum(values) / n
    if n < 2:
        return dict(n=n, mean=mean, std=None, t=None, low=None, high=None)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    t = t_quantile(0.5 + level / 2.0, n - 1)
    half = t * std / math.sqrt(n)
    return dict(n=n, mean=mean, std=std, t=t, low=mean - half, high=mean + half)


# --- results -------------------------------------------------------------------------------
def run_metrics(run: Mapping) -> Dict[str, Optional[float]]:
    """A run's study metrics from ``load_run_metrics``'s dict: AP, AP50, AP_s (COCO) and
    ``AP_<bin>`` per size bin; -1 (no ground truth of that size) becomes None."""
    values = {name: run['coco'].get(key) for name, key in BASE_METRICS}
    values.update({f'AP_{name}': value for name, value in run.get('bins', {}).items()})
    return {k: (None if v is None or v < 0 else float(v)) for k, v in values.items()}


def summarize_study(results: Mapping[str, Mapping[int, Mapping[str, Optional[float]]]],
                    level: float = 0.95) -> Dict:
    """Per-config statistics and paired differences against the first config.

    Args:
        results: ``{config name: {seed: {metric: value or None}}}``, the first config being
            the reference.
        level: confidence level of the intervals.

    Returns:
        ``dict(metrics, summary, paired)``: ``summary[config][metric]`` holds ``n``, ``mean``,
        ``std`` and ``values`` (seed order); ``paired[config][metric]`` (configs after the
        first) holds ``seeds``, ``diffs`` and :func:`mean_interval`'s keys.
    """
    names = list(results)
    metrics: List[str] = []
    for runs in results.values():
        for values in runs.values():
            metrics += [m for m in values if m not in metrics]
    summary = {}
    for name, runs in results.items():
        summary[name] = {}
        for metric in metrics:
            values = [runs[s][metric] for s in sorted(runs) if runs[s].get(metric) is not None]
            stats = mean_interval(values, level)
            summary[name][metric] = dict(n=stats['n'], mean=stats['mean'], std=stats['std'],
                                         values=values)
    paired = {}
    reference = results[names[0]] if names else {}
    for name in names[1:]:
        paired[name] = {}
        for metric in metrics:
            seeds = [s for s in sorted(results[name]) if s in reference
                     and results[name][s].get(metric) is not None
                     and reference[s].get(metric) is not None]
            diffs = [results[name][s][metric] - reference[s][metric] for s in seeds]
            paired[name][metric] = dict(seeds=seeds, diffs=diffs, **mean_interval(diffs, level))
    return dict(metrics=metrics, summary=summary, paired=paired, level=level)


def _number(value, digits=3) -> str:
    return '-' if value is None else f'{value:.{digits}f}'


def format_study(study: Mapping) -> str:
    """Markdown tables of a study: mean +- std per config and metric, then each config's
    paired difference to the first as ``mean [low, high]`` (the confidence interval)."""
    metrics, names = study['metrics'], list(study['summary'])
    lines = ['| config | ' + ' | '.join(metrics) + ' |', '|---' * (len(metrics) + 1) + '|']
    for name in names:
        cells = []
        for metric in metrics:
            stats = study['summary'][name][metric]
            cells.append(_number(stats['mean']) if stats['std'] is None else
                         f"{_number(stats['mean'])} +- {_number(stats['std'])}")
        lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
    if names[1:]:
        level = 100 * study.get('level', 0.95)
        lines += ['', f'| paired difference, mean [{level:.0f}% interval] | '
                  + ' | '.join(metrics) + ' |', '|---' * (len(metrics) + 1) + '|']
        for name in names[1:]:
            cells = []
            for metric in metrics:
                paired = study['paired'][name][metric]
                interval = '' if paired['low'] is None else \
                    f" [{_number(paired['low'])}, {_number(paired['high'])}]"
                cells.append(f"{_number(paired['mean'], 3)}{interval}")
            lines.append(f'| {name} - {names[0]} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f'{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}'


def run_seed_study(configs: Sequence[str], seeds: Sequence[int], work_dir: str,
                   train_fn: Callable[..., Mapping], train_kwargs: Optional[Mapping] = None,
                   log: Callable[[str], None] = print) -> Dict:
    """Train every config with every seed (skipping finished runs) and summarize.

    Runs go seed by seed (every config with the first seed, then with the second, ...).

    Run (config ``c``, seed ``s``) works in ``<work_dir>/<c's file name>/seed_<s>`` and,
    once trained, leaves :data:`RESULT_FILE` there; a pair whose file exists is read, not
    trained again, and a run folder without it (an interrupted attempt) is removed before
    the run is trained again. The study is written to ``<work_dir>/seed_study.json``.

    Args:
        configs: config paths; the first is the reference of the paired differences.
        seeds: seeds; each run gets ``seed=s``.
        work_dir: the study's folder.
        train_fn: ``train_fn(config=..., work_dir=..., seed=..., **train_kwargs)`` trains
            one run and returns ``load_run_metrics``'s dict.
        train_kwargs: further arguments of ``train_fn`` (epochs, data folder, ...).
        log: where progress lines go.

    Returns:
        The study dict (also written to the JSON file).
    """
    names = [osp.splitext(osp.basename(c))[0] for c in configs]
    if len(set(names)) != len(names):
        raise ValueError(f'config file names must differ (they name the runs), got {names}')
    if len(set(seeds)) != len(seeds):
        raise ValueError(f'seeds must differ, got {list(seeds)}')
    # seed by seed: a stopped study already holds complete pairs of runs to compare
    pairs = [(name, config, seed) for seed in seeds for name, config in zip(names, configs)]
    results: Dict[str, Dict[int, Dict]] = {name: {} for name in names}
    start, trained_seconds, trained = time.perf_counter(), 0.0, 0
    for index, (name, config, seed) in enumerate(pairs, 1):
        run_dir = osp.join(work_dir, name, f'seed_{seed}')
        result_file = osp.join(run_dir, RESULT_FILE)
        label = f'run {index}/{len(pairs)}: {name} seed {seed}'
        if osp.isfile(result_file):
            with open(result_file) as f:
                results[name][seed] = json.load(f)['metrics']
            log(f'[study] {label}: done before, read {result_file}')
            continue
        remaining = sum(1 for n, _, s in pairs[index - 1:]
                        if not osp.isfile(osp.join(work_dir, n, f'seed_{s}', RESULT_FILE)))
        eta = (f', ETA {_clock(trained_seconds / trained * remaining)}' if trained
               else '')
        log(f'[study] {label} (elapsed {_clock(time.perf_counter() - start)}{eta})')
        if osp.isdir(run_dir):  # its logs would mix with the new run's
            shutil.rmtree(run_dir)
            log(f'[study] {label}: removed the unfinished earlier attempt in {run_dir}')
        run_start = time.perf_counter()
        run = train_fn(config=config, work_dir=run_dir, seed=seed, **dict(train_kwargs or {}))
        seconds = time.perf_counter() - run_start
        trained_seconds, trained = trained_seconds + seconds, trained + 1
        metrics = run_metrics(run)
        results[name][seed] = metrics
        os.makedirs(run_dir, exist_ok=True)
        with open(result_file, 'w') as f:
            json.dump(dict(config=config, seed=seed, seconds=seconds, metrics=metrics,
                           source=run.get('source')), f, indent=1)
        shown = '  '.join(f'{k} {v:.3f}' for k, v in metrics.items() if v is not None)
        log(f'[study] {label} finished in {_clock(seconds)}: {shown}')
    study = summarize_study(results)
    study.update(configs=[dict(name=n, path=c) for n, c in zip(names, configs)],
                 seeds=list(seeds), settings=dict(train_kwargs or {}),
                 runs={n: {str(s): v for s, v in r.items()} for n, r in results.items()})
    os.makedirs(work_dir, exist_ok=True)
    with open(osp.join(work_dir, STUDY_FILE), 'w') as f:
        json.dump(study, f, indent=1)
    log(f'[study] {len(pairs)} runs in {_clock(time.perf_counter() - start)}: '
        f'{osp.join(work_dir, STUDY_FILE)}')
    return study
