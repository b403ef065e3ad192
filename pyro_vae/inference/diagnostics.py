"""Latent diagnostics: KL per dimension, active units, a linear probe of the codes.

:func:`latent_diagnostics` is the ``test.latent`` object of a run's metrics.json: per latent
layer, the closed-form KL of the guide to the prior per dimension where both are diagonal
Normals, the active units (Burda et al., 2015) and the accuracy of a logistic-regression probe
trained on the codes of training images.

Example
-------
>>> import torch
>>> from pyro_vae.inference.diagnostics import kl_to_standard_normal
>>> kl_to_standard_normal(torch.zeros(3), torch.ones(3))
tensor([0., 0., 0.])
"""

from __future__ import annotations

import torch

from ..models.base import _model_float, labels_for
from ..models.distributions import normal_marginals

#: A latent dimension is active when the variance over x of its posterior mean exceeds this
#: (Burda et al., 2015).
ACTIVE_UNIT_THRESHOLD = 0.01


def kl_to_standard_normal(loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """KL(N(loc, scale^2) || N(0, 1)) per coordinate, in closed form; the shape of ``loc``."""
    return 0.5 * (loc ** 2 + scale ** 2 - 1) - torch.log(scale)


def kl_normal(loc: torch.Tensor, scale: torch.Tensor, prior_loc: torch.Tensor,
              prior_scale: torch.Tensor) -> torch.Tensor:
    """KL(N(loc, scale^2) || N(prior_loc, prior_scale^2)) per coordinate, in closed form."""
    return (torch.log(prior_scale / scale)
            + (scale ** 2 + (loc - prior_loc) ** 2) / (2 * prior_scale ** 2) - 0.5)


def _layer_diagnostics(layers, active_threshold: float) -> list[dict]:
    """Per layer of a hierarchical model (``layer_posteriors``: bottom first): its level, size,
    active units, and the mean over x of its KL term in nats (None where the prior has no
    closed form: a non-Gaussian top prior)."""
    out = []
    for level, layer in enumerate(layers, start=1):
        loc = layer["loc"]  # (n, d_level)
        variance = loc.var(0) if loc.shape[0] > 1 else torch.zeros_like(loc[0])
        kl = None
        if layer.get("prior_loc") is not None:
            kl = kl_normal(loc, layer["scale"], layer["prior_loc"], layer["prior_scale"]).sum(-1).mean().item()
        out.append({"level": level, "latent_dim": int(loc.shape[-1]),
                    "active_units": int((variance > active_threshold).sum()), "kl": kl})
    return out


@torch.no_grad()
def latent_diagnostics(model, x, y=None, *, x_train=None, y_train=None,
                       active_threshold: float = ACTIVE_UNIT_THRESHOLD, max_train: int = 10000) -> dict:
    """How a model uses its latent code, on data ``x``.

    Returns a dict with (where the model supports it):

    - ``kl_per_dim``: the average over ``x`` of KL(q(z_d | x) || N(0, 1)) per dimension, in
      nats (against the standard normal whatever the prior, so it is comparable across runs);
    - ``active_units``: the number of dimensions with ``Cov_x(E_q[z_d | x]) > active_threshold``
      (Burda et al. 2015), and ``latent_variance`` (that covariance per dimension);
    - ``classifier_accuracy``: test accuracy of a logistic regression (scikit-learn) trained on
      the latent means of ``x_train`` and scored on those of ``x``, where labels exist. Pass
      ``x_train`` binarized as ``x`` was, so the probe is trained and tested on the same kind
      of input. It is None, with the reason in ``classifier_note``, for a model whose guide
      reads the label (``guide_reads_labels``, the CVAE): its codes would carry the class
      itself, and the accuracy would measure the label, not the representation.
    - ``layers`` (hierarchical models with ``layer_posteriors``, the HVAE): per layer, bottom
      first, ``level``, ``latent_dim``, ``active_units`` and ``kl``, the mean over ``x`` of
      KL(q(z_l | x, z_{l+1}) || p(z_l | z_{l+1})) along the guide's mean path (nats; None where
      the top prior has no closed form).

    Needs ``model.posterior(x, y)`` (a distribution over codes) for the first two and ``model.encode``
    for the last; entries a model cannot give are left out.
    """
    placement = _model_float(model)
    if placement is not None:  # the inputs on the model's device and in its dtype
        x = x.to(*placement)
        x_train = None if x_train is None else x_train.to(*placement)
    if y_train is not None and x_train is not None and bool((y_train < 0).any()):
        keep = y_train >= 0  # unlabelled rows (y = -1) cannot train the probe
        x_train, y_train = x_train[keep.to(x_train.device)], y_train[keep]
    labels_in = labels_for(model, y)
    result: dict = {}
    if hasattr(model, "posterior") and getattr(model, "has_latents", True):
        loc, scale = normal_marginals(model.posterior(x, labels_in))  # (n, latent_dim) each; scale may be None
        if scale is not None and bool((scale > 0).all()):
            kl = kl_to_standard_normal(loc, scale)
            result["kl_per_dim"] = kl.mean(0).tolist()
        variance = loc.var(0) if loc.shape[0] > 1 else torch.zeros_like(loc[0])
        result["latent_variance"] = variance.tolist()
        result["active_units"] = int((variance > active_threshold).sum())
        result["latent_dim"] = int(loc.shape[-1])
    if callable(getattr(model, "layer_posteriors", None)):  # a hierarchy: each layer's use of its code
        result["layers"] = _layer_diagnostics(model.layer_posteriors(x, labels_in), active_threshold)
    if y is not None and x_train is not None and y_train is not None:
        if getattr(model, "guide_reads_labels", False):
            result["classifier_accuracy"] = None
            result["classifier_note"] = ("not computed: the guide q(z|x,c) reads the label, so "
                                         "its codes would reveal the class they were given")
            return result
        if int(torch.unique(y_train[:max_train]).numel()) < 2:
            result["classifier_accuracy"] = None
            result["classifier_note"] = "not computed: the probe's training labels hold a single class"
            return result
        try:
            train_codes = model.encode(x_train[:max_train], labels_for(model, y_train[:max_train]))
            test_codes = model.encode(x, labels_in)
        except NotImplementedError:
            return result
        from sklearn.linear_model import LogisticRegression  # noqa: PLC0415
        from sklearn.pipeline import make_pipeline  # noqa: PLC0415
        from sklearn.preprocessing import StandardScaler  # noqa: PLC0415

        classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        classifier.fit(train_codes.cpu().double().numpy(), y_train[:max_train].cpu().numpy())
        result["classifier_accuracy"] = float(
            classifier.score(test_codes.cpu().double().numpy(), y.cpu().numpy()))
    return result
