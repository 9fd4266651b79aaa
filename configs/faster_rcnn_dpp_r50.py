# Faster R-CNN + FPN with a DPP-ResNet-50 backbone (Lite-DPP, asymmetric reward), COCO 2017,
# 1x schedule. Baseline: mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py (box AP 37.4).
_base_ = ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py', './_base_/dpp_resnet50.py',
          './_base_/dpp_no_decay.py']

model = dict(backbone=_base_.dpp_resnet50)
optim_wrapper = dict(paramwise_cfg=dict(custom_keys=_base_.dpp_no_decay))
