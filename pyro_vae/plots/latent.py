"""Figures of the latent code: test codes in two dimensions, and the KL per dimension.

Both need the run's data: they show where the test images land.

Example
-------
>>> import io, torch
>>> from pyro_vae.models import VAE, VAEConfig
>>> from pyro_vae.plots.latent import plot_latent
>>> vae = VAE(12, VAEConfig(latent_dim=2, hidden_dims=(8,)))
>>> x, y = torch.rand(20, 12), torch.arange(20) % 2
>>> plot_latent([("untrained", vae, x, y)], io.BytesIO())          # doctest: +ELLIPSIS
<_io.BytesIO object at ...>
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import check_choice
from .compute import ACTIVE_THRESHOLD, encode_means, kl_per_dimension
from .layout import colour_map, new_figure, px, save

#: How :func:`latent_points` shows a code of more than two dimensions.
LATENT_METHODS = ("pca", "tsne")


def latent_points(model, x, y=None, method: str = "pca", seed: int = 0):
    """Two-dimensional view of the test codes: ``(points (n, 2) array, axis names)``.

    Two latent dimensions are shown as they are; more are projected by PCA (scikit-learn) or
    embedded by t-SNE (``method="tsne"``); one is spread along the x axis.

    Example
    -------
    >>> import torch
    >>> from pyro_vae.models import VAE, VAEConfig
    >>> points, names = latent_points(VAE(12, VAEConfig(latent_dim=2)), torch.rand(5, 12))
    >>> points.shape, names
    ((5, 2), ('z[0]', 'z[1]'))
    """
    check_choice("method", method, LATENT_METHODS)
    z = encode_means(model, x, y).detach().to("cpu", torch.float64).numpy()  # (n, d)
    if z.shape[1] == 1:
        return np.stack([z[:, 0], np.zeros_like(z[:, 0])], 1), ("z[0]", "")
    if z.shape[1] == 2:
        return z, ("z[0]", "z[1]")
    if method == "pca":
        from sklearn.decomposition import PCA  # noqa: PLC0415

        pca = PCA(n_components=2, random_state=seed).fit(z)
        share = pca.explained_variance_ratio_
        return pca.transform(z), (f"PC 1 ({share[0]:.0%} of variance)", f"PC 2 ({share[1]:.0%})")
    from sklearn.manifold import TSNE  # noqa: PLC0415

    perplexity = float(min(30, max(2, (z.shape[0] - 1) // 3)))
    points = TSNE(n_components=2, init="pca", random_state=seed, perplexity=perplexity).fit_transform(z)
    return points, ("t-SNE 1", "t-SNE 2")


def plot_latent(entries, path, *, method: str = "pca", seed: int = 0):
    """Test codes coloured by label; several runs side by side.

    ``entries`` is a list of ``(title, model, x, y)``: one panel each (``y`` may be None).
    """
    if not entries:
        raise ValueError("plot_latent needs at least one (title, model, x, y) entry, got none")
    check_choice("method", method, LATENT_METHODS)
    panel, left, right, top, bottom, gap = 4.2, 0.7, 1.0, 0.45, 0.6, 0.8
    k = len(entries)
    width, height = px(left + k * panel + (k - 1) * gap + right), px(bottom + panel + top)
    fig = new_figure(width, height)
    for i, (title, model, x, y) in enumerate(entries):
        ax = fig.add_axes([(left + i * (panel + gap)) / width, bottom / height, panel / width, panel / height])
        points, names = latent_points(model, x, y, method, seed)
        if y is None:
            ax.scatter(points[:, 0], points[:, 1], s=4, alpha=0.7)
        else:
            labels = y.detach().cpu().numpy()
            classes = np.unique(labels)
            # Colour by the label's value, so a label has one colour in every panel.
            cmap = colour_map("tab10" if classes.max(initial=0) < 10 else "tab20")
            for c in classes:
                sel = labels == c
                ax.scatter(points[sel, 0], points[sel, 1], s=4, alpha=0.7, color=cmap(int(c) % cmap.N), label=str(c))
            if i == k - 1 and len(classes) <= 20:
                ax.legend(title="label", fontsize=7, title_fontsize=8, markerscale=3,
                          loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
        ax.set_xlabel(names[0], fontsize=8)
        ax.set_ylabel(names[1], fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_title(title, fontsize=10)
    return save(fig, path)


def plot_kl(model, x, path, y=None, *, stats: dict | None = None):
    """Average KL of q(z_d | x) from N(0, 1) per latent dimension (bars) and each dimension's
    activity Cov_x(E_q[z_d]) (below, log scale) with the active-unit threshold.

    The numbers are :func:`~pyro_vae.plots.compute.kl_per_dimension` of the test images ``x``
    or, with ``x`` None, ``stats`` as the evaluation recorded them
    (:func:`~pyro_vae.plots.compute.recorded_kl`).
    """
    if x is None and stats is None:
        raise ValueError("plot_kl needs the test images x or the recorded stats, got neither")
    stats = kl_per_dimension(model, x, y) if x is not None else stats
    over = f"mean over {x.shape[0]} test examples" if x is not None else "on the test set, as evaluated"
    kl = stats["kl"].detach().cpu().numpy()  # (d,)
    activity = stats["activity"].detach().cpu().numpy()
    active = stats["active"].cpu().numpy()
    d = kl.shape[0]
    width = px(max(6.0, 0.25 * d + 1.5))
    fig = new_figure(width, 5.0)
    left, right = 0.9 / width, 1 - 0.25 / width
    ax_kl = fig.add_axes([left, 0.5, right - left, 0.34])
    ax_act = fig.add_axes([left, 0.1, right - left, 0.3], sharex=ax_kl)
    dims = np.arange(d)
    colours = np.where(active, "C0", "0.7")
    ax_kl.bar(dims, kl, color=colours)
    ax_kl.set_ylabel("KL (nats)", fontsize=9)
    against = ("the prior N(0, I)" if stats["standard_prior"]
               else "N(0, 1) for reference: the prior is not N(0, I) and its KL does not split per dimension")
    fig.text(0.5, 0.955, f"KL(q(z_d | x) || N(0, 1)) per dimension, {over}",
             ha="center", va="center", fontsize=10)
    fig.text(0.5, 0.905, f"against {against}; {int(active.sum())} of {d} dimensions active (blue; grey: inactive)",
             ha="center", va="center", fontsize=8)
    ax_act.bar(dims, np.maximum(activity, 1e-12), color=colours)
    ax_act.axhline(ACTIVE_THRESHOLD, color="C3", lw=1, ls="--",
                   label=f"active: Cov_x(E_q[z_d]) > {ACTIVE_THRESHOLD}")
    ax_act.set_yscale("log")
    ax_act.set_ylabel("Cov_x(E_q[z_d])", fontsize=9)
    ax_act.set_xlabel("latent dimension", fontsize=9)
    ax_act.legend(fontsize=7, loc="lower right")
    ax_act.set_xticks(dims if d <= 32 else dims[:: max(1, d // 16)])
    for ax in (ax_kl, ax_act):
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3, axis="y")
    return save(fig, path)
