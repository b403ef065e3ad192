"""How models are fitted and scored: one training loop, objectives, one evaluation module.

Nothing here knows about any particular model: it sees model/guide pairs keeping the contract
of :mod:`pyro_vae.models.base`.
"""

from .config import TrainConfig
from .evaluate import Estimate, elbo, evaluate, log_importance_weights, log_likelihood
from .objectives import OBJECTIVES, Objective, build_objective
from .state import Callback, FitResult, NonFiniteLossError, StepInfo, TrainState
from .train import fit

__all__ = [
    "Callback", "Estimate", "FitResult", "NonFiniteLossError", "OBJECTIVES", "Objective",
    "StepInfo", "TrainConfig", "TrainState", "build_objective", "elbo", "evaluate", "fit",
    "log_importance_weights", "log_likelihood",
]
