"""Loading a run directory back: its config, checkpoints, data and model (:func:`load_run`).

Everything here reads files :mod:`pyro_vae.runs` wrote and refuses, in one line naming the
file, what that writer does not produce: a damaged or edited ``config.json``, a checkpoint
written for another configuration or architecture, weights from another epoch than
``metrics.json`` records, data whose fingerprint changed. Nothing loaded runs code
(recorded plug-ins from files load only through :func:`trust_run_plugins`).

Example
-------
>>> from pyro_vae.runload import load_run
>>> run = load_run("runs/vae", data=False)    # doctest: +SKIP
>>> run.model.sample(4).shape                  # doctest: +SKIP
torch.Size([4, 64])
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from . import __version__
from .checkpoint import load_checkpoint, validate_train_state
from .data import DataSpec, DataSplits, load_dataset
from .inference.config import resolve_device, stored_device
from .jsonio import Finite, NotRequired, Optional, check_schema
from .registry import load_recorded_plugins
from .runconfig import RunConfig, build_model, checkpoint_config, without_defaults
from .rundata import check_data, read_data_record
from .runfiles import BEST_FILE, CHECKPOINT_FILE, CONFIG_FILE, read_config_json, read_metrics

#: What TrainState.state_dict() writes as "selection" (absent in checkpoints of older versions).
_SELECTION_SCHEMA = Optional({"best_epoch": Optional(int), "best_score": Optional(Finite),
                              "evaluations_since_best": int, "stopped_early": bool,
                              "extra": NotRequired(dict)})

def _load_run_data(run_dir: Path, config: RunConfig, record: dict) -> DataSplits:
    """The run's data set (CPU, as loaded), checked against its recorded fingerprint and spec."""
    data = check_data(load_dataset(config.data), record.get("data_fingerprint"), run_dir)
    spec = record.get("data_spec")
    if spec is not None and spec != data.spec:  # config.json edited: the model would be built wrong
        raise ValueError(f"run configuration {str(Path(run_dir) / CONFIG_FILE)!r}: field data_spec "
                         f"{spec.to_dict()} does not describe the run's data {data.name!r}, which "
                         f"has {data.spec.to_dict()}")
    return data



def read_config(run_dir) -> RunConfig:
    """Read and validate ``run_dir/config.json``."""
    return read_run_config(run_dir)[0]


def read_run_config(run_dir) -> tuple[RunConfig, dict]:
    """``run_dir/config.json`` validated: the :class:`RunConfig` and what it records of the data.

    The second item is ``{"data_spec": DataSpec or None, "data_fingerprint": str or None}``
    (None for runs written before these were recorded). Anything the writer does not produce
    is a ``ValueError`` naming the file and the field.
    """
    path = Path(run_dir) / CONFIG_FILE
    raw = read_config_json(run_dir)
    # Before the names are checked: the plug-ins that registered them (never an unknown file).
    load_recorded_plugins(raw.pop("plugins", []), where=f"run {str(run_dir)!r}")
    try:
        record = read_data_record(raw)  # pops data_spec and data_fingerprint
        return RunConfig.from_dict(raw), record
    except (ValueError, TypeError) as err:
        if str(path) in str(err):
            raise
        raise type(err)(f"run configuration {str(path)!r}: {err}") from err


def trust_run_plugins(run_dir) -> None:
    """Load the plug-ins ``run_dir`` recorded, files included (``--trust-run``: runs their code)."""
    raw = read_config_json(run_dir)
    load_recorded_plugins(raw.get("plugins", []), where=f"run {str(run_dir)!r}", trust=True)


def _load_best(run_dir: Path, config: RunConfig) -> dict:
    """``best.pt``: the best validation epoch's parameters, checked like a checkpoint."""
    if not (run_dir / BEST_FILE).is_file():
        raise ValueError(f"run directory {str(run_dir)!r} selects its model on validation data "
                         f"but has no {BEST_FILE}; rerun train with --overwrite")
    return _load_run_checkpoint(run_dir, config, file=BEST_FILE, required=("model", "epoch", "config"))


def _load_run_checkpoint(run_dir: Path, config: RunConfig, map_location="cpu", *,
                         file: str = CHECKPOINT_FILE,
                         required=("model", "train_state", "config")) -> dict:
    path = run_dir / file
    checkpoint = load_checkpoint(path, map_location=map_location, required=required)
    if "train_state" in checkpoint:
        validate_train_state(checkpoint["train_state"], path)
        check_schema(checkpoint["train_state"].get("selection"), _SELECTION_SCHEMA, path=path,
                     what="checkpoint", where="train_state.selection")
    if "epoch" in checkpoint and (isinstance(checkpoint["epoch"], bool)
                                  or not isinstance(checkpoint["epoch"], int) or checkpoint["epoch"] < 1):
        raise ValueError(f"checkpoint {str(path)!r}: 'epoch' must be a positive integer, got "
                         f"{checkpoint['epoch']!r}")
    try:
        saved = json.loads(checkpoint["config"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"checkpoint in {str(run_dir)!r} holds no readable configuration ({err})") from err
    saved, expected = without_defaults(saved), without_defaults(checkpoint_config(config))
    if saved != expected:
        diffs = _diff(saved, expected)
        raise ValueError(
            f"checkpoint in {str(run_dir)!r} was written for a different configuration "
            f"({'; '.join(diffs[:3])}); it cannot be loaded with this config.json"
        )
    return checkpoint


def _diff(saved, expected, prefix="") -> list[str]:
    if isinstance(saved, dict) and isinstance(expected, dict):
        out = []
        for key in sorted(set(saved) | set(expected)):
            if (key in saved) != (key in expected):  # a key missing on one side, even beside None
                where = "checkpoint" if key in saved else "config"
                out.append(f"{prefix}{key}: only in the {where}")
                continue
            out += _diff(saved[key], expected[key], f"{prefix}{key}.")
        return out
    return [] if saved == expected else [f"{prefix.rstrip('.')}: checkpoint {saved!r} vs config {expected!r}"]


def _restore_model(model, checkpoint: dict, run_dir: Path) -> None:
    """Load the checkpoint's weights, refusing (``ValueError``) weights of another architecture."""
    try:
        model.load_state_dict(checkpoint["model"])
    except (RuntimeError, TypeError, KeyError, AttributeError) as err:
        versions = checkpoint.get("versions")
        written = versions.get("pyro_vae", "?") if isinstance(versions, dict) else "?"
        detail = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
        if len(detail) > 300:
            detail = detail[:300] + " ..."
        raise ValueError(
            f"checkpoint in {str(run_dir)!r} does not fit the model built from its config.json "
            f"(written by pyro-vae {written}, this is {__version__}): {detail or type(err).__name__}"
        ) from err


@dataclass
class LoadedRun:
    """A trained run brought back into memory (model in eval mode, data on its device).

    ``spec`` holds the data's shapes and classes; ``data`` is None when the run was loaded
    without its data (``load_run(..., data=False)``).
    """

    config: RunConfig
    model: torch.nn.Module
    data: DataSplits | None
    directory: Path
    spec: DataSpec

    def metrics(self) -> dict:
        return read_metrics(self.directory)


def load_run(run_dir, device: str | None = None, *, data: bool = True) -> LoadedRun:
    """Rebuild the model of ``run_dir`` from its config and checkpoint, on ``device``.

    The parameters are those the run was scored with: ``best.pt`` (the best validation
    epoch) where the run has one, else the last checkpoint.

    Parameters
    ----------
    run_dir : str or Path
        A run directory written by :func:`train_run`.
    device : str or None
        ``cpu``, ``cuda`` or ``cuda:N``; None: the device the run was trained on, where present.
    data : bool
        Load the run's data too (on ``device``, checked against the fingerprint the run
        recorded: ``ValueError`` if it changed). False builds the model from the recorded
        ``data_spec`` alone, for what needs no data (sampling, exports); ``run.data`` is then
        None. Runs written before the spec was recorded load their data to learn it.

    Example
    -------
    >>> run = load_run("runs/vae", data=False)        # doctest: +SKIP
    >>> images = run.model.sample(16).reshape(16, *run.spec.image_shape)  # doctest: +SKIP
    """
    run_dir = Path(run_dir)
    config, record = read_run_config(run_dir)
    target = resolve_device(device) if device is not None else stored_device(config.train.device)
    metrics = read_metrics(run_dir)
    if (run_dir / BEST_FILE).exists() or metrics.get("best_epoch") is not None:
        checkpoint = _load_best(run_dir, config)
        epoch, recorded, what = checkpoint["epoch"], metrics.get("best_epoch"), "best epoch"
    else:
        checkpoint = _load_run_checkpoint(run_dir, config)
        epoch, recorded, what = checkpoint["train_state"]["epoch"], metrics.get("epochs"), "epochs"
    if metrics and recorded != epoch:  # files of two different runs, or an unfinished resume
        raise ValueError(
            f"run {str(run_dir)!r}: its weights are from epoch {epoch} but metrics.json records "
            f"{what} {recorded}: the files belong to different runs (or a resume did not finish: "
            f"`pyro-vae train --resume {run_dir}` completes it)")
    dataset = _load_run_data(run_dir, config, record) if data or record["data_spec"] is None else None
    spec = record["data_spec"] or dataset.spec
    model = build_model(config, spec, init=False)  # a spec carries what a model is built from
    _restore_model(model, checkpoint, run_dir)
    model.to(device=target).eval()
    dataset = dataset.to(device=target, dtype=model.dtype) if data else None
    return LoadedRun(config=config, model=model, data=dataset, directory=run_dir, spec=spec)
