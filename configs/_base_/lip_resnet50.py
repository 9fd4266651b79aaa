# The LIP-ResNet-50 backbone of the LIP detection configs. A config inherits this file next to
# its detector base and uses it as
#   model = dict(backbone=_base_.lip_resnet50)
# (a named fragment rather than `model`: mmengine refuses a key that two bases both set).
custom_imports = dict(imports=['lip_mmdet'], allow_failed_imports=False)

lip_resnet50 = dict(
    type='LIPResNet',
    # The official ImageNet weights (lip_resnet-50.pth) with mmdet key names, made by
    #   python tools/model_converters/lip2mmdet.py lip_resnet-50.pth \
    #       checkpoints/lip_resnet50_mmdet.pth
    # With torchvision ResNet weights instead, LIP's pooling starts untrained: docs/detection.md
    # ("A LIP-ResNet whose pooling starts untrained") gives its logit branches 10x the rate.
    init_cfg=dict(type='Pretrained', checkpoint='checkpoints/lip_resnet50_mmdet.pth'))
