"""The seed study's figure: per-config means with their spread, and paired differences with
their confidence intervals."""
from typing import Dict

__all__ = ['plot_seed_study']


def plot_seed_study(study: Dict, out_file: str) -> str:
    """Draw :func:`~lip_mmdet.evaluation.seed_study.summarize_study`'s result to ``out_file``.

    Left: per metric, one bar per config at the mean over seeds, error bar = 1 standard
    deviation, dots = the single seeds. Right: per metric and per config after the first,
    the mean paired difference to the first config, error bar = the confidence interval
    (none with a single seed), dots = the per-seed differences; a dashed line at 0.
    """
    from matplotlib import rcParams
    from matplotlib.figure import Figure

    metrics, names = study['metrics'], list(study['summary'])
    others = names[1:]
    fig = Figure(figsize=(14 if others else 8, 4.8))
    axes = fig.subplots(1, 2 if others else 1, squeeze=False)
    colors = rcParams['axes.prop_cycle'].by_key()['color']
    width = 0.8 / max(len(names), 1)
    ax = axes[0, 0]
    for i, name in enumerate(names):
        color = colors[i % len(colors)]
        for j, metric in enumerate(metrics):
            stats = study['summary'][name][metric]
            if stats['mean'] is None:
                continue
            x = j - 0.4 + width * (i + 0.5)
            ax.bar(x, stats['mean'], width * 0.9, color=color, alpha=0.75,
                   label=name if j == 0 else None,
                   yerr=stats['std'] if stats['std'] is not None else None, capsize=3)
            ax.plot([x] * len(stats['values']), stats['values'], 'k.', markersize=4)
    seeds = study.get('seeds', [])
    ax.set_title(f'mean over {len(seeds)} seeds (error bar: 1 std, dots: seeds)')
    ax.set_xticks(range(len(metrics)))
    ax.set_xticklabels(metrics, rotation=30)
    ax.set_ylabel('bbox AP')
    ax.legend(fontsize=8, loc='best')
    if others:
        ax = axes[0, 1]
        width = 0.8 / len(others)
        level = study.get('level', 0.95)
        for i, name in enumerate(others):
            color = colors[(i + 1) % len(colors)]
            for j, metric in enumerate(metrics):
                paired = study['paired'][name][metric]
                if paired['mean'] is None:
                    continue
                x = j - 0.4 + width * (i + 0.5)
                yerr = None
                if paired['low'] is not None:
                    yerr = [[paired['mean'] - paired['low']], [paired['high'] - paired['mean']]]
                ax.errorbar(x, paired['mean'], yerr=yerr, fmt='o', color=color, capsize=4,
                            label=f'{name} - {names[0]}' if j == 0 else None)
                ax.plot([x] * len(paired['diffs']), paired['diffs'], '.', color=color,
                        alpha=0.5, markersize=4)
        ax.axhline(0.0, color='k', linestyle='--', linewidth=0.8)
        ax.set_title(f'paired difference to {names[0]} (error bar: {100 * level:.0f}% t '
                     f'interval)')
        ax.set_xticks(range(len(metrics)))
        ax.set_xticklabels(metrics, rotation=30)
        ax.set_ylabel('bbox AP difference')
        ax.legend(fontsize=8, loc='best')
    fig.tight_layout()
    fig.savefig(out_file, dpi=100)
    return out_file
