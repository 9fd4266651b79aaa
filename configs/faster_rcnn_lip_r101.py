# Faster R-CNN + FPN with a LIP-ResNet-101 backbone, COCO 2017, 1x schedule.
# Baseline: mmdet::faster_rcnn/faster-rcnn_r101_fpn_1x_coco.py (box AP 39.4).
# Published (LIP paper): AP 41.7, AP50 63.6, AP75 45.6, APs 25.2, APm 45.8.
_base_ = './faster_rcnn_lip_r50.py'

model = dict(
    backbone=dict(
        depth=101,
        # made by: python tools/model_converters/lip2mmdet.py lip_resnet-101.pth \
        #              checkpoints/lip_resnet101_mmdet.pth
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/lip_resnet101_mmdet.pth')))
