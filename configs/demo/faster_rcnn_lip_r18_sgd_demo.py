# The LIP demo with the optimiser of the published detection setting (SGD with momentum, the
# learning rate scaled for the batch), as its ResNet-18 twin faster_rcnn_r18_sgd_demo.py.
_base_ = './faster_rcnn_lip_r18_logit_lr1_demo.py'

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='SGD', lr=0.02 * _base_.train_batch_size / 16,
                   momentum=0.9, weight_decay=1e-4))
