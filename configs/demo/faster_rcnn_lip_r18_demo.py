# The CPU demo: Faster R-CNN + FPN with a LIP-ResNet-18 trained from scratch on the generated
# small-object dataset (tools/data/make_demo_dataset.py). It inherits the real config and
# swaps in: the demo data, a narrow FPN/heads, anchors sized for 7-150 px objects, and a
# schedule that fits a 2-core CPU in about 6 minutes (docs/demo.md has the numbers).
_base_ = ['../faster_rcnn_lip_r50.py', '../_base_/lip_logit_lr_mult.py']

from lip_mmdet.demo import DEMO_CLASSES, data_setting_name  # noqa: E402

image_size = 192
# What tools/run_demo.py generates (lip_mmdet.demo.make_demo_dataset arguments), in a
# folder of its own per setting: data/demo/v4_train400_val100_192x192_obj6-16_seed0_jpg/
demo_data = dict(num_train=400, num_val=100, image_size=image_size,
                 objects_per_image=(6, 16), seed=0)
data_root = f'data/demo/{data_setting_name(**demo_data)}/'
fpn_channels = 64
# The schedule below is written for these epochs; tools/run_demo.py --epochs / --num-train
# refit all of it (lip_mmdet.demo.fit_schedule): cosine length, warm-up share, intervals.
num_epochs = 4
train_batch_size = 4

model = dict(
    backbone=dict(
        depth=18,
        frozen_stages=-1,  # from scratch: every stage trains
        norm_eval=False,
        init_cfg=None),  # no pretrained LIP-ResNet-18 exists offline
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=fpn_channels),
    rpn_head=dict(
        in_channels=fpn_channels,
        feat_channels=fpn_channels,
        # base anchors 12, 24, 48, 96, 192 px: the 7-16 px objects get a P2 anchor
        anchor_generator=dict(scales=[3], ratios=[1.0])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=fpn_channels),
        bbox_head=dict(in_channels=fpn_channels, fc_out_channels=256,
                       num_classes=len(DEMO_CLASSES))),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=300),
        rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=1000, max_per_img=300)))

metainfo = dict(classes=DEMO_CLASSES)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(image_size, image_size), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(image_size, image_size), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=train_batch_size,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_train.json',
                 data_prefix=dict(img='train/'), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_val.json',
                 data_prefix=dict(img='val/'), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(
    _delete_=True,
    type='SizeAwareCocoMetric',
    ann_file=data_root + 'annotations/instances_val.json',
    metric='bbox',
    classwise=True)
test_evaluator = val_evaluator

train_cfg = dict(max_epochs=num_epochs, val_interval=num_epochs)
# From scratch in a few hundred iterations AdamW learns much faster than the stock SGD
# (AP 0.553 vs 0.234 for ResNet-18, 3 seeds each: docs/demo.md). LIP's logit branches learn
# at 10x the rate (LIP-ResNet-18: AP +0.038, AP_tiny +0.049, intervals excluding 0); the
# twins have no such parameters, so for them the multiplier changes nothing.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
    clip_grad=dict(max_norm=10, norm_type=2),
    paramwise_cfg=dict(custom_keys=_base_.lip_logit_lr_mult))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=num_epochs,
         T_max=num_epochs, eta_min_ratio=0.01, convert_to_iter_based=True),
]
auto_scale_lr = dict(enable=False)
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=num_epochs, max_keep_ckpts=1))
log_processor = dict(window_size=20)
# Per-layer pooling statistics (LIP effective window, DPP lambda/alpha) in the logs and
# vis_data/scalars.json, for tools/analysis/plot_pooling.py; the twins inherit it.
custom_hooks = [dict(type='PoolingStatsHook', interval=50)]
# One seed for the demo and its twins, so that their runs differ only by the backbone.
randomness = dict(seed=0)
