# The LIP demo with every parameter at the base learning rate, LIP's logit branches included:
# the demo's setting before the 10x logit learning rate was adopted, and the start of the
# gradual-start and SGD variants (docs/demo.md compares them).
_base_ = './faster_rcnn_lip_r18_demo.py'

optim_wrapper = dict(paramwise_cfg=dict(_delete_=True))
