# RetinaNet + FPN with a LIP-ResNet-50 backbone, COCO 2017, 1x schedule (12 epochs).
# Baseline: mmdet::retinanet/retinanet_r50_fpn_1x_coco.py (box AP 36.5); see
# docs/detection.md.
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', './_base_/lip_resnet50.py']

model = dict(backbone=_base_.lip_resnet50)

# Schedule as in the stock RetinaNet config: SGD lr 0.01 for a total batch of 16 (RetinaNet's
# usual rate, half of Faster R-CNN's 0.02). With another total batch, add --auto-scale-lr.
