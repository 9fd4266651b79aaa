"""Smoke test of tools/analysis/benchmark_pooling.py on a tiny shape (structure, not speed)."""
import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / 'tools' / 'analysis' / 'benchmark_pooling.py'


@pytest.fixture(scope='module')
def benchmark():
    spec = importlib.util.spec_from_file_location('benchmark_pooling', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reports_every_op_with_ratios_and_budgets(benchmark, tmp_path, capsys):
    out = tmp_path / 'bench.json'
    report = benchmark.main(['--shapes', '2x4x9x10', '--repeats', '1', '--warmup', '0',
                             '--out', str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    ops = report['shapes']['2x4x9x10']['ops']
    assert list(ops) == list(benchmark.OPS)
    assert ops['avg_pool2d']['fwd_vs_avg_pool2d'] == 1.0
    assert ops['lip2d_naive']['fwd_bwd_vs_naive'] == 1.0
    for entry in ops.values():
        assert entry['fwd_ms'] > 0 and entry['fwd_bwd_ms'] > 0 and entry['saved_mb'] > 0
    # lip2d keeps exactly its two inputs: 2 * 2*4*9*10 floats against inputs + output.
    assert ops['lip2d']['saved_mb'] * 2**20 == 2 * 720 * 4
    assert ops['lip2d']['saved_vs_inputs_output'] < 1
    assert ops['LiteDPP[torch]']['fwd_bwd_vs_torch'] == 1.0
    assert ops['FullDPP']['fwd_bwd_vs_torch'] > 0
    assert set(report['shapes']['2x4x9x10']['budgets']) == set(benchmark.BUDGETS)
    printed = capsys.readouterr().out
    assert '| lip2d ' in printed and 'saved/(in+out)' in printed


def test_rejects_bad_shapes(benchmark):
    with pytest.raises(SystemExit):
        benchmark.parse_args(['--shapes', '2x3x4'])
