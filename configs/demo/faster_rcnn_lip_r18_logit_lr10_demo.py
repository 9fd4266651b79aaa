# The LIP demo with a 10x learning rate for the LIP logit branches (every parameter whose
# name holds '.logit.': the shared trunks and the logit convs and norms). The gradual start,
# which slows the windows down, cost tiny-object AP (docs/demo.md); this tests the opposite
# direction with the rest of the detector unchanged. Its ResNet-18 twin is
# faster_rcnn_r18_demo.py (no pooling parameters, so the multiplier changes nothing there).
_base_ = './faster_rcnn_lip_r18_demo.py'

optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'.logit.': dict(lr_mult=10.)}))
