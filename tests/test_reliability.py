"""Issue 17, second round: each reliability promise, checked on more than the issue's one example.

1. Divergence exits 1 (``pyro-vae: training stopped: ...``), checkpoints no bad epoch, and
   leaves no NaN/Infinity in any file; a non-finite validation/test ELBO is divergence too.
   Every JSON file of normal runs and comparisons (one-example test sets included) is strict JSON.
2. Nothing is deleted without ``--overwrite``, and ``--overwrite`` deletes only a run's own files.
3. Sizes that cannot be allocated are one line, exit 2.
5. Degenerate splits (one class, one training example, two examples) train, evaluate and resume.
6. A run recorded on CUDA opens on a CPU-only machine.
8. Two processes, one run directory: the second is refused naming the first's PID; after
   ``kill -9`` the directory resumes (or is overwritten) without clean-up.
9. Values that would wrap or be silently rewritten are refused by name.
10. Python API misuse is a ``TypeError``/``ValueError`` naming the parameter.

The 16 bugs these tests found when they were written are fixed; each test now guards its fix.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import pyro_vae.inference.train as train_module
import pyro_vae.runs as runs_module
from pyro_vae.checkpoint import load_checkpoint
from pyro_vae.cli import main
from pyro_vae.data import DataConfig, load_dataset
from pyro_vae.inference import TrainConfig, fit
from pyro_vae.inference.evaluate import evaluate
from pyro_vae.models import VAE, VAEConfig
from pyro_vae.runs import RunConfig

REPO = Path(__file__).resolve().parents[1]
#: The smallest useful model; every test trains with it (one thread, see ``_one_thread``).
TINY = ["--no-progress", "--hidden-dims", "16", "--latent-dim", "2", "--eval-samples", "3",
        "--device", "cpu"]
#: Fewer training examples where the number does not matter: faster epochs.
SMALL = [*TINY, "--subset", "256", "--batch-size", "64"]
HUGE = str(10**12)  # fits in int64, not in memory
BEYOND_INT64 = str(10**23)  # a Python int that no torch size or index can hold



# ------------------------------------------------------------------ helpers


def cli(capsys, argv) -> tuple[int, list[str]]:
    """Run the CLI in-process; (status, non-empty stderr lines). A traceback fails the test."""
    capsys.readouterr()
    status = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return status, [line for line in err.splitlines() if line.strip()]


def cli_ok(capsys, argv) -> None:
    status, lines = cli(capsys, argv)
    assert status == 0, lines


def cli_error(capsys, argv, *fragments) -> str:
    """The bad-input contract: exit 2 and one line ``pyro-vae: error: ...`` holding ``fragments``."""
    status, lines = cli(capsys, argv)
    assert status == 2, lines
    assert len(lines) == 1 and lines[0].startswith("pyro-vae: error:"), lines
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def cli_stopped(capsys, argv, *fragments) -> str:
    """The divergence contract: exit 1 and one line ``pyro-vae: training stopped: ...``."""
    status, lines = cli(capsys, argv)
    assert status == 1, lines
    assert len(lines) == 1 and lines[0].startswith("pyro-vae: training stopped:"), lines
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def _refuse_constant(name):
    raise ValueError(f"non-standard JSON constant {name}")


def strict_json(path: Path):
    """Parse ``path`` as standard JSON: NaN, Infinity and -Infinity are refused."""
    return json.loads(Path(path).read_text(encoding="utf-8"), parse_constant=_refuse_constant)


def assert_finite_json(path: Path) -> None:
    def walk(value, where):
        if isinstance(value, float):
            assert math.isfinite(value), (path, where, value)
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{where}.{key}")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, f"{where}[{i}]")

    walk(strict_json(path), "")


def assert_every_json_strict(root: Path) -> int:
    files = sorted(Path(root).rglob("*.json"))
    for path in files:
        assert_finite_json(path)
    return len(files)


def snapshot(root: Path) -> dict[str, bytes]:
    """Bytes of every file under ``root`` (the lock file aside: it only names its holder)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(Path(root).rglob("*"))
            if p.is_file() and p.name != ".lock"}


def copy_run(run: Path, tmp_path: Path, name: str = "run") -> Path:
    return Path(shutil.copytree(run, tmp_path / name))


def checkpoint_epoch(run: Path, file: str = "checkpoint.pt") -> int:
    checkpoint = load_checkpoint(run / file)
    return int(checkpoint["train_state"]["epoch"] if "train_state" in checkpoint else checkpoint["epoch"])


def assert_checkpoint_finite(path: Path) -> None:
    for key, tensor in load_checkpoint(path)["model"].items():
        if tensor.is_floating_point():
            assert bool(torch.isfinite(tensor).all()), (path, key)


def write_npz(path: Path, n: int, labels=None, d: int = 16, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    arrays = {"x": (rng.random((n, d)) > 0.5).astype(np.float32)}
    if labels is not None:
        arrays["y"] = np.asarray(labels)
    np.savez(path, **arrays)
    return f"npz:{path}"


def _train(out: Path, *args) -> Path:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", "--out", str(out), *map(str, args)]) == 0
    finally:
        torch.set_num_threads(before)
    return out


# ------------------------------------------------------------------ module fixtures: train once


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A finished 2-epoch run on digits without a validation split."""
    return _train(tmp_path_factory.mktemp("base") / "run", "--epochs", "2", *SMALL)


@pytest.fixture(scope="module")
def five_epochs(base, tmp_path_factory) -> Path:
    """``base`` resumed to 5 epochs: the same configuration, a later checkpoint."""
    run = Path(shutil.copytree(base, tmp_path_factory.mktemp("five") / "run"))
    assert main(["train", "--resume", str(run), "--epochs", "5", "--no-progress"]) == 0
    return run


@pytest.fixture(scope="module")
def one_example_test_set(tmp_path_factory) -> Path:
    """Three examples, ``--test-fraction 0.2``: one test example, two training examples."""
    root = tmp_path_factory.mktemp("one-example")
    return Path(write_npz(root / "three.npz", 3, labels=[0, 1, 1])[4:])


# ------------------------------------------------------------------ 1. divergence

DIVERGING = {
    "lr 1e10": ["--lr", "1e10"],
    "lr 1e10, no evaluation during training": ["--lr", "1e10", "--eval-every", "0"],
    "lr 1e10, validation split": ["--lr", "1e10", "--val-fraction", "0.2"],
    "iwae, lr 1e10": ["--objective", "iwae", "--particles", "2", "--lr", "1e10"],
    "cvae, lr 1e10": ["--model", "cvae", "--lr", "1e10"],
    "vamp prior, lr 1e10": ["--prior", "vamp", "--lr", "1e10"],
    "delta guide, lr 1e10": ["--guide", "delta", "--lr", "1e10"],
    "huge beta and lr": ["--beta", "1e30", "--lr", "1e3"],
    "gaussian, obs-scale 1e-30": ["--likelihood", "gaussian", "--obs-scale", "1e-30", "--binarize", "none"],
    "float64 gaussian, obs-scale 1e-200": ["--likelihood", "gaussian", "--obs-scale", "1e-200",
                                           "--binarize", "none", "--dtype", "float64"],
    "continuous-bernoulli, lr 1e10": ["--likelihood", "continuous-bernoulli", "--binarize", "none",
                                      "--lr", "1e10"],
}


#: Blow-ups that may or may not diverge, depending on the draw: finished, every file is finite.
MAY_DIVERGE = {
    "beta 1e30": ["--beta", "1e30"],
    "lr 1e3": ["--lr", "1e3"],
    "mixture, lr 1e10": ["--model", "mixture", "--lr", "1e10"],
}


@pytest.mark.parametrize("extra", [*DIVERGING.values(), *MAY_DIVERGE.values()],
                         ids=[*DIVERGING, *MAY_DIVERGE])
def test_divergence_exits_1_and_leaves_only_finite_files(tmp_path, capsys, extra):
    out = tmp_path / "run"
    extra = [a for a in extra]
    tiny = [a for a in SMALL] if "mixture" not in extra else [
        "--no-progress", "--eval-samples", "3", "--device", "cpu", "--subset", "256", "--batch-size", "64"]
    status, lines = cli(capsys, ["train", "--out", out, "--epochs", "2", *tiny, *extra])
    if status == 0:
        assert extra in MAY_DIVERGE.values(), "expected divergence"
        metrics = strict_json(out / "metrics.json")
        assert math.isfinite(metrics["test"]["elbo"]) and metrics["epochs"] == 2
    elif status == 2:  # refused up front: one line
        assert len(lines) == 1 and lines[0].startswith("pyro-vae: error:"), lines
    else:
        assert status == 1, lines
        assert len(lines) == 1 and lines[0].startswith("pyro-vae: training stopped:"), lines
        assert not (out / "metrics.json").exists()  # the run did not finish
    if out.exists():
        assert_every_json_strict(out)
        for name in ("checkpoint.pt", "best.pt"):
            if (out / name).exists():  # a checkpoint that exists is of a good epoch
                assert_checkpoint_finite(out / name)
        # the surviving directory: evaluate works, or is refused in one line
        status, lines = cli(capsys, ["evaluate", out, "--samples", "3"])
        assert status == 0 or (status == 2 and len(lines) == 1
                               and lines[0].startswith("pyro-vae: error:")), lines
        assert_every_json_strict(out)


def test_diverging_ppca_exits_1(tmp_path, capsys):
    cli_stopped(capsys, ["train", "--out", tmp_path / "run", "--model", "ppca", "--epochs", "2",
                         "--lr", "1e10", "--no-progress", "--eval-samples", "3", "--device", "cpu",
                         "--subset", "256", "--batch-size", "64"])


def _poison_held_out(monkeypatch, at_call: int, value: float) -> list:
    """Make the per-epoch held-out ELBO return ``value`` at its ``at_call``-th call."""
    real, calls = train_module.held_out_elbo, []

    def held_out(*args, **kwargs):
        calls.append(1)
        score, parts = real(*args, **kwargs)
        return (value, parts) if len(calls) == at_call else (score, parts)

    monkeypatch.setattr(train_module, "held_out_elbo", held_out)
    return calls


@pytest.mark.parametrize("split, value", [("val", float("nan")), ("test", float("-inf"))])
def test_nonfinite_held_out_elbo_is_divergence_and_keeps_the_last_good_epoch(
        tmp_path, capsys, monkeypatch, split, value):
    out = tmp_path / "run"
    extra = ["--val-fraction", "0.2"] if split == "val" else []
    _poison_held_out(monkeypatch, at_call=2, value=value)
    cli_stopped(capsys, ["train", "--out", out, "--epochs", "3", *SMALL, *extra],
                f"non-finite {split} ELBO", "after epoch 2", "last checkpoint (epoch 1) is intact")
    assert checkpoint_epoch(out) == 1
    if split == "val":  # the best epoch so far is the last good one
        assert checkpoint_epoch(out, "best.pt") == 1
    assert not (out / "metrics.json").exists()
    assert_every_json_strict(out)
    cli_error(capsys, ["evaluate", out], "has not finished training", "--resume")
    monkeypatch.undo()  # the fault is gone: the run resumes from epoch 1
    cli_ok(capsys, ["train", "--resume", out, "--epochs", "2"])
    assert checkpoint_epoch(out) == 2 and strict_json(out / "metrics.json")["epochs"] == 2
    assert_every_json_strict(out)


def test_divergence_while_resuming_leaves_the_finished_run_usable(base, tmp_path, capsys, monkeypatch):
    run = copy_run(base, tmp_path)
    before = snapshot(run)
    _poison_held_out(monkeypatch, at_call=1, value=float("nan"))  # epoch 3
    cli_stopped(capsys, ["train", "--resume", run, "--epochs", "4"],
                "after epoch 3", "last checkpoint (epoch 2) is intact")
    after = snapshot(run)
    # only config.json may be rewritten on resume (same settings); every result file is untouched
    assert {k: v for k, v in after.items() if k != "config.json"} == \
           {k: v for k, v in before.items() if k != "config.json"}
    assert strict_json(run / "config.json") == strict_json(base / "config.json") or \
           strict_json(run / "config.json")["train"]["epochs"] == 4
    monkeypatch.undo()
    cli_ok(capsys, ["evaluate", run, "--samples", "3"])  # the surviving run is whole


def _poison_final_evaluation(monkeypatch):
    real = runs_module.evaluate_per_example

    def poisoned(*args, **kwargs):
        test, per_example = real(*args, **kwargs)
        per_example["elbo"][0] = float("nan")
        return test, per_example

    monkeypatch.setattr(runs_module, "evaluate_per_example", poisoned)


def test_nonfinite_final_evaluation_writes_no_metrics(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    _poison_final_evaluation(monkeypatch)
    cli_stopped(capsys, ["train", "--out", out, "--epochs", "1", *SMALL], "not finite", "metrics.json")
    assert not (out / "metrics.json").exists()
    assert_checkpoint_finite(out / "checkpoint.pt")
    assert_every_json_strict(out)


def test_nonfinite_evaluate_keeps_the_old_metrics(base, tmp_path, capsys, monkeypatch):
    run = copy_run(base, tmp_path)
    before = snapshot(run)
    _poison_final_evaluation(monkeypatch)
    status, lines = cli(capsys, ["evaluate", run, "--samples", "3"])
    assert status in (1, 2) and len(lines) == 1 and lines[0].startswith("pyro-vae: "), lines
    assert snapshot(run) == before


# ------------------------------------------------------------------ 1b. strict JSON everywhere


def test_every_json_file_of_normal_runs_and_comparisons_is_strict(base, five_epochs, one_example_test_set,
                                                                  tmp_path, capsys):
    data = f"npz:{one_example_test_set}"
    one = tmp_path / "one"
    cli_ok(capsys, ["train", "--out", one, "--epochs", "1", *TINY, "--dataset", data,
                    "--test-fraction", "0.2"])
    test = strict_json(one / "metrics.json")["test"]
    assert test["num_examples"] == 1
    assert test["elbo_stderr"] is None and test["log_likelihood_stderr"] is None
    cli_ok(capsys, ["evaluate", one, "--samples", "3"])
    assert strict_json(one / "metrics.json")["test"]["elbo_stderr"] is None
    # a comparison on the one-example test set: paired differences have no standard error
    compared = tmp_path / "compared"
    cli_ok(capsys, ["compare", "--models", "vae,mog=vae:prior=mog", "--dataset", data, "--test-fraction", "0.2",
                    "--epochs", "1", "--samples", "3", "--no-progress", "--latent-dim", "2",
                    "--hidden-dims", "16", "--device", "cpu", "--out", compared])
    rows = strict_json(compared / "summary.json")
    assert any(row.get("paired") for row in rows)
    for row in rows:
        assert row["elbo_stderr"] is None
        if row.get("paired"):
            assert row["paired"]["stderr"] is None
    reused = tmp_path / "reused"
    cli_ok(capsys, ["compare", "--runs", f"a={base},b={five_epochs}", "--out", reused])
    counted = sum(assert_every_json_strict(root) for root in (base, five_epochs, one, compared, reused))
    assert counted >= 2 + 2 + 2 + 5 + 1


# ------------------------------------------------------------------ 2. nothing deleted without --overwrite

USER_CONTENT = {
    "figures subfolder": {"figures/mine.png": b"\x89PNG user figure"},
    "metrics.json": {"metrics.json": b'{"accuracy": 0.9}'},
    "checkpoint.pt": {"checkpoint.pt": b"someone else's weights"},
    "all three": {"figures/mine.png": b"png", "metrics.json": b"{}", "checkpoint.pt": b"w",
                  "best.pt": b"b", "test_per_example.npz": b"n"},
    "a hidden file only": {".notes": b"private"},
}


@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
@pytest.mark.parametrize("content", USER_CONTENT.values(), ids=USER_CONTENT.keys())
def test_out_that_is_not_a_run_is_refused_and_untouched(tmp_path, capsys, content, overwrite):
    out = tmp_path / "mine"
    for name, data in content.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    before = snapshot(out)
    cli_error(capsys, ["train", "--out", out, "--epochs", "1", *SMALL, *(["--overwrite"] * overwrite)],
              repr(str(out)), "holds no pyro-vae run")
    assert snapshot(out) == before
    assert sorted(p.name for p in out.iterdir()) == sorted({Path(n).parts[0] for n in content})


@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
def test_out_that_is_a_file_is_refused_and_untouched(tmp_path, capsys, overwrite):
    target = tmp_path / "results.txt"
    target.write_bytes(b"user data")
    for out in (target, target / "run"):
        cli_error(capsys, ["train", "--out", out, "--epochs", "1", *SMALL, *(["--overwrite"] * overwrite)],
                  "not a directory", repr(str(out)))
    assert target.read_bytes() == b"user data"


def test_compare_into_a_directory_with_user_files_replaces_nothing(base, tmp_path, capsys):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "report.md").write_text("# my notes")
    (out / "summary.json").write_text('{"mine": 1}')
    before = snapshot(out)
    status, lines = cli(capsys, ["compare", "--runs", base, "--out", out])
    assert snapshot(out) == before, (status, lines)


@pytest.mark.parametrize("inner", ["sub", "figures", "deep/er/dir"])
@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
def test_out_inside_an_existing_run_is_refused(base, tmp_path, capsys, inner, overwrite):
    run = copy_run(base, tmp_path)
    before = snapshot(run)
    cli_error(capsys, ["train", "--out", run / inner, "--epochs", "1", *SMALL,
                       *(["--overwrite"] * overwrite)], "lies inside the run", repr(str(run)))
    assert snapshot(run) == before
    assert not (run / "sub").exists() and not (run / "deep").exists()


@pytest.mark.parametrize("foreign", [{"notes.txt": b"mine"}, {"data/x.csv": b"1,2"},
                                     {"report.md": b"# mine", "run.log": b"log"}],
                         ids=["a file", "a folder", "two files"])
def test_overwrite_of_a_run_with_foreign_files_deletes_nothing(base, tmp_path, capsys, foreign):
    run = copy_run(base, tmp_path)
    for name, data in foreign.items():
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_bytes(data)
    before = snapshot(run)
    cli_error(capsys, ["train", "--out", run, "--overwrite", "--epochs", "1", *SMALL],
              "--overwrite", "pyro-vae did not write", Path(next(iter(foreign))).parts[0])
    assert snapshot(run) == before


def test_overwrite_keeps_user_files_inside_figures(base, tmp_path, capsys):
    run = copy_run(base, tmp_path)
    (run / "figures" / "my-notes.txt").write_text("mine")
    status, lines = cli(capsys, ["train", "--out", run, "--overwrite", "--epochs", "1", *SMALL])
    # either refused (a foreign file) or done without touching the user's file
    assert (run / "figures" / "my-notes.txt").read_text() == "mine", (status, lines)


def test_overwrite_refuses_a_directory_whose_config_json_is_not_a_run(tmp_path, capsys):
    out = tmp_path / "other-project"
    out.mkdir()
    (out / "config.json").write_text('{"learning_rate": 0.1}')
    (out / "checkpoint.pt").write_bytes(b"someone else's weights")
    before = snapshot(out)
    status, lines = cli(capsys, ["train", "--out", out, "--overwrite", "--epochs", "1", *SMALL])
    assert snapshot(out) == before, (status, lines)
    assert status == 2 and len(lines) == 1, lines


OVERWRITE_REFUSED = {
    "bad lr": (["--lr", "-1"], "lr must be a finite positive number"),
    "nan lr": (["--lr", "nan"], "got nan"),
    "unknown prior": (["--prior", "nope"], "unknown prior 'nope'"),
    "latent-dim 1e12": (["--latent-dim", HUGE], "cannot be built"),
    "hidden-dims 1e11": (["--hidden-dims", str(10**11)], "cannot be built"),
    "epochs 0": (["--epochs", "0"], "epochs must be a positive integer"),
    "missing npz": (["--dataset", "npz:/no/such/file.npz"], "file.npz"),
    "unknown device": (["--device", "tpu"], "unknown device 'tpu'"),
    "cvae on unlabelled data": (["--model", "cvae", "--dataset", "npz:UNLABELLED"], "labels"),
}


@pytest.mark.parametrize("extra, fragment", OVERWRITE_REFUSED.values(), ids=OVERWRITE_REFUSED.keys())
def test_overwrite_with_an_invalid_option_leaves_the_old_run_intact(base, tmp_path, capsys, extra, fragment):
    run = copy_run(base, tmp_path)
    extra = [write_npz(tmp_path / "unlabelled.npz", 20) if a == "npz:UNLABELLED" else a for a in extra]
    before = snapshot(run)
    cli_error(capsys, ["train", "--out", run, "--overwrite", "--epochs", "1", *SMALL, *extra], fragment)
    assert snapshot(run) == before


def test_overwrite_with_particles_that_cannot_be_allocated_leaves_the_old_run_intact(base, tmp_path, capsys):
    run = copy_run(base, tmp_path)
    before = snapshot(run)
    cli_error(capsys, ["train", "--out", run, "--overwrite", "--epochs", "1", *SMALL, "--particles", HUGE])
    assert snapshot(run) == before


# ------------------------------------------------------------------ 3. resource exhaustion

EXHAUSTING = {
    "latent-dim": (["train", "--out", "OUT", "--epochs", "1", *SMALL, "--latent-dim", HUGE], "cannot be built"),
    "hidden-dims": (["train", "--out", "OUT", "--epochs", "1", *SMALL, "--hidden-dims", str(10**11)],
                    "cannot be built"),
    "second hidden layer": (["train", "--out", "OUT", "--epochs", "1", *SMALL, "--hidden-dims", f"16,{10**11}"],
                            "cannot be built"),
    "mog components": (["train", "--out", "OUT", "--epochs", "1", *SMALL, "--prior", "mog",
                        "--prior-components", HUGE], "cannot be built"),
    "particles": (["train", "--out", "OUT", "--epochs", "1", *SMALL, "--particles", HUGE], "memory"),
    "sample --n": (["sample", "RUN", "--n", HUGE, "--out", "OUT.png"], "memory"),
    "plot samples --n": (["plot", "RUN", "--kind", "samples", "--n", HUGE, "--out", "OUT.png"], "memory"),
    "plot manifold --n": (["plot", "RUN", "--kind", "manifold", "--n", HUGE, "--out", "OUT.png"], "memory"),
    # not memory but time: K = 10**12 would run for days before any allocation fails
    "evaluate --samples": (["evaluate", "RUN", "--samples", HUGE], "num_samples must be at most 10,000,000"),
    "train --eval-samples": (["train", "--out", "OUT", "--epochs", "1", *SMALL, "--eval-samples", HUGE],
                             "eval_samples must be at most 10,000,000"),
}


def _fill(argv, run, tmp_path):
    return [run if a == "RUN" else tmp_path / "out" if a == "OUT" else tmp_path / "out.png"
            if a == "OUT.png" else a for a in argv]


@pytest.mark.parametrize("argv, fragment", EXHAUSTING.values(), ids=EXHAUSTING.keys())
def test_sizes_that_cannot_be_allocated_are_one_line(base, tmp_path, capsys, argv, fragment):
    before = snapshot(base)
    cli_error(capsys, _fill(argv, base, tmp_path), fragment)
    assert snapshot(base) == before
    assert not (tmp_path / "out.png").exists()


def test_batch_size_larger_than_the_data_trains(tmp_path, capsys):
    data = write_npz(tmp_path / "small.npz", 30, labels=np.arange(30) % 3)
    out = tmp_path / "run"
    cli_ok(capsys, ["train", "--out", out, "--epochs", "1", *TINY, "--dataset", data,
                    "--batch-size", str(10**12)])
    assert strict_json(out / "metrics.json")["steps"] == 1
    assert_every_json_strict(out)


BEYOND = {
    "latent-dim": ["train", "--out", "OUT", "--epochs", "1", *SMALL, "--latent-dim", BEYOND_INT64],
    "hidden-dims": ["train", "--out", "OUT", "--epochs", "1", *SMALL, "--hidden-dims", BEYOND_INT64],
    "mog components": ["train", "--out", "OUT", "--epochs", "1", *SMALL, "--prior", "mog",
                       "--prior-components", BEYOND_INT64],
    "particles": ["train", "--out", "OUT", "--epochs", "1", *SMALL, "--particles", BEYOND_INT64],
    "sample --n": ["sample", "RUN", "--n", BEYOND_INT64, "--out", "OUT.png"],
    "plot samples --n": ["plot", "RUN", "--kind", "samples", "--n", BEYOND_INT64, "--out", "OUT.png"],
    "plot manifold --n": ["plot", "RUN", "--kind", "manifold", "--n", BEYOND_INT64, "--out", "OUT.png"],
    "plot arithmetic --from-label": ["plot", "RUN", "--kind", "arithmetic", "--from-label", BEYOND_INT64,
                                     "--out", "OUT.png"],
}


@pytest.mark.parametrize("argv", [
    argv for argv in BEYOND.values()], ids=BEYOND.keys())
def test_sizes_beyond_int64_are_one_line_naming_the_value(base, tmp_path, capsys, argv):
    before = snapshot(base)
    cli_error(capsys, _fill(argv, base, tmp_path), BEYOND_INT64)
    assert snapshot(base) == before


# ------------------------------------------------------------------ 5. degenerate splits


def _degenerate(kind: str, root: Path) -> list[str]:
    if kind == "one class":
        return ["--dataset", write_npz(root / "one-class.npz", 40, labels=np.zeros(40, np.int64))]
    if kind == "subset 1":
        return ["--subset", "1"]
    return ["--dataset", write_npz(root / "two.npz", 2, labels=[0, 1])]


@pytest.mark.parametrize("kind", ["one class", "subset 1", "two examples"])
def test_degenerate_split_trains_evaluates_and_resumes(tmp_path, capsys, kind):
    out = tmp_path / "run"
    status, lines = cli(capsys, ["train", "--out", out, "--epochs", "1", *TINY, *_degenerate(kind, tmp_path)])
    if status == 2:  # refused up front, naming the option
        assert len(lines) == 1 and ("--subset" in lines[0] or "--dataset" in lines[0] or "npz" in lines[0])
        return
    assert status == 0, lines
    latent = strict_json(out / "metrics.json")["test"]["latent"]
    assert latent["classifier_accuracy"] is None and latent["classifier_note"], latent
    cli_ok(capsys, ["evaluate", out, "--samples", "3"])
    cli_ok(capsys, ["train", "--resume", out, "--epochs", "2"])
    metrics = strict_json(out / "metrics.json")
    assert metrics["epochs"] == 2 and metrics["test"]["latent"]["classifier_accuracy"] is None
    assert_every_json_strict(out)


# ------------------------------------------------------------------ 6. a run recorded on CUDA


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_run_recorded_on_cuda_opens_on_a_cpu_machine(base, tmp_path, capsys, device):
    run = copy_run(base, tmp_path)
    config = strict_json(run / "config.json")
    config["train"]["device"] = device
    (run / "config.json").write_text(json.dumps(config, indent=2))
    for flags in ([], ["--device", "cpu"]):
        cli_ok(capsys, ["evaluate", run, "--samples", "3", *flags])
        cli_ok(capsys, ["sample", run, "--n", "4", "--out", tmp_path / "s.png", *flags])
        if device == "cuda":  # (the same code path for cuda:N; once is enough for the slow ones)
            cli_ok(capsys, ["plot", run, "--kind", "samples", "--out", tmp_path / "p.png", *flags])
            cli_ok(capsys, ["report", run, "--out", tmp_path / "r.html", *flags])
            assert (tmp_path / "p.png").stat().st_size and (tmp_path / "r.html").stat().st_size
    assert (tmp_path / "s.png").stat().st_size
    # resuming without --device: done, or one line saying to pass --device cpu
    status, lines = cli(capsys, ["train", "--resume", run, "--epochs", "3"])
    assert status == 0 or (status == 2 and len(lines) == 1 and "--device cpu" in lines[0]), lines
    epochs = checkpoint_epoch(run)
    cli_ok(capsys, ["train", "--resume", run, "--epochs", epochs + 1, "--device", "cpu"])
    assert checkpoint_epoch(run) == epochs + 1
    assert_every_json_strict(run)


# ------------------------------------------------------------------ 8. two processes, one run directory


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")
def test_second_process_is_refused_while_training_holds_the_run(tmp_path, capsys):
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    first = subprocess.Popen(
        [sys.executable, "-m", "pyro_vae", "train", "--out", str(run), "--epochs", "100000", *SMALL],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (run / "checkpoint.pt").exists():
            assert first.poll() is None, "the training process ended early"
            assert time.monotonic() < deadline, "no checkpoint after 120 s"
            time.sleep(0.05)
        held = f"in use by process {first.pid}"
        cli_error(capsys, ["train", "--out", run, "--overwrite", "--epochs", "1", *SMALL], held)
        cli_error(capsys, ["evaluate", run, "--samples", "3"], held)
        cli_error(capsys, ["train", "--resume", run, "--epochs", "200000"], held)
        assert (run / "config.json").is_file() and (run / "checkpoint.pt").is_file()  # nothing deleted
        assert first.poll() is None  # and the first one still trains
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    # killed: no clean-up needed; the lock file may still name the dead process
    other = copy_run(run, tmp_path, "other")
    done = checkpoint_epoch(run)
    cli_ok(capsys, ["train", "--resume", run, "--epochs", done + 1])
    assert checkpoint_epoch(run) == done + 1 and strict_json(run / "metrics.json")["epochs"] == done + 1
    cli_ok(capsys, ["evaluate", run, "--samples", "3"])
    cli_ok(capsys, ["train", "--out", other, "--overwrite", "--epochs", "1", *SMALL])
    assert strict_json(other / "metrics.json")["epochs"] == 1


# ------------------------------------------------------------------ 9. values that wrap or are rewritten


@pytest.mark.parametrize("labels, found", [
    (np.array([0, 1, 2**63], dtype=np.uint64), str(2**63)),
    (np.array([0, 1, 2**64 - 1], dtype=np.uint64), str(2**64 - 1)),
    (np.array([0, 1, -1], dtype=np.int64), "-1"),
])
def test_labels_that_would_wrap_are_refused_by_the_cli(tmp_path, capsys, labels, found):
    data = write_npz(tmp_path / "labels.npz", 3, labels=labels)
    for model in ("vae", "cvae"):
        cli_error(capsys, ["train", "--out", tmp_path / model, "--model", model, "--epochs", "1", *TINY,
                           "--dataset", data], "labels", found)
        assert not (tmp_path / model).exists()


@pytest.mark.parametrize("dims", ["8,,4", "8,", ",4", ",", "", " ", "8;4", "8,-4", "8,0", "4.5"])
def test_malformed_hidden_dims_are_refused(tmp_path, capsys, dims):
    cli_error(capsys, ["train", "--out", tmp_path / "run", "--epochs", "1", *TINY, "--hidden-dims", dims],
              "--hidden-dims")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv", [
    ["evaluate", "RUN", "--samples", "3"],
    ["plot", "RUN", "--kind", "samples", "--out", "OUT.png"],
    ["plot", "RUN", "--kind", "curves", "--out", "OUT.png"],
    ["sample", "RUN", "--n", "4", "--out", "OUT.png"],
    ["report", "RUN", "--out", "OUT.png"],
    ["compare", "--runs", "RUN", "--out", "OUT"],
], ids=["evaluate", "plot samples", "plot curves", "sample", "report", "compare"])
def test_checkpoint_of_another_epoch_is_refused(base, five_epochs, tmp_path, capsys, argv):
    run = copy_run(base, tmp_path)
    shutil.copyfile(five_epochs / "checkpoint.pt", run / "checkpoint.pt")
    before = snapshot(run)
    cli_error(capsys, _fill(argv, run, tmp_path), "epoch 5", "epochs 2")
    assert snapshot(run) == before
    assert not (tmp_path / "out.png").exists() and not (tmp_path / "out").exists()


def test_per_example_file_of_another_run_is_refused(base, five_epochs, tmp_path, capsys):
    run = copy_run(base, tmp_path)
    shutil.copyfile(five_epochs / "test_per_example.npz", run / "test_per_example.npz")
    ours, theirs = (strict_json(r / "metrics.json")["test"]["log_likelihood"] for r in (run, five_epochs))
    assert ours != theirs  # the two runs' numbers differ, so the copied file is not this run's
    cli_error(capsys, ["compare", "--runs", f"a={run},b={five_epochs}", "--out", tmp_path / "out"],
              "test_per_example.npz")


@pytest.mark.parametrize("field, value", [("num_examples", 10**30), ("log_likelihood_samples", -5)])
def test_metrics_values_the_writer_never_produces_are_refused(base, tmp_path, capsys, field, value):
    run = copy_run(base, tmp_path)
    metrics = strict_json(run / "metrics.json")
    metrics["test"][field] = value
    (run / "metrics.json").write_text(json.dumps(metrics, indent=2))
    cli_error(capsys, ["compare", "--runs", run, "--out", tmp_path / "out"], "metrics.json", field)


@pytest.mark.parametrize("seed", ["-1", str(2**31), BEYOND_INT64])
@pytest.mark.parametrize("command", ["plot", "sample", "report"])
def test_negative_or_huge_seeds_are_refused(base, tmp_path, capsys, command, seed):
    extra = ["--kind", "samples"] if command == "plot" else []
    cli_error(capsys, [command, base, *extra, "--seed", seed, "--out", tmp_path / "x.png"], "--seed", seed)
    assert not (tmp_path / "x.png").exists()


REWRITTEN = {
    "epochs 0": (["--epochs", "0"], "epochs", "0"),
    "val-fraction 1.0": (["--val-fraction", "1.0"], "val_fraction", "1.0"),
    "val-fraction -0.1": (["--val-fraction", "-0.1"], "val_fraction", "-0.1"),
    "test-fraction 0": (["--test-fraction", "0"], "test_fraction", "0"),
    "test-fraction 1": (["--test-fraction", "1"], "test_fraction", "1"),
    "lr nan": (["--lr", "nan"], "lr", "nan"),
    "lr inf": (["--lr", "inf"], "lr", "inf"),
    "beta inf": (["--beta", "inf"], "beta", "inf"),
    "beta nan": (["--beta", "nan"], "beta", "nan"),
    "beta -1": (["--beta", "-1"], "beta", "-1"),
    "obs-scale inf": (["--likelihood", "gaussian", "--binarize", "none", "--obs-scale", "inf"], "obs_scale", "inf"),
    "obs-scale nan": (["--likelihood", "gaussian", "--binarize", "none", "--obs-scale", "nan"], "obs_scale", "nan"),
    "kl-warmup -1": (["--kl-warmup", "-1"], "kl_warmup", "-1"),
    "batch-size -1": (["--batch-size", "-1"], "batch_size", "-1"),
    "seed 2**31": (["--seed", str(2**31)], "seed", str(2**31)),
    "eval-samples -1": (["--eval-samples", "-1"], "eval_samples", "-1"),
}


@pytest.mark.parametrize("extra, name, value", REWRITTEN.values(), ids=REWRITTEN.keys())
def test_train_values_that_would_be_rewritten_are_refused(tmp_path, capsys, extra, name, value):
    cli_error(capsys, ["train", "--out", tmp_path / "run", "--epochs", "1", *TINY, *extra], name, value)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv, fragments", [
    (["evaluate", "RUN", "--samples", "-1"], ["samples", "-1"]),
    (["evaluate", "RUN", "--samples", "0"], ["samples", "0"]),
    (["compare", "--runs", "RUN", "--samples", "-1", "--out", "OUT"], ["samples", "-1"]),
    (["compare", "--models", "vae", "--samples", "0", "--out", "OUT"], ["samples", "0"]),
    (["train", "--resume", "RUN", "--epochs", "0"], ["epochs", "0"]),
    (["train", "--resume", "RUN", "--epochs", "-1"], ["epochs", "-1"]),
    (["train", "--resume", "RUN", "--epochs", "1"], ["epochs must exceed", "1"]),
    (["sample", "RUN", "--n", "0", "--out", "OUT.png"], ["n must be a positive integer", "0"]),
    (["sample", "RUN", "--n", "-5", "--out", "OUT.png"], ["n must be a positive integer", "-5"]),
    (["plot", "RUN", "--kind", "samples", "--n", "-3", "--out", "OUT.png"], ["n", "-3"]),
], ids=["evaluate -1", "evaluate 0", "compare runs -1", "compare models 0", "resume 0", "resume -1",
        "resume backwards", "sample 0", "sample -5", "plot -3"])
def test_other_commands_refuse_values_that_would_be_rewritten(base, tmp_path, capsys, argv, fragments):
    run = copy_run(base, tmp_path)
    before = snapshot(run)
    cli_error(capsys, _fill(argv, run, tmp_path), *fragments)
    assert snapshot(run) == before
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.png").exists()


# ------------------------------------------------------------------ 10. Python API misuse


@pytest.fixture(scope="module")
def digits_data():
    return load_dataset(DataConfig("digits"))


def tiny_vae():
    return VAE(64, VAEConfig(latent_dim=2, hidden_dims=(8,)))


QUIET = TrainConfig(epochs=1, progress=False, device="cpu")


def test_api_misuse_is_named(digits_data):
    vae, data = tiny_vae(), digits_data
    with pytest.raises(TypeError, match=r"^config must be a TrainConfig, got dict"):
        fit(vae, data, {"epochs": 1})
    with pytest.raises(TypeError, match=r"^config must be a DataConfig, got the string 'digits'"):
        load_dataset("digits")
    with pytest.raises(TypeError, match=r"^model must be a Module, got NoneType"):
        fit(None, data, QUIET)
    with pytest.raises(TypeError, match=r"^data must be a pyro_vae\.data\.DataSplits .*; got NoneType$"):
        fit(vae, None, QUIET)
    with pytest.raises(TypeError, match=r"^data must be a pyro_vae\.data\.DataSplits .*; got str$"):
        fit(vae, "digits", QUIET)
    with pytest.raises(TypeError, match=r"^x must be a torch\.Tensor"):
        evaluate(vae, None)
    with pytest.raises(TypeError, match=r"^x must be a torch\.Tensor.*ndarray"):
        evaluate(vae, data.x_test.numpy())
    with pytest.raises(TypeError, match=r"^train must be a TrainConfig, got dict"):
        RunConfig(train={"epochs": 1})
    with pytest.raises(TypeError, match=r"^data must be a DataConfig, got dict"):
        RunConfig(data={"name": "digits"})
    with pytest.raises(ValueError, match=r"eval_samples must be a positive integer, got 0"):
        RunConfig(eval_samples=0)
    with pytest.raises(TypeError, match=r"epochs must be a positive integer, got 1\.5"):
        TrainConfig(epochs=1.5)
    with pytest.raises(ValueError, match=r"x holds no examples"):
        evaluate(vae, data.x_test[:0])


def test_api_empty_training_split_is_named(digits_data):
    empty = dataclasses.replace(digits_data, x_train=digits_data.x_train[:0], y_train=digits_data.y_train[:0])
    with pytest.raises(ValueError, match=r"empty training split \(x_train has shape \(0, 64\)\)"):
        fit(tiny_vae(), empty, QUIET)


def test_api_evaluate_without_a_model_is_named(digits_data):
    with pytest.raises(TypeError, match=r"model"):
        evaluate(None, digits_data.x_test)


def test_api_data_without_held_out_splits_trains_without_evaluation(digits_data):
    # Data given as tensors has no test split (issue 13): fit trains and evaluates nothing; a
    # run directory's data always has one (load_dataset refuses an empty split).
    empty = dataclasses.replace(digits_data, x_test=digits_data.x_test[:0], y_test=digits_data.y_test[:0])
    result = fit(tiny_vae(), empty, QUIET)
    assert result.history and all("test_elbo" not in r and "val_elbo" not in r for r in result.history)


def test_api_model_config_as_a_dict_is_named():
    with pytest.raises(TypeError, match=r"config"):
        VAE(64, {"latent_dim": 2})


def test_api_run_config_without_model_config_is_named():
    with pytest.raises(TypeError, match=r"model_config"):
        RunConfig(model_config=None)


def test_api_callbacks_none_is_named(digits_data):
    with pytest.raises(TypeError, match=r"callbacks"):
        fit(tiny_vae(), digits_data, QUIET, callbacks=None)
