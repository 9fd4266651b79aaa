"""What a learned pooling does with each window: per-pixel importance and effective window size.

Every LIP and DPP layer of the package pools a window of pixels with normalised weights
``w[p, q]`` (window p, pixel q; the weights of a window sum to 1). The layers expose them
through :meth:`PoolingWeightsMixin.window_weights`; this module turns them into

* a per-pixel importance at the layer's input resolution, relative to average pooling:
  ``sum_p w[p, q] / sum_p u[p, q]`` with ``u`` the average-pooling weights (1 / number of
  valid pixels of the window). 1 everywhere for average pooling; > 1 where the layer
  favours a pixel. Dividing by ``u`` removes the checkerboard that overlapping stride-2
  windows would otherwise draw (pixels covered by 1, 2 or 4 windows);
* the effective window size ``exp(entropy of w[p, :])``: 1 when one pixel takes all the
  weight (max-like), k*k for a uniform k x k window (average pooling).
"""
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from lip_mmdet.ops.pool_args import as_pads, pooled_size, window_views

__all__ = ['PoolingWeightsMixin', 'fold_window_weights', 'relative_importance',
           'effective_window_size', 'pooling_layers']


def _window_spec(window: dict):
    kernel, stride = window['kernel_size'], window['stride']
    return tuple(kernel), tuple(stride), as_pads(window['padding'])


def fold_window_weights(weights: torch.Tensor, input_size: Sequence[int],
                        window: dict) -> torch.Tensor:
    """Adds every window's weights back onto the pixels they weigh.

    Args:
        weights: (N, C, Kh * Kw, Ho, Wo), window taps in row-major order.
        input_size: (H, W) of the pooled input.
        window: ``dict(kernel_size=(kh, kw), stride=(sh, sw), padding=...)``, padding as
            (ph, pw) or (top, bottom, left, right).

    Returns:
        (N, C, H, W): for each pixel q, ``sum_p weights[p, q]`` over the windows p holding q.
    """
    kernel, stride, (top, bottom, left, right) = _window_spec(window)
    height, width = input_size
    n, c, _, oh, ow = weights.shape
    padded = weights.new_zeros((n, c, height + top + bottom, width + left + right))
    for tap, view in enumerate(window_views(padded, kernel, stride, (oh, ow))):
        view.add_(weights[:, :, tap])
    return padded[:, :, top:top + height, left:left + width]


def _uniform_weights(input_size, window, like: torch.Tensor) -> torch.Tensor:
    """(1, 1, K, Ho, Wo) average-pooling weights: 1 / valid pixels on valid taps, else 0."""
    kernel, stride, (top, bottom, left, right) = _window_spec(window)
    ones = like.new_ones((1, 1, *input_size))
    padded = F.pad(ones, (left, right, top, bottom))
    out_size = pooled_size(input_size[0], input_size[1], kernel, stride,
                           (top, bottom, left, right))
    valid = torch.stack(list(window_views(padded, kernel, stride, out_size)), dim=2)
    return valid / valid.sum(2, keepdim=True)


def relative_importance(weights: torch.Tensor, input_size: Sequence[int],
                        window: dict) -> torch.Tensor:
    """Per-pixel importance relative to average pooling (1 = what average pooling gives).

    Args:
        weights: (N, C, Kh * Kw, Ho, Wo) normalised window weights.
        input_size: (H, W) of the pooled input. window: as :func:`fold_window_weights`.

    Returns:
        (N, C, H, W), non-negative; pixels no window reads (a floor-mode border) are 0.
    """
    uniform = _uniform_weights(input_size, window, weights)
    reference = fold_window_weights(uniform, input_size, window)
    folded = fold_window_weights(weights, input_size, window)
    return folded / reference.clamp_min(torch.finfo(folded.dtype).tiny)


def effective_window_size(weights: torch.Tensor, input_size: Sequence[int],
                          window: dict) -> float:
    """``exp(entropy)`` of each window's weights, averaged over windows, channels and batch.

    Only windows without a padding tap count (when the map has any): a border window holds
    fewer pixels and would pull the mean of a uniform pooling below Kh * Kw.

    Args:
        weights: (N, C, Kh * Kw, Ho, Wo) normalised window weights (0 on padding taps).
        input_size: (H, W) of the pooled input. window: as :func:`fold_window_weights`.

    Returns:
        A float in [1, Kh * Kw]: 1 = max-like, Kh * Kw = average pooling.
    """
    weights = weights.detach().float()
    size = (-torch.special.xlogy(weights, weights).sum(2)).exp()  # (N, C, Ho, Wo)
    full = (_uniform_weights(input_size, window, weights) > 0).all(dim=2)[0, 0]  # (Ho, Wo)
    if bool(full.any()):
        return float(size[..., full].mean())
    return float(size.mean())


class PoolingWeightsMixin:
    """Introspection shared by the package's pooling layers.

    A layer defines ``pool_kind`` ('lip' or 'dpp'), ``pool_window`` (its window as a dict of
    ``kernel_size``, ``stride``, ``padding`` pairs) and ``window_weights(x, *args)``, which
    takes the arguments of its ``forward`` and returns the normalised weights (N, C,
    Kh * Kw, Ho, Wo) with which ``forward`` pools, computed by the same code. A layer whose
    padding depends on the input size overrides :meth:`window_for`.
    """
    pool_kind = ''

    def window_for(self, x: torch.Tensor) -> dict:
        """The window ``forward`` pools ``x`` (N, C, H, W) with, as ``pool_window``."""
        return self.pool_window

    def window_weights(self, x: torch.Tensor, *args) -> torch.Tensor:
        raise NotImplementedError

    def importance(self, x: torch.Tensor, *args) -> torch.Tensor:
        """Per-pixel importance of the input relative to average pooling.

        Args:
            x: the pooled input (N, C, H, W); further arguments as ``forward``'s.

        Returns:
            (N, C, H, W): 1 where the pixel counts as much as under average pooling, > 1
            where the layer favours it (see :func:`relative_importance`).
        """
        return relative_importance(self.window_weights(x, *args), x.shape[-2:],
                                   self.window_for(x))


def pooling_layers(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """(qualified name, layer) of every LIP / DPP pooling layer in ``model``, module order."""
    return [(name, module) for name, module in model.named_modules()
            if isinstance(module, PoolingWeightsMixin)]
