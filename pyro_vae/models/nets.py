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


class GaussianHead(nn.Module):
    """Diagonal-Normal parameters from any network: ``net(*inputs) -> (loc, scale)``, each
    ``(..., latent_dim)``.

    ``net`` returns ``(..., 2 * latent_dim)``: the first half is the location, the second goes
    through a softplus with a small floor, which keeps the scale positive and its gradient
    bounded (an ``exp`` of a log-variance overflows early in training).

    Example
    -------
    >>> import torch
    >>> loc, scale = GaussianHead(torch.nn.Linear(5, 4), latent_dim=2)(torch.zeros(3, 5))
    >>> loc.shape, bool((scale > 0).all())
    (torch.Size([3, 2]), True)
    """

    def __init__(self, net: nn.Module, latent_dim: int):
        super().__init__()
        self.net = net
        self.latent_dim = latent_dim

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, raw_scale = self.net(*inputs).split(self.latent_dim, dim=-1)
        return loc, F.softplus(raw_scale) + 1e-5


class GaussianEncoder(GaussianHead):
    """Amortized diagonal-Normal parameters from an MLP: ``x -> (loc, scale)``, each
    ``(..., latent_dim)`` (a :class:`GaussianHead` on ``MLP(in_dim, hidden_dims, 2 * latent_dim)``).

    Example
    -------
    >>> import torch
    >>> GaussianEncoder(64, (32,), 2)(torch.zeros(3, 64))[0].shape
    torch.Size([3, 2])
    """

    def __init__(self, in_dim: int, hidden_dims: tuple[int, ...], latent_dim: int):
        super().__init__(MLP(in_dim, hidden_dims, 2 * latent_dim), latent_dim)
