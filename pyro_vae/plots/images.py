"""Figures made of images: samples, reconstructions, the manifold, interpolation, arithmetic
and one row per class. Every image is ``(C, H, W)`` from the data's ``image_shape``: C = 3 is
drawn in colour, C = 1 in grey.

Example
-------
>>> import io
>>> from pyro_vae.models import VAE, VAEConfig
>>> from pyro_vae.plots.images import plot_manifold
>>> vae = VAE(3 * 6 * 6, VAEConfig(latent_dim=2, hidden_dims=(8,)))
>>> plot_manifold(vae, (3, 6, 6), io.BytesIO(), n=5)               # doctest: +ELLIPSIS
<_io.BytesIO object at ...>
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import check_positive_int
from ..models.base import labels_for
from .compute import (
    attribute_vector,
    can_encode,
    class_grid,
    class_indices,
    decode_mean,
    encode_means,
    flat,
    interpolate,
    interpolate_codes,
    is_conditional,
    latent_dim,
    manifold_codes,
    manifold_grid,
    most_active_dims,
    prior_codes,
)
from .layout import cell_centres, image_axes, image_grid, save, show


def plot_reconstructions(model, x, image_shape, path, y=None, n: int = 16):
    """Test inputs (top row) above their reconstructions (bottom row).

    ``x`` is ``(N, C*H*W)`` or ``(N, C, H, W)``; the first ``n`` are shown.
    """
    check_positive_int("n", n)
    x = x[:n]
    y = None if y is None else y[:n]
    recon = model.reconstruct(x, labels_for(model, y))
    grid = image_grid(torch.cat([flat(x), flat(recon)]), image_shape, ncols=x.shape[0])
    fig, (ax,) = image_axes(grid.shape[:2], panel_width=min(9.0, max(4.0, 0.5 * x.shape[0])))
    show(ax, grid, "inputs (top) / reconstructions (bottom)")
    return save(fig, path)


def plot_samples(model, image_shape, path, n: int = 64, y=None):
    """Draws from the model: the likelihood's mean image beside a sample of the pixels, same code.

    ``y`` ``(n,)`` gives a conditional model its labels. Needs no data.
    """
    check_positive_int("n", n)
    ncols = int(np.ceil(np.sqrt(n)))
    device = next(model.parameters()).device
    state = torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.random.get_rng_state()
    means = model.sample(n, y, mean=True)
    # Same z for both panels: replay the generator the draws came from.
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.random.set_rng_state(state)
    pixels = model.sample(n, y, mean=False)
    grid_means = image_grid(flat(means), image_shape, ncols)
    fig, axes = image_axes(grid_means.shape[:2], 2, panel_width=3.8)
    show(axes[0], grid_means, "decoder mean")
    show(axes[1], image_grid(flat(pixels), image_shape, ncols), "pixel sample")
    return save(fig, path)


def plot_manifold(model, image_shape, path, *, n: int = 15, dims=None, x=None, y=None, label=None,
                  activity=None):
    """Decoder means over an ``n x n`` grid of codes (see :func:`~pyro_vae.plots.compute.manifold_codes`).

    With more than two latent dimensions the grid spans ``dims``, by default the two most
    active ones: over ``x`` (largest variance of the encoder means) when given, else by
    ``activity`` ``(d,)`` (the evaluation's recorded variances), else dimensions 0 and 1; the
    others are held at 0. Conditional models decode every cell with ``label`` (default 0).
    """
    d = latent_dim(model)
    like = next(model.parameters())
    if dims is None:
        if d > 2 and x is not None and can_encode(model):
            dims = most_active_dims(model, x, y)
        elif d > 2 and activity is not None and len(activity) == d:
            dims = [int(i) for i in torch.argsort(torch.as_tensor(activity), descending=True)[:2]]
        else:
            dims = list(range(min(d, 2)))
    dims = [int(v) for v in dims]
    if len(dims) != min(d, 2) or len(set(dims)) != len(dims) or not all(0 <= v < d for v in dims):
        raise ValueError(f"dims must be {min(d, 2)} distinct latent dimensions in [0, {d}), got {dims}")
    z = manifold_codes(n, d, dims, like=like)
    labels, label_note = None, ""
    if is_conditional(model):
        label = 0 if label is None else label
        num_classes = getattr(model, "num_classes", None)
        if num_classes and not 0 <= label < num_classes:
            raise ValueError(f"label must be in [0, {num_classes - 1}], got {label}")
        labels = torch.full((z.shape[0],), label, dtype=torch.long, device=like.device)
        label_note = f", class {label}"
    elif label is not None:
        raise ValueError(f"label applies to label-conditioned models; {type(model).__name__} is not one")
    images = decode_mean(model, z, labels)
    rows = z.shape[0] // n
    grid = image_grid(images, image_shape, ncols=n)
    fig, (ax,) = image_axes(grid.shape[:2], panel_width=6.0, left=0.75, bottom=0.6, top=0.45, right=0.2)
    others = " (others 0)" if d > 2 else ""
    show(ax, grid, f"decoder mean over z{dims}{others}{label_note}", ticks=True)
    c, h, w = image_shape
    values = manifold_grid(n, like=like).tolist()
    step = max(1, n // 8)
    ax.set_xticks(cell_centres(n, w)[::step], [f"{v:.2g}" for v in values[::step]])
    ax.set_xlabel(f"z[{dims[0]}]  (normal quantiles 0.05 .. 0.95)", fontsize=9)
    if rows > 1:
        ax.set_yticks(cell_centres(n, h)[::step], [f"{v:.2g}" for v in values[::-1][::step]])
        ax.set_ylabel(f"z[{dims[1]}]", fontsize=9)
    else:
        ax.set_yticks([])
    return save(fig, path)


def interpolation_pairs(y, n_pairs: int, total: int, same_class: bool):
    """Indices ``(a, b)`` of the test pairs to interpolate between (deterministic).

    ``same_class`` pairs the first two examples of each label in turn (a conditional model
    decodes the whole line with one label); else examples ``i`` and ``n_pairs + i``.
    """
    if same_class and y is not None:
        a, b = [], []
        for label in sorted({int(v) for v in y.unique()}):
            idx = (y == label).nonzero().flatten()
            if idx.numel() >= 2:
                a.append(int(idx[0]))
                b.append(int(idx[1]))
            if len(a) == n_pairs:
                break
        if not a:
            raise ValueError("interpolation of a conditional model needs two test examples of one class")
        return a, b
    n_pairs = min(n_pairs, total // 2)
    if n_pairs == 0:
        raise ValueError("interpolation needs at least two test examples")
    return list(range(n_pairs)), list(range(n_pairs, 2 * n_pairs))


def plot_interpolation(model, x, image_shape, path, y=None, *, n: int = 6, steps: int = 10,
                       num_classes: int | None = None):
    """``n`` rows: input a, decoded means along the line z_a -> z_b, input b.

    Conditional models interpolate between two examples of the same class, decoded with it.
    With ``x`` None (a run loaded without its data) the two ends of each row are codes drawn
    from the prior instead, and a conditional model decodes row ``r`` with label
    ``r % num_classes``.
    """
    check_positive_int("n", n)
    check_positive_int("steps", steps)
    if x is None:
        return _plot_prior_interpolation(model, image_shape, path, n=n, steps=steps, num_classes=num_classes)
    a, b = interpolation_pairs(y, n, x.shape[0], is_conditional(model))
    pair_y = None if y is None else y[a]
    path_images = interpolate(model, x[a], x[b], steps, pair_y)  # (p, steps, D)
    rows = torch.cat([flat(x[a])[:, None], path_images, flat(x[b])[:, None]], dim=1)  # (p, steps + 2, D)
    grid = image_grid(rows.reshape(-1, rows.shape[-1]), image_shape, ncols=steps + 2)
    fig, (ax,) = image_axes(grid.shape[:2], panel_width=min(9.0, 0.55 * (steps + 2)), bottom=0.35)
    show(ax, grid, "input a | decoded means from z_a to z_b | input b", ticks=True)
    c, h, w = image_shape
    labels = ["a"] + [f"{t:.2g}" for t in np.linspace(0, 1, steps)] + ["b"]
    ax.set_xticks(cell_centres(steps + 2, w), labels)
    ax.set_yticks([])
    return save(fig, path)


def _plot_prior_interpolation(model, image_shape, path, *, n: int, steps: int, num_classes=None):
    like = next(model.parameters())
    labels = None
    if is_conditional(model):
        classes = num_classes or getattr(model, "num_classes", None)
        if not classes:
            raise ValueError(f"{type(model).__name__} does not say how many classes it has (num_classes)")
        labels = torch.arange(n, device=like.device) % classes  # (n,): one label per row
    z_a, z_b = prior_codes(model, n, labels), prior_codes(model, n, labels)  # (n, d) each
    path_images = interpolate_codes(model, z_a, z_b, steps, labels)  # (n, steps, D)
    grid = image_grid(path_images.reshape(-1, path_images.shape[-1]), image_shape, ncols=steps)
    fig, (ax,) = image_axes(grid.shape[:2], panel_width=min(9.0, 0.55 * (steps + 2)), bottom=0.35)
    show(ax, grid, "decoded means from z_a to z_b, both drawn from the prior", ticks=True)
    c, h, w = image_shape
    ax.set_xticks(cell_centres(steps, w), [f"{t:.2g}" for t in np.linspace(0, 1, steps)])
    ax.set_yticks([])
    return save(fig, path)


def plot_arithmetic(model, x, y, image_shape, path, *, from_label: int = 0, to_label: int = 1,
                    n: int = 5, steps: int = 6):
    """Latent attribute arithmetic: ``z + alpha v`` decoded, ``v`` the attribute vector
    (:func:`~pyro_vae.plots.compute.attribute_vector`).

    Each of ``n`` rows starts from a test image of ``from_label`` (first column) and decodes its
    code plus ``alpha`` times the attribute vector for ``alpha`` in ``linspace(0, 1, steps)``
    (``alpha = 0`` is its reconstruction; at 1 the code has moved by the full difference of means).
    """
    check_positive_int("n", n)
    check_positive_int("steps", steps)
    v = attribute_vector(model, x, y, from_label, to_label)  # (d,)
    idx = class_indices(y, from_label, "from_label")[:n]
    z = encode_means(model, x[idx], y[idx])  # (p, d)
    alphas = torch.linspace(0, 1, steps, dtype=z.dtype, device=z.device)
    shifted = z[:, None] + alphas[None, :, None] * v  # (p, steps, d)
    decoded = decode_mean(model, shifted.reshape(-1, z.shape[1])).reshape(len(idx), steps, -1)
    rows = torch.cat([flat(x[idx])[:, None], decoded], dim=1)  # (p, steps + 1, D)
    grid = image_grid(rows.reshape(-1, rows.shape[-1]), image_shape, ncols=steps + 1)
    fig, (ax,) = image_axes(grid.shape[:2], panel_width=min(9.0, 0.6 * (steps + 1)), bottom=0.35, top=0.55)
    show(ax, grid, f"input (label {from_label}) | decoded z + \u03b1 v,\n"
                   f"v = mean z[label {to_label}] \u2212 mean z[label {from_label}]", ticks=True)
    c, h, w = image_shape
    ax.set_xticks(cell_centres(steps + 1, w), ["input"] + [f"\u03b1={a:.2g}" for a in alphas.tolist()])
    ax.set_yticks([])
    return save(fig, path)


def plot_classes(model, image_shape, path, num_classes: int | None = None, *, n: int = 8):
    """One row per class, the same code down each column (a conditional model's style/content split).

    Needs no data: the codes are drawn from the prior.
    """
    num_classes = num_classes or getattr(model, "num_classes", None)
    if not num_classes:
        raise ValueError(f"{type(model).__name__} does not say how many classes it has (num_classes)")
    classes = list(range(num_classes))
    images, z = class_grid(model, classes, n)
    grid = image_grid(images.reshape(-1, images.shape[-1]), image_shape, ncols=n)
    fig, (ax,) = image_axes(grid.shape[:2], panel_width=min(6.0, 0.6 * n), left=0.5, top=0.45)
    same = "per class from p(z | y)" if z.dim() == 3 else "once per column from the prior"
    show(ax, grid, f"class per row; z drawn {same}", ticks=True)
    c, h, w = image_shape
    ax.set_yticks(cell_centres(len(classes), h), [str(k) for k in classes])
    ax.set_xticks([])
    ax.set_ylabel("class", fontsize=9)
    return save(fig, path)
