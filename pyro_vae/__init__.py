"""pyro-vae: probabilistic generative models in Pyro, trained by one SVI loop, scored in nats.

Example
-------
>>> from pyro_vae import DataConfig, TrainConfig, VAE, VAEConfig, evaluate, fit, load_dataset
>>> data = load_dataset(DataConfig("digits"))
>>> vae = VAE(data.data_dim, VAEConfig(latent_dim=8, hidden_dims=(64,)))
>>> result = fit(vae, data, TrainConfig(epochs=2, progress=False))
>>> test = evaluate(vae, data.x_test, num_samples=10)
"""

__version__ = "0.1.0"

from .data import DataConfig, DataSpec, DataSplits, load_dataset  # noqa: E402
from .data.dataset import deprecated_alias as _deprecated_alias  # noqa: E402
from .exports import encode_run, sample_run  # noqa: E402
from .inference import (  # noqa: E402
    Callback,
    FitResult,
    TrainConfig,
    elbo,
    evaluate,
    fit,
    log_importance_weights,
    log_likelihood,
)
from .model_io import load_model  # noqa: E402
from .models import (  # noqa: E402
    CVAE,
    HVAE,
    MODELS,
    PPCA,
    VAE,
    GenerativeModel,
    HVAEConfig,
    Mixture,
    MixtureConfig,
    PPCAConfig,
    VAEConfig,
)
from .registry import load_plugin, register  # noqa: E402
from .runs import RunConfig, evaluate_run, load_run, resume_run, train_run  # noqa: E402

__all__ = [
    "CVAE", "HVAE", "HVAEConfig", "Mixture", "MixtureConfig", "PPCA", "PPCAConfig",
    "Callback", "DataConfig", "DataSpec", "DataSplits", "FitResult", "GenerativeModel", "MODELS", "RunConfig",
    "TrainConfig", "VAE", "VAEConfig", "__version__", "elbo", "encode_run", "evaluate", "evaluate_run", "fit",
    "load_dataset", "load_model", "load_plugin", "load_run", "log_importance_weights", "log_likelihood",
    "register", "resume_run", "sample_run", "train_run",
]


def __getattr__(name: str):  # the old name Dataset of DataSplits, with a DeprecationWarning
    return _deprecated_alias(__name__, name)
