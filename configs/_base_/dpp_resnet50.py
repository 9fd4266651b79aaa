# The DPP-ResNet-50 backbone (Lite-DPP, asymmetric reward) of the DPP detection configs. A
# config inherits this file next to its detector base and uses it as
#   model = dict(backbone=_base_.dpp_resnet50)
# (a named fragment rather than `model`: mmengine refuses a key that two bases both set).
custom_imports = dict(imports=['lip_mmdet'], allow_failed_imports=False)

dpp_resnet50 = dict(
    type='DPPResNet',
    dpp_cfg=dict(type='LiteDPP', reward='asym'),
    # DPP adds no convolution weights, so it starts from torchvision's ImageNet ResNet-50
    # (the file behind torchvision://resnet50), kept locally:
    #   curl -L -o checkpoints/resnet50-0676ba61.pth \
    #       https://download.pytorch.org/models/resnet50-0676ba61.pth
    init_cfg=dict(type='Pretrained', checkpoint='checkpoints/resnet50-0676ba61.pth'))
