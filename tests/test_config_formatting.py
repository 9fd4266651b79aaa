"""The test processes' config formatting (config_formatting.py) writes what mmengine writes,
once for each content of a config, also through the Runner's copies."""
from copy import deepcopy

from config_formatting import mmengine_pretty_text
from mmengine.config import Config
from mmengine.config import config as mmengine_config

from lip_mmdet.apis.launch import build_runner, load_train_config, train_parser

from tiny_run import REPO, tiny_options, to_cli

LIP_R50 = str(REPO / 'configs' / 'faster_rcnn_lip_r50.py')


def test_the_runner_formats_its_config_once_until_it_changes(tiny_coco, tmp_path, monkeypatch):
    """mmengine formats the whole config with yapf when the Runner logs and dumps it, records
    the runtime info and saves a checkpoint; the text is kept while the config is unchanged."""
    formatted = []
    format_code = mmengine_config.FormatCode

    def counted(*args, **kwargs):
        formatted.append(args[0])
        return format_code(*args, **kwargs)

    monkeypatch.setattr(mmengine_config, 'FormatCode', counted)
    assert Config.pretty_text.fget.__module__ == 'config_formatting'  # conftest installed it
    options = tiny_options(Config.fromfile(LIP_R50), tiny_coco)
    cfg = load_train_config(train_parser().parse_args(
        [LIP_R50, '--work-dir', str(tmp_path), '--cfg-options', *to_cli(options)]))
    runner = build_runner(cfg)  # logs and dumps the config
    assert len(formatted) == 1
    text = runner.cfg.pretty_text
    assert len(formatted) == 1
    assert text == mmengine_pretty_text(Config(runner.cfg.to_dict()))
    assert len(formatted) == 2
    assert Config.fromstring(text, '.py').to_dict() == runner.cfg.to_dict()

    runner.cfg.train_cfg.max_epochs = 7
    assert 'max_epochs=7' in runner.cfg.pretty_text and len(formatted) == 3
    # the deep copy the Runner makes of a config keeps the kept text
    copied = deepcopy(runner.cfg)
    assert copied.pretty_text == runner.cfg.pretty_text
    assert len(formatted) == 3
