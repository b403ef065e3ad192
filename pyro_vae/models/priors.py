"""Priors over the latent code: one small class each, one registry.

A prior is a module whose ``forward(y=None)`` returns a distribution over ``z`` with event
shape ``(latent_dim,)``; its batch shape is ``()`` or, for priors conditioned on the label,
``(batch,)``. Models sample ``z`` from it inside their data plate, so any prior written this
way (in the library or in a user's script) works with every latent-variable model.

Registered priors (:data:`PRIORS`, the names ``--prior`` accepts):

- ``standard``: N(0, I);
- ``mog``: a learnable mixture of Gaussians;
- ``vamp``: the VampPrior, a mixture of the guide's posteriors at learned pseudo-inputs;
- ``flow``: a standard normal pushed through a learnable normalizing flow (affine coupling
  layers, RealNVP-style, by default);
- ``conditional``: N(mu(y), sigma(y)) for label-conditioned models (the CVAE).

Whether the KL term is computed analytically or by sampling is the objective's business
(``--objective meanfield`` uses a closed form where one is registered for the pair of
distributions and samples otherwise), not the prior's.

Adding a prior: subclass :class:`Prior`, accept ``(latent_dim, **context)`` and take from
``context`` what you need (``num_components``, ``num_classes``, ``data_dim``, ``encoder``),
then register it with ``@register("prior", "laplace")`` (:mod:`pyro_vae.registry`) or
``PRIORS["laplace"] = LaplacePrior``; ``VAEConfig(prior="laplace")`` and ``--prior laplace``
then build it (see ``examples/custom_prior.py``, a plug-in file).

Example
-------
>>> import torch
>>> from pyro_vae.models.priors import StandardNormalPrior, build_prior
>>> StandardNormalPrior(latent_dim=2)().log_prob(torch.zeros(2)).item()  # -log(2 pi)
-1.8378770351409912
>>> build_prior("mog", 2, num_components=3)().event_shape
torch.Size([2])
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import check_choice, check_positive_int
from ..registry import Registry
from .distributions import StandardNormal
from .mixture_density import diagonal_normal_mixture

# Scales are softplus(raw) + _MIN_SCALE: positive, with a bounded gradient (as in the encoder).
_MIN_SCALE = 1e-5
# softplus(_SOFTPLUS_ONE) + _MIN_SCALE == 1: raw scales initialized here start at unit scale.
_SOFTPLUS_ONE = math.log(math.expm1(1.0 - _MIN_SCALE))


_OLD_NAME = "{} is now called needs_labels (as on models); the old name will be removed"


class Prior(nn.Module, ABC):
    """Base class of priors p(z) (or p(z | y)) with event shape ``(latent_dim,)``.

    Subclasses build their parameters in ``__init__(latent_dim, **context)`` (ignoring context
    keys they do not use) and return a fresh distribution from ``forward``, so that it follows
    the module's device and dtype.
    """

    #: Whether ``forward`` uses the label ``y`` (conditional priors need it); the model
    #: contract's name, as on models.
    needs_labels: bool = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # A prior written for the old name ``needs_label`` (singular) still works, and warns:
        # a class value or property becomes ``needs_labels`` (the property below then answers
        # for the old name again). stacklevel 3: past ABCMeta, to the class statement.
        if "needs_label" in cls.__dict__:
            warnings.warn(_OLD_NAME.format(f"{cls.__name__}.needs_label"), DeprecationWarning, stacklevel=3)
            old = cls.__dict__["needs_label"]
            if isinstance(old, property):
                cls.needs_labels = property(lambda self, getter=old.fget: bool(getter(self)))
            else:
                cls.needs_labels = bool(old)
            delattr(cls, "needs_label")

    @property
    def needs_label(self) -> bool:
        """The old name of :attr:`needs_labels` (reading or setting it warns)."""
        warnings.warn(_OLD_NAME.format("Prior.needs_label"), DeprecationWarning, stacklevel=2)
        return self.needs_labels

    @needs_label.setter
    def needs_label(self, value) -> None:
        warnings.warn(_OLD_NAME.format("Prior.needs_label"), DeprecationWarning, stacklevel=2)
        self.needs_labels = bool(value)

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = check_positive_int("latent_dim", latent_dim)

    @abstractmethod
    def forward(self, y: torch.Tensor | None = None) -> dist.TorchDistribution:
        """Return p(z) (or p(z | y)) with event shape ``(latent_dim,)``."""


class StandardNormalPrior(Prior):
    """N(0, I). Its zeros live in a buffer so the distribution follows the module's device/dtype."""

    def __init__(self, latent_dim: int, **unused):
        super().__init__(latent_dim)
        self.register_buffer("loc", torch.zeros(latent_dim))

    def forward(self, y=None):
        return StandardNormal(self.loc)


class MixtureOfGaussiansPrior(Prior):
    """A learnable mixture of K diagonal Gaussians: ``sum_k pi_k N(z; mu_k, diag(sigma_k^2))``.

    Weights start uniform, means at standard-normal draws (so the components start apart)
    and scales at 1. ``forward`` returns a
    :class:`~pyro_vae.models.mixture_density.DiagonalNormalMixture`, which scores codes by
    matrix products (``mixture_form = "broadcast"`` on an instance returns torch's
    ``MixtureSameFamily`` instead: the reference, far slower for many codes).

    Parameters
    ----------
    latent_dim : int
    num_components : int
        Number of mixture components K.

    Example
    -------
    >>> prior = MixtureOfGaussiansPrior(latent_dim=2, num_components=5)
    >>> prior().log_prob(torch.zeros(3, 2)).shape
    torch.Size([3])
    """

    #: ``"expansion"`` (matrix products) or ``"broadcast"`` (torch's MixtureSameFamily).
    mixture_form: str = "expansion"

    def __init__(self, latent_dim: int, num_components: int = 10, **unused):
        super().__init__(latent_dim)
        k = check_positive_int("num_components", num_components)
        self.logits = nn.Parameter(torch.zeros(k))  # (K,) mixture weights, softmax-normalized
        self.locs = nn.Parameter(torch.randn(k, latent_dim))  # (K, latent_dim)
        self.raw_scales = nn.Parameter(torch.full((k, latent_dim), _SOFTPLUS_ONE))

    @property
    def scales(self) -> torch.Tensor:
        """Component standard deviations, ``(K, latent_dim)``."""
        return F.softplus(self.raw_scales) + _MIN_SCALE

    def forward(self, y=None):
        return diagonal_normal_mixture(self.logits, self.locs, self.scales, self.mixture_form)


class VampPrior(Prior):
    """The VampPrior (Tomczak & Welling, "VAE with a VampPrior", 2018).

    ``p(z) = 1/K sum_k q(z | u_k)``: the guide's own posterior, averaged over K learned
    pseudo-inputs ``u_k``, which approximates the aggregate posterior the model is fitted to.
    Pseudo-inputs live in (0, 1) (a sigmoid of free parameters, like the pixels of the data).

    With a label-conditioned guide (the CVAE's ``encoder(x, y)``), ``forward(y)`` returns
    ``p(z | y) = 1/K sum_k q(z | u_k, y)`` with batch shape ``(batch,)``; the pseudo-inputs
    are encoded once per class (K * num_classes encoder rows) and looked up by label.
    The mixture is a :class:`~pyro_vae.models.mixture_density.DiagonalNormalMixture`: codes
    are scored against the K components by matrix products, so an importance-sampled
    evaluation with many pseudo-inputs costs about what it costs with the standard prior
    (``mixture_form = "broadcast"`` on an instance gives torch's ``MixtureSameFamily``).

    Parameters
    ----------
    latent_dim : int
    num_components : int
        Number of pseudo-inputs K.
    data_dim : int
        Size of a pseudo-input (the number of pixels D).
    encoder : callable
        The guide's ``x -> (loc, scale)`` (``(x, y) -> (loc, scale)`` for conditional guides).
        It is kept as a plain reference, not a submodule: its weights belong to the model
        and appear once in the model's ``state_dict``.
    num_classes : int or None
        Number of label classes; needed only when ``forward`` is given labels.
    """

    #: ``"expansion"`` (matrix products) or ``"broadcast"`` (torch's MixtureSameFamily).
    mixture_form: str = "expansion"

    def __init__(self, latent_dim: int, num_components: int = 10, data_dim: int | None = None,
                 encoder: Callable | None = None, num_classes: int | None = None, **unused):
        super().__init__(latent_dim)
        if data_dim is None or encoder is None:
            raise ValueError(
                "prior 'vamp' needs the model's encoder and data_dim; it works with models that "
                f"have an amortized guide (vae, cvae), got data_dim={data_dim!r}, encoder={encoder!r}"
            )
        k = check_positive_int("num_components", num_components)
        check_positive_int("data_dim", data_dim)
        # sigmoid(N(0, 1)) spreads the pseudo-inputs over grey levels around 0.5.
        self.raw_pseudo_inputs = nn.Parameter(torch.randn(k, data_dim))  # (K, D)
        # object.__setattr__ bypasses nn.Module's registration, even if encoder is a Module.
        object.__setattr__(self, "encoder", encoder)
        self.num_classes = num_classes

    @property
    def pseudo_inputs(self) -> torch.Tensor:
        """The pseudo-inputs ``u``, ``(K, D)``, in (0, 1)."""
        return torch.sigmoid(self.raw_pseudo_inputs)

    def forward(self, y=None):
        u = self.pseudo_inputs  # (K, D)
        k = u.shape[0]
        if y is None:
            loc, scale = self.encoder(u)  # (K, latent_dim) each
            weights = u.new_zeros(k)  # (K,) uniform mixture
        else:
            if self.num_classes is None:
                raise ValueError("prior 'vamp' was given labels y but built without num_classes")
            c = self.num_classes
            labels = torch.arange(c, device=u.device).repeat_interleave(k)  # (C*K,) 0..0 1..1 ...
            loc, scale = self.encoder(u.repeat(c, 1), labels)  # (C*K, latent_dim) each
            loc = loc.reshape(c, k, -1)[y]  # (batch, K, latent_dim)
            scale = scale.reshape(c, k, -1)[y]
            weights = u.new_zeros(y.shape[0], k)  # (batch, K)
        return diagonal_normal_mixture(weights, loc, scale, self.mixture_form)


#: Flow layers :class:`FlowPrior` accepts: name -> Pyro helper ``(latent_dim, hidden_dims=...)``.
#: Cost of one log-density and its gradient for a (128, 8) batch with four layers, on one CPU
#: core: affine coupling ~3 ms, spline coupling ~28 ms, spline autoregressive ~100 ms. (Pyro
#: 1.9's affine *autoregressive* layer is left out: its inverse, used to sample, is float32 only.)
FLOW_LAYERS = {
    "affine_coupling": T.affine_coupling,
    "spline_coupling": T.spline_coupling,
    "spline_autoregressive": T.spline_autoregressive,
}


class _UncachedTransformedDistribution(dist.TransformedDistribution):
    """``TransformedDistribution`` whose ``log_prob`` never reuses a transform's cached pair.

    Pyro's flow layers remember their last ``(input, output)`` by tensor identity. Scoring the
    same tensor again after the parameters changed (an optimizer step, ``load_state_dict``)
    would return the old output (stale under ``no_grad``, a freed graph otherwise); a copy of
    the value gives every call a fresh identity.
    """

    def log_prob(self, value):
        return super().log_prob(value.clone())


class FlowPrior(Prior):
    """A normalizing-flow prior: N(0, I) pushed through learnable invertible maps.

    The layers are Pyro's transforms (:data:`FLOW_LAYERS`; by default affine coupling layers
    as in RealNVP), each preceded by a fixed random permutation of the coordinates so that
    every coordinate is transformed and conditions the others; when ``latent_dim`` is 1 they
    are element-wise splines. They are used in the inverse direction: scoring ``log p(z)``,
    done in every training step, runs each layer's forward pass, which is one network pass
    for every kind (autoregressive layers are slow to invert, and only sampling inverts).
    Layers are submodules (trained, moved and cast with the model); the base distribution's
    loc/scale and the permutations are buffers, so the distribution follows device and dtype.

    Parameters
    ----------
    latent_dim : int
    num_layers : int
        Number of flow layers.
    layer : str
        A name in :data:`FLOW_LAYERS`.
    hidden_dims : tuple of int or None
        Hidden sizes of each layer's network (None: Pyro's default for that layer).

    Example
    -------
    >>> prior = FlowPrior(latent_dim=2, num_layers=2, layer="spline_coupling")
    >>> prior().sample((4,)).shape
    torch.Size([4, 2])
    """

    def __init__(self, latent_dim: int, num_layers: int = 4, layer: str = "affine_coupling",
                 hidden_dims: tuple[int, ...] | None = None, **unused):
        super().__init__(latent_dim)
        check_positive_int("num_layers", num_layers)
        make_layer = FLOW_LAYERS[check_choice("layer", layer, FLOW_LAYERS)]
        self.register_buffer("base_loc", torch.zeros(latent_dim))
        self.register_buffer("base_scale", torch.ones(latent_dim))
        self.register_buffer("permutations", torch.stack([torch.randperm(latent_dim)
                                                          for _ in range(num_layers)]))
        hidden = None if hidden_dims is None else list(hidden_dims)
        if latent_dim == 1:  # nothing to split or to be autoregressive over
            layers = (T.spline(1) for _ in range(num_layers))
        else:
            layers = (make_layer(latent_dim, hidden_dims=hidden) for _ in range(num_layers))
        self.layers = nn.ModuleList(layers)

    def forward(self, y=None):
        base = dist.Normal(self.base_loc, self.base_scale).to_event(1)
        steps = []  # sampling map u -> z: permute, then the layer's inverse, layer after layer
        for layer, permutation in zip(self.layers, self.permutations):
            steps += [T.Permute(permutation), layer.inv]
        return _UncachedTransformedDistribution(base, steps)


class ConditionalNormalPrior(Prior):
    """``p(z | y) = N(mu(y), diag(sigma(y)^2))`` for label-conditioned models (the CVAE).

    ``mu`` and ``sigma`` come from a linear map of the one-hot label (one learned mean and
    scale per class), initialized so that every class starts at N(0, I). ``forward(y)``
    takes integer labels of shape ``(batch,)`` and returns batch shape ``(batch,)``.

    Parameters
    ----------
    latent_dim : int
    num_classes : int
        Number of label classes.

    Example
    -------
    >>> prior = ConditionalNormalPrior(latent_dim=2, num_classes=10)
    >>> prior(torch.tensor([3, 7])).batch_shape
    torch.Size([2])
    """

    needs_labels = True

    def __init__(self, latent_dim: int, num_classes: int | None = None, **unused):
        super().__init__(latent_dim)
        if num_classes is None:
            raise ValueError(
                "prior 'conditional' needs num_classes (a labelled data set); use it with a "
                "label-conditioned model such as --model cvae"
            )
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.net = nn.Linear(num_classes, 2 * latent_dim)  # one-hot label -> (loc, raw scale)
        with torch.no_grad():
            self.net.weight.zero_()
            self.net.bias[:latent_dim] = 0.0
            self.net.bias[latent_dim:] = _SOFTPLUS_ONE

    def forward(self, y=None):
        if y is None:
            raise ValueError(
                "prior 'conditional' models p(z | y) and needs the labels y; use it with a "
                "label-conditioned model such as --model cvae"
            )
        if y.dtype.is_floating_point or y.dtype == torch.bool:
            raise TypeError(f"prior 'conditional' expects integer class labels, got dtype {y.dtype}")
        one_hot = F.one_hot(y.long(), self.num_classes).to(self.net.weight.dtype)  # (batch, C)
        loc, raw_scale = self.net(one_hot).split(self.latent_dim, dim=-1)  # (batch, latent_dim) each
        return dist.Normal(loc, F.softplus(raw_scale) + _MIN_SCALE).to_event(1)


#: Registered priors: name -> class(latent_dim, **context). ``context`` carries what some priors
#: need (``num_components``, ``num_classes``, ``data_dim``, ``encoder``); each takes what it uses.
#: A user's prior becomes available everywhere (``VAEConfig(prior=...)``) once added here.
PRIORS: Registry = Registry("prior", {
    "standard": StandardNormalPrior,
    "mog": MixtureOfGaussiansPrior,
    "vamp": VampPrior,
    "flow": FlowPrior,
    "conditional": ConditionalNormalPrior,
})


def build_prior(name: str, latent_dim: int, **context) -> Prior:
    """Build the registered prior ``name``; ``context`` is passed on as keyword arguments.

    Raises ``ValueError`` for an unknown name (listing the registered ones).
    """
    return PRIORS[check_choice("prior", name, PRIORS)](latent_dim, **context)
