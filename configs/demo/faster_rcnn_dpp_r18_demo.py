# The demo's DPP twin: the same detector, data and schedule with a DPP-ResNet-18 (Lite-DPP,
# asymmetric reward, replacing the strided convs and the stem max-pool).
_base_ = ['./faster_rcnn_lip_r18_demo.py', '../_base_/dpp_no_decay.py']

model = dict(backbone=dict(type='DPPResNet', dpp_cfg=dict(type='LiteDPP', reward='asym')))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys=_base_.dpp_no_decay))
