"""Guide families: the distribution q(z | x) a VAE's encoder parameterizes.

An encoder maps each example to ``(loc, scale)``, each ``(..., latent_dim)``; a guide family
turns them into a distribution over z with event shape ``(latent_dim,)``. Registered families
(:data:`GUIDES`, the names ``--guide`` accepts):

- ``normal``: a diagonal Normal (the amortized Gaussian of Kingma & Welling);
- ``delta``: a point mass at ``loc``: a regularized autoencoder. It has no density
  (``has_density = False``), so its objective is not a bound on log p(x) and no
  log-likelihood is reported;
- ``studentt``: a diagonal Student-t with one learned degrees-of-freedom per latent
  dimension (heavier tails than the Normal; reparameterized, scored by every objective).

A family is an ``nn.Module`` (it may hold parameters, trained with the model) built as
``cls(latent_dim)``; register a new one with ``@register("guide", NAME)``.

Example
-------
>>> import torch
>>> from pyro_vae.models.guides import GUIDES
>>> q = GUIDES.get("studentt")(2)(torch.zeros(3, 2), torch.ones(3, 2))
>>> q.batch_shape, q.event_shape
(torch.Size([3]), torch.Size([2]))
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from ..registry import Registry
from .distributions import DiagonalNormal


class GuideFamily(nn.Module):
    """Base class of guide families; subclasses implement :meth:`forward`.

    ``has_density``: whether q has a density (False for a point mass: no bound, no
    importance weights). ``diagonal_normal``: whether q is N(loc, scale^2) per coordinate, so
    closed-form diagnostics (KL per dimension) apply.
    """

    has_density = True
    diagonal_normal = False

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim

    def forward(self, loc: torch.Tensor, scale: torch.Tensor):  # pragma: no cover - abstract
        """q(z | x) from the encoder's ``loc`` and ``scale``, event shape ``(latent_dim,)``."""
        raise NotImplementedError


class NormalGuide(GuideFamily):
    diagonal_normal = True

    def forward(self, loc, scale):
        return DiagonalNormal(loc, scale)


class DeltaGuide(GuideFamily):
    has_density = False

    def forward(self, loc, scale):
        return dist.Delta(loc).to_event(1)


class StudentTGuide(GuideFamily):
    """Diagonal Student-t; degrees of freedom ``2 + softplus(raw)`` (> 2: finite variance)."""

    def __init__(self, latent_dim: int):
        super().__init__(latent_dim)
        # softplus(raw) = 3 at start: df = 5, a moderately heavy tail
        self.raw_df = nn.Parameter(torch.full((latent_dim,), 3.0).expm1().log())

    @property
    def df(self) -> torch.Tensor:
        return 2.0 + F.softplus(self.raw_df)

    def forward(self, loc, scale):
        return dist.StudentT(self.df.to(loc.dtype), loc, scale).to_event(1)


#: Registered guide families: name -> class(latent_dim).
GUIDES: Registry = Registry("guide", {"normal": NormalGuide, "delta": DeltaGuide,
                                      "studentt": StudentTGuide})
