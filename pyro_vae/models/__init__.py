"""Model/guide pairs and their parts (priors, likelihoods, networks), and the model registry."""

from __future__ import annotations

from ..registry import Registry
from .adapters import ARCHS, ImageInput, ImageOutput
from .base import GenerativeModel
from .conv import ConvDecoder, ConvEncoder, ConvFeatures
from .cvae import CVAE
from .folding import FoldLeading, fold_leading
from .guides import GUIDES, GuideFamily
from .hvae import HVAE, HVAEConfig
from .likelihoods import LIKELIHOODS, Likelihood, build_likelihood
from .m2 import M2, M2Config
from .mixture import Mixture, MixtureConfig
from .ppca import PPCA, PPCAConfig
from .priors import PRIORS, Prior, StandardNormalPrior, build_prior
from .vae import VAE, VAEConfig

#: Registered models: name -> (config dataclass, model class). A model class is built as
#: ``cls(data_dim, config, num_classes=None, image_shape=None)`` (``image_shape``: ``(C, H, W)``
#: of one example, None meaning ``(1, 1, data_dim)``).
MODELS: Registry = Registry("model", {
    "vae": (VAEConfig, VAE),
    "cvae": (VAEConfig, CVAE),
    "hvae": (HVAEConfig, HVAE),
    "m2": (M2Config, M2),
    "mixture": (MixtureConfig, Mixture),
    "ppca": (PPCAConfig, PPCA),
})

__all__ = [
    "ARCHS", "ConvDecoder", "ConvEncoder", "ConvFeatures", "FoldLeading", "ImageInput", "ImageOutput",
    "fold_leading",
    "CVAE", "HVAE", "HVAEConfig", "M2", "M2Config", "Mixture", "MixtureConfig", "PPCA", "PPCAConfig",
    "GUIDES", "GenerativeModel", "GuideFamily", "Likelihood", "LIKELIHOODS", "MODELS", "PRIORS", "Prior",
    "StandardNormalPrior", "VAE", "VAEConfig", "build_likelihood", "build_prior",
]
