"""Encoder and decoder networks shared by the models."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import check_choice

#: Activations of the built-in networks' dense hidden layers (the ``activation`` config field).
#: ``gated``: a gated linear unit, ``h = (W x + b) * sigmoid(V x + c)``, the "GatedDense" layer
#: of the VampPrior and Exemplar-VAE reference code (Dauphin et al. 2017 for the unit).
ACTIVATIONS = ("elu", "gated", "relu", "tanh")
_ELEMENTWISE = {"elu": nn.ELU, "relu": nn.ReLU, "tanh": nn.Tanh}


def pre_activation_width(width: int, activation: str) -> int:
    """Outputs the linear map before ``activation`` needs for ``width`` units after it
    (twice as many for ``gated``: values and gates).

    Example
    -------
    >>> pre_activation_width(300, "gated"), pre_activation_width(300, "relu")
    (600, 300)
    """
    return 2 * width if activation == "gated" else width


def activation_layer(activation: str) -> nn.Module:
    """The module applied after a hidden layer's linear map: ``(..., pre_activation_width(w))``
    -> ``(..., w)``.

    Example
    -------
    >>> import torch
    >>> activation_layer("gated")(torch.tensor([[2.0, 0.0]]))  # 2 * sigmoid(0)
    tensor([[1.]])
    """
    if activation == "gated":
        return nn.GLU(dim=-1)  # first half * sigmoid(second half)
    return _ELEMENTWISE[check_choice("activation", activation, ACTIVATIONS)]()


class MLP(nn.Sequential):
    """A multilayer perceptron: hidden layers (a linear map, then ``activation``), then a linear
    output layer.

    ``MLP(64, (400,), 10)`` maps ``(..., 64)`` to ``(..., 10)`` through one hidden layer of 400
    ReLU units; ``activation="gated"`` makes each hidden layer a gated linear unit (see
    :data:`ACTIVATIONS`). With ``relu`` the parameters are drawn in the order they always were,
    so a seed gives the same initial network as before the option existed.

    Example
    -------
    >>> import torch
    >>> MLP(64, (400, 300), 10, activation="gated")(torch.zeros(5, 64)).shape
    torch.Size([5, 10])
    """

    def __init__(self, in_dim: int, hidden_dims: tuple[int, ...], out_dim: int, activation: str = "relu"):
        check_choice("activation", activation, ACTIVATIONS)  # also when there is no hidden layer
        layers: list[nn.Module] = []
        d_in = in_dim
        for width in hidden_dims:
            layers += [nn.Linear(d_in, pre_activation_width(width, activation)), activation_layer(activation)]
            d_in = width
        layers.append(nn.Linear(d_in, out_dim))
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

    def __init__(self, in_dim: int, hidden_dims: tuple[int, ...], latent_dim: int, activation: str = "relu"):
        super().__init__(MLP(in_dim, hidden_dims, 2 * latent_dim, activation), latent_dim)
