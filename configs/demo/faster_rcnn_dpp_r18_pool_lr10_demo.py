# The DPP demo with a 10x learning rate for DPP's alpha and lambda (log_alpha, log_lambda;
# still without weight decay). In the demo's 400 iterations lambda moves by about 1 % where
# an AdamW step could move it by 20 % (docs/demo.md); this tests whether a faster pooling
# learns something the detector can use. Its ResNet-18 twin is faster_rcnn_r18_demo.py.
_base_ = './faster_rcnn_dpp_r18_demo.py'

optim_wrapper = dict(paramwise_cfg=dict(custom_keys=dict(
    log_alpha=dict(decay_mult=0., lr_mult=10.), log_lambda=dict(decay_mult=0., lr_mult=10.))))
