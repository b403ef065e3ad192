"""Observation models p(x | decoder output): one registry shared by every model.

A likelihood turns the decoder's output ``(..., D * params_per_pixel)`` into a distribution
over the ``D`` pixels, treated as one event (``.to_event(1)``), so ``log_prob`` has the batch
shape ``(...)``: ``(batch,)`` for a VAE, ``(K, batch)`` under the evaluation's plate of
importance samples, ``(K,)`` for the ``K`` components of a mixture. It also checks that data
lie in its support before anything is scored.

- ``bernoulli``: Bernoulli(logits), one output per pixel, data exactly 0 or 1;
- ``continuous-bernoulli``: the normalized continuous Bernoulli(logits), one output per
  pixel, grey levels in [0, 1];
- ``gaussian``: Normal(loc, sigma_d), one output per pixel; sigma is the fixed ``obs_scale``
  when given, else learned per pixel (shared by all examples);
- ``gaussian-heteroscedastic``: Normal(loc, sigma), two outputs per pixel: the decoder
  also gives each pixel's scale, per example.

Only ``bernoulli`` is a probability mass (``discrete = True``); the others are densities, so
their log-likelihoods are not comparable with a Bernoulli model's (nor with each other's
across data sets scaled differently).

Example
-------
>>> import torch
>>> from pyro_vae.models.likelihoods import build_likelihood
>>> lik = build_likelihood("gaussian", data_dim=3, obs_scale=1.0)
>>> lik(torch.zeros(2, 3)).log_prob(torch.zeros(2, 3)).shape  # batch (2,), event (3,)
torch.Size([2])
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import pyro.distributions as dist
import torch
from torch import nn
from torch.distributions import constraints
from torch.nn import functional as F

from ..errors import check_choice, check_positive_float, check_positive_int
from ..registry import Registry
from .distributions import BernoulliPixels


class Likelihood(nn.Module, ABC):
    """Base class: maps decoder outputs to a distribution over ``D`` pixels.

    Subclasses set ``name`` (the registry name, used in messages), ``params_per_pixel`` (how
    many decoder outputs each pixel needs), ``discrete`` (whether ``log_prob`` is a
    probability mass, in nats, or a density) and ``options`` (the keyword options of
    :func:`build_likelihood` they use). Callers pass every option, ``None`` meaning "not
    given"; an option given a value that this likelihood does not use is refused.
    """

    name: str = "likelihood"
    params_per_pixel: int = 1
    discrete: bool = True
    options: tuple[str, ...] = ()

    def __init__(self, data_dim: int, **options):
        super().__init__()
        self.data_dim = check_positive_int("data_dim", data_dim)
        check_likelihood_options(self.name, **options)

    @abstractmethod
    def forward(self, decoder_out: torch.Tensor) -> dist.TorchDistribution:
        """Return the distribution of ``x``, batch shape ``(...)``, event shape ``(D,)``."""

    @abstractmethod
    def mean(self, decoder_out: torch.Tensor) -> torch.Tensor:
        """Return the mean image ``(..., D)``."""

    #: ``(low, high)`` bounds of the values this likelihood scores, or None (any real value):
    #: read from the extremes of streamed training batches after the first.
    value_range: tuple[float, float] | None = None

    @abstractmethod
    def validate(self, x: torch.Tensor, name: str = "x") -> None:
        """Raise ``ValueError`` if ``x`` lies outside this likelihood's support."""

    def _check_finite(self, x: torch.Tensor, name: str) -> None:
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name}: the {self.name} likelihood needs finite values, got NaN or Inf")


def _value_range(x: torch.Tensor) -> str:
    return f"[{x.min().item():.4g}, {x.max().item():.4g}]"


# --------------------------------------------------------------------------- Bernoulli


class BernoulliLikelihood(Likelihood):
    """Independent Bernoulli pixels with logits from the decoder; data must be exactly 0 or 1.

    Example
    -------
    >>> import torch
    >>> lik = BernoulliLikelihood(data_dim=2)
    >>> round(lik(torch.zeros(2)).log_prob(torch.tensor([0.0, 1.0])).item(), 4)  # 2 log(1/2)
    -1.3863
    """

    name = "bernoulli"
    value_range = (0.0, 1.0)

    def forward(self, decoder_out):
        return BernoulliPixels(decoder_out, validate_args=False)

    def mean(self, decoder_out):
        return torch.sigmoid(decoder_out)

    def validate(self, x, name="x"):
        if not bool(((x == 0) | (x == 1)).all()):
            raise ValueError(
                f"{name}: the bernoulli likelihood needs binary pixels (0 or 1), got values in "
                f"{_value_range(x)} that are not all 0/1; use "
                f"--binarize dynamic|static or a likelihood for grey levels "
                f"(continuous-bernoulli, gaussian)"
            )


# --------------------------------------------------------------------------- continuous Bernoulli

# Below this |logit| the closed forms lose precision (they divide by the logit), so their
# Taylor series are used instead; the first neglected terms are below float64 precision.
_CB_SERIES_BELOW = 0.05


class StableContinuousBernoulli(dist.TorchDistribution):
    r"""The continuous Bernoulli distribution on [0, 1] in its natural (logit) parameter.

    Density ``p(x | eta) = exp(eta * x - A(eta))`` with log-normalizer
    ``A(eta) = log((e^eta - 1) / eta)`` (``A(0) = 0``: the uniform density). ``eta`` is the
    logit of the parameter ``lambda`` of Loaiza-Ganem & Cunningham (2019),
    ``p(x) = C(lambda) lambda^x (1 - lambda)^(1 - x)``.

    Unlike ``torch.distributions.ContinuousBernoulli``, which clamps ``lambda`` to
    ``[eps, 1 - eps]`` and so freezes its normalizer (and its gradient) for ``|eta|`` above
    about 16 in float32 (36 in float64), every quantity here is computed from ``eta``
    directly, in a form that stays exact for large ``|eta|`` and uses Taylor series near 0.

    Example
    -------
    >>> import torch
    >>> d = StableContinuousBernoulli(torch.tensor([0.0, 30.0]))
    >>> d.log_prob(torch.tensor([0.5, 1.0]))  # log 1 and ~ log 30
    tensor([0.0000, 3.4012])
    """

    arg_constraints = {"logits": constraints.real}
    support = constraints.unit_interval
    has_rsample = True

    def __init__(self, logits: torch.Tensor, validate_args=None):
        self.logits = torch.as_tensor(logits)
        super().__init__(self.logits.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(StableContinuousBernoulli, _instance)
        batch_shape = torch.Size(batch_shape)
        new.logits = self.logits.expand(batch_shape)
        super(StableContinuousBernoulli, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _split(self):
        """``(eta, small, a)``: ``small`` marks ``|eta|`` below the series threshold and
        ``a = |eta|`` there replaced by 1, so the closed forms (evaluated everywhere, then
        discarded by ``torch.where`` where small) and their gradients stay finite. Every
        closed form is written in ``a`` with ``exp(-a)`` only, which cannot overflow; the
        sign of ``eta`` enters through the symmetry ``x ~ CB(eta)  <=>  1 - x ~ CB(-eta)``."""
        eta = self.logits
        small = eta.abs() < _CB_SERIES_BELOW
        return eta, small, torch.where(small, torch.ones_like(eta), eta.abs())

    def log_normalizer(self) -> torch.Tensor:
        """``A(eta) = log((e^eta - 1) / eta)``, shape ``batch_shape``."""
        eta, small, a = self._split()
        # A(eta) = max(eta, 0) + log(1 - e^-|eta|) - log|eta|.
        closed = eta.clamp(min=0) + torch.log(-torch.expm1(-a)) - torch.log(a)
        # A(eta) = eta/2 + log(sinh(eta/2) / (eta/2)), expanded in eta^2.
        e2 = eta * eta
        series = eta / 2 + e2 * (1 / 24 - e2 * (1 / 2880 - e2 / 181440))
        return torch.where(small, series, closed)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        return self.logits * value - self.log_normalizer()

    @property
    def mean(self):
        # A'(eta) = 1 / (1 - e^-eta) - 1 / eta; for eta < 0 it is 1 - A'(|eta|).
        eta, small, a = self._split()
        mean_abs = 1 / (-torch.expm1(-a)) - 1 / a
        closed = torch.where(eta > 0, mean_abs, 1 - mean_abs)
        series = 0.5 + eta * (1 / 12 - eta * eta * (1 / 720 - eta * eta / 30240))
        return torch.where(small, series, closed)

    @property
    def variance(self):
        # A''(eta) = 1 / eta^2 - 1 / (4 sinh^2(eta / 2)) = 1 / a^2 - e^-a / (1 - e^-a)^2.
        eta, small, a = self._split()
        closed = 1 / (a * a) - torch.exp(-a) / torch.expm1(-a) ** 2
        e2 = eta * eta
        series = 1 / 12 - e2 * (1 / 240 - e2 / 6048)
        return torch.where(small, series, closed)

    def icdf(self, u):
        """Inverse of the CDF ``F(x) = (e^(eta x) - 1) / (e^eta - 1)``, without overflow."""
        eta, small, a = self._split()

        def icdf_negative(v):  # the inverse CDF of CB(-a): log1p(v (e^-a - 1)) / (-a)
            return torch.log1p(v * torch.expm1(-a)) / (-a)

        closed = torch.where(eta > 0, 1 - icdf_negative(1 - u), icdf_negative(u))
        series = u + eta * u * (1 - u) / 2  # first order in eta: ample for sampling
        return torch.where(small, series, closed).clamp(0, 1)

    def rsample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        u = torch.rand(shape, dtype=self.logits.dtype, device=self.logits.device)
        return self.icdf(u)


class ContinuousBernoulliLikelihood(Likelihood):
    """Continuous Bernoulli pixels for grey levels in [0, 1] (Loaiza-Ganem & Cunningham, 2019).

    The properly normalized density of the Bernoulli "reconstruction loss" applied to grey
    levels: ``p(x_d) = C(lambda_d) lambda_d^x_d (1 - lambda_d)^(1 - x_d)``, with
    ``lambda_d = sigmoid(decoder output)``. Its mean is not ``lambda_d`` but
    ``lambda / (2 lambda - 1) + 1 / (2 atanh(1 - 2 lambda))`` (1/2 at ``lambda = 1/2``).

    Example
    -------
    >>> import torch
    >>> lik = ContinuousBernoulliLikelihood(data_dim=2)
    >>> lik.mean(torch.tensor([0.0, 2.0]))
    tensor([0.5000, 0.6565])
    """

    name = "continuous-bernoulli"
    value_range = (0.0, 1.0)
    discrete = False

    def forward(self, decoder_out):
        return StableContinuousBernoulli(decoder_out, validate_args=False).to_event(1)

    def mean(self, decoder_out):
        return StableContinuousBernoulli(decoder_out, validate_args=False).mean

    def validate(self, x, name="x"):
        self._check_finite(x, name)
        if not bool(((x >= 0) & (x <= 1)).all()):
            raise ValueError(
                f"{name}: the continuous-bernoulli likelihood needs pixels in [0, 1], got values "
                f"in {_value_range(x)}; rescale the data to [0, 1] or use the gaussian likelihood"
            )


# --------------------------------------------------------------------------- Gaussian

#: Smallest standard deviation of the learned Gaussian scales. A pixel that is constant in
#: the data (an MNIST border) otherwise drives its scale, and the density, to infinity.
MIN_SCALE = 1e-3
#: Initial value of a learned scale: about the residual of a fitted decoder on [0, 1] grey
#: levels, so the reconstruction term is not drowned by the KL term at the start.
INIT_SCALE = 0.1


def _inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class GaussianLikelihood(Likelihood):
    """Independent Normal pixels: ``x_d ~ Normal(decoder output_d, sigma_d)``.

    ``sigma`` is the constant ``obs_scale`` when given (the reconstruction error is then a
    squared error weighted by ``1 / (2 obs_scale^2)``); otherwise a learned per-pixel scale
    ``MIN_SCALE + softplus(raw_scale)`` shared by all examples, starting at ``INIT_SCALE``.

    Example
    -------
    >>> import torch
    >>> lik = GaussianLikelihood(data_dim=2, obs_scale=0.5)
    >>> lik(torch.zeros(2)).base_dist.scale
    tensor([0.5000, 0.5000])
    """

    name = "gaussian"
    discrete = False
    options = ("obs_scale",)

    def __init__(self, data_dim: int, obs_scale: float | None = None, **options):
        super().__init__(data_dim, **options)
        if obs_scale is None:
            self.obs_scale = None
            init = _inverse_softplus(INIT_SCALE - MIN_SCALE)
            self.raw_scale = nn.Parameter(torch.full((data_dim,), init))  # (D,)
        else:
            self.obs_scale = check_positive_float("obs_scale", obs_scale)
            self.raw_scale = None

    def scale(self, like: torch.Tensor) -> torch.Tensor:
        """The per-pixel standard deviation, ``(D,)``, with ``like``'s device and dtype."""
        if self.raw_scale is None:
            return torch.full((self.data_dim,), self.obs_scale, dtype=like.dtype, device=like.device)
        return F.softplus(self.raw_scale) + MIN_SCALE

    def forward(self, decoder_out):
        scale = self.scale(decoder_out).expand(decoder_out.shape)  # (..., D)
        return dist.Normal(decoder_out, scale, validate_args=False).to_event(1)

    def mean(self, decoder_out):
        return decoder_out

    def validate(self, x, name="x"):
        self._check_finite(x, name)

    def extra_repr(self):
        return f"data_dim={self.data_dim}, obs_scale={self.obs_scale}"


class HeteroscedasticGaussianLikelihood(Likelihood):
    """Normal pixels whose location and scale both come from the decoder (2 outputs per pixel).

    The decoder output ``(..., 2 D)`` is read as ``[loc (D) | raw scale (D)]``;
    ``sigma = MIN_SCALE + softplus(raw + c)`` with ``c`` chosen so a zero output gives
    ``INIT_SCALE``. Flexible, but the most prone of the Gaussians to scales collapsing on
    pixels that are nearly constant in the data (``MIN_SCALE`` bounds the damage).

    Example
    -------
    >>> import torch
    >>> lik = HeteroscedasticGaussianLikelihood(data_dim=2)
    >>> lik(torch.zeros(5, 4)).batch_shape, lik(torch.zeros(5, 4)).event_shape
    (torch.Size([5]), torch.Size([2]))
    """

    name = "gaussian-heteroscedastic"
    params_per_pixel = 2
    discrete = False

    def _loc_scale(self, decoder_out):
        loc, raw = decoder_out.split(self.data_dim, dim=-1)  # (..., D) each
        return loc, F.softplus(raw + _inverse_softplus(INIT_SCALE - MIN_SCALE)) + MIN_SCALE

    def forward(self, decoder_out):
        loc, scale = self._loc_scale(decoder_out)
        return dist.Normal(loc, scale, validate_args=False).to_event(1)

    def mean(self, decoder_out):
        return decoder_out[..., : self.data_dim]

    def validate(self, x, name="x"):
        self._check_finite(x, name)


#: Registered likelihoods: name -> class(data_dim, **options).
LIKELIHOODS: Registry = Registry("likelihood", {
    cls.name: cls
    for cls in (BernoulliLikelihood, ContinuousBernoulliLikelihood, GaussianLikelihood,
                HeteroscedasticGaussianLikelihood)
})


def check_likelihood_options(name: str, **options) -> None:
    """Refuse an option given a value (not ``None``) that the likelihood ``name`` does not use.

    Example
    -------
    >>> check_likelihood_options("gaussian", obs_scale=0.1)  # used: fine
    >>> check_likelihood_options("bernoulli", obs_scale=None)  # not given: fine
    """
    used = LIKELIHOODS[name].options if name in LIKELIHOODS else ()
    for key, value in options.items():
        if value is not None and key not in used:
            users = sorted(n for n, cls in LIKELIHOODS.items() if key in cls.options)
            where = f"it applies to: {', '.join(users)}" if users else "no likelihood uses it"
            raise ValueError(
                f"{key}={value!r} does not apply to the {name} likelihood ({where}); "
                f"leave {key} unset or choose another likelihood"
            )


def build_likelihood(name: str, data_dim: int, **options) -> Likelihood:
    """Build the registered likelihood ``name`` for ``data_dim`` pixels.

    ``options`` (``obs_scale`` ...) are passed to every likelihood; ``None`` means "not
    given". A value given for an option the chosen likelihood does not use is a
    ``ValueError``.

    Example
    -------
    >>> build_likelihood("bernoulli", 4, obs_scale=None).params_per_pixel
    1
    """
    return LIKELIHOODS[check_choice("likelihood", name, LIKELIHOODS)](data_dim, **options)
