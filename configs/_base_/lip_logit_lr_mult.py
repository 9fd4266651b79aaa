# A 10x learning rate for LIP's logit branches: every parameter whose name holds '.logit.'
# (the shared logit trunks, and the logit convs and norms of SimplifiedLIP/BottleneckLIP).
# For a LIP-ResNet whose pooling starts untrained (from scratch, or torchvision ResNet
# weights): on the demo data from scratch it raised LIP-ResNet-18's AP by 0.038 [0.031, 0.045]
# and AP_tiny by 0.049 [0.030, 0.068] (3 seeds, docs/demo.md). A config inherits this file
# next to its detector base and uses it as:
#   optim_wrapper = dict(paramwise_cfg=dict(custom_keys=_base_.lip_logit_lr_mult))
lip_logit_lr_mult = {'.logit.': dict(lr_mult=10.)}
