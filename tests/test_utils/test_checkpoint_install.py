"""Safe checkpoint loading is installed by ``import lip_mmdet`` or by
``install_safe_checkpoint_loading()``, never as a side effect of importing ``lip_mmdet.utils``
or its modules. Each case runs in a fresh interpreter: the test process has it installed."""
from fresh_import import run_fresh

# What decides how this process loads checkpoints: mmengine's loader per scheme and its way of
# choosing one, torch's allow-list additions and the allocating globals torch allows.
LOADING_STATE = '''
import torch
from mmengine.runner.checkpoint import CheckpointLoader


def qualified(obj):
    return f'{obj.__module__}.{obj.__qualname__}'


def loading_state():
    allowed = torch._weights_only_unpickler._get_allowed_globals()
    return dict(
        loaders={prefix: qualified(loader)
                 for prefix, loader in CheckpointLoader._schemes.items()},
        chooser=qualified(CheckpointLoader._get_checkpoint_loader.__func__),
        safe_globals=sorted(entry[1] if isinstance(entry, tuple) else qualified(entry)
                            for entry in torch.serialization.get_safe_globals()),
        allocating={name: qualified(allowed[name])
                    for name in ('_codecs.encode', 'builtins.bytearray')})


before = loading_state()
'''


def _assert_installed(state):
    assert state['loaders'] and all(loader.startswith('lip_mmdet.utils.checkpoint.')
                                    for loader in state['loaders'].values()), state['loaders']
    assert state['chooser'].startswith('lip_mmdet.utils.checkpoint.')
    assert 'mmengine.logging.history_buffer.HistoryBuffer' in state['safe_globals']
    assert all(callable_.startswith('lip_mmdet.utils.checkpoint.')
               for callable_ in state['allocating'].values()), state['allocating']


def test_importing_utils_installs_nothing_and_the_function_installs_it():
    states = run_fresh(
        LOADING_STATE
        + 'import lip_mmdet.utils\n'
        'import lip_mmdet.utils.benchmark\n'
        'import lip_mmdet.utils.checkpoint\n'
        'imported = loading_state()\n'
        'lip_mmdet.utils.install_safe_checkpoint_loading()\n'
        'print(json.dumps(dict(before=before, imported=imported, installed=loading_state())))',
        bare_packages=('lip_mmdet', ))
    assert states['imported'] == states['before']
    assert not any(loader.startswith('lip_mmdet') for loader in states['before']['loaders'])
    _assert_installed(states['installed'])


def test_import_lip_mmdet_installs_it():
    states = run_fresh(
        LOADING_STATE
        + 'import lip_mmdet\n'
        'print(json.dumps(dict(before=before, imported=loading_state())))')
    assert not any(loader.startswith('lip_mmdet') for loader in states['before']['loaders'])
    _assert_installed(states['imported'])
