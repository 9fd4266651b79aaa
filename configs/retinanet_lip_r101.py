# RetinaNet + FPN with a LIP-ResNet-101 backbone, COCO 2017, 1x schedule.
# Baseline: mmdet::retinanet/retinanet_r101_fpn_1x_coco.py (box AP 38.5).
_base_ = './retinanet_lip_r50.py'

model = dict(
    backbone=dict(
        depth=101,
        # made by: python tools/model_converters/lip2mmdet.py lip_resnet-101.pth \
        #              checkpoints/lip_resnet101_mmdet.pth
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/lip_resnet101_mmdet.pth')))
