"""Red-team checks of two features: the objectives' parts (``Objective.loss_and_parts``, the
reconstruction and KL terms logged by ``fit``, written by ``evaluate_per_example`` and shown by
the curves figure, compare and the HTML report) and the resumable final evaluation
(pyro_vae/evaluation_progress.py: RUN/evaluation.partial.npz, continued by ``pyro-vae train
--resume`` and ``pyro-vae evaluate``). Tiny models on the embedded digits (359 test images:
not a multiple of the evaluation's batch of 100). A docstring describes the bug its test found
(in the past: each is fixed); those marked "(passes)" guard promises that held already."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyro
import pytest
import torch

import pyro_vae.evaluation_progress as progress_module
import pyro_vae.plots as plots_module
import pyro_vae.plots.training as training_plots
from pyro_vae.cli import main
from pyro_vae.data import DataConfig, load_dataset
from pyro_vae.evaluation_progress import EvaluationProgress, evaluation_key
from pyro_vae.inference import TrainConfig, fit
from pyro_vae.inference.objectives import OBJECTIVES, IWAEObjective, TraceELBOObjective, build_objective
from pyro_vae.models import VAE, VAEConfig
from pyro_vae.runfiles import PARTIAL_EVAL_FILE, read_per_example
from tests.conftest import binary_batch
from tests.test_evaluation_progress import (  # noqa: F401  (uninterrupted: a fixture used here)
    RUN,
    _evaluate,
    _kill_after_saves,
    _Killed,
    _test_of,
    _vae,
    uninterrupted,
)

ROOT = Path(__file__).resolve().parent.parent

# =========================================================================== resumable evaluation


def test_a_state_saved_after_the_last_batch_resumes_to_the_same_numbers():
    """35 examples in batches of 10: the last on_batch state holds all 35 log-likelihoods (a
    saved file does too, whenever the last batch ends SAVE_EVERY_S after the previous save).
    Resuming from it must finish at once with the same numbers, not ask reduce_log_weights to
    start at 35 ("start must be a multiple of batch_size")."""
    torch.manual_seed(0)
    x = binary_batch(n=35)
    states = []
    full, full_values = _evaluate(_vae(), x, on_batch=states.append)
    assert states[-1]["log_likelihood"].shape == (35,)
    result, values = _evaluate(_vae(), x, resume=states[-1])
    assert result == full
    for key in full_values:
        assert torch.equal(values[key], full_values[key]), key


def test_a_run_killed_after_its_evaluation_finished_can_be_resumed(tmp_path, monkeypatch, uninterrupted):
    """Killed while its figures were drawn (after the last batch's progress was saved, before
    metrics.json): every later `train --resume` failed with exit 2 ("start must be a multiple of
    batch_size 100 ... got 359") until the user deleted evaluation.partial.npz by hand."""
    run = tmp_path / "run"

    def killed(*args, **kwargs):
        raise _Killed

    with monkeypatch.context() as patch:
        patch.setattr(progress_module, "SAVE_EVERY_S", 0.0)
        patch.setattr(plots_module, "write_run_figures", killed)
        with pytest.raises(_Killed):
            main(["train", *RUN, "--out", str(run)])
    assert progress_module.saved_progress(run) == (359, 359)
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert _test_of(run) == _test_of(uninterrupted)
    assert not (run / PARTIAL_EVAL_FILE).exists()


@pytest.fixture(scope="module")
def partially_evaluated(tmp_path_factory):
    """A finished run, then `evaluate --samples 12` killed after its first saved batch, and the
    numbers of that evaluation uninterrupted (from a copy)."""
    base = tmp_path_factory.mktemp("partial")
    run = base / "run"
    assert main(["train", *RUN, "--out", str(run)]) == 0
    fresh = base / "fresh"
    shutil.copytree(run, fresh)
    assert main(["evaluate", str(fresh), "--samples", "12"]) == 0
    with pytest.MonkeyPatch.context() as patch:
        _kill_after_saves(patch, saves=1)
        with pytest.raises(_Killed):
            main(["evaluate", str(run), "--samples", "12"])
    assert (run / PARTIAL_EVAL_FILE).is_file()
    return run, _test_of(fresh)


def _tampered_copy(partially_evaluated, tmp_path, change) -> Path:
    """A copy of the run whose partial file (right key) has ``change(arrays)`` applied."""
    source, _ = partially_evaluated
    run = tmp_path / "run"
    shutil.copytree(source, run)
    with np.load(run / PARTIAL_EVAL_FILE) as archive:
        arrays = dict(archive)
    change(arrays)
    (run / PARTIAL_EVAL_FILE).unlink()
    np.savez(run / PARTIAL_EVAL_FILE, **arrays)
    return run


def test_the_saved_partial_evaluation_resumes_to_the_fresh_numbers(partially_evaluated, tmp_path):
    """(passes) The fixture's file, untouched: `evaluate --samples 12` continues it to the numbers
    of an uninterrupted evaluation with 12 samples, although the run's own K is 30."""
    run = _tampered_copy(partially_evaluated, tmp_path, lambda arrays: None)
    assert progress_module.saved_progress(run) == (100, 359)
    assert main(["evaluate", str(run), "--samples", "12"]) == 0
    assert _test_of(run) == partially_evaluated[1]
    assert _test_of(run)["log_likelihood_samples"] == 12
    assert not (run / PARTIAL_EVAL_FILE).exists()


def test_a_tampered_rng_state_of_the_right_size_is_ignored_not_a_traceback(partially_evaluated, tmp_path):
    """An 'rng' of the right shape and dtype that is not a valid Mersenne Twister state passes
    _checked_state; torch.set_rng_state then raises RuntimeError('Invalid mt19937 state'), which
    the CLI re-raises (a traceback) instead of ignoring the damaged file with a warning."""
    def zero_rng(arrays):
        arrays["rng"] = np.zeros_like(arrays["rng"])

    run = _tampered_copy(partially_evaluated, tmp_path, zero_rng)
    with pytest.warns(UserWarning, match="ignoring"):
        assert main(["evaluate", str(run), "--samples", "12"]) == 0
    assert _test_of(run) == partially_evaluated[1]


@pytest.mark.parametrize("name", ["elbo", "log_likelihood"])
def test_a_tampered_file_with_a_0d_array_is_ignored_with_a_warning(tmp_path, name):
    """_checked_state reads ``values.shape[0]`` before it checks ``ndim``: a 0-d array raises
    IndexError (a traceback in the CLI: not a ValueError) instead of "ignoring ... starts over"."""
    vae, x = _vae(), binary_batch(n=80)
    key = evaluation_key(vae, x, None, {"num_samples": 5})
    state = {"elbo": np.zeros(80), "log_likelihood": np.zeros(0), "rng": torch.get_rng_state().numpy(),
             "key": np.frombuffer(key, dtype=np.uint8), name: np.float64(0.0)}
    np.savez(tmp_path / PARTIAL_EVAL_FILE, **state)
    with pytest.warns(UserWarning, match="ignoring"):
        assert EvaluationProgress(tmp_path, key).load() is None


def test_a_tampered_file_whose_elbo_does_not_cover_the_test_set_is_not_used(partially_evaluated, tmp_path):
    """The ELBO (and its parts) cut to 150 of the 359 test images, the key intact: load()
    accepts it ("of the test set's length" is only checked against the file's own 'elbo'), and
    metrics.json gets the ELBO of 150 images beside num_examples 359, and a per-example file whose
    arrays have different lengths."""
    def cut(arrays):
        for name in ("elbo", "reconstruction", "kl"):
            arrays[name] = arrays[name][:150]

    run = _tampered_copy(partially_evaluated, tmp_path, cut)
    assert main(["evaluate", str(run), "--samples", "12"]) == 0
    assert _test_of(run) == partially_evaluated[1]
    assert {len(v) for v in read_per_example(run).values()} == {359}


def test_status_of_a_run_whose_partial_file_is_damaged_still_shows_its_training(bench, tmp_path, monkeypatch):
    """A damaged evaluation.partial.npz is ignored by the evaluation (with a warning), but
    reproduce.py --status then calls the whole run "unreadable" and hides its epochs."""
    run = tmp_path / "vae"
    with monkeypatch.context() as patch:
        _kill_after_saves(patch, saves=1)
        with pytest.raises(_Killed):
            main(["train", *RUN, "--out", str(run)])
    assert "interrupted: epoch 1 of 1" in bench.run_status("vae", run)  # readable as it stands
    partial = run / PARTIAL_EVAL_FILE
    partial.write_bytes(partial.read_bytes()[:100])
    line = bench.run_status("vae", run)
    assert "interrupted: epoch 1 of 1" in line, line


@pytest.mark.parametrize("options", [["--model", "cvae"], ["--model", "hvae", "--dtype", "float64"],
                                     ["--objective", "iwae", "--particles", "3", "--beta", "0"]],
                         ids=["cvae-labels", "hvae-float64", "iwae-beta0"])
def test_killed_evaluations_of_other_models_resume_to_the_same_numbers(tmp_path, monkeypatch, options):
    """(passes) A conditional model (labels in the key), float64, an HVAE, IWAE with beta 0."""
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert main(["train", *RUN, *options, "--out", str(full)]) == 0
    with monkeypatch.context() as patch:
        _kill_after_saves(patch, saves=2)
        with pytest.raises(_Killed):
            main(["train", *RUN, *options, "--out", str(killed)])
    assert progress_module.saved_progress(killed) == (200, 359)
    assert main(["train", "--resume", str(killed), "--no-progress"]) == 0
    assert _test_of(killed) == _test_of(full)
    for key, values in read_per_example(full).items():
        np.testing.assert_array_equal(read_per_example(killed)[key], values)


def test_a_real_sigkill_during_the_evaluation_resumes_to_the_same_numbers(tmp_path, uninterrupted):
    """(passes) A child process saves after every batch and SIGKILLs itself after the second
    save (no finally, no lock release): `train --resume` continues to the uninterrupted numbers
    and removes the partial file."""
    run = tmp_path / "run"
    child = textwrap.dedent(f"""
        import os, signal, sys
        import pyro_vae.evaluation_progress as progress
        from pyro_vae.cli import main
        progress.SAVE_EVERY_S = 0.0
        real, count = progress.EvaluationProgress.save, []
        def save(self, state):
            real(self, state)
            count.append(1)
            if len(count) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
        progress.EvaluationProgress.save = save
        sys.exit(main(["train", *{RUN!r}, "--out", {str(run)!r}]))
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", child], env=env, cwd=ROOT, capture_output=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]
    assert progress_module.saved_progress(run) == (200, 359)
    assert not (run / "metrics.json").exists()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert _test_of(run) == _test_of(uninterrupted)
    assert not (run / PARTIAL_EVAL_FILE).exists()


# =========================================================================== objective parts


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DataConfig("digits", subset=256))


def test_a_subclass_of_a_built_in_objective_that_overrides_loss_is_what_fit_trains(digits):
    """Objective's docstring: "subclasses implement :meth:`loss`". A plug-in objective derived
    from a built-in one (here TraceELBOObjective, the 'elbo') that overrides ``loss`` (a
    penalty added) was trained with the override before; LossModule now calls the parent's
    ``loss_and_parts``, so fit silently trains the parent's objective and ignores ``loss``."""
    calls = []

    class Penalized(TraceELBOObjective):
        def loss(self, model, x, y=None):
            calls.append(x.shape[0])
            return super().loss(model, x, y) + 1000.0 * x.shape[0]

    OBJECTIVES.register("test-penalized-20", lambda particles, **weighting: Penalized(particles, **weighting))
    try:
        torch.manual_seed(0)
        vae = VAE(digits.data_dim, VAEConfig(latent_dim=2, hidden_dims=(16,)))
        result = fit(vae, digits, TrainConfig(epochs=1, batch_size=64, progress=False,
                                              objective="test-penalized-20"))
    finally:
        del OBJECTIVES["test-penalized-20"]
    assert calls, "fit never called the objective's loss"
    record = result.history[-1]
    assert record.get("train_objective", record.get("train_elbo")) < -1000  # the penalty is in the curve


def test_an_iwae_subclass_that_overrides_loss_is_used_by_the_loss_module():
    """The same through LossModule directly, for a subclass of IWAEObjective."""
    from pyro_vae.inference.distributed import LossModule

    class Shifted(IWAEObjective):
        def loss(self, model, x, y=None):
            return super().loss(model, x, y) + 1000.0

    x = binary_batch(n=6)
    pyro.set_rng_seed(0)
    loss, _ = LossModule(_vae(), Shifted(num_samples=3))(x)
    pyro.set_rng_seed(0)
    plain, _ = LossModule(_vae(), IWAEObjective(num_samples=3))(x)
    assert loss.item() == pytest.approx(plain.item() + 1000.0)


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_beta_zero_with_several_particles_weights_out_the_kl_and_keeps_the_parts(objective):
    """(passes) beta = 0, K = 4: the loss is the reconstruction term's alone (its log mean exp
    over the K draws for iwae), the parts are the unweighted ones of the same draws."""
    torch.manual_seed(1)
    x = binary_batch(n=10, dtype=torch.float64)
    vae = _vae().double()
    pyro.set_rng_seed(3)
    loss, parts = build_objective(objective, particles=4, beta=0.0).loss_and_parts(vae, x)
    pyro.set_rng_seed(3)
    _, plain = build_objective(objective, particles=4).loss_and_parts(vae, x)
    torch.testing.assert_close(parts, plain)
    assert parts["kl"] > 0
    if objective == "elbo":
        torch.testing.assert_close(-loss.detach(), parts["reconstruction"])
    else:  # log mean exp of log p(x | z_k) >= its mean
        assert -loss.item() >= parts["reconstruction"].item() - 1e-9


def test_a_point_mass_run_has_no_kl_panel_in_its_curves(tmp_path, monkeypatch):
    """compare ("n/a") and the HTML report (no row) say a point-mass guide has no KL term (log q
    is 0: the "kl" is -log p(z*)); the curves figure still draws its history's train_kl/test_kl
    as a "KL term" panel."""
    run = tmp_path / "run"
    assert main(["train", *RUN, "--guide", "delta", "--out", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["bound"] is False and "train_kl" in metrics["history"][-1]
    panels = []
    monkeypatch.setattr(training_plots, "_plot_kl", lambda *args: panels.append(args))
    training_plots.plot_curves(metrics["history"], tmp_path / "curves.png", metrics=metrics)
    assert panels == []


def test_report_of_metrics_with_a_kl_but_no_reconstruction_is_not_a_traceback(tmp_path):
    """metrics.json's schema lets 'kl' stand without 'reconstruction' (each NotRequired on its
    own; the per-example reader refuses such a pair); report.py then indexes
    test["reconstruction"]: KeyError, a traceback from `pyro-vae report`."""
    run = tmp_path / "run"
    assert main(["train", *RUN, "--eval-samples", "2", "--out", str(run)]) == 0
    path = run / "metrics.json"
    metrics = json.loads(path.read_text())
    del metrics["test"]["reconstruction"], metrics["test"]["reconstruction_stderr"]
    path.write_text(json.dumps(metrics))
    assert main(["report", str(run)]) in (0, 2)
