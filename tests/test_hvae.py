"""The hierarchical VAE (``--model hvae``): its densities against a hand computation, the
one-level model against the VAE, the bounds' order, every prior, float64, the CLI and figures."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pyro
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from torch.distributions import Bernoulli, Normal

from pyro_vae import TrainConfig, fit
from pyro_vae.cli import main
from pyro_vae.inference.evaluate import elbo, latent_diagnostics, log_importance_weights, log_likelihood
from pyro_vae.models import HVAE, MODELS, VAE, HVAEConfig, VAEConfig
from pyro_vae.plots import applicable_kinds
from tests.conftest import binary_batch

F64 = torch.float64
SMALL = dict(latent_dims=(8, 4), hidden_dims=(32,))


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread for this module's tiny networks: a second thread buys nothing at these
    sizes, and on a busy machine (more runnable processes than cores) its synchronization made
    an 8-epoch fit 80 times slower (36 s against 0.44 s). Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _one_line(err) -> str:
    message = str(err.value)
    assert message and "\n" not in message
    return message


# --------------------------------------------------------------------------- configuration


def test_registered_and_sizes_derived_bottom_first():
    assert MODELS["hvae"] == (HVAEConfig, HVAE)
    assert HVAEConfig().latent_dims == (32, 16) and HVAEConfig().latent_dim == 16
    assert HVAEConfig(levels=3, latent_dim=4).latent_dims == (16, 8, 4)
    assert HVAEConfig(levels=1).latent_dims == (16,)
    config = HVAEConfig(latent_dims=(8, 3))
    assert config.latent_dim == 3 and HVAEConfig(**vars(config)) == config  # round trip


@pytest.mark.parametrize("kwargs,error,message", [
    ({"levels": 0}, ValueError, "levels must be a positive integer, got 0"),
    ({"levels": "2"}, TypeError, "levels must be a positive integer"),
    ({"latent_dims": (32, 16, 8)}, ValueError, r"latent_dims \[32, 16, 8\] has 3 sizes but levels is 2"),
    ({"levels": 3, "latent_dims": (8, 4)}, ValueError, "has 2 sizes but levels is 3"),
    ({"latent_dims": (8, 0)}, ValueError, "latent_dims must contain positive integers only"),
    ({"latent_dims": (8, 4), "latent_dim": 5}, ValueError, r"latent_dim 5 must equal the top level's size"),
    ({"latent_dim": 0}, ValueError, "latent_dim must be a positive integer"),
    ({"prior": "vamp2"}, ValueError, "unknown prior 'vamp2'; choose from: "),
    ({"likelihood": "poisson"}, ValueError, "unknown likelihood 'poisson'"),
])
def test_bad_configs_are_one_line_errors(kwargs, error, message):
    with pytest.raises(error, match=message) as err:
        HVAEConfig(**kwargs)
    _one_line(err)


# --------------------------------------------------------------------------- the densities


def test_log_weights_equal_a_hand_computation():
    """log p(x, z1, z2) - log q(z1, z2 | x) from torch.distributions, at the guide's own draws."""
    m = HVAE(64, HVAEConfig(**SMALL)).double()
    x = binary_batch(6, dtype=F64)
    pyro.set_rng_seed(3)
    log_w = log_importance_weights(m, x)[0]  # (batch,)
    pyro.set_rng_seed(3)
    trace = pyro.poutine.trace(m.guide).get_trace(x)  # the same draws
    z2, z1 = trace.nodes["z2"]["value"], trace.nodes["z1"]["value"]
    with torch.no_grad():
        q2 = Normal(*m.encoder(x))
        h = torch.relu(x @ m.guide_nets[0].from_x.weight.T + m.guide_nets[0].from_x.bias
                       + z2 @ m.guide_nets[0].from_z.weight.T)  # the first layer on [x, z2]
        loc1, raw1 = m.guide_nets[0].net[1](h).split(8, -1)
        q1 = Normal(loc1, torch.nn.functional.softplus(raw1) + 1e-5)
        p1 = Normal(*m.conditionals[0](z2))
        expected = (Normal(0.0, 1.0).log_prob(z2).sum(-1) + p1.log_prob(z1).sum(-1)
                    + Bernoulli(logits=m.decoder(z1)).log_prob(x).sum(-1)
                    - q2.log_prob(z2).sum(-1) - q1.log_prob(z1).sum(-1))
    torch.testing.assert_close(log_w, expected)


def test_k_importance_samples_pass_through_every_layer():
    m = HVAE(64, HVAEConfig(levels=3, latent_dims=(6, 5, 4), hidden_dims=(16,)))
    x = binary_batch(5)
    with pyro.plate("importance_samples", 7, dim=-2):
        trace = pyro.poutine.trace(m.guide).get_trace(x)
        model_trace = pyro.poutine.trace(pyro.poutine.replay(m.model, trace=trace)).get_trace(x)
    for level, d in zip((1, 2, 3), (6, 5, 4)):
        assert trace.nodes[f"z{level}"]["value"].shape == (7, 5, d)
    for node in (*trace.nodes.values(), *model_trace.nodes.values()):
        if node["type"] == "sample" and node["name"] not in ("data", "importance_samples"):
            assert any(f.name == "data" for f in node["cond_indep_stack"]), node["name"]
    assert log_importance_weights(m, x, num_samples=7).shape == (7, 5)


@pytest.mark.parametrize("prior", ["standard", "mog", "vamp", "flow"])
def test_one_level_is_the_vae_exactly(prior):
    """Removing the upper levels leaves the VAE: same modules, same initial weights under the
    same seed, and the same importance weights under the same seed."""
    config = dict(latent_dim=3, hidden_dims=(16,), prior=prior, prior_components=4)
    pyro.set_rng_seed(5)
    vae = VAE(64, VAEConfig(**config))
    pyro.set_rng_seed(5)
    hvae = HVAE(64, HVAEConfig(levels=1, **config))
    assert list(hvae.state_dict()) == list(vae.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(hvae.state_dict().values(), vae.state_dict().values()))
    with torch.no_grad():  # move the weights off their initialization, then copy them
        for p in vae.parameters():
            p.add_(0.1 * torch.randn_like(p))
    hvae.load_state_dict(vae.state_dict())
    x = binary_batch(9)
    pyro.set_rng_seed(11)
    expected = log_importance_weights(vae, x, num_samples=10)
    pyro.set_rng_seed(11)
    assert torch.equal(log_importance_weights(hvae, x, num_samples=10), expected)
    assert torch.equal(hvae.encode(x), vae.encode(x))
    assert torch.equal(hvae.reconstruct(x), vae.reconstruct(x))


# --------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def trained(digits):
    pyro.set_rng_seed(0)
    m = HVAE(digits.data_dim, HVAEConfig(**SMALL))
    result = fit(m, digits, TrainConfig(epochs=8, lr=3e-3, progress=False, device="cpu"))
    return m, result


def test_fit_trains_it(trained):
    m, result = trained
    curve = [h["test_elbo"] for h in result.history]
    assert all(math.isfinite(v) for v in curve)
    assert curve[-1] > curve[0] + 3.0


def test_elbo_below_iwae_10_below_iwae_1000(trained, digits):
    m, _ = trained
    x = digits.x_test
    pyro.set_rng_seed(1)
    bound = elbo(m, x, num_samples=10).per_example
    iwae_10 = log_likelihood(m, x, num_samples=10).per_example
    iwae_1000 = log_likelihood(m, x, num_samples=1000).per_example
    for low, high in ((bound, iwae_10), (iwae_10, iwae_1000)):
        gap = (high - low).double()  # paired, per example
        stderr = gap.std().item() / math.sqrt(gap.numel())
        assert gap.mean().item() > -2 * stderr
        assert high.mean() > low.mean()


def test_plain_pyro_svi_trains_it(digits):
    m = HVAE(digits.data_dim, HVAEConfig(**SMALL))
    svi = SVI(m.model, m.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    x = torch.bernoulli(digits.x_train[:256])
    losses = [svi.step(x) for _ in range(25)]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    stored = set(pyro.get_param_store().keys())  # pyro.module registered every parameter
    assert all(any(key.endswith(n) for key in stored) for n, _ in m.named_parameters())


@pytest.mark.parametrize("prior", ["standard", "mog", "vamp", "flow"])
def test_every_prior_trains_in_float64(prior, digits):
    m = HVAE(digits.data_dim, HVAEConfig(levels=3, latent_dims=(6, 4, 2), hidden_dims=(16,),
                                         prior=prior, prior_components=4))
    result = fit(m, digits, TrainConfig(epochs=1, dtype="float64", progress=False, device="cpu"))
    assert all(p.dtype == F64 for p in m.parameters())
    assert math.isfinite(result.history[-1]["test_elbo"])
    x = digits.x_test[:4].double()
    assert m.sample(4).dtype == F64 and m.sample(4, mean=False).dtype == F64
    assert m.reconstruct(x).shape == (4, 64) and m.decode(m.encode(x)).dtype == F64
    assert math.isfinite(log_likelihood(m, x, num_samples=5).mean)


@pytest.mark.parametrize("objective", ["meanfield", "iwae"])
def test_other_objectives_train_it(objective, digits):
    m = HVAE(digits.data_dim, HVAEConfig(**SMALL))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. TraceMeanField_ELBO's warning on the sites' order
        result = fit(m, digits, TrainConfig(epochs=1, objective=objective, particles=2,
                                            progress=False, device="cpu"))
    assert math.isfinite(result.history[-1]["test_elbo"])


def test_latent_diagnostics_per_layer(trained, digits):
    m, _ = trained
    x = digits.x_test
    found = latent_diagnostics(m, x)
    assert found["latent_dim"] == 4 and len(found["kl_per_dim"]) == 4  # the top layer
    layers = found["layers"]
    assert [(entry["level"], entry["latent_dim"]) for entry in layers] == [(1, 8), (2, 4)]
    assert all(0 <= entry["active_units"] <= entry["latent_dim"] for entry in layers)
    # The top layer's KL against N(0, I) is the per-dimension KL summed.
    assert layers[1]["kl"] == pytest.approx(sum(found["kl_per_dim"]), rel=1e-5)
    assert layers[0]["kl"] >= 0
    assert applicable_kinds(m) == ["curves", "reconstructions", "samples", "manifold", "latent",
                                   "interpolation", "arithmetic", "kl"]


# --------------------------------------------------------------------------- the command line


def test_cli_trains_with_levels_and_writes_its_figures(tmp_path, capsys):
    out = tmp_path / "hvae"
    argv = ["train", "--model", "hvae", "--levels", "2", "--latent-dim", "2", "--hidden-dims", "32",
            "--epochs", "2", "--eval-samples", "10", "--no-progress", "--device", "cpu", "--out", str(out)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(argv) == 0
    assert not [str(w.message) for w in caught if not issubclass(w.category, (DeprecationWarning, FutureWarning))]
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "hvae"
    assert config["model_config"]["levels"] == 2 and config["model_config"]["latent_dims"] == [4, 2]
    test = json.loads((out / "metrics.json").read_text())["test"]
    assert math.isfinite(test["log_likelihood"]) and test["bound"] and not test["exact"]
    assert [layer["latent_dim"] for layer in test["latent"]["layers"]] == [4, 2]
    figures = {p.stem for p in (out / "figures").glob("*.png")}
    assert {"samples", "reconstructions", "kl"} <= figures
    assert figures == set(applicable_kinds(HVAE(64, HVAEConfig(latent_dim=2))))
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 0  # the run loads back
    assert main(["sample", str(out), "--n", "9", "--out", str(tmp_path / "s.png")]) == 0


@pytest.mark.parametrize("argv,message", [
    (["--model", "hvae", "--levels", "0"], "levels must be a positive integer, got 0"),
    (["--model", "vae", "--levels", "2"], "--levels does not apply to --model vae"),
    (["--model", "hvae", "--guide", "delta"], "--guide does not apply to --model hvae"),
])
def test_cli_refuses_bad_levels_in_one_line(argv, message, tmp_path, capsys):
    assert main(["train", *argv, "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_compare_refuses_a_latent_dims_mismatch(tmp_path, capsys):
    argv = ["compare", "--models", "deep=hvae:levels=3:latent_dims=8/4", "--out", str(tmp_path / "c")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has 2 sizes but levels is 3" in err[0]


def test_compare_ranks_vae_and_hvae(tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["compare", "--models", "vae,hvae", "--epochs", "2", "--latent-dim", "2", "--hidden-dims",
            "16", "--samples", "10", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    rows = {r["name"]: r for r in json.loads((out / "summary.json").read_text())}
    assert set(rows) == {"vae", "hvae"}
    assert all(math.isfinite(r["log_likelihood"]) and r["discrete"] for r in rows.values())
    behind = [r for r in rows.values() if r["paired"] is not None]
    assert len(behind) == 1 and behind[0]["paired"]["vs"] in rows  # ranked and paired
    report = (out / "report.md").read_text()
    assert "| hvae |" in report and "| vae |" in report


def test_a_huge_level_count_is_refused_before_sizes_are_derived():
    """levels = 2**31 once made the config expand 2**31 ever larger sizes (minutes, gigabytes)."""
    with pytest.raises(ValueError, match=r"levels must be at most 32, got 2147483648"):
        HVAEConfig(levels=2**31)
    with pytest.raises(ValueError, match=r"latent_dims must contain integers of at most"):
        HVAEConfig(levels=32, latent_dim=2**40)
