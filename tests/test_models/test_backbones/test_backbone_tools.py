"""Smoke runs of the backbone analysis tools on tiny settings."""
import json
import os.path as osp
import runpy
import sys

REPO = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
TOOLS = osp.join(REPO, 'tools', 'analysis')


def run_tool(name, args, monkeypatch):
    script = osp.join(TOOLS, name)
    monkeypatch.setattr(sys, 'argv', [script, *args])
    runpy.run_path(script, run_name='__main__')


def test_model_stats(tmp_path, monkeypatch, capsys):
    out = tmp_path / 'stats.json'
    run_tool('model_stats.py', ["dict(type='LIPResNet', depth=18, stem_lip='simplified')",
                                '--sizes', '64x64', '--out', str(out)], monkeypatch)
    (row, ) = json.loads(out.read_text())
    assert row['config'] == dict(type='LIPResNet', depth=18, stem_lip='simplified')
    assert row['stock']['type'] == 'ResNet' and row['ratio']['flops@64x64'] > 1
    assert 'LIPResNet-18 stem_lip=simplified' in capsys.readouterr().out


def test_benchmark_backbone(tmp_path, monkeypatch, capsys):
    out = tmp_path / 'bench.json'
    run_tool('benchmark_backbone.py', ['--depth', '18', '--batch', '1', '--size', '64', '64',
                                       '--repeats', '1', '--warmup', '0', '--threads', '1',
                                       '--out', str(out)], monkeypatch)
    report = json.loads(out.read_text())
    assert list(report['results']) == ['ResNet', 'LIPResNet', 'DPPResNet']
    for entry in report['results'].values():
        assert entry['fwd'] > 0 and entry['fwd_bwd'] > 0 and entry['peak_fwd_bwd_mb'] >= 0
    assert report['results']['ResNet']['ratio']['fwd_bwd'] == 1
    assert 'LIPResNet' in capsys.readouterr().out
