# Faster R-CNN + FPN with a LIP-ResNet-50 backbone, COCO 2017, 1x schedule (12 epochs).
# Baseline: mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py (box AP 37.4); see
# docs/detection.md for the numbers to compare against.
_base_ = ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py', './_base_/lip_resnet50.py']

model = dict(backbone=_base_.lip_resnet50)

# The paper's setting is the stock one: SGD, lr 0.02 for a total batch of 16 (8 GPUs x 2
# images). With another total batch, add --auto-scale-lr (base_batch_size=16 is inherited).
