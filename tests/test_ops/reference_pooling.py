"""Independent float64 references for the pooling ops, built on F.unfold (not on the ops)."""
import torch
import torch.nn.functional as F
from torch.nn.modules.utils import _pair


def _pads(padding):
    """(top, bottom, left, right) from an int, an (h, w) pair or a 4-tuple."""
    if isinstance(padding, (tuple, list)) and len(padding) == 4:
        return tuple(padding)
    ph, pw = _pair(padding)
    return ph, ph, pw, pw


def unfold_windows(t, kernel, stride, padding, fill=0.0):
    """(N * C, K, Ho * Wo) window columns of a (N, C, H, W) map padded with ``fill``."""
    top, bottom, left, right = _pads(padding)
    padded = F.pad(t, (left, right, top, bottom), value=fill)
    n, c, h, w = padded.shape
    return F.unfold(padded.reshape(n * c, 1, h, w), _pair(kernel), stride=_pair(stride))


def out_shape(x, kernel, stride, padding):
    top, bottom, left, right = _pads(padding)
    (kh, kw), (sh, sw) = _pair(kernel), _pair(stride)
    return ((x.shape[2] + top + bottom - kh) // sh + 1, (x.shape[3] + left + right - kw) // sw + 1)


def reference_lip(x, logit, kernel=3, stride=2, padding=1):
    """Softmax-over-window form of LIP in float64 (-inf padding: padded pixels weigh 0)."""
    xs = unfold_windows(x.double(), kernel, stride, padding)
    ls = unfold_windows(logit.double(), kernel, stride, padding, float('-inf'))
    out = (torch.softmax(ls, dim=1) * xs).sum(1)
    return out.reshape(*x.shape[:2], *out_shape(x, kernel, stride, padding))


def reference_dpp(x, guide, alpha, lam, reward, kernel=2, stride=2, padding=0):
    """DPP by its textbook weights alpha + (r / mean r) ** (lambda / 2), in float64."""
    n, c = x.shape[:2]
    xs = unfold_windows(x.double(), kernel, stride, padding)
    valid = unfold_windows(torch.ones_like(x, dtype=torch.float64), kernel, stride, padding)
    deviation = xs - guide.double().reshape(n * c, 1, -1)
    if reward == 'asym':
        deviation = deviation.clamp_min(0)
    penalty = deviation ** 2 + 1e-3
    mean = (penalty * valid).sum(1, keepdim=True) / valid.sum(1, keepdim=True)

    def per_plane(v):
        return v.double().reshape(1, -1).expand(n, c).reshape(n * c, 1, 1)

    weight = (per_plane(alpha) + (penalty / mean) ** (per_plane(lam) / 2)) * valid
    out = (weight * xs).sum(1) / weight.sum(1)
    return out.reshape(n, c, *out_shape(x, kernel, stride, padding))


def reference_filter_guide(x, weight, bias, kernel=2, stride=2, padding=0):
    """Full-DPP guide by its definition, in float64: each output pixel is the 3x3 filter (+
    bias) over the zero-padded input, its taps aligned with the pooling window (a 2-wide
    window is the filter's first two taps, 3 all three, wider ones its central three)."""
    top, bottom, left, right = _pads(padding)
    (kh, kw), (sh, sw) = _pair(kernel), _pair(stride)
    out_h, out_w = out_shape(x, kernel, stride, padding)
    margin = max(top, bottom, left, right) + max(kh, kw) + 3
    padded = F.pad(x.double(), (margin, ) * 4)

    def taps(out_size, step, start_pad, size):
        # the first filter tap sits (3 - size) // 2 before the window's first pixel
        first = torch.arange(out_size) * step - start_pad - (3 - size) // 2 + margin
        return first[:, None] + torch.arange(3)[None, :]

    rows, cols = taps(out_h, sh, top, kh), taps(out_w, sw, left, kw)
    windows = padded[:, :, rows[:, :, None, None], cols[None, None, :, :]]  # N C Ho 3 Wo 3
    out = torch.einsum('ncaibj,cij->ncab', windows, weight.double()[:, 0])
    return out + bias.double().view(1, -1, 1, 1)
