"""The logic behind tools/train.py and tools/test.py.

The command lines are MMDetection's (``--work-dir``, ``--resume [CKPT]``, ``--amp``,
``--cfg-options``, ``--launcher``, ``--out``, ``--show-dir``, ...), and the run is mmengine's
``Runner``. Additions: preflight checks that turn a missing dataset or checkpoint into a
readable message; multi-process training on CPU-only machines (``--launcher pytorch``
with the gloo backend), which mmengine's own ``init_dist`` cannot do because it always calls
``torch.cuda.set_device``; and a visualizer per Runner when one process builds several.
"""
import argparse
import ast
import datetime
import os
import os.path as osp
import re
import sys
from copy import deepcopy

import torch
import torch.distributed as torch_dist
from mmengine.config import Config, ConfigDict, DictAction
from mmengine.runner import Runner
from mmengine.visualization import Visualizer

from ..utils.checkpoint import CHECKPOINT_ERRORS
from .preflight import (
    PreflightError,
    check_amp,
    check_checkpoint,
    check_datasets,
    check_pretrained_weights,
    check_work_dir,
    leaf_datasets,
)

__all__ = [
    'CONFIG_EXTENSIONS', 'build_runner', 'check_checkpoint_fits', 'check_train_config',
    'checkpoint_fit', 'load_test_config', 'load_train_config', 'parse_cfg_options', 'test_main',
    'test_parser', 'train_main', 'train_parser'
]

_CFG_OPTIONS_HELP = (
    'override settings of the config, as key=value pairs merged into it, e.g. '
    'train_dataloader.batch_size=4 model.backbone.init_cfg=None. A list is written '
    'key="[a,b]" or key=a,b; list items are addressed by index, e.g. '
    'train_dataloader.dataset.pipeline.2.scale="(640,640)". No spaces inside a value.')


#: The file types mmengine's ``Config.fromfile`` reads.
CONFIG_EXTENSIONS = ('.py', '.json', '.yaml', '.yml')


class _CfgOptions(argparse.Action):
    """Collects the ``KEY=VALUE`` words of ``--cfg-options``; :func:`load_config` parses
    them (mmengine's ``DictAction``, which meets a word without '=' with a traceback), so a
    malformed word becomes one error message."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, [*(getattr(namespace, self.dest) or []), *values])


def parse_cfg_options(words):
    """``--cfg-options`` words as the dict mmengine's ``DictAction`` makes of them.

    Raises:
        PreflightError: a word is not ``KEY=VALUE``.
    """
    for word in words:
        key, sep, _ = word.partition('=')
        if not sep or not key:
            raise PreflightError(
                f'--cfg-options takes KEY=VALUE words, and {word!r} is not one (e.g. '
                'model.backbone.init_cfg=None or train_dataloader.batch_size=4)')
    namespace = argparse.Namespace(cfg_options=None)
    DictAction(option_strings=['--cfg-options'], dest='cfg_options')(None, namespace, words)
    return namespace.cfg_options


def _add_common_arguments(parser):
    parser.add_argument('--work-dir', help='directory for logs and checkpoints '
                        '(default: ./work_dirs/<config name>)')
    parser.add_argument('--cfg-options', nargs='+', action=_CfgOptions, metavar='KEY=VALUE',
                        help=_CFG_OPTIONS_HELP)
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher (pytorch: torchrun)')
    # torch.distributed.launch passes --local-rank (newer) or --local_rank (older)
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def train_parser():
    """Argument parser of tools/train.py."""
    parser = argparse.ArgumentParser(description='Train a detector')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision training (needs a CUDA GPU)')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the learning rate by total batch size / '
                        'auto_scale_lr.base_batch_size')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from CKPT; without a value, from the latest checkpoint in the work dir')
    _add_common_arguments(parser)
    return parser


def test_parser():
    """Argument parser of tools/test.py."""
    parser = argparse.ArgumentParser(description='Test (and evaluate) a detector')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', help='dump predictions to this .pkl file')
    parser.add_argument('--show', action='store_true', help='show prediction results')
    parser.add_argument('--show-dir', help='save painted images under '
                        '<work_dir>/<timestamp>/<show_dir>')
    parser.add_argument('--wait-time', type=float, default=2,
                        help='seconds each image is shown with --show')
    parser.add_argument('--tta', action='store_true', help='test-time augmentation '
                        '(the config\'s tta_model/tta_pipeline, or horizontal flip)')
    parser.add_argument('--allow-partial-checkpoint', action='store_true',
                        help='test even when the checkpoint does not give every weight of the '
                        'model (the rest keep their initialisation)')
    _add_common_arguments(parser)
    return parser


def _check_syntax(path, seen=()):
    """Name the file and line of a Python syntax error in a config or its local ``_base_``
    files (mmengine reports ``<unknown>``)."""
    if not path.endswith('.py') or path in seen or not osp.isfile(path):
        return
    with open(path, 'rb') as stream:
        source = stream.read()
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as err:
        line = f'\n  {err.text.rstrip()}' if err.text else ''
        raise PreflightError(f'Syntax error in config {path}, line {err.lineno}: '
                             f'{err.msg}{line}') from None
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and getattr(node.targets[0], 'id', None) == '_base_'):
            try:
                bases = ast.literal_eval(node.value)
            except ValueError:
                return  # not a literal: left to mmengine
            for base in [bases] if isinstance(bases, str) else list(bases):
                if isinstance(base, str) and '::' not in base:  # package bases are valid
                    _check_syntax(osp.normpath(osp.join(osp.dirname(path), base)),
                                  (*seen, path))


def load_config(args):
    if not osp.isfile(args.config):
        raise PreflightError(f'Config file not found: {args.config} '
                             f'(absolute: {osp.abspath(args.config)})')
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    if not args.config.endswith(CONFIG_EXTENSIONS):
        raise PreflightError(f'Config {args.config} is not a config file: mmengine reads '
                             f'{", ".join(CONFIG_EXTENSIONS)} files')
    options = parse_cfg_options(args.cfg_options) if args.cfg_options is not None else None
    _check_syntax(args.config)
    try:
        cfg = Config.fromfile(args.config)
    except SyntaxError as err:  # in a file _check_syntax could not reach
        raise PreflightError(f'Config {args.config}: {err}') from None
    except OSError as err:  # a _base_ of a type mmengine does not read, or unreadable
        raise PreflightError(f'Config {args.config}: {err}') from None
    cfg.launcher = args.launcher
    if options is not None:
        cfg.merge_from_dict(options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    return cfg


def load_train_config(args):
    """Config for training from parsed ``train_parser()`` arguments (no checks run)."""
    cfg = load_config(args)
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.auto_scale_lr:
        scale_cfg = cfg.get('auto_scale_lr') or {}
        if 'enable' not in scale_cfg or 'base_batch_size' not in scale_cfg:
            raise PreflightError('--auto-scale-lr needs auto_scale_lr = dict(enable=..., '
                                 'base_batch_size=...) in the config')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    return cfg


def _default_flip_tta(test_dataset):
    """mmdet's usual test-time augmentation: original and horizontally flipped image."""
    tta_model = dict(type='DetTTAModel',
                     tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
    pipeline = deepcopy(test_dataset.pipeline)
    pack = pipeline[-1]
    pipeline[-1] = dict(type='TestTimeAug', transforms=[
        [dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)],
        [dict(pack, meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                'scale_factor', 'flip', 'flip_direction'))]])
    return tta_model, pipeline


def load_test_config(args):
    """Config for testing from parsed ``test_parser()`` arguments (no checks run)."""
    from mmdet.engine.hooks.utils import trigger_visualization_hook

    cfg = load_config(args)
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        cfg = trigger_visualization_hook(cfg, args)
    if args.tta:
        for test_dataset in leaf_datasets(cfg.test_dataloader.dataset):
            default_model, default_pipeline = _default_flip_tta(test_dataset)
            test_dataset.pipeline = cfg.get('tta_pipeline') or default_pipeline
        cfg.model = ConfigDict(**(cfg.get('tta_model') or default_model), module=cfg.model)
    if args.out is not None and not args.out.endswith(('.pkl', '.pickle')):
        raise PreflightError(f'--out must name a .pkl or .pickle file, got {args.out!r}')
    return cfg


def _init_cpu_distributed(cfg):
    """Start the process group on a machine without CUDA, where mmengine's init_dist fails.

    The model is then wrapped in DDP without ``device_ids`` (required for CPU modules).
    """
    dist_cfg = dict(cfg.get('env_cfg', {}).get('dist_cfg', {}))
    backend = dist_cfg.pop('backend', 'nccl')
    if backend != 'gloo':
        raise PreflightError(
            f'Distributed training without a CUDA GPU needs the gloo backend, but the config '
            f"asks for {backend!r}. Add --cfg-options env_cfg.dist_cfg.backend=gloo")
    if cfg.launcher != 'pytorch':
        raise PreflightError(
            f'Distributed training without a CUDA GPU is supported with --launcher pytorch '
            f'(torchrun, tools/dist_train.sh), not --launcher {cfg.launcher}')
    if dist_cfg.get('timeout') is not None:
        dist_cfg['timeout'] = datetime.timedelta(seconds=dist_cfg['timeout'])
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend=backend, **dist_cfg)
    wrapper = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel', broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper


def _own_visualizer_name(cfg):
    """Rename the config's visualizer when a visualizer of that name exists in this process.

    mmengine keeps one visualizer per name and process and hands an existing one to the next
    Runner that asks for the name (the configs all say 'visualizer'), so a second run in the
    same process (a seed study, a notebook) would write its scalars into the first run's
    ``vis_data`` folder.
    """
    name = (cfg.get('visualizer') or {}).get('name')
    if name is None or not Visualizer.check_instance_created(name):
        return
    number = 2
    while Visualizer.check_instance_created(f'{name}#{number}'):
        number += 1
    cfg.visualizer.name = f'{name}#{number}'


def build_runner(cfg):
    """Build mmengine's Runner (or the config's ``runner_type``) from a checked config."""
    from mmdet.registry import RUNNERS
    from mmdet.utils import register_all_modules

    register_all_modules(init_default_scope=False)
    _own_visualizer_name(cfg)
    if cfg.launcher != 'none' and not torch.cuda.is_available():
        _init_cpu_distributed(cfg)
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def _fail(err):
    print(f'error: {err}', file=sys.stderr)
    return 2


def _run(runner, step):
    """``runner.train()`` / ``runner.test()``; a checkpoint the Runner loads on the way and
    cannot use (refused, damaged, not downloadable) ends in one message and exit code 2."""
    try:
        getattr(runner, step)()
    except CHECKPOINT_ERRORS as err:
        return _fail(err)
    return 0


#: State-dict entries a checkpoint to test may lack: BatchNorm's count of the batches it was
#: trained on, which only training reads (with ``momentum=None``).
UNUSED_IN_TEST = ('num_batches_tracked', )

# how Runner.load_checkpoint revises a checkpoint's keys before loading them
_REVISE_KEYS = ((r'^module.', ''), )


def _names(keys, limit=5):
    more = f' (+{len(keys) - limit} more)' if len(keys) > limit else ''
    return ', '.join(keys[:limit]) + more


def checkpoint_fit(model, checkpoint):
    """How a loaded checkpoint fits ``model``: ``(missing, mismatched, unexpected)``.

    ``missing``: the model's state-dict keys (but :data:`UNUSED_IN_TEST`) the checkpoint
    lacks; ``mismatched``: ``'key (checkpoint shape vs model shape)'`` for keys whose shapes
    differ, which mmengine skips; ``unexpected``: the checkpoint's keys the model lacks. Keys
    are revised as ``Runner.load_checkpoint`` does; test-time augmentation and distributed
    wrappers are looked through.
    """
    from mmengine.model import BaseTTAModel, is_model_wrapper

    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    state = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else {}
    state = state if isinstance(state, dict) else {}  # a checkpoint of something else
    for pattern, replacement in _REVISE_KEYS:
        state = {re.sub(pattern, replacement, str(k)): v for k, v in state.items()}
    own = model.state_dict()
    missing, mismatched = [], []
    for key, value in own.items():
        if key.rsplit('.', 1)[-1] in UNUSED_IN_TEST:
            continue
        if key not in state:
            missing.append(key)
        elif tuple(getattr(state[key], 'shape', ())) != tuple(value.shape):
            mismatched.append(f'{key} ({"x".join(map(str, getattr(state[key], "shape", ())))} '
                              f'vs {"x".join(map(str, value.shape))})')
    unexpected = [key for key in state if key not in own]
    return missing, mismatched, unexpected


def check_checkpoint_fits(model, path, config, allow_partial=False):
    """Raise :class:`PreflightError` unless the checkpoint ``path`` gives every weight of
    ``model`` the test evaluates.

    "Every" because a test evaluates the model as a whole: one weight or running statistic
    left at its initialisation makes the reported accuracy that of a partly random model, not
    of the checkpoint (mmengine loads what fits and only logs the rest). BatchNorm's
    ``num_batches_tracked``, which evaluation does not read, may be missing.

    Args:
        model (nn.Module): the Runner's model.
        path (str): the checkpoint (path, URL or mmengine prefix).
        config (str): the config file, for the message.
        allow_partial (bool): only warn (on stderr), as ``--allow-partial-checkpoint`` asks.
    """
    from mmengine.runner.checkpoint import _load_checkpoint

    try:
        checkpoint = _load_checkpoint(path, map_location='cpu', logger='silent')
    except CHECKPOINT_ERRORS as err:
        raise PreflightError(f'Checkpoint to test: {err}') from None
    missing, mismatched, unexpected = checkpoint_fit(model, checkpoint)
    if not missing and not mismatched:
        return
    parts = []
    if missing:
        parts.append(f'{len(missing)} weights of the model are not in it ({_names(missing)})')
    if mismatched:
        parts.append(f'{len(mismatched)} have another shape ({_names(mismatched)})')
    if unexpected:
        parts.append(f'{len(unexpected)} of its keys are not in the model '
                     f'({_names(unexpected)})')
    summary = '; '.join(parts)
    if allow_partial:
        print(f'warning: checkpoint {path} loads partly into the model of {config}: {summary}. '
              'The rest keep their initialisation (--allow-partial-checkpoint).',
              file=sys.stderr)
        return
    raise PreflightError(
        f'Checkpoint to test {path} does not fit the model of {config}: {summary}. Testing it '
        'would evaluate those weights at their initialisation. Check that the config is the '
        'one the checkpoint was trained with, or pass --allow-partial-checkpoint to test it '
        'anyway.')


def check_train_config(cfg):
    """Preflight checks of a training config; raises PreflightError naming the problem."""
    check_amp(cfg)
    check_datasets(cfg, ('train', 'val') if cfg.get('val_cfg') else ('train',))
    # the Runner initialises weights (pretrained backbone) before it loads or resumes
    check_pretrained_weights(cfg.model)
    if cfg.get('load_from'):
        check_checkpoint(cfg.load_from,
                         'checkpoint to resume from' if cfg.get('resume')
                         else 'checkpoint to load (load_from)')
    check_work_dir(cfg.work_dir)


def train_main(argv=None):
    """tools/train.py: returns the process exit code."""
    from mmdet.utils import setup_cache_size_limit_of_dynamo

    args = train_parser().parse_args(argv)
    setup_cache_size_limit_of_dynamo()
    try:
        cfg = load_train_config(args)
        check_train_config(cfg)
        runner = build_runner(cfg)
    except PreflightError as err:
        return _fail(err)
    return _run(runner, 'train')


def test_main(argv=None):
    """tools/test.py: returns the process exit code."""
    args = test_parser().parse_args(argv)
    try:
        cfg = load_test_config(args)
        check_datasets(cfg, ('test',))
        check_checkpoint(cfg.load_from, 'checkpoint to test')
        check_work_dir(cfg.work_dir)
        runner = build_runner(cfg)
        check_checkpoint_fits(runner.model, cfg.load_from, args.config,
                              allow_partial=args.allow_partial_checkpoint)
    except PreflightError as err:
        return _fail(err)
    if args.out is not None:
        from mmdet.evaluation import DumpDetResults
        runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=args.out))
    return _run(runner, 'test')
