"""Smoke runs of the backbone analysis tools on tiny settings."""
import json

from tool_scripts import tool_main


def test_model_stats(tmp_path, capsys):
    out = tmp_path / 'stats.json'
    tool_main('analysis/model_stats.py')([
        "dict(type='LIPResNet', depth=18, stem_lip='simplified')", '--sizes', '64x64',
        '--out', str(out)])
    (row, ) = json.loads(out.read_text())
    assert row['config'] == dict(type='LIPResNet', depth=18, stem_lip='simplified')
    assert row['stock']['type'] == 'ResNet' and row['ratio']['flops@64x64'] > 1
    assert 'LIPResNet-18 stem_lip=simplified' in capsys.readouterr().out


def test_benchmark_backbone(tmp_path, capsys):
    out = tmp_path / 'bench.json'
    tool_main('analysis/benchmark_backbone.py')([
        '--depth', '18', '--batch', '1', '--size', '64', '64', '--repeats', '1', '--warmup',
        '0', '--threads', '1', '--out', str(out)])
    report = json.loads(out.read_text())
    assert list(report['results']) == ['ResNet', 'LIPResNet', 'DPPResNet']
    for entry in report['results'].values():
        assert entry['fwd'] > 0 and entry['fwd_bwd'] > 0 and entry['peak_fwd_bwd_mb'] >= 0
    assert report['results']['ResNet']['ratio']['fwd_bwd'] == 1
    assert 'LIPResNet' in capsys.readouterr().out


def test_benchmark_backbone_in_onnxruntime(tmp_path, capsys):
    # the TorchScript exporter takes a second per model, dynamo four (DPP's graphs are
    # checked in tests/test_deployment)
    out = tmp_path / 'bench_ort.json'
    tool_main('analysis/benchmark_backbone.py')([
        '--runtime', 'onnxruntime', '--exporter', 'torchscript', '--models', 'ResNet',
        'LIPResNet', '--depth', '18', '--batch', '1', '--size', '32', '32', '--repeats', '1',
        '--warmup', '0', '--threads', '1', '--out', str(out)])
    report = json.loads(out.read_text())
    assert report['runtime'].startswith('ONNX Runtime') and report['exporter'] == 'torchscript'
    assert list(report['results']) == ['ResNet', 'LIPResNet']
    for entry in report['results'].values():
        assert entry['fwd'] > 0 and 'fwd_bwd' not in entry
    assert report['results']['ResNet']['ratio']['fwd'] == 1
    assert 'ONNX Runtime' in capsys.readouterr().out
