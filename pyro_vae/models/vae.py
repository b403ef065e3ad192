"""The variational autoencoder (Kingma & Welling, "Auto-Encoding Variational Bayes", 2013).

Generative story: z ~ p(z) (a :mod:`prior <pyro_vae.models.priors>`, standard normal by
default); x ~ p(x | decoder(z)) (a :mod:`likelihood <pyro_vae.models.likelihoods>`, Bernoulli
by default). The guide is an amortized diagonal Normal q(z | x) from an encoder, or, with
``guide="delta"``, a point mass at the encoder's output: the same model then trains as a
regularized (MAP) autoencoder whose objective is not a bound on log p(x).

Networks: MLPs (``arch="mlp"``), convolutional nets sized from the image shape
(``arch="conv"``, see :mod:`pyro_vae.models.conv`), or the user's own modules
(``encoder=``, ``decoder=``; the contract is in :class:`VAE`).

Example
-------
>>> import pyro, torch
>>> from pyro.infer import SVI, Trace_ELBO
>>> from pyro_vae.models import VAE, VAEConfig
>>> vae = VAE(data_dim=64, config=VAEConfig(latent_dim=2, hidden_dims=(32,)))
>>> svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
>>> loss = svi.step(torch.bernoulli(torch.full((16, 64), 0.3)))
>>> conv = VAE(64, VAEConfig(latent_dim=2, arch="conv", conv_channels=(8, 16)), image_shape=(1, 8, 8))
>>> conv.decode(torch.zeros(3, 2)).shape
torch.Size([3, 64])
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import torch
from torch import nn

from ..errors import check_choice, check_positive_int
from .adapters import (
    DEFAULT_CONV_CHANNELS,
    conv_decoder,
    conv_encoder,
    image_input,
    image_output,
)
from .base import GenerativeModel, data_plate
from .guides import GUIDES
from .likelihoods import build_likelihood
from .nets import MLP, GaussianHead
from .priors import build_prior
from .settings import check_network_settings, set_up_network_model


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
    arch : str
        Built-in networks: ``mlp`` (dense layers of ``hidden_dims``) or ``conv``
        (:mod:`pyro_vae.models.conv`: stride-2 convolutions with ``conv_channels``, then dense
        layers of ``hidden_dims``; needs the model's ``image_shape``).
    conv_channels : tuple of int
        Channels of the conv encoder's stride-2 layers (the decoder mirrors them); read by
        ``arch="conv"`` only.
    activation : str
        Activation of the dense hidden layers, one of :data:`pyro_vae.models.nets.ACTIVATIONS`:
        ``relu`` (default), ``elu``, ``tanh``, or ``gated`` (gated linear units, the
        reference VampPrior code's dense layers).

    Example
    -------
    >>> VAEConfig(arch="conv").conv_channels
    (32, 64)
    >>> VAEConfig(arch="cnn")
    Traceback (most recent call last):
    ...
    ValueError: unknown arch 'cnn'; choose from: conv, mlp
    """

    latent_dim: int = 16
    hidden_dims: tuple[int, ...] = (256,)
    likelihood: str = "bernoulli"
    prior: str = "standard"
    guide: str = "normal"
    obs_scale: float | None = None
    prior_components: int = 10
    arch: str = "mlp"
    conv_channels: tuple[int, ...] = DEFAULT_CONV_CHANNELS
    activation: str = "relu"

    def __post_init__(self):
        check_positive_int("latent_dim", self.latent_dim)
        check_network_settings(self)
        check_choice("guide", self.guide, GUIDES)


class VAE(GenerativeModel):
    """Variational autoencoder with pluggable prior, likelihood, guide family and networks.

    Parameters
    ----------
    data_dim : int
        Number of pixels ``D`` of a flattened example.
    config : VAEConfig
        Network sizes and architecture, and the names of the prior, likelihood and guide.
    num_classes : int or None
        Number of label classes (used by conditional priors).
    image_shape : tuple of int or None
        ``(C, H, W)`` of one example, ``C * H * W = D`` (examples are flattened in that order).
        None: ``(1, 1, D)``, which ``arch="conv"`` refuses.
    encoder, decoder : nn.Module or None
        Networks of your own, used in place of the built-in ones (either or both):

        - ``encoder(images)`` gets ``(N, C, H, W)`` and returns ``(N, 2 * latent_dim)``: the
          guide's location, then its raw scale (made positive by a softplus with a floor);
        - ``decoder(z)`` gets ``(N, latent_dim)`` and returns ``(N, C * P, H, W)`` or
          ``(N, P * D)``, ``P`` being the likelihood's ``params_per_pixel`` (1, or 2 for
          ``gaussian-heteroscedastic``); channels ``[p*C, (p+1)*C)`` hold parameter ``p``
          (location first);
        - in a :class:`~pyro_vae.models.cvae.CVAE` both also get the one-hot labels
          ``(N, num_classes)`` as a second argument: ``encoder(images, onehot)``,
          ``decoder(z, onehot)``.

        Your networks never see leading sample dimensions or flat pixels: the model reshapes,
        folds and unfolds (:mod:`pyro_vae.models.adapters`). Each is tried once when the model
        is built; a wrong output size is a ``ValueError`` naming the network and the shapes.
        :meth:`save` records that the model has them, and
        :func:`pyro_vae.load_model` asks for them again.

    Example
    -------
    >>> import torch
    >>> from torch import nn
    >>> enc = nn.Sequential(nn.Flatten(), nn.Linear(64, 2 * 3))
    >>> dec = nn.Sequential(nn.Linear(3, 64), nn.Unflatten(1, (1, 8, 8)))
    >>> vae = VAE(64, VAEConfig(latent_dim=3), image_shape=(1, 8, 8), encoder=enc, decoder=dec)
    >>> vae.encode(torch.zeros(5, 64)).shape, vae.user_networks
    (torch.Size([5, 3]), ('encoder', 'decoder'))
    """

    pyro_name = "vae"

    def __init__(self, data_dim: int, config: VAEConfig | None = None, num_classes: int | None = None,
                 image_shape: tuple[int, int, int] | None = None, *,
                 encoder: nn.Module | None = None, decoder: nn.Module | None = None):
        super().__init__()
        config = set_up_network_model(self, data_dim, config, VAEConfig, image_shape, encoder=encoder, decoder=decoder)
        self.num_classes = num_classes
        self.guide_family = GUIDES.get(config.guide)(config.latent_dim)
        self.is_bound = self.guide_family.has_density
        # Built in this order (encoder, likelihood, decoder, prior) so that the HVAE with
        # levels=1 draws the same initial weights under the same seed.
        self.encoder = GaussianHead(self._build_encoder(encoder), config.latent_dim)
        self.likelihood = build_likelihood(config.likelihood, data_dim, obs_scale=config.obs_scale)
        self.decoder = self._build_decoder(decoder)
        self.prior = build_prior(
            config.prior, config.latent_dim, num_components=config.prior_components,
            num_classes=num_classes, data_dim=data_dim, encoder=self._encode_params,
        )
        self.needs_labels = self.needs_labels or self.prior.needs_labels
        # With a label-conditioned prior p(z | y) the model scores log p(x | y).
        self.conditional = self.conditional or self.prior.needs_labels

    # The CVAE conditions its networks on one-hot labels of this size.
    _label_dim = 0

    @property
    def _label_dims(self) -> tuple[int, ...]:
        """Sizes of the extra inputs of image-shaped networks (the CVAE's one-hot labels)."""
        return (self._label_dim,) if self._label_dim else ()

    def _build_encoder(self, user: nn.Module | None) -> nn.Module:
        """The encoder's network: flat ``(..., D)`` (+ labels) -> ``(..., 2 * latent_dim)``."""
        out_dim, cfg = 2 * self.config.latent_dim, self.config
        if user is not None:
            return image_input(user, self.image_shape, out_dim, "encoder", self._label_dims)
        if cfg.arch == "conv":
            return conv_encoder(self.image_shape, cfg.conv_channels, cfg.hidden_dims, out_dim, self._label_dim,
                                activation=cfg.activation)
        return MLP(self.data_dim + self._label_dim, cfg.hidden_dims, out_dim, cfg.activation)  # on [x, onehot]

    def _build_decoder(self, user: nn.Module | None) -> nn.Module:
        """The decoder: codes ``(..., latent_dim)`` (+ labels) -> ``(..., D * params_per_pixel)``."""
        cfg, p = self.config, self.likelihood.params_per_pixel
        if user is not None:
            return image_output(user, cfg.latent_dim, self.image_shape, p, "decoder", self._label_dims)
        hidden = tuple(reversed(cfg.hidden_dims))
        if cfg.arch == "conv":
            return conv_decoder(cfg.latent_dim, hidden, self.image_shape, p, cfg.conv_channels, self._label_dim,
                                activation=cfg.activation)
        return MLP(cfg.latent_dim + self._label_dim, hidden, self.data_dim * p, cfg.activation)  # on [z, onehot]

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
        """The guide ``q(z | x)`` (or ``q(z | x, y)``) of each example: the guide family's
        distribution, batch shape ``(batch,)``, event shape ``(latent_dim,)`` (a diagonal
        Normal, a point mass for the autoencoder, a Student-t ...)."""
        return self.guide_family(*self._encode_params(x, y))

    @torch.no_grad()
    def decode(self, z, y=None):
        """Mean image of p(x | z) (or p(x | z, y)) for codes ``z`` ``(..., latent_dim)``: ``(..., D)``."""
        return self.likelihood.mean(self._decode(z, y))

