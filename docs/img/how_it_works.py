"""Draws docs/img/how_it_works.png: what LIP and DPP weigh inside each pooling window.

    python docs/img/how_it_works.py [--out docs/img/how_it_works.png]

A toy 8x8 feature map (a faint texture, one bright 2-pixel detail and a dim blob) is pooled
to 4x4 by average pooling, max pooling, LIP and Lite-DPP (asymmetric reward). The weights are
drawn on the input grid: LIP weighs pixel q by exp(logit[q]) (here logit = 12 * sigmoid(4x),
an importance that grows with the activation, as a trained logit branch may learn); Lite-DPP
weighs q in the 2x2 window of output p by alpha + rho_asym(x[q] - mean of the window)^lambda.
The pooled maps come from ``lip2d`` and ``LiteDPP`` and are checked against the formulas.
"""
import argparse
import os.path as osp
import sys

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
from lip_mmdet.models.layers import LiteDPP  # noqa: E402
from lip_mmdet.ops import lip2d  # noqa: E402

LAMBDA = 3.0  # DPP reward exponent (exp(log_lambda)); alpha stays at its initial 1
EPS2 = 1e-3  # DPP's eps^2 inside the Charbonnier reward


def toy_input() -> torch.Tensor:
    """(1, 1, 8, 8): texture in [0, 0.3], a bright detail and a dim blob."""
    gen = torch.Generator().manual_seed(0)
    x = 0.3 * torch.rand(1, 1, 8, 8, generator=gen)
    x[0, 0, 1, 2] = x[0, 0, 2, 2] = 1.0  # a thin bright detail (a small object)
    x[0, 0, 5:7, 4:6] += 0.35  # a dim blob
    return x


def lip_weights(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(12 * torch.sigmoid(4 * x))


def dpp_weights(x: torch.Tensor) -> torch.Tensor:
    """Normalised Lite-DPP weights of each pixel inside its 2x2 window (windows tile x)."""
    guide = F.avg_pool2d(x, 2)
    diff = x - F.interpolate(guide, scale_factor=2, mode='nearest')
    reward = torch.clamp(diff, min=0) ** 2 + EPS2
    # as the official code: reward normalised by its window mean, power lambda / 2 on it
    reward = reward / F.interpolate(F.avg_pool2d(reward, 2), scale_factor=2, mode='nearest')
    weight = 1.0 + reward ** (LAMBDA / 2)
    return weight / F.interpolate(F.avg_pool2d(weight, 2) * 4, scale_factor=2, mode='nearest')


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default=osp.join(osp.dirname(osp.abspath(__file__)),
                                                  'how_it_works.png'))
    args = parser.parse_args(argv)

    x = toy_input()
    logit = 12 * torch.sigmoid(4 * x)
    lip = lip2d(x, logit)
    weights = lip_weights(x)
    expected = (F.avg_pool2d(x * weights, 3, 2, 1, count_include_pad=False)
                / F.avg_pool2d(weights, 3, 2, 1, count_include_pad=False))
    torch.testing.assert_close(lip, expected)

    dpp_layer = LiteDPP(1, reward='asym')
    with torch.no_grad():
        dpp_layer.log_lambda.fill_(torch.log(torch.tensor(LAMBDA)).item())
        dpp = dpp_layer(x)
    dpp_w = dpp_weights(x)
    torch.testing.assert_close(dpp, F.avg_pool2d(x * dpp_w, 2) * 4, rtol=1e-4, atol=1e-4)

    panels = [
        ('input (8x8)', x, 'gray'),
        ('average pooling', F.avg_pool2d(x, 3, 2, 1, count_include_pad=False), 'gray'),
        ('max pooling', F.max_pool2d(x, 3, 2, 1), 'gray'),
        ('LIP weight exp(logit)', weights, 'magma'),
        ('LIP output', lip, 'gray'),
        ('input (8x8)', x, 'gray'),
        ('average pooling 2x2', F.avg_pool2d(x, 2), 'gray'),
        ('max pooling 2x2', F.max_pool2d(x, 2), 'gray'),
        (f'Lite-DPP weight (asym, lambda={LAMBDA:g})', dpp_w, 'magma'),
        ('Lite-DPP output', dpp, 'gray'),
    ]
    fig, axes = plt.subplots(2, 5, figsize=(12, 5.8), layout='constrained')
    for ax, (title, image, cmap) in zip(axes.flat, panels):
        vmax = None if cmap == 'magma' else 1.0
        ax.imshow(image[0, 0].detach().numpy(), cmap=cmap, vmin=0, vmax=vmax)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_ylabel('LIP: 3x3 / stride 2', fontsize=10)
    axes[1, 0].set_ylabel('DPP: 2x2 / stride 2', fontsize=10)
    fig.suptitle('Average pooling blurs the bright detail away, max pooling keeps only the '
                 'peaks; LIP and DPP\nweigh each window by learned importance and keep the '
                 'detail while still averaging the texture', fontsize=10)
    fig.savefig(args.out, dpi=80)
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
