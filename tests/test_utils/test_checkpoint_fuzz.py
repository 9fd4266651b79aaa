"""A structured fuzzer of the checkpoint loader: random checkpoints composed of the globals the
loader allows, their near misses and the opcodes that combine them (crafted_pickles), each
loaded in a long-lived child process (checkpoint_worker) through mmengine's loader.

Every case must end as 'loaded' (and what loaded holds only allowed, readable content) or as
one of the package's checkpoint errors: no crash, no marker file from a code-running global,
no growth of the child's memory beyond the bound a file of its size has, no hang. ``make test``
runs a bounded slice; ``make fuzz`` a campaign (``LIP_MMDET_FUZZ_EXAMPLES`` examples of
:data:`CASES_PER_EXAMPLE` cases) that ends with a count of the cases by format and outcome.
A failing case is kept under ``work_dirs/checkpoint_fuzz/`` (``LIP_MMDET_FUZZ_FINDINGS``);
copied into ``tests/data/checkpoint_findings/`` it is replayed by every run of the suite.
"""
import collections
import os
import random
import shutil
from pathlib import Path

import pytest
from checkpoint_worker import GOOD_OUTCOMES, REPO, LoaderWorker, rss_bound_kb
from crafted_pickles import CheckpointGenerator
from hypothesis import event, given
from hypothesis import strategies as st

FINDINGS = Path(os.environ.get('LIP_MMDET_FUZZ_FINDINGS',
                               REPO / 'work_dirs' / 'checkpoint_fuzz'))
REPLAYED = Path(__file__).resolve().parents[1] / 'data' / 'checkpoint_findings'

#: Cases per hypothesis example: one in the suite's slice; ten in a campaign, so that
#: ``make fuzz``'s default 20000 examples load 2 x 10^5 checkpoints (about 550 a second on a
#: shared 2-core machine).
CASES_PER_EXAMPLE = int(os.environ.get(
    'LIP_MMDET_FUZZ_CASES_PER_EXAMPLE',
    10 if os.environ.get('HYPOTHESIS_PROFILE') == 'fuzz' else 1))


@pytest.fixture(scope='module')
def campaign(tmp_path_factory, request):
    """The child process, a folder for the cases, and the count of what ran (printed at the
    end, and written to ``FINDINGS/campaign.txt``)."""
    folder = tmp_path_factory.mktemp('checkpoint_fuzz')
    worker = LoaderWorker(folder, timeout=60)
    counts = collections.Counter()
    yield dict(worker=worker, folder=folder, counts=counts)
    worker.close()
    if not counts:
        return
    total = sum(counts.values())
    lines = [f'checkpoint fuzz: {total} cases, {worker.started} child processes started']
    lines += [f'  {form:6} {outcome:28} {n}' for (form, outcome), n in sorted(counts.items())]
    FINDINGS.mkdir(parents=True, exist_ok=True)
    (FINDINGS / 'campaign.txt').write_text('\n'.join(lines) + '\n')
    # pytest-xdist's workers have no terminal: there the count is in the hypothesis
    # statistics (``make fuzz`` shows them) and the file
    plugins = request.config.pluginmanager
    reporter, capture = plugins.getplugin('terminalreporter'), plugins.getplugin('capturemanager')
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line('\n' + '\n'.join(lines))


def _problem(result, path, marker):
    """Why this load is a finding, or None."""
    if marker.exists():
        marker.unlink()
        return 'the marker file was created: code from the checkpoint ran'
    if result['outcome'] not in GOOD_OUTCOMES:
        return f'{result["outcome"]}: {result["detail"]}'
    if result['rss_growth_kb'] > rss_bound_kb(path):
        return (f'the child\'s peak memory grew by {result["rss_growth_kb"]} KiB, more than '
                f'{rss_bound_kb(path)} KiB for a file of {path.stat().st_size} bytes')
    return None


def _load_case(campaign, data, form, label, in_hypothesis=True):
    folder, worker = campaign['folder'], campaign['worker']
    path = folder / 'case.pth'
    path.write_bytes(data)
    result = worker.load(path)
    campaign['counts'][form, result['outcome']] += 1
    if in_hypothesis:
        event(f'{form}: {result["outcome"]}')
    problem = _problem(result, path, folder / 'marker')
    if problem:
        FINDINGS.mkdir(parents=True, exist_ok=True)
        kept = FINDINGS / f'{label}.pth'
        shutil.copyfile(path, kept)
        pytest.fail(f'{label} ({form}, kept at {kept}): {problem}')


@pytest.mark.fuzz
@given(seed=st.integers(min_value=0, max_value=2**64 - 1))
def test_random_checkpoints_load_or_are_refused(campaign, seed):
    seeds = random.Random(seed)
    for _ in range(CASES_PER_EXAMPLE):
        case = seeds.getrandbits(64)
        data, form = CheckpointGenerator(case, campaign['folder'] / 'marker').checkpoint()
        _load_case(campaign, data, form, f'seed-{case}')


@pytest.mark.parametrize('path', sorted(REPLAYED.glob('*.pth')), ids=lambda p: p.stem)
def test_cases_the_fuzzer_found_stay_fixed(campaign, path):
    _load_case(campaign, path.read_bytes(), 'found', path.stem, in_hypothesis=False)


def test_the_generator_reaches_every_outcome(campaign):
    """A fuzzer whose cases all fail at one early check tests nothing past it: 300 cases
    must include loaded files, refusals and unreadable ones, in both formats."""
    counts = collections.Counter()
    for seed in range(300):
        data, form = CheckpointGenerator(seed, campaign['folder'] / 'marker').checkpoint()
        path = campaign['folder'] / 'case.pth'
        path.write_bytes(data)
        counts[form, campaign['worker'].load(path)['outcome']] += 1
    for form in ('zip', 'legacy'):
        for outcome in ('loaded', 'UnsafeCheckpointError', 'UnreadableCheckpointError'):
            assert counts[form, outcome] >= 3, counts
