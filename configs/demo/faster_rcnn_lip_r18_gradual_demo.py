# The LIP demo with the gradual start of the pooling (LIPResNet logit_init='gradual'): every
# LIP layer starts as 3x3 average pooling and leaves it only as fast as a learned scale
# grows, instead of at the first optimiser step (docs/backbones.md).
_base_ = './faster_rcnn_lip_r18_logit_lr1_demo.py'

model = dict(backbone=dict(logit_init='gradual'))
