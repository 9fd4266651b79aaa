"""tools/deployment/export_onnx.py: the LIP-ResNet-50 Faster R-CNN and RetinaNet configs export
(dense tensor path, dynamic size) and verify in ONNX Runtime; a backbone config and a
checkpoint export; bad input ends in one message and exit code 2."""
import onnxruntime  # noqa: F401  (a test dependency: its absence must fail)
import pytest
import torch

from lip_mmdet.deployment import non_standard_nodes
from lip_mmdet.models.backbones import LIPResNet

from tiny_run import REPO, write_config
from tool_scripts import assert_clean_failure, run_as_script, tool_main

SCRIPT = 'deployment/export_onnx.py'
SMALL = ['--shape', '64', '64']


@pytest.fixture(scope='module')
def export_tool():
    return tool_main(SCRIPT)


def _differences(out):
    return [float(line.rsplit(' ', 1)[1]) for line in out.splitlines()
            if 'largest relative difference' in line]


@pytest.mark.parametrize('config', ['faster_rcnn_lip_r50.py', 'retinanet_lip_r50.py'])
def test_detector_exports_and_verifies(export_tool, config, tmp_path, capsys):
    out_file = tmp_path / 'det.onnx'
    code = export_tool([str(REPO / 'configs' / config), '--out', str(out_file), *SMALL,
                        '--dynamic', '--verify', '--exporter', 'torchscript'])
    out = capsys.readouterr().out
    assert code == 0, out
    assert non_standard_nodes(str(out_file)) == []
    differences = _differences(out)
    assert len(differences) == 2 and max(differences) <= 1e-4, out  # export size and another


def _backbone_config(tmp_path):
    config = tmp_path / 'backbone.py'
    config.write_text("custom_imports = dict(imports=['lip_mmdet'])\n"
                      "model = dict(type='LIPResNet', depth=18, num_stages=2, "
                      "out_indices=(0, 1), strides=(1, 2), dilations=(1, 1))\n")
    return config


def test_backbone_config_and_checkpoint(export_tool, tmp_path, capsys):
    config = _backbone_config(tmp_path)
    backbone = LIPResNet(depth=18, num_stages=2, out_indices=(0, 1), strides=(1, 2),
                         dilations=(1, 1))
    torch.save(backbone.state_dict(), tmp_path / 'backbone.pth')
    code = export_tool([str(config), str(tmp_path / 'backbone.pth'), '--out',
                        str(tmp_path / 'b.onnx'), *SMALL, '--verify', '--exporter', 'dynamo',
                        '--opset', '17'])
    out = capsys.readouterr().out
    assert code == 0 and len(_differences(out)) == 1 and max(_differences(out)) <= 1e-4, out
    assert 'dynamo exporter, opset 17,' in out


def test_verify_fails_above_the_tolerance(export_tool, tmp_path, capsys):
    code = export_tool([str(_backbone_config(tmp_path)), '--out', str(tmp_path / 'b.onnx'),
                        '--shape', '32', '32', '--verify', '--tolerance', '0',
                        '--exporter', 'torchscript'])
    err = capsys.readouterr().err
    assert code == 1
    assert [line for line in err.splitlines() if line.startswith('error: ')] == [
        line for line in err.splitlines() if 'above the tolerance' in line]


@pytest.mark.parametrize('case', ['config', 'checkpoint', 'part', 'build', 'options'])
def test_bad_input_is_one_message_and_exit_2(case, tmp_path, monkeypatch, capfd):
    config = str(REPO / 'configs' / 'retinanet_lip_r50.py')
    argv = [config, '--out', str(tmp_path / 'x.onnx')]
    words = []
    if case == 'config':
        argv[0] = str(tmp_path / 'missing.py')
        words = ['Config file not found', 'missing.py']
    elif case == 'checkpoint':
        argv.insert(1, str(tmp_path / 'missing.pth'))
        words = ['not found', 'missing.pth']
    elif case == 'part':
        argv[0] = str(write_config(tmp_path / 'seg.py', config,
                                   model=dict(_delete_=True, type='DetDataPreprocessor')))
        words = ['neither a backbone nor a detector']
    elif case == 'build':
        argv += ['--cfg-options', 'model.backbone.depth=7']
        words = ['cannot build the model of', 'depth']
    else:
        argv += ['--cfg-options', 'model.backbone.depth']
        words = ['KEY=VALUE']
    code = run_as_script(SCRIPT, argv, monkeypatch)
    assert_clean_failure(code, capfd.readouterr().err, *words)
    assert not (tmp_path / 'x.onnx').exists()
