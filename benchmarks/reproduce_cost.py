"""What each entry of benchmarks/reproduce.py costs on this machine, measured: ``--cost``.

    python benchmarks/reproduce.py --cost [--only NAME[,NAME]] [--threads N] [--device D]
        [--results PATH]

For each entry the model is built exactly as its run builds it (:func:`run_config`, then
:func:`pyro_vae.runconfig.build_model`) and timed on the entry's own data, in three parts:

- **training steps**: :func:`pyro_vae.inference.fit` (the loop the run uses: dynamic
  binarization, KL warm-up, the entry's objective) for two epochs of ``steps`` batches of the
  entry's batch size; the second epoch's steps are timed, so one-off costs (first-call
  allocation, data-dependent initialization) are left out;
- **validation**: the same second epoch's evaluation of ``val_images`` validation images (the
  ELBO, or for IWAE entries the K = 5 bound as well), which the run does after every epoch;
- **final evaluation**: :func:`pyro_vae.inference.evaluate.evaluate_per_example` with the
  literature's K = 5000 on ``eval_images`` test images, as the run scores its best model.

Each is scaled linearly to the literature's sizes (``SETTINGS``: 50,000 training images in
batches of 100, 10,000 validation and 10,000 test images): seconds per epoch, hours for the full
2,000 epochs (early stopping usually ends sooner), minutes for the K = 5000 evaluation (the
run's latent diagnostics and probe, a few seconds, are not included). Step and per-image costs
are flat in the number of images here (fixed batch sizes), which is what makes the scaling
linear; read the numbers as the cost on this machine at the moment of measurement: another job
sharing the cores slows them.

The table is written to ``--results`` (default ``docs/results/fashion-mnist-cost.json``) with
the machine that measured it. ``--smoke`` measures on the embedded digits with tiny counts
(tests only; the numbers mean nothing).
"""

from __future__ import annotations

import dataclasses
import math
import time

import pyro
import torch
from reproduce_entries import SETTINGS, run_config

from pyro_vae.data import load_dataset
from pyro_vae.inference import fit
from pyro_vae.inference.evaluate import evaluate_per_example
from pyro_vae.inference.state import Callback
from pyro_vae.runconfig import build_model

#: How much is timed per entry: training batches per epoch, validation and test images. 100 test
#: images are one batch of the final evaluation, so the timed batch has the full run's shape.
COST_SIZES = {"steps": 50, "val_images": 1000, "eval_images": 100}
#: The same for ``--smoke``: seconds in all.
SMOKE_COST_SIZES = {"steps": 2, "val_images": 20, "eval_images": 2}


class _EpochClock(Callback):
    """Perf-counter marks: the end of each epoch's last step and the end of each epoch (after
    its validation). The first step of an epoch follows the previous epoch's end."""

    def __init__(self):
        self.last_step_end: list[float] = []
        self.epoch_end: list[float] = []
        self._step_end = math.nan

    def on_step_end(self, model, state, info) -> None:
        _synchronize(model)
        self._step_end = time.perf_counter()

    def on_epoch_end(self, model, state) -> None:
        _synchronize(model)
        self.last_step_end.append(self._step_end)
        self.epoch_end.append(time.perf_counter())


def _synchronize(model) -> None:
    """Wait for the model's GPU, so a clock read after it counts the work queued before it."""
    device = next(model.parameters()).device
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_entry(name: str, *, dataset: str, data_dir: str | None, device: str | None, seed: int,
                  steps: int, val_images: int, eval_images: int, eval_samples: int, data=None) -> dict:
    """Time entry ``name``'s training steps, validation and final evaluation; scale to full size.

    ``data`` (a :class:`~pyro_vae.data.DataSplits` of the entry's data set) saves reloading it
    for every entry. Returns the measured seconds and the scaled estimates (see the module
    docstring).
    """
    config = run_config(name, dataset=dataset, epochs=2, eval_samples=eval_samples, seed=seed, device=device,
                        data_dir=data_dir, progress=False)
    data = load_dataset(config.data) if data is None else data
    batch = config.train.batch_size
    n_train = min(steps * batch, data.x_train.shape[0])
    n_val, n_eval = min(val_images, data.x_val.shape[0]), min(eval_images, data.x_test.shape[0])
    if n_val == 0:
        raise ValueError(f"entry {name!r}: the data set has no validation split to time")
    small = dataclasses.replace(
        data, x_train=data.x_train[:n_train], y_train=None if data.y_train is None else data.y_train[:n_train],
        x_val=data.x_val[:n_val], y_val=None if data.y_val is None else data.y_val[:n_val])
    model = build_model(config, small)
    clock = _EpochClock()
    # patience 0: the second epoch runs whatever the first one's validation score was.
    fit(model, small, dataclasses.replace(config.train, epochs=2, patience=0, progress=False), callbacks=[clock])
    steps_done = math.ceil(n_train / batch)
    step_seconds = (clock.last_step_end[1] - clock.epoch_end[0]) / steps_done
    val_seconds = clock.epoch_end[1] - clock.last_step_end[1]

    pyro.set_rng_seed(seed + 1)
    x_test = data.x_test[:n_eval].to(next(model.parameters()).device)
    start = time.perf_counter()
    evaluate_per_example(model, x_test, num_samples=eval_samples)
    eval_seconds = time.perf_counter() - start

    s = {k: v["value"] for k, v in SETTINGS.items()}
    epoch_seconds = (math.ceil(s["train_examples"] / batch) * step_seconds
                     + s["val_examples"] * val_seconds / n_val)
    return {
        "name": name,
        "measured": {"train_images": n_train, "steps": steps_done, "step_seconds": step_seconds,
                     "val_images": n_val, "val_seconds": val_seconds,
                     "eval_images": n_eval, "eval_samples": eval_samples, "eval_seconds": eval_seconds},
        "epoch_seconds": epoch_seconds,
        "full_training_hours": epoch_seconds * s["max_epochs"] / 3600,
        "eval_minutes": s["test_examples"] * eval_seconds / n_eval / 60,
    }


def load_entry_data(name: str, *, dataset: str, data_dir: str | None):
    """The data set entry ``name`` trains on (all entries share it): a DataSplits."""
    return load_dataset(run_config(name, dataset=dataset, epochs=1, eval_samples=1, seed=0, device=None,
                                   data_dir=data_dir, progress=False).data)


def measure_costs(names: list[str], *, dataset: str, data_dir: str | None, device: str | None, seed: int,
                  sizes: dict, eval_samples: int, data=None, report=print) -> list[dict]:
    """:func:`measure_entry` for each of ``names`` on one loaded data set (``data``, else loaded
    here), reporting each row as it comes."""
    data = load_entry_data(names[0], dataset=dataset, data_dir=data_dir) if data is None else data
    rows = []
    for name in names:
        rows.append(measure_entry(name, dataset=dataset, data_dir=data_dir, device=device, seed=seed,
                                  eval_samples=eval_samples, data=data, **sizes))
        report(cost_line(rows[-1]))
    return rows


def cost_line(row: dict) -> str:
    m = row["measured"]
    return (f"{row['name']:<15} {row['epoch_seconds']:>9.1f} {row['full_training_hours']:>8.1f} "
            f"{row['eval_minutes']:>9.1f}   ({m['steps']} steps of {1000 * m['step_seconds']:.0f} ms, "
            f"{m['val_images']} validation images in {m['val_seconds']:.2f} s, "
            f"{m['eval_images']} test images at K = {m['eval_samples']} in {m['eval_seconds']:.1f} s)")


COST_HEADER = (f"{'entry':<15} {'s/epoch':>9} {'2000 ep h':>8} {'eval min':>9}   (measured; scaled to 50,000 "
               f"training, 10,000 validation and 10,000 test images)")
