"""Probabilistic PCA (Tipping & Bishop, "Probabilistic Principal Component Analysis", 1999).

Generative story: ``z ~ N(0, I_d)``, ``x ~ N(W z + mu, sigma^2 I_D)``. The code integrates
out in closed form, ``x ~ N(mu, W W^T + sigma^2 I)``, so the model observes ``"x"`` under that
low-rank-plus-diagonal Gaussian: no latent sample sites, an empty guide, and an ELBO
(``Trace_ELBO``) that *is* the exact log-likelihood. The posterior ``p(z | x)`` is Gaussian
too and available in closed form (:meth:`PPCA.posterior`).

Example
-------
>>> import pyro, torch
>>> from pyro.infer import SVI, Trace_ELBO
>>> from pyro_vae.models.ppca import PPCA, PPCAConfig
>>> x = torch.rand(100, 10)
>>> ppca = PPCA(10, PPCAConfig(latent_dim=2))
>>> ppca.init_from_data(x)  # the maximum-likelihood solution, from an SVD
>>> svi = SVI(ppca.model, ppca.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
>>> loss = svi.step(x)  # = -sum_i log p(x_i), exactly
>>> q = ppca.posterior(x)  # p(z | x): batch (100,), event (2,)
>>> q.mean.shape, q.covariance_matrix.shape
(torch.Size([100, 2]), torch.Size([100, 2, 2]))
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ..errors import check_choice, check_instance, check_positive_int
from .adapters import resolve_image_shape
from .base import GenerativeModel, data_plate

INITS = ("pca", "random")


@dataclass
class PPCAConfig:
    """Settings of :class:`PPCA`.

    Parameters
    ----------
    latent_dim : int
        Number of principal directions ``d`` (smaller than the data dimension).
    init : str
        What :meth:`PPCA.init_from_data` does: ``pca`` sets the maximum-likelihood solution
        from an SVD of the data (training then only fine-tunes); ``random`` sets the mean to
        the data mean, small random loadings and the noise scale to the data's spread, and
        leaves the rest to training.
    """

    latent_dim: int = 16
    init: str = "pca"

    def __post_init__(self):
        check_positive_int("latent_dim", self.latent_dim)
        check_choice("init", self.init, INITS)


class PPCA(GenerativeModel):
    """Probabilistic PCA with its exact marginal likelihood and posterior.

    Parameters
    ----------
    data_dim : int
        Number of pixels ``D``.
    config : PPCAConfig
    num_classes : int or None
        Unused (PPCA is unsupervised); accepted for the registry's constructor.
    image_shape : tuple of int or None
        ``(C, H, W)`` of one example (recorded; None: ``(1, 1, D)``).

    Notes
    -----
    PPCA is a density on R^D: on binarized data its log-likelihood is a density value at
    0/1 points, not a probability, and the evaluation reports ``discrete: false``.
    """

    has_latents = False
    #: The evaluation reads this: log p(x) is a density, not a probability mass.
    discrete = False
    pyro_name = "ppca"

    def __init__(self, data_dim: int, config: PPCAConfig | None = None, num_classes: int | None = None,
                 image_shape: tuple[int, int, int] | None = None):
        super().__init__()
        config = PPCAConfig() if config is None else config
        check_instance("config", config, PPCAConfig, "build one with PPCAConfig(...)")
        self.config = config
        self.data_dim = check_positive_int("data_dim", data_dim)
        self.image_shape = resolve_image_shape(data_dim, image_shape)  # (C, H, W); no networks use it
        d = config.latent_dim
        if d >= data_dim:
            raise ValueError(
                f"latent_dim must be smaller than the data dimension {data_dim}, got {d}")
        self.mean = nn.Parameter(torch.zeros(data_dim))  # mu, (D,)
        self.loadings = nn.Parameter(torch.randn(data_dim, d) / math.sqrt(data_dim))  # W, (D, d)
        self.log_noise_scale = nn.Parameter(torch.zeros(()))  # log sigma, ()

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def noise_scale(self) -> torch.Tensor:
        """The isotropic noise standard deviation ``sigma`` (a 0-d tensor)."""
        return self.log_noise_scale.exp()

    def distribution(self) -> dist.LowRankMultivariateNormal:
        """The marginal ``N(mu, W W^T + sigma^2 I)``: batch shape ``()``, event shape ``(D,)``."""
        noise_var = (2 * self.log_noise_scale).exp().expand(self.data_dim)  # (D,)
        return dist.LowRankMultivariateNormal(self.mean, cov_factor=self.loadings, cov_diag=noise_var)

    def covariance(self) -> torch.Tensor:
        """The marginal covariance ``W W^T + sigma^2 I``, ``(D, D)``."""
        eye = torch.eye(self.data_dim, dtype=self.mean.dtype, device=self.mean.device)
        return self.loadings @ self.loadings.T + self.noise_scale ** 2 * eye

    # ------------------------------------------------------------------ model / guide

    def model(self, x, y=None):
        self._register()
        marginal = self.distribution()
        with data_plate(x):
            pyro.sample("x", marginal, obs=x)

    def guide(self, x, y=None):
        # z is integrated out in the model; the plate keeps model and guide plates matched.
        self._register()
        with data_plate(x):
            pass

    # ------------------------------------------------------------------ closed forms

    @torch.no_grad()
    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``log p(x_i)`` of each example, ``(n,)``."""
        return self.distribution().log_prob(x)

    @torch.no_grad()
    def posterior(self, x: torch.Tensor, y=None) -> dist.MultivariateNormal:
        """The exact posterior ``p(z | x_i) = N(loc_i, cov)``: a multivariate Normal with batch
        shape ``(n,)`` and event shape ``(d,)``.

        With ``M = W^T W + sigma^2 I_d``: ``loc = M^{-1} W^T (x - mu)``, ``cov = sigma^2 M^{-1}``
        (the same for every example).
        """
        w = self.loadings  # (D, d)
        noise_var = self.noise_scale ** 2
        eye = torch.eye(self.latent_dim, dtype=w.dtype, device=w.device)
        m = w.T @ w + noise_var * eye  # (d, d)
        chol = torch.linalg.cholesky(m)
        loc = torch.cholesky_solve(w.T @ (x - self.mean).T, chol).T  # (n, d)
        cov = noise_var * torch.cholesky_inverse(chol)  # (d, d)
        return dist.MultivariateNormal(loc, covariance_matrix=cov)  # batch (n,), event (d,)

    @torch.no_grad()
    def encode(self, x, y=None):
        """The posterior mean ``E[z | x]``, ``(batch, d)``."""
        return self.posterior(x).mean

    @torch.no_grad()
    def reconstruct(self, x, y=None):
        """``W E[z | x] + mu``, ``(batch, D)``."""
        return self.decode(self.encode(x))

    @torch.no_grad()
    def decode(self, z, y=None):
        """The mean image ``W z + mu`` of codes ``z`` ``(..., d)``: ``(..., D)``."""
        return z @ self.loadings.T + self.mean

    @torch.no_grad()
    def sample(self, n, y=None, *, mean=True):
        """``W z + mu`` for ``z ~ N(0, I)`` (``mean=False``: plus the isotropic noise)."""
        check_positive_int("n", n)
        z = torch.randn(n, self.latent_dim, dtype=self.mean.dtype, device=self.mean.device)
        x = self.decode(z)  # (n, D)
        return x if mean else x + self.noise_scale * torch.randn_like(x)

    @torch.no_grad()
    def init_from_data(self, x, y=None):
        """Set the parameters from data: the ML solution (``init="pca"``) or a rough start.

        The maximum-likelihood solution (Tipping & Bishop, 1999) is ``mu`` = the data mean,
        ``sigma^2`` = the mean of the ``D - d`` smallest eigenvalues of the data covariance, and
        ``W = U_d (L_d - sigma^2 I)^{1/2}`` from the ``d`` leading eigenpairs ``(U_d, L_d)``.
        """
        x = x.to(device=self.mean.device, dtype=self.mean.dtype)
        n, d = x.shape[0], self.latent_dim
        self.mean.copy_(x.mean(0))
        centred = x - self.mean
        total_var = (centred ** 2).sum() / (n * self.data_dim)  # mean eigenvalue
        floor = 1e-6 * total_var.clamp_min(1e-12)  # keeps sigma > 0 for degenerate data
        if self.config.init == "random":
            self.loadings.copy_(torch.randn_like(self.loadings) * 0.1 * total_var.sqrt())
            self.log_noise_scale.copy_(0.5 * torch.log(total_var.clamp_min(floor)))
            return
        _, s, vh = torch.linalg.svd(centred, full_matrices=False)  # s: (min(n, D),), vh: (., D)
        eigvals = torch.zeros(self.data_dim, dtype=x.dtype, device=x.device)
        eigvals[: s.shape[0]] = s ** 2 / n  # covariance eigenvalues, descending, (D,)
        noise_var = eigvals[d:].mean().clamp_min(floor)
        self.log_noise_scale.copy_(0.5 * torch.log(noise_var))
        lead = (eigvals[:d] - noise_var).clamp_min(0).sqrt()  # (d,)
        directions = torch.zeros_like(self.loadings)  # (D, d): zero columns if rank < d
        k = min(d, vh.shape[0])
        directions[:, :k] = vh[:k].T
        self.loadings.copy_(directions * lead)



__all__ = ["PPCA", "PPCAConfig"]
