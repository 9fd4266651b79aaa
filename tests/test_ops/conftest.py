"""Without a CUDA device, the Triton kernels run in Triton's interpreter on CPU tensors.

Triton reads ``TRITON_INTERPRET`` when a kernel is defined, i.e. when
``lip_mmdet.ops.triton_pooling`` is first imported (only by a call with backend 'triton'),
so it is set here, before any test runs; it changes nothing for the other backends.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault('TRITON_INTERPRET', '1')
