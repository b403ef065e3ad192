"""Model selection on the trained bound (``TrainConfig.select_on="bound"``): an IWAE-trained
model is selected, stopped early and scheduled on its validation K-sample bound (``val_bound``),
not on its ELBO, which understates it. Tiny models on the embedded digits, float64."""

import json

import pyro
import pytest
import torch

from pyro_vae.cli import main
from pyro_vae.data import DataConfig, load_dataset
from pyro_vae.inference import TrainConfig, fit, log_likelihood
from pyro_vae.inference import train as train_module
from pyro_vae.inference.objectives import build_objective
from pyro_vae.models import VAE, VAEConfig
from pyro_vae.runs import RunConfig, read_config, resume_run, train_run


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DataConfig(val_fraction=0.2)).to(dtype=torch.float64)


def _vae(digits):
    pyro.set_rng_seed(0)
    return VAE(digits.x_train.shape[1], VAEConfig(latent_dim=2, hidden_dims=(16,))).double()


def _config(**kw):
    return TrainConfig(**{"epochs": 2, "batch_size": 256, "dtype": "float64", "progress": False,
                          "objective": "iwae", "particles": 5, "device": "cpu", **kw})


def test_the_validation_bound_is_the_k_sample_log_likelihood_estimate(digits):
    model = _vae(digits)
    pyro.set_rng_seed(3)
    bound = train_module.held_out_bound(model, digits.x_val, None, 5, world=1)
    pyro.set_rng_seed(3)
    expected = log_likelihood(model, digits.x_val, num_samples=5, batch_size=1000, sample_chunk=5)
    assert bound == pytest.approx(expected.per_example.mean().item(), rel=1e-12)
    # K = 5 tightens the single-sample ELBO on average over 288 images.
    elbo, _ = train_module.held_out_elbo(model, digits.x_val, None, world=1)
    assert bound > elbo


def test_selection_and_early_stopping_follow_val_bound_not_the_elbo(digits, monkeypatch):
    scripted = iter([-50.0, -40.0, -45.0, -41.0, -42.0, -30.0])  # best at epoch 2, then 2 worse
    calls = []

    def fake_bound(model, x, y, num_samples, world):
        calls.append(num_samples)
        return next(scripted)

    monkeypatch.setattr(train_module, "held_out_bound", fake_bound)
    model = _vae(digits)
    result = fit(model, digits, _config(epochs=6, patience=2, select_on="bound"))
    assert calls == [5, 5, 5, 5]  # K = particles, once per evaluation, none after the stop
    assert [h["val_bound"] for h in result.history] == [-50.0, -40.0, -45.0, -41.0]
    assert all("val_elbo" in h for h in result.history)  # still recorded, not selecting
    assert (result.best_epoch, result.epochs, result.stopped_early) == (2, 4, True)


def test_select_on_elbo_or_an_elbo_objective_computes_no_bound(digits, monkeypatch):
    monkeypatch.setattr(train_module, "held_out_bound", lambda *a, **k: pytest.fail("bound computed"))
    for config in (_config(), _config(objective="elbo", particles=1, select_on="bound")):
        result = fit(_vae(digits), digits, config)
        assert all("val_bound" not in h for h in result.history)
        best = max(result.history, key=lambda h: h["val_elbo"])["epoch"]
        assert result.best_epoch == best
    assert build_objective("iwae", particles=7).bound_samples == 7
    assert build_objective("elbo", particles=7).bound_samples == 1


def test_a_non_finite_bound_is_divergence(digits, monkeypatch):
    monkeypatch.setattr(train_module, "held_out_bound", lambda *a, **k: float("nan"))
    with pytest.raises(train_module.NonFiniteLossError, match="non-finite val bound"):
        fit(_vae(digits), digits, _config(epochs=1, select_on="bound"))


def test_the_plateau_schedule_watches_the_selection_score(digits, monkeypatch):
    scripted = iter([-50.0, -60.0, -70.0])  # the bound only gets worse
    monkeypatch.setattr(train_module, "held_out_bound", lambda *a, **k: next(scripted))
    result = fit(_vae(digits), digits, _config(epochs=3, select_on="bound", lr_schedule="plateau",
                                                lr_patience=0, lr_gamma=0.5))
    assert [h["lr"] for h in result.history] == pytest.approx([1e-3, 1e-3, 5e-4])


def test_select_on_is_a_recorded_setting_from_cli_and_api(tmp_path, capsys):
    with pytest.raises(ValueError, match="select_on"):
        TrainConfig(select_on="iwae")
    assert main(["train", "--out", str(tmp_path / "bad"), "--select-on", "nll"]) == 2
    assert "--select-on" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    run = tmp_path / "run"
    argv = ["train", "--out", str(run), "--epochs", "1", "--objective", "iwae", "--particles", "3",
            "--select-on", "bound", "--val-fraction", "0.2", "--latent-dim", "2", "--hidden-dims", "16",
            "--eval-samples", "5", "--no-progress"]
    assert main(argv) == 0
    assert read_config(run).train.select_on == "bound"
    assert main(["train", "--resume", str(run), "--epochs", "2", "--select-on", "elbo"]) == 2
    assert "drop --select-on" in capsys.readouterr().err
    resume_run(run, 2, progress=False)
    history = json.loads((run / "metrics.json").read_text())["history"]
    assert [("val_bound" in h) for h in history] == [True, True]
    # A config.json written before select_on existed reads as the ELBO selection it had.
    raw = json.loads((run / "config.json").read_text())
    del raw["train"]["select_on"]
    assert RunConfig.from_dict(raw).train.select_on == "elbo"


def test_train_run_with_the_bound_keeps_the_best_val_bound_epoch(tmp_path):
    config = RunConfig(model="vae", model_config={"latent_dim": 2, "hidden_dims": (16,)},
                       data=DataConfig(val_fraction=0.2),
                       train=TrainConfig(epochs=3, objective="iwae", particles=3, select_on="bound",
                                         progress=False, device="cpu"), eval_samples=5)
    train_run(config, tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    best = max(metrics["history"], key=lambda h: h["val_bound"])["epoch"]
    assert metrics["best_epoch"] == best
