"""ONNX export of the pooling ops with standard ONNX operators only.

Importing :mod:`lip_mmdet.ops` registers a translation of every forward op for both of
``torch.onnx.export``'s exporters, so a plain export call needs no extra argument:

* ``dynamo=True`` (``torch.export`` + ONNX Script): each op gets a decomposition into ATen
  ops in torch's global decomposition table (``torch._decomp.decomposition_table``). The
  exporter's decomposition pass builds its table from that one (every entry whose op has no
  ONNX function of its own), so it replaces the opaque op by those ATen ops and its ATen
  library translates them. ``torch.export.export`` and ``torch.compile`` do not read the
  global table (they use the core ATen and Inductor tables), so they keep the op.
* ``dynamo=False`` (the TorchScript exporter, the one mmdeploy drives): a symbolic function
  per op, registered with ``torch.onnx.register_custom_op_symbolic`` from opset
  :data:`MIN_OPSET` on.

Both translations have the structure of the ops' PyTorch form:

* ``lip_mmdet::lip2d``: the logits padded with -inf, each window's maximum by ``MaxPool``,
  one strided ``Slice`` per window tap of the padded logits and features, and
  ``out = sum_t x_t exp(l_t - max) / sum_t exp(l_t - max)``. Every exponent is <= 0 and the
  largest weight of a window is exactly 1, so a float16 engine cannot overflow (e^12, the
  gate's largest weight, is beyond float16's 65504) and no window sum underflows to 0.
  Padding taps get weight exp(-inf) = 0.
* ``lip_mmdet::dpp2d``: one ``Slice`` per tap of the zero-padded features and of a padded
  map of ones (the valid taps), then the op's shifted weights ``alpha e^-T + e^(t - T)``
  (``T`` the window's largest ``t``): every exponent is <= 0, so a huge lambda cannot
  overflow. Padding taps are left out of the mean, the maximum and both sums.
* ``lip_mmdet::dpp_filter_guide`` (Full-DPP's guide, and Lite-DPP's box guide on CPU): a
  depthwise ``Conv`` with the op's tap alignment.

Output sizes come from the input's shape at run time (``Shape``, ``Slice`` bounds), so the
height and width of an exported graph stay dynamic. What standard operators do not keep:
half-precision inputs are computed in float16 by the graph, where the ops compute them in
float32 (the shift keeps float16 finite, but its rounding is float16's).
"""
from typing import Sequence

import torch
import torch.nn.functional as F

from . import dpp as _dpp_ops  # the ops are defined before their translations register
from . import lip as _lip_ops  # noqa: F401

__all__ = ['MIN_OPSET', 'lip2d_export_form', 'dpp2d_export_form', 'filter_guide_export_form',
           'register_onnx_translations', 'has_traced_sizes', 'traced_dpp2d',
           'traced_dpp_box_guide', 'traced_dpp_filter_guide']

#: Lowest opset the TorchScript translations are registered for: ``Slice`` with steps
#: (opset 10) and ``Pad`` taking its pads as an input (opset 11).
MIN_OPSET = 11

_NEG_INF = float('-inf')
_POS_INF = float('inf')


def _pads(padding) -> tuple:
    """(top, bottom, left, right) from (ph, pw) or a 4-tuple (ints or traced sizes)."""
    if len(padding) == 4:
        return tuple(padding)
    ph, pw = padding
    return ph, ph, pw, pw


def _eps_squared() -> float:
    return _dpp_ops.DPP_EPS_SQUARED


# --- PyTorch forms (the dynamo exporter's decompositions) -----------------------------------

def _taps(padded: torch.Tensor, kernel, stride, out_size):
    """Strided views of a padded (N, C, H, W) map, one per window tap (row-major), each of
    the output size."""
    (kh, kw), (sh, sw), (oh, ow) = kernel, stride, out_size
    for i in range(kh):
        for j in range(kw):
            yield padded[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]


def lip2d_export_form(x: torch.Tensor, logit: torch.Tensor, kernel: Sequence[int],
                      stride: Sequence[int], padding: Sequence[int]) -> torch.Tensor:
    """``lip2d`` as ATen ops an ONNX exporter translates: per-window max shift, one strided
    slice per tap, padding taps weighted exp(-inf) = 0. Computes in the input's dtype."""
    top, bottom, left, right = _pads(padding)
    box = (left, right, top, bottom)
    l_pad = F.pad(logit, box, value=_NEG_INF)
    win_max = F.max_pool2d(l_pad, kernel, stride)
    x_pad = F.pad(x, box)
    out_size = win_max.shape[2:]
    num = den = None
    for xs, ls in zip(_taps(x_pad, kernel, stride, out_size),
                      _taps(l_pad, kernel, stride, out_size)):
        weight = torch.exp(ls - win_max)
        num = xs * weight if num is None else num + xs * weight
        den = weight if den is None else den + weight
    return num / den


def dpp2d_export_form(x: torch.Tensor, guide: torch.Tensor, alpha: torch.Tensor,
                      lam: torch.Tensor, asym: bool, kernel: Sequence[int],
                      stride: Sequence[int], pads: Sequence[int]) -> torch.Tensor:
    """``dpp2d`` as ATen ops, the op's PyTorch form tap by tap: weights
    ``alpha e^-T + e^(t - T)`` with every exponent <= 0, padding taps left out. The output
    size is the guide's. Computes in the input's dtype."""
    top, bottom, left, right = _pads(pads)
    box = (left, right, top, bottom)
    out_size = guide.shape[2:]
    values = list(_taps(F.pad(x, box), kernel, stride, out_size))
    ones = torch.ones_like(x[:1, :1])
    valid = [v > 0 for v in _taps(F.pad(ones, box), kernel, stride, out_size)]
    valid_f = [v.to(x.dtype) for v in valid]
    half_lam = (lam.to(x.dtype) * 0.5).view(1, -1, 1, 1)
    eps = _eps_squared()
    penalty = []
    for v in values:
        deviation = v - guide
        if asym:
            deviation = torch.relu(deviation)
        penalty.append(deviation * deviation + eps)
    count = _sum(valid_f)
    mean = _sum([p * m for p, m in zip(penalty, valid_f)]) / count
    log_penalty = [p.log() for p in penalty]
    highest = _fold(torch.maximum, [torch.where(m, lp, _NEG_INF)
                                    for lp, m in zip(log_penalty, valid)])
    lowest = _fold(torch.minimum, [torch.where(m, lp, _POS_INF)
                                   for lp, m in zip(log_penalty, valid)])
    top_log = torch.where(half_lam >= 0, highest, lowest)
    log_mean = torch.minimum(torch.maximum(mean.log(), lowest), highest)
    alpha_part = alpha.to(x.dtype).view(1, -1, 1, 1) * torch.exp(
        -(half_lam * (top_log - log_mean)))
    num = den = None
    for v, lp, m, mf in zip(values, log_penalty, valid, valid_f):
        weight = (alpha_part + torch.exp(torch.where(m, half_lam * (lp - top_log),
                                                     _NEG_INF))) * mf
        num = weight * v if num is None else num + weight * v
        den = weight if den is None else den + weight
    return num / den


def _sum(terms):
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def _fold(fn, terms):
    total = terms[0]
    for term in terms[1:]:
        total = fn(total, term)
    return total


def filter_guide_export_form(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                             kernel: Sequence[int], stride: Sequence[int],
                             pads: Sequence[int]) -> torch.Tensor:
    """``dpp_filter_guide`` as a depthwise convolution: the 3x3 filter centred on each window
    (the op's alignment), over the input padded (negative pads crop) so that it gives the
    pooling's output size exactly."""
    top, bottom, left, right = _pads(pads)
    (kh, kw), (sh, sw) = kernel, stride
    height, width = x.shape[2:]
    out_h = (height + top + bottom - kh) // sh + 1
    out_w = (width + left + right - kw) // sw + 1
    top_f, left_f = top + (3 - kh) // 2, left + (3 - kw) // 2
    bottom_f = (out_h - 1) * sh + 3 - top_f - height
    right_f = (out_w - 1) * sw + 3 - left_f - width
    padded = F.pad(x, (left_f, right_f, top_f, bottom_f))
    return F.conv2d(padded, weight.to(x.dtype), bias.to(x.dtype), stride=(sh, sw),
                    groups=x.shape[1])


def _lip2d_decomposition(x, logit, kernel, stride, padding, backend):
    return lip2d_export_form(x, logit, kernel, stride, padding)


def _dpp2d_decomposition(x, guide, alpha, lam, asym, kernel, stride, pads, backend):
    return dpp2d_export_form(x, guide, alpha, lam, asym, kernel, stride, pads)


def _filter_guide_decomposition(x, weight, bias, kernel, stride, pads, backend):
    return filter_guide_export_form(x, weight, bias, kernel, stride, pads)


# --- TorchScript symbolic functions ---------------------------------------------------------

class _Onnx:
    """Builds ONNX nodes in a TorchScript export graph ``g`` for tensors of ``like``'s dtype."""

    def __init__(self, g, like):
        self.g = g
        self.like = like
        self.dtype = like.type().dtype()

    def op(self, name, *inputs, **attrs):
        return self.g.op(name, *inputs, **attrs)

    def ints(self, values):
        return self.g.op('Constant', value_t=torch.tensor(list(values), dtype=torch.int64))

    def int_vector(self, values):
        """A 1-D int64 tensor of ``values``, each an int or a scalar graph value."""
        if all(isinstance(v, int) for v in values):
            return self.ints(values)
        parts = [self.ints([v]) if isinstance(v, int) else
                 self.op('Reshape', self.op('Cast', v, to_i=7), self.ints([1])) for v in values]
        return self.op('Concat', *parts, axis_i=0)

    def scalar(self, value):
        return self.g.op('Constant', value_t=torch.tensor(value, dtype=self.dtype))

    def spatial_size(self, t):
        """int64 [H, W] of an (N, C, H, W) value."""
        return self.op('Slice', self.op('Shape', t), self.ints([2]), self.ints([4]))

    def pad(self, t, pads, fill=None):
        """``t`` padded by (top, bottom, left, right) (ints or graph values) with ``fill``."""
        top, bottom, left, right = pads
        spec = self.int_vector([0, 0, top, left, 0, 0, bottom, right])
        if fill is None:
            return self.op('Pad', t, spec)
        return self.op('Pad', t, spec, self.scalar(fill))

    def taps(self, padded, kernel, stride, out_hw):
        """One strided ``Slice`` per window tap of ``padded``, each of the output size
        ``out_hw`` (int64 [Ho, Wo])."""
        steps = self.ints(stride)
        span = self.op('Add', self.op('Mul', self.op('Sub', out_hw, self.ints([1])), steps),
                       self.ints([1]))
        axes = self.ints([2, 3])
        for i in range(kernel[0]):
            for j in range(kernel[1]):
                starts = self.ints([i, j])
                yield self.op('Slice', padded, starts, self.op('Add', span, starts), axes,
                              steps)

    def total(self, name, terms):
        out = terms[0]
        for term in terms[1:]:
            out = self.op(name, out, term)
        return out

    def channel(self, param):
        """A (C,) parameter as (1, C, 1, 1) in the compute dtype."""
        cast = self.op('Cast', param, to_i=_onnx_type(self.dtype))
        return self.op('Reshape', cast, self.ints([1, -1, 1, 1]))


def _onnx_type(dtype: torch.dtype) -> int:
    return {torch.float16: 10, torch.float32: 1, torch.float64: 11, torch.bfloat16: 16}[dtype]


def _static_dim(value, axis):
    """The size of ``value``'s dimension ``axis`` if the export graph knows it, else None."""
    sizes = value.type().varyingSizes()
    return None if sizes is None else sizes[axis]


def _const_ints(value):
    from torch.onnx import symbolic_helper
    return [int(v) for v in symbolic_helper._get_const(value, 'is', 'window')]


def _const_bool(value) -> bool:
    from torch.onnx import symbolic_helper
    return bool(symbolic_helper._get_const(value, 'b', 'asym'))


def build_lip2d(b: _Onnx, x, logit, kernel, stride, pads):
    """The LIP graph: -inf padded logits, ``MaxPool`` window maxima, one slice per tap."""
    l_pad = b.pad(logit, pads, _NEG_INF)
    win_max = b.op('MaxPool', l_pad, kernel_shape_i=list(kernel), strides_i=list(stride))
    x_pad = b.pad(x, pads)
    out_hw = b.spatial_size(win_max)
    nums, dens = [], []
    for xs, ls in zip(b.taps(x_pad, kernel, stride, out_hw),
                      b.taps(l_pad, kernel, stride, out_hw)):
        weight = b.op('Exp', b.op('Sub', ls, win_max))
        nums.append(b.op('Mul', xs, weight))
        dens.append(weight)
    return b.op('Div', b.total('Add', nums), b.total('Add', dens))


def build_dpp2d(b: _Onnx, x, guide, alpha, lam, asym, kernel, stride, pads):
    """The DPP graph, tap by tap as :func:`dpp2d_export_form`; the output size is the
    guide's, so only the top and left padding shape the windows (the bottom and right
    padding may be any upper bound)."""
    out_hw = b.spatial_size(guide)
    values = list(b.taps(b.pad(x, pads), kernel, stride, out_hw))
    ones = b.op('ConstantOfShape', b.op('Concat', b.ints([1, 1]), b.spatial_size(x), axis_i=0),
                value_t=torch.tensor([1.0], dtype=b.dtype))
    valid_f = list(b.taps(b.pad(ones, pads), kernel, stride, out_hw))
    valid = [b.op('Greater', v, b.scalar(0.0)) for v in valid_f]
    half_lam = b.op('Mul', b.channel(lam), b.scalar(0.5))
    alpha = b.channel(alpha)
    eps = b.scalar(_eps_squared())
    penalty = []
    for v in values:
        deviation = b.op('Sub', v, guide)
        if asym:
            deviation = b.op('Relu', deviation)
        penalty.append(b.op('Add', b.op('Mul', deviation, deviation), eps))
    count = b.total('Add', valid_f)
    mean = b.op('Div', b.total('Add', [b.op('Mul', p, m) for p, m in zip(penalty, valid_f)]),
                count)
    log_penalty = [b.op('Log', p) for p in penalty]
    neg_inf, pos_inf = b.scalar(_NEG_INF), b.scalar(_POS_INF)
    highest = b.op('Max', *[b.op('Where', m, lp, neg_inf) for lp, m in zip(log_penalty, valid)])
    lowest = b.op('Min', *[b.op('Where', m, lp, pos_inf) for lp, m in zip(log_penalty, valid)])
    top_log = b.op('Where', b.op('GreaterOrEqual', half_lam, b.scalar(0.0)), highest, lowest)
    log_mean = b.op('Min', b.op('Max', b.op('Log', mean), lowest), highest)
    t_max = b.op('Mul', half_lam, b.op('Sub', top_log, log_mean))
    alpha_part = b.op('Mul', alpha, b.op('Exp', b.op('Neg', t_max)))
    nums, dens = [], []
    for v, lp, m, mf in zip(values, log_penalty, valid, valid_f):
        shifted = b.op('Where', m, b.op('Mul', half_lam, b.op('Sub', lp, top_log)), neg_inf)
        weight = b.op('Mul', b.op('Add', alpha_part, b.op('Exp', shifted)), mf)
        nums.append(b.op('Mul', weight, v))
        dens.append(weight)
    return b.op('Div', b.total('Add', nums), b.total('Add', dens))


def build_filter_guide(b: _Onnx, x, weight, bias, kernel, stride, pads):
    """Full-DPP's guide: the input padded at the top/left by the window's padding plus the
    filter's alignment (a negative amount crops), at the bottom/right by enough zeros, a
    depthwise 3x3 ``Conv`` at the window's stride, and the pooling's output size sliced."""
    top, bottom, left, right = pads
    (kh, kw), (sh, sw) = kernel, stride
    top_f, left_f = top + (3 - kh) // 2, left + (3 - kw) // 2
    # Rows the filter reads below the input: at most the bottom padding (< kh) plus its own
    # overhang; reading more zero rows only adds outputs that are sliced away.
    extra_h, extra_w = max(0, 2 - (3 - kh) // 2), max(0, 2 - (3 - kw) // 2)
    padded = b.pad(x, (max(top_f, 0), extra_h, max(left_f, 0), extra_w))
    if top_f < 0 or left_f < 0:
        padded = b.op('Slice', padded, b.ints([max(-top_f, 0), max(-left_f, 0)]),
                      b.ints([2**62, 2**62]), b.ints([2, 3]))
    groups = _static_dim(x, 1) or _static_dim(weight, 0)  # one group per channel
    out = b.op('Conv', padded, b.op('Cast', weight, to_i=_onnx_type(b.dtype)),
               b.op('Cast', bias, to_i=_onnx_type(b.dtype)), kernel_shape_i=[3, 3],
               strides_i=[sh, sw], group_i=groups)
    # Ho = (H + top + bottom - kh) // sh + 1, per axis, from the input's size at run time
    size = b.spatial_size(x)
    padded_size = b.op('Add', size, b.op('Add', b.int_vector([top, left]),
                                           b.int_vector([bottom, right])))
    out_hw = b.op('Add', b.op('Div', b.op('Sub', padded_size, b.ints([kh, kw])),
                              b.ints([sh, sw])), b.ints([1]))
    return b.op('Slice', out, b.ints([0, 0]), out_hw, b.ints([2, 3]))


def _lip2d_symbolic(g, x, logit, kernel, stride, padding, backend):
    return build_lip2d(_Onnx(g, x), x, logit, _const_ints(kernel), _const_ints(stride),
                       _pads(_const_ints(padding)))


def _dpp2d_symbolic(g, x, guide, alpha, lam, asym, kernel, stride, pads, backend):
    return build_dpp2d(_Onnx(g, x), x, guide, alpha, lam, _const_bool(asym),
                       _const_ints(kernel), _const_ints(stride), _pads(_const_ints(pads)))


def _filter_guide_symbolic(g, x, weight, bias, kernel, stride, pads, backend):
    return build_filter_guide(_Onnx(g, x), x, weight, bias, _const_ints(kernel),
                              _const_ints(stride), _pads(_const_ints(pads)))


# --- traced input-size-dependent padding (TorchScript exporter) -----------------------------

def has_traced_sizes(padding) -> bool:
    """Whether ``padding`` holds sizes the TorchScript tracer follows (0-dim tensors).

    Under ``torch.onnx.export(..., dynamo=False)`` a module's ``x.shape[i]`` is such a
    tensor, so a padding computed from the input size (DPP's ``ceil_output``) reaches the
    ops as tensors. A ``torch.library`` op cannot take them in an ``int[]`` argument (the
    tracer asserts), so these calls go through :func:`traced_dpp2d` and its siblings, which
    keep the computation in the exported graph.
    """
    return (torch.jit.is_tracing() and isinstance(padding, (tuple, list))
            and any(isinstance(p, torch.Tensor) for p in padding))


def _static(padding):
    return tuple(int(p) for p in padding)


def _size_input(padding) -> torch.Tensor:
    """The 4 pads as one int64 tensor (traced sizes stay connected to the input's shape)."""
    pads = _pads(padding)
    return torch.stack([p.to(torch.int64).reshape(()) if isinstance(p, torch.Tensor)
                        else torch.tensor(p, dtype=torch.int64) for p in pads])


def _pads_from_value(b: _Onnx, value):
    """(top, bottom, left, right) as scalar graph values of a traced int64 [4] tensor,
    clamped at 0 (a ceil-size padding is ``max(..., 0)``; the tracer keeps whichever side
    of that max the export size took, so the graph takes it again)."""
    value = b.op('Max', value, b.ints([0]))
    return tuple(b.op('Gather', value, b.ints([i]), axis_i=0) for i in range(4))


class _TracedFilterGuide(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x, weight, bias, pads, kernel, stride, backend):
        return _dpp_ops.dpp_filter_guide(x, weight, bias, kernel, stride, _static(pads.tolist()),
                                backend=backend)

    @staticmethod
    def symbolic(g, x, weight, bias, pads, kernel, stride, backend):
        b = _Onnx(g, x)
        return build_filter_guide(b, x, weight, bias, kernel, stride, _pads_from_value(b, pads))


class _TracedDpp2d(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x, guide, alpha, lam, pads, reward, kernel, stride, backend):
        return _dpp_ops.dpp2d(x, guide, alpha, lam, reward, kernel, stride, _static(pads.tolist()),
                     backend=backend)

    @staticmethod
    def symbolic(g, x, guide, alpha, lam, pads, reward, kernel, stride, backend):
        b = _Onnx(g, x)
        return build_dpp2d(b, x, guide, alpha, lam, reward == 'asym', kernel, stride,
                           _pads_from_value(b, pads))


def _window(kernel_size, stride):
    def pair(v):
        return (v, v) if isinstance(v, int) else tuple(v)
    return pair(kernel_size), pair(stride)


def traced_dpp2d(x, guide, alpha, lam, reward='asym', kernel_size=2, stride=2, padding=0, *,
                 backend='auto'):
    """:func:`lip_mmdet.ops.dpp2d` for a padding with traced sizes (see
    :func:`has_traced_sizes`): the op runs on the sizes of the traced input, and the exported
    graph computes the padding from the input's shape."""
    channels = x.shape[1]
    alpha, lam = (t.reshape(-1).expand(channels) for t in (alpha, lam))
    kernel, step = _window(kernel_size, stride)
    return _TracedDpp2d.apply(x, guide, alpha, lam, _size_input(padding), reward, kernel,
                              step, backend)


def traced_dpp_filter_guide(x, weight, bias, kernel_size=2, stride=2, padding=0, *,
                            backend='auto'):
    """:func:`lip_mmdet.ops.dpp_filter_guide` for a padding with traced sizes."""
    if bias is None:
        bias = weight.new_zeros(x.shape[1])
    kernel, step = _window(kernel_size, stride)
    return _TracedFilterGuide.apply(x, weight, bias, _size_input(padding), kernel, step,
                                    backend)


def traced_dpp_box_guide(x, kernel_size=2, stride=2, padding=0, *, backend='auto'):
    """:func:`lip_mmdet.ops.dpp_box_guide` for a padding with traced sizes: the filter guide
    with box taps (for windows up to 3x3 the same values as the window mean; larger windows
    take the mean over padded windows by ``F.avg_pool2d``, which the tracer follows)."""
    kernel, step = _window(kernel_size, stride)
    if max(kernel) > 3:
        top, bottom, left, right = _pads(padding)
        return F.avg_pool2d(F.pad(x, (left, right, top, bottom)), kernel, step)
    box = _dpp_ops.dpp_filter_box_init(kernel).to(x.dtype).expand(x.shape[1], 1, 3, 3)
    return traced_dpp_filter_guide(x, box, None, kernel, step, padding, backend=backend)


# --- registration ---------------------------------------------------------------------------

_REGISTERED = []


def register_onnx_translations() -> None:
    """Registers the translations of every forward op with both exporters (once; importing
    :mod:`lip_mmdet.ops` calls it)."""
    if _REGISTERED:
        return
    from torch._decomp import decomposition_table, register_decomposition

    ops = torch.ops.lip_mmdet
    pairs = ((ops.lip2d.default, _lip2d_decomposition, 'lip2d', _lip2d_symbolic),
             (ops.dpp2d.default, _dpp2d_decomposition, 'dpp2d', _dpp2d_symbolic),
             (ops.dpp_filter_guide.default, _filter_guide_decomposition, 'dpp_filter_guide',
              _filter_guide_symbolic))
    for op, decomposition, name, symbolic in pairs:
        if op not in decomposition_table:
            register_decomposition(op)(decomposition)
        torch.onnx.register_custom_op_symbolic(f'lip_mmdet::{name}', symbolic, MIN_OPSET)
    _REGISTERED.append(True)


register_onnx_translations()
