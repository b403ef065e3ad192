"""The numbers behind the figures, in torch alone: codes, decoded images, statistics.

Nothing here draws, so each function can be checked against a closed form without looking at
pixels. What a model can do is read from its declared contract (public methods and the class
attributes of :class:`pyro_vae.models.base.GenerativeModel`), never from private attributes.

Example
-------
>>> from pyro_vae.models import VAE, VAEConfig
>>> vae = VAE(12, VAEConfig(latent_dim=2, hidden_dims=(8,)))
>>> as_images(vae.decode(manifold_codes(3, 2)), (3, 2, 2)).shape
torch.Size([9, 3, 2, 2])
"""

from __future__ import annotations

import contextlib
import math

import torch

from ..errors import check_positive_int
from ..inference.evaluate import ACTIVE_UNIT_THRESHOLD, kl_to_standard_normal
from ..models.base import GenerativeModel, labels_for
from ..models.distributions import normal_marginals

#: A latent dimension is active when Cov_x(E_q[z_d | x]) exceeds this: the evaluation's own
#: threshold (:data:`pyro_vae.inference.evaluate.ACTIVE_UNIT_THRESHOLD`), under the plots' name.
ACTIVE_THRESHOLD = ACTIVE_UNIT_THRESHOLD

#: Channel counts a figure can draw: grey (1) or colour (3, drawn as RGB).
DRAWABLE_CHANNELS = (1, 3)


# --------------------------------------------------------------------------- images


def check_image_shape(image_shape) -> tuple[int, int, int]:
    """``image_shape`` as a ``(C, H, W)`` tuple of positive ints with C = 1 or 3, else ``ValueError``."""
    shape = tuple(image_shape) if isinstance(image_shape, (tuple, list, torch.Size)) else None
    if (shape is None or len(shape) != 3
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)):
        raise ValueError(f"image_shape must be three positive ints (C, H, W), got {image_shape!r}")
    if shape[0] not in DRAWABLE_CHANNELS:
        raise ValueError(f"image_shape {shape} has {shape[0]} channels; figures draw 1 (grey) or 3 (colour)")
    return shape


def as_images(x: torch.Tensor, image_shape) -> torch.Tensor:
    """A batch of images as ``(n, C, H, W)``: a flat ``(n, C*H*W)`` batch is reshaped, an
    ``(n, C, H, W)`` one checked. ``ValueError`` when the sizes do not match ``image_shape``.

    Example
    -------
    >>> as_images(torch.zeros(2, 48), (3, 4, 4)).shape
    torch.Size([2, 3, 4, 4])
    """
    c, h, w = check_image_shape(image_shape)
    if x.dim() == 2 and x.shape[1] == c * h * w:
        return x.reshape(-1, c, h, w)
    if x.dim() == 4 and tuple(x.shape[1:]) == (c, h, w):
        return x
    raise ValueError(f"images of shape {tuple(x.shape)} do not match image_shape {(c, h, w)}: "
                     f"expected (n, {c * h * w}) or (n, {c}, {h}, {w})")


def flat(x: torch.Tensor) -> torch.Tensor:
    """``(n, ...)`` -> ``(n, D)``: images side by side in one tensor whatever their layout."""
    return x.reshape(x.shape[0], -1)


# --------------------------------------------------------------------------- what a model can do


def _overrides(model, name: str) -> bool:
    """Whether ``model`` implements ``name`` beyond the base class's NotImplementedError stub."""
    method = getattr(type(model), name, None)
    return callable(method) and method is not getattr(GenerativeModel, name, None)


def can_decode(model) -> bool:
    """Whether codes ``z`` can be turned into mean images: the model has ``decode(z, y)``."""
    return callable(getattr(model, "decode", None))


def can_encode(model) -> bool:
    """Whether the model maps images to codes (it implements ``encode``; for a mixture the code
    is its responsibilities, so figures of a continuous code also ask for :func:`latent_dim`)."""
    return _overrides(model, "encode")


def can_reconstruct(model) -> bool:
    """Whether the model implements ``reconstruct(x, y)``."""
    return _overrides(model, "reconstruct")


def is_conditional(model) -> bool:
    """Whether the model needs a label for everything it does (``needs_labels``)."""
    return bool(getattr(model, "needs_labels", False))


def decodes_any_class(model) -> bool:
    """Whether the model decodes p(x | z, y) for a chosen class: a label-conditioned model,
    or one that sums the label out of its likelihood (M2, ``sums_out_labels``)."""
    return is_conditional(model) or bool(getattr(model, "sums_out_labels", False))


def has_posterior_scale(model) -> bool:
    """Whether q(z | x) is a diagonal Normal with a scale, so the KL per dimension is defined:
    the model has latents, a ``posterior`` and a density (``is_bound``, not a point mass), and
    a declared guide family (a VAE's ``guide_family``), if any, is a diagonal Normal."""
    family = getattr(model, "guide_family", None)
    return (callable(getattr(model, "posterior", None)) and bool(getattr(model, "is_bound", False))
            and bool(getattr(model, "has_latents", False))
            and (family is None or bool(getattr(family, "diagonal_normal", False))))


def latent_dim(model) -> int | None:
    """Size of the model's continuous code (``latent_dim``, or its config's), or None when it has none."""
    for owner in (model, getattr(model, "config", None)):
        value = getattr(owner, "latent_dim", None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


# --------------------------------------------------------------------------- codes


@torch.no_grad()
def decode_mean(model, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Mean images ``(n, D)`` of p(x | z) (p(x | z, y) for conditional models) for ``z`` ``(n, d)``."""
    if not can_decode(model):
        raise ValueError(f"{type(model).__name__} has no decode(z, y) from codes to images")
    return flat(model.decode(z, y))


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


@torch.no_grad()
def prior_codes(model, n: int, y: torch.Tensor | None = None) -> torch.Tensor:
    """``n`` codes ``(n, latent_dim)`` drawn from the model's prior (``prior(y)``), or from
    N(0, I) for a model without a ``prior`` module (probabilistic PCA's prior)."""
    check_positive_int("n", n)
    prior = getattr(model, "prior", None)
    if callable(prior):
        # An unconditional prior has batch shape (); a label-conditioned one (len(y),).
        draw = prior(y) if y is not None and _prior_reads_labels(prior) else prior()
        return draw.sample((n,)) if draw.batch_shape == () else draw.sample()
    like = next(model.parameters())
    return torch.randn(n, latent_dim(model), dtype=like.dtype, device=like.device)


def _prior_reads_labels(prior) -> bool:
    return bool(getattr(prior, "needs_labels", False))


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

    Example
    -------
    >>> manifold_codes(2, 3, dims=(2, 0)).shape
    torch.Size([4, 3])
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
def interpolate_codes(model, z_a: torch.Tensor, z_b: torch.Tensor, steps: int = 10,
                      y: torch.Tensor | None = None) -> torch.Tensor:
    """Decoded means along the lines from codes ``z_a`` to ``z_b`` (each ``(p, d)``): ``(p, steps, D)``.

    Step ``t`` decodes ``(1 - t) z_a + t z_b`` with ``t`` evenly spaced in [0, 1]; the ends are
    the two codes themselves. Conditional models get one label per pair in ``y`` ``(p,)``.
    """
    check_positive_int("steps", steps)
    t = torch.linspace(0, 1, steps, dtype=z_a.dtype, device=z_a.device)[None, :, None]
    z = (1 - t) * z_a[:, None] + t * z_b[:, None]  # (p, steps, d)
    z[:, 0], z[:, -1] = z_a, z_b  # exact end points, not 0 * z_b + 1 * z_a rounded
    p, d = z_a.shape
    y_rep = None if y is None else y[:, None].expand(p, steps).reshape(-1)
    return decode_mean(model, z.reshape(p * steps, d), y_rep).reshape(p, steps, -1)


@torch.no_grad()
def interpolate(model, x_a, x_b, steps: int = 10, y: torch.Tensor | None = None) -> torch.Tensor:
    """Decoded means along the line between the codes of ``x_a`` and ``x_b`` (each ``(p, D)``).

    Returns ``(p, steps, D)``; the first and last steps are the reconstructions of ``x_a`` and
    ``x_b``. Conditional models get the labels ``y`` ``(p,)`` of the pairs (both ends share a label);
    M2 decodes in the class it predicts for ``x_a`` and never reads ``y``.
    """
    check_positive_int("steps", steps)
    if getattr(model, "sums_out_labels", False):
        # M2: decode in the class it predicts for x_a, never the true label (as its codes do)
        y = model.classify(x_a).argmax(-1)
    else:
        y = labels_for(model, y)
    return interpolate_codes(model, model.encode(x_a, y), model.encode(x_b, y), steps, y)


def class_indices(y, label: int, name: str) -> torch.Tensor:
    """Indices of the examples of ``label`` in ``y``; ``ValueError`` naming ``name`` if none."""
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
    return (z[class_indices(y, to_label, "to_label")].mean(0)
            - z[class_indices(y, from_label, "from_label")].mean(0))


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
    if callable(prior) and _prior_reads_labels(prior):
        rows = labels[:, None].expand(-1, n_cols)
        z = prior(rows.reshape(-1)).sample().reshape(len(labels), n_cols, d)
        codes = z.reshape(-1, d)
    else:
        z = prior_codes(model, n_cols)  # (n_cols, d)
        codes = z.repeat(len(labels), 1)  # (rows * n_cols, d): the same codes in every row
    images = decode_mean(model, codes, labels.repeat_interleave(n_cols))
    return images.reshape(len(labels), n_cols, -1), z


# --------------------------------------------------------------------------- statistics


@torch.no_grad()
def posterior_loc_scale(model, x, y=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loc, scale)`` of q(z | x)'s per-coordinate Normal marginals, each ``(n, d)`` (see
    :func:`~pyro_vae.models.distributions.normal_marginals`)."""
    return normal_marginals(model.posterior(x, labels_for(model, y)))


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
    loc, scale = posterior_loc_scale(model, x, y)  # (n, d) each
    if scale is None:
        raise ValueError(f"{type(model).__name__}'s posterior q(z | x) has no Normal marginals to take a KL of")
    kl = kl_to_standard_normal(loc, scale)
    # One example has no spread: activity 0 (as latent_diagnostics reports), not var's NaN.
    activity = loc.var(dim=0) if loc.shape[0] > 1 else torch.zeros_like(loc[0])
    return {"kl": kl.mean(0), "activity": activity, "active": activity > ACTIVE_THRESHOLD,
            "standard_prior": isinstance(getattr(model, "prior", None), StandardNormalPrior)}


@torch.no_grad()
def principal_directions(model):
    """PPCA's principal directions and the variance along each, sorted by decreasing variance.

    With ``W = U S V^T`` (thin SVD of the ``(D, d)`` loadings), the directions are the columns
    of ``U`` (returned as rows, ``(d, D)``, orthonormal, each signed so that its largest entry is
    positive) and the model's variance along direction ``i`` is ``S_i^2 + noise_scale^2``.
    """
    loadings = getattr(model, "loadings", None)
    if not (isinstance(loadings, torch.Tensor) and loadings.dim() == 2):
        raise ValueError(f"{type(model).__name__} has no (D, d) loadings: not a probabilistic PCA")
    u, s, _ = torch.linalg.svd(loadings, full_matrices=False)  # (D, d), (d,)
    directions = u.T
    sign = torch.sign(directions.gather(1, directions.abs().argmax(1, keepdim=True)))
    noise = torch.as_tensor(getattr(model, "noise_scale", 0.0), dtype=s.dtype, device=s.device)
    return directions * sign, s.pow(2) + noise.pow(2)


def recorded_activity(metrics: dict | None) -> list[float] | None:
    """The evaluation's per-dimension activity Cov_x(E_q[z_d | x]) from a run's metrics.json
    (``test.latent.latent_variance``), or None when it was not recorded."""
    latent = ((metrics or {}).get("test") or {}).get("latent") or {}
    values = latent.get("latent_variance")
    if isinstance(values, list) and all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        return [float(v) for v in values]
    return None


def recorded_kl(model, metrics: dict | None) -> dict | None:
    """:func:`kl_per_dimension`'s result as the evaluation recorded it in a run's metrics.json
    (``test.latent``: ``kl_per_dim`` and ``latent_variance``, one per latent dimension of
    ``model``), or None when it did not: the KL figure of a run loaded without its data."""
    from ..models.priors import StandardNormalPrior  # noqa: PLC0415

    latent = ((metrics or {}).get("test") or {}).get("latent") or {}
    kl, activity = latent.get("kl_per_dim"), recorded_activity(metrics)
    d = latent_dim(model)
    if not (isinstance(kl, list) and activity is not None and len(kl) == len(activity) == d
            and all(isinstance(v, (int, float)) and math.isfinite(v) for v in kl)):
        return None
    activity = torch.tensor(activity, dtype=torch.float64)
    return {"kl": torch.tensor(kl, dtype=torch.float64), "activity": activity,
            "active": activity > ACTIVE_THRESHOLD,
            "standard_prior": isinstance(getattr(model, "prior", None), StandardNormalPrior)}


@contextlib.contextmanager
def seeded(seed: int | None, device=None):
    """Run with torch's generators seeded, restoring their state afterwards (None: no seeding)."""
    if seed is None:
        yield
        return
    devices = [device] if device is not None and torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
