"""A finite mixture model: the classical baseline for the latent-variable models.

Generative story: a component ``c ~ Categorical(pi)`` (K components, learned weights), then
the pixels ``x ~ p_c(x)``, independent given ``c``. With the default ``bernoulli`` likelihood
this is a mixture of multivariate Bernoullis (the fair baseline on binarized pixels); with
``gaussian`` it is a Gaussian mixture with learned weights, means and per-component diagonal
scales (a GMM, for grey levels). Any other registered likelihood (continuous Bernoulli ...)
works too: each component is that likelihood with its own learned "decoder output".

The assignment ``c`` is summed out, so the observed site ``"x"`` is a
``MixtureSameFamily`` distribution: the model has no latent sample sites, its guide is empty,
and its ELBO (``Trace_ELBO``) *is* the exact log-likelihood ``log sum_k pi_k p_k(x)``.

Example
-------
>>> import pyro, torch
>>> from pyro.infer import SVI, Trace_ELBO
>>> from pyro_vae.models.mixture import Mixture, MixtureConfig
>>> x = torch.bernoulli(torch.full((32, 64), 0.3))
>>> mix = Mixture(64, MixtureConfig(num_components=5))
>>> mix.init_from_data(x)
>>> svi = SVI(mix.model, mix.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
>>> loss = svi.step(x)  # = -sum_i log p(x_i), exactly
>>> mix.responsibilities(x).shape
torch.Size([32, 5])
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import check_choice, check_instance, check_positive_float, check_positive_int
from .adapters import resolve_image_shape
from .base import GenerativeModel, data_plate
from .likelihoods import LIKELIHOODS, build_likelihood

#: The mixture's own diagonal-Gaussian components (per-component, per-pixel learned scales).
GAUSSIAN = "gaussian"


@dataclass
class MixtureConfig:
    """Settings of :class:`Mixture`.

    Parameters
    ----------
    num_components : int
        Number of mixture components K.
    likelihood : str
        ``gaussian`` (diagonal Gaussians with their own per-component scales: a GMM) or a
        name in :data:`pyro_vae.models.likelihoods.LIKELIHOODS` (``bernoulli``: a mixture of
        Bernoullis, for binarized data).
    min_scale : float
        Floor of the Gaussian components' standard deviations. Pixels that never vary (the
        borders of digits) would otherwise shrink a scale to zero and the density to infinity.
    """

    num_components: int = 10
    likelihood: str = "bernoulli"
    min_scale: float = 0.01

    def __post_init__(self):
        check_positive_int("num_components", self.num_components)
        check_choice("likelihood", self.likelihood, LIKELIHOODS)
        check_positive_float("min_scale", self.min_scale)


class Mixture(GenerativeModel):
    """Mixture of K product distributions over the pixels, assignment summed out exactly.

    Parameters
    ----------
    data_dim : int
        Number of pixels ``D``.
    config : MixtureConfig
    num_classes : int or None
        Unused (the mixture is unsupervised); accepted for the registry's constructor.
    image_shape : tuple of int or None
        ``(C, H, W)`` of one example (recorded; None: ``(1, 1, D)``).

    Notes
    -----
    ``encode(x)`` returns the responsibilities ``(batch, K)`` (the exact posterior over the
    assignment); ``reconstruct(x)`` returns the mean image of each example's most probable
    component. Call :meth:`init_from_data` before training: it seeds the components on
    distinct, spread-out data points (k-means++ seeding) so that they do not all start alike
    and collapse into one.
    """

    has_latents = False
    pyro_name = "mixture"

    def __init__(self, data_dim: int, config: MixtureConfig | None = None, num_classes: int | None = None,
                 image_shape: tuple[int, int, int] | None = None):
        super().__init__()
        config = MixtureConfig() if config is None else config
        check_instance("config", config, MixtureConfig, "build one with MixtureConfig(...)")
        self.config = config
        self.data_dim = check_positive_int("data_dim", data_dim)
        self.image_shape = resolve_image_shape(data_dim, image_shape)  # (C, H, W); no networks use it
        k = config.num_components
        self.weight_logits = nn.Parameter(torch.zeros(k))  # (K,) uniform weights at first
        if config.likelihood == GAUSSIAN:
            self.likelihood = None
            self.means = nn.Parameter(0.1 * torch.randn(k, data_dim))  # (K, D)
            # scale = min_scale + softplus(raw); raw = 0 -> about 0.7 before data init.
            self.raw_scales = nn.Parameter(torch.zeros(k, data_dim))  # (K, D)
        else:
            self.likelihood = build_likelihood(config.likelihood, data_dim)
            # One row of "decoder output" per component; the likelihood turns it into p_k(x).
            self.component_params = nn.Parameter(
                0.1 * torch.randn(k, data_dim * self.likelihood.params_per_pixel))  # (K, D * ppp)

    # ------------------------------------------------------------------ distributions

    @property
    def discrete(self) -> bool:
        """Whether log p(x) is a probability mass (Bernoulli) rather than a density (read by the evaluation)."""
        return False if self.likelihood is None else bool(self.likelihood.discrete)

    @property
    def num_components(self) -> int:
        return self.config.num_components

    @property
    def weights(self) -> torch.Tensor:
        """Mixing probabilities ``pi``, ``(K,)``."""
        return torch.softmax(self.weight_logits, -1)

    def scales(self) -> torch.Tensor:
        """Standard deviations of the Gaussian components, ``(K, D)`` (gaussian only)."""
        if self.likelihood is not None:
            raise ValueError(f"scales() applies to likelihood 'gaussian', not {self.config.likelihood!r}")
        return F.softplus(self.raw_scales) + self.config.min_scale

    def component_distribution(self) -> dist.TorchDistribution:
        """The K components: batch shape ``(K,)``, event shape ``(D,)``."""
        if self.likelihood is None:
            return dist.Normal(self.means, self.scales()).to_event(1)
        return self.likelihood(self.component_params)

    def distribution(self) -> dist.TorchDistribution:
        """The marginal ``p(x) = sum_k pi_k p_k(x)``: batch shape ``()``, event shape ``(D,)``."""
        return dist.MixtureSameFamily(dist.Categorical(logits=self.weight_logits),
                                      self.component_distribution())

    def component_means(self) -> torch.Tensor:
        """Mean image of each component, ``(K, D)``."""
        with torch.no_grad():
            if self.likelihood is None:
                return self.means.clone()
            return self.likelihood.mean(self.component_params)

    # ------------------------------------------------------------------ model / guide

    def model(self, x, y=None):
        self._register()
        mixture = self.distribution()
        with data_plate(x):
            pyro.sample("x", mixture, obs=x)

    def guide(self, x, y=None):
        # No latent sites: the assignment is summed out in the model. The plate is opened so
        # that model and guide declare the same plates (Pyro checks they match).
        self._register()
        with data_plate(x):
            pass

    # ------------------------------------------------------------------ helpers

    def _joint_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log pi_k + log p_k(x_i)``, shape ``(n, K)``."""
        log_pk = self.component_distribution().log_prob(x.unsqueeze(-2))  # (n, K)
        return torch.log_softmax(self.weight_logits, -1) + log_pk

    @torch.no_grad()
    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``log p(x_i)`` of each example, ``(n,)``."""
        return torch.logsumexp(self._joint_log_prob(x), -1)

    @torch.no_grad()
    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior assignment probabilities ``p(c = k | x_i)``, ``(n, K)``; rows sum to 1."""
        return torch.softmax(self._joint_log_prob(x), -1)

    @torch.no_grad()
    def sample(self, n, y=None, *, mean=True):
        """Draw a component per example, then its pixels (``mean=True``: its mean image)."""
        check_positive_int("n", n)
        c = dist.Categorical(logits=self.weight_logits).sample((n,))  # (n,)
        if mean:
            return self.component_means()[c]
        if self.likelihood is None:
            return dist.Normal(self.means[c], self.scales()[c]).sample()
        return self.likelihood(self.component_params[c]).sample()

    @torch.no_grad()
    def encode(self, x, y=None):
        """The responsibilities ``(batch, K)``: the exact posterior over the assignment."""
        return self.responsibilities(x)

    @torch.no_grad()
    def reconstruct(self, x, y=None):
        """The mean image of each example's most probable component, ``(batch, D)``."""
        return self.component_means()[self.responsibilities(x).argmax(-1)]

    @torch.no_grad()
    def init_from_data(self, x, y=None):
        """Seed the components on K spread-out data points (k-means++ seeding).

        The first seed is a uniformly drawn example, each next one is drawn with probability
        proportional to its squared distance from the nearest seed so far. Gaussian
        components take the seeds as means and the data's per-pixel spread as scales;
        components of a registered likelihood get the outputs whose mean image is the seed
        shrunk halfway toward the data mean and clipped to [0.01, 0.99] (for a Bernoulli:
        finite logits, no pixel certain).
        """
        x = x.to(device=self.weight_logits.device, dtype=self.weight_logits.dtype)
        k = self.num_components
        if x.shape[0] < k:
            raise ValueError(f"init_from_data needs at least num_components={k} examples, got {x.shape[0]}")
        seeds = _kmeans_pp_seeds(x, k)  # (K, D)
        self.weight_logits.zero_()
        if self.likelihood is None:
            self.means.copy_(seeds)
            # scale = floor + softplus(raw) starts at max(pixel std, 2 floor): invert the softplus.
            spread = (x.std(0) - self.config.min_scale).clamp_min(self.config.min_scale)  # (D,)
            self.raw_scales.copy_((spread + torch.log(-torch.expm1(-spread))).expand(k, -1))
        else:
            target = (0.5 * seeds + 0.5 * x.mean(0)).clamp(0.01, 0.99)  # (K, D)
            self.component_params.copy_(_outputs_with_mean(self.likelihood, target))



def _outputs_with_mean(likelihood, target: torch.Tensor, bound: float = 20.0,
                       steps: int = 40) -> torch.Tensor:
    """Decoder outputs ``(K, D * ppp)`` whose mean image is ``target`` ``(K, D)``.

    The first ``D`` outputs are found by bisection in ``[-bound, bound]``, pixel by pixel;
    further outputs per pixel (a scale) stay zero. This assumes each pixel's mean increases
    with its first output, as it does for every likelihood of this library (logits of a
    Bernoulli or continuous Bernoulli, location of a Gaussian), and gives ``logit(target)``
    for a Bernoulli.
    """
    k, d = target.shape
    out = target.new_zeros(k, d * likelihood.params_per_pixel)
    low, high = torch.full_like(target, -bound), torch.full_like(target, bound)
    for _ in range(steps):
        mid = (low + high) / 2
        out[:, :d] = mid
        above = likelihood.mean(out) > target
        high = torch.where(above, mid, high)
        low = torch.where(above, low, mid)
    out[:, :d] = (low + high) / 2
    return out


def _kmeans_pp_seeds(x: torch.Tensor, k: int) -> torch.Tensor:
    """k-means++ seeding: ``k`` rows of ``x`` ``(n, D)``, drawn far apart; ``(k, D)``."""
    n = x.shape[0]
    first = int(torch.randint(n, (1,), device=x.device))
    chosen = [first]
    nearest = ((x - x[first]) ** 2).sum(-1)  # (n,) squared distance to the nearest seed
    for _ in range(1, k):
        if bool(nearest.sum() > 0):
            idx = int(torch.multinomial(nearest, 1))
        else:  # fewer distinct points than k: fall back to any example not chosen yet
            rest = [i for i in range(n) if i not in chosen]
            idx = rest[int(torch.randint(len(rest), (1,)))]
        chosen.append(idx)
        nearest = torch.minimum(nearest, ((x - x[idx]) ** 2).sum(-1))
    return x[chosen].clone()


__all__ = ["Mixture", "MixtureConfig"]
