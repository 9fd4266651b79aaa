# Faster R-CNN + FPN with a LIP-ResNet-50 backbone, COCO 2017, 1x schedule (12 epochs).
# Baseline: mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py (box AP 37.4); see
# docs/detection.md for the numbers to compare against.
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['lip_mmdet'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        type='LIPResNet',
        # The official ImageNet weights (lip_resnet-50.pth) with mmdet key names, made by
        #   python tools/model_converters/lip2mmdet.py lip_resnet-50.pth \
        #       checkpoints/lip_resnet50_mmdet.pth
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/lip_resnet50_mmdet.pth')))

# The paper's setting is the stock one: SGD, lr 0.02 for a total batch of 16 (8 GPUs x 2
# images). With another total batch, add --auto-scale-lr (base_batch_size=16 is inherited).
