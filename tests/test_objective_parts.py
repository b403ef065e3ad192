"""The objectives' parts (reconstruction and KL) against Pyro's traces and closed forms, and in fit."""

import json

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO
from pyro.poutine.util import site_is_subsample
from torch.utils.data import TensorDataset

from pyro_vae.cli import main
from pyro_vae.data import DataConfig, load_dataset
from pyro_vae.inference import TrainConfig, fit
from pyro_vae.inference.evaluate import evaluate, evaluate_per_example
from pyro_vae.inference.objectives import OBJECTIVES, Objective, build_objective
from pyro_vae.models import HVAE, M2, MODELS, PPCA, VAE, HVAEConfig, M2Config, PPCAConfig, VAEConfig
from pyro_vae.runfiles import read_per_example, write_per_example
from tests.conftest import binary_batch


def _vae(**config):
    torch.manual_seed(0)
    return VAE(64, VAEConfig(latent_dim=3, hidden_dims=(16,), **config)).double()


def _parts(objective, model, x, seed=5):
    pyro.set_rng_seed(seed)
    return objective.loss_and_parts(model, x)


@pytest.fixture(scope="module")
def x():
    torch.manual_seed(1)
    return binary_batch(n=12, dtype=torch.float64)


@pytest.mark.parametrize("particles", [1, 4])
def test_elbo_parts_add_up_to_the_loss(x, particles):
    loss, parts = _parts(build_objective("elbo", particles=particles), _vae(), x)
    assert sorted(parts) == ["kl", "reconstruction"]
    assert not parts["kl"].requires_grad and not parts["reconstruction"].requires_grad
    torch.testing.assert_close(-loss.detach(), parts["reconstruction"] - parts["kl"])
    assert parts["kl"] > 0 and parts["reconstruction"] < 0


def _hvae():
    torch.manual_seed(0)
    return HVAE(64, HVAEConfig(levels=2, latent_dim=2, hidden_dims=(16,))).double()


@pytest.mark.parametrize("build", [_vae, lambda: _vae(prior="mog", prior_components=3), _hvae],
                         ids=["vae", "vae-mog", "hvae"])
def test_the_parts_are_pyros_observed_and_latent_terms(x, build):
    """K = 1: the same draws as a plain run of the guide, scored by poutine.trace (for the
    HVAE the KL part holds both layers: log q(z1, z2 | x) - log p(z1 | z2) - log p(z2))."""
    model = build()
    _, parts = _parts(build_objective("elbo"), model, x, seed=7)
    pyro.set_rng_seed(7)
    guide_trace = pyro.poutine.trace(model.guide).get_trace(x)
    model_trace = pyro.poutine.trace(pyro.poutine.replay(model.model, trace=guide_trace)).get_trace(x)
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    sites = [s for s in model_trace.nodes.values() if s["type"] == "sample" and not site_is_subsample(s)]
    observed = sum(s["log_prob"].sum() for s in sites if s["is_observed"])
    log_prior = sum(s["log_prob"].sum() for s in sites if not s["is_observed"])
    guide_sites = [s for s in guide_trace.nodes.values() if s["type"] == "sample" and not site_is_subsample(s)]
    assert len(guide_sites) == (2 if isinstance(model, HVAE) else 1)
    log_q = sum(s["log_prob"].sum() for s in guide_sites)
    torch.testing.assert_close(parts["reconstruction"], observed)
    torch.testing.assert_close(parts["kl"], log_q - log_prior)
    # ... and their difference is Trace_ELBO's loss on those draws.
    pyro.set_rng_seed(7)
    torch.testing.assert_close(parts["kl"] - parts["reconstruction"],
                               Trace_ELBO().differentiable_loss(model.model, model.guide, x).detach())


def test_the_kl_part_estimates_the_closed_form_kl(x):
    vae = _vae()
    k = 20_000
    _, parts = _parts(build_objective("elbo", particles=k), vae, x)
    with torch.no_grad():
        q = vae.posterior(x).base_dist  # diagonal Normal, (n, latent_dim)
        closed = (-q.scale.log() + 0.5 * (q.scale ** 2 + q.loc ** 2 - 1)).sum()
    # Monte Carlo error of a mean over K draws of sum_i (log q - log p): well below 1% here.
    assert parts["kl"].item() == pytest.approx(closed.item(), rel=0.01)
    assert closed.item() > 0.1  # a KL worth estimating


@pytest.mark.parametrize("beta, warmup, epoch", [(0.3, 0, 1), (1.0, 4, 1), (0.0, 0, 1)])
def test_parts_are_unweighted_and_the_loss_weights_the_kl(x, beta, warmup, epoch):
    vae = _vae()
    objective = build_objective("elbo", beta=beta, kl_warmup=warmup)
    objective.set_epoch(epoch)
    loss, parts = _parts(objective, vae, x)
    _, plain = _parts(build_objective("elbo"), vae, x)  # the same draws at weight 1
    torch.testing.assert_close(parts, plain)
    torch.testing.assert_close(-loss.detach(), parts["reconstruction"] - objective.kl_weight * parts["kl"])


def test_iwae_parts_are_its_samples_elbo_and_its_bound_is_above_it(x):
    vae = _vae()
    loss, parts = _parts(build_objective("iwae", particles=8), vae, x)
    _, elbo_parts = _parts(build_objective("elbo", particles=8), vae, x)  # the same 8 draws
    torch.testing.assert_close(parts, elbo_parts)
    # Jensen, draw by draw: log mean exp >= mean.
    assert -loss.item() >= (parts["reconstruction"] - parts["kl"]).item()


def test_meanfield_has_no_parts(x):
    loss, parts = _parts(build_objective("meanfield"), _vae(), x)
    assert parts == {} and loss.requires_grad


def test_an_objective_with_a_loss_alone_has_no_parts_and_one_with_neither_says_so(x):
    class LossOnly(Objective):
        def loss(self, model, x, y=None):
            return build_objective("meanfield").loss(model, x, y)

    class Neither(Objective):
        pass

    assert LossOnly().loss_and_parts(_vae(), x)[1] == {}
    with pytest.raises(NotImplementedError, match="Neither implements neither loss nor loss_and_parts"):
        Neither().loss(_vae(), x)
    with pytest.raises(NotImplementedError, match="Neither implements neither"):
        Neither().loss_and_parts(_vae(), x)


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DataConfig("digits", subset=256, val_fraction=0.25))


def _fit(data, **train):
    torch.manual_seed(0)
    vae = VAE(data.data_dim, VAEConfig(latent_dim=2, hidden_dims=(16,)))
    return fit(vae, data, TrainConfig(epochs=3, batch_size=64, progress=False, dtype="float64", **train))


def test_fit_logs_the_parts_and_they_add_up_to_the_training_curve(digits):
    history = _fit(digits).history
    for record in history:
        assert {"train_reconstruction", "train_kl", "train_elbo", "val_elbo"} <= set(record)
        assert record["train_reconstruction"] - record["train_kl"] == pytest.approx(record["train_elbo"], rel=1e-12)
        assert record["train_kl"] > 0
    assert list(history[0])[:4] == ["epoch", "train_elbo", "train_reconstruction", "train_kl"]


def test_under_warmup_the_curve_weights_the_kl_part_and_the_parts_stay_unweighted(digits):
    history = _fit(digits, kl_warmup=4).history
    for record in history:
        weight = record["kl_weight"]
        assert weight == pytest.approx(record["epoch"] / 4)
        assert record["train_reconstruction"] - weight * record["train_kl"] == pytest.approx(
            record["train_objective"], rel=1e-12)


def test_fit_with_an_objective_without_parts_logs_none(digits):
    history = _fit(digits, objective="meanfield").history
    assert not any("train_kl" in r or "train_reconstruction" in r for r in history)
    mixture = MODELS["mixture"][1](digits.data_dim, MODELS["mixture"][0](num_components=3))
    history = fit(mixture, digits, TrainConfig(epochs=1, progress=False)).history
    assert not any(key.endswith(("_kl", "_reconstruction")) for key in history[0])  # latents summed out


def test_a_plugin_objective_whose_parts_change_names_midway_is_refused(digits):
    class Fickle(Objective):
        calls = 0

        def loss_and_parts(self, model, x, y=None):
            loss, parts = build_objective("elbo").loss_and_parts(model, x, y)
            Fickle.calls += 1
            return loss, (parts if Fickle.calls == 1 else {"kl": parts["kl"]})

    OBJECTIVES.register("test-fickle", lambda **options: Fickle())
    try:
        with pytest.raises(RuntimeError, match=r"returned the parts \['kl'\] at step 2 of epoch 1"):
            _fit(digits, objective="test-fickle")
    finally:
        del OBJECTIVES["test-fickle"]


def test_the_cli_writes_the_parts_to_metrics_and_the_csv_log(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--dataset", "digits", "--epochs", "2", "--latent-dim", "2", "--hidden-dims", "16",
                 "--eval-samples", "5", "--no-progress", "--log", "csv", "--out", str(run)]) == 0
    history = json.loads((run / "metrics.json").read_text())["history"]
    assert all(r["train_reconstruction"] < 0 < r["train_kl"] for r in history)
    header = (run / "log.csv").read_text().splitlines()[0].split(",")
    assert header[:4] == ["epoch", "train_elbo", "train_reconstruction", "train_kl"]


# --------------------------------------------------------------------------- held-out and test parts


def test_validation_parts_add_up_to_the_validation_elbo(digits):
    for record in _fit(digits).history:
        assert record["val_reconstruction"] - record["val_kl"] == pytest.approx(record["val_elbo"], rel=1e-12)
        assert record["val_kl"] > 0


def test_without_a_validation_split_the_test_parts_are_logged():
    data = load_dataset(DataConfig("digits", subset=256))
    record = _fit(data).history[-1]
    assert record["test_reconstruction"] - record["test_kl"] == pytest.approx(record["test_elbo"], rel=1e-12)
    assert not any(key.startswith("val_") for key in record)


def test_evaluate_reports_the_elbos_parts_with_their_errors(x):
    vae = _vae()
    pyro.set_rng_seed(0)
    test, per_example = evaluate_per_example(vae, x, num_samples=10, elbo_samples=3)
    assert test["reconstruction"] - test["kl"] == pytest.approx(test["elbo"], rel=1e-12)
    torch.testing.assert_close(per_example["reconstruction"] - per_example["kl"], per_example["elbo"])
    assert test["kl_stderr"] == pytest.approx(per_example["kl"].std().item() / len(x) ** 0.5)
    # Streamed (a Dataset, in batches), the parts are concatenated like the ELBO.
    pyro.set_rng_seed(0)
    streamed = evaluate(vae, TensorDataset(x), num_samples=10, elbo_samples=3, batch_size=1)
    assert streamed["reconstruction"] - streamed["kl"] == pytest.approx(streamed["elbo"], rel=1e-12)
    assert streamed["num_examples"] == len(x)


def test_a_model_without_latents_and_m2_have_no_parts(x):
    ppca = PPCA(64, PPCAConfig(latent_dim=2)).double()
    test, per_example = evaluate_per_example(ppca, x, num_samples=1)  # latents integrated out: exact
    assert "kl" not in test and "reconstruction" not in test and set(per_example) == {"elbo", "log_likelihood"}
    assert build_objective("elbo").loss_and_parts(ppca, x)[1] == {}
    m2 = M2(64, M2Config(latent_dim=2, hidden_dims=(8,)), num_classes=3).double()
    test, per_example = evaluate_per_example(m2, x, torch.zeros(len(x), dtype=torch.long), num_samples=2)
    assert "kl" not in test and "reconstruction" not in test and set(per_example) == {"elbo", "log_likelihood"}


def test_a_per_example_file_with_a_kl_but_no_reconstruction_is_refused(tmp_path):
    values = torch.zeros(4, dtype=torch.float64)
    write_per_example(tmp_path, {"elbo": values, "kl": values})
    with pytest.raises(ValueError, match="optionally 'reconstruction' with 'kl'"):
        read_per_example(tmp_path)
    write_per_example(tmp_path, {"elbo": values, "kl": values, "reconstruction": values})
    assert sorted(read_per_example(tmp_path)) == ["elbo", "kl", "reconstruction"]
