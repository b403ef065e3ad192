"""The files of a run directory: their names, one writer and one checked reader each.

Every file the library writes into a run directory is written atomically
(:mod:`pyro_vae.checkpoint`), holds no NaN or Infinity (:func:`pyro_vae.jsonio.dumps_finite`),
and is read back by one reader here that checks it against what the writer produces:
anything else is one ``ValueError`` line naming the file and what is wrong.
:func:`prepare_out_dir` decides what a new run may replace: only the files of a run, only
with ``overwrite``, never a directory that holds something else.

Example
-------
>>> from pyro_vae.runfiles import METRICS_SCHEMA, RUN_FILES
>>> sorted(RUN_FILES)[:3]
['best.pt', 'checkpoint.pt', 'config.json']
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np

from .checkpoint import atomic_write_bytes, atomic_write_text
from .data.npz import read_npz_arrays
from .jsonio import Finite, ListOf, NotRequired, Optional, check_schema, dumps_finite, read_json_file
from .rundir_lock import LOCK_FILE

CONFIG_FILE, METRICS_FILE, CHECKPOINT_FILE, FIGURES_DIR = (
    "config.json", "metrics.json", "checkpoint.pt", "figures")
BEST_FILE, PER_EXAMPLE_FILE = "best.pt", "test_per_example.npz"
#: A long final evaluation's progress (pyro_vae.evaluation_progress), removed once it is written.
PARTIAL_EVAL_FILE = "evaluation.partial.npz"
#: Written by the loggers of ``--log csv`` and ``--log tensorboard`` (a directory).
LOG_FILE, TENSORBOARD_DIR = "log.csv", "tensorboard"
#: What a run directory may hold; an overwrite removes these and nothing else.
RUN_FILES = (CONFIG_FILE, METRICS_FILE, CHECKPOINT_FILE, BEST_FILE, PER_EXAMPLE_FILE, LOG_FILE, PARTIAL_EVAL_FILE)

_NUMBER = Optional(Finite)
#: What :func:`pyro_vae.runs.train_run` writes to metrics.json (older runs lack some keys).
METRICS_SCHEMA = {
    "model": str,
    "dataset": str,
    "epochs": int,
    "steps": NotRequired(int),
    "seconds": NotRequired(Finite),
    "parameters": NotRequired(int),
    "training_curve": NotRequired(str),
    "best_epoch": NotRequired(Optional(int)),
    "stopped_early": NotRequired(bool),
    "history": ListOf({"epoch": int}),
    "test": NotRequired(Optional({
        "elbo": Finite, "elbo_stderr": _NUMBER,
        "log_likelihood": _NUMBER, "log_likelihood_stderr": _NUMBER,
        "log_likelihood_samples": Optional(int),
        "exact": bool, "bound": bool, "conditional": bool, "discrete": bool,
        "num_examples": int, "test_set_sha256": NotRequired(str),
        "reconstruction": NotRequired(Finite), "reconstruction_stderr": NotRequired(_NUMBER),
        "kl": NotRequired(Finite), "kl_stderr": NotRequired(_NUMBER),
        "classification_accuracy": NotRequired(Finite),
        "latent": NotRequired(dict),
    })),
}


_MAX_COUNT = 2**53  # counts beyond this are not exact in JSON numbers read as floats elsewhere


def read_metrics(run_dir) -> dict:
    """``run_dir``'s metrics.json as a dict, ``{}`` where there is none (an unfinished run).

    Raises ``ValueError`` naming the file for anything :data:`METRICS_SCHEMA` does not allow.
    """
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return {}
    metrics = read_json_file(path, what="metrics file")
    check_schema(metrics, METRICS_SCHEMA, path=path, what="metrics file")
    for i, record in enumerate(metrics["history"]):
        for key, value in record.items():
            if key != "epoch":
                check_schema(value, _NUMBER, path=path, what="metrics file", where=f"history[{i}].{key}")
    # Values the writer never produces (a hand edit, another program's file).
    test = metrics.get("test") or {}
    if ("kl" in test) != ("reconstruction" in test):
        raise ValueError(f"metrics file {str(path)!r}: test holds {'kl' if 'kl' in test else 'reconstruction'} "
                         f"without {'reconstruction' if 'kl' in test else 'kl'}; the ELBO's two terms come together")
    bounds = [("epochs", metrics["epochs"], 0), ("steps", metrics.get("steps"), 0),
              ("test.num_examples", test.get("num_examples"), 1),
              ("test.log_likelihood_samples", test.get("log_likelihood_samples"), 1)]
    for field, value, least in bounds:
        if value is not None and not least <= value <= _MAX_COUNT:
            raise ValueError(f"metrics file {str(path)!r}: field {field} must lie in "
                             f"{least}..{_MAX_COUNT}, got {value}")
    return metrics


def write_metrics(run_dir, metrics: dict) -> None:
    """Write metrics.json atomically; refuses NaN/Infinity (divergence is caught before)."""
    atomic_write_text(Path(run_dir) / METRICS_FILE, dumps_finite(metrics))


def write_config(run_dir, raw: dict) -> None:
    atomic_write_text(Path(run_dir) / CONFIG_FILE, dumps_finite(raw))


def read_config_json(run_dir) -> dict:
    """config.json as a dict (checked JSON; :class:`pyro_vae.runs.RunConfig` checks the fields),
    without its ``versions``; ``plugins`` lists the plug-ins it needs."""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG_FILE
    if not run_dir.is_dir():
        raise ValueError(f"run directory {str(run_dir)!r} does not exist")
    if not path.is_file():
        raise ValueError(f"run directory {str(run_dir)!r} has no {CONFIG_FILE}; is it a pyro-vae run?")
    raw = read_json_file(path, what="run configuration")
    if not isinstance(raw, dict):
        raise ValueError(f"run configuration {str(path)!r} must be a JSON object, got {type(raw).__name__}")
    raw.pop("versions", None)
    return raw


def write_per_example(run_dir, per_example: dict) -> None:
    """Write ``run_dir/test_per_example.npz`` atomically: float64 arrays of shape ``(n,)``."""
    arrays = {key: np.asarray(values.cpu().numpy(), dtype=np.float64) for key, values in per_example.items()}

    def write(handle):
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        handle.write(buffer.getvalue())

    atomic_write_bytes(Path(run_dir) / PER_EXAMPLE_FILE, write)


def read_per_example(run_dir, num_examples: int | None = None, means: dict | None = None) -> dict:
    """``run_dir``'s per-example test values: ``{"elbo": (n,), ["reconstruction": (n,),
    "kl": (n,)], ["log_likelihood": (n,)]}`` (the ELBO's parts where its model has them;
    older runs' files lack them).

    Loaded without pickle and checked against what :func:`write_per_example` writes (known
    keys, float64 vectors of one length, finite, ``num_examples`` long where given, and with
    the ``means`` metrics.json reports, key -> mean, where given: a file of another run is
    refused); anything else is a ``ValueError`` naming the file.
    """
    path = Path(run_dir) / PER_EXAMPLE_FILE
    if not path.is_file():
        raise ValueError(f"run {str(run_dir)!r} has no {PER_EXAMPLE_FILE} (runs of older versions "
                         f"lack it); run `pyro-vae evaluate {run_dir}` to create it")
    try:
        arrays = read_npz_arrays(path)
    except ValueError as err:
        raise ValueError(f"{str(path)!r} is not a readable per-example file ({err}); run "
                         f"`pyro-vae evaluate {run_dir}` to rewrite it") from err
    unknown = sorted(set(arrays) - {"elbo", "reconstruction", "kl", "log_likelihood"})
    if "elbo" not in arrays or unknown or ("kl" in arrays) != ("reconstruction" in arrays):
        raise ValueError(f"{str(path)!r} must hold the arrays 'elbo' and optionally 'reconstruction' "
                         f"with 'kl' and 'log_likelihood', got {sorted(arrays)}")
    expected = num_examples if num_examples is not None else arrays["elbo"].shape[0]
    for key, values in arrays.items():
        if values.dtype != np.float64 or values.shape != (expected,):
            raise ValueError(f"{str(path)!r}: {key!r} must be float64 of shape ({expected},), got "
                             f"{values.dtype} {values.shape}")
        if not np.isfinite(values).all():
            raise ValueError(f"{str(path)!r}: {key!r} holds NaN or infinite values")
    for key, mean in (means or {}).items():
        if mean is not None and key not in arrays:
            raise ValueError(f"{str(path)!r} lacks the array {key!r} that metrics.json reports; run "
                             f"`pyro-vae evaluate {run_dir}` to rewrite it")
        if mean is not None and abs(float(arrays[key].mean()) - mean) > 1e-6 * max(1.0, abs(mean)):
            raise ValueError(f"{str(path)!r}: the mean of {key!r} is {float(arrays[key].mean()):.6f} but "
                             f"metrics.json reports {mean:.6f}: the file belongs to another run; run "
                             f"`pyro-vae evaluate {run_dir}` to rewrite both")
    return arrays


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` holds a pyro-vae run: a config.json that is a run's configuration
    (a JSON object with ``model``, ``data`` and ``train``), not any file of that name."""
    config = Path(path) / CONFIG_FILE
    try:
        if not config.is_file() or config.stat().st_size > 2**20:
            return False
        raw = read_json_file(config, what="run configuration")
    except (OSError, ValueError):
        return False
    return isinstance(raw, dict) and {"model", "data", "train"} <= set(raw)


def enclosing_run(path: Path) -> Path | None:
    """The nearest directory above ``path`` that holds a run, or None."""
    for parent in path.resolve().parents:
        if is_run_dir(parent):
            return parent
    return None


#: What each folder of a run holds (file names pyro-vae writes there).
_RUN_FOLDERS = {FIGURES_DIR: lambda name: name.endswith(".png"),
                TENSORBOARD_DIR: lambda name: name.startswith("events.out.tfevents.")}


def _foreign_in_folders(out_dir: Path) -> list[str]:
    """Entries of a run's folders that pyro-vae did not write (an overwrite must keep them)."""
    foreign = []
    for folder, ours in _RUN_FOLDERS.items():
        if (out_dir / folder).is_dir():
            foreign += [f"{folder}/{p.name}" for p in (out_dir / folder).iterdir()
                        if not (p.is_file() and ours(p.name))]
    return sorted(foreign)


def check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse an output directory a new run may not use, deleting nothing.

    Accepted: a new or empty directory, or (with ``overwrite``) one holding a run and nothing
    else but its figures. Refused: a file, a directory inside another run, a directory with
    files that are not a run's, a run without ``overwrite``.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"output directory {str(out_dir)!r} exists and is not a directory")
    outer = enclosing_run(out_dir)
    if outer is not None:
        raise ValueError(f"output directory {str(out_dir)!r} lies inside the run {str(outer)!r}; "
                         f"an overwrite of that run would delete it: choose a directory outside it")
    if not out_dir.is_dir():
        existing = next(p for p in out_dir.absolute().parents if p.exists())
        if not existing.is_dir():
            raise ValueError(f"output directory {str(out_dir)!r} is not writable ({str(existing)!r} "
                             f"is a file, not a directory)")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ValueError(f"output directory {str(out_dir)!r} is not writable (Permission denied "
                             f"in {str(existing)!r})")
        return
    present = {p.name for p in out_dir.iterdir()} - {LOCK_FILE}
    if not present:
        return
    if not is_run_dir(out_dir):
        raise ValueError(f"output directory {str(out_dir)!r} is not empty and holds no pyro-vae run "
                         f"(found {', '.join(sorted(present)[:3])}{' ...' if len(present) > 3 else ''}); "
                         f"choose a new or empty directory")
    if not overwrite:
        raise ValueError(
            f"output directory {str(out_dir)!r} already holds a run; pass --overwrite to replace "
            f"it or --resume {str(out_dir)!r} to continue it")
    foreign = sorted(present - set(RUN_FILES) - {FIGURES_DIR, TENSORBOARD_DIR, "report.html"})
    foreign = [name for name in foreign if not name.startswith(".")]  # temporaries of atomic writes
    foreign += [name for name in _foreign_in_folders(out_dir)]
    if foreign:
        raise ValueError(f"--overwrite would replace the run in {str(out_dir)!r}, but the directory also "
                         f"holds {', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}, which "
                         f"pyro-vae did not write; move them away first")


def prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Create ``out_dir`` (checked by :func:`check_out_dir`) and remove an old run's files."""
    check_out_dir(out_dir, overwrite)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"output directory {str(out_dir)!r} is not writable ({err.strerror})") from err
    for stale in (*RUN_FILES, "report.html"):
        (out_dir / stale).unlink(missing_ok=True)
    for folder, ours in _RUN_FOLDERS.items():  # only the files pyro-vae wrote there
        if (out_dir / folder).is_dir():
            for path in (out_dir / folder).iterdir():
                if path.is_file() and ours(path.name):
                    path.unlink()
            with contextlib.suppress(OSError):  # kept if anything else is (still) in it
                (out_dir / folder).rmdir()
