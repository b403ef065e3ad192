"""Figures of particular model families: a mixture's components, probabilistic PCA's
principal directions, and M2's analogies (one style rendered in every class).

Example
-------
>>> import io
>>> from pyro_vae.models import PPCA, PPCAConfig
>>> from pyro_vae.plots.families import plot_pca
>>> plot_pca(PPCA(3 * 4 * 4, PPCAConfig(latent_dim=2)), (3, 4, 4), io.BytesIO())   # doctest: +ELLIPSIS
<_io.BytesIO object at ...>
"""

from __future__ import annotations

import torch

from ..errors import check_positive_int
from .compute import flat, principal_directions
from .layout import cell_centres, cells, cells_size, image_axes, image_grid, new_figure, px, save, show


def plot_components(model, image_shape, path, *, n: int = 32):
    """Mixture components' means titled with their weights (heaviest first), and ``n`` samples.

    Reads the mixture's ``weights`` ``(K,)`` and ``component_means()`` ``(K, D)``; needs no data.
    """
    check_positive_int("n", n)
    weights = torch.as_tensor(model.weights).detach().flatten()  # (K,)
    means = flat(model.component_means())  # (K, D)
    order = torch.argsort(weights, descending=True)
    k = weights.numel()
    ncols = min(k, 10)
    cells_w, comp_h = cells_size(k, image_shape, ncols)
    width = px(max(6.0, cells_w))
    samples = model.sample(n, None, mean=False)
    sample_grid = image_grid(flat(samples), image_shape, min(n, 16))
    sample_h = min(6.0, (width - 0.3) * sample_grid.shape[0] / sample_grid.shape[1])
    sample_w = sample_h * sample_grid.shape[1] / sample_grid.shape[0]
    height = px(0.35 + comp_h + 0.4 + sample_h + 0.1)
    fig = new_figure(width, height)
    fig.text(0.5, 1 - 0.2 / height, f"{k} component means, heaviest first (#index weight)",
             ha="center", va="center", fontsize=10)
    cells(fig, means[order], [f"#{int(i)} {weights[i]:.3f}" for i in order], image_shape,
          top=0.35, ncols=ncols)
    ax = fig.add_axes([(width - sample_w) / 2 / width, 0.1 / height, sample_w / width, sample_h / height])
    show(ax, sample_grid)
    fig.text(0.5, (0.1 + sample_h + 0.2) / height, f"{n} samples (component drawn by weight, then pixels)",
             ha="center", va="center", fontsize=10)
    return save(fig, path)


def plot_pca(model, image_shape, path, *, n: int = 16):
    """PPCA's mean image and its first ``n`` principal directions (titled with their variance).

    Grey directions are shown with a diverging colour map (red positive, blue negative, white
    0); colour directions with 0 at mid-grey. Needs no data.
    """
    check_positive_int("n", n)
    directions, variances = principal_directions(model)  # (d, D), (d,)
    directions, variances = directions[:n], variances[:n]
    images = [model.mean.detach().flatten(), *directions]
    titles = ["mean"] + [f"{i + 1}: var {v:.3g}" for i, v in enumerate(variances.tolist())]
    ncols = min(len(images), 9)
    cells_w, cells_h = cells_size(len(images), image_shape, ncols)
    width, height = px(max(6.0, cells_w)), px(0.35 + cells_h + 0.1)
    fig = new_figure(width, height)
    noise = float(torch.as_tensor(getattr(model, "noise_scale", float("nan"))).detach())
    fig.text(0.5, 1 - 0.2 / height,
             f"mean and principal directions (variance along each; noise scale {noise:.3g})",
             ha="center", va="center", fontsize=10)
    cells(fig, images, titles, image_shape, top=0.35, ncols=ncols,
          signed=[False] + [True] * len(directions))
    return save(fig, path)


def plot_analogies(model, x, image_shape, path, *, n: int = 8):
    """The paper's Figure 1 (Kingma et al. 2014): each of ``n`` test images (first column) and
    its style code, the mean of q(z | x, predicted y), decoded with every class (one column each)."""
    check_positive_int("n", n)
    x = flat(x[:n])
    images = model.analogies(x)  # (n, classes, D)
    num_classes = images.shape[1]
    rows = torch.cat([x[:, None], images.reshape(x.shape[0], num_classes, -1)], dim=1)  # (n, classes + 1, D)
    grid = image_grid(rows.reshape(-1, rows.shape[-1]), image_shape, ncols=num_classes + 1)
    fig, (ax,) = image_axes(grid.shape[:2], panel_width=min(9.0, 0.6 * (num_classes + 1)), bottom=0.35)
    show(ax, grid, "input | its style z = E q(z | x, predicted y) decoded in each class", ticks=True)
    c, h, w = image_shape
    ax.set_xticks(cell_centres(num_classes + 1, w), ["input"] + [str(k) for k in range(num_classes)])
    ax.set_yticks([])
    return save(fig, path)
