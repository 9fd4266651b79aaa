"""The op boundary shared by the pooling ops: backends, per-call implementation choice, and one
autograd design for every op.

Each pooling op is a ``torch.library.custom_op`` (namespace ``lip_mmdet``) with a fake
implementation, so ``torch.compile`` and ``torch.export`` see one opaque node per call whose
output shape they know, and its backward is a second custom op that recomputes what it needs
from the saved inputs. The implementation behind the boundary is picked per call, outside any
trace, from the tensors' device and the ``backend`` argument:

================  ==========================  ======================  =====================
backend           CPU tensors                 CUDA tensors            other devices
================  ==========================  ======================  =====================
'auto'            fused C++ kernel (PyTorch   Triton kernel (PyTorch  PyTorch ops
                  ops if it cannot be built)  ops without triton)
'cpu_kernel'      fused C++ kernel            error                   error
'triton'          Triton interpreter          Triton kernel           error
                  (``TRITON_INTERPRET=1``)
'torch'           PyTorch ops                 PyTorch ops             PyTorch ops
================  ==========================  ======================  =====================

The PyTorch-ops implementations have static shapes and never read tensor values on the host,
so they add no device synchronisation. The Triton kernels unroll their window loops, so they
take windows of at most ``TRITON_MAX_TAPS`` taps: 'auto' runs larger ones as PyTorch ops,
'triton' refuses them.
"""
import functools
import importlib.util
import os
from typing import Sequence

import torch

from .native import pooling_cpu_library

__all__ = ['POOLING_BACKENDS', 'check_backend', 'implementation', 'register_autograd',
           'triton_interpreted', 'contiguous_compute', 'TRITON_MAX_TAPS']

POOLING_BACKENDS = ('auto', 'cpu_kernel', 'triton', 'torch')

#: Most taps (kh * kw) of a window the Triton kernels take. Their window loops are unrolled
#: (constexpr sizes) and compile time grows faster than the taps: the LIP forward compiles to
#: PTX in 0.7 s for 3x3 and 10 s for 8x8, and takes minutes for 16x16, the backward and DPP
#: kernels longer; a huge window would exhaust the compiler.
TRITON_MAX_TAPS = 64


def _triton_window_fits(kernel) -> bool:
    return kernel is None or kernel[0] * kernel[1] <= TRITON_MAX_TAPS


def triton_interpreted() -> bool:
    """Whether Triton kernels run in Triton's CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get('TRITON_INTERPRET', '0') == '1'


@functools.cache
def _triton_installed() -> bool:
    return importlib.util.find_spec('triton') is not None


def check_backend(x: torch.Tensor, backend: str, kernel=None) -> None:
    """Raises for an unknown backend or one that cannot run on ``x``'s device or, for
    'triton', the window ``kernel`` (kh, kw) (checked from metadata only, so it is free under
    ``torch.compile``)."""
    if backend not in POOLING_BACKENDS:
        raise ValueError(f'unknown backend {backend!r}, expected one of {POOLING_BACKENDS}')
    device = x.device.type
    if backend == 'cpu_kernel' and device != 'cpu':
        raise ValueError(f"backend='cpu_kernel' needs CPU tensors, got device {x.device}")
    if backend == 'triton' and device not in ('cuda', 'cpu', 'meta'):
        raise ValueError(f"backend='triton' needs CUDA tensors, got device {x.device}")
    if backend == 'triton' and not _triton_window_fits(kernel):
        raise ValueError(f"backend='triton' takes windows of at most {TRITON_MAX_TAPS} taps "
                         f'(its kernels unroll them), got kernel_size {tuple(kernel)}: use '
                         "backend='auto' or 'torch'")


def implementation(x: torch.Tensor, backend: str, kernel=None) -> str:
    """'cpu_kernel', 'triton' or 'torch': what runs ``backend`` on ``x`` with the window
    ``kernel`` (kh, kw) (see the table; 'auto' gives windows larger than
    ``TRITON_MAX_TAPS`` to PyTorch ops rather than Triton).

    Called inside the ops' implementations only (it may build the CPU kernels).
    """
    device = x.device.type
    if backend == 'torch':
        return 'torch'
    if backend == 'cpu_kernel':
        if pooling_cpu_library() is None:
            raise RuntimeError("backend='cpu_kernel' requested but the fused CPU kernels are "
                               'unavailable (see the warning above, or LIP_MMDET_NATIVE=0)')
        return 'cpu_kernel'
    if backend == 'triton':
        if not _triton_installed():
            raise RuntimeError("backend='triton' needs the triton package (pip install triton)")
        if device == 'cpu' and not triton_interpreted():
            raise RuntimeError("backend='triton' on CPU tensors runs in Triton's interpreter "
                               'only: set TRITON_INTERPRET=1 before triton is imported')
        return 'triton'
    if device == 'cpu':
        return 'cpu_kernel' if pooling_cpu_library() is not None else 'torch'
    if device == 'cuda' and _triton_installed() and _triton_window_fits(kernel):
        return 'triton'
    return 'torch'


def register_autograd(op, backward_op, num_saved: int, name: str) -> None:
    """Gives ``op`` its backward: ``backward_op(*saved inputs, grad, *options)``.

    The first ``num_saved`` inputs of ``op`` are tensors and are all that is saved; the rest
    are options (window, backend) passed on unchanged. ``backward_op`` returns one gradient
    per saved input. Second-order gradients raise a clear error rather than being zero.
    """

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs[:num_saved])
        ctx.options = inputs[num_saved:]

    def backward(ctx, grad):
        grads = backward_op(*ctx.saved_tensors, grad, *ctx.options)
        return (*grads, *([None] * len(ctx.options)))

    op.register_autograd(backward, setup_context=setup_context)

    def no_double_backward(ctx, *grads):
        raise RuntimeError(f'{name} does not support second-order gradients (double '
                           'backward); its first-order backward is a fused op')

    backward_op.register_autograd(no_double_backward, setup_context=_no_context)


def _no_context(ctx, inputs, output) -> None:
    pass


def contiguous_compute(tensors: Sequence[torch.Tensor],
                       dtype: torch.dtype) -> Sequence[torch.Tensor]:
    """``tensors`` as contiguous tensors of ``dtype`` (the kernels' layout)."""
    return tuple(t.to(dtype).contiguous() for t in tensors)
