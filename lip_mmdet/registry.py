"""lip_mmdet's registry of pooling layers, a child of mmdet's ``MODELS`` under scope
``lip_mmdet``.

Naming convention: the backbones a config names at the top level (``LIPResNet``,
``DPPResNet``) and the metric (``SizeAwareCocoMetric``) are registered in mmdet's own
registries under names mmdet does not use. The pooling layers live here, so their paper
names (``LiteDPP``, ``SimplifiedLIP``...) cannot collide with another plugin's: any mmdet
config reaches them as ``lip_mmdet.LiteDPP``, and ``DPPResNet(dpp_cfg=...)`` looks a bare
name up here first, then in mmdet's ``MODELS``. Building blocks that only make sense inside
a backbone (the LIP logit modules of a bottleneck) are not registered at all.
"""
from mmdet.registry import MODELS as MMDET_MODELS
from mmengine.registry import Registry

from lip_mmdet.models.layers import S3DPP, FullDPP, LiteDPP, SimplifiedLIP

__all__ = ['MODELS']

MODELS = Registry('model', parent=MMDET_MODELS, scope='lip_mmdet',
                  locations=['lip_mmdet.models'])

# The layers import with torch alone; they meet mmdet here.
for _layer in (SimplifiedLIP, LiteDPP, FullDPP, S3DPP):
    MODELS.register_module(module=_layer)
