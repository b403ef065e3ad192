"""What the training loop carries from epoch to epoch, and how others hook into it.

:class:`TrainState` is everything a checkpoint needs to continue exactly (optimizer, RNG,
history, model selection, schedule); :class:`Callback` is the hook interface; a
:class:`FitResult` is what :func:`pyro_vae.inference.fit` returns.

Example
-------
>>> from pyro_vae.inference.state import Callback
>>> class Count(Callback):
...     def on_epoch_end(self, model, state):
...         print(state.epoch)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .optim import LRSchedule


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
    validation score is the best so far), ``on_train_end`` when training ends, and
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
    # Model selection on the validation ELBO or val_bound (None/0 without a validation split).
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
        """Record the validation score of ``epoch``; keep the parameters if it is the best."""
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
