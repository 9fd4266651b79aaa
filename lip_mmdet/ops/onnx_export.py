"""ONNX export of the pooling ops with standard ONNX operators only.

Importing :mod:`lip_mmdet.ops` registers one translation per forward op with both of
``torch.onnx.export``'s exporters, so a plain export call needs no extra argument:

* ``dynamo=False`` (the TorchScript exporter, the one mmdeploy drives): symbolic functions
  registered with ``torch.onnx.register_custom_op_symbolic`` from opset :data:`MIN_OPSET` on.
* ``dynamo=True`` (``torch.export`` + ONNX Script): the exporter builds its registry of ONNX
  functions afresh for each call, from torch's ATen library and ONNX Script's, and takes
  functions for other ops only from ``custom_translation_table``. The translations are added
  to torch's library list when the exporter's registry module is first imported (a one-shot
  import hook; at once if it already is), so they reach every export as
  ``custom_translation_table`` entries would. :func:`onnx_translation_table` returns the same
  functions for an explicit ``custom_translation_table=``. A decomposition into ATen ops in
  torch's global decomposition table would also be found, but FakeTensor then prefers it to
  the op's fake implementation for every symbolic-shape trace (``torch.compile`` included),
  and the exporter's re-trace of the per-tap slices made a two-stage LIP-ResNet-18 export
  take 14 s instead of about 3 s; so there is none.

Both exporters run the same graph builders (:func:`build_lip2d`, :func:`build_dpp2d`,
:func:`build_filter_guide`), written against a small node-building interface:

* ``lip_mmdet::lip2d``: each window's maximum by ``MaxPool`` (which leaves its padding
  out), one ``Slice`` per window tap of the zero-padded features and the -inf padded logits,
  and ``out = sum_t x_t exp(l_t - max) / sum_t exp(l_t - max)``. Every exponent is <= 0 and the
  largest weight of each window is exactly 1, so a float16 engine cannot overflow (e^12, the
  gate's largest weight, is beyond float16's 65504) and no window sum underflows to 0.
  Padding taps get weight exp(-inf) = 0.
* ``lip_mmdet::dpp2d``: one ``Slice`` per tap of the zero-padded features and of a padded map
  of ones (the valid taps), then the op's shifted weights ``alpha e^-T + e^(t - T)`` (``T``
  the window's largest ``t``): every exponent is <= 0, so a huge lambda cannot overflow.
  Padding taps are left out of the mean, the extremes and both sums.
* ``lip_mmdet::dpp_filter_guide`` (Full-DPP's guide, and Lite-DPP's box guide on CPU): a
  depthwise 3x3 ``Conv`` with the op's tap alignment (or, where the graph does not know the
  channel count, one ``Slice`` per filter tap).

The taps of a window of stride s > 1 are unit-step slices of the padded map's s x s phases
(``SpaceToDepth``): ONNX Runtime copies a strided ``Slice`` element by element, which made
them the largest single cost of a LIP-ResNet-50 graph. The dynamo translations pad by
concatenating constant blocks rather than with ``Pad`` (see :meth:`_ScriptNodes.pad`).

Output sizes come from the input's shape at run time (``Shape``, ``Slice`` bounds), so the
height and width of an exported graph stay dynamic. What standard operators do not keep:
half-precision inputs are computed in their own dtype by the graph, where the ops compute
them in float32 (the shift keeps float16 finite, but its rounding is float16's).

Input-size-dependent padding (DPP's ``ceil_output``) reaches the ops as symbolic sizes under
the dynamo exporter, which the translations take as graph values. The TorchScript tracer
gives such a padding as 0-dim tensors, which a ``torch.library`` op cannot take: the DPP
wrappers must route those calls through :func:`traced_dpp2d` and its siblings (see
:func:`has_traced_sizes`).
"""
import importlib.util
import sys
import warnings
from typing import Sequence

import torch
import torch.nn.functional as F

from . import dpp as _dpp_ops  # the ops exist before their translations register
from . import lip as _lip_ops  # noqa: F401
from .pool_args import as_pads, pad_map, to_pair

__all__ = ['MIN_OPSET', 'build_lip2d', 'build_dpp2d', 'build_filter_guide',
           'onnx_translation_table', 'register_onnx_translations', 'has_traced_sizes',
           'traced_dpp2d', 'traced_dpp_box_guide', 'traced_dpp_filter_guide']

#: Lowest opset the TorchScript translations are registered for: ``Pad`` with its pads as an
#: input and ``Slice`` with steps (mmdeploy exports at opset 11 by default).
MIN_OPSET = 11

_NEG_INF = float('-inf')
_POS_INF = float('inf')
_INT64_MAX = 2**63 - 1


# --- node building, one interface for both exporters ----------------------------------------

class _Nodes:
    """Builds ONNX nodes; subclasses bind it to an exporter."""

    def op(self, name, *inputs, **attrs):
        raise NotImplementedError

    def ints(self, values):
        """A 1-D int64 constant."""
        raise NotImplementedError

    def scalar_int(self, value: int):
        """A 0-D int64 constant (a ``Gather`` index that drops the axis)."""
        return self.op('Reshape', self.ints([value]), self.ints([]))

    def static_dim(self, value, axis):
        """``value``'s size along ``axis`` if the graph knows it, else None."""
        raise NotImplementedError

    def scalar_like(self, number, like):
        return self.cast_like(self.op('Constant', value_float=float(number)), like)

    def cast_like(self, value, like):
        """``value`` converted to ``like``'s element type."""
        return self.op('CastLike', value, like)

    def int_vector(self, values):
        """A 1-D int64 tensor of ``values``, each an int or a scalar graph value."""
        if all(isinstance(v, int) for v in values):
            return self.ints(values)
        parts = [self.ints([v]) if isinstance(v, int) else
                 self.op('Reshape', self.op('Cast', v, to=7), self.ints([1])) for v in values]
        return self.op('Concat', *parts, axis=0)

    def plus(self, value, number: int):
        """``value + number`` for an int or a scalar graph value."""
        if isinstance(value, int):
            return value + number
        return self.op('Add', self.op('Cast', value, to=7), self.ints([number]))

    def spatial_size(self, t):
        """int64 [H, W] of an (N, C, H, W) value."""
        return self.op('Slice', self.op('Shape', t), self.ints([2]), self.ints([4]))

    def pad(self, t, pads, fill=None):
        """``t`` padded by (top, bottom, left, right) (ints or graph values, a negative one
        crops) with zeros, or with the number ``fill``."""
        top, bottom, left, right = pads
        spec = self.int_vector([0, 0, top, left, 0, 0, bottom, right])
        if fill is None:
            return self.op('Pad', t, spec)
        return self.op('Pad', t, spec, self.scalar_like(fill, t))

    def taps(self, padded, kernel, stride, out_hw):
        """One strided ``Slice`` per window tap (row-major) of ``padded``, each of the output
        size ``out_hw`` (int64 [Ho, Wo])."""
        steps = self.ints(stride)
        span = self.op('Add', self.op('Mul', self.op('Sub', out_hw, self.ints([1])), steps),
                       self.ints([1]))
        axes = self.ints([2, 3])
        for i in range(kernel[0]):
            for j in range(kernel[1]):
                starts = self.ints([i, j])
                yield self.op('Slice', padded, starts, self.op('Add', span, starts), axes,
                              steps)

    def window_taps(self, t, pads, fill, kernel, stride, out_hw):
        """The taps of every window (row-major) of ``t`` padded by ``pads`` (top, bottom,
        left, right; the bottom and right ones an upper bound of what any window of the
        ``out_hw`` output reaches) with ``fill``, each of the output size.

        A strided ``Slice`` copies element by element, and was the largest single cost of a
        LIP-ResNet-50 graph in ONNX Runtime. With a square stride s above 1 the padded map is
        rearranged once by ``SpaceToDepth`` into its s x s phases (channel blocks), in which
        every tap is a unit-step ``Slice``: rows ``a // s .. a // s + Ho`` of phase
        ``(a % s, b % s)`` for tap ``(a, b)``.
        """
        (kh, kw), (sh, sw) = kernel, stride
        top, bottom, left, right = pads
        if sh != sw or sh == 1:
            yield from self.taps(self.pad(t, pads, fill), kernel, stride, out_hw)
            return
        # phase rows Ho + (kh - 1) // s: the padded map cropped or extended (by fewer than s
        # rows, which no tap reads) to s times that
        grid = self.op('Add', out_hw, self.ints([(kh - 1) // sh, (kw - 1) // sw]))
        padded = self.pad(t, (top, self.plus(bottom, sh - 1), left, self.plus(right, sw - 1)),
                          fill)
        padded = self.op('Slice', padded, self.ints([0, 0]),
                         self.op('Mul', grid, self.ints([sh, sw])), self.ints([2, 3]))
        phases = self.op('SpaceToDepth', padded, blocksize=sh)
        channels = self.op('Slice', self.op('Shape', t), self.ints([1]), self.ints([2]))
        axes = self.ints([1, 2, 3])
        for a in range(kh):
            for b in range(kw):
                block = (a % sh) * sw + b % sw
                offset = self.ints([a // sh, b // sw])
                starts = self.op('Concat', self.op('Mul', channels, self.ints([block])),
                                 offset, axis=0)
                ends = self.op('Concat', self.op('Mul', channels, self.ints([block + 1])),
                               self.op('Add', offset, out_hw), axis=0)
                yield self.op('Slice', phases, starts, ends, axes)

    def total(self, name, terms):
        out = terms[0]
        for term in terms[1:]:
            out = self.op(name, out, term)
        return out

    def channel(self, param, like):
        """A (C,) parameter as (1, C, 1, 1) in ``like``'s dtype."""
        return self.op('Reshape', self.cast_like(param, like), self.ints([1, -1, 1, 1]))


class _TorchScriptNodes(_Nodes):
    """Nodes of a TorchScript export graph ``g`` (attribute names get their type suffix)."""

    def __init__(self, g):
        self.g = g

    def op(self, name, *inputs, **attrs):
        typed = {}
        for key, value in attrs.items():
            kind = 'f' if isinstance(value, float) else 'i'
            typed[f'{key}_{kind}'] = value
        return self.g.op(name, *inputs, **typed)

    def ints(self, values):
        return self.g.op('Constant', value_t=torch.tensor(list(values), dtype=torch.int64))

    def scalar_like(self, number, like):
        dtype = _traced_dtype(like)
        if dtype is None:
            return self.cast_like(self.g.op('Constant', value_t=torch.tensor(float(number))),
                                  like)
        return self.g.op('Constant', value_t=torch.tensor(float(number), dtype=dtype))

    def cast_like(self, value, like):
        dtype = _traced_dtype(like)
        if dtype is None:  # CastLike: opset 15
            return self.g.op('CastLike', value, like)
        return self.g.op('Cast', value, to_i=_ONNX_TYPES[dtype])

    def static_dim(self, value, axis):
        sizes = value.type().varyingSizes()
        return None if sizes is None else sizes[axis]


_ONNX_TYPES = {torch.float16: 10, torch.float32: 1, torch.float64: 11, torch.bfloat16: 16}


def _traced_dtype(value):
    """The dtype the TorchScript graph records for ``value`` (None if it does not)."""
    try:
        dtype = value.type().dtype()
    except RuntimeError:
        return None
    return dtype if dtype in _ONNX_TYPES else None


class _ScriptNodes(_Nodes):
    """Nodes recorded by ONNX Script while the dynamo exporter traces a translation."""

    def __init__(self):
        import onnxscript
        self.opset = onnxscript.opset18

    def op(self, name, *inputs, **attrs):
        out = getattr(self.opset, name)(*inputs, **attrs)
        return out[0] if isinstance(out, tuple) else out  # MaxPool's optional indices

    def ints(self, values):
        return self.opset.Constant(value_ints=[int(v) for v in values])

    def pad(self, t, pads, fill=None):
        """Padding without ``Pad``: the exporter builds opset 18 and converts it to an older
        opset the user asks for, and ONNX's converter has no adapter for Pad-18 (it keeps
        the file at 18). Constant blocks are concatenated (amounts may be graph values) and
        a negative amount (an int) is a slice."""
        top, bottom, left, right = pads
        value = self.scalar_like(0.0 if fill is None else fill, t)
        for axis, before, after in ((2, top, bottom), (3, left, right)):
            if isinstance(before, int) and before < 0:
                t = self.op('Slice', t, self.ints([-before]), self.ints([_INT64_MAX]),
                            self.ints([axis]))
                before = 0
            if isinstance(after, int) and after < 0:
                t = self.op('Slice', t, self.ints([0]), self.ints([after]), self.ints([axis]))
                after = 0
            parts = [self._block(t, axis, before, value), t, self._block(t, axis, after, value)]
            parts = [p for p in parts if p is not None]
            if len(parts) > 1:
                t = self.op('Concat', *parts, axis=axis)
        return t

    def _block(self, t, axis, amount, value):
        """``value`` in ``t``'s shape with ``amount`` rows (axis 2) or columns (axis 3)."""
        if isinstance(amount, int) and amount == 0:
            return None
        shape = self.op('Shape', t)
        parts = [self.op('Slice', shape, self.ints([0]), self.ints([axis])),
                 self.int_vector([amount])]
        if axis < 3:
            parts.append(self.op('Slice', shape, self.ints([axis + 1]), self.ints([4])))
        return self.op('Expand', value, self.op('Concat', *parts, axis=0))

    def static_dim(self, value, axis):
        shape = value.shape
        if shape is None:
            return None
        dim = shape[axis]
        return dim if isinstance(dim, int) else None


# --- the graphs ----------------------------------------------------------------------------

def build_lip2d(b: _Nodes, x, logit, kernel, stride, pads):
    """LIP: ``MaxPool`` window maxima, the taps of the zero-padded features and the -inf
    padded logits, ``sum x_t exp(l_t - max) / sum exp(l_t - max)``."""
    top, bottom, left, right = pads
    win_max = b.op('MaxPool', logit, kernel_shape=list(kernel), strides=list(stride),
                   pads=[top, left, bottom, right])  # MaxPool leaves its padding out
    out_hw = b.spatial_size(win_max)
    nums, dens = [], []
    for xs, ls in zip(b.window_taps(x, pads, None, kernel, stride, out_hw),
                      b.window_taps(logit, pads, _NEG_INF, kernel, stride, out_hw)):
        weight = b.op('Exp', b.op('Sub', ls, win_max))
        nums.append(b.op('Mul', xs, weight))
        dens.append(weight)
    return b.op('Div', b.total('Add', nums), b.total('Add', dens))


def build_dpp2d(b: _Nodes, x, guide, alpha, lam, asym, kernel, stride, pads):
    """DPP, tap by tap as the op's PyTorch form. The output size is the guide's, so only the
    top and left padding shape the windows: the map is padded at the bottom and right by
    ``kernel - 1``, the most any window reaches (the op refuses more), and the rows and
    columns no window of the output reaches are never read."""
    top, _, left, _ = pads
    pads = (top, kernel[0] - 1, left, kernel[1] - 1)
    out_hw = b.spatial_size(guide)
    values = list(b.window_taps(x, pads, None, kernel, stride, out_hw))
    ones = b.op('Expand', b.scalar_like(1.0, x),
                b.op('Concat', b.ints([1, 1]), b.spatial_size(x), axis=0))
    valid_f = list(b.window_taps(ones, pads, None, kernel, stride, out_hw))
    zero = b.scalar_like(0.0, x)
    valid = [b.op('Greater', v, zero) for v in valid_f]
    half_lam = b.op('Mul', b.channel(lam, x), b.scalar_like(0.5, x))
    eps = b.scalar_like(_dpp_ops.DPP_EPS_SQUARED, x)
    penalty = []
    for v in values:
        deviation = b.op('Sub', v, guide)
        if asym:
            deviation = b.op('Relu', deviation)
        penalty.append(b.op('Add', b.op('Mul', deviation, deviation), eps))
    mean = b.op('Div', b.total('Add', [b.op('Mul', p, m) for p, m in zip(penalty, valid_f)]),
                b.total('Add', valid_f))
    log_penalty = [b.op('Log', p) for p in penalty]
    neg_inf, pos_inf = b.scalar_like(_NEG_INF, x), b.scalar_like(_POS_INF, x)
    highest = b.op('Max', *[b.op('Where', m, lp, neg_inf) for lp, m in zip(log_penalty, valid)])
    lowest = b.op('Min', *[b.op('Where', m, lp, pos_inf) for lp, m in zip(log_penalty, valid)])
    # the tap with the largest t: the largest penalty for lambda >= 0, the smallest below
    top_log = b.op('Where', b.op('Not', b.op('Less', half_lam, zero)), highest, lowest)
    log_mean = b.op('Min', b.op('Max', b.op('Log', mean), lowest), highest)
    t_max = b.op('Mul', half_lam, b.op('Sub', top_log, log_mean))
    alpha_part = b.op('Mul', b.channel(alpha, x), b.op('Exp', b.op('Neg', t_max)))
    nums, dens = [], []
    for v, lp, m, mf in zip(values, log_penalty, valid, valid_f):
        shifted = b.op('Where', m, b.op('Mul', half_lam, b.op('Sub', lp, top_log)), neg_inf)
        weight = b.op('Mul', b.op('Add', alpha_part, b.op('Exp', shifted)), mf)
        nums.append(b.op('Mul', weight, v))
        dens.append(weight)
    return b.op('Div', b.total('Add', nums), b.total('Add', dens))


def build_filter_guide(b: _Nodes, x, weight, bias, kernel, stride, pads):
    """Full-DPP's guide: the input padded at the top and left by the window's padding plus
    the filter's alignment (a negative amount crops) and at the bottom and right by enough
    zeros, a depthwise 3x3 ``Conv`` at the window's stride, and the pooling's output size
    ``(H + top + bottom - kernel) // stride + 1`` sliced (``bottom``/``right`` may be graph
    values)."""
    top, bottom, left, right = pads
    (kh, kw), (sh, sw) = kernel, stride
    align_h, align_w = _dpp_ops._filter_alignment(kh), _dpp_ops._filter_alignment(kw)
    top_f, left_f = b.plus(top, align_h), b.plus(left, align_w)
    # Rows the filter reads below the input: at most the bottom padding (< kh) plus its own
    # overhang; reading more zero rows only adds outputs that are sliced away.
    extra_h, extra_w = max(0, 2 - align_h), max(0, 2 - align_w)
    padded = b.pad(x, (top_f, extra_h, left_f, extra_w))
    weight = b.cast_like(weight, x)
    bias = b.channel(bias, x)
    groups = b.static_dim(x, 1) or b.static_dim(weight, 0)  # one group per channel
    if groups is not None:
        out = b.op('Add', b.op('Conv', padded, weight, kernel_shape=[3, 3], strides=[sh, sw],
                               group=groups), bias)
    else:  # the channel count is unknown to the graph: one slice per filter tap
        taps = b.op('Reshape', weight, b.ints([1, -1, 9, 1, 1]))
        conv_hw = b.op('Add', b.op('Div', b.op('Sub', b.spatial_size(padded), b.ints([3, 3])),
                                   b.ints([sh, sw])), b.ints([1]))
        terms = [b.op('Mul', tap, b.op('Gather', taps, b.scalar_int(k), axis=2))
                 for k, tap in enumerate(b.taps(padded, (3, 3), (sh, sw), conv_hw))]
        out = b.op('Add', b.total('Add', terms), bias)
    padded_size = b.op('Add', b.spatial_size(x),
                       b.op('Add', b.int_vector([top, left]), b.int_vector([bottom, right])))
    out_hw = b.op('Add', b.op('Div', b.op('Sub', padded_size, b.ints([kh, kw])),
                              b.ints([sh, sw])), b.ints([1]))
    return b.op('Slice', out, b.ints([0, 0]), out_hw, b.ints([2, 3]))


# --- dynamo exporter: ONNX Script translations ----------------------------------------------

# A translation's arguments carry the op schema's names and the attributes' types: torch 2.9
# matches a custom_translation_table entry to a node by argument name, and reads an
# unannotated argument as a tensor input.
def _lip2d_onnx(x, logit, kernel: Sequence[int], stride: Sequence[int], pads: Sequence[int],
                backend: str = 'auto'):
    return build_lip2d(_ScriptNodes(), x, logit, list(kernel), list(stride), as_pads(pads))


def _dpp2d_onnx(x, guide, alpha, lam, asym: bool, kernel: Sequence[int], stride: Sequence[int],
                pads: Sequence[int], backend: str = 'auto'):
    return build_dpp2d(_ScriptNodes(), x, guide, alpha, lam, bool(asym), list(kernel),
                       list(stride), as_pads(pads))


def _filter_guide_onnx(x, weight, bias, kernel: Sequence[int], stride: Sequence[int],
                       pads: Sequence[int], backend: str = 'auto'):
    return build_filter_guide(_ScriptNodes(), x, weight, bias, list(kernel), list(stride),
                              as_pads(pads))


def onnx_translation_table() -> dict:
    """``{op: translation}`` of every forward op, for
    ``torch.onnx.export(..., dynamo=True, custom_translation_table=...)``.

    Importing :mod:`lip_mmdet.ops` already gives the exporter these functions; an explicit
    table takes precedence over them (the exporter tries custom entries first).
    """
    ops = torch.ops.lip_mmdet
    return {ops.lip2d.default: _lip2d_onnx, ops.dpp2d.default: _dpp2d_onnx,
            ops.dpp_filter_guide.default: _filter_guide_onnx}


#: The exporter module whose import completes torch's ATen-to-ONNX library list.
_EXPORTER_REGISTRY = 'torch.onnx._internal.exporter._registration'


def _add_to_exporter_library() -> None:
    """Appends the translations to the list torch's dynamo exporter builds each registry from
    (as ``custom_translation_table`` entries: custom, tried first)."""
    from torch.onnx._internal.exporter import _registration
    from torch.onnx._internal.exporter._torchlib import _torchlib_registry

    library = _torchlib_registry._registry
    known = {id(meta.onnx_function) for meta in library}
    for op, function in onnx_translation_table().items():
        if id(function) not in known:
            library.append(_registration.OnnxDecompMeta(
                onnx_function=function, fx_target=op, signature=None, is_custom=True))


def _add_to_exporter_library_safely() -> None:
    try:
        _add_to_exporter_library()
    except Exception as err:  # a torch whose exporter is laid out differently
        warnings.warn(f'lip_mmdet could not give its ONNX translations to the dynamo exporter '
                      f'({type(err).__name__}: {err}); pass custom_translation_table='
                      'lip_mmdet.ops.onnx_export.onnx_translation_table() to '
                      'torch.onnx.export', stacklevel=2)


class _AfterImport:
    """``sys.meta_path`` finder that runs ``callback`` once, right after the module ``name``
    has been executed by its own loader (it finds nothing itself)."""

    def __init__(self, name, callback):
        self.name, self.callback = name, callback

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        loader = getattr(spec, 'loader', None)
        if loader is None or not hasattr(loader, 'exec_module'):
            return spec
        execute, callback = loader.exec_module, self.callback

        def exec_module(module):
            execute(module)
            callback()

        loader.exec_module = exec_module
        return spec


# --- TorchScript exporter: symbolic functions ---------------------------------------------

def _typed(out, like):
    """``out`` typed with ``like``'s batch and channels: ONNX shape inference cannot follow a
    ``Slice`` with computed ends, and a later depthwise ``Conv`` needs the channel count."""
    sizes = like.type().varyingSizes()
    if sizes is not None and len(sizes) == 4:
        out.setType(like.type().with_sizes([sizes[0], sizes[1], None, None]))
    return out


def _const_ints(value):
    from torch.onnx import symbolic_helper
    return [int(v) for v in symbolic_helper._get_const(value, 'is', 'window')]


def _const_bool(value) -> bool:
    from torch.onnx import symbolic_helper
    return bool(symbolic_helper._get_const(value, 'b', 'asym'))


def _lip2d_symbolic(g, x, logit, kernel, stride, padding, backend):
    return _typed(build_lip2d(_TorchScriptNodes(g), x, logit, _const_ints(kernel),
                              _const_ints(stride), as_pads(_const_ints(padding))), x)


def _dpp2d_symbolic(g, x, guide, alpha, lam, asym, kernel, stride, pads, backend):
    return _typed(build_dpp2d(_TorchScriptNodes(g), x, guide, alpha, lam, _const_bool(asym),
                              _const_ints(kernel), _const_ints(stride),
                              as_pads(_const_ints(pads))), x)


def _filter_guide_symbolic(g, x, weight, bias, kernel, stride, pads, backend):
    return _typed(build_filter_guide(_TorchScriptNodes(g), x, weight, bias,
                                     _const_ints(kernel), _const_ints(stride),
                                     as_pads(_const_ints(pads))), x)


# --- TorchScript exporter: padding that depends on the traced input size --------------------

def has_traced_sizes(padding) -> bool:
    """Whether ``padding`` holds sizes the TorchScript tracer follows (0-dim tensors).

    Under ``torch.onnx.export(..., dynamo=False)`` a module's ``x.shape[i]`` is such a
    tensor, so a padding computed from the input size (DPP's ``ceil_output``) reaches the
    ops' wrappers as tensors. A ``torch.library`` op cannot take them in an ``int[]``
    argument (the tracer asserts), so those calls go through :func:`traced_dpp2d`,
    :func:`traced_dpp_box_guide` and :func:`traced_dpp_filter_guide`, which keep the
    padding's computation in the exported graph.
    """
    return (torch.jit.is_tracing() and isinstance(padding, (tuple, list))
            and any(isinstance(p, torch.Tensor) for p in padding))


def _sizes_tensor(padding) -> torch.Tensor:
    """The 4 pads as one int64 tensor (traced sizes stay connected to the input's shape)."""
    return torch.stack([p.to(torch.int64).reshape(()) if isinstance(p, torch.Tensor)
                        else torch.tensor(int(p), dtype=torch.int64) for p in as_pads(padding)])


def _graph_pads(b: _Nodes, value):
    """(top, bottom, left, right) as scalar graph values of a traced int64 [4] tensor,
    clamped at 0: a ceil-size padding is ``max(..., 0)``, and the tracer records only the
    side of that max the export size took."""
    clamped = b.op('Max', value, b.ints([0]))
    return tuple(b.op('Gather', clamped, b.scalar_int(i), axis=0) for i in range(4))


def _window(kernel_size, stride):
    return to_pair(kernel_size, 'kernel_size'), to_pair(stride, 'stride')


class _TracedFilterGuide(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x, weight, bias, pads, kernel, stride, backend):
        return _dpp_ops.dpp_filter_guide(x, weight, bias, kernel, stride,
                                         tuple(pads.tolist()), backend=backend)

    @staticmethod
    def symbolic(g, x, weight, bias, pads, kernel, stride, backend):
        b = _TorchScriptNodes(g)
        return _typed(build_filter_guide(b, x, weight, bias, kernel, stride,
                                         _graph_pads(b, pads)), x)


class _TracedDpp2d(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x, guide, alpha, lam, pads, reward, kernel, stride, backend):
        return _dpp_ops.dpp2d(x, guide, alpha, lam, reward, kernel, stride,
                              tuple(pads.tolist()), backend=backend)

    @staticmethod
    def symbolic(g, x, guide, alpha, lam, pads, reward, kernel, stride, backend):
        b = _TorchScriptNodes(g)
        return _typed(build_dpp2d(b, x, guide, alpha, lam, reward == 'asym', kernel, stride,
                                  _graph_pads(b, pads)), x)


def traced_dpp2d(x, guide, alpha, lam, reward='asym', kernel_size=2, stride=2, padding=0, *,
                 backend='auto'):
    """:func:`lip_mmdet.ops.dpp2d` for a padding with traced sizes (see
    :func:`has_traced_sizes`): the op runs on the traced input's sizes (all its checks
    included) and the exported graph computes the padding from the input's shape."""
    channels = x.shape[1]
    alpha, lam = (t.reshape(-1).expand(channels) for t in (alpha, lam))
    kernel, step = _window(kernel_size, stride)
    return _TracedDpp2d.apply(x, guide, alpha, lam, _sizes_tensor(padding), reward, kernel,
                              step, backend)


def traced_dpp_filter_guide(x, weight, bias, kernel_size=2, stride=2, padding=0, *,
                            backend='auto'):
    """:func:`lip_mmdet.ops.dpp_filter_guide` for a padding with traced sizes."""
    if bias is None:
        bias = weight.new_zeros(x.shape[1])
    kernel, step = _window(kernel_size, stride)
    return _TracedFilterGuide.apply(x, weight, bias, _sizes_tensor(padding), kernel, step,
                                    backend)


def traced_dpp_box_guide(x, kernel_size=2, stride=2, padding=0, *, backend='auto'):
    """:func:`lip_mmdet.ops.dpp_box_guide` for a padding with traced sizes: the filter guide
    with box taps (the window mean, zero padding counted, for windows up to 3x3), or the mean
    of the padded map by ``F.avg_pool2d`` for larger windows (the tracer follows both)."""
    kernel, step = _window(kernel_size, stride)
    if max(kernel) > 3:
        return F.avg_pool2d(pad_map(x, as_pads(padding)), kernel, step)
    box = _dpp_ops.dpp_filter_box_init(kernel).to(x.dtype).expand(x.shape[1], 1, 3, 3)
    return traced_dpp_filter_guide(x, box, None, kernel, step, padding, backend=backend)


# --- registration ---------------------------------------------------------------------------

_REGISTERED = []


def register_onnx_translations() -> None:
    """Registers the translations with both exporters (once; importing :mod:`lip_mmdet.ops`
    calls it). Needs neither onnx nor onnxscript until an export runs."""
    if _REGISTERED:
        return
    _REGISTERED.append(True)
    symbolics = (('lip2d', _lip2d_symbolic), ('dpp2d', _dpp2d_symbolic),
                 ('dpp_filter_guide', _filter_guide_symbolic))
    for name, symbolic in symbolics:
        torch.onnx.register_custom_op_symbolic(f'lip_mmdet::{name}', symbolic, MIN_OPSET)
    if _EXPORTER_REGISTRY in sys.modules:
        _add_to_exporter_library_safely()
    else:
        sys.meta_path.insert(0, _AfterImport(_EXPORTER_REGISTRY,
                                             _add_to_exporter_library_safely))


register_onnx_translations()

