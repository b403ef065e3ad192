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

import pyro
import torch
from tqdm.auto import tqdm

from ..data.streaming import training_data
from ..errors import check_instance
from ..models.base import labels_for
from . import distributed
from .batch_sources import batch_source
from .config import (  # noqa: F401  (re-exported: the loop's public names stay importable here)
    DTYPES,
    LOGGERS,
    TrainConfig,
    check_device_name,
    resolve_device,
    selection_key,
    stored_device,
    training_curve_key,
)
from .held_out import evaluation_rng, held_out_bound, held_out_elbo
from .objectives import build_objective
from .optim import (  # noqa: F401
    LR_SCHEDULES,
    OPTIMIZERS,
    LRSchedule,
    build_optimizer,
    build_schedule,
    clip_gradients,
    total_grad_norm,
)
from .progress import is_terminal, progress_line  # noqa: F401  (progress_line: re-exported)
from .state import Callback, FitResult, NonFiniteLossError, StepInfo, TrainState, _checkpoint_note  # noqa: F401
from .streamed_shards import streamed_loader
from .training_data import validate_training_data  # noqa: F401  (re-exported)


def fit(model, data, config: TrainConfig | None = None, callbacks=(), *,
        resume_state: dict | None = None) -> FitResult:
    """Train ``model`` on ``data.x_train`` by stochastic optimization of ``config.objective``.

    Parameters
    ----------
    model : GenerativeModel
        Any model/guide pair; it is moved to ``config.device`` and ``config.dtype``.
    data : pyro_vae.data.DataSplits, tensor, (x, y) tensors, torch Dataset or DataLoader
        A :class:`~pyro_vae.data.DataSplits`: training batches come from ``data.train_batches``
        (from this process's shard under torchrun), its validation split (else its test
        split) is evaluated every ``config.eval_every`` epochs. A tensor ``(n, D)`` or
        ``(n, C, H, W)``, an ``(x, y)`` pair or a ``TensorDataset`` trains on the device as
        a DataSplits does; a torch Dataset or a DataLoader is streamed, one batch moved to the
        device at a time (under torchrun, this process's shard: a DataLoader needs a
        ``DistributedSampler``, see :mod:`~pyro_vae.inference.streamed_shards`).
        Such data is all training data, used as given (no held-out evaluation, no
        binarization): see :mod:`pyro_vae.data.streaming`.
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
        "test_elbo"][, "val_bound"], "lr", "grad_norm"[, "kl_weight"]}``: the epoch's average
        training objective (``train_elbo`` when it is the ELBO, see :func:`training_curve_key`),
        where evaluated the ELBO of the validation split, or of the test split when there is
        no validation split (nats per example), with ``select_on="bound"`` and an
        importance-weighted objective the validation split's bound of its K (``val_bound``),
        the epoch's learning rate, the mean over its
        steps of the gradient's global L2 norm before clipping, and, when the KL is weighted
        (``beta != 1`` or a warm-up), the epoch's KL weight.

    Notes
    -----
    With a validation split (``data.x_val`` not empty), every evaluation scores it, the
    parameters of the best validation ELBO (or ``val_bound``) are kept, training stops after
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
    device = resolve_device(config.device)
    original = data
    data, loader = training_data(data, config.batch_size, device)
    # Under torchrun (several processes) this joins the process group and picks cuda:LOCAL_RANK.
    device = distributed.setup(device)
    world, main = distributed.world_size(), distributed.is_main_process()
    if loader is not None:  # under torchrun: this process's shard (refused where it cannot be cut)
        loader = streamed_loader(original, loader, config.batch_size, config.seed)
    model.to(device=device, dtype=DTYPES[config.dtype])
    if data is not None:
        data = data.to(device=device, dtype=DTYPES[config.dtype])
    # Model selection on the validation split where there is one; else the test ELBO is logged
    # (data given as tensors or a loader has neither: nothing is evaluated during training).
    selecting = data is not None and data.x_val.shape[0] > 0
    held = None if data is None else data.split("val" if selecting else "test")
    held = held if held is not None and held[0].shape[0] else None
    held_key = "val_elbo" if selecting else "test_elbo"
    if config.patience and not selecting:
        raise ValueError(f"patience {config.patience} needs a validation split to watch; "
                         f"give val_fraction > 0 (--val-fraction)")
    if config.select_on != "elbo" and not selecting:
        raise ValueError(f"select_on {config.select_on!r} chooses a score of the validation split, and there "
                         f"is none; give val_fraction > 0 (--val-fraction)")
    # Validate the data once here, so the hot path can run with validation off (a loader's
    # batches are checked as they come: see pyro_vae.data.streaming.loader_batches).
    if data is not None:
        validate_training_data(model, data)
    source = batch_source(data, loader, model=model, batch_size=config.batch_size, seed=config.seed, device=device)

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
    progress_lines = show_progress and not is_terminal(sys.stderr)
    curve_key = training_curve_key(config, model)
    kl_weighted = config.beta != 1 or bool(config.kl_warmup)
    # plateau watches the selection score where it is computed, else the training curve.
    # select_on="bound" with an importance-weighted objective: select on that bound (val_bound).
    select_key = selection_key(config) if selecting else held_key
    bound_samples = getattr(objective, "bound_samples", 1)
    plateau_key = select_key if selecting and config.eval_every else curve_key
    if held is None:
        plateau_key = curve_key
    if callbacks is None or isinstance(callbacks, (str, bytes)) or not hasattr(callbacks, "__iter__"):
        raise TypeError(f"callbacks must be a sequence of Callback objects (or ()), got {callbacks!r}")
    callbacks = list(callbacks) if main else []  # rank 0 alone checkpoints and logs
    step_callbacks = [c for c in callbacks if type(c).on_step_end is not Callback.on_step_end]
    try:
        for callback in callbacks:
            callback.on_train_start(model, state)
        while state.epoch < config.epochs and not state.stopped_early and not state.should_stop:
            _train_epoch(model, source, config, state, loss_fn, objective, params, held=held,
                         keys=(curve_key, held_key, select_key, plateau_key), bound_samples=bound_samples,
                         selecting=selecting, world=world,
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


@contextmanager
def flushed_denormals(device: torch.device):
    """Within the block, subnormal floats count as zero on the CPU (see
    ``TrainConfig.flush_denormal``); afterwards IEEE arithmetic again. A no-op on other devices
    and on CPUs without the flag."""
    if device.type != "cpu" or not torch.set_flush_denormal(True):
        yield
        return
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def _train_epoch(model, source, config, state, loss_fn, objective, params, *, held, keys, bound_samples,
                 selecting, world, device, kl_weighted, show_progress, progress_lines, step_callbacks) -> None:
    """One epoch: the steps, the once-per-epoch host read and checks, evaluation, the record.

    Leaves ``state`` advanced by the epoch (its record appended, a stateful schedule told
    the watched score) or raises :class:`NonFiniteLossError` with ``state`` untouched.
    """
    curve_key, held_key, select_key, plateau_key = keys
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
    step_parts = []  # per-step (P,) tensors of the objective's parts (sums over the batch), likewise
    part_names = None  # the parts' names, from the first step
    step_norms = []  # per-step gradient norms (before clipping), likewise
    n_seen = 0
    # In memory, this process's shard or a DataLoader's (pyro_vae.inference.batch_sources).
    batches, num_batches = source.epoch(epoch)
    bar = tqdm(batches, total=num_batches, desc=f"epoch {epoch}/{config.epochs}",
               disable=not show_progress or progress_lines, leave=False)
    anomaly = torch.autograd.set_detect_anomaly(True) if config.detect_anomaly else nullcontext()
    flushed = flushed_denormals(device) if config.flush_denormal else nullcontext()
    # Validation off (the data were checked above); no param-store registration (the torch
    # optimizer owns the parameters): both would cost time at every step.
    with pyro.validation_enabled(False), anomaly, flushed, model.optimized_by_torch():
        for x, y in bar:
            y = labels_for(model, y)
            try:
                loss, parts = loss_fn(x, y)  # sum over the batch of -objective; its parts
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
            norm = total_grad_norm(grads, loss)  # () on the device, before clipping
            if config.clip_grad is not None:
                clip_gradients(params, config.clip_grad, norm)
            optimizer.step()
            step_losses.append(loss.detach())
            if part_names is None:
                part_names = tuple(parts)
            elif tuple(parts) != part_names:
                raise RuntimeError(f"objective {objective.name!r} returned the parts {sorted(parts)} at step "
                                   f"{len(step_losses)} of epoch {epoch}, {sorted(part_names)} before")
            if part_names:
                step_parts.append(torch.stack([parts[name].detach() for name in part_names]))
            step_norms.append(norm)
            n_seen += x.shape[0]
            if show_progress and not progress_lines and len(step_losses) % 10 == 0:
                bar.set_postfix(loss=f"{loss.item() / x.shape[0]:.2f}")
            if step_callbacks:
                info = StepInfo(step=state.step + len(step_losses), epoch=epoch,
                                loss=step_losses[-1] / x.shape[0], lr=lr)
                for callback in step_callbacks:
                    callback.on_step_end(model, state, info)
    if not step_losses:
        raise ValueError(f"the training data yielded no batch in epoch {epoch}; nothing to train on")
    source.check_epoch(epoch)  # a DataLoader's labels and pixel ranges, before the epoch counts
    losses = torch.stack(step_losses)
    part_sums = torch.stack(step_parts).double().sum(0) if step_parts else None  # (P,)
    if world > 1:  # every rank took as many steps on as many examples: sum step i's loss
        losses = distributed.all_reduce_sum(losses.double())
        part_sums = None if part_sums is None else distributed.all_reduce_sum(part_sums)
        n_seen *= world
    finite = torch.isfinite(losses)
    if not bool(finite.all()):
        source.check_non_finite(epoch)  # bad data, not divergence
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
        source.check_non_finite(epoch)
        raise NonFiniteLossError(
            f"non-finite parameters after epoch {epoch} (global step "
            f"{state.step + len(step_losses)} at the latest): a gradient was NaN or infinite "
            f"although the loss was finite; likely causes: a learning rate too high (--lr) or "
            f"an operation with an unbounded derivative (sqrt or log near 0). "
            f"{_checkpoint_note(state)}; rerun with --detect-anomaly to locate the operation"
        )
    record = {"epoch": epoch, curve_key: -losses.sum().item() / n_seen}
    if part_sums is not None:  # the ELBO's parts per example, unweighted (finite with the loss)
        for name, total in zip(part_names, part_sums.tolist()):
            if math.isfinite(total):
                record[f"train_{name}"] = total / n_seen
    if held is not None and config.eval_every and (epoch % config.eval_every == 0 or epoch == config.epochs):
        model.eval()
        x_held, y_held = held
        with evaluation_rng(config.seed, epoch, device):
            labels = labels_for(model, y_held)
            record[held_key], held_parts = held_out_elbo(model, x_held, labels, world)
            split = held_key.split("_")[0]  # val or test
            record.update({f"{split}_{name}": value for name, value in held_parts.items() if math.isfinite(value)})
            if select_key != held_key:
                record[select_key] = held_out_bound(model, x_held, labels, bound_samples, world)
        for key in dict.fromkeys((held_key, select_key)):
            if not math.isfinite(record[key]):
                raise NonFiniteLossError(
                    f"non-finite {key.replace('_', ' ').replace('elbo', 'ELBO')} ({record[key]}) "
                    f"after epoch {epoch}: the model diverged; likely causes: a learning rate too "
                    f"high (--lr) or a variance collapsing to zero. {_checkpoint_note(state)}")
        if selecting:
            state.consider(model, epoch, record[select_key])
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
