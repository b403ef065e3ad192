"""Model/guide pairs and their parts (priors, likelihoods, networks), and the model registry."""

from __future__ import annotations

from .base import GenerativeModel
from .likelihoods import LIKELIHOODS, Likelihood, build_likelihood
from .priors import PRIORS, Prior, StandardNormalPrior, build_prior
from .vae import VAE, VAEConfig

#: Registered models: name -> (config dataclass, model class). A model class is built as
#: ``cls(data_dim, config, num_classes=...)``.
MODELS: dict[str, tuple[type, type[GenerativeModel]]] = {
    "vae": (VAEConfig, VAE),
}

__all__ = [
    "GenerativeModel", "Likelihood", "LIKELIHOODS", "MODELS", "PRIORS", "Prior",
    "StandardNormalPrior", "VAE", "VAEConfig", "build_likelihood", "build_prior",
]
