"""Every figure the subject is taught with, drawn with matplotlib (Agg backend) to PNG.

One function per kind of figure (see :data:`KINDS`); each takes a model (and data) and returns
what it wrote to. Next to the drawing functions sit small helpers that compute the figure's data
(:func:`manifold_grid`, :func:`interpolate`, :func:`class_grid`, :func:`kl_per_dimension` ...),
so the numbers behind a picture can be checked without looking at pixels.

Images are flattened ``(n, D)`` tensors reshaped with the data set's ``image_shape``
``(C, H, W)``, so 8x8 digits, 28x28 MNIST, 28x20 Frey faces and colour images all come out the
right way round. Figures have a fixed size in inches (derived from the image shapes) and are
saved at :data:`DPI`, so the PNG's pixel size does not depend on the text drawn in it.

Which figures apply to a model is read from what the model can do (duck typing), so a model
added later gets every figure its methods support: see :func:`applicable_kinds`.

Example
-------
>>> from pyro_vae.runs import load_run
>>> from pyro_vae.plots import applicable_kinds, plot_run
>>> run = load_run("runs/vae-digits")                         # doctest: +SKIP
>>> applicable_kinds(run.model, run.data)                     # doctest: +SKIP
['curves', 'reconstructions', 'samples', 'manifold', 'latent', 'interpolation', 'arithmetic', 'kl']
>>> plot_run(run, "manifold")                                 # doctest: +SKIP
PosixPath('runs/vae-digits/figures/manifold.png')
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ..errors import check_choice, check_positive_int  # noqa: E402
from ..inference.evaluate import ACTIVE_UNIT_THRESHOLD, kl_to_standard_normal  # noqa: E402
from ..models.base import labels_for  # noqa: E402

#: Resolution of every PNG written here (pixels per inch).
DPI = 100

#: Every kind of figure, in the order a report shows them, with a one-line description.
KINDS: dict[str, str] = {
    "curves": "training curve: train and test ELBO per epoch (and the final log-likelihood estimate)",
    "reconstructions": "test inputs (top) above their reconstructions (bottom)",
    "samples": "new draws: the decoder's mean image beside a pixel sample with the same code",
    "manifold": "decoder means over a grid of codes placed through the inverse normal CDF",
    "latent": "test codes (encoder means) coloured by label; PCA or t-SNE above two dimensions",
    "interpolation": "decoded points on the line between the codes of two test images",
    "arithmetic": "an attribute vector (difference of two labels' mean codes) added in steps",
    "classes": "conditional model: one row per class, the same code down each column",
    "analogies": "semi-supervised model (M2): test images' style code rendered in every class",
    "components": "mixture: component means with their weights, and samples",
    "pca": "probabilistic PCA: the mean and the learned principal directions",
    "kl": "KL divergence per latent dimension, active units marked",
}

#: Options each kind accepts besides the model and data (``plot_run``/``plot_kind`` keywords).
KIND_OPTIONS: dict[str, tuple[str, ...]] = {
    "curves": (),
    "reconstructions": ("n",),
    "samples": ("n",),
    "manifold": ("n", "label"),
    "latent": ("method",),
    "interpolation": ("n", "steps"),
    "arithmetic": ("n", "steps", "from_label", "to_label"),
    "classes": ("n",),
    "analogies": ("n",),
    "components": ("n",),
    "pca": ("n",),
    "kl": (),
}

LATENT_METHODS = ("pca", "tsne")

#: A latent dimension is active when Cov_x(E_q[z_d | x]) exceeds this: the evaluation's own
#: threshold (:data:`pyro_vae.inference.evaluate.ACTIVE_UNIT_THRESHOLD`), under the plots' name.
ACTIVE_THRESHOLD = ACTIVE_UNIT_THRESHOLD


# --------------------------------------------------------------------------- what a model can do


def _overrides(model, name: str) -> bool:
    """Whether ``model`` defines ``name`` beyond the base class's NotImplementedError stub."""
    from ..models.base import GenerativeModel  # noqa: PLC0415

    method = getattr(type(model), name, None)
    return callable(method) and method is not getattr(GenerativeModel, name, None)


def _loadings(model):
    loadings = getattr(model, "loadings", None)
    return loadings if isinstance(loadings, torch.Tensor) and loadings.dim() == 2 else None


def can_decode(model) -> bool:
    """Whether codes ``z`` can be turned into mean images (see :func:`decode_mean`)."""
    return (callable(getattr(model, "decode", None))
            or (callable(getattr(model, "_decode", None)) and hasattr(model, "likelihood"))
            or (_loadings(model) is not None and isinstance(getattr(model, "mean", None), torch.Tensor)))


def can_encode(model) -> bool:
    """Whether the model maps images to codes (it implements ``encode``; for a mixture the code
    is its responsibilities, so figures of a continuous code also ask for :func:`latent_dim`)."""
    return _overrides(model, "encode")


def has_posterior_scale(model) -> bool:
    """Whether q(z | x) is a diagonal Normal with a scale (``posterior(x, y) -> (loc, scale)``,
    not a point mass, which has ``is_bound`` False): the KL per dimension is defined."""
    family = getattr(model, "guide_family", None)  # a VAE's: only a diagonal Normal qualifies
    return (callable(getattr(model, "posterior", None)) and bool(getattr(model, "is_bound", False))
            and bool(getattr(model, "has_latents", False))
            and (family is None or bool(family.diagonal_normal)))


def latent_dim(model) -> int | None:
    """Size of the model's continuous code, or None when it has none."""
    loadings = _loadings(model)
    if loadings is not None:
        return int(loadings.shape[1])
    for owner in (model, getattr(model, "config", None)):
        value = getattr(owner, "latent_dim", None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def applicable_kinds(model, data=None) -> list[str]:
    """The kinds of figure that apply to ``model`` (and, when given, ``data``), in report order.

    Read from the model's capabilities: an encoder (``encode``), a decoder (``decode``, or
    ``_decode`` with a ``likelihood``, or PPCA's ``loadings`` and ``mean``), label
    conditioning (``needs_labels``), mixture parts (``weights``, ``component_means``), PPCA's
    ``loadings``, a Normal guide (``posterior`` with ``is_bound``). With ``data``, kinds
    that need labels are dropped when the data set has none.

    Example
    -------
    >>> from pyro_vae.models import VAE, VAEConfig
    >>> applicable_kinds(VAE(64, VAEConfig(latent_dim=2)))
    ['curves', 'reconstructions', 'samples', 'manifold', 'latent', 'interpolation', 'arithmetic', 'kl']
    """
    encodes, decodes = can_encode(model), can_decode(model)
    labelled = data is None or data.y_test is not None
    conditional = bool(getattr(model, "needs_labels", False))
    kinds = {
        "curves": True,
        "samples": True,
        "reconstructions": _overrides(model, "reconstruct"),
        "manifold": decodes and latent_dim(model) is not None,
        "latent": encodes and latent_dim(model) is not None,
        "interpolation": encodes and decodes,
        "arithmetic": encodes and decodes and not conditional and labelled,
        # M2 decodes p(x | y, z) for any class while summing y out of its likelihood.
        "classes": ((conditional or bool(getattr(model, "sums_out_labels", False)))
                    and decodes and latent_dim(model) is not None),
        "analogies": callable(getattr(model, "analogies", None)),
        "components": callable(getattr(model, "component_means", None)) and hasattr(model, "weights"),
        "pca": _loadings(model) is not None,
        "kl": has_posterior_scale(model),
    }
    return [kind for kind in KINDS if kinds[kind]]


def check_applicable(kind: str, model, data=None) -> str:
    """Return ``kind`` if it applies to ``model``; else raise ``ValueError`` naming the kinds that do."""
    check_choice("figure kind", kind, KINDS)
    kinds = applicable_kinds(model, data)
    if kind not in kinds:
        raise ValueError(
            f"figure kind {kind!r} does not apply to {type(model).__name__} "
            f"({KINDS[kind]}); kinds that apply to this run: {', '.join(kinds)}"
        )
    return kind


# --------------------------------------------------------------------------- figure data


@torch.no_grad()
def decode_mean(model, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Mean images ``(n, D)`` of p(x | z) (p(x | z, y) for conditional models) for ``z`` ``(n, d)``."""
    decode = getattr(model, "decode", None)
    if callable(decode):
        return decode(z, y)
    if callable(getattr(model, "_decode", None)) and hasattr(model, "likelihood"):
        return model.likelihood.mean(model._decode(z, y))
    loadings = _loadings(model)
    if loadings is not None:
        return torch.nn.functional.linear(z, loadings, model.mean)  # W z + mu, (n, D)
    raise ValueError(f"{type(model).__name__} has no decoder from codes to images")


@torch.no_grad()
def encode_means(model, x: torch.Tensor, y: torch.Tensor | None = None, batch_size: int = 1000) -> torch.Tensor:
    """Encoder means ``(n, latent_dim)`` of ``x``, in batches (labels passed to conditional models)."""
    y = labels_for(model, y)
    parts = [model.encode(x[i:i + batch_size], None if y is None else y[i:i + batch_size])
             for i in range(0, x.shape[0], batch_size)]
    return torch.cat(parts)


@torch.no_grad()
def latent_activity(model, x, y=None) -> torch.Tensor:
    """Activity of each latent dimension: the variance over ``x`` of its encoder mean, ``(d,)``."""
    return encode_means(model, x, y).var(dim=0)


def most_active_dims(model, x, y=None, k: int = 2) -> list[int]:
    """The ``k`` latent dimensions whose encoder means vary most over ``x`` (most active first)."""
    activity = latent_activity(model, x, y)
    return [int(i) for i in torch.argsort(activity, descending=True)[:k]]


def manifold_grid(n: int, *, low: float = 0.05, high: float = 0.95, like: torch.Tensor | None = None) -> torch.Tensor:
    """``n`` code values: the standard normal's quantiles at ``linspace(low, high, n)``, ``(n,)``.

    Evenly spaced in probability, so each cell of the manifold covers the same prior mass.

    Example
    -------
    >>> manifold_grid(3)
    tensor([-1.6449,  0.0000,  1.6449])
    """
    check_positive_int("n", n)
    like = torch.zeros((), dtype=torch.get_default_dtype()) if like is None else like
    probs = torch.linspace(low, high, n, dtype=like.dtype, device=like.device)
    normal = torch.distributions.Normal(torch.zeros_like(probs), torch.ones_like(probs))
    return normal.icdf(probs)


def manifold_codes(n: int, latent_size: int, dims=(0, 1), like: torch.Tensor | None = None) -> torch.Tensor:
    """Codes of an ``n x n`` manifold, ``(rows * n, latent_size)``, row-major from the top left.

    Column ``j`` sets ``z[dims[0]] = grid[j]``; row ``i`` sets ``z[dims[1]] = grid[n - 1 - i]``
    (larger values at the top, as on a plot's y axis); every other dimension is 0. With one
    latent dimension there is a single row.
    """
    grid = manifold_grid(n, like=like)
    dims = list(dims)[:latent_size]
    rows = n if len(dims) > 1 else 1
    z = grid.new_zeros(rows, n, latent_size)
    z[:, :, dims[0]] = grid.expand(rows, n)
    if len(dims) > 1:
        z[:, :, dims[1]] = grid.flip(0)[:, None].expand(rows, n)
    return z.reshape(rows * n, latent_size)


@torch.no_grad()
def interpolate(model, x_a, x_b, steps: int = 10, y: torch.Tensor | None = None) -> torch.Tensor:
    """Decoded means along the line between the codes of ``x_a`` and ``x_b`` (each ``(p, D)``).

    Returns ``(p, steps, D)``; step ``t`` decodes ``(1 - t) z_a + t z_b`` with ``t`` evenly
    spaced in [0, 1], so the first and last steps are the reconstructions of ``x_a`` and ``x_b``.
    Conditional models get the labels ``y`` ``(p,)`` of the pairs (both ends share a label).
    """
    check_positive_int("steps", steps)
    y = labels_for(model, y)
    z_a, z_b = model.encode(x_a, y), model.encode(x_b, y)  # (p, d)
    t = torch.linspace(0, 1, steps, dtype=z_a.dtype, device=z_a.device)[None, :, None]
    z = (1 - t) * z_a[:, None] + t * z_b[:, None]  # (p, steps, d)
    # Exact end points: the line's ends are the two codes themselves.
    z[:, 0], z[:, -1] = z_a, z_b
    p, d = z_a.shape
    y_rep = None if y is None else y[:, None].expand(p, steps).reshape(-1)
    return decode_mean(model, z.reshape(p * steps, d), y_rep).reshape(p, steps, -1)


def _class_indices(y, label: int, name: str) -> torch.Tensor:
    idx = (y == label).nonzero().flatten()
    if idx.numel() == 0:
        present = sorted({int(v) for v in y.unique()})
        raise ValueError(f"{name} {label} has no test examples; labels present: {present}")
    return idx


@torch.no_grad()
def attribute_vector(model, x, y, from_label: int = 0, to_label: int = 1) -> torch.Tensor:
    """Mean code of ``to_label``'s examples minus that of ``from_label``'s, ``(latent_dim,)``."""
    if y is None:
        raise ValueError("attribute arithmetic needs a labelled data set; this one has no labels")
    if from_label == to_label:
        raise ValueError(f"from_label and to_label must differ, got {from_label} for both")
    z = encode_means(model, x, y)
    return (z[_class_indices(y, to_label, "to_label")].mean(0)
            - z[_class_indices(y, from_label, "from_label")].mean(0))


@torch.no_grad()
def class_grid(model, classes, n_cols: int = 8, *, like: torch.Tensor | None = None):
    """Decoded means for every class in ``classes`` with the same codes down each column.

    Returns ``(images, z)``: ``images`` ``(len(classes), n_cols, D)`` where row ``r`` decodes
    the codes ``z`` ``(n_cols, latent_dim)`` with label ``classes[r]``. The codes are drawn once
    from the prior; a prior that itself depends on the label is drawn once per row instead, so
    ``z`` then has shape ``(len(classes), n_cols, latent_dim)``.
    """
    check_positive_int("n_cols", n_cols)
    like = next(model.parameters()) if like is None else like
    labels = torch.as_tensor(list(classes), dtype=torch.long, device=like.device)
    num_classes = getattr(model, "num_classes", None)
    if labels.numel() == 0 or (num_classes and not bool(((labels >= 0) & (labels < num_classes)).all())):
        raise ValueError(f"classes must be labels in [0, {num_classes}), got {labels.tolist()}")
    prior = getattr(model, "prior", None)
    d = latent_dim(model)
    if prior is not None and getattr(prior, "needs_label", False):
        rows = labels[:, None].expand(-1, n_cols)
        z = prior(rows.reshape(-1)).sample().reshape(len(labels), n_cols, d)
        flat = z.reshape(-1, d)
    else:
        if prior is not None:
            z = prior().sample((n_cols,))  # (n_cols, d)
        else:
            z = torch.randn(n_cols, d, dtype=like.dtype, device=like.device)
        flat = z.repeat(len(labels), 1)  # (rows * n_cols, d): the same codes in every row
    images = decode_mean(model, flat, labels.repeat_interleave(n_cols))
    return images.reshape(len(labels), n_cols, -1), z


@torch.no_grad()
def kl_per_dimension(model, x, y=None) -> dict:
    """KL of q(z_d | x) from N(0, 1) per latent dimension, averaged over ``x``; and activity.

    Returns ``{"kl": (d,), "activity": (d,), "active": (d,) bool, "standard_prior": bool}``.
    ``kl[d] = mean_x 0.5 (mu_d^2 + s_d^2 - 1 - log s_d^2)``, the closed form against the
    standard normal: the ELBO's KL term when the prior is N(0, I). For other priors the KL
    does not split over dimensions, so this stays a per-dimension reference against N(0, 1)
    (``standard_prior`` says which case holds). ``activity[d]`` is the variance over ``x`` of
    the encoder mean, ``active = activity > ACTIVE_THRESHOLD`` (Burda et al., 2015).
    """
    from ..models.priors import StandardNormalPrior  # noqa: PLC0415

    if not has_posterior_scale(model):
        raise ValueError(f"{type(model).__name__} has no Normal posterior q(z | x) to take a KL of")
    y = labels_for(model, y)
    loc, scale = model.posterior(x, y)  # (n, d) each
    kl = kl_to_standard_normal(loc, scale)
    activity = loc.var(dim=0)
    return {"kl": kl.mean(0), "activity": activity, "active": activity > ACTIVE_THRESHOLD,
            "standard_prior": isinstance(getattr(model, "prior", None), StandardNormalPrior)}


@torch.no_grad()
def principal_directions(model):
    """PPCA's principal directions and the variance along each, sorted by decreasing variance.

    With ``W = U S V^T`` (thin SVD of the ``(D, d)`` loadings), the directions are the columns
    of ``U`` (returned as rows, ``(d, D)``, orthonormal, each signed so that its largest entry is
    positive) and the model's variance along direction ``i`` is ``S_i^2 + noise_scale^2``.
    """
    loadings = _loadings(model)
    if loadings is None:
        raise ValueError(f"{type(model).__name__} has no loadings: not a probabilistic PCA")
    u, s, _ = torch.linalg.svd(loadings, full_matrices=False)  # (D, d), (d,)
    directions = u.T
    flip = torch.sign(directions.gather(1, directions.abs().argmax(1, keepdim=True)))
    noise = torch.as_tensor(getattr(model, "noise_scale", 0.0), dtype=s.dtype, device=s.device)
    return directions * flip, s.pow(2) + noise.pow(2)


# --------------------------------------------------------------------------- layout helpers


def image_grid(images: torch.Tensor, image_shape, ncols: int, pad: int = 1) -> np.ndarray:
    """Tile ``(n, D)`` images into one ``(rows*(H+pad)-pad, ncols*(W+pad)-pad[, C])`` array.

    Each flattened image is read as ``(C, H, W)`` (rows along the height), values clipped to
    [0, 1]; one channel gives a 2-D array, several a ``(..., C)`` one for ``imshow``.
    """
    c, h, w = image_shape
    images = images.detach().to("cpu", torch.float32).reshape(-1, c, h, w).clamp(0, 1).numpy()
    n = images.shape[0]
    nrows = -(-n // ncols)
    grid = np.ones((c, nrows * (h + pad) - pad, ncols * (w + pad) - pad), dtype=np.float32)
    for i in range(n):
        r, col = divmod(i, ncols)
        grid[:, r * (h + pad): r * (h + pad) + h, col * (w + pad): col * (w + pad) + w] = images[i]
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


def _px(inches: float) -> float:
    """Round a figure length to whole pixels, so the PNG size is exactly figsize * DPI."""
    return max(1, round(inches * DPI)) / DPI


def _save(fig, path):
    """Write ``fig`` as PNG to ``path`` (a file name or a binary file object) and close it."""
    if hasattr(path, "write"):
        fig.savefig(path, format="png", dpi=DPI)
    else:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png", dpi=DPI)
    plt.close(fig)
    return path


def _image_axes(grid_hw, n_panels=1, *, panel_width=7.0, max_height=7.0, left=0.15, right=0.15,
                top=0.4, bottom=0.15, gap=0.3):
    """A figure with ``n_panels`` axes side by side, each sized to show a ``grid_hw`` image unstretched.

    Margins are in inches. Returns ``(fig, axes)``.
    """
    gh, gw = grid_hw
    pw = panel_width
    ph = pw * gh / gw
    if ph > max_height:
        ph, pw = max_height, max_height * gw / gh
    width = _px(left + n_panels * pw + (n_panels - 1) * gap + right)
    height = _px(bottom + ph + top)
    fig = plt.figure(figsize=(width, height), dpi=DPI)
    axes = [fig.add_axes([(left + i * (pw + gap)) / width, bottom / height, pw / width, ph / height])
            for i in range(n_panels)]
    return fig, axes


def _show(ax, grid, title=None, *, ticks=False, signed=False):
    if signed and grid.ndim == 2:
        limit = float(np.abs(grid).max()) or 1.0
        ax.imshow(grid, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
    else:
        ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    if ticks:
        for side in ax.spines.values():
            side.set_visible(False)
        ax.tick_params(length=0, labelsize=8)
    else:
        ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=10)


def _cell_centres(n: int, size: int, pad: int = 1) -> list[float]:
    return [j * (size + pad) + (size - 1) / 2 for j in range(n)]


CELL_WIDTH, CELL_GAP, CELL_TITLE = 0.8, 0.12, 0.3  # inches: titled image cells (components, pca)


def _cells(fig, images, titles, image_shape, *, top, ncols, signed=None):
    """Draw images as titled cells, ``ncols`` per row centred, from ``top`` inches below the top.

    ``signed[i]`` shows image ``i`` with a diverging colour map centred at 0 (one channel) or
    with 0 mapped to grey (colour), for directions rather than images.
    """
    c, h, w = image_shape
    fig_w, fig_h = fig.get_size_inches()
    cw, ch = CELL_WIDTH, CELL_WIDTH * h / w
    left = (fig_w - ncols * cw - (ncols - 1) * CELL_GAP) / 2
    signed = signed or [False] * len(images)
    for i, (image, title, is_signed) in enumerate(zip(images, titles, signed)):
        r, col = divmod(i, ncols)
        x0 = left + col * (cw + CELL_GAP)
        y0 = top + r * (ch + CELL_TITLE) + CELL_TITLE
        ax = fig.add_axes([x0 / fig_w, 1 - (y0 + ch) / fig_h, cw / fig_w, ch / fig_h])
        image = image.detach().to("cpu", torch.float32).reshape(c, h, w)
        if not is_signed:
            _show(ax, image_grid(image[None], image_shape, 1))
        elif c == 1:
            _show(ax, image[0].numpy(), signed=True)
        else:
            scale = float(image.abs().max()) or 1.0
            _show(ax, (0.5 + 0.5 * image / scale).permute(1, 2, 0).numpy())
        ax.set_title(title, fontsize=8, pad=2)


def _cells_size(count, image_shape, ncols) -> tuple[float, float]:
    """``(width, height)`` in inches that :func:`_cells` needs for ``count`` images."""
    c, h, w = image_shape
    width = ncols * CELL_WIDTH + (ncols + 1) * CELL_GAP
    return width, -(-count // ncols) * (CELL_WIDTH * h / w + CELL_TITLE)


@contextlib.contextmanager
def _seeded(seed: int | None, device=None):
    """Run with torch's generators seeded, restoring their state afterwards (None: no seeding)."""
    if seed is None:
        yield
        return
    devices = [device] if device is not None and torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


# --------------------------------------------------------------------------- one function per kind


def plot_curves(history: list, path, metrics: dict | None = None):
    """Training curve and validation/test ELBO per epoch (nats per example); the final test
    log-likelihood if known.

    The training curve is labelled "training objective" when the run optimized something other
    than the ELBO (beta, KL warm-up, IWAE: the history key ``train_objective``).

    ``metrics`` is a run's ``metrics.json``: its ``test`` object adds the final importance-sampled
    (or exact) log-likelihood as a point at the last epoch. For a model without latent variables
    the "ELBO" is its exact log-likelihood, and the curve is labelled so.
    """
    fig = plt.figure(figsize=(6, 4), dpi=DPI)
    ax = fig.add_axes([0.14, 0.13, 0.82, 0.78])
    epochs = [h["epoch"] for h in history]
    test = (metrics or {}).get("test") or {}
    if history:
        if "train_objective" in history[0]:  # beta, warm-up or IWAE: not the ELBO
            key, name = "train_objective", "training objective (weighted or IWAE: not the ELBO)"
        else:  # a model without latents has an empty guide: its ELBO is its exact log-likelihood
            key, name = "train_elbo", "train log p(x) (exact ELBO)" if test.get("exact") else "train ELBO"
        ax.plot(epochs, [h[key] for h in history], label=name)
    for key, label in (("val_elbo", "validation ELBO"), ("test_elbo", "test ELBO")):
        scored = [h for h in history if h.get(key) is not None]
        if scored:
            ax.plot([h["epoch"] for h in scored], [h[key] for h in scored], "o-", ms=3, label=label)
    best = (metrics or {}).get("best_epoch")
    if best is not None:
        ax.axvline(best, color="0.6", ls=":", lw=1, label=f"best validation epoch ({best})")
    logged = [h for h in history if h.get("test_log_likelihood") is not None]
    if logged:
        ax.plot([h["epoch"] for h in logged], [h["test_log_likelihood"] for h in logged], "s-", ms=3,
                label="test log p(x)")
    last = epochs[-1] if epochs else (metrics or {}).get("epochs", 0)
    if test.get("log_likelihood") is not None:
        how = "exact" if test.get("exact") else f"importance sampled, K={test.get('log_likelihood_samples')}"
        ax.plot([last], [test["log_likelihood"]], "*", ms=12, color="C3",
                label=f"final test log p(x) ({how}): {test['log_likelihood']:.2f}")
    if not history and not test:
        ax.text(0.5, 0.5, "no training history", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per example")
    ax.set_title("training curve (higher is better)", fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_reconstructions(model, x, image_shape, path, y=None, n: int = 16):
    """Test inputs (top row) above their reconstructions (bottom row)."""
    check_positive_int("n", n)
    x = x[:n]
    y = None if y is None else y[:n]
    recon = model.reconstruct(x, labels_for(model, y))
    grid = image_grid(torch.cat([x, recon]), image_shape, ncols=x.shape[0])
    fig, (ax,) = _image_axes(grid.shape[:2], panel_width=min(9.0, max(4.0, 0.5 * x.shape[0])))
    _show(ax, grid, "inputs (top) / reconstructions (bottom)")
    return _save(fig, path)


def plot_samples(model, image_shape, path, n: int = 64, y=None):
    """Draws from the model: the likelihood's mean image beside a sample of the pixels, same code."""
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
    grid_means = image_grid(means, image_shape, ncols)
    fig, axes = _image_axes(grid_means.shape[:2], 2, panel_width=3.8)
    _show(axes[0], grid_means, "decoder mean")
    _show(axes[1], image_grid(pixels, image_shape, ncols), "pixel sample")
    return _save(fig, path)


def plot_manifold(model, image_shape, path, *, n: int = 15, dims=None, x=None, y=None, label=None):
    """Decoder means over an ``n x n`` grid of codes (see :func:`manifold_codes`).

    With more than two latent dimensions the grid spans ``dims``, by default the two most
    active ones over ``x`` (largest variance of the encoder means), the others held at 0.
    Conditional models decode every cell with ``label`` (default 0).
    """
    d = latent_dim(model)
    like = next(model.parameters())
    if dims is None:
        if d > 2 and x is not None and can_encode(model):
            dims = most_active_dims(model, x, y)
        else:
            dims = list(range(min(d, 2)))
    dims = [int(v) for v in dims]
    if len(dims) != min(d, 2) or len(set(dims)) != len(dims) or not all(0 <= v < d for v in dims):
        raise ValueError(f"dims must be {min(d, 2)} distinct latent dimensions in [0, {d}), got {dims}")
    z = manifold_codes(n, d, dims, like=like)
    labels, label_note = None, ""
    if getattr(model, "needs_labels", False):
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
    fig, (ax,) = _image_axes(grid.shape[:2], panel_width=6.0, left=0.75, bottom=0.6, top=0.45, right=0.2)
    others = " (others 0)" if d > 2 else ""
    _show(ax, grid, f"decoder mean over z{dims}{others}{label_note}", ticks=True)
    c, h, w = image_shape
    values = manifold_grid(n, like=like).tolist()
    step = max(1, n // 8)
    ax.set_xticks(_cell_centres(n, w)[::step], [f"{v:.2g}" for v in values[::step]])
    ax.set_xlabel(f"z[{dims[0]}]  (normal quantiles 0.05 .. 0.95)", fontsize=9)
    if rows > 1:
        ax.set_yticks(_cell_centres(n, h)[::step], [f"{v:.2g}" for v in values[::-1][::step]])
        ax.set_ylabel(f"z[{dims[1]}]", fontsize=9)
    else:
        ax.set_yticks([])
    return _save(fig, path)


def latent_points(model, x, y=None, method: str = "pca", seed: int = 0):
    """Two-dimensional view of the test codes: ``(points (n, 2) array, axis names)``.

    Two latent dimensions are shown as they are; more are projected by PCA (scikit-learn) or
    embedded by t-SNE (``method="tsne"``); one is spread along the x axis.
    """
    check_choice("method", method, LATENT_METHODS)
    z = encode_means(model, x, y).detach().to("cpu", torch.float64).numpy()
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
        raise ValueError("plot_latent needs at least one (title, model, x, y) entry")
    check_choice("method", method, LATENT_METHODS)
    panel, left, right, top, bottom, gap = 4.2, 0.7, 1.0, 0.45, 0.6, 0.8
    k = len(entries)
    width, height = _px(left + k * panel + (k - 1) * gap + right), _px(bottom + panel + top)
    fig = plt.figure(figsize=(width, height), dpi=DPI)
    for i, (title, model, x, y) in enumerate(entries):
        ax = fig.add_axes([(left + i * (panel + gap)) / width, bottom / height, panel / width, panel / height])
        points, names = latent_points(model, x, y, method, seed)
        if y is None:
            ax.scatter(points[:, 0], points[:, 1], s=4, alpha=0.7)
        else:
            labels = y.detach().cpu().numpy()
            classes = np.unique(labels)
            # Colour by the label's value, so a label has one colour in every panel.
            cmap = plt.get_cmap("tab10" if classes.max(initial=0) < 10 else "tab20")
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
    return _save(fig, path)


def _interpolation_pairs(y, n_pairs: int, total: int, same_class: bool):
    """Indices ``(a, b)`` of the test pairs to interpolate between (deterministic)."""
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


def plot_interpolation(model, x, image_shape, path, y=None, *, n: int = 6, steps: int = 10):
    """``n`` rows: input a, decoded means along the line z_a -> z_b, input b.

    Conditional models interpolate between two examples of the same class, decoded with it.
    """
    check_positive_int("n", n)
    conditional = bool(getattr(model, "needs_labels", False))
    a, b = _interpolation_pairs(y, n, x.shape[0], conditional)
    pair_y = None if y is None else y[a]
    path_images = interpolate(model, x[a], x[b], steps, pair_y)  # (p, steps, D)
    rows = torch.cat([x[a][:, None], path_images, x[b][:, None]], dim=1)  # (p, steps + 2, D)
    grid = image_grid(rows.reshape(-1, rows.shape[-1]), image_shape, ncols=steps + 2)
    fig, (ax,) = _image_axes(grid.shape[:2], panel_width=min(9.0, 0.55 * (steps + 2)), bottom=0.35)
    _show(ax, grid, "input a | decoded means from z_a to z_b | input b", ticks=True)
    c, h, w = image_shape
    labels = ["a"] + [f"{t:.2g}" for t in np.linspace(0, 1, steps)] + ["b"]
    ax.set_xticks(_cell_centres(steps + 2, w), labels)
    ax.set_yticks([])
    return _save(fig, path)


def plot_arithmetic(model, x, y, image_shape, path, *, from_label: int = 0, to_label: int = 1,
                    n: int = 5, steps: int = 6):
    """Latent attribute arithmetic: ``z + alpha v`` decoded, ``v`` from :func:`attribute_vector`.

    Each of ``n`` rows starts from a test image of ``from_label`` (first column) and decodes its
    code plus ``alpha`` times the attribute vector for ``alpha`` in ``linspace(0, 1, steps)``
    (``alpha = 0`` is its reconstruction; at 1 the code has moved by the full difference of means).
    """
    check_positive_int("n", n)
    check_positive_int("steps", steps)
    v = attribute_vector(model, x, y, from_label, to_label)  # (d,)
    idx = _class_indices(y, from_label, "from_label")[:n]
    z = encode_means(model, x[idx], y[idx])  # (p, d)
    alphas = torch.linspace(0, 1, steps, dtype=z.dtype, device=z.device)
    shifted = z[:, None] + alphas[None, :, None] * v  # (p, steps, d)
    decoded = decode_mean(model, shifted.reshape(-1, z.shape[1])).reshape(len(idx), steps, -1)
    rows = torch.cat([x[idx][:, None], decoded], dim=1)
    grid = image_grid(rows.reshape(-1, rows.shape[-1]), image_shape, ncols=steps + 1)
    fig, (ax,) = _image_axes(grid.shape[:2], panel_width=min(9.0, 0.6 * (steps + 1)), bottom=0.35, top=0.55)
    _show(ax, grid, f"input (label {from_label}) | decoded z + \u03b1 v,\n"
                    f"v = mean z[label {to_label}] \u2212 mean z[label {from_label}]", ticks=True)
    c, h, w = image_shape
    ax.set_xticks(_cell_centres(steps + 1, w), ["input"] + [f"\u03b1={a:.2g}" for a in alphas.tolist()])
    ax.set_yticks([])
    return _save(fig, path)


def plot_classes(model, image_shape, path, num_classes: int | None = None, *, n: int = 8):
    """One row per class, the same code down each column (a conditional model's style/content split)."""
    num_classes = num_classes or getattr(model, "num_classes", None)
    if not num_classes:
        raise ValueError(f"{type(model).__name__} does not say how many classes it has (num_classes)")
    classes = list(range(num_classes))
    images, z = class_grid(model, classes, n)
    grid = image_grid(images.reshape(-1, images.shape[-1]), image_shape, ncols=n)
    fig, (ax,) = _image_axes(grid.shape[:2], panel_width=min(6.0, 0.6 * n), left=0.5, top=0.45)
    same = "per class from p(z | y)" if z.dim() == 3 else "once per column from the prior"
    _show(ax, grid, f"class per row; z drawn {same}", ticks=True)
    c, h, w = image_shape
    ax.set_yticks(_cell_centres(len(classes), h), [str(k) for k in classes])
    ax.set_xticks([])
    ax.set_ylabel("class", fontsize=9)
    return _save(fig, path)


def plot_analogies(model, x, image_shape, path, *, n: int = 8):
    """The paper's Figure 1 (Kingma et al. 2014): each of ``n`` test images (first column) and
    its style code, the mean of q(z | x, predicted y), decoded with every class (one column each)."""
    check_positive_int("n", n)
    x = x[:n]
    images = model.analogies(x)  # (n, C, D)
    num_classes = images.shape[1]
    rows = torch.cat([x[:, None], images], dim=1)  # (n, C + 1, D)
    grid = image_grid(rows.reshape(-1, rows.shape[-1]), image_shape, ncols=num_classes + 1)
    fig, (ax,) = _image_axes(grid.shape[:2], panel_width=min(9.0, 0.6 * (num_classes + 1)), bottom=0.35)
    _show(ax, grid, "input | its style z = E q(z | x, predicted y) decoded in each class", ticks=True)
    c, h, w = image_shape
    ax.set_xticks(_cell_centres(num_classes + 1, w), ["input"] + [str(k) for k in range(num_classes)])
    ax.set_yticks([])
    return _save(fig, path)


def plot_components(model, image_shape, path, *, n: int = 32):
    """Mixture components' means titled with their weights (heaviest first), and ``n`` samples."""
    check_positive_int("n", n)
    weights = torch.as_tensor(model.weights).detach().flatten()
    means = model.component_means()  # (K, D)
    order = torch.argsort(weights, descending=True)
    k = weights.numel()
    ncols = min(k, 10)
    cells_w, comp_h = _cells_size(k, image_shape, ncols)
    width = _px(max(6.0, cells_w))
    samples = model.sample(n, None, mean=False)
    sample_grid = image_grid(samples, image_shape, min(n, 16))
    sample_h = min(6.0, (width - 0.3) * sample_grid.shape[0] / sample_grid.shape[1])
    sample_w = sample_h * sample_grid.shape[1] / sample_grid.shape[0]
    height = _px(0.35 + comp_h + 0.4 + sample_h + 0.1)
    fig = plt.figure(figsize=(width, height), dpi=DPI)
    fig.text(0.5, 1 - 0.2 / height, f"{k} component means, heaviest first (#index weight)",
             ha="center", va="center", fontsize=10)
    _cells(fig, means[order], [f"#{int(i)} {weights[i]:.3f}" for i in order], image_shape,
           top=0.35, ncols=ncols)
    ax = fig.add_axes([(width - sample_w) / 2 / width, 0.1 / height, sample_w / width, sample_h / height])
    _show(ax, sample_grid)
    fig.text(0.5, (0.1 + sample_h + 0.2) / height, f"{n} samples (component drawn by weight, then pixels)",
             ha="center", va="center", fontsize=10)
    return _save(fig, path)


def plot_pca(model, image_shape, path, *, n: int = 16):
    """PPCA's mean image and its first ``n`` principal directions (titled with their variance).

    Directions are shown with a diverging colour map (red positive, blue negative, white 0).
    """
    check_positive_int("n", n)
    directions, variances = principal_directions(model)
    directions, variances = directions[:n], variances[:n]
    images = [model.mean.detach().flatten(), *directions]
    titles = ["mean"] + [f"{i + 1}: var {v:.3g}" for i, v in enumerate(variances.tolist())]
    ncols = min(len(images), 9)
    cells_w, cells_h = _cells_size(len(images), image_shape, ncols)
    width, height = _px(max(6.0, cells_w)), _px(0.35 + cells_h + 0.1)
    fig = plt.figure(figsize=(width, height), dpi=DPI)
    noise = float(torch.as_tensor(getattr(model, "noise_scale", float("nan"))))
    fig.text(0.5, 1 - 0.2 / height,
             f"mean and principal directions (variance along each; noise scale {noise:.3g})",
             ha="center", va="center", fontsize=10)
    _cells(fig, images, titles, image_shape, top=0.35, ncols=ncols,
           signed=[False] + [True] * len(directions))
    return _save(fig, path)


def plot_kl(model, x, path, y=None):
    """Average KL of q(z_d | x) from N(0, 1) per latent dimension (bars) and each dimension's
    activity Cov_x(E_q[z_d]) (below, log scale) with the active-unit threshold."""
    stats = kl_per_dimension(model, x, y)
    kl = stats["kl"].detach().cpu().numpy()
    activity = stats["activity"].detach().cpu().numpy()
    active = stats["active"].cpu().numpy()
    d = kl.shape[0]
    width = _px(max(6.0, 0.25 * d + 1.5))
    fig = plt.figure(figsize=(width, 5.0), dpi=DPI)
    left, right = 0.9 / width, 1 - 0.25 / width
    ax_kl = fig.add_axes([left, 0.5, right - left, 0.34])
    ax_act = fig.add_axes([left, 0.1, right - left, 0.3], sharex=ax_kl)
    dims = np.arange(d)
    colours = np.where(active, "C0", "0.7")
    ax_kl.bar(dims, kl, color=colours)
    ax_kl.set_ylabel("KL (nats)", fontsize=9)
    against = ("the prior N(0, I)" if stats["standard_prior"]
               else "N(0, 1) for reference: the prior is not N(0, I) and its KL does not split per dimension")
    fig.text(0.5, 0.955, f"KL(q(z_d | x) || N(0, 1)) per dimension, mean over {x.shape[0]} test examples",
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
    return _save(fig, path)


# --------------------------------------------------------------------------- dispatch


def plot_kind(kind: str, model, data, path, *, history=None, metrics=None, compare=None,
              title: str = "", compare_title: str = "", seed: int | None = 0, **options):
    """Draw the figure ``kind`` of ``model`` trained on ``data`` (a :class:`~pyro_vae.data.Dataset`).

    Parameters
    ----------
    kind : str
        A key of :data:`KINDS` that applies to the model (:func:`applicable_kinds`).
    path : str, Path or binary file object
        Where the PNG goes.
    history, metrics : list, dict
        The run's training history and metrics (``curves`` only).
    compare : (model, data) or None
        A second run shown beside the first (``latent`` only), titled ``compare_title``.
    seed : int or None
        Seeds the draws (samples, prior codes) without disturbing torch's global generator.
    options
        Per-kind options named in :data:`KIND_OPTIONS` (``n``, ``method``, ``from_label`` ...).

    Returns
    -------
    What was written to: ``path``.
    """
    check_applicable(kind, model, data)
    unknown = sorted(set(options) - set(KIND_OPTIONS[kind]))
    if unknown:
        accepted = f"it accepts: {', '.join(KIND_OPTIONS[kind])}" if KIND_OPTIONS[kind] else "it takes no options"
        raise ValueError(f"option(s) {', '.join(unknown)} do not apply to figure kind {kind!r}; {accepted}")
    if compare is not None and kind != "latent":
        raise ValueError(f"compare applies to figure kind 'latent' only, got kind {kind!r}")
    x, y = data.split("test")
    shape = data.image_shape
    was_training = model.training
    model.eval()
    try:
        with _seeded(seed, model.device), torch.no_grad():
            if kind == "curves":
                return plot_curves(history or [], path, metrics)
            if kind == "reconstructions":
                return plot_reconstructions(model, x, shape, path, y, **options)
            if kind == "samples":
                n = options.get("n", 64)
                labels = None
                if getattr(model, "needs_labels", False):
                    labels = torch.arange(n, device=x.device) % (data.num_classes or 1)
                return plot_samples(model, shape, path, n=n, y=labels)
            if kind == "manifold":
                return plot_manifold(model, shape, path, x=x, y=y, **options)
            if kind == "latent":
                entries = [(title or type(model).__name__, model, x, y)]
                if compare is not None:
                    other, other_data = compare
                    check_applicable("latent", other, other_data)
                    other.eval()
                    entries.append((compare_title or type(other).__name__, other, *other_data.split("test")))
                return plot_latent(entries, path, seed=seed or 0, **options)
            if kind == "interpolation":
                return plot_interpolation(model, x, shape, path, y, **options)
            if kind == "arithmetic":
                return plot_arithmetic(model, x, y, shape, path, **options)
            if kind == "classes":
                return plot_classes(model, shape, path, data.num_classes, **options)
            if kind == "analogies":
                return plot_analogies(model, x, shape, path, **options)
            if kind == "components":
                return plot_components(model, shape, path, **options)
            if kind == "pca":
                return plot_pca(model, shape, path, **options)
            return plot_kl(model, x, path, y)
    finally:
        model.train(was_training)


def _run_title(run) -> str:
    config = run.config
    extras = [f"{k}={v}" for k, v in config.model_config.items() if k in ("latent_dim", "guide", "prior")]
    name = f"{run.directory.name}: {config.model}"
    return f"{name} ({', '.join(extras)})" if extras else name


def plot_run(run, kind: str, out=None, *, compare=None, seed: int | None = 0, **options):
    """Draw figure ``kind`` of a loaded run (:func:`pyro_vae.runs.load_run`) into ``out``.

    ``out`` defaults to ``<run>/figures/<kind>.png``; ``compare`` is a second loaded run
    (``latent`` only). Returns the path (or file object) written.
    """
    check_choice("figure kind", kind, KINDS)
    out = Path(run.directory) / "figures" / f"{kind}.png" if out is None else out
    metrics = run.metrics()
    return plot_kind(
        kind, run.model, run.data, out, history=metrics.get("history", []), metrics=metrics,
        compare=None if compare is None else (compare.model, compare.data),
        title=_run_title(run), compare_title="" if compare is None else _run_title(compare),
        seed=seed, **options)


def write_run_figures(model, data, history, out_dir, metrics=None) -> list[Path]:
    """Write every applicable figure (PCA for the latent view, never t-SNE) into ``out_dir``.

    A figure that fails is reported with a warning and skipped, so a finished training keeps
    its other figures.
    """
    out_dir = Path(out_dir)
    written = []
    for kind in applicable_kinds(model, data):
        try:
            written.append(plot_kind(kind, model, data, out_dir / f"{kind}.png", history=history, metrics=metrics))
        except Exception as err:  # noqa: BLE001  (one broken figure must not lose the others)
            warnings.warn(f"figure {kind!r} was not written: {type(err).__name__}: {err}", stacklevel=2)
    return written


__all__ = [
    "ACTIVE_THRESHOLD", "DPI", "KINDS", "KIND_OPTIONS", "LATENT_METHODS", "applicable_kinds",
    "attribute_vector", "can_decode", "can_encode", "check_applicable", "class_grid", "decode_mean",
    "encode_means", "image_grid", "interpolate", "kl_per_dimension", "latent_activity", "latent_dim",
    "latent_points", "manifold_codes", "manifold_grid", "most_active_dims", "plot_analogies", "plot_arithmetic",
    "plot_classes", "plot_components", "plot_curves", "plot_interpolation", "plot_kind", "plot_kl",
    "plot_latent", "plot_manifold", "plot_pca", "plot_reconstructions", "plot_run", "plot_samples",
    "principal_directions", "write_run_figures",
]
