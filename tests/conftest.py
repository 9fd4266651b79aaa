"""Shared pytest fixtures."""
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest


def _register_fuzz_profiles() -> None:
    """Hypothesis settings for the property-based fuzz tests.

    'suite' (the default, what ``make test`` runs): a bounded, derandomised slice, so every
    run of the suite checks the same cases in seconds. 'fuzz' (``make fuzz``): fresh random
    cases, ``LIP_MMDET_FUZZ_EXAMPLES`` per test (default 20000), failures kept in
    ``.hypothesis/`` and replayed first next time. ``HYPOTHESIS_PROFILE`` picks one.
    """
    from hypothesis import HealthCheck, settings

    slow_ok = [HealthCheck.too_slow, HealthCheck.data_too_large]
    settings.register_profile('suite', max_examples=40, derandomize=True, deadline=None,
                              database=None, print_blob=True, suppress_health_check=slow_ok)
    settings.register_profile(
        'fuzz', max_examples=int(os.environ.get('LIP_MMDET_FUZZ_EXAMPLES', '20000')),
        deadline=None, print_blob=True, suppress_health_check=slow_ok)
    settings.load_profile(os.environ.get('HYPOTHESIS_PROFILE', 'suite'))


def pytest_configure(config):
    """The process-wide settings of a process that runs tests (before any test file is
    imported). pytest-xdist's controller runs none, and skips torch's import (about 2 s
    before the workers start)."""
    if config.getoption('dist', 'no') != 'no' and not hasattr(config, 'workerinput'):
        return
    _register_fuzz_profiles()
    import torch
    from config_formatting import format_configs_once

    # the dozens of Runners the tests build format their configs once each
    format_configs_once()

    # Without a CUDA device the pooling ops' Triton kernels run in Triton's interpreter on
    # CPU tensors. Triton must see the switch before it is first imported (mmdet's and
    # Inductor's imports can import it); the other backends ignore it.
    if not torch.cuda.is_available():
        os.environ.setdefault('TRITON_INTERPRET', '1')
    # Tests run small inputs: extra OpenMP threads mostly add synchronisation, and stall when
    # other processes (the other pytest worker, a tool's process) load the machine. Set
    # here, so that fixtures of every scope run with one thread too.
    torch.set_num_threads(1)


def _detection_stack_blocked() -> bool:
    """Whether this run blocks mmdet, mmengine and mmcv (``-p without_detection_stack``)."""
    plugin = sys.modules.get('without_detection_stack')
    return plugin is not None and plugin.stack_blocked()


@pytest.fixture(autouse=True)
def _process_state_of_this_test(request):
    """Each test starts from the same process-wide state, whatever ran before it in its worker.

    Before: mmdet's registry scope and a current mmengine logger writing to this test's
    streams. A Runner or tool run earlier in the process leaves its default scope (mmengine's,
    for a config without ``default_scope``) and its logger as the current ones, and that
    logger writes to the captured streams of the test that created it, closed since.
    After: one intra-op thread, and no deterministic-algorithms mode (a config's
    ``randomness.deterministic`` turns it on for the whole process).
    """
    # imported here: pytest-xdist's controller process loads this file and runs no test
    import torch
    if not _detection_stack_blocked():
        from mmengine.logging import MMLogger
        from mmengine.registry import init_default_scope

        init_default_scope('mmdet')
        MMLogger.get_instance(f'test {request.node.nodeid}')
    yield
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(False)


def _deselect_cuda_tests_without_a_gpu(config, items) -> None:
    """Tests marked ``cuda`` need a CUDA GPU: where torch sees none they are deselected
    (reported as deselected, not run and not skipped); ``make gpu-check`` runs them."""
    cuda_tests = [item for item in items if item.get_closest_marker('cuda')]
    if not cuda_tests:
        return
    import torch
    if torch.cuda.is_available():
        return
    config.hook.pytest_deselected(items=cuda_tests)
    items[:] = [item for item in items if not item.get_closest_marker('cuda')]


@pytest.fixture(scope='session')
def short_tmp_path():
    """``short_tmp_path(name)``: a new empty folder with a short path, removed after the session.

    For the data and work dirs of training runs. mmengine formats a run's config with yapf for
    its log, its config dump and its checkpoints, and yapf searches far longer for a line it
    cannot fit in 79 columns: a ``data_root`` under pytest's temporary folder (in a
    pytest-xdist worker, ``/tmp/pytest-of-<user>/pytest-<n>/popen-gw<i>/...``) made one
    formatting of the demo config take 1.6 s instead of 0.3 s.
    """
    root = tempfile.mkdtemp(prefix='lm')
    try:
        yield lambda name: Path(tempfile.mkdtemp(prefix=name, dir=root))
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope='session')
def tiny_coco(short_tmp_path):
    """A generated COCO dataset: 8 train / 4 val images of 128x128, 5 classes.

    All paths are absolute, so they work as mmdet ``ann_file`` / ``data_prefix`` values
    with or without ``data_root``. Image prefixes end with '/'.
    """
    from lip_mmdet.demo import DEMO_CLASSES, make_demo_dataset

    root = short_tmp_path('tiny')
    paths = make_demo_dataset(str(root), num_train=8, num_val=4, image_size=128, seed=0,
                              progress=False)
    return dict(
        data_root=paths['data_root'],
        train_ann=paths['train_ann'],
        val_ann=paths['val_ann'],
        train_img_prefix=paths['train_img_dir'] + '/',
        val_img_prefix=paths['val_img_dir'] + '/',
        classes=DEMO_CLASSES,
    )


#: Files that train, compile, export to ONNX or start processes (15 s or more each on a 2-core
#: machine), in decreasing run time. pytest-xdist (``--dist loadfile``) hands out whole files in
#: collection order, so these go first and the short files fill the workers' ends.
_LONG_FILES = ('test_train_test_tools.py', 'test_analysis_tools.py', 'test_compile.py',
               'test_triton.py', 'test_configs.py', 'test_user_errors.py',
               'test_onnx_export.py', 'test_backbone_export.py', 'test_export_onnx.py',
               'test_backbone_small_inputs.py', 'test_run_demo.py', 'test_torch_only.py')


def pytest_collection_modifyitems(config, items):
    _deselect_cuda_tests_without_a_gpu(config, items)

    def rank(item):
        name = item.path.name
        return _LONG_FILES.index(name) if name in _LONG_FILES else len(_LONG_FILES)

    items.sort(key=rank)  # stable: a file's tests keep their order
