"""The op boundary shared by the pooling ops: one skeleton for every custom op
(:func:`define_op`), backends, per-call implementation choice, and one autograd design.

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
import importlib
import importlib.util
import os
from typing import Callable, Mapping, Sequence

import torch

from .native import pooling_cpu_library
from .pool_args import compute_dtype

__all__ = ['POOLING_BACKENDS', 'check_backend', 'implementation', 'register_autograd',
           'triton_interpreted', 'TRITON_MAX_TAPS', 'define_op', 'triton_launcher']

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


def implementation(x: torch.Tensor, backend: str, kernel=None,
                   implemented: Sequence[str] = ('cpu_kernel', 'triton', 'torch')) -> str:
    """'cpu_kernel', 'triton' or 'torch': what runs ``backend`` on ``x`` with the window
    ``kernel`` (kh, kw) (see the table; 'auto' gives windows larger than
    ``TRITON_MAX_TAPS`` to PyTorch ops rather than Triton). An op without a Triton kernel
    (``implemented`` lacks it) runs its PyTorch ops where the table says Triton.

    Called inside the ops' implementations only (it may build the CPU kernels).
    """
    device = x.device.type
    if backend == 'torch' or (backend == 'triton' and 'triton' not in implemented):
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
    if (device == 'cuda' and 'triton' in implemented and _triton_installed()
            and _triton_window_fits(kernel)):
        return 'triton'
    return 'torch'


def triton_launcher(name: str) -> Callable:
    """``triton_pooling.<name>``, imported at its first call (only a Triton run needs
    triton)."""

    def launch(*args):
        return getattr(importlib.import_module('.triton_pooling', __package__), name)(*args)

    return launch


# Each op's trailing arguments: kernel, stride, pads (validated by its check) and backend.
_WINDOW_ARGS = 4


def define_op(name: str, schema: str, check: Callable, outputs: Callable,
              implementations: Mapping[str, Callable]):
    """Defines the custom op ``lip_mmdet::<name>`` with the one skeleton every pooling op
    shares, and its fake implementation.

    Each call validates all its arguments (``check``, also in the fake implementation, so a
    direct ``torch.ops.lip_mmdet`` call, a compiled graph and an exported program raise what
    the Python function raises), returns zeros for an empty input, picks the implementation
    (:func:`implementation`), runs it and casts each result to the dtype of the input it
    belongs to, contiguous.

    Args:
        name: the op's name in the ``lip_mmdet`` namespace.
        schema: its schema, e.g. ``'(Tensor x, ..., SymInt[] kernel, SymInt[] stride,
            SymInt[] pads, str backend) -> Tensor'``: tensors and options first, the window
            and the backend last.
        check: ``check(*args) -> ((kernel, stride, pads), (Ho, Wo))``; raises for a bad
            argument, reading metadata only.
        outputs: ``outputs(args, (Ho, Wo)) -> ((like, shape), ...)``: per result, the input
            whose dtype and device it has, and its shape.
        implementations: ``{'cpu_kernel' | 'torch' | 'triton': fn}``, each ``fn(*tensors and
            options, kernel, stride, pads, (Ho, Wo))`` returning a tensor or a tuple in the
            order of ``outputs``. 'cpu_kernel' and 'torch' get the tensors contiguous in the
            compute dtype (float32 for half inputs); 'triton' gets them as passed.

    Returns:
        The ``torch.library.CustomOpDef``.
    """

    def results(tensors: Sequence[torch.Tensor]):
        return tensors[0] if len(tensors) == 1 else tuple(tensors)

    def run(*args):
        window, out_size = check(*args)
        like = outputs(args, out_size)
        x, backend, inputs = args[0], args[-1], args[:-_WINDOW_ARGS]
        if x.numel() == 0:
            return results([t.new_zeros(shape) for t, shape in like])
        how = implementation(x, backend, window[0], tuple(implementations))
        if how != 'triton':
            dtype = compute_dtype(x.dtype)
            inputs = tuple(a.to(dtype).contiguous() if isinstance(a, torch.Tensor) else a
                           for a in inputs)
        out = implementations[how](*inputs, *window, out_size)
        out = (out, ) if isinstance(out, torch.Tensor) else out
        return results([o.to(t.dtype).contiguous() for o, (t, _) in zip(out, like)])

    def fake(*args):
        _, out_size = check(*args)
        return results([t.new_empty(shape) for t, shape in outputs(args, out_size)])

    op = torch.library.custom_op(f'lip_mmdet::{name}', run, mutates_args=(), schema=schema)
    op.register_fake(fake)
    return op


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
