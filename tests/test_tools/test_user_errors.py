"""User errors in tools/train.py, tools/test.py and tools/model_converters/lip2mmdet.py end in
one message and exit code 2, with no traceback and no code from a checkpoint run.

Most cases call the tools' main functions; each tool's script also runs through its
``__main__`` block for the exit code, and train.py through a fresh interpreter."""
import pytest
import torch
from checkpoint_payloads import go_offline, save_payload
from mmengine.config import Config

from lip_mmdet.apis.launch import test_main as run_test_tool
from lip_mmdet.apis.launch import train_main
from lip_mmdet.models.backbones import LIPResNet

from tiny_run import REPO, SMALL_RETINANET, TOOLS, run_tool, tiny_options, to_cli, write_config
from tool_scripts import assert_clean_failure, run_as_script, tool_main

RETINA_LIP_R50 = REPO / 'configs' / 'retinanet_lip_r50.py'
PLANTED_URL = 'https://example.invalid/checkpoints/detector-0a1b2c3d.pth'


@pytest.fixture(scope='module')
def options(tiny_coco):
    """``--cfg-options`` words: the tiny dataset and a small RetinaNet (LIP-ResNet-18)."""
    opts = tiny_options(Config.fromfile(str(RETINA_LIP_R50)), tiny_coco)
    opts.update(SMALL_RETINANET)
    return to_cli(opts)


def _one_message(capsys, code, *words):
    """The tool returned 2 and printed one ``error:`` message containing ``words``."""
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith('error: ') and 'Traceback' not in err
    for word in words:
        assert str(word) in err, err
    return err


def _text_file(path):
    path.write_text('not a checkpoint\n')
    return path


# --- configs and work dirs ----------------------------------------------------------------

@pytest.mark.parametrize('main', [train_main, lambda argv: run_test_tool([*argv, 'x.pth'])],
                         ids=['train', 'test'])
def test_config_syntax_error_names_the_file_and_line(main, tmp_path, capsys):
    config = tmp_path / 'broken.py'
    config.write_text("model = dict(\n    type='RetinaNet',,\n)\n")
    _one_message(capsys, main([str(config)]), f'Syntax error in config {config}, line 2')


def test_syntax_error_in_a_base_config_names_that_file(tmp_path, capsys):
    (tmp_path / 'base.py').write_text('a = 1\nb = (\n')
    config = write_config(tmp_path / 'child.py', './base.py', c=2)
    err = _one_message(capsys, train_main([str(config)]),
                       f'Syntax error in config {tmp_path / "base.py"}, line 2')
    assert '<unknown>' not in err


def test_unwritable_work_dir(options, tmp_path, capsys):
    blocker = tmp_path / 'a_file'
    blocker.write_text('')
    work_dir = blocker / 'run'
    code = train_main([str(RETINA_LIP_R50), '--work-dir', str(work_dir), '--cfg-options',
                       *options])
    _one_message(capsys, code, f'Cannot create the work dir {work_dir}', '--work-dir')


# --- checkpoints given to train.py and test.py --------------------------------------------

def test_resume_from_a_refused_checkpoint(options, tmp_path, capsys):
    marker = tmp_path / 'marker'
    ckpt = save_payload(tmp_path / 'epoch_1.pth', marker)
    code = train_main([str(RETINA_LIP_R50), '--work-dir', str(tmp_path / 'w'), '--resume',
                       str(ckpt), '--cfg-options', *options])
    _one_message(capsys, code, 'Checkpoint to resume from', f'Refusing to load checkpoint {ckpt}')
    assert not marker.exists()


@pytest.mark.parametrize('flag', ['--resume', 'load_from'])
def test_resume_or_load_from_a_file_that_is_not_a_checkpoint(flag, options, tmp_path, capsys):
    ckpt = _text_file(tmp_path / 'notes.pth')
    extra = ['--resume', str(ckpt), '--cfg-options'] if flag == '--resume' else [
        '--cfg-options', f'load_from={ckpt}']
    code = train_main([str(RETINA_LIP_R50), '--work-dir', str(tmp_path / 'w'), *extra,
                       *options])
    _one_message(capsys, code, f'{ckpt} is not a readable checkpoint')


def test_auto_resume_of_a_damaged_last_checkpoint_fails_cleanly(options, tmp_path, capsys):
    # found by the Runner itself in the work dir, so it fails during train(), after preflight
    work_dir = tmp_path / 'w'
    work_dir.mkdir()
    ckpt = _text_file(work_dir / 'epoch_1.pth')
    (work_dir / 'last_checkpoint').write_text(str(ckpt))
    code = train_main([str(RETINA_LIP_R50), '--work-dir', str(work_dir), '--resume',
                       '--cfg-options', *options])
    err = capsys.readouterr().err
    assert code == 2
    assert f'error: {ckpt} is not a readable checkpoint' in err and 'Traceback' not in err


@pytest.mark.parametrize('content', ['payload', 'text'])
def test_test_tool_checkpoint_refused_or_unreadable(content, options, tmp_path, capsys):
    marker = tmp_path / 'marker'
    ckpt = tmp_path / 'model.pth'
    if content == 'payload':
        save_payload(ckpt, marker)
    else:
        _text_file(ckpt)
    code = run_test_tool([str(RETINA_LIP_R50), str(ckpt), '--work-dir', str(tmp_path / 'w'),
                          '--cfg-options', *options])
    _one_message(capsys, code, 'Checkpoint to test',
                 'Refusing to load' if content == 'payload' else 'not a readable checkpoint')
    assert not marker.exists()


def test_test_tool_url_checkpoint_goes_through_the_allow_list(options, tmp_path, monkeypatch,
                                                               capsys):
    homes = go_offline(monkeypatch, tmp_path)
    marker = tmp_path / 'marker'
    save_payload(homes['hub'] / 'detector-0a1b2c3d.pth', marker)
    code = run_test_tool([str(RETINA_LIP_R50), PLANTED_URL, '--work-dir', str(tmp_path / 'w'),
                          '--cfg-options', *options])
    _one_message(capsys, code, 'Refusing to load checkpoint', PLANTED_URL)
    assert not marker.exists()


def test_test_tool_url_that_cannot_be_downloaded(options, tmp_path, monkeypatch, capsys):
    homes = go_offline(monkeypatch, tmp_path)
    code = run_test_tool([str(RETINA_LIP_R50), PLANTED_URL, '--work-dir', str(tmp_path / 'w'),
                          '--cfg-options', *options])
    _one_message(capsys, code, 'not in the torch hub cache', PLANTED_URL,
                 homes['hub'] / 'detector-0a1b2c3d.pth')


def test_inherited_torchvision_weights_offline_say_what_to_download(tiny_coco, tmp_path,
                                                                    monkeypatch, capsys):
    # a stock mmdet config whose backbone is swapped for LIPResNet keeps
    # init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')
    homes = go_offline(monkeypatch, tmp_path)
    config = write_config(tmp_path / 'swapped.py', 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py',
                          model=dict(backbone=dict(type='LIPResNet')))
    opts = tiny_options(Config.fromfile(str(config)), tiny_coco)
    del opts['model.backbone.init_cfg']
    code = train_main([str(config), '--work-dir', str(tmp_path / 'w'), '--cfg-options',
                       *to_cli(opts)])
    _one_message(capsys, code, 'torchvision://resnet50',
                 'https://download.pytorch.org/models/resnet50-0676ba61.pth',
                 homes['hub'] / 'resnet50-0676ba61.pth', 'model.backbone.init_cfg=None')
    assert not (tmp_path / 'w').exists()  # nothing written before the message


# --- the converter ------------------------------------------------------------------------

def _convert(*argv):
    """Run the converter's main in-process; returns its exit code."""
    return tool_main('model_converters/lip2mmdet.py')([str(a) for a in argv])


def _torchvision_layout_state():
    from mmdet.models.backbones import ResNet
    state = ResNet(depth=50).state_dict()
    state['fc.weight'], state['fc.bias'] = torch.zeros(1000, 2048), torch.zeros(1000)
    return state


def test_converter_user_errors(tmp_path, capsys):
    dst = tmp_path / 'out.pth'
    _one_message(capsys, _convert(tmp_path, dst), f'{tmp_path} is a directory')
    _one_message(capsys, _convert(tmp_path / 'nothere.pth', dst), 'not found')
    _one_message(capsys, _convert(_text_file(tmp_path / 'notes.pth'), dst),
                 'is not a readable checkpoint')
    official = tmp_path / 'official.pth'
    torch.save({k: v for k, v in LIPResNet(depth=50).state_dict().items()}, official)
    _one_message(capsys, _convert(official, tmp_path), f'destination {tmp_path} is a directory')
    torchvision_file = tmp_path / 'resnet50-0676ba61.pth'
    torch.save(_torchvision_layout_state(), torchvision_file)
    _one_message(capsys, _convert(torchvision_file, dst), 'torchvision-layout',
                 'needs no conversion', "init_cfg=dict(type='Pretrained'")
    assert not dst.exists()


def test_converter_refuses_a_payload_from_a_url(tmp_path, monkeypatch, capsys):
    homes = go_offline(monkeypatch, tmp_path)
    marker = tmp_path / 'marker'
    save_payload(homes['hub'] / 'lip_resnet-50.pth', marker)
    code = _convert('https://example.invalid/lip_resnet-50.pth', tmp_path / 'out.pth')
    _one_message(capsys, code, 'Refusing to load checkpoint')
    assert not marker.exists() and not (tmp_path / 'out.pth').exists()


# --- end to end: exit code 2 and no traceback from each tool's script -----------------------

def test_train_tool_process(tmp_path):
    """Through a fresh interpreter: the imports add nothing to the message."""
    config = tmp_path / 'broken.py'
    config.write_text('a = [1, 2\n')
    proc = run_tool([TOOLS / 'train.py', config], cwd=tmp_path, timeout=120)
    assert_clean_failure(proc.returncode, proc.stderr,
                          f'Syntax error in config {config}, line 1')


def test_test_tool_script(options, tmp_path, monkeypatch, capfd):
    ckpt = _text_file(tmp_path / 'model.pth')
    code = run_as_script('test.py', [RETINA_LIP_R50, ckpt, '--work-dir', tmp_path / 'w',
                                     '--cfg-options', *options], monkeypatch)
    assert_clean_failure(code, capfd.readouterr().err, 'not a readable checkpoint')


def test_converter_script(tmp_path, monkeypatch, capfd):
    code = run_as_script('model_converters/lip2mmdet.py', [tmp_path, tmp_path / 'out.pth'],
                         monkeypatch)
    assert_clean_failure(code, capfd.readouterr().err, 'is a directory')


# --- the edges of the command lines -------------------------------------------------------

@pytest.mark.parametrize('main', [train_main, lambda argv: run_test_tool([*argv, 'x.pth'])],
                         ids=['train', 'test'])
def test_config_of_a_type_mmengine_does_not_read(main, tmp_path, capsys):
    config = tmp_path / 'model.cfg'
    config.write_text("model = dict(type='RetinaNet')\n")
    _one_message(capsys, main([str(config)]), f'Config {config} is not a config file', '.py')


@pytest.mark.parametrize('main, positional', [(train_main, []), (run_test_tool, ['x.pth'])],
                         ids=['train', 'test'])
def test_cfg_option_without_a_value(main, positional, capsys):
    code = main([str(RETINA_LIP_R50), *positional, '--cfg-options',
                 'train_dataloader.batch_size=2', 'novalue'])
    _one_message(capsys, code, "--cfg-options takes KEY=VALUE words, and 'novalue' is not one")


def test_show_pooling_with_a_refused_checkpoint(tmp_path, capsys):
    from PIL import Image

    marker = tmp_path / 'marker'
    ckpt = save_payload(tmp_path / 'model.pth', marker)
    image = tmp_path / 'image.png'
    Image.new('RGB', (64, 64)).save(image)
    code = tool_main('analysis/show_pooling.py')([
        str(REPO / 'configs' / 'demo' / 'faster_rcnn_lip_r18_demo.py'), str(ckpt), '--images',
        str(image), '--out-dir', str(tmp_path / 'out')])
    _one_message(capsys, code, f'Refusing to load checkpoint {ckpt}')
    assert not marker.exists() and not (tmp_path / 'out').exists()


# --- a checkpoint that does not fit the model ---------------------------------------------

def _run_test_tool(ckpt, options, tmp_path, *flags):
    """tools/test.py on ``ckpt``. Its Runner is built, and named after the test: mmengine
    names a run by config and second, and gives a second Runner of that name the first one's
    logger, which writes to the previous test's closed output."""
    return run_test_tool([str(RETINA_LIP_R50), str(ckpt), '--work-dir', str(tmp_path / 'w'),
                          *flags, '--cfg-options', *options,
                          f'experiment_name={tmp_path.name}'])


def _model_state(options):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    from lip_mmdet.apis.launch import load_test_config, test_parser

    register_all_modules(init_default_scope=False)
    cfg = load_test_config(test_parser().parse_args(
        [str(RETINA_LIP_R50), 'x.pth', '--cfg-options', *options]))
    return MODELS.build(cfg.model).state_dict()


def test_test_tool_refuses_a_checkpoint_that_fits_nothing(options, tmp_path, capsys):
    ckpt = tmp_path / 'classifier.pth'
    torch.save({'state_dict': {'fc.weight': torch.zeros(10, 4), 'fc.bias': torch.zeros(10)}},
               ckpt)
    code = _run_test_tool(ckpt, options, tmp_path)
    err = _one_message(capsys, code, f'Checkpoint to test {ckpt} does not fit the model',
                       'weights of the model are not in it', 'backbone.conv1.weight',
                       '2 of its keys are not in the model (fc.weight, fc.bias)',
                       '--allow-partial-checkpoint')
    assert len(err.strip().splitlines()) == 1


def test_test_tool_refuses_a_checkpoint_missing_one_weight(options, tmp_path, capsys):
    state = _model_state(options)
    dropped = 'bbox_head.retina_cls.weight'
    state.pop(dropped)
    state['backbone.conv1.weight'] = torch.zeros(1)
    # BatchNorm's batch counters are not evaluated: a checkpoint may lack them
    state = {k: v for k, v in state.items() if not k.endswith('num_batches_tracked')}
    ckpt = tmp_path / 'partial.pth'
    torch.save({'state_dict': state}, ckpt)
    code = _run_test_tool(ckpt, options, tmp_path)
    err = _one_message(capsys, code, f'1 weights of the model are not in it ({dropped})',
                       '1 have another shape (backbone.conv1.weight (1 vs 64x3x7x7))')
    assert 'num_batches_tracked' not in err


def test_test_tool_tests_a_partial_checkpoint_when_asked(options, tmp_path, capsys):
    state = _model_state(options)
    state.pop('bbox_head.retina_cls.weight')
    ckpt = tmp_path / 'partial.pth'
    torch.save({'state_dict': state}, ckpt)
    code = _run_test_tool(ckpt, options, tmp_path, '--allow-partial-checkpoint')
    err = capsys.readouterr().err
    assert code == 0, err
    assert 'warning: checkpoint' in err and 'bbox_head.retina_cls.weight' in err
