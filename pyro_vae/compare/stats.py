"""Paired statistics on a shared test set, and the checks that make rows comparable.

Two models scored on the same test examples are compared per example: the difference of
their log-likelihoods ``d_i = log p_best(x_i) - log p_row(x_i)`` has mean ``d`` (how many nats
per example the row is behind the best) and standard error ``sd(d_i) / sqrt(n)``. Because
the examples are shared, the examples' own difficulty cancels, and this standard error is
much smaller than that of either mean: what decides whether a difference is real. A
difference within two standard errors is marked not significant at this test size.

Example
-------
>>> import numpy as np
>>> from pyro_vae.compare.stats import paired_difference
>>> best = np.array([-20.0, -30.0, -25.0]); row = np.array([-21.0, -30.5, -26.5])
>>> d = paired_difference(best, row)
>>> round(d["difference"], 3), round(d["stderr"], 3), d["significant"]
(1.0, 0.289, True)
"""

from __future__ import annotations

import math

import numpy as np

#: A paired difference is marked significant when it exceeds this many standard errors.
SIGNIFICANCE_STDERRS = 2.0


def paired_difference(best: np.ndarray, row: np.ndarray) -> dict:
    """Mean and standard error of ``best - row`` per example, and whether it exceeds 2 s.e.

    Both are per-example log-likelihoods of the same test examples in the same order.
    ``stderr`` is None for a single example (no spread to estimate).
    """
    best, row = np.asarray(best, dtype=np.float64), np.asarray(row, dtype=np.float64)
    if best.shape != row.shape or best.ndim != 1 or best.size == 0:
        raise ValueError(f"paired values must be two vectors of one length, got shapes "
                         f"{best.shape} and {row.shape}")
    diff = best - row
    mean = float(diff.mean())
    if diff.size < 2:
        return {"difference": mean, "stderr": None, "significant": None}
    stderr = float(diff.std(ddof=1) / math.sqrt(diff.size))
    return {"difference": mean, "stderr": stderr,
            "significant": bool(abs(mean) > SIGNIFICANCE_STDERRS * stderr)}


def seed_spread(nlls: list[float]) -> dict:
    """Mean and sample standard deviation of one entry's NLL over its seeds."""
    values = [float(v) for v in nlls]
    mean = sum(values) / len(values)
    std = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return {"nll": values, "nll_mean": mean, "nll_std": std}


def check_comparable(rows: list[dict]) -> None:
    """Refuse rows scored on different test tensors, naming the runs and what differs.

    Each row holds its run's ``test`` object (``test_set_sha256``, ``num_examples``) and
    ``data`` (the run's data settings).
    """
    missing = [r for r in rows if not r.get("test_set_sha256")]
    if missing:
        run = missing[0]["run_dir"]
        raise ValueError(
            f"run {run!r} records no test-set fingerprint (written by an older pyro-vae), so "
            f"nothing shows which test set it was scored on; run `pyro-vae evaluate {run}` first")
    reference = rows[0]
    for row in rows[1:]:
        if row["test_set_sha256"] != reference["test_set_sha256"]:
            raise ValueError(
                f"runs {reference['run_dir']!r} and {row['run_dir']!r} were scored on different "
                f"test sets ({'; '.join(_differences(reference, row))}); their numbers are not "
                f"comparable")


def _differences(a: dict, b: dict) -> list[str]:
    """What tells two rows' test sets apart, as ``key: value vs value`` strings."""
    out = []
    if a.get("num_examples") != b.get("num_examples"):
        out.append(f"test size {a.get('num_examples')} vs {b.get('num_examples')}")
    for key in ("name", "test_fraction", "split_seed", "binarize", "data_dir"):
        va, vb = (a.get("data") or {}).get(key), (b.get("data") or {}).get(key)
        if key == "binarize":  # only binary vs grey levels changes the test set
            va, vb = va != "none", vb != "none"
            if va != vb:
                out.append(f"test pixels {'binary' if va else 'grey levels'} vs "
                           f"{'binary' if vb else 'grey levels'}")
            continue
        if va != vb:
            out.append(f"{'data set' if key == 'name' else key} {va!r} vs {vb!r}")
    return out or ["the test images differ (a changed data file?)"]
