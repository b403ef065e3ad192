"""Observation models p(x | decoder output): one registry shared by every model.

A likelihood turns the decoder's output ``(..., D * params_per_pixel)`` into a distribution
over the ``D`` pixels, treated as one event (``.to_event(1)``), so ``log_prob`` has the batch
shape ``(...)``. It also checks that data lie in its support before anything is scored.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import pyro.distributions as dist
import torch
from torch import nn

from ..errors import check_choice


class Likelihood(nn.Module, ABC):
    """Base class: maps decoder outputs to a distribution over ``D`` pixels.

    Subclasses set ``params_per_pixel`` (how many decoder outputs each pixel needs) and
    ``discrete`` (whether ``log_prob`` is a probability mass, in nats, or a density).
    """

    params_per_pixel: int = 1
    discrete: bool = True

    def __init__(self, data_dim: int, **options):
        # ``options`` holds settings other likelihoods use (e.g. ``obs_scale``); unused here.
        super().__init__()
        self.data_dim = data_dim

    @abstractmethod
    def forward(self, decoder_out: torch.Tensor) -> dist.TorchDistribution:
        """Return the distribution of ``x``, batch shape ``(...)``, event shape ``(D,)``."""

    @abstractmethod
    def mean(self, decoder_out: torch.Tensor) -> torch.Tensor:
        """Return the mean image ``(..., D)``."""

    @abstractmethod
    def validate(self, x: torch.Tensor, name: str = "x") -> None:
        """Raise ``ValueError`` if ``x`` lies outside this likelihood's support."""


class BernoulliLikelihood(Likelihood):
    """Independent Bernoulli pixels with logits from the decoder; data must be exactly 0 or 1."""

    def forward(self, decoder_out):
        return dist.Bernoulli(logits=decoder_out, validate_args=False).to_event(1)

    def mean(self, decoder_out):
        return torch.sigmoid(decoder_out)

    def validate(self, x, name="x"):
        if not bool(((x == 0) | (x == 1)).all()):
            raise ValueError(
                f"{name}: the bernoulli likelihood needs binary pixels (0 or 1), got values in "
                f"[{x.min().item():.4g}, {x.max().item():.4g}] that are not all 0/1; use "
                f"--binarize dynamic|static or a likelihood for grey levels "
                f"(continuous-bernoulli, gaussian)"
            )


#: Registered likelihoods: name -> class(data_dim, **options).
LIKELIHOODS: dict[str, type[Likelihood]] = {
    "bernoulli": BernoulliLikelihood,
}


def build_likelihood(name: str, data_dim: int, **options) -> Likelihood:
    """Build the registered likelihood ``name`` for ``data_dim`` pixels."""
    return LIKELIHOODS[check_choice("likelihood", name, LIKELIHOODS)](data_dim, **options)
