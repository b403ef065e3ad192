"""A hierarchical VAE: ``levels`` stochastic layers of Gaussian latent variables.

Generative story, top to bottom (level 1 is next to the data, level L on top)::

    z_L ~ p(z_L)                                  the prior plug-in (standard, mog, vamp, flow ...)
    z_l ~ N(mu_l(z_{l+1}), diag sigma_l(z_{l+1})^2)   for l = L-1, ..., 1 (MLP conditionals)
    x   ~ p(x | decoder(z_1))                     the likelihood plug-in

Guide: **top-down**, as in the two-layer HVAE of Tomczak & Welling ("VAE with a VampPrior",
AISTATS 2018, section 3.2), generalized to L levels::

    q(z_L | x) prod_{l<L} q(z_l | x, z_{l+1})

(every factor a diagonal Normal; ``q(z_L | x)`` is the VAE's encoder, each ``q(z_l | x,
z_{l+1})`` an MLP fed ``x`` and the code drawn above it). Why this order rather than the
bottom-up ``q(z_1 | x) q(z_2 | z_1) ...``:

- the top layer's posterior ``q(z_L | x)`` is an amortized diagonal Normal of ``x`` alone, so
  the VampPrior on the top layer is exactly the paper's ``p(z_L) = 1/K sum_k q(z_L | u_k)``
  (with a bottom-up guide ``q(z_L | x)`` is a marginal over the layers below, with no
  closed form), and ``encode``/``posterior`` are that exact Normal, so the KL and active-unit
  diagnostics of the top layer are closed forms, as for the VAE;
- the guide draws the sites in the model's order (z_L first), which is what Pyro's
  ``TraceMeanField_ELBO`` (``--objective meanfield``) needs to take each layer's KL in closed
  form, ``KL(q(z_l | x, z_{l+1}) || p(z_l | z_{l+1}))`` at the guide's ``z_{l+1}``;
- with ``levels=1`` the model and the guide are the VAE's, network for network (same module
  names, so a VAE's ``state_dict`` loads into it and gives the same importance weights).

Sizes: ``latent_dims`` lists the sizes bottom first, top last (``(32, 16)``: z_1 has 32
dimensions, z_2 16). Left empty it is derived from ``latent_dim`` (the top layer's size,
what ``--latent-dim`` sets) by doubling the size at each level down, as the Ladder VAE's
sizes shrink going up: ``levels=2, latent_dim=16`` gives ``(32, 16)``.

Codes: ``encode(x)`` and ``posterior(x)`` are the *top* layer's (``latent_dim`` wide): the
prior acts there, and figures of codes (latent, manifold, interpolation, arithmetic) show
it; ``decode(z_L)`` follows the conditional means down to the pixels.
``reconstruct(x)`` follows the guide's means down (``z_L`` mean, then ``z_{L-1}`` mean given
it, ..., ``z_1``), so the lower layers' detail shows. ``layer_posteriors(x)`` gives every
layer's posterior and conditional prior along that path (per-layer KL and active units in
:func:`pyro_vae.inference.evaluate.latent_diagnostics`).

Every sample site (``z1`` ... ``zL``, ``x``) lies inside the data plate, and the networks
act on the last dimension, so the importance plate's leading sample dimension passes through
them by broadcasting (``(K, batch, d)`` in, ``(K, batch, d')`` out; ``x`` enters each guide
layer once per example, not once per sample); conv networks fold it into the batch.

Networks: with ``arch="conv"`` the networks that read or write pixels are convolutional
(:mod:`pyro_vae.models.conv`): the top encoder ``q(z_L | x)``, the decoder ``p(x | z_1)`` and
the pixel branch of each ``q(z_l | x, z_{l+1})`` (conv features, then a linear map, added to
the code's); the conditionals ``p(z_l | z_{l+1})`` between codes stay MLPs.

Example
-------
>>> import pyro, torch
>>> from pyro.infer import SVI, Trace_ELBO
>>> from pyro_vae.models.hvae import HVAE, HVAEConfig
>>> hvae = HVAE(data_dim=64, config=HVAEConfig(levels=2, latent_dims=(8, 4), hidden_dims=(32,)))
>>> svi = SVI(hvae.model, hvae.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
>>> loss = svi.step(torch.bernoulli(torch.full((16, 64), 0.3)))
>>> hvae.encode(torch.zeros(3, 64)).shape  # the top layer's code
torch.Size([3, 4])
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import check_int_tuple, check_positive_int
from .adapters import (
    DEFAULT_CONV_CHANNELS,
    conv_decoder,
    conv_encoder,
    conv_features,
    image_input,
    image_output,
)
from .base import GenerativeModel, data_plate
from .distributions import DiagonalNormal
from .likelihoods import build_likelihood
from .nets import MLP, GaussianEncoder, GaussianHead, activation_layer, pre_activation_width
from .priors import StandardNormalPrior, build_prior
from .settings import check_network_settings, set_up_network_model

#: Top-layer size when neither ``latent_dim`` nor ``latent_dims`` is given.
DEFAULT_LATENT_DIM = 16
#: The most stochastic layers accepted (derived sizes double per level: 16 * 2**31 is near the
#: int64 limit, and a huge count must not be expanded into a tuple before it is refused).
MAX_LEVELS = 32


@dataclass
class HVAEConfig:
    """Settings of :class:`HVAE`.

    Parameters
    ----------
    levels : int
        Number of stochastic layers L (1 is the VAE).
    latent_dim : int or None
        Size of the top layer z_L (the code the prior, ``encode`` and figures use); None:
        ``latent_dims[-1]``, or 16 when ``latent_dims`` is empty too.
    latent_dims : tuple of int
        Sizes of z_1, ..., z_L, bottom first (top last); its length must be ``levels``.
        Empty: ``latent_dim * 2 ** (L - l)`` for level l (``(32, 16)`` for L = 2, 16 on top).
    hidden_dims : tuple of int
        Hidden sizes of every network: the encoders (``q(z_L | x)``, ``q(z_l | x, z_{l+1})``),
        the conditionals ``p(z_l | z_{l+1})``; the decoder ``p(x | z_1)`` mirrors them.
    likelihood : str
        A name in :data:`pyro_vae.models.likelihoods.LIKELIHOODS`.
    prior : str
        The top layer's prior, a name in :data:`pyro_vae.models.priors.PRIORS`.
    obs_scale : float or None
        Fixed standard deviation of a Gaussian likelihood (None: learned, where supported).
    prior_components : int
        Number of components of mixture-type priors (pseudo-inputs of ``vamp``).
    arch : str
        ``mlp`` or ``conv``: the networks that read or write pixels (see the module docstring).
    conv_channels : tuple of int
        Channels of the stride-2 conv layers (read by ``arch="conv"`` only).
    activation : str
        Activation of the dense hidden layers, one of :data:`pyro_vae.models.nets.ACTIVATIONS`:
        ``relu`` (default), ``elu``, ``tanh``, or ``gated`` (gated linear units, the
        reference VampPrior code's dense layers).

    Example
    -------
    >>> HVAEConfig(levels=2, latent_dim=4).latent_dims
    (8, 4)
    """

    levels: int = 2
    latent_dim: int | None = None
    latent_dims: tuple[int, ...] = ()
    hidden_dims: tuple[int, ...] = (256,)
    likelihood: str = "bernoulli"
    prior: str = "standard"
    obs_scale: float | None = None
    prior_components: int = 10
    arch: str = "mlp"
    conv_channels: tuple[int, ...] = DEFAULT_CONV_CHANNELS
    activation: str = "relu"

    def __post_init__(self):
        check_positive_int("levels", self.levels)
        if self.levels > MAX_LEVELS:
            raise ValueError(f"levels must be at most {MAX_LEVELS}, got {self.levels}")
        self.latent_dims = check_int_tuple("latent_dims", self.latent_dims)
        if self.latent_dim is not None:
            check_positive_int("latent_dim", self.latent_dim)
        if self.latent_dims:
            if len(self.latent_dims) != self.levels:
                raise ValueError(
                    f"latent_dims {list(self.latent_dims)} has {len(self.latent_dims)} sizes but "
                    f"levels is {self.levels}; give one size per level (bottom first, top last)")
            if self.latent_dim is not None and self.latent_dim != self.latent_dims[-1]:
                raise ValueError(
                    f"latent_dim {self.latent_dim} must equal the top level's size "
                    f"latent_dims[-1] = {self.latent_dims[-1]} (or be left out)")
        else:
            top = DEFAULT_LATENT_DIM if self.latent_dim is None else self.latent_dim
            self.latent_dims = check_int_tuple("latent_dims", tuple(
                top * 2 ** (self.levels - level) for level in range(1, self.levels + 1)))
        self.latent_dim = self.latent_dims[-1]
        check_network_settings(self)


class _JointEncoder(nn.Module):
    """``q(z_l | x, z_{l+1})``'s ``(loc, scale)``, each ``(..., batch, latent_dim)``.

    An MLP on the concatenation ``[x, z_above]``, with its first layer split in two so that
    ``x`` ``(batch, D)`` is multiplied once per example and the code ``(..., batch, d_above)``
    (leading importance-sample dimensions included) is added by broadcasting. Scales as in
    :class:`~pyro_vae.models.nets.GaussianEncoder`: softplus plus a small floor. ``x_net``
    (built as ``x_net(width)``) replaces the linear map of ``x``: the conv pixel branch.
    """

    def __init__(self, data_dim: int, above_dim: int, hidden_dims: tuple[int, ...], latent_dim: int,
                 x_net=None, activation: str = "relu"):
        super().__init__()
        width = hidden_dims[0] if hidden_dims else 2 * latent_dim
        summed = pre_activation_width(width, activation) if hidden_dims else width  # the split layer's outputs
        self.from_x = nn.Linear(data_dim, summed) if x_net is None else x_net(summed)
        self.from_z = nn.Linear(above_dim, summed, bias=False)
        self.net = (nn.Sequential(activation_layer(activation), MLP(width, hidden_dims[1:], 2 * latent_dim, activation))
                    if hidden_dims else nn.Identity())
        self.latent_dim = latent_dim

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.from_x(x) + self.from_z(z)  # (batch, w) + (..., batch, w)
        loc, raw_scale = self.net(h).split(self.latent_dim, dim=-1)
        return loc, F.softplus(raw_scale) + 1e-5


class HVAE(GenerativeModel):
    """Hierarchical VAE with ``levels`` Gaussian layers, a top-layer prior plug-in and a
    likelihood plug-in; the guide is top-down (see the module docstring).

    Parameters
    ----------
    data_dim : int
        Number of pixels ``D`` of a flattened example.
    config : HVAEConfig
    num_classes : int or None
        Number of label classes (used by conditional priors on the top layer).
    image_shape : tuple of int or None
        ``(C, H, W)`` of one example; None: ``(1, 1, D)``, which ``arch="conv"`` refuses.
    encoder, decoder : nn.Module or None
        Networks of your own in place of the built-in ones, under the VAE's contract
        (:class:`~pyro_vae.models.vae.VAE`): ``encoder(images (N, C, H, W))`` returns
        ``(N, 2 * latent_dims[-1])``, q(z_L | x)'s location then raw scale;
        ``decoder(z_1 (N, latent_dims[0]))`` returns ``(N, C * P, H, W)`` or ``(N, P * D)``.
        The other networks stay built in (``arch``): q(z_l | x, z_{l+1}) reads the pixels
        through its own branch, and the conditionals p(z_l | z_{l+1}) are MLPs.

    Modules: ``encoder`` q(z_L | x), ``decoder`` p(x | z_1), ``prior`` p(z_L), ``likelihood``
    (the VAE's names), ``conditionals[l - 1]`` p(z_l | z_{l+1}) and ``guide_nets[l - 1]``
    q(z_l | x, z_{l+1}) for l = 1 .. L-1.
    """

    pyro_name = "hvae"

    def __init__(self, data_dim: int, config: HVAEConfig | None = None, num_classes: int | None = None,
                 image_shape: tuple[int, int, int] | None = None, *,
                 encoder: nn.Module | None = None, decoder: nn.Module | None = None):
        super().__init__()
        config = set_up_network_model(self, data_dim, config, HVAEConfig, image_shape, encoder=encoder,
                                      decoder=decoder)
        self.num_classes = num_classes
        conv = config.arch == "conv"
        self.levels = config.levels
        self.latent_dims = config.latent_dims  # bottom first
        self.latent_dim = config.latent_dims[-1]  # the top layer: the model's code
        dims, hidden = config.latent_dims, config.hidden_dims
        # Built in the VAE's order (encoder, likelihood, decoder, prior), so that a model with
        # levels=1 draws the same initial weights as a VAE under the same seed.
        shape, channels = self.image_shape, config.conv_channels
        act = config.activation
        if encoder is not None:
            self.encoder = GaussianHead(image_input(encoder, shape, 2 * self.latent_dim, "encoder"), self.latent_dim)
        elif conv:
            self.encoder = GaussianHead(conv_encoder(shape, channels, hidden, 2 * self.latent_dim, activation=act),
                                        self.latent_dim)
        else:
            self.encoder = GaussianEncoder(data_dim, hidden, self.latent_dim, act)
        self.likelihood = build_likelihood(config.likelihood, data_dim, obs_scale=config.obs_scale)
        p = self.likelihood.params_per_pixel
        if decoder is not None:
            self.decoder = image_output(decoder, dims[0], shape, p, "decoder")
        elif conv:
            self.decoder = conv_decoder(dims[0], tuple(reversed(hidden)), shape, p, channels, activation=act)
        else:
            self.decoder = MLP(dims[0], tuple(reversed(hidden)), data_dim * p, act)
        self.prior = build_prior(
            config.prior, self.latent_dim, num_components=config.prior_components,
            num_classes=num_classes, data_dim=data_dim, encoder=self._encode_top,
        )
        self.conditionals = nn.ModuleList(
            GaussianEncoder(dims[i + 1], hidden, dims[i], act) for i in range(self.levels - 1))
        x_net = (lambda width: conv_features(shape, channels, width)) if conv else None  # noqa: E731
        self.guide_nets = nn.ModuleList(
            _JointEncoder(data_dim, dims[i + 1], hidden, dims[i], x_net, act) for i in range(self.levels - 1))
        self.needs_labels = self.needs_labels or self.prior.needs_labels
        # With a label-conditioned top prior p(z_L | y) the model scores log p(x | y).
        self.conditional = self.conditional or self.prior.needs_labels

    def _encode_top(self, x, y=None):
        """``(loc, scale)`` of q(z_L | x), each ``(..., latent_dim)`` (also the VampPrior's encoder)."""
        return self.encoder(x)

    def model(self, x, y=None):
        self._register()
        prior = self.prior(y)
        with data_plate(x):
            z = pyro.sample(f"z{self.levels}", prior)  # (batch, d_L), or (K, batch, d_L)
            for level in range(self.levels - 1, 0, -1):
                loc, scale = self.conditionals[level - 1](z)  # (..., batch, d_level)
                z = pyro.sample(f"z{level}", DiagonalNormal(loc, scale))
            pyro.sample("x", self.likelihood(self.decoder(z)), obs=x)

    def guide(self, x, y=None):
        self._register()
        with data_plate(x):
            loc, scale = self._encode_top(x)  # (batch, d_L)
            z = pyro.sample(f"z{self.levels}", DiagonalNormal(loc, scale))
            for level in range(self.levels - 1, 0, -1):
                loc, scale = self.guide_nets[level - 1](x, z)  # (..., batch, d_level)
                z = pyro.sample(f"z{level}", DiagonalNormal(loc, scale))

    @torch.no_grad()
    def sample(self, n, y=None, *, mean=True):
        check_positive_int("n", n)
        prior = self.prior(y)
        # An unconditional prior has batch shape (); a label-conditioned one has (len(y),).
        z = prior.sample((n,)) if prior.batch_shape == () else prior.sample()  # (n, d_L)
        for level in range(self.levels - 1, 0, -1):  # ancestral sampling down to z_1
            z = DiagonalNormal(*self.conditionals[level - 1](z)).sample()
        out = self.decoder(z)
        return self.likelihood.mean(out) if mean else self.likelihood(out).sample()

    @torch.no_grad()
    def layer_posteriors(self, x, y=None) -> list[dict]:
        """Each layer's guide and conditional prior along the guide's mean path, bottom first.

        Entry ``l - 1`` is ``{"loc", "scale"}`` of ``q(z_l | x, E[z_{l+1}])`` and ``{"prior_loc",
        "prior_scale"}`` of ``p(z_l | E[z_{l+1}])``, each ``(batch, d_l)``; for the top layer
        ``q(z_L | x)`` and, under the standard prior, N(0, I) (else ``None``: no closed form).
        """
        loc, scale = self._encode_top(x)
        standard = isinstance(self.prior, StandardNormalPrior)
        layers = [{"loc": loc, "scale": scale,
                   "prior_loc": torch.zeros_like(loc) if standard else None,
                   "prior_scale": torch.ones_like(scale) if standard else None}]
        z = loc
        for level in range(self.levels - 1, 0, -1):
            prior_loc, prior_scale = self.conditionals[level - 1](z)
            loc, scale = self.guide_nets[level - 1](x, z)
            layers.append({"loc": loc, "scale": scale, "prior_loc": prior_loc, "prior_scale": prior_scale})
            z = loc
        return layers[::-1]

    @torch.no_grad()
    def reconstruct(self, x, y=None):
        z_1 = self.layer_posteriors(x, y)[0]["loc"]  # the guide's mean path down to z_1
        return self.likelihood.mean(self.decoder(z_1))

    @torch.no_grad()
    def encode(self, x, y=None):
        """The top layer's posterior mean ``E_q[z_L | x]``, ``(batch, latent_dim)``."""
        return self._encode_top(x)[0]

    @torch.no_grad()
    def posterior(self, x, y=None):
        """``q(z_L | x)``, the top layer's guide (the layer ``encode`` gives): a diagonal Normal,
        batch shape ``(batch,)``, event shape ``(latent_dim,)``."""
        return DiagonalNormal(*self._encode_top(x))

    @torch.no_grad()
    def decode(self, z, y=None):
        """Mean image for top codes ``z`` ``(..., latent_dim)``, through the conditional means: ``(..., D)``."""
        for level in range(self.levels - 1, 0, -1):
            z = self.conditionals[level - 1](z)[0]
        return self.likelihood.mean(self.decoder(z))
