"""Which optimiser parameter group each named parameter of a model landed in."""
from typing import Dict

import torch


def group_of_each_parameter(model: torch.nn.Module,
                            optimizer: torch.optim.Optimizer) -> Dict[str, dict]:
    """``{parameter name: its param group}`` for every parameter the optimiser holds."""
    names = {id(param): name for name, param in model.named_parameters()}
    return {names[id(param)]: group for group in optimizer.param_groups
            for param in group['params']}
