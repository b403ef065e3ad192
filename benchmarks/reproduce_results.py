"""The results of benchmarks/reproduce.py: one record per entry, read from its run directory,
paired with its baseline VAE, judged against issue 16's targets, printed as a table.

Every number comes from the runs' ``metrics.json`` and ``test_per_example.npz``; nothing is
trained here. Results outlive the run directories (a machine may be reset between sessions):
an entry of the results file already at ``--results`` whose run directory is not here is
carried over as it was (``action: "carried over"``, ``carried_from``: the commit it was
written at), and every entry's per-example test log-likelihoods are kept beside the results
(:func:`per_example_path`, float64, no pickle), so that entries of later sessions are paired
with it image by image all the same.
"""

from __future__ import annotations

import io
from pathlib import Path

import common  # noqa: F401  (benchmarks/common.py puts pyro_vae on the path)
import numpy as np
from reproduce_entries import ENTRIES, NOT_RUN, SETTINGS, SHARED_DIFFERENCES, UNGATED_DIFFERENCE, baseline, gated
from reproduce_runs import fmt

from pyro_vae.checkpoint import atomic_write_bytes
from pyro_vae.compare.stats import SIGNIFICANCE_STDERRS, check_comparable, paired_difference
from pyro_vae.data.npz import read_npz_arrays
from pyro_vae.jsonio import read_json_file
from pyro_vae.runs import read_config, read_metrics, read_per_example


def entry_record(name: str, run_dir: Path, action: str) -> dict:
    """One ``entries`` item, read from the run's files (paired difference added later).

    ``config.epoch_budget`` is the cap the scored run had: the epochs config.json names for a
    run that stopped early, else the epochs it was scored at (config.json may already name a
    larger cap: a run resumed after it was scored and stopped before it finished again).
    """
    spec, config, metrics = ENTRIES[name], read_config(run_dir), read_metrics(run_dir)
    test = metrics["test"]
    nll = -test["log_likelihood"]
    published = dict(spec["published"])
    gap = None if published["nll"] is None else nll - published["nll"]
    budget_limited = not metrics.get("stopped_early", False) and metrics["epochs"] < SETTINGS["max_epochs"]["value"]
    return {
        "name": name, "model": config.model,
        "nll": nll, "nll_stderr": test["log_likelihood_stderr"],
        "elbo": test["elbo"], "elbo_stderr": test["elbo_stderr"],
        "epochs": metrics["epochs"], "best_epoch": metrics.get("best_epoch"),
        "stopped_early": bool(metrics.get("stopped_early", False)), "budget_limited": budget_limited,
        "seconds": metrics.get("seconds"),
        "paired_vs_vae": None, "baseline": None if name == "vae" else baseline(name), "paired_vs_baseline": None,
        "published": published, "gap_to_published": gap,
        "config": {
            "run_config": config.to_dict(), "settings": spec["settings"],
            "epoch_budget": config.train.epochs if metrics.get("stopped_early") else metrics["epochs"],
            "known_differences": (SHARED_DIFFERENCES + ([] if gated(name) else [UNGATED_DIFFERENCE])
                                  + spec["known_differences"]),
        },
        "samples": test["log_likelihood_samples"], "test_examples": test["num_examples"],
        "test_set_sha256": test.get("test_set_sha256"),
        "run_dir": str(run_dir), "action": action,
    }


def per_example_path(results_path: Path) -> Path:
    """Where the per-example test log-likelihoods of ``results_path``'s entries are kept."""
    return results_path.with_name(results_path.stem + "-per-example.npz")


def read_previous(results_path: Path, *, dataset: str, smoke: bool) -> tuple[list[dict], dict]:
    """``(entries, per-example values)`` of the results file already at ``results_path`` and the
    values kept beside it, for :func:`carried_over`; nothing from a file of another data set or
    smoke mode, or where there is no file. Read before anything is trained: a damaged file is
    one ``ValueError`` naming it (and what is wrong), not a crash after hours of training."""
    if not results_path.is_file():
        return [], {}
    old = read_json_file(results_path, what="results file")
    if not isinstance(old, dict) or not isinstance(old.get("entries"), list):
        raise ValueError(f"results file {str(results_path)!r} is not an object with a list of entries")
    if old.get("dataset") != dataset or bool(old.get("smoke")) != smoke:
        return [], {}
    for i, entry in enumerate(old["entries"]):
        data = entry.get("config", {}).get("run_config", {}).get("data") if isinstance(entry, dict) else None
        if (not isinstance(data, dict) or not isinstance(entry.get("name"), str)
                or not isinstance(entry.get("test_set_sha256"), str) or not _is_count(entry.get("test_examples"))):
            raise ValueError(f"results file {str(results_path)!r}: entries[{i}] lacks a name, test_set_sha256, "
                             f"test_examples or config.run_config.data as reproduce.py writes them")
        if not entry.get("carried_from"):  # the commit that first wrote it, kept across carry-overs
            entry["carried_from"] = old.get("commit")
    path = per_example_path(results_path)
    archive = read_npz_arrays(path) if path.is_file() else {}
    for name, values in archive.items():
        if values.dtype != np.float64 or values.ndim != 1 or not np.isfinite(values).all():
            raise ValueError(f"{str(path)!r}: {name!r} is not a finite float64 vector")
    return old["entries"], archive


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def carried_over(previous: list[dict], records: list[dict]) -> list[dict]:
    """The ``previous`` entries (:func:`read_previous`) that ``records`` lack, marked as carried
    over; none scored on another test set than ``records``, nor of an entry that no longer exists."""
    present = {r["name"] for r in records}
    sha = {r["test_set_sha256"] for r in records}
    return [dict(entry, action="carried over") for entry in previous
            if entry["name"] not in present and entry["name"] in ENTRIES
            and (not sha or entry["test_set_sha256"] in sha)]


def write_archive(results_path: Path, per_example: dict) -> None:
    """Keep ``per_example`` (name -> float64 array) beside the results, atomically."""
    def write(handle):
        buffer = io.BytesIO()
        np.savez(buffer, **{name: np.asarray(values, dtype=np.float64) for name, values in per_example.items()})
        handle.write(buffer.getvalue())

    atomic_write_bytes(per_example_path(results_path), write)


def add_pairing(records: list[dict], archive: dict | None = None) -> dict:
    """Check one test set for all, then set ``paired_vs_vae`` and ``paired_vs_baseline`` of every entry.

    Both are ``paired_difference(entry, reference)``: the reference's NLL minus the entry's, per
    test image (positive: the entry is better). Per-example values come from the run directory,
    or for an entry carried over from ``archive`` (name -> values); the pairings stay None where
    the reference has neither. Returns the per-example values used, name -> array.
    """
    check_comparable([{"run_dir": r["run_dir"], "test_set_sha256": r["test_set_sha256"],
                       "num_examples": r["test_examples"], "data": r["config"]["run_config"]["data"]}
                      for r in records])
    per_example = {}
    for r in records:
        if r.get("action") != "carried over":
            per_example[r["name"]] = read_per_example(r["run_dir"], r["test_examples"])["log_likelihood"]
        elif r["name"] in (archive or {}) and (archive[r["name"]].shape == (r["test_examples"],)):
            per_example[r["name"]] = archive[r["name"]]
    by_name = {r["name"]: r for r in records if r["name"] in per_example}
    for r in records:
        if r["name"] not in per_example:
            continue
        if r["name"] != "vae" and "vae" in by_name:
            r["paired_vs_vae"] = paired_difference(per_example[r["name"]], per_example["vae"])
        if r["baseline"] in by_name:
            r["paired_vs_baseline"] = {"baseline": r["baseline"],
                                       **paired_difference(per_example[r["name"]], per_example[r["baseline"]])}
    return per_example


def targets(records: list[dict]) -> list[dict]:
    """Issue 16's targets, each met (True/False) or not measured (None).

    The published figures hold for every entry of that model, gated or not; "better than the
    VAE" compares each VampPrior and IWAE entry with its baseline VAE (same layers).
    """
    by_name = {r["name"]: r for r in records}
    out = []
    for name, spec in ENTRIES.items():
        if spec["published"]["nll"] is None:
            continue
        r = by_name.get(name)
        out.append({"target": f"{name} within 1 nat of the published {spec['published']['nll']:.2f}",
                    "met": None if r is None else abs(r["gap_to_published"]) <= 1.0,
                    "value": None if r is None else r["gap_to_published"]})
    # The VampPrior must win by more than two paired standard errors, IWAE at all (issue 16).
    for name, need_two_se in (("vamp", True), ("vamp-gated", True), ("iwae5", False), ("iwae5-gated", False)):
        what = (f"{name} better than {baseline(name)}"
                + (f" by more than {SIGNIFICANCE_STDERRS:g} paired standard errors" if need_two_se else ""))
        paired = by_name.get(name, {}).get("paired_vs_baseline")
        met = None
        if paired is not None:
            stderr = paired["stderr"] or 0.0
            met = paired["difference"] > (SIGNIFICANCE_STDERRS * stderr if need_two_se else 0.0)
        out.append({"target": what, "met": met, "value": None if paired is None else paired["difference"]})
    return out


def print_table(records: list[dict]) -> None:
    header = (f"{'entry':<15} {'published NLL':>15} {'obtained NLL':>16} {'gap':>7} {'vs baseline (paired)':>28} "
              f"{'epochs (best)':>14} {'budget':>6} {'K':>5} {'n':>6}  how")
    print(header)
    print("-" * len(header))
    for r in records:
        pub, paired = r["published"], r["paired_vs_baseline"]
        vs = "-" if paired is None else f"{fmt(paired['difference'], paired['stderr'])} ({paired['baseline']})"
        stop = "early" if r["stopped_early"] else "cap"
        print(f"{r['name']:<15} {fmt(pub['nll'], pub['plus_minus']):>15} {fmt(r['nll'], r['nll_stderr']):>16} "
              f"{fmt(r['gap_to_published'], None):>7} {vs:>28} "
              f"{r['epochs']:>6} ({r['best_epoch'] if r['best_epoch'] is not None else '-':>5}) "
              f"{r['config']['epoch_budget']:>6} {r['samples']:>5} {r['test_examples']:>6}  {stop}, {r['action']}")
    for row in NOT_RUN:
        print(f"{row['name']:<15} {fmt(row['published']['nll'], row['published']['plus_minus']):>15} "
              f"{'not run':>16}  ({row['reason']})")
    print("NLL in nats per test image (lower is better), ± one standard error; 'vs baseline': the baseline VAE's "
          "NLL minus the entry's on the same images (positive: better than that VAE; vae-gated for gated entries).")
