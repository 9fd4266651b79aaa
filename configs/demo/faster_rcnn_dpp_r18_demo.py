# The demo's DPP twin: the same detector, data and schedule with a DPP-ResNet-18 (Lite-DPP,
# asymmetric reward, replacing the strided convs and the stem max-pool).
_base_ = './faster_rcnn_lip_r18_demo.py'

model = dict(backbone=dict(type='DPPResNet', dpp_cfg=dict(type='LiteDPP', reward='asym')))
# DPP's per-channel alpha and lambda stay out of weight decay (as in ../faster_rcnn_dpp_r50.py)
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys=dict(
        log_alpha=dict(decay_mult=0.), log_lambda=dict(decay_mult=0.))))
