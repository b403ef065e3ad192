"""Run directories: train a model into a directory, resume it, load it back, evaluate it.

A run directory holds

- ``config.json``: every setting needed to rebuild the model and resume (plus library
  versions), plain JSON: nothing in it is executed. Its data settings hold absolute paths,
  ``data_spec`` the data's shapes and classes (so the model is rebuilt without the data:
  ``load_run(run_dir, data=False)``) and ``data_fingerprint`` the SHA-256 of the data as
  loaded (:mod:`pyro_vae.rundata`): a run whose data changed is not resumed or evaluated;
- ``checkpoint.pt``: model and optimizer state, epoch, step, RNG states, written atomically
  after every epoch;
- ``best.pt`` (with a validation split): the parameters of the epoch with the best
  validation score (the ELBO, or ``val_bound`` under ``select_on="bound"``), written when
  that epoch ends; the final evaluation and every later command use them;
- ``metrics.json``: the training history and the ``test`` object of
  :func:`pyro_vae.inference.evaluate.evaluate`, with ``test.test_set_sha256`` identifying
  the test tensor it was scored on;
- ``test_per_example.npz``: the per-example test ELBOs and log-likelihoods behind ``test``
  (float64 arrays, loaded without pickle), for paired comparisons;
- ``figures/``: PNGs of the training curve, reconstructions and samples.

Launched by ``torchrun`` (data-parallel training, :mod:`pyro_vae.inference.distributed`),
every process trains, rank 0 alone writes the directory and runs the final evaluation, and
the other processes return their metrics with ``test`` set to None.

Example
-------
>>> from pyro_vae.runs import RunConfig, train_run
>>> from pyro_vae.inference import TrainConfig
>>> metrics = train_run(RunConfig(model="vae", train=TrainConfig(epochs=2, progress=False),
...                               eval_samples=10), "/tmp/pyro-vae-doc-run", overwrite=True)
>>> metrics["epochs"], sorted(metrics["test"])[:3]
(2, ['bound', 'conditional', 'discrete'])
"""

from __future__ import annotations

import dataclasses
import json
import sys
from contextlib import nullcontext
from pathlib import Path

import pyro
import torch

from .checkpoint import save_checkpoint
from .data import load_dataset, split_generator
from .errors import allocation_message, check_positive_int, is_allocation_error
from .evaluation_progress import EvaluationProgress, evaluation_key, parameters_key
from .inference import distributed
from .inference.config import DTYPES, SCORE_NAMES, resolve_device, selection_key, training_curve_key
from .inference.evaluate import evaluate_per_example, latent_diagnostics
from .inference.fingerprints import fingerprint
from .inference.state import Callback, NonFiniteLossError
from .inference.train import (
    fit,
    validate_training_data,
)
from .models.base import labels_for
from .runconfig import (  # noqa: F401  (RunConfig, build_model ...: importable from here as before)
    RunConfig,
    build_model,
    checkpoint_config,
    config_record,
    default_binarize,
    field_default,
    versions,
    without_defaults,
)
from .rundata import check_data, data_fingerprint, data_record, read_data_record  # noqa: F401
from .rundir_lock import RunDirLock
from .runfiles import (  # noqa: F401
    BEST_FILE,
    CHECKPOINT_FILE,
    CONFIG_FILE,
    FIGURES_DIR,
    METRICS_FILE,
    PER_EXAMPLE_FILE,
    check_out_dir,
    prepare_out_dir,
    read_config_json,
    read_metrics,
    read_per_example,
    write_config,
    write_metrics,
    write_per_example,
)
from .runload import (  # noqa: F401  (load_run, read_config ...: importable from here as before)
    LoadedRun,
    _load_best,
    _load_run_checkpoint,
    _load_run_data,
    _restore_model,
    load_run,
    read_config,
    read_run_config,
    trust_run_plugins,
)


class CheckpointCallback(Callback):
    """Saves model, optimizer and training state atomically after every epoch.

    An epoch with the best validation score so far also writes its parameters to ``best.pt``,
    before ``checkpoint.pt``: a process killed between the two resumes from the epoch before
    and rewrites the same ``best.pt``.
    """

    def __init__(self, run_dir: Path, config: RunConfig):
        self.path = Path(run_dir) / CHECKPOINT_FILE
        self.best_path = Path(run_dir) / BEST_FILE
        self.config = checkpoint_config(config)

    def on_epoch_end(self, model, state):
        if state.improved:
            save_checkpoint(self.best_path, {
                "model": model.state_dict(),
                "epoch": state.epoch,
                "config": json.dumps(self.config, sort_keys=True),
                "versions": versions(),
            })
        save_checkpoint(self.path, {
            "model": model.state_dict(),
            "train_state": state.state_dict(),
            "config": json.dumps(self.config, sort_keys=True),
            "versions": versions(),
        })


def _preflight(model, data, config: RunConfig) -> None:
    """One batch of the objective, forward only, before anything in the run directory is replaced.

    Sizes that fit each on their own can still not fit together (``--particles`` times the
    batch times the network): this finds out while the old run is intact. Its random draws
    come from a forked stream, so training is unchanged.
    """
    from .inference.objectives import build_objective  # noqa: PLC0415

    x = data.x_train[: config.train.batch_size].to(dtype=DTYPES[config.train.dtype])
    y = labels_for(model, None if data.y_train is None else data.y_train[: config.train.batch_size])
    if data.binarize == "dynamic":
        x = torch.bernoulli(x, generator=split_generator(config.data.split_seed, "preflight"))
    objective = build_objective(config.train.objective, particles=config.train.particles,
                                beta=config.train.beta, kl_warmup=config.train.kl_warmup)
    try:
        # With gradients on, as in training (TraceEnum_ELBO refuses a loss without them); no
        # backward pass, so the parameters are untouched.
        with torch.random.fork_rng(devices=[]), pyro.validation_enabled(False), model.optimized_by_torch():
            objective.loss(model, x, y)
    except (RuntimeError, MemoryError) as err:
        if not is_allocation_error(err):
            raise
        raise ValueError(f"one training step does not fit in memory with batch_size="
                         f"{config.train.batch_size}, particles={config.train.particles} and this "
                         f"model: {allocation_message(err)}; choose smaller sizes") from None


def train_run(config: RunConfig, out_dir, *, overwrite: bool = False, callbacks=()) -> dict:
    """Train ``config`` into ``out_dir`` and return its metrics (also written to metrics.json)."""
    out_dir = Path(out_dir)
    # Absolute data paths: the run finds its data from any working directory.
    config = dataclasses.replace(config, data=config.data.resolved())
    # Under torchrun: join the process group; rank 0 alone downloads first and writes out_dir.
    distributed.setup(resolve_device(config.train.device))
    main = distributed.is_main_process()
    # Everything that can be checked is, before anything in out_dir is replaced (on rank 0;
    # its refusal is raised on every rank, so no process waits for a failed one).
    distributed.on_main(lambda: check_out_dir(out_dir, overwrite))
    data = distributed.main_first(lambda: load_dataset(config.data))
    data_entries = distributed.on_main(lambda: data_record(data))  # hashed before training
    model = build_model(config, data)
    validate_training_data(model, data)
    _preflight(model, data, config)

    def prepare():
        prepare_out_dir(out_dir, overwrite)  # checks again, now under the lock
        write_config(out_dir, config_record(config, data_entries))

    # Rank 0 holds the directory's lock while it writes (released if the process dies).
    with RunDirLock(out_dir, create=True) if main else nullcontext():
        distributed.on_main(prepare)
        return _train_and_finish(config, out_dir, data, model, None, callbacks)


def resume_run(out_dir, epochs: int | None = None, *, device: str | None = None,
               detect_anomaly: bool | None = None, progress: bool | None = None, callbacks=()) -> dict:
    """Continue the run in ``out_dir`` up to ``epochs`` in total (default: its configured number).

    Ends where an uninterrupted run of that many epochs would have ended (same seed, same
    machine): the checkpoint restores parameters, optimizer and RNG states. A run whose
    training finished but which was stopped before writing ``metrics.json`` is completed
    (evaluated, figures drawn) by resuming it with its own number of epochs. A run stopped
    before its first checkpoint has nothing to resume: train it again with ``overwrite``.
    ``device``, ``detect_anomaly`` and ``progress`` apply to this call (None: as stored).
    """
    out_dir = Path(out_dir)
    config, record = read_run_config(out_dir)
    # The process group is joined before the lock, so that rank 0 alone holds it.
    distributed.setup(resolve_device(device if device is not None else config.train.device))
    with RunDirLock(out_dir) if distributed.is_main_process() else nullcontext():
        return _resume_locked(out_dir, config, record, epochs, device, detect_anomaly, callbacks, progress)


def _resume_locked(out_dir, config, record, epochs, device, detect_anomaly, callbacks, progress=None) -> dict:
    if not (out_dir / CHECKPOINT_FILE).exists():
        raise ValueError(
            f"run directory {str(out_dir)!r} has no checkpoint yet (it stopped before its first "
            f"epoch finished), so there is nothing to resume; rerun train with --out "
            f"{str(out_dir)!r} --overwrite"
        )
    checkpoint = _load_run_checkpoint(out_dir, config)
    done = int(checkpoint["train_state"]["epoch"])
    selection = checkpoint["train_state"].get("selection") or {}
    if selection.get("stopped_early") and _is_complete(out_dir, done):
        raise ValueError(
            f"the run in {str(out_dir)!r} stopped early at epoch {done} (no better "
            f"{SCORE_NAMES[selection_key(config.train)]} for {config.train.patience} evaluations) and is "
            f"complete; nothing to resume")
    if selection.get("best_epoch") is not None:
        checkpoint["train_state"]["best_model"] = _load_best(out_dir, config)["model"]
    changes = {"device": device} if device is not None else {}
    if detect_anomaly is not None:
        changes["detect_anomaly"] = detect_anomaly
    if progress is not None:  # this invocation's (--no-progress), not the stored one
        changes["progress"] = progress
    if epochs is not None:
        check_positive_int("epochs", epochs)
        changes["epochs"] = epochs
    config.train = dataclasses.replace(config.train, **changes)
    stopped = bool(selection.get("stopped_early"))
    if not stopped and (config.train.epochs < done
                        or (config.train.epochs == done and _is_complete(out_dir, done))):
        raise ValueError(
            f"epochs must exceed the {done} epochs the run in {str(out_dir)!r} has finished, "
            f"got {config.train.epochs}"
        )
    distributed.setup(resolve_device(config.train.device))  # under torchrun: every rank resumes
    data = distributed.main_first(lambda: _load_run_data(out_dir, config, record))
    model = build_model(config, data, init=False)
    _restore_model(model, checkpoint, out_dir)
    # Rank 0 rewrites config.json once every rank has read it (on_main waits for all first);
    # a run of an older version gains its data's spec and fingerprint from now on.
    data_entries = data_record(data, record.get("data_fingerprint"))
    distributed.on_main(lambda: write_config(out_dir, config_record(config, data_entries)))
    return _train_and_finish(config, out_dir, data, model, checkpoint["train_state"], callbacks)


def _train_and_finish(config, out_dir, data, model, resume_state, callbacks) -> dict:
    loggers = []
    if config.train.log and distributed.is_main_process():  # rank 0 alone writes the run
        from .inference.loggers import build_loggers  # noqa: PLC0415

        loggers = build_loggers(config.train.log, out_dir, hyperparameters=config.to_dict(),
                                image_shape=data.image_shape, num_classes=data.num_classes,
                                seed=config.train.seed)
    # Loggers before the checkpoint: an epoch killed between the two was logged but not saved;
    # the resume from the checkpoint before drops its log and trains it again. So no epoch is
    # checkpointed without being logged, and none is logged twice.
    result = fit(model, data, config.train,
                 callbacks=[*loggers, CheckpointCallback(out_dir, config), *callbacks],
                 resume_state=resume_state)
    if not distributed.is_main_process():  # rank 0 alone evaluates, draws and writes
        return {"model": config.model, "dataset": config.data.name, "epochs": result.epochs,
                "steps": result.steps, "seconds": result.seconds, "history": result.history,
                "test": None}
    data = data.to(device=model.device, dtype=model.dtype)
    test, per_example, progress = _evaluate(model, data, config, config.eval_samples, run_dir=out_dir)
    metrics = {
        "model": config.model,
        "dataset": config.data.name,
        "epochs": result.epochs,
        "steps": result.steps,
        "seconds": result.seconds,
        "parameters": sum(p.numel() for p in model.parameters()),
        "training_curve": training_curve_key(config.train, model),
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "history": result.history,
        "test": test,
    }
    write_per_example(out_dir, per_example)
    from .plots import write_run_figures  # noqa: PLC0415  (matplotlib only when figures are drawn)

    write_run_figures(model, data, result.history, out_dir / FIGURES_DIR, metrics=metrics)
    # Written last: a metrics.json for the checkpoint's epoch marks the run as complete.
    write_metrics(out_dir, metrics)
    progress.discard()
    return metrics


def _is_complete(run_dir: Path, epochs: int) -> bool:
    """Whether ``run_dir`` holds the final metrics of a run of ``epochs`` epochs."""
    try:
        return read_metrics(run_dir).get("epochs") == epochs
    except ValueError:
        return False


#: Training images the latent probe encodes (a logistic regression on their codes).
PROBE_TRAIN_EXAMPLES = 10000


def _evaluate(model, data, config, num_samples, *, run_dir=None) -> tuple[dict, dict, EvaluationProgress | None]:
    """The ``test`` object, its per-example values and the evaluation's saved progress.

    Likelihood figures, the test set's fingerprint and, where the model has a code, latent
    diagnostics. A non-finite figure is divergence (:class:`NonFiniteLossError`). With
    ``run_dir``, the evaluation's progress is kept there as it goes and an earlier one's
    continued (:mod:`pyro_vae.evaluation_progress`): the caller discards it once the results
    are written (``progress.discard()``).
    """
    # A fixed seed of its own, so the reported numbers do not depend on how training went.
    seed = config.train.seed + 1
    pyro.set_rng_seed(seed)
    x, y = data.split("test")
    labels = labels_for(model, y)
    store = None
    if run_dir is not None:
        settings = {"num_samples": num_samples, "elbo_samples": 1, "batch_size": 100, "sample_chunk": 100,
                    "seed": seed}
        parameters = parameters_key(model)  # hashed once: the key holds it too
        store = EvaluationProgress(run_dir, evaluation_key(model, x, labels, settings, parameters=parameters),
                                   batch_size=100, num_examples=x.shape[0], parameters=parameters)
    resume = None if store is None else store.load()
    if resume is not None and config.train.progress:
        print(f"continuing the saved evaluation ({resume['log_likelihood'].shape[0]:,} of {x.shape[0]:,} test "
              f"examples scored: {store.path})", file=sys.stderr, flush=True)
    test, per_example = evaluate_per_example(
        model, x, labels, num_samples=num_samples, progress=config.train.progress,
        pixel_max=data.pixel_max if data.binarize == "none" else None,
        resume=resume, on_batch=None if store is None else store.save)
    bad = [key for key, values in per_example.items() if not bool(torch.isfinite(values).all())]
    if bad:
        raise NonFiniteLossError(
            f"the final evaluation's {' and '.join(bad)} is not finite on the test set: the "
            f"model diverged; nothing was written to metrics.json")
    test["test_set_sha256"] = fingerprint(x, y)
    if y is not None and callable(getattr(model, "classify", None)):  # q(y | x) of M2
        with torch.no_grad():
            predicted = torch.cat([model.classify(x[i:i + 1000]).argmax(-1) for i in range(0, x.shape[0], 1000)])
        test["classification_accuracy"] = (predicted == y.to(predicted.device)).double().mean().item()
    # The probe's training images are binarized as the test images were (from a stream of
    # their own), so it is trained and tested on the same kind of input.
    x_probe = data.x_train[:PROBE_TRAIN_EXAMPLES]
    if data.binarize == "dynamic":
        noise = torch.rand(x_probe.shape, generator=split_generator(config.data.split_seed, "probe"))
        x_probe = (noise.to(x_probe.device, x_probe.dtype) < x_probe).to(x_probe.dtype)
    y_probe = None if data.y_train is None else data.y_train[:PROBE_TRAIN_EXAMPLES]
    if y_probe is not None and bool((y_probe < 0).any()):  # the probe learns from labelled rows only
        keep = y_probe >= 0
        x_probe, y_probe = x_probe[keep], y_probe[keep]
    latent = latent_diagnostics(model, x, y, x_train=x_probe, y_train=y_probe)
    if latent:
        test["latent"] = latent
    return test, per_example, store


def evaluate_run(run_dir, num_samples: int | None = None, device: str | None = None) -> dict:
    """Evaluate a trained run on its test set, update its metrics.json, and return ``test``."""
    num_samples = None if num_samples is None else check_positive_int("samples", num_samples)
    with RunDirLock(run_dir):
        run = load_run(run_dir, device)
        metrics = run.metrics()  # read first: a damaged file is refused before the long evaluation
        if not metrics:
            raise ValueError(f"run {str(run_dir)!r} has not finished training (no {METRICS_FILE}); "
                             f"finish it with `pyro-vae train --resume {run_dir}`")
        test, per_example, progress = _evaluate(run.model, run.data, run.config,
                                                num_samples or run.config.eval_samples, run_dir=run.directory)
        metrics["test"] = test
        write_per_example(run.directory, per_example)
        write_metrics(run.directory, metrics)
        progress.discard()
    return test
