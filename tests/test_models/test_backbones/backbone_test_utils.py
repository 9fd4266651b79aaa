"""Helpers shared by the backbone tests."""
import torch
from torch.nn.modules.batchnorm import _BatchNorm

# Stem plus two stages: every kind of block (stock and pooled) at a fraction of the cost.
TWO_STAGES = dict(num_stages=2, strides=(1, 2), dilations=(1, 1))


def output_shapes(model, height=65, width=97):
    model.eval()
    with torch.no_grad():
        return [tuple(o.shape) for o in model(torch.rand(1, 3, height, width))]


def assert_same_outputs_and_grads(reference, candidate, size=(1, 3, 33, 41)):
    """Runs both models (same weights) on one input; outputs and all gradients must agree."""
    candidate.load_state_dict(reference.state_dict())
    x = torch.rand(*size)
    results = []
    for model in (reference, candidate):
        model.train()
        inputs = x.clone().requires_grad_(True)
        outs = model(inputs)
        sum((o * torch.linspace(0, 1, o.numel()).view_as(o)).sum() for o in outs).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append(([o.detach() for o in outs], inputs.grad.clone(), grads))
    (outs_a, gx_a, grads_a), (outs_b, gx_b, grads_b) = results
    for a, b in zip(outs_a, outs_b):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(gx_a, gx_b)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 0
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], msg=name)


def frozen_state(model, frozen_stages):
    """(params that must be frozen, params that must train) by stage membership."""
    frozen_prefixes = ['conv1.', 'bn1.', 'stem.', 'maxpool.'] if frozen_stages >= 0 else []
    frozen_prefixes += [f'layer{i}.' for i in range(1, frozen_stages + 1)]
    frozen, trainable = [], []
    for name, param in model.named_parameters():
        (frozen if name.startswith(tuple(frozen_prefixes)) else trainable).append(
            (name, param.requires_grad))
    return frozen, trainable


def batch_norms(model):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _BatchNorm)]
