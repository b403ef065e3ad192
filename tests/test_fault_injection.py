"""Killed runs lose nothing: SIGKILL a training process anywhere, resume it, get the same model.

Each trial starts ``python -m pyro_vae train`` as a subprocess on digits, kills it with SIGKILL
at a chosen or random moment (during start-up, just before the first checkpoint, in the middle
of the k-th checkpoint write, during the final metrics write, or at a random time), checks that
every file left behind is readable (the checkpoint is loaded and its checksum verified), then
finishes the run with ``train --resume DIR --epochs 6`` (or, when the kill came before the
first checkpoint, with ``train --out DIR --overwrite``, which is what the CLI tells the user).
The finished run must equal an uninterrupted one exactly: every tensor of the final state
dict (``torch.equal``), the training history and the test numbers.

Writes are slowed with the documented hook ``PYRO_VAE_TEST_SLOW_CHECKPOINT`` (seconds slept
between writing a temporary file and renaming it), so that kills land inside writes.
All processes run single-threaded on the CPU, so the arithmetic is the same in each.
The default tier runs three trials; ``-m slow`` runs twelve more, some killed twice.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pyro_vae.checkpoint import SLOW_WRITE_ENV, load_checkpoint
from pyro_vae.cli import main
from pyro_vae.inference import TrainConfig, fit
from pyro_vae.models import VAE, VAEConfig

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")

EPOCHS = 6
ARGS = ["--hidden-dims", "32", "--latent-dim", "4", "--epochs", str(EPOCHS), "--eval-samples", "5",
        "--no-progress", "--batch-size", "64", "--subset", "512", "--device", "cpu", "--seed", "3"]
SLOW_WRITE_SECONDS = 0.15
#: Tallies over the session, printed at the end of each trial (for the README's numbers).
TALLY = {"trials": 0, "kills": 0, "kills_inside_a_write": 0, "files_checked": 0,
         "unreadable": 0, "restarts_from_scratch": 0, "identical_results": 0}


@pytest.fixture(autouse=True)
def single_thread():
    """Pin this process to one thread, as the subprocesses are (same arithmetic everywhere;
    also much faster than two threads on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run: its final state dict, metrics and how long its training took."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("reference") / "run"
        started = time.perf_counter()
        assert main(["train", "--out", str(out), *ARGS]) == 0
        seconds = time.perf_counter() - started
    finally:
        torch.set_num_threads(before)
    metrics = json.loads((out / "metrics.json").read_text())
    # One epoch of a killed run: its training and evaluation plus its slowed checkpoint write.
    epoch_seconds = min(seconds, metrics["seconds"]) / EPOCHS + SLOW_WRITE_SECONDS
    return {"model": load_checkpoint(out / "checkpoint.pt")["model"], "metrics": metrics,
            "epoch_seconds": epoch_seconds}


def _spawn(argv, slow: float | None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop(SLOW_WRITE_ENV, None)
    if slow:
        env[SLOW_WRITE_ENV] = str(slow)
    return subprocess.Popen([sys.executable, "-m", "pyro_vae", *argv], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _temporaries(run_dir: Path, target: str) -> set[str]:
    return {p.name for p in run_dir.glob(f".{target}.*.tmp")} if run_dir.is_dir() else set()


def _kill_when(proc, condition, timeout=180.0) -> bool:
    """SIGKILL ``proc`` as soon as ``condition()`` holds; False if it exited first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if condition():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.003)
    proc.kill()
    proc.wait()
    raise AssertionError("the training subprocess neither reached the kill point nor finished")


def _kill_point(mode: str, run_dir: Path, rng: random.Random, epoch_seconds: float,
                ignore: set[str]):
    """A condition that becomes true at the moment ``mode`` asks the kill to land.

    ``ignore``: temporaries orphaned by an earlier killed process (not this one's writes).
    """
    started = time.monotonic()
    if mode == "start-up":  # while Python imports torch and pyro: nothing written yet
        delay = rng.uniform(0.05, 0.6)
        return lambda: time.monotonic() - started > delay
    if mode == "before-first-checkpoint":  # config.json written, no epoch finished
        return lambda: (run_dir / "config.json").exists()
    if mode.startswith("checkpoint-write-"):  # inside the k-th write of checkpoint.pt
        k, seen = int(mode.rsplit("-", 1)[1]), set()

        def in_kth_write():
            seen.update(_temporaries(run_dir, "checkpoint.pt") - ignore)
            return len(seen) >= k and bool(_temporaries(run_dir, "checkpoint.pt") - ignore)

        in_kth_write.writes_seen = seen  # (a busy machine may let a short write go unseen)
        return in_kth_write
    if mode == "metrics-write":  # training done, the final metrics.json being written
        return lambda: bool(_temporaries(run_dir, "metrics.json"))
    assert mode == "random"  # anywhere in the run: after j finished checkpoints, a random
    # fraction of an epoch later (j = EPOCHS: during the final evaluation and writes)
    j, fraction = rng.randrange(EPOCHS + 1), rng.random()
    seen, done_at = set(), []  # this process's checkpoint temporaries; when each was renamed

    def at_random_moment():
        now = time.monotonic()
        current = _temporaries(run_dir, "checkpoint.pt") - ignore
        finished = len(seen - current)
        seen.update(current)
        done_at.extend([now] * (finished - len(done_at)))
        if not (run_dir / "config.json").exists() or len(done_at) < j:
            return False
        since = done_at[j - 1] if j else started
        gap = done_at[-1] - done_at[-2] if len(done_at) >= 2 else epoch_seconds
        return now - since > fraction * gap

    return at_random_moment


def _check_files_readable(run_dir: Path) -> int | None:
    """Load everything a killed run left; return the checkpoint's epoch (None: no checkpoint)."""
    epoch = None
    for name, load in (("config.json", lambda p: json.loads(p.read_text())),
                       ("metrics.json", lambda p: json.loads(p.read_text())),
                       ("checkpoint.pt", load_checkpoint)):
        path = run_dir / name
        if path.exists():
            TALLY["files_checked"] += 1
            try:
                loaded = load(path)
            except ValueError:
                TALLY["unreadable"] += 1
                raise
            if name == "checkpoint.pt":
                epoch = loaded["train_state"]["epoch"]
                assert 1 <= epoch <= EPOCHS
    return epoch


def _finish(run_dir: Path, capsys) -> None:
    """Resume the run as the CLI tells the user to; restart it when there is nothing to resume."""
    metrics = run_dir / "metrics.json"
    if metrics.exists() and json.loads(metrics.read_text())["epochs"] == EPOCHS:
        return  # the process finished before the kill came: nothing to do
    status = main(["train", "--resume", str(run_dir), "--epochs", str(EPOCHS), "--no-progress"])
    err = capsys.readouterr().err
    if status == 2 and ("no checkpoint yet" in err or "does not exist" in err or "no config.json" in err):
        assert "Traceback" not in err
        if "no checkpoint yet" in err:
            assert "--overwrite" in err  # the message says what to do
        TALLY["restarts_from_scratch"] += 1
        status = main(["train", "--out", str(run_dir), "--overwrite", *ARGS])
        err = capsys.readouterr().err
    assert status == 0, err


def _assert_same_as_reference(run_dir: Path, reference) -> None:
    final = load_checkpoint(run_dir / "checkpoint.pt")
    assert final["train_state"]["epoch"] == EPOCHS
    assert final["model"].keys() == reference["model"].keys()
    for name, tensor in reference["model"].items():
        assert torch.equal(final["model"][name], tensor), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("history", "test", "epochs", "steps"):
        assert metrics[key] == reference["metrics"][key], key
    assert not list(run_dir.glob(".*.tmp")), "orphaned temporary files were not cleaned up"
    TALLY["identical_results"] += 1


def run_trial(mode: str, run_dir: Path, reference, capsys, *, seed: int, kill_resume: bool = False):
    rng = random.Random(seed)
    TALLY["trials"] += 1
    for attempt, argv in enumerate([["train", "--out", str(run_dir), *ARGS],
                                    ["train", "--resume", str(run_dir), "--epochs", str(EPOCHS),
                                     "--no-progress"]][: 2 if kill_resume else 1]):
        before = _temporaries(run_dir, "checkpoint.pt")
        before_any = _temporaries(run_dir, "*")
        proc = _spawn(argv, SLOW_WRITE_SECONDS)
        kill_mode = mode if attempt == 0 else "random"
        condition = _kill_point(kill_mode, run_dir, rng, reference["epoch_seconds"], before)
        killed = _kill_when(proc, condition)
        TALLY["kills"] += killed
        # A deterministic kill point that was never reached would leave a plain rerun to test.
        assert killed or kill_mode == "random", f"the run finished before its {kill_mode} kill point"
        orphans = _temporaries(run_dir, "checkpoint.pt") - before
        any_orphans = _temporaries(run_dir, "*") - before_any
        TALLY["kills_inside_a_write"] += bool(killed and any_orphans)
        epoch = _check_files_readable(run_dir)
        if killed and mode.startswith("checkpoint-write-") and attempt == 0:
            k = len(condition.writes_seen)  # the write the kill landed in (the k-th of the mode)
            assert orphans, "the kill was meant to land inside a checkpoint write"
            assert epoch == (k - 1 if k > 1 else None)  # the previous checkpoint survived whole
        if killed and mode == "metrics-write" and attempt == 0:
            assert epoch == EPOCHS and not (run_dir / "metrics.json").exists()
    _finish(run_dir, capsys)
    _assert_same_as_reference(run_dir, reference)
    print(f"fault-injection tally: {TALLY}")


# Two kill points in the default tier; random kill times run many times in the slow tier.
DEFAULT_TRIALS = ["checkpoint-write-3", "before-first-checkpoint"]
SLOW_TRIALS = [("start-up", False), ("checkpoint-write-1", False), ("checkpoint-write-6", False),
               ("metrics-write", False), ("random", False), ("random", False), ("random", True),
               ("random", True), ("random", True), ("checkpoint-write-2", True),
               ("checkpoint-write-4", True), ("before-first-checkpoint", True)]


@pytest.mark.parametrize("mode", DEFAULT_TRIALS)
def test_killed_run_resumes_to_identical_result(mode, tmp_path, reference, capsys):
    run_trial(mode, tmp_path / "run", reference, capsys, seed=DEFAULT_TRIALS.index(mode))


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(SLOW_TRIALS)))
def test_many_kills_lose_nothing(index, tmp_path, reference, capsys):
    mode, kill_resume = SLOW_TRIALS[index]
    run_trial(mode, tmp_path / "run", reference, capsys, seed=100 + index, kill_resume=kill_resume)


# ------------------------------------------------------------------ non-finite training
# Faults injected into the arithmetic: the objective is wrapped so that one chosen step of a
# resumed run yields a NaN loss or, with a finite loss, NaN gradients.

QUICK = ["--hidden-dims", "16", "--latent-dim", "2", "--eval-samples", "2", "--no-progress",
         "--batch-size", "64", "--subset", "256", "--device", "cpu"]  # 4 steps per epoch
STEPS_PER_EPOCH = 4


class _NaNGradient(torch.autograd.Function):
    """Identity forward (the loss stays finite), NaN backward."""

    @staticmethod
    def forward(ctx, value):
        return value.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


class _Injected:
    """Wraps the training objective; its ``at_call``-th loss is poisoned."""

    def __init__(self, inner, at_call: int, kind: str, seen: list):
        self.inner, self.at_call, self.kind, self.calls, self.seen = inner, at_call, kind, 0, seen

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def loss_and_parts(self, model, x, y=None):
        self.calls += 1
        self.seen.append(torch.is_anomaly_enabled())
        loss, parts = self.inner.loss_and_parts(model, x, y)
        if self.calls == self.at_call:
            loss = loss * float("nan") if self.kind == "nan-loss" else _NaNGradient.apply(loss)
        return loss, parts


def inject(monkeypatch, at_call: int | None, kind: str = "nan-loss") -> list:
    """Make ``fit`` build a poisoned objective; returns the anomaly-mode flag seen at each step."""
    import pyro_vae.inference.train as train_module

    real, seen = train_module.build_objective, []
    monkeypatch.setattr(train_module, "build_objective",
                        lambda *a, **k: _Injected(real(*a, **k), at_call or -1, kind, seen))
    return seen


@pytest.fixture(scope="module")
def two_epoch_template(tmp_path_factory):
    run = tmp_path_factory.mktemp("two-epochs") / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", "--out", str(run), "--epochs", "2", *QUICK]) == 0
    finally:
        torch.set_num_threads(before)
    return run


@pytest.fixture
def two_epoch_run(two_epoch_template, tmp_path, capsys):
    capsys.readouterr()
    shutil.copytree(two_epoch_template, tmp_path / "run")
    return tmp_path / "run"


def _stopped(capsys, argv, *fragments, anomaly_report: bool = False) -> str:
    status = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert status == 1, err
    if not anomaly_report:  # (anomaly mode's warning shows the forward call's traceback, on purpose)
        assert "Traceback" not in err
    line = next(line for line in err.splitlines() if line.startswith("pyro-vae: training stopped:"))
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(two_epoch_run, capsys, monkeypatch):
    checkpoint, metrics = two_epoch_run / "checkpoint.pt", two_epoch_run / "metrics.json"
    saved, saved_metrics = checkpoint.read_bytes(), metrics.read_bytes()
    inject(monkeypatch, at_call=2)  # epoch 3, step 2
    _stopped(capsys, ["train", "--resume", two_epoch_run, "--epochs", "4", "--no-progress"],
             "non-finite loss at epoch 3, step 2 of the epoch", f"global step {2 * STEPS_PER_EPOCH + 2}",
             "--lr", "last checkpoint (epoch 2) is intact", "--detect-anomaly")
    assert checkpoint.read_bytes() == saved and metrics.read_bytes() == saved_metrics
    assert load_checkpoint(checkpoint)["train_state"]["epoch"] == 2
    monkeypatch.undo()  # the fault is gone: the same command now finishes from the kept checkpoint
    assert main(["train", "--resume", str(two_epoch_run), "--epochs", "4", "--no-progress"]) == 0
    assert load_checkpoint(checkpoint)["train_state"]["epoch"] == 4


def test_nan_gradient_with_finite_loss_is_caught_before_the_checkpoint(two_epoch_run, capsys, monkeypatch):
    """At an epoch's last step a NaN gradient leaves every loss of the epoch finite but the
    parameters NaN; the end-of-epoch parameter check stops it before it is saved."""
    saved = (two_epoch_run / "checkpoint.pt").read_bytes()
    inject(monkeypatch, at_call=STEPS_PER_EPOCH, kind="nan-grad")  # last step of epoch 3
    _stopped(capsys, ["train", "--resume", two_epoch_run, "--epochs", "4", "--no-progress"],
             "non-finite parameters after epoch 3", "gradient was NaN or infinite",
             "last checkpoint (epoch 2) is intact")
    assert (two_epoch_run / "checkpoint.pt").read_bytes() == saved


def test_huge_learning_rate_diverges_with_a_clear_message(tmp_path, capsys):
    run = tmp_path / "run"
    _stopped(capsys, ["train", "--out", run, "--epochs", "2", "--lr", "1e30", *QUICK],
             "non-finite loss at epoch 1", "--lr", "nothing was saved")
    assert not (run / "checkpoint.pt").exists()
    status = main(["train", "--resume", str(run), "--epochs", "2"])
    assert status == 2 and "no checkpoint yet" in capsys.readouterr().err


def test_detect_anomaly_locates_the_bad_step(two_epoch_run, capsys, monkeypatch):
    seen = inject(monkeypatch, at_call=2, kind="nan-grad")
    _stopped(capsys, ["train", "--resume", two_epoch_run, "--epochs", "4", "--no-progress",
                      "--detect-anomaly"],
             "non-finite gradient at epoch 3, step 2 of the epoch", "returned nan values",
             "last checkpoint (epoch 2) is intact", anomaly_report=True)
    assert seen == [True, True]  # anomaly mode was on at each step, and the loop stopped at once
    assert not torch.is_anomaly_enabled()  # and it is switched off again
    assert load_checkpoint(two_epoch_run / "checkpoint.pt")["train_state"]["epoch"] == 2


def test_detect_anomaly_is_off_by_default(digits, monkeypatch):
    seen = inject(monkeypatch, at_call=None)
    data = dataclasses.replace(digits, x_train=digits.x_train[:128], y_train=digits.y_train[:128])
    model = VAE(64, VAEConfig(latent_dim=2, hidden_dims=(16,)))
    fit(model, data, TrainConfig(epochs=1, batch_size=64, progress=False, eval_every=0))
    assert seen == [False, False]
    seen.clear()
    fit(model, data, TrainConfig(epochs=1, batch_size=64, progress=False, eval_every=0,
                                 detect_anomaly=True))
    assert seen == [True, True] and not torch.is_anomaly_enabled()


def test_detect_anomaly_applies_to_one_invocation(two_epoch_run, monkeypatch):
    seen = inject(monkeypatch, at_call=None)
    assert main(["train", "--resume", str(two_epoch_run), "--epochs", "3", "--no-progress",
                 "--detect-anomaly"]) == 0
    assert seen == [True] * STEPS_PER_EPOCH and not torch.is_anomaly_enabled()
    assert json.loads((two_epoch_run / "config.json").read_text())["train"]["detect_anomaly"] is True
    # a debugging aid, not a setting: resuming without the flag turns it off again
    seen.clear()
    assert main(["train", "--resume", str(two_epoch_run), "--epochs", "4", "--no-progress"]) == 0
    assert seen == [False] * STEPS_PER_EPOCH


# ------------------------------------------------------------------ reproducibility


def test_same_seed_same_configuration_same_numbers(tmp_path, reference):
    """Train the reference configuration again: identical weights, history and test numbers."""
    run = tmp_path / "again"
    assert main(["train", "--out", str(run), *ARGS]) == 0
    _assert_same_as_reference(run, reference)
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["seed"] == 3 and config["data"]["split_seed"] == 0
    import platform

    import pyro

    import pyro_vae

    assert config["versions"] == {"pyro_vae": pyro_vae.__version__, "torch": str(torch.__version__),
                                  "pyro": str(pyro.__version__), "python": platform.python_version()}
    # and the seed matters: another one gives other numbers from the first epoch on
    other = tmp_path / "other-seed"
    assert main(["train", "--out", str(other), *ARGS, "--seed", "4", "--epochs", "1"]) == 0
    first = json.loads((other / "metrics.json").read_text())["history"][0]
    assert first["train_elbo"] != reference["metrics"]["history"][0]["train_elbo"]
