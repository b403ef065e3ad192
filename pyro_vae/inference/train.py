"""``fit``: the one training loop every model goes through.

Each step has three phases: draw an on-device batch (freshly binarized where the data set
asks for it), compute the objective's differentiable loss, and take one step of a single
torch optimizer over all the model's parameters. Per-step losses stay on the device; the
host reads them once per epoch (no synchronization inside the step), which is also where a
non-finite loss is detected, before any callback (checkpointing) sees the broken epoch;
the parameters are checked there too, since a NaN gradient at an epoch's last step poisons
them while every loss of the epoch is finite.

Example
-------
>>> from pyro_vae.data import DataConfig, load_dataset
>>> from pyro_vae.models import VAE, VAEConfig
>>> from pyro_vae.inference import TrainConfig, fit
>>> data = load_dataset(DataConfig("digits"))
>>> vae = VAE(data.data_dim, VAEConfig(latent_dim=4, hidden_dims=(64,)))
>>> result = fit(vae, data, TrainConfig(epochs=2, progress=False))
>>> len(result.history)
2
"""

from __future__ import annotations

import math
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import pyro
import torch
from tqdm.auto import tqdm

from ..data import Dataset
from ..errors import (
    check_bool,
    check_choice,
    check_fraction,
    check_instance,
    check_non_negative_int,
    check_positive_float,
    check_positive_int,
    check_seed,
)
from ..models.base import labels_for
from . import distributed
from .evaluate import _elbo
from .objectives import OBJECTIVES, build_objective, check_kl_weighting
from .optim import LR_SCHEDULES, OPTIMIZERS, LRSchedule, build_optimizer, build_schedule  # noqa: F401

DTYPES = {"float32": torch.float32, "float64": torch.float64}
#: ``--log`` choices, built by :func:`pyro_vae.inference.loggers.build_loggers`.
LOGGERS = ("csv", "tensorboard")


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
    patience : int
        With a validation split: stop after this many evaluations in a row without a better
        validation ELBO (0: never stop early). Needs ``eval_every > 0``.
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
        validation ELBO where there is a validation split and ``eval_every > 0``, else the
        training curve). The rate changes between epochs; see :mod:`pyro_vae.inference.optim`.
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
    patience: int = 0
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
        check_choice("dtype", self.dtype, DTYPES)
        check_non_negative_int("eval_every", self.eval_every)
        check_non_negative_int("patience", self.patience)
        if self.patience and not self.eval_every:
            raise ValueError(f"patience {self.patience} counts evaluations, but eval_every is 0 "
                             f"(no evaluation during training); give eval_every >= 1")
        check_choice("objective", self.objective, OBJECTIVES)
        check_positive_int("particles", self.particles)
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


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss (or parameters); the last checkpoint is left as it was."""


def _checkpoint_note(state: TrainState) -> str:
    if state.epoch == 0:
        return "No epoch finished, so nothing was saved"
    return f"The epoch was discarded; the last checkpoint (epoch {state.epoch}) is intact"


@dataclass
class StepInfo:
    """What :meth:`Callback.on_step_end` is told about the step just taken.

    ``loss`` is the batch's mean negative objective as a device tensor: reading it
    (``.item()``) synchronizes with the device, so a callback that does so at every step
    slows training down; keep it, or read it every N steps.
    """

    step: int  # global step, counted from 1 over the whole run (resumes included)
    epoch: int  # the epoch it belongs to (1, 2, ...)
    loss: torch.Tensor  # () tensor on the training device, detached
    lr: float  # the learning rate of the step


class Callback:
    """Hooks into :func:`fit`; in a distributed run they run on rank 0 only.

    ``on_train_start`` runs once the state is set up (``state.epoch`` > 0 on a resume),
    ``on_step_end`` after each optimizer step, ``on_epoch_end`` after each finished and
    checked epoch (``state.history[-1]`` is its record; ``state.improved`` says whether its
    validation ELBO is the best so far), ``on_train_end`` when training ends, and
    ``on_exception`` when :func:`fit` raises (errors inside it are ignored, so the original
    one is what surfaces).

    A callback stops training by setting ``state.should_stop = True`` (in any hook): the
    current epoch is finished, recorded and passed to ``on_epoch_end`` (checkpointed by a run
    directory), then :func:`fit` returns. Stopping at epoch boundaries keeps every checkpoint
    at one and resume exact; a stop requested during an epoch waits for its end.

    Example
    -------
    >>> class StopAt(Callback):
    ...     def __init__(self, step):
    ...         self.stop_step = step
    ...     def on_step_end(self, model, state, info):
    ...         state.should_stop = state.should_stop or info.step >= self.stop_step
    """

    def on_train_start(self, model, state: TrainState) -> None:
        pass

    def on_step_end(self, model, state: TrainState, info: StepInfo) -> None:
        pass

    def on_epoch_end(self, model, state: TrainState) -> None:
        pass

    def on_train_end(self, model, state: TrainState) -> None:
        pass

    def on_exception(self, model, state: TrainState, error: BaseException) -> None:
        pass


@dataclass
class TrainState:
    """Everything needed to continue training exactly where it stopped.

    ``schedule`` is the learning-rate schedule; a stateful one (plateau) is saved in
    :meth:`state_dict`. ``should_stop`` is a request from a callback (see :class:`Callback`);
    it is not saved: a resumed run trains on.
    """

    optimizer: torch.optim.Optimizer
    epoch: int = 0  # finished epochs
    step: int = 0  # finished optimizer steps
    seconds: float = 0.0  # training time so far (evaluation included)
    history: list = field(default_factory=list)
    # Model selection on the validation ELBO (None/0 without a validation split).
    best_epoch: int | None = None
    best_score: float | None = None
    evaluations_since_best: int = 0
    stopped_early: bool = False
    # The best epoch's parameters (CPU copies). Not in state_dict(): a run directory keeps
    # them in their own file (best.pt) and passes them back as resume_state["best_model"].
    best_model: dict | None = None
    schedule: LRSchedule | None = None
    should_stop: bool = False

    @property
    def improved(self) -> bool:
        """Whether the epoch just finished is the best so far on the validation split."""
        return self.best_epoch is not None and self.best_epoch == self.epoch

    def consider(self, model, epoch: int, score: float) -> None:
        """Record the validation ELBO ``score`` of ``epoch``; keep the parameters if it is the best."""
        if self.best_score is None or score > self.best_score:
            self.best_epoch, self.best_score, self.evaluations_since_best = epoch, score, 0
            self.best_model = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            self.evaluations_since_best += 1

    def state_dict(self) -> dict:
        """A dict of tensors and plain values (loadable with ``weights_only=True``)."""
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        state = {
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "seconds": self.seconds,
            "history": self.history,
            "rng": rng,
            "selection": {"best_epoch": self.best_epoch, "best_score": self.best_score,
                          "evaluations_since_best": self.evaluations_since_best,
                          "stopped_early": self.stopped_early},
        }
        if self.schedule is not None and self.schedule.stateful:
            state["schedule"] = self.schedule.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])
        self.seconds = float(state["seconds"])
        self.history = list(state["history"])
        selection = state.get("selection") or {}  # absent in checkpoints of older versions
        self.best_epoch = selection.get("best_epoch")
        self.best_score = selection.get("best_score")
        self.evaluations_since_best = int(selection.get("evaluations_since_best", 0))
        self.stopped_early = bool(selection.get("stopped_early", False))
        self.best_model = state.get("best_model")
        if self.schedule is not None and self.schedule.stateful:
            if "schedule" not in state:
                raise ValueError(f"train_state has no 'schedule' entry, which a "
                                 f"{type(self.schedule).__name__} schedule resumes from")
            self.schedule.load_state_dict(state["schedule"])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])


@dataclass
class FitResult:
    """What :func:`fit` returns. ``history`` holds one dict per epoch (nats per example)."""

    history: list
    epochs: int
    steps: int
    seconds: float
    state: TrainState
    best_epoch: int | None = None  # the epoch whose parameters the model ends with
    stopped_early: bool = False
    stop_requested: bool = False  # a callback set state.should_stop


@torch.no_grad()
def _held_out_elbo(model, x, y, world: int) -> float:
    """The single-sample ELBO of ``x`` (validation or test) with
    :func:`~pyro_vae.inference.evaluate.elbo`'s defaults, without its input checks: fit
    validated and placed the data once. Under torchrun each rank scores its shard."""
    def per_example(xs, ys):
        return _elbo(model, xs, ys, num_samples=1, batch_size=1000, sample_chunk=100).per_example

    if world > 1:
        return distributed.sharded_mean(per_example, x, y)
    return per_example(x, y).mean().item()


@contextmanager
def _evaluation_rng(seed: int, epoch: int, device: torch.device):
    """A block whose random draws come from a stream of their own, a function of (seed, epoch).

    Evaluation during training must not consume the training stream: otherwise evaluating
    at one more epoch (a resumed run with another ``eval_every`` schedule, say) would change
    every later batch and draw. The training stream is restored on exit.
    """
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed((seed * 1_000_003 + epoch) % 2**63)
        yield


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


def validate_training_data(model, data) -> None:
    """Raise ``ValueError`` if ``data`` cannot train ``model`` (labels, shapes, pixel support).

    :func:`fit` calls it; a caller may call it earlier, before it commits to anything.
    """
    x_test, y_test = data.split("test")
    if x_test.shape[0] == 0:
        raise ValueError(f"data {data.name!r} has an empty test split (x_test has shape "
                         f"{tuple(x_test.shape)}); the final evaluation needs test examples")
    if model.needs_labels and (data.y_train is None or y_test is None):
        raise ValueError(f"model {type(model).__name__} needs labels but dataset {data.name!r} has none")
    unlabelled = 0 if y_test is None or not y_test.numel() else int((y_test < 0).sum())
    if unlabelled:
        raise ValueError(f"{data.name} test data has {unlabelled} unlabelled rows (y = -1); the test "
                         f"split scores every model and must be fully labelled")
    if model.needs_labels and data.y_train is not None and data.y_train.numel():
        unlabelled = int((data.y_train < 0).sum())
        if unlabelled:
            raise ValueError(
                f"model {type(model).__name__} needs every label but {data.name} training data has "
                f"{unlabelled} unlabelled rows (y = -1); use --model m2 (semi-supervised)")
    x_train, y_train = data.x_train, data.y_train
    if data.binarize == "dynamic":
        # Grey levels are Bernoulli probabilities (False for NaN too); the likelihood then
        # sees 0/1 draws, so a draw is what it checks.
        if x_train.numel() and not bool(((x_train >= 0) & (x_train <= 1)).all()):
            raise ValueError(
                f"{data.name} training data: dynamic binarization needs grey levels in [0, 1], "
                f"got values in [{x_train.min().item():.4g}, {x_train.max().item():.4g}]"
            )
        x_train = torch.bernoulli(x_train[:1024])
        y_train = None if y_train is None else y_train[:1024]  # rows matching the checked draw
    model.validate_data(x_train, y_train, name=f"{data.name} training data")
    model.validate_data(x_test, y_test, name=f"{data.name} test data")


def fit(model, data, config: TrainConfig | None = None, callbacks=(), *,
        resume_state: dict | None = None) -> FitResult:
    """Train ``model`` on ``data.x_train`` by stochastic optimization of ``config.objective``.

    Parameters
    ----------
    model : GenerativeModel
        Any model/guide pair; it is moved to ``config.device`` and ``config.dtype``.
    data : pyro_vae.data.Dataset
        Training batches come from ``data.train_batches`` (from this process's shard under
        torchrun); ``data.x_test`` is evaluated every ``config.eval_every`` epochs.
    config : TrainConfig
    callbacks : sequence of Callback
        Called at the start, after each step (those that define ``on_step_end``), after each
        finished epoch (checkpointing, logging), at the end and on an exception; in a
        distributed run on rank 0 only. Any of them may stop training after the current
        epoch with ``state.should_stop = True`` (see :class:`Callback`).
    resume_state : dict or None
        A :meth:`TrainState.state_dict` to continue from (optimizer, RNG, epoch, history,
        a plateau schedule's state).

    Returns
    -------
    FitResult
        ``history[i]`` is ``{"epoch", "train_elbo" | "train_objective"[, "val_elbo" |
        "test_elbo"], "lr", "grad_norm"[, "kl_weight"]}``: the epoch's average training
        objective (``train_elbo`` when it is the ELBO, see :func:`training_curve_key`),
        where evaluated the ELBO of the validation split, or of the test split when there is
        no validation split (nats per example), the epoch's learning rate, the mean over its
        steps of the gradient's global L2 norm before clipping, and, when the KL is weighted
        (``beta != 1`` or a warm-up), the epoch's KL weight.

    Notes
    -----
    With a validation split (``data.x_val`` not empty), every evaluation scores it, the
    parameters of the best validation ELBO are kept, training stops after
    ``config.patience`` evaluations without improvement (if > 0), and the model ends with
    the best parameters (``FitResult.best_epoch``); the test split is not looked at. A
    non-finite validation/test ELBO is divergence (:class:`NonFiniteLossError`), raised
    before callbacks see the epoch.

    When stderr is not a terminal (a log file, CI), ``progress`` prints one line per epoch
    (:func:`progress_line`) instead of a progress bar.

    Launched by ``torchrun`` with several processes, each trains on its shard of every epoch
    (``batch_size`` examples per process and step) and DistributedDataParallel averages the
    gradients; the history is global and the same on every rank. See
    :mod:`pyro_vae.inference.distributed`.
    """
    config = TrainConfig() if config is None else config
    check_instance("config", config, TrainConfig, "build one with TrainConfig(epochs=...)")
    check_instance("model", model, torch.nn.Module, "pass a model such as VAE(...)")
    if not (callable(getattr(model, "model", None)) and callable(getattr(model, "guide", None))):
        raise TypeError(f"model must have model(x, y) and guide(x, y) methods (a pyro-vae model); "
                        f"{type(model).__name__} has not")
    check_instance("data", data, Dataset, "load one with load_dataset(DataConfig(...))")
    if data.x_train.shape[0] == 0:
        raise ValueError(f"data {data.name!r} has an empty training split (x_train has shape "
                         f"{tuple(data.x_train.shape)}); nothing to train on")
    # Under torchrun (several processes) this joins the process group and picks cuda:LOCAL_RANK.
    device = distributed.setup(resolve_device(config.device))
    world, main = distributed.world_size(), distributed.is_main_process()
    model.to(device=device, dtype=DTYPES[config.dtype])
    data = data.to(device=device, dtype=DTYPES[config.dtype])
    # Model selection on the validation split where there is one; else the test ELBO is logged.
    selecting = data.x_val.shape[0] > 0
    x_held, y_held = data.split("val" if selecting else "test")
    held_key = "val_elbo" if selecting else "test_elbo"
    if config.patience and not selecting:
        raise ValueError(f"patience {config.patience} needs a validation split to watch; "
                         f"give val_fraction > 0 (--val-fraction)")
    # Validate the data once here, so the hot path can run with validation off.
    validate_training_data(model, data)

    objective = build_objective(config.objective, particles=config.particles, beta=config.beta,
                                kl_warmup=config.kl_warmup)
    optimizer = build_optimizer(model.parameters(), config.lr, config.optimizer,
                                weight_decay=config.weight_decay, momentum=config.momentum or 0.0)
    schedule = build_schedule(config.lr_schedule, config.lr, epochs=config.epochs, lr_min=config.lr_min,
                              step_epochs=config.lr_step_epochs, gamma=config.lr_gamma,
                              patience=config.lr_patience)
    params = [p for p in model.parameters() if p.is_floating_point()]
    # The objective as a module; with several processes DDP wraps it and averages gradients.
    loss_fn = distributed.wrap(distributed.LossModule(model, objective), device)
    state = TrainState(optimizer=optimizer, schedule=schedule)
    if resume_state is not None:
        state.load_state_dict(resume_state)
    else:
        pyro.set_rng_seed(config.seed)

    show_progress = config.progress and main  # other ranks draw no bar and read no loss
    # Not a terminal (a log file, CI): one plain line per epoch instead of a redrawn bar.
    progress_lines = show_progress and not _is_terminal(sys.stderr)
    curve_key = training_curve_key(config, model)
    kl_weighted = config.beta != 1 or bool(config.kl_warmup)
    # plateau watches the validation ELBO where it is computed, else the training curve.
    plateau_key = held_key if selecting and config.eval_every else curve_key
    if callbacks is None or isinstance(callbacks, (str, bytes)) or not hasattr(callbacks, "__iter__"):
        raise TypeError(f"callbacks must be a sequence of Callback objects (or ()), got {callbacks!r}")
    callbacks = list(callbacks) if main else []  # rank 0 alone checkpoints and logs
    step_callbacks = [c for c in callbacks if type(c).on_step_end is not Callback.on_step_end]
    try:
        for callback in callbacks:
            callback.on_train_start(model, state)
        while state.epoch < config.epochs and not state.stopped_early and not state.should_stop:
            _train_epoch(model, data, config, state, loss_fn, objective, params, held=(x_held, y_held),
                         keys=(curve_key, held_key, plateau_key), selecting=selecting, world=world,
                         device=device, kl_weighted=kl_weighted, show_progress=show_progress,
                         progress_lines=progress_lines, step_callbacks=step_callbacks)
            for callback in callbacks:
                callback.on_epoch_end(model, state)
            if world > 1:  # a stop asked for on rank 0 stops every rank after the same epoch
                flag = torch.tensor([float(state.should_stop)], device=device)
                state.should_stop = bool(distributed.all_reduce_sum(flag).item() > 0)
        stop_requested = state.should_stop
        if state.best_model is not None:  # end with the parameters that scored best on validation
            model.load_state_dict(state.best_model)
        for callback in callbacks:
            callback.on_train_end(model, state)
    except BaseException as err:
        for callback in callbacks:
            try:
                callback.on_exception(model, state, err)
            except Exception:  # noqa: BLE001  (the original error is the one to report)
                pass
        raise
    distributed.dump_rank_state(model)  # test hook; no-op unless distributed and asked for
    return FitResult(history=state.history, epochs=state.epoch, steps=state.step,
                     seconds=state.seconds, state=state, best_epoch=state.best_epoch,
                     stopped_early=state.stopped_early, stop_requested=stop_requested)


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _grad_norm(grads: list, like: torch.Tensor) -> torch.Tensor:
    """The global L2 norm of ``grads`` as a device tensor (no host sync); 0 without gradients."""
    if not grads:
        return torch.zeros((), device=like.device, dtype=like.dtype)
    if hasattr(torch.nn.utils, "get_total_norm"):  # torch >= 2.6: one foreach kernel
        return torch.nn.utils.get_total_norm(grads)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


def _clip(params: list, max_norm: float, norm: torch.Tensor) -> None:
    """Scale the gradients of ``params`` in place by ``min(1, max_norm / (norm + 1e-6))``
    (torch's ``clip_grad_norm_``, given the norm already computed; no host sync)."""
    if hasattr(torch.nn.utils, "clip_grads_with_norm_"):  # torch >= 2.6
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
        return
    coef = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    for p in params:
        if p.grad is not None:
            p.grad.mul_(coef.to(p.grad.dtype))


def _train_epoch(model, data, config, state, loss_fn, objective, params, *, held, keys, selecting,
                 world, device, kl_weighted, show_progress, progress_lines, step_callbacks) -> None:
    """One epoch: the steps, the once-per-epoch host read and checks, evaluation, the record.

    Leaves ``state`` advanced by the epoch (its record appended, a stateful schedule told
    the watched score) or raises :class:`NonFiniteLossError` with ``state`` untouched.
    """
    curve_key, held_key, plateau_key = keys
    optimizer = state.optimizer
    started = time.perf_counter()
    epoch = state.epoch + 1
    objective.set_epoch(epoch)
    # Schedules are functions of the epoch (plateau: of its saved state): a resumed run
    # recomputes the rate from the checkpoint's epoch.
    lr = state.schedule.lr(epoch)
    for group in optimizer.param_groups:
        group["lr"] = lr
    model.train()
    step_losses = []  # per-step loss tensors, kept on the device until the epoch ends
    step_norms = []  # per-step gradient norms (before clipping), likewise
    n_seen = 0
    if world > 1:  # this process's shard; its RNG stream reseeded from (seed, epoch, rank)
        distributed.seed_epoch(config.seed, epoch)
        batches, num_batches = distributed.shard_batches(data, config.batch_size, config.seed, epoch)
    else:
        batches = data.train_batches(config.batch_size)
        num_batches = -(-data.x_train.shape[0] // config.batch_size)
    bar = tqdm(batches, total=num_batches, desc=f"epoch {epoch}/{config.epochs}",
               disable=not show_progress or progress_lines, leave=False)
    anomaly = torch.autograd.set_detect_anomaly(True) if config.detect_anomaly else nullcontext()
    # Validation off (the data were checked above); no param-store registration (the torch
    # optimizer owns the parameters): both would cost time at every step.
    with pyro.validation_enabled(False), anomaly, model.optimized_by_torch():
        for x, y in bar:
            y = labels_for(model, y)
            try:
                loss = loss_fn(x, y)  # sum over the batch of -objective
            except torch.linalg.LinAlgError as err:  # e.g. a covariance no longer positive definite
                raise NonFiniteLossError(
                    f"linear algebra failed at epoch {epoch}, step {len(step_losses) + 1} of the epoch "
                    f"({str(err).strip().splitlines()[0]}): the parameters diverged; likely cause: a "
                    f"learning rate too high (--lr). {_checkpoint_note(state)}") from err
            optimizer.zero_grad(set_to_none=True)
            try:
                (loss / x.shape[0]).backward()
            except RuntimeError as err:
                # Anomaly mode raises at the first backward operation that returns NaN;
                # any other error (out of memory, a device fault) goes up as it is.
                if not (config.detect_anomaly and "returned nan values" in str(err)):
                    raise
                raise NonFiniteLossError(
                    f"non-finite gradient at epoch {epoch}, step {len(step_losses) + 1} of the "
                    f"epoch (global step {state.step + len(step_losses) + 1}): "
                    f"{str(err).strip().splitlines()[0]} (the forward operation that computed "
                    f"it is in the warning above). {_checkpoint_note(state)}"
                ) from err
            grads = [p.grad for p in params if p.grad is not None]
            norm = _grad_norm(grads, loss)  # () on the device, before clipping
            if config.clip_grad is not None:
                _clip(params, config.clip_grad, norm)
            optimizer.step()
            step_losses.append(loss.detach())
            step_norms.append(norm)
            n_seen += x.shape[0]
            if show_progress and not progress_lines and len(step_losses) % 10 == 0:
                bar.set_postfix(loss=f"{loss.item() / x.shape[0]:.2f}")
            if step_callbacks:
                info = StepInfo(step=state.step + len(step_losses), epoch=epoch,
                                loss=step_losses[-1] / x.shape[0], lr=lr)
                for callback in step_callbacks:
                    callback.on_step_end(model, state, info)
    losses = torch.stack(step_losses)
    if world > 1:  # every rank took as many steps on as many examples: sum step i's loss
        losses = distributed.all_reduce_sum(losses.double())
        n_seen *= world
    finite = torch.isfinite(losses)
    if not bool(finite.all()):
        bad_step = int((~finite).nonzero()[0, 0]) + 1
        raise NonFiniteLossError(
            f"non-finite loss at epoch {epoch}, step {bad_step} of the epoch (global step "
            f"{state.step + bad_step}); likely causes: a learning rate too high (--lr), "
            f"pixels outside the likelihood's support, or a variance collapsing to zero. "
            f"{_checkpoint_note(state)}; rerun with --detect-anomaly to locate the operation"
        )
    # A NaN/Inf gradient with a finite loss (at the epoch's last step) poisons the
    # parameters without showing in the losses: one reduction and one sync per epoch.
    # The gradient norms (identical on every rank: DDP averaged the gradients) come with it.
    finite_params = torch.stack([torch.isfinite(p).all() for p in params]).all() if params else None
    grad_norm = torch.stack(step_norms).double().mean().item()
    if (finite_params is not None and not bool(finite_params)) or not math.isfinite(grad_norm):
        raise NonFiniteLossError(
            f"non-finite parameters after epoch {epoch} (global step "
            f"{state.step + len(step_losses)} at the latest): a gradient was NaN or infinite "
            f"although the loss was finite; likely causes: a learning rate too high (--lr) or "
            f"an operation with an unbounded derivative (sqrt or log near 0). "
            f"{_checkpoint_note(state)}; rerun with --detect-anomaly to locate the operation"
        )
    record = {"epoch": epoch, curve_key: -losses.sum().item() / n_seen}
    if config.eval_every and (epoch % config.eval_every == 0 or epoch == config.epochs):
        model.eval()
        x_held, y_held = held
        with _evaluation_rng(config.seed, epoch, device):
            score = _held_out_elbo(model, x_held, labels_for(model, y_held), world)
        if not math.isfinite(score):
            raise NonFiniteLossError(
                f"non-finite {held_key.replace('_', ' ').replace('elbo', 'ELBO')} ({score}) "
                f"after epoch {epoch}: the model diverged; likely causes: a learning rate too "
                f"high (--lr) or a variance collapsing to zero. {_checkpoint_note(state)}")
        record[held_key] = score
        if selecting:
            state.consider(model, epoch, score)
    record["lr"] = lr
    record["grad_norm"] = grad_norm
    if kl_weighted:
        record["kl_weight"] = objective.kl_weight
    if state.schedule.stateful and plateau_key in record:
        state.schedule.observe(record[plateau_key])  # before the checkpoint saves its state
    state.epoch = epoch
    state.step += len(step_losses)
    state.history.append(record)
    epoch_seconds = time.perf_counter() - started
    state.seconds += epoch_seconds
    if config.patience and state.evaluations_since_best >= config.patience:
        state.stopped_early = True  # recorded before the checkpoint, so resume knows
    if progress_lines:
        print(progress_line(record, config.epochs, epoch_seconds), file=sys.stderr, flush=True)


def progress_line(record: dict, epochs: int, seconds: float) -> str:
    """The line printed per epoch when stderr is not a terminal.

    Example
    -------
    >>> progress_line({"epoch": 3, "train_elbo": -45.123, "test_elbo": -46.0, "lr": 1e-3,
    ...                "grad_norm": 12.5}, 20, 1.234)
    'epoch 3/20 train_elbo -45.12 test_elbo -46.00 lr 0.001 grad_norm 12.5 1.23 s'
    """
    parts = [f"epoch {record['epoch']}/{epochs}"]
    for key, value in record.items():
        if key in ("epoch", "lr", "grad_norm", "kl_weight"):
            continue
        parts.append(f"{key} {value:.2f}")
    parts.append(f"lr {record['lr']:.4g}")
    if "grad_norm" in record:
        parts.append(f"grad_norm {record['grad_norm']:.4g}")
    if "kl_weight" in record:
        parts.append(f"kl_weight {record['kl_weight']:.4g}")
    return " ".join(parts) + f" {seconds:.2f} s"
