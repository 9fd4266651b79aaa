"""A stand-in for every kernel of the pooling ops, for tests of their argument checks."""
import contextlib
from unittest import mock

from lip_mmdet.ops import dispatch


class KernelReached(Exception):
    """Raised where an op would hand its arguments to a kernel. Not a ValueError, TypeError
    or RuntimeError, so no expected-error check can take it for a clean refusal."""


@contextlib.contextmanager
def no_kernels():
    """Within it, every path from an op's implementation to a kernel (C, Triton or PyTorch
    ops) raises :class:`KernelReached`: each goes through the backend choice of the ops' one
    skeleton (``dispatch.implementation``), after the op's argument check. An op called
    inside must refuse its arguments before."""

    def refuse(*args, **kwargs):
        raise KernelReached('an op reached a kernel with these arguments')

    with mock.patch.object(dispatch, 'implementation', refuse):
        yield
