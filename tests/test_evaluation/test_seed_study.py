"""Student's t quantiles and the seed study's statistics on known numbers."""
import math

import pytest

from lip_mmdet.evaluation.seed_study import (
    format_study,
    mean_interval,
    run_metrics,
    summarize_study,
    t_cdf,
    t_quantile,
)

# two-sided 95% (p = 0.975) and 90% (p = 0.95) critical values of Student's t, from the
# standard table (e.g. NIST/SEMATECH e-Handbook of Statistical Methods, section 1.3.6.7.2)
T_TABLE = [
    (1, 12.706, 6.314), (2, 4.303, 2.920), (3, 3.182, 2.353), (4, 2.776, 2.132),
    (5, 2.571, 2.015), (9, 2.262, 1.833), (10, 2.228, 1.812), (20, 2.086, 1.725),
    (30, 2.042, 1.697), (100, 1.984, 1.660),
]


@pytest.mark.parametrize('df, t975, t95', T_TABLE)
def test_t_quantile_matches_the_table(df, t975, t95):
    assert t_quantile(0.975, df) == pytest.approx(t975, abs=5e-4)
    assert t_quantile(0.95, df) == pytest.approx(t95, abs=5e-4)
    assert t_quantile(0.025, df) == pytest.approx(-t_quantile(0.975, df), rel=1e-12)
    assert t_cdf(t_quantile(0.975, df), df) == pytest.approx(0.975, abs=1e-12)


def test_t_distribution_limits_and_closed_forms():
    # df = 1 is the Cauchy distribution: F(t) = 1/2 + atan(t) / pi
    for t in (-3.0, -0.5, 0.0, 0.7, 10.0):
        assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-13)
    # df = 2: F(t) = 1/2 + t / (2 sqrt(2 + t^2))
    for t in (-2.0, 0.3, 4.0):
        assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-13)
    # large df approaches the normal quantile 1.959964
    assert t_quantile(0.975, 1e6) == pytest.approx(1.959964, abs=1e-5)
    with pytest.raises(ValueError):
        t_quantile(1.0, 3)
    with pytest.raises(ValueError):
        t_cdf(1.0, 0)


def test_mean_interval_on_known_numbers():
    stats = mean_interval([1.0, 2.0, 3.0])
    assert stats['mean'] == 2.0 and stats['std'] == pytest.approx(1.0)
    # 2 +- 4.3027 * 1 / sqrt(3)
    assert stats['low'] == pytest.approx(2 - 4.302653 / math.sqrt(3), abs=1e-5)
    assert stats['high'] == pytest.approx(2 + 4.302653 / math.sqrt(3), abs=1e-5)
    single = mean_interval([0.5])
    assert single['mean'] == 0.5 and single['std'] is None and single['low'] is None
    assert mean_interval([])['mean'] is None


def test_run_metrics_drops_bins_without_ground_truth():
    run = dict(coco=dict(mAP=0.5, mAP_50=0.7, mAP_75=0.6, mAP_s=0.4),
               bins=dict(tiny=0.3, small=0.45, large=-1.0))
    assert run_metrics(run) == dict(AP=0.5, AP50=0.7, AP_s=0.4, AP_tiny=0.3, AP_small=0.45,
                                    AP_large=None)


def test_summarize_study_pairs_by_seed():
    results = {
        'base': {0: dict(AP=0.50, AP_s=0.40), 1: dict(AP=0.52, AP_s=0.42),
                 2: dict(AP=0.54, AP_s=None)},
        'new': {0: dict(AP=0.53, AP_s=0.41), 1: dict(AP=0.56, AP_s=0.45),
                2: dict(AP=0.55, AP_s=0.47)},
    }
    study = summarize_study(results)
    assert study['metrics'] == ['AP', 'AP_s']
    assert study['summary']['base']['AP']['mean'] == pytest.approx(0.52)
    assert study['summary']['base']['AP']['std'] == pytest.approx(0.02)
    assert study['summary']['base']['AP_s']['n'] == 2  # the None is left out
    paired = study['paired']['new']['AP']
    assert paired['seeds'] == [0, 1, 2]
    assert paired['diffs'] == pytest.approx([0.03, 0.04, 0.01])
    assert paired['mean'] == pytest.approx(0.08 / 3)
    sd = math.sqrt(((0.03 - 0.08 / 3) ** 2 + (0.04 - 0.08 / 3) ** 2
                    + (0.01 - 0.08 / 3) ** 2) / 2)
    assert paired['std'] == pytest.approx(sd)
    assert paired['high'] - paired['mean'] == pytest.approx(4.302653 * sd / math.sqrt(3),
                                                            rel=1e-6)
    # AP_s pairs only the seeds both runs have
    assert study['paired']['new']['AP_s']['seeds'] == [0, 1]
    assert 'base' not in study['paired']


def test_format_study_tables():
    results = {'base': {0: dict(AP=0.50), 1: dict(AP=0.52), 2: dict(AP=0.54)},
               'new': {0: dict(AP=0.53), 1: dict(AP=0.56), 2: dict(AP=0.55)}}
    text = format_study(summarize_study(results)).splitlines()
    assert text[:4] == ['| config | AP |', '|---|---|', '| base | 0.520 +- 0.020 |',
                        '| new | 0.547 +- 0.015 |']
    # 0.0267 +- 4.303 * 0.01528 / sqrt(3)
    assert text[-1] == '| new - base | 0.027 [-0.011, 0.065] |'
