# The ResNet-18 twin with the optimiser of the published detection setting: SGD with momentum
# 0.9 and weight decay 1e-4 (mmdet's Faster R-CNN schedule), at its learning rate 0.02 for a
# total batch of 16 scaled linearly to the demo's batch of 4. Only the optimiser changes: the
# demo's warm-up, cosine decay and gradient clipping stay.
_base_ = './faster_rcnn_r18_demo.py'

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='SGD', lr=0.02 * _base_.train_batch_size / 16,
                   momentum=0.9, weight_decay=1e-4))
