"""Settings of the training loop: :class:`TrainConfig`, devices, and what the curve is called.

Example
-------
>>> from pyro_vae.inference.config import TrainConfig
>>> TrainConfig(epochs=3, lr_schedule="cosine").epochs
3
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import (
    check_bool,
    check_choice,
    check_fraction,
    check_non_negative_int,
    check_positive_float,
    check_positive_int,
    check_seed,
)
from .objectives import OBJECTIVES, build_objective, check_kl_weighting
from .optim import LR_SCHEDULES, OPTIMIZERS

DTYPES = {"float32": torch.float32, "float64": torch.float64}
#: ``--log`` choices, built by :func:`pyro_vae.inference.loggers.build_loggers`.
LOGGERS = ("csv", "tensorboard")
#: What model selection may watch on the validation split (TrainConfig.select_on).
SELECT_ON = ("elbo", "bound")


@dataclass
class TrainConfig:
    """Settings of :func:`fit`.

    Parameters
    ----------
    epochs : int
        Total number of epochs (a resumed run continues up to this number).
    batch_size : int
        Examples per optimizer step (per process under torchrun: one step then sees
        ``world_size * batch_size``).
    lr : float
        Learning rate (of the first epoch, under a schedule).
    seed : int
        Seeds every random draw of the run (initialization, batches, binarization, z).
    device : str or None
        ``cpu``, ``cuda`` or ``cuda:N``; None picks CUDA when available.
    dtype : str
        ``float32`` or ``float64``.
    eval_every : int
        Score the validation split (or, without one, the test split) with the ELBO every
        this many epochs and at the last epoch; 0: never during training (then no model
        selection either: the last parameters are kept).
    objective : str
        A name in :data:`pyro_vae.inference.objectives.OBJECTIVES`.
    particles : int
        Samples of z per example in the objective (for ``iwae``: the K of the bound).
    beta : float
        Weight of the KL term (>= 0; 1: the plain bound); see
        :mod:`pyro_vae.inference.objectives`. Evaluation is never weighted.
    kl_warmup : int
        Epochs over which the KL weight rises linearly from ``beta / kl_warmup`` to ``beta``
        (0: no warm-up).
    progress : bool
        Show a tqdm progress bar.
    detect_anomaly : bool
        Run under ``torch.autograd.set_detect_anomaly(True)``: the backward pass stops at the
        first operation that produces NaN and reports where it was computed (slow; for
        debugging a non-finite loss).
    flush_denormal : bool
        On the CPU, treat subnormal floats (below about 1e-38 in float32) as zero while training
        (``torch.set_flush_denormal``; turned off again after each epoch). x86 CPUs compute
        with subnormals many times slower, and they arise where gradients are tiny: under a
        small KL weight (warm-up, ``beta < 1``) and in Adam's second moments. Measured with
        benchmarks/train_throughput.py ``--suite denormal`` (784-300-300-40 IWAE, K = 5, in
        KL warm-up, 10,000 images at batch 100): the first epoch took 2.72 s with subnormals
        and 1.18 s flushed, later epochs within 2%. False keeps IEEE arithmetic (results then
        differ from flushed ones in the last bits).
    patience : int
        With a validation split: stop after this many evaluations in a row without a better
        validation score (see ``select_on``; 0: never stop early). Needs ``eval_every > 0``.
    select_on : str
        The validation score that selects the best epoch, stops early and drives ``plateau``:
        ``elbo`` (default), or ``bound``: the bound the objective trains, estimated on the
        validation split with its own K (``iwae``: the importance-weighted bound of
        ``particles`` samples, recorded as ``val_bound``, unweighted by ``beta`` and warm-up;
        for the ELBO objectives ``bound`` is the ELBO). An IWAE-trained model's ELBO
        understates it, so selecting it on the ELBO can stop it too early.
    optimizer : str
        ``adam`` (torch's fused Adam), ``adamw`` or ``sgd``; see
        :func:`pyro_vae.inference.optim.build_optimizer`.
    momentum : float or None
        SGD's momentum in [0, 1) (only with ``sgd``; None: 0.9).
    weight_decay : float
        >= 0; Adam's and SGD's L2 penalty, AdamW's decoupled decay (default 0: none).
    clip_grad : float or None
        Rescale the gradient of each step to this global (L2) norm when it is larger (None:
        no clipping). ``adam`` with ``clip_grad`` plays the part of Pyro's ``ClippedAdam``
        (which clips each element instead).
    lr_schedule : str
        ``constant``; ``cosine`` (from ``lr`` down towards ``lr_min`` over ``epochs``);
        ``step`` (times ``lr_gamma`` every ``lr_step_epochs``); ``plateau`` (times
        ``lr_gamma`` after ``lr_patience`` scores without improvement, the score being the
        validation score of ``select_on`` where there is a validation split and
        ``eval_every > 0``, else the training curve). The rate changes between epochs; see
        :mod:`pyro_vae.inference.optim`.
    lr_min : float or None
        Floor of ``cosine`` and ``plateau``, in [0, lr) (None: 0).
    lr_step_epochs : int or None
        Epochs between reductions of ``step`` (required there, refused elsewhere).
    lr_gamma : float or None
        Factor in (0, 1) of ``step`` and ``plateau`` (None: 0.1).
    lr_patience : int or None
        Scores without improvement that ``plateau`` waits for, >= 0 (None: 5).
    log : tuple of str
        Loggers a run directory attaches (:data:`LOGGERS`: ``csv`` writes ``log.csv``,
        ``tensorboard`` ``tensorboard/``); :func:`fit` itself logs nothing: with it, pass
        loggers from :mod:`pyro_vae.inference.loggers` as callbacks.

    Settings that apply to one optimizer or schedule only are refused with the others, so a
    typo does not go unnoticed; their None defaults are filled in where they apply.
    """

    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    device: str | None = None
    dtype: str = "float32"
    eval_every: int = 1
    objective: str = "elbo"
    particles: int = 1
    beta: float = 1.0
    kl_warmup: int = 0
    progress: bool = True
    detect_anomaly: bool = False
    flush_denormal: bool = True
    patience: int = 0
    select_on: str = "elbo"
    optimizer: str = "adam"
    momentum: float | None = None
    weight_decay: float = 0.0
    clip_grad: float | None = None
    lr_schedule: str = "constant"
    lr_min: float | None = None
    lr_step_epochs: int | None = None
    lr_gamma: float | None = None
    lr_patience: int | None = None
    log: tuple = ()

    def __post_init__(self):
        check_positive_int("epochs", self.epochs)
        check_positive_int("batch_size", self.batch_size)
        check_positive_float("lr", self.lr)
        check_seed("seed", self.seed)
        check_bool("progress", self.progress)
        check_bool("detect_anomaly", self.detect_anomaly)
        check_bool("flush_denormal", self.flush_denormal)
        check_choice("dtype", self.dtype, DTYPES)
        check_non_negative_int("eval_every", self.eval_every)
        check_non_negative_int("patience", self.patience)
        if self.patience and not self.eval_every:
            raise ValueError(f"patience {self.patience} counts evaluations, but eval_every is 0 "
                             f"(no evaluation during training); give eval_every >= 1")
        check_choice("objective", self.objective, OBJECTIVES)
        check_positive_int("particles", self.particles)
        check_choice("select_on", self.select_on, SELECT_ON)
        self.beta, self.kl_warmup = check_kl_weighting(self.beta, self.kl_warmup)
        if self.device is not None:  # its availability is checked where it is used (fit)
            check_device_name(self.device)
        self._check_optimization()

    def _check_optimization(self) -> None:
        """Check the optimizer, clipping, schedule and logging fields; fill in applicable defaults."""
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        self.weight_decay = _check_non_negative_float("weight_decay", self.weight_decay)
        if self.clip_grad is not None:
            self.clip_grad = check_positive_float("clip_grad", self.clip_grad)
        _only_with("momentum", self.momentum, "optimizer", self.optimizer, ("sgd",))
        if self.optimizer == "sgd":
            self.momentum = check_fraction("momentum", 0.9 if self.momentum is None else self.momentum)
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        schedule = self.lr_schedule
        _only_with("lr_min", self.lr_min, "lr_schedule", schedule, ("cosine", "plateau"))
        _only_with("lr_step_epochs", self.lr_step_epochs, "lr_schedule", schedule, ("step",))
        _only_with("lr_gamma", self.lr_gamma, "lr_schedule", schedule, ("step", "plateau"))
        _only_with("lr_patience", self.lr_patience, "lr_schedule", schedule, ("plateau",))
        if schedule in ("cosine", "plateau"):
            self.lr_min = _check_non_negative_float("lr_min", 0.0 if self.lr_min is None else self.lr_min)
            if self.lr_min >= self.lr:
                raise ValueError(f"lr_min {self.lr_min} must be below lr {self.lr} "
                                 f"(the {schedule} schedule decreases the rate towards it)")
        if schedule == "step":
            if self.lr_step_epochs is None:
                raise ValueError("lr_schedule 'step' needs lr_step_epochs, the epochs between two "
                                 "reductions (--lr-step-epochs N, a positive integer)")
            check_positive_int("lr_step_epochs", self.lr_step_epochs)
        if schedule in ("step", "plateau"):
            self.lr_gamma = check_fraction("lr_gamma", 0.1 if self.lr_gamma is None else self.lr_gamma,
                                           allow_zero=False)
        if schedule == "plateau":
            self.lr_patience = check_non_negative_int("lr_patience", 5 if self.lr_patience is None
                                                      else self.lr_patience)
        self.log = _check_loggers(self.log)


def _only_with(name: str, value, owner: str, chosen: str, applies: tuple) -> None:
    """Refuse a setting given (not None) where ``owner`` is not one of those it applies to."""
    if value is not None and chosen not in applies:
        raise ValueError(f"{name} {value!r} applies to {owner} {' or '.join(map(repr, applies))}, "
                         f"not {chosen!r}")


def _check_non_negative_float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a non-negative number, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite non-negative number, got {value}")
    return float(value)


def _check_loggers(value) -> tuple:
    """``log`` as a tuple of distinct names from :data:`LOGGERS` (a comma-separated string too)."""
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"log must be a sequence of logger names ({', '.join(LOGGERS)}), got {value!r}")
    names = []
    for name in value:
        check_choice("log", name, LOGGERS)
        if name not in names:
            names.append(name)
    return tuple(names)


def check_device_name(name) -> str:
    """Refuse a device name that is not ``cpu``, ``cuda`` or ``cuda:N`` (available or not)."""
    if not isinstance(name, str) or not (name in ("cpu", "cuda") or (
            name.startswith("cuda:") and name[5:].isdigit())):
        raise ValueError(f"unknown device {name!r}; choose from: cpu, cuda, cuda:N")
    return name


def stored_device(name: str | None) -> torch.device:
    """The device a run recorded, where this machine has it; else this machine's default.

    A run trained on a GPU opens on a CPU-only machine without ``--device cpu``.
    """
    if name is not None and name.startswith("cuda") and not torch.cuda.is_available():
        return resolve_device(None)
    return resolve_device(name)


def resolve_device(name: str | None) -> torch.device:
    """``None`` -> CUDA when available else CPU; refuse unknown or unavailable devices."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check_device_name(name)
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    return torch.device(name)


#: What each validation score is, for messages.
SCORE_NAMES = {"val_elbo": "validation ELBO", "val_bound": "validation importance-weighted bound"}


def selection_key(config: TrainConfig) -> str:
    """History key of the validation score that selects, stops early and drives ``plateau``.

    ``val_bound`` under ``select_on="bound"`` when the objective is an importance-weighted
    bound of K > 1 samples (its ``bound_samples``), else ``val_elbo``.

    >>> selection_key(TrainConfig(objective="iwae", particles=5, select_on="bound"))
    'val_bound'
    """
    if config.select_on != "bound":
        return "val_elbo"
    objective = build_objective(config.objective, particles=config.particles, beta=config.beta,
                                kl_warmup=config.kl_warmup)
    return "val_bound" if getattr(objective, "bound_samples", 1) > 1 else "val_elbo"


def training_curve_key(config: TrainConfig, model=None) -> str:
    """History key of the training curve: ``train_elbo`` only when the objective is the ELBO.

    Under ``beta != 1``, a KL warm-up or the IWAE objective the quantity optimized is not
    the ELBO, nor for a model that adds terms of its own in training (M2's classification
    term, ``adds_training_terms``), so it is recorded as ``train_objective``; the
    validation/test curves are ELBOs.
    """
    plain = config.objective in ("elbo", "meanfield") and config.beta == 1 and not config.kl_warmup
    plain = plain and not getattr(model, "adds_training_terms", False)
    return "train_elbo" if plain else "train_objective"
