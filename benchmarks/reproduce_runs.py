"""The run directories of benchmarks/reproduce.py (issue 16): reuse, resume or train, and --status.

An entry's directory is refused when it was written with other settings than the entry's
(:func:`check_run_matches`), else reused when finished, resumed from its checkpoint, or trained
(:func:`ensure_run`); :func:`run_status` reads one without changing it.
"""

from __future__ import annotations

from pathlib import Path

import common  # noqa: F401  (benchmarks/common.py puts pyro_vae on the path)

from pyro_vae.checkpoint import load_checkpoint, validate_train_state
from pyro_vae.evaluation_progress import saved_progress
from pyro_vae.inference.config import selection_key
from pyro_vae.rundir_lock import lock_holder
from pyro_vae.runfiles import CHECKPOINT_FILE, CONFIG_FILE
from pyro_vae.runs import RunConfig, evaluate_run, read_config, read_metrics, resume_run, train_run

#: Training settings a run directory may differ in from the entry and still be continued.
_CONTINUABLE = ("epochs", "device", "progress")


def fmt(value, spread=None, digits=2) -> str:
    """``value`` (± ``spread``) to ``digits`` decimals; ``-`` for None."""
    if value is None:
        return "-"
    return f"{value:.{digits}f}" + ("" if spread is None else f" ± {spread:.{digits}f}")


def _comparable_settings(config: RunConfig) -> dict:
    """The settings a run directory must share with its entry to be reused or continued."""
    raw = config.to_dict()
    raw["train"] = {k: v for k, v in raw["train"].items() if k not in _CONTINUABLE}
    raw.pop("eval_samples")  # a finished run is re-scored with the K asked for
    return raw


def _differences(stored, wanted, prefix="") -> list[str]:
    if isinstance(stored, dict) and isinstance(wanted, dict):
        out = []
        for key in sorted(set(stored) | set(wanted)):
            out += _differences(stored.get(key), wanted.get(key), f"{prefix}{key}.")
        return out
    return [] if stored == wanted else [f"{prefix.rstrip('.')} {stored!r} (run) vs {wanted!r} (entry)"]


def check_run_matches(run_dir: Path, config: RunConfig) -> None:
    """Refuse a run directory written with other settings than ``config``'s."""
    stored = read_config(run_dir)
    diffs = _differences(_comparable_settings(stored), _comparable_settings(config))
    if diffs:
        raise ValueError(f"run directory {str(run_dir)!r} was written with other settings than this entry's "
                         f"({'; '.join(diffs[:3])}); move it away or choose another --runs-dir")


def _finished(metrics: dict, epochs: int) -> bool:
    return bool(metrics.get("test")) and (bool(metrics.get("stopped_early")) or metrics["epochs"] >= epochs)


def ensure_run(run_dir: Path, config: RunConfig, *, device: str | None, progress: bool) -> str:
    """Reuse, resume or train ``config`` in ``run_dir``; return which of those was done.

    Returns ``"reused"``, ``"re-evaluated"`` (reused, re-scored with another K), ``"resumed"``
    or ``"trained"``.
    """
    if not (run_dir / CONFIG_FILE).is_file():
        train_run(config, run_dir)
        return "trained"
    check_run_matches(run_dir, config)
    metrics = read_metrics(run_dir)
    if _finished(metrics, config.train.epochs):
        action = "reused"
    elif (run_dir / CHECKPOINT_FILE).is_file():  # interrupted, or capped below this budget
        resume_run(run_dir, epochs=config.train.epochs, device=device, progress=progress)
        action = "resumed"
    else:  # stopped before its first epoch ended: nothing to keep but its config.json
        train_run(config, run_dir, overwrite=True)
        return "trained"
    if read_metrics(run_dir)["test"].get("log_likelihood_samples") != config.eval_samples:
        evaluate_run(run_dir, config.eval_samples, device=device)
        action = "re-evaluated" if action == "reused" else action
    return action


def run_status(name: str, run_dir: Path, config: RunConfig | None = None) -> str:
    """One line: where entry ``name``'s run directory stands, read without changing it.

    Finished runs (scored at the epoch of their last checkpoint, and done by early stopping
    or their budget) show their test NLL; others their last checkpoint: epochs done, the best
    validation epoch and score, evaluations since it (of the patience), training seconds per
    epoch. A process holding the run's lock is named, and so is a run written with other
    settings than ``config`` (which training would refuse). Anything unreadable is one line.
    """
    if not (run_dir / CONFIG_FILE).exists():
        return f"{name:<15} not started ({run_dir})"
    try:
        holder = lock_holder(run_dir)
        notes = f"; in use by {holder}" if holder else ""
        if config is not None:
            try:
                check_run_matches(run_dir, config)
            except ValueError:
                notes += "; written with other settings than this entry's (training refuses it)"
        stored = read_config(run_dir).train
        metrics = read_metrics(run_dir)
        train = None
        if (run_dir / CHECKPOINT_FILE).exists():
            path = run_dir / CHECKPOINT_FILE
            train = load_checkpoint(path, map_location="cpu", required=("train_state",))["train_state"]
            validate_train_state(train, path)
        scored_last = train is None or metrics.get("epochs") == train["epoch"]
        if metrics.get("test") and scored_last and _finished(metrics, stored.epochs):
            test = metrics["test"]
            how = "stopped early" if metrics.get("stopped_early") else f"capped at {metrics['epochs']}"
            return (f"{name:<15} finished: {metrics['epochs']} epochs (best {metrics.get('best_epoch')}), {how}; "
                    f"test NLL {-test['log_likelihood']:.2f} ± {fmt(test.get('log_likelihood_stderr'))} "
                    f"(K = {test['log_likelihood_samples']}){notes}")
        if train is None:
            return f"{name:<15} started, no epoch finished yet{notes}"
        try:
            scoring = saved_progress(run_dir)  # a final evaluation under way or killed
        except ValueError:  # the evaluation ignores a damaged file too
            notes += "; its saved evaluation progress is unreadable (the evaluation will start over)"
        else:
            if scoring is not None:
                notes += f"; its evaluation has {scoring[0]:,} of {scoring[1]:,} test images scored (saved)"
        selection = train.get("selection") if isinstance(train.get("selection"), dict) else {}
        epochs, best = train["epoch"], selection.get("best_score")
        rate = f"{train['seconds'] / epochs:.1f} s/epoch" if epochs else "-"
        return (f"{name:<15} {'training' if holder else 'interrupted'}: epoch {epochs} of {stored.epochs}, "
                f"best {selection.get('best_epoch')} ({selection_key(stored)} {fmt(best)}), "
                f"{selection.get('evaluations_since_best', 0)} of {stored.patience} evaluations since; "
                f"{train['seconds'] / 3600:.2f} h, {rate}{notes}")
    except Exception as err:  # noqa: BLE001  (a status line for whatever is unreadable, never a crash)
        return f"{name:<15} unreadable: {' '.join(str(err).split()) or type(err).__name__}"
