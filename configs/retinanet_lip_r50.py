# RetinaNet + FPN with a LIP-ResNet-50 backbone, COCO 2017, 1x schedule (12 epochs).
# Baseline: mmdet::retinanet/retinanet_r50_fpn_1x_coco.py (box AP 36.5); see
# docs/detection.md.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['lip_mmdet'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        type='LIPResNet',
        # made by: python tools/model_converters/lip2mmdet.py lip_resnet-50.pth \
        #              checkpoints/lip_resnet50_mmdet.pth
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/lip_resnet50_mmdet.pth')))

# Schedule as in the stock RetinaNet config: SGD lr 0.01 for a total batch of 16 (RetinaNet's
# usual rate, half of Faster R-CNN's 0.02). With another total batch, add --auto-scale-lr.
