"""A killed final evaluation continues where it stood, with the numbers of an uninterrupted one."""

import json

import numpy as np
import pyro
import pytest
import torch

import pyro_vae.evaluation_progress as progress_module
from pyro_vae.cli import main
from pyro_vae.evaluation_progress import EvaluationProgress, evaluation_key
from pyro_vae.inference import importance
from pyro_vae.inference.evaluate import evaluate_per_example
from pyro_vae.models import M2, VAE, M2Config, VAEConfig
from pyro_vae.runfiles import PARTIAL_EVAL_FILE, read_per_example
from tests.conftest import binary_batch

RUN = ["--dataset", "digits", "--epochs", "1", "--latent-dim", "2", "--hidden-dims", "16",
       "--eval-samples", "30", "--no-progress", "--device", "cpu"]


@pytest.fixture
def x():
    torch.manual_seed(0)
    return binary_batch(n=35)


def _vae():
    torch.manual_seed(1)
    return VAE(64, VAEConfig(latent_dim=2, hidden_dims=(8,)))


def _evaluate(model, x, **kwargs):
    pyro.set_rng_seed(4)
    return evaluate_per_example(model, x, num_samples=40, batch_size=10, sample_chunk=15, **kwargs)


def test_a_resumed_evaluation_equals_an_uninterrupted_one(x):
    vae = _vae()
    states = []
    full, full_values = _evaluate(vae, x, on_batch=states.append)
    assert [s["log_likelihood"].shape[0] for s in states] == [10, 20, 30, 35]
    assert all(s["rng"].dtype == torch.uint8 for s in states)
    for state in states[:3]:
        result, values = _evaluate(_vae(), x, resume=state)
        assert result == full
        for key in full_values:
            assert torch.equal(values[key], full_values[key]), key
    # the finished batches were not scored again
    calls = []
    real = importance._weight_terms
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(importance, "_weight_terms", lambda *a: calls.append(a[1].shape[0]) or real(*a))
        _evaluate(_vae(), x, resume=states[1])
    assert sum(calls) == 15 * 3  # the last 15 examples, 40 samples in chunks of 15, 15, 10


def test_m2_sums_its_label_out_and_keeps_no_progress(x):
    torch.manual_seed(0)
    m2 = M2(64, M2Config(latent_dim=2, hidden_dims=(8,)), num_classes=3)
    states = []
    _evaluate(m2, x, on_batch=states.append)
    assert states == []


# --------------------------------------------------------------------------- run directories


class _Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs."""


def _kill_after_saves(monkeypatch, saves: int) -> None:
    """Save at every batch, and end the process after ``saves`` saves."""
    monkeypatch.setattr(progress_module, "SAVE_EVERY_S", 0.0)
    real, count = EvaluationProgress.save, []

    def save(self, state):
        real(self, state)
        count.append(1)
        if len(count) == saves:
            raise _Killed

    monkeypatch.setattr(EvaluationProgress, "save", save)


def _test_of(run):
    return json.loads((run / "metrics.json").read_text())["test"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run = tmp_path_factory.mktemp("full") / "run"
    assert main(["train", *RUN, "--out", str(run)]) == 0
    return run


def test_a_run_killed_while_scored_resumes_to_the_same_numbers(tmp_path, monkeypatch, capsys, uninterrupted):
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        _kill_after_saves(patch, saves=2)
        with pytest.raises(_Killed):
            main(["train", *RUN, "--out", str(run)])
    assert (run / PARTIAL_EVAL_FILE).is_file() and not (run / "metrics.json").exists()
    calls = []
    real = importance._weight_terms
    monkeypatch.setattr(importance, "_weight_terms", lambda *a: calls.append(a[1].shape[0]) or real(*a))
    assert main(["train", "--resume", str(run)]) == 0
    assert "continuing the saved evaluation (200 of 359 test examples scored: " in capsys.readouterr().err
    assert _test_of(run) == _test_of(uninterrupted)
    for key, values in read_per_example(run).items():
        np.testing.assert_array_equal(values, read_per_example(uninterrupted)[key])
    assert not (run / PARTIAL_EVAL_FILE).exists()  # removed once the results were written
    # 359 test images in batches of 100: two were saved, so the ELBO (one call on all 359) and
    # those two were not computed again, only the last two batches
    assert calls[:2] == [100, 59] and 359 not in calls


def test_evaluate_resumes_and_a_stale_or_damaged_file_is_ignored(tmp_path, monkeypatch, uninterrupted):
    run = tmp_path / "run"
    assert main(["train", *RUN, "--out", str(run)]) == 0
    with monkeypatch.context() as patch:
        _kill_after_saves(patch, saves=1)
        with pytest.raises(_Killed):
            main(["evaluate", str(run), "--samples", "12"])
    partial = (run / PARTIAL_EVAL_FILE).read_bytes()
    # Another K of the same parameters: that evaluation's progress is kept, this one goes unsaved.
    with pytest.warns(UserWarning, match=r"holds the progress of another evaluation of these parameters "
                                         r"\(100 of 359 test examples scored; .* kept, and this evaluation "
                                         r"goes unsaved"):
        assert main(["evaluate", str(run), "--samples", "30"]) == 0
    assert _test_of(run) == _test_of(uninterrupted)
    assert (run / PARTIAL_EVAL_FILE).read_bytes() == partial
    # The same K from the saved state (then removed), then with a damaged file: the same numbers.
    assert main(["evaluate", str(run), "--samples", "12"]) == 0
    assert not (run / PARTIAL_EVAL_FILE).exists()
    resumed = _test_of(run)
    assert resumed["log_likelihood_samples"] == 12
    (run / PARTIAL_EVAL_FILE).write_bytes(partial[: len(partial) // 2])
    with pytest.warns(UserWarning, match=f"ignoring .*{PARTIAL_EVAL_FILE}.*the evaluation starts over"):
        assert main(["evaluate", str(run), "--samples", "12"]) == 0
    assert _test_of(run) == resumed


@pytest.mark.parametrize("damage, message", [
    ({"log_likelihood": np.zeros(5)}, "end inside a batch of 100"),
    ({"elbo": np.full(80, np.nan)}, "not a finite float64 vector"),
    ({"rng": np.zeros(7, dtype=np.uint8)}, "not torch's random state"),
    ({"extra": np.zeros(1)}, "holds the arrays"),
    ({"elbo": np.zeros(79)}, "its ELBO covers 79 examples, the test set has 80"),
])
def test_a_tampered_file_with_the_right_key_is_refused_and_ignored(tmp_path, damage, message):
    vae, x = _vae(), binary_batch(n=80)
    key = evaluation_key(vae, x, None, {"num_samples": 5})
    state = {"elbo": np.zeros(80), "log_likelihood": np.zeros(0), "rng": torch.get_rng_state().numpy(),
             "key": np.frombuffer(key, dtype=np.uint8), **damage}
    np.savez(tmp_path / PARTIAL_EVAL_FILE, **state)
    with pytest.warns(UserWarning, match=message):
        assert EvaluationProgress(tmp_path, key, num_examples=80).load() is None


def test_the_key_follows_parameters_data_and_settings(x):
    vae = _vae()
    key = evaluation_key(vae, x, None, {"num_samples": 5})
    assert key == evaluation_key(_vae(), x.clone(), None, {"num_samples": 5})
    assert key != evaluation_key(vae, x, None, {"num_samples": 6})
    assert key != evaluation_key(vae, x[:-1], None, {"num_samples": 5})
    with torch.no_grad():
        next(vae.parameters())[0, 0] += 1e-6
    assert key != evaluation_key(vae, x, None, {"num_samples": 5})


def test_a_file_of_other_parameters_is_replaced(tmp_path, x, monkeypatch):
    """Training went on: the old parameters' progress can never be used again."""
    monkeypatch.setattr(progress_module, "SAVE_EVERY_S", 0.0)
    old, new = _vae(), _vae()
    with torch.no_grad():
        next(new.parameters())[0, 0] += 1.0
    for model in (old, new):
        store = EvaluationProgress(tmp_path, evaluation_key(model, x, None, {}), batch_size=10,
                                   num_examples=len(x), parameters=progress_module.parameters_key(model))
        assert store.load() is None
        _evaluate(model, x, on_batch=store.save)
    arrays = np.load(tmp_path / PARTIAL_EVAL_FILE)
    assert arrays["parameters"].tobytes() == progress_module.parameters_key(new)
    store.discard()
    assert not (tmp_path / PARTIAL_EVAL_FILE).exists()


def test_overwrite_removes_a_partial_evaluation(tmp_path, uninterrupted):
    run = tmp_path / "run"
    assert main(["train", *RUN, "--out", str(run)]) == 0
    (run / PARTIAL_EVAL_FILE).write_bytes(b"left by a killed evaluation")
    assert main(["train", *RUN, "--out", str(run), "--overwrite"]) == 0
    assert not (run / PARTIAL_EVAL_FILE).exists()


def test_a_failed_save_warns_once_and_the_evaluation_finishes(x, tmp_path, monkeypatch):
    monkeypatch.setattr(progress_module, "SAVE_EVERY_S", 0.0)
    writes = []

    def full_disk(path, write, **kwargs):
        writes.append(path)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(progress_module, "atomic_write_bytes", full_disk)
    store = EvaluationProgress(tmp_path, b"k" * 32, batch_size=10)
    with pytest.warns(UserWarning, match="could not save the evaluation's progress .* it goes on unsaved") as seen:
        result, _ = _evaluate(_vae(), x, on_batch=store.save)
    assert len(seen) == 1 and len(writes) == 1  # tried once, then left alone
    assert result == _evaluate(_vae(), x)[0]
