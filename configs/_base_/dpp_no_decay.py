# DPP's per-channel alpha and lambda (raw parameters log_alpha, log_lambda) stay out of
# weight decay, as in the DPP paper's code. A config inherits this file next to its detector
# base and uses it as:
#   optim_wrapper = dict(paramwise_cfg=dict(custom_keys=_base_.dpp_no_decay))
dpp_no_decay = dict(log_alpha=dict(decay_mult=0.), log_lambda=dict(decay_mult=0.))
