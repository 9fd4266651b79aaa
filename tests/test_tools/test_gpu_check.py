"""tools/gpu_check.py where torch sees no CUDA GPU, and the steps it runs where it sees one."""
import os

import torch

from tool_scripts import tool_main


def test_without_a_gpu_it_stops_with_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    code = tool_main('gpu_check.py')(['--out', str(tmp_path / 'gpu_check')])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ''
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and 'needs a CUDA GPU' in lines[0], captured.err
    assert not (tmp_path / 'gpu_check').exists()


def test_every_step_names_an_existing_script_or_test(tmp_path):
    module = tool_main('gpu_check.py').__globals__
    steps = list(module['_steps'](str(tmp_path), 3, 90))
    assert [name for name, _, _ in steps] == [
        'tests', 'pooling benchmark (float32)', 'pooling benchmark (bfloat16)',
        'backbone benchmark (float32)', 'backbone benchmark (bfloat16)',
        'Triton kernel resources']
    for name, command, _ in steps:
        paths = [arg for arg in command[1:] if arg.endswith('.py') or arg.startswith('tests/')]
        assert paths, name
        for path in paths:
            assert os.path.exists(os.path.join(module['REPO'], path)), path
