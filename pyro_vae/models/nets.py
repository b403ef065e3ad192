"""Encoder and decoder networks shared by the models."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class MLP(nn.Sequential):
    """A multilayer perceptron: Linear layers with an activation between them (none at the end).

    ``MLP(64, (400,), 10)`` maps ``(..., 64)`` to ``(..., 10)`` through one hidden layer of 400.
    """

    def __init__(self, in_dim: int, hidden_dims: tuple[int, ...], out_dim: int,
                 activation: type[nn.Module] = nn.ReLU):
        dims = (in_dim, *hidden_dims, out_dim)
        layers: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(d_in, d_out))
            if i < len(dims) - 2:
                layers.append(activation())
        super().__init__(*layers)


class GaussianEncoder(nn.Module):
    """Amortized diagonal-Normal parameters: ``x -> (loc, scale)``, each ``(..., latent_dim)``.

    The scale goes through a softplus with a small floor, which keeps it positive and its
    gradient bounded (an ``exp`` of a log-variance overflows early in training).
    """

    def __init__(self, in_dim: int, hidden_dims: tuple[int, ...], latent_dim: int):
        super().__init__()
        self.net = MLP(in_dim, hidden_dims, 2 * latent_dim)
        self.latent_dim = latent_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, raw_scale = self.net(x).split(self.latent_dim, dim=-1)
        return loc, F.softplus(raw_scale) + 1e-5
