# Faster R-CNN + FPN with a DPP-ResNet-50 backbone (Lite-DPP, asymmetric reward), COCO 2017,
# 1x schedule. Baseline: mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py (box AP 37.4).
_base_ = ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py', './_base_/dpp_no_decay.py']
custom_imports = dict(imports=['lip_mmdet'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        type='DPPResNet',
        dpp_cfg=dict(type='LiteDPP', reward='asym'),
        # DPP adds no convolution weights, so it starts from torchvision's ImageNet ResNet-50
        # (the file behind torchvision://resnet50), kept locally:
        #   curl -L -o checkpoints/resnet50-0676ba61.pth \
        #       https://download.pytorch.org/models/resnet50-0676ba61.pth
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/resnet50-0676ba61.pth')))

optim_wrapper = dict(paramwise_cfg=dict(custom_keys=_base_.dpp_no_decay))
