"""Priors over the latent code: one small class each, one registry.

A prior is a module whose ``forward(y=None)`` returns a distribution over ``z`` with event
shape ``(latent_dim,)``; its batch shape is ``()`` or, for priors conditioned on the label,
``(batch,)``. Models sample ``z`` from it inside their data plate, so any prior written this
way (in the library or in a user's script) works with every latent-variable model.

Example
-------
>>> import torch
>>> from pyro_vae.models.priors import StandardNormalPrior
>>> StandardNormalPrior(latent_dim=2)().log_prob(torch.zeros(2)).item()  # -log(2 pi)
-1.8378770351409912
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import pyro.distributions as dist
import torch
from torch import nn

from ..errors import check_choice


class Prior(nn.Module, ABC):
    """Base class of priors p(z) (or p(z | y)) with event shape ``(latent_dim,)``."""

    #: Whether ``forward`` uses the label ``y`` (conditional priors need it).
    needs_label: bool = False

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim

    @abstractmethod
    def forward(self, y: torch.Tensor | None = None) -> dist.TorchDistribution:
        """Return p(z) (or p(z | y)) with event shape ``(latent_dim,)``."""


class StandardNormalPrior(Prior):
    """N(0, I). Its zeros live in a buffer so the distribution follows the module's device/dtype."""

    def __init__(self, latent_dim: int, **unused):
        super().__init__(latent_dim)
        self.register_buffer("loc", torch.zeros(latent_dim))

    def forward(self, y=None):
        return dist.Normal(self.loc, torch.ones_like(self.loc)).to_event(1)


#: Registered priors: name -> class(latent_dim, **context). ``context`` carries what some priors
#: need (number of classes, the encoder, data dimension); each takes what it uses.
PRIORS: dict[str, type[Prior]] = {
    "standard": StandardNormalPrior,
}


def build_prior(name: str, latent_dim: int, **context) -> Prior:
    """Build the registered prior ``name``; ``context`` is passed on as keyword arguments."""
    return PRIORS[check_choice("prior", name, PRIORS)](latent_dim, **context)
