"""LIP and DPP learned pooling for MMDetection 3.x.

``lip_mmdet.ops`` (the pooling ops, registered as torch custom ops ``torch.ops.lip_mmdet.*``)
and ``lip_mmdet.models.layers`` (the pooling layers) import and run with torch alone (triton
optional), in any PyTorch model.

With mmdet installed, ``import lip_mmdet`` (which ``custom_imports=dict(imports=['lip_mmdet'])``
in a config does) changes the process in two ways, in this order:

1. It installs safe checkpoint loading for the process
   (:func:`lip_mmdet.utils.install_safe_checkpoint_loading`): every scheme of mmengine's
   ``CheckpointLoader`` (local files, URLs, ``torchvision://``, ``open-mmlab://``, ...) loads
   with ``torch.load(weights_only=True)`` and an allow-list of the types mmengine writes, so
   the checkpoints mmengine saves load under torch >= 2.6 and a checkpoint holding anything
   else is refused. It comes first, before anything that could load a checkpoint is imported.
2. It registers the package's modules in mmdet's registries: the pooling layers
   (``LiteDPP``, ``SimplifiedLIP``, ...) in :data:`lip_mmdet.registry.MODELS`, scope
   ``lip_mmdet``, a child of mmdet's ``MODELS``; the backbones ``LIPResNet`` and
   ``DPPResNet`` in mmdet's ``MODELS``; the metric ``SizeAwareCocoMetric`` in mmdet's
   ``METRICS``; the hooks ``PoolingStatsHook`` and the demo's ``ProgressLineHook`` in mmdet's
   ``HOOKS``.

Without mmdet it does nothing else. Nothing else runs at import either way: the fused CPU
kernels are built when an op first needs them, and :mod:`lip_mmdet.apis`,
:mod:`lip_mmdet.visualization` and the analysis modules only define functions.
"""
from .environment import mmdet_installed
from .version import __version__

if mmdet_installed():
    from . import utils

    # before any import below, as any of them could load a checkpoint
    utils.install_safe_checkpoint_loading()

    from . import demo, engine, evaluation, models, ops  # noqa: F401

__all__ = ['__version__']
