# The demo's baseline twin: the same detector, data and schedule with a stock ResNet-18
# (max-pool stem, strided convs), for `tools/run_demo.py --config` and compare_runs.
_base_ = './faster_rcnn_lip_r18_demo.py'

model = dict(backbone=dict(type='ResNet'))
