"""The variational autoencoder (Kingma & Welling, "Auto-Encoding Variational Bayes", 2013).

Generative story: z ~ p(z) (a :mod:`prior <pyro_vae.models.priors>`, standard normal by
default); x ~ p(x | decoder(z)) (a :mod:`likelihood <pyro_vae.models.likelihoods>`, Bernoulli
by default). The guide is an amortized diagonal Normal q(z | x) from an MLP encoder, or, with
``guide="delta"``, a point mass at the encoder's output: the same model then trains as a
regularized (MAP) autoencoder whose objective is not a bound on log p(x).

Example
-------
>>> import pyro, torch
>>> from pyro.infer import SVI, Trace_ELBO
>>> from pyro_vae.models import VAE, VAEConfig
>>> vae = VAE(data_dim=64, config=VAEConfig(latent_dim=2, hidden_dims=(32,)))
>>> svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
>>> loss = svi.step(torch.bernoulli(torch.full((16, 64), 0.3)))
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import torch

from ..errors import check_choice, check_instance, check_int_tuple, check_positive_float, check_positive_int
from .base import GenerativeModel, data_plate
from .guides import GUIDES
from .likelihoods import LIKELIHOODS, build_likelihood, check_likelihood_options
from .nets import MLP, GaussianEncoder
from .priors import PRIORS, build_prior


@dataclass
class VAEConfig:
    """Settings of :class:`VAE`.

    Parameters
    ----------
    latent_dim : int
        Size of z.
    hidden_dims : tuple of int
        Hidden layer sizes of the encoder; the decoder mirrors them.
    likelihood : str
        A name in :data:`pyro_vae.models.likelihoods.LIKELIHOODS`.
    prior : str
        A name in :data:`pyro_vae.models.priors.PRIORS`.
    guide : str
        A guide family in :data:`pyro_vae.models.guides.GUIDES`: ``normal`` (amortized
        diagonal Normal), ``delta`` (point mass: an autoencoder), ``studentt``.
    obs_scale : float or None
        Fixed standard deviation of a Gaussian likelihood (None: learned, where supported).
    prior_components : int
        Number of components of mixture-type priors.
    """

    latent_dim: int = 16
    hidden_dims: tuple[int, ...] = (256,)
    likelihood: str = "bernoulli"
    prior: str = "standard"
    guide: str = "normal"
    obs_scale: float | None = None
    prior_components: int = 10

    def __post_init__(self):
        check_positive_int("latent_dim", self.latent_dim)
        self.hidden_dims = check_int_tuple("hidden_dims", self.hidden_dims)
        check_choice("likelihood", self.likelihood, LIKELIHOODS)
        check_choice("prior", self.prior, PRIORS)
        check_choice("guide", self.guide, GUIDES)
        if self.obs_scale is not None:
            check_positive_float("obs_scale", self.obs_scale)
        check_likelihood_options(self.likelihood, obs_scale=self.obs_scale)
        check_positive_int("prior_components", self.prior_components)


class VAE(GenerativeModel):
    """Variational autoencoder with pluggable prior, likelihood and guide family.

    Parameters
    ----------
    data_dim : int
        Number of pixels ``D`` of a flattened example.
    config : VAEConfig
        Network sizes and the names of the prior, likelihood and guide.
    num_classes : int or None
        Number of label classes (used by conditional priors).
    """

    pyro_name = "vae"

    def __init__(self, data_dim: int, config: VAEConfig | None = None, num_classes: int | None = None):
        super().__init__()
        config = VAEConfig() if config is None else config
        check_instance("config", config, VAEConfig, "build one with VAEConfig(...)")
        self.config = config
        self.data_dim = check_positive_int("data_dim", data_dim)
        self.num_classes = num_classes
        self.guide_family = GUIDES.get(config.guide)(config.latent_dim)
        self.is_bound = self.guide_family.has_density
        self.encoder = GaussianEncoder(self._encoder_in_dim, config.hidden_dims, config.latent_dim)
        self.likelihood = build_likelihood(config.likelihood, data_dim, obs_scale=config.obs_scale)
        out_dim = data_dim * self.likelihood.params_per_pixel
        self.decoder = MLP(self._decoder_in_dim, tuple(reversed(config.hidden_dims)), out_dim)
        self.prior = build_prior(
            config.prior, config.latent_dim, num_components=config.prior_components,
            num_classes=num_classes, data_dim=data_dim, encoder=self._encode_params,
        )
        self.needs_labels = self.needs_labels or self.prior.needs_label
        # With a label-conditioned prior p(z | y) the model scores log p(x | y).
        self.conditional = self.conditional or self.prior.needs_label

    # Subclasses that condition on labels (the CVAE) widen these inputs.
    @property
    def _encoder_in_dim(self) -> int:
        return self.data_dim

    @property
    def _decoder_in_dim(self) -> int:
        return self.config.latent_dim

    def _encode_params(self, x, y=None):
        """``(loc, scale)`` of q(z | x), each ``(..., latent_dim)``."""
        return self.encoder(x)

    def _decode(self, z, y=None):
        """Decoder output for codes ``z`` ``(..., latent_dim)`` -> ``(..., D * params_per_pixel)``."""
        return self.decoder(z)

    def model(self, x, y=None):
        self._register()
        prior = self.prior(y)
        with data_plate(x):
            z = pyro.sample("z", prior)  # (batch, latent_dim), or (K, batch, latent_dim)
            pyro.sample("x", self.likelihood(self._decode(z, y)), obs=x)

    def guide(self, x, y=None):
        self._register()
        with data_plate(x):
            loc, scale = self._encode_params(x, y)
            pyro.sample("z", self.guide_family(loc, scale))

    @torch.no_grad()
    def sample(self, n, y=None, *, mean=True):
        check_positive_int("n", n)
        prior = self.prior(y)
        # An unconditional prior has batch shape (); a label-conditioned one has (len(y),).
        z = prior.sample((n,)) if prior.batch_shape == () else prior.sample()  # (n, latent_dim)
        out = self._decode(z, y)
        return self.likelihood.mean(out) if mean else self.likelihood(out).sample()

    @torch.no_grad()
    def reconstruct(self, x, y=None):
        return self.decode(self.encode(x, y), y)

    @torch.no_grad()
    def encode(self, x, y=None):
        return self._encode_params(x, y)[0]

    @torch.no_grad()
    def posterior(self, x, y=None):
        """The guide's ``(loc, scale)``, each ``(batch, latent_dim)``; scale 0 for a point mass and
        None for a family that is not a diagonal Normal (no closed-form KL diagnostics)."""
        loc, scale = self._encode_params(x, y)
        if not self.guide_family.has_density:
            return loc, torch.zeros_like(scale)
        return loc, (scale if self.guide_family.diagonal_normal else None)

    @torch.no_grad()
    def decode(self, z, y=None):
        """Mean image of p(x | z) (or p(x | z, y)) for codes ``z`` ``(..., latent_dim)``: ``(..., D)``."""
        return self.likelihood.mean(self._decode(z, y))

