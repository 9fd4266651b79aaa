"""Triton kernels of lip2d and dpp2d (forward and backward), the CUDA implementations behind
the ``lip_mmdet::`` custom ops; imported only when one runs, so nothing else needs triton.

Design (both ops):

* Forward: one program per block of output pixels; each walks its window (constexpr size, so
  loops unroll) once for the window maximum and once for the weighted sums. Inputs are read
  through their strides (channels_last needs no copy) in their own dtype and accumulated in
  float32 (float64 inputs in float64); the output is written in the input dtype.
* Backward, without atomics: a first kernel recomputes each window's sums and stores a few
  float32 statistics per output pixel (the output, the shift, the normaliser, ...); a second
  kernel, one program per block of input pixels, visits the (at most ceil(k / s) per axis)
  windows that contain each pixel and adds their contributions. So backward needs only the
  inputs and the output gradient, and is deterministic.
* Stability: weights are shifted by the window maximum (LIP: of the logits; DPP: of the
  log-reward exponents t), so no exponential overflows for any finite input or lambda. A NaN
  reaches only the windows that contain it (and the gradients of their pixels).

Only the stable core of ``triton.language`` is used (the kernels run on Triton 3.x, and in
Triton's interpreter on CPU tensors with ``TRITON_INTERPRET=1``).

Launching: the public wrappers (``lip2d_forward``, ...) validate their arguments with the ops'
own checks (:func:`lip_mmdet.ops.lip.check_lip_args`,
:func:`lip_mmdet.ops.dpp.check_dpp_args`) and then launch; the custom ops, which have run those
checks already, call the ``launch_*`` functions directly. Every index is int64 in the kernels
(program ids are widened before the offset arithmetic), so the ops' int64 bound on the window
arithmetic is the kernels' bound too; the launch grid, one program per ``PROGRAM_BLOCK``
elements, must also fit CUDA's grid (checked at launch).
"""
import torch
import triton
import triton.language as tl

from .dpp import DPP_EPS_SQUARED, check_dpp_args
from .lip import check_lip_args

__all__ = ['lip2d_forward', 'lip2d_backward', 'dpp2d_forward', 'dpp2d_backward',
           'launch_lip2d_forward', 'launch_lip2d_backward', 'launch_dpp2d_forward',
           'launch_dpp2d_backward']

#: Output (or input) elements per program; launched with Triton's default 4 warps, one
#: element per thread.
PROGRAM_BLOCK = 128
# CUDA's limit on a grid's x dimension, the one the kernels launch over.
_MAX_PROGRAMS = 2**31 - 1
# Kernels may read only constexpr globals.
_EPS_SQUARED = tl.constexpr(DPP_EPS_SQUARED)


def _grid(total):
    programs = triton.cdiv(total, PROGRAM_BLOCK)
    if programs > _MAX_PROGRAMS:
        raise ValueError(f'{total} elements need {programs} Triton programs of '
                         f'{PROGRAM_BLOCK}, more than a CUDA grid holds ({_MAX_PROGRAMS})')
    return (programs, )


@triton.jit
def _masked_exp(ok, arg):
    """exp(arg) where ok, else 0 (masked lanes never overflow)."""
    return tl.exp(tl.where(ok, arg, float('-inf')))


@triton.jit
def _program_block(total, C, H, W, BLOCK: tl.constexpr):
    """This program's block of flat NCHW indices (int64) below ``total``: (offs, mask, n, c,
    h, w)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    n, c, h, w = _unravel(offs, C, H, W)
    return offs, offs < total, n, c, h, w


@triton.jit
def _unravel(offs, C, H, W):
    """(n, c, h, w) of flat NCHW indices (int64)."""
    w = offs % W
    rest = offs // W
    h = rest % H
    rest = rest // H
    return rest // C, rest % C, h, w


@triton.jit
def _dpp_tap(x_base, sxh, sxw, mask, h0, w0, i, j, H, W, guide, ASYM: tl.constexpr,
             ACC: tl.constexpr):
    """(ok, value, deviation, penalty) of tap (i, j) of a DPP window (see
    :func:`_window_tap`); 0 value at padding taps."""
    h, w, ok = _window_tap(mask, h0, w0, i, j, H, W)
    value = tl.load(x_base + h * sxh + w * sxw, mask=ok, other=0.0).to(ACC)
    deviation, penalty = _dpp_penalty(value, guide, ASYM)
    return ok, value, deviation, penalty


@triton.jit
def _window_tap(mask, h0, w0, i, j, H, W):
    """(h, w, ok): the pixel at tap (i, j) of the window whose corner is (h0, w0), and
    whether it lies on the map (padding taps have no pixel)."""
    h = h0 + i
    w = w0 + j
    return h, w, mask & (h >= 0) & (h < H) & (w >= 0) & (w < W)


@triton.jit
def _window_holding(mask, h, w, i, j, PT, PL, SH, SW, HO, WO):
    """(oh, ow, ok): the window that holds input pixel (h, w) at tap (i, j), and whether it
    exists (oh * SH - PT + i == h inside the output), for the backward kernels' gathers."""
    rh = h + PT - i
    rw = w + PL - j
    oh = rh // SH
    ow = rw // SW
    ok = (mask & (rh >= 0) & (rw >= 0) & (rh % SH == 0) & (rw % SW == 0) & (oh < HO)
          & (ow < WO))
    return oh, ow, ok


# --------------------------------------------------------------------------------------- LIP

@triton.jit
def _lip_window_sums(x_ptr, l_ptr, n, c, oh, ow, mask, H, W, sxn, sxc, sxh, sxw, sln, slc,
                     slh, slw, SH, SW, PH, PW, KH: tl.constexpr, KW: tl.constexpr,
                     BLOCK: tl.constexpr, ACC: tl.constexpr):
    """Window maximum of the logits, sum of weights and of weighted x (in ACC; masked-off
    lanes get a unit normaliser)."""
    h0 = oh * SH - PH
    w0 = ow * SW - PW
    x_base = x_ptr + n * sxn + c * sxc
    l_base = l_ptr + n * sln + c * slc
    shift = tl.full([BLOCK], float('-inf'), ACC)
    for i in tl.static_range(KH):
        for j in tl.static_range(KW):
            h, w, ok = _window_tap(mask, h0, w0, i, j, H, W)
            logit = tl.load(l_base + h * slh + w * slw, mask=ok, other=float('-inf'))
            shift = tl.maximum(shift, logit.to(ACC))
    shift = tl.where(mask, shift, 0.0)
    den = tl.zeros([BLOCK], ACC)
    num = tl.zeros([BLOCK], ACC)
    for i in tl.static_range(KH):
        for j in tl.static_range(KW):
            h, w, ok = _window_tap(mask, h0, w0, i, j, H, W)
            logit = tl.load(l_base + h * slh + w * slw, mask=ok, other=0.0).to(ACC)
            value = tl.load(x_base + h * sxh + w * sxw, mask=ok, other=0.0).to(ACC)
            weight = _masked_exp(ok, logit - shift)
            den += weight
            num += weight * value
    return shift, tl.where(mask, den, 1.0), num


@triton.jit
def _lip_forward_kernel(x_ptr, l_ptr, out_ptr, total, C, H, W, HO, WO, sxn, sxc, sxh, sxw,
                        sln, slc, slh, slw, SH, SW, PH, PW, KH: tl.constexpr,
                        KW: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
    offs, mask, n, c, oh, ow = _program_block(total, C, HO, WO, BLOCK)
    _, den, num = _lip_window_sums(x_ptr, l_ptr, n, c, oh, ow, mask, H, W, sxn, sxc, sxh, sxw,
                                   sln, slc, slh, slw, SH, SW, PH, PW, KH, KW, BLOCK, ACC)
    tl.store(out_ptr + offs, (num / den).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _lip_window_stats_kernel(x_ptr, l_ptr, g_ptr, shift_ptr, scale_ptr, out_ptr, total, C, H,
                             W, HO, WO, sxn, sxc, sxh, sxw, sln, slc, slh, slw, SH, SW, PH, PW,
                             KH: tl.constexpr, KW: tl.constexpr, BLOCK: tl.constexpr,
                             ACC: tl.constexpr):
    """Per output pixel: the shift, grad / den and the output (in ACC)."""
    offs, mask, n, c, oh, ow = _program_block(total, C, HO, WO, BLOCK)
    shift, den, num = _lip_window_sums(x_ptr, l_ptr, n, c, oh, ow, mask, H, W, sxn, sxc, sxh,
                                       sxw, sln, slc, slh, slw, SH, SW, PH, PW, KH, KW, BLOCK,
                                       ACC)
    grad = tl.load(g_ptr + offs, mask=mask, other=0.0).to(ACC)
    tl.store(shift_ptr + offs, shift, mask=mask)
    tl.store(scale_ptr + offs, grad / den, mask=mask)
    tl.store(out_ptr + offs, num / den, mask=mask)


@triton.jit
def _lip_backward_kernel(x_ptr, l_ptr, shift_ptr, scale_ptr, out_ptr, gx_ptr, gl_ptr, total,
                         C, H, W, HO, WO, sxn, sxc, sxh, sxw, sln, slc, slh, slw, SH, SW, PH,
                         PW, KH: tl.constexpr, KW: tl.constexpr, BLOCK: tl.constexpr,
                         ACC: tl.constexpr):
    """Per input pixel q: sum over windows p containing q of w_pq * scale_p (d/dx) and of
    w_pq * scale_p * (x_q - out_p) (d/dlogit), w_pq = exp(logit_q - shift_p)."""
    offs, mask, n, c, h, w = _program_block(total, C, H, W, BLOCK)
    value = tl.load(x_ptr + n * sxn + c * sxc + h * sxh + w * sxw, mask=mask,
                    other=0.0).to(ACC)
    logit = tl.load(l_ptr + n * sln + c * slc + h * slh + w * slw, mask=mask,
                    other=0.0).to(ACC)
    plane = (n * C + c) * HO
    grad_x = tl.zeros([BLOCK], ACC)
    grad_l = tl.zeros([BLOCK], ACC)
    for i in tl.static_range(KH):
        for j in tl.static_range(KW):
            oh, ow, ok = _window_holding(mask, h, w, i, j, PH, PW, SH, SW, HO, WO)
            index = (plane + oh) * WO + ow
            shift = tl.load(shift_ptr + index, mask=ok, other=0.0)
            scale = tl.load(scale_ptr + index, mask=ok, other=0.0)
            out = tl.load(out_ptr + index, mask=ok, other=0.0)
            weight = _masked_exp(ok, logit - shift) * scale
            grad_x += weight
            grad_l += weight * (value - out)
    tl.store(gx_ptr + offs, grad_x.to(gx_ptr.dtype.element_ty), mask=mask)
    tl.store(gl_ptr + offs, grad_l.to(gl_ptr.dtype.element_ty), mask=mask)


def _window_args(x, logit, out_size, stride, pads):
    """(C, H, W, HO, WO, x strides, logit strides, SH, SW, PT, PL) for the LIP kernels (the
    bottom and right padding only set the output size)."""
    return (*x.shape[1:], *out_size, *x.stride(), *logit.stride(), *stride, pads[0], pads[2])


def _accumulator(dtype):
    """(torch, triton) dtype of the sums: float64 for float64 inputs, else float32."""
    return (torch.float64, tl.float64) if dtype == torch.float64 else (torch.float32,
                                                                       tl.float32)


def lip2d_forward(x, logit, kernel, stride, pads):
    """(N, C, Ho, Wo) LIP output in ``x.dtype`` (contiguous); arguments as
    ``torch.ops.lip_mmdet.lip2d`` (the window as (h, w) pairs, pads (top, bottom, left,
    right)), validated first."""
    window, out_size = check_lip_args(x, logit, kernel, stride, pads, 'triton')
    return launch_lip2d_forward(x, logit, *window, out_size)


def lip2d_backward(x, logit, grad, kernel, stride, pads):
    """(grad_x, grad_logit) in ``x.dtype`` (contiguous); arguments as
    ``torch.ops.lip_mmdet.lip2d_backward``, validated first."""
    window, out_size = check_lip_args(x, logit, kernel, stride, pads, 'triton', grad)
    return launch_lip2d_backward(x, logit, grad, *window, out_size)


def launch_lip2d_forward(x, logit, kernel, stride, pads, out_size):
    """:func:`lip2d_forward` on arguments the op has validated (``out_size``: (Ho, Wo))."""
    out = x.new_empty((*x.shape[:2], *out_size))
    _lip_forward_kernel[_grid(out.numel())](
        x, logit, out, out.numel(), *_window_args(x, logit, out_size, stride, pads),
        KH=kernel[0], KW=kernel[1], BLOCK=PROGRAM_BLOCK, ACC=_accumulator(x.dtype)[1])
    return out


def launch_lip2d_backward(x, logit, grad, kernel, stride, pads, out_size):
    """:func:`lip2d_backward` on arguments the op has validated."""
    grad = grad.contiguous()
    stats_dtype, acc = _accumulator(x.dtype)
    stats = [torch.empty(grad.shape, dtype=stats_dtype, device=x.device) for _ in range(3)]
    window = _window_args(x, logit, out_size, stride, pads)
    _lip_window_stats_kernel[_grid(grad.numel())](
        x, logit, grad, *stats, grad.numel(), *window, KH=kernel[0], KW=kernel[1],
        BLOCK=PROGRAM_BLOCK, ACC=acc)
    grad_x = x.new_empty(x.shape)
    grad_l = x.new_empty(x.shape)
    _lip_backward_kernel[_grid(x.numel())](
        x, logit, *stats, grad_x, grad_l, x.numel(), *window, KH=kernel[0], KW=kernel[1],
        BLOCK=PROGRAM_BLOCK, ACC=acc)
    return grad_x, grad_l


# --------------------------------------------------------------------------------------- DPP

@triton.jit
def _dpp_penalty(value, guide, ASYM: tl.constexpr):
    """(deviation d, penalty d^2 + eps^2); asym keeps only values above the guide."""
    deviation = value - guide
    if ASYM:
        deviation = tl.where(deviation > 0, deviation, 0.0)
    return deviation, deviation * deviation + _EPS_SQUARED


@triton.jit
def _dpp_window_sums(x_ptr, g_ptr, a_ptr, lam_ptr, n, c, oh, ow, mask, H, W, sxn, sxc, sxh,
                     sxw, sgn, sgc, sgh, sgw, SH, SW, PT, PL, KH: tl.constexpr,
                     KW: tl.constexpr, ASYM: tl.constexpr, BLOCK: tl.constexpr,
                     ACC: tl.constexpr):
    """Per window: guide, alpha, lambda / 2, log mean penalty, pixel count, T = max t, the
    top log-penalty (of the tap with the largest t), alpha e^-T, the normaliser and the
    weighted sum (masked-off lanes stay finite).

    ``t - T`` is ``lambda / 2 * (log r - top)``, at most 0 for any finite lambda (a
    difference of two overflowed products would be inf - inf); the log mean is kept between
    the smallest and largest log-penalty, where the exact mean lies, so T >= 0 after rounding.
    """
    guide = tl.load(g_ptr + n * sgn + c * sgc + oh * sgh + ow * sgw, mask=mask,
                    other=0.0).to(ACC)
    alpha = tl.load(a_ptr + c, mask=mask, other=1.0).to(ACC)
    half_lam = tl.load(lam_ptr + c, mask=mask, other=0.0).to(ACC) * 0.5
    h0 = oh * SH - PT
    w0 = ow * SW - PL
    x_base = x_ptr + n * sxn + c * sxc
    penalty_sum = tl.zeros([BLOCK], ACC)
    count = tl.zeros([BLOCK], ACC)
    highest = tl.full([BLOCK], float('-inf'), ACC)
    lowest = tl.full([BLOCK], float('inf'), ACC)
    for i in tl.static_range(KH):
        for j in tl.static_range(KW):
            ok, value, _, penalty = _dpp_tap(x_base, sxh, sxw, mask, h0, w0, i, j, H, W, guide,
                                             ASYM, ACC)
            log_penalty = tl.log(penalty)
            penalty_sum += tl.where(ok, penalty, 0.0)
            count += tl.where(ok, 1.0, 0.0)
            # Extrema that keep a NaN once seen (as the other backends do).
            is_nan = log_penalty != log_penalty
            highest = tl.where(ok & ((log_penalty > highest) | is_nan), log_penalty, highest)
            lowest = tl.where(ok & ((log_penalty < lowest) | is_nan), log_penalty, lowest)
    count = tl.where(mask, count, 1.0)
    highest = tl.where(mask, highest, 0.0)
    lowest = tl.where(mask, lowest, 0.0)
    log_mean = tl.log(tl.where(mask, penalty_sum / count, 1.0))
    log_mean = tl.minimum(tl.maximum(log_mean, lowest), highest)
    top = tl.where(half_lam >= 0, highest, lowest)
    t_max = half_lam * (top - log_mean)
    alpha_part = alpha * tl.exp(-t_max)
    den = tl.zeros([BLOCK], ACC)
    num = tl.zeros([BLOCK], ACC)
    for i in tl.static_range(KH):
        for j in tl.static_range(KW):
            ok, value, _, penalty = _dpp_tap(x_base, sxh, sxw, mask, h0, w0, i, j, H, W, guide,
                                             ASYM, ACC)
            weight = (tl.where(ok, alpha_part, 0.0)
                      + _masked_exp(ok, half_lam * (tl.log(penalty) - top)))
            den += weight
            num += weight * value
    den = tl.where(mask, den, 1.0)
    return guide, alpha, half_lam, log_mean, count, t_max, top, alpha_part, den, num


@triton.jit
def _dpp_forward_kernel(x_ptr, g_ptr, a_ptr, lam_ptr, out_ptr, total, C, H, W, HO, WO, sxn,
                        sxc, sxh, sxw, sgn, sgc, sgh, sgw, SH, SW, PT, PL, KH: tl.constexpr,
                        KW: tl.constexpr, ASYM: tl.constexpr, BLOCK: tl.constexpr,
                        ACC: tl.constexpr):
    offs, mask, n, c, oh, ow = _program_block(total, C, HO, WO, BLOCK)
    _, _, _, _, _, _, _, _, den, num = _dpp_window_sums(
        x_ptr, g_ptr, a_ptr, lam_ptr, n, c, oh, ow, mask, H, W, sxn, sxc, sxh, sxw, sgn, sgc,
        sgh, sgw, SH, SW, PT, PL, KH, KW, ASYM, BLOCK, ACC)
    tl.store(out_ptr + offs, (num / den).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _dpp_window_stats_kernel(x_ptr, g_ptr, a_ptr, lam_ptr, grad_ptr, out_ptr, scale_ptr,
                             tmax_ptr, top_ptr, bterm_ptr, galpha_ptr, glam_ptr, gg_ptr,
                             total, C, H, W, HO, WO, sxn, sxc, sxh, sxw, sgn, sgc, sgh, sgw, SH,
                             SW, PT, PL, KH: tl.constexpr, KW: tl.constexpr,
                             ASYM: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
    """Per output pixel p with gradient G: the statistics the pixel pass needs (output,
    G / normaliser, T, the top log-penalty, B / (n mean) with B = sum_q b_q) and p's
    gradient terms for the guide, alpha and lambda. b_q = G (x_q - out) e^(t_q - T) /
    normaliser is the gradient of t_q."""
    offs, mask, n, c, oh, ow = _program_block(total, C, HO, WO, BLOCK)
    guide, alpha, half_lam, log_mean, count, t_max, top, _, den, num = _dpp_window_sums(
        x_ptr, g_ptr, a_ptr, lam_ptr, n, c, oh, ow, mask, H, W, sxn, sxc, sxh, sxw, sgn, sgc,
        sgh, sgw, SH, SW, PT, PL, KH, KW, ASYM, BLOCK, ACC)
    out = num / den
    scale = tl.load(grad_ptr + offs, mask=mask, other=0.0).to(ACC) / den
    h0 = oh * SH - PT
    w0 = ow * SW - PL
    x_base = x_ptr + n * sxn + c * sxc
    b_sum = tl.zeros([BLOCK], ACC)
    lam_sum = tl.zeros([BLOCK], ACC)
    dev_b_sum = tl.zeros([BLOCK], ACC)
    dev_sum = tl.zeros([BLOCK], ACC)
    spread_sum = tl.zeros([BLOCK], ACC)
    for i in tl.static_range(KH):
        for j in tl.static_range(KW):
            ok, value, deviation, penalty = _dpp_tap(x_base, sxh, sxw, mask, h0, w0, i, j, H, W,
                                                     guide, ASYM, ACC)
            log_penalty = tl.log(penalty)
            log_ratio = log_penalty - log_mean
            spread = tl.where(ok, value - out, 0.0)
            b = scale * spread * _masked_exp(ok, half_lam * (log_penalty - top))
            b_sum += b
            lam_sum += b * log_ratio
            dev_b_sum += deviation * b / penalty
            dev_sum += tl.where(ok, deviation, 0.0)
            spread_sum += spread
    b_term = b_sum / (count * tl.exp(log_mean))
    tl.store(out_ptr + offs, out, mask=mask)
    tl.store(scale_ptr + offs, scale, mask=mask)
    tl.store(tmax_ptr + offs, t_max, mask=mask)
    tl.store(top_ptr + offs, top, mask=mask)
    tl.store(bterm_ptr + offs, b_term, mask=mask)
    tl.store(galpha_ptr + offs, scale * tl.exp(-t_max) * spread_sum, mask=mask)
    tl.store(glam_ptr + offs, 0.5 * lam_sum, mask=mask)
    grad_guide = -2.0 * half_lam * (dev_b_sum - b_term * dev_sum)
    tl.store(gg_ptr + offs, grad_guide.to(gg_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _dpp_backward_kernel(x_ptr, g_ptr, a_ptr, lam_ptr, out_ptr, scale_ptr, tmax_ptr,
                         top_ptr, bterm_ptr, gx_ptr, total, C, H, W, HO, WO, sxn, sxc, sxh,
                         sxw, sgn, sgc, sgh, sgw, SH, SW, PT, PL, KH: tl.constexpr,
                         KW: tl.constexpr, ASYM: tl.constexpr, BLOCK: tl.constexpr,
                         ACC: tl.constexpr):
    """Per input pixel q: sum over windows p containing q of G_p w_pq / den_p (q as a value)
    and 2 d_pq lambda/2 (b_pq / r_pq - B_p / (n_p mean_p)) (q through the penalties)."""
    offs, mask, n, c, h, w = _program_block(total, C, H, W, BLOCK)
    value = tl.load(x_ptr + n * sxn + c * sxc + h * sxh + w * sxw, mask=mask,
                    other=0.0).to(ACC)
    alpha = tl.load(a_ptr + c, mask=mask, other=1.0).to(ACC)
    half_lam = tl.load(lam_ptr + c, mask=mask, other=0.0).to(ACC) * 0.5
    plane = (n * C + c) * HO
    grad_x = tl.zeros([BLOCK], ACC)
    for i in tl.static_range(KH):
        for j in tl.static_range(KW):
            oh, ow, ok = _window_holding(mask, h, w, i, j, PT, PL, SH, SW, HO, WO)
            index = (plane + oh) * WO + ow
            guide = tl.load(g_ptr + n * sgn + c * sgc + oh * sgh + ow * sgw, mask=ok,
                            other=0.0).to(ACC)
            out = tl.load(out_ptr + index, mask=ok, other=0.0)
            scale = tl.load(scale_ptr + index, mask=ok, other=0.0)
            t_max = tl.load(tmax_ptr + index, mask=ok, other=0.0)
            top = tl.load(top_ptr + index, mask=ok, other=0.0)
            b_term = tl.load(bterm_ptr + index, mask=ok, other=0.0)
            deviation, penalty = _dpp_penalty(value, guide, ASYM)
            e = _masked_exp(ok, half_lam * (tl.log(penalty) - top))
            b = scale * (value - out) * e
            direct = scale * (alpha * tl.exp(-t_max) + e)
            # lambda times the bracket first (as the other backends): for a huge lambda,
            # 2 d lambda alone may overflow while the bracket is 0. And 0 where the deviation
            # is (asym below the guide), even if that product overflows.
            through = tl.where(deviation != 0,
                               2.0 * deviation * (half_lam * (b / penalty - b_term)), 0.0)
            grad_x += tl.where(ok, direct + through, 0.0)
    tl.store(gx_ptr + offs, grad_x.to(gx_ptr.dtype.element_ty), mask=mask)


def _dpp_window_args(x, guide, stride, pads):
    """(C, H, W, HO, WO, x strides, guide strides, SH, SW, PT, PL) for the DPP kernels."""
    return (*x.shape[1:], *guide.shape[2:], *x.stride(), *guide.stride(), *stride, pads[0],
            pads[2])


def _dpp_params(alpha, lam, dtype):
    return alpha.to(dtype).contiguous(), lam.to(dtype).contiguous()


def dpp2d_forward(x, guide, alpha, lam, asym, kernel, stride, pads):
    """(N, C, Ho, Wo) DPP output in ``x.dtype`` (contiguous); arguments as
    ``torch.ops.lip_mmdet.dpp2d`` (alpha, lam: (C,)), validated first."""
    window, out_size = check_dpp_args(x, guide, alpha, lam, asym, kernel, stride, pads,
                                      'triton')
    return launch_dpp2d_forward(x, guide, alpha, lam, asym, *window, out_size)


def dpp2d_backward(x, guide, alpha, lam, grad, asym, kernel, stride, pads):
    """Gradients (x, guide, alpha, lam), each in its input's dtype; arguments as
    ``torch.ops.lip_mmdet.dpp2d_backward``, validated first."""
    window, out_size = check_dpp_args(x, guide, alpha, lam, asym, kernel, stride, pads,
                                      'triton', grad)
    return launch_dpp2d_backward(x, guide, alpha, lam, grad, asym, *window, out_size)


def launch_dpp2d_forward(x, guide, alpha, lam, asym, kernel, stride, pads, out_size):
    """:func:`dpp2d_forward` on arguments the op has validated (``out_size``, the guide's,
    is the launch's size)."""
    out = guide.new_empty(guide.shape)
    acc_dtype, acc = _accumulator(x.dtype)
    _dpp_forward_kernel[_grid(out.numel())](
        x, guide, *_dpp_params(alpha, lam, acc_dtype), out, out.numel(),
        *_dpp_window_args(x, guide, stride, pads), KH=kernel[0], KW=kernel[1], ASYM=asym,
        BLOCK=PROGRAM_BLOCK, ACC=acc)
    return out


def launch_dpp2d_backward(x, guide, alpha, lam, grad, asym, kernel, stride, pads, out_size):
    """:func:`dpp2d_backward` on arguments the op has validated."""
    acc_dtype, acc = _accumulator(x.dtype)
    params = _dpp_params(alpha, lam, acc_dtype)
    grad = grad.contiguous()
    stats = [torch.empty(grad.shape, dtype=acc_dtype, device=x.device) for _ in range(7)]
    grad_guide = guide.new_empty(guide.shape)
    window = _dpp_window_args(x, guide, stride, pads)
    _dpp_window_stats_kernel[_grid(grad.numel())](
        x, guide, *params, grad, *stats, grad_guide, grad.numel(), *window, KH=kernel[0],
        KW=kernel[1], ASYM=asym, BLOCK=PROGRAM_BLOCK, ACC=acc)
    grad_x = x.new_empty(x.shape)
    _dpp_backward_kernel[_grid(x.numel())](
        x, guide, *params, *stats[:5], grad_x, x.numel(), *window, KH=kernel[0],
        KW=kernel[1], ASYM=asym, BLOCK=PROGRAM_BLOCK, ACC=acc)
    grad_alpha, grad_lam = (s.sum((0, 2, 3)) for s in stats[5:])
    return grad_x, grad_guide, grad_alpha.to(alpha.dtype), grad_lam.to(lam.dtype)
