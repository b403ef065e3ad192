"""The guide swap: ``VAEConfig(guide="delta")`` turns the VAE into a (MAP-regularized) autoencoder.

Its objective ``log p(x | z) + log p(z)`` at ``z = encoder(x)`` is not a bound on log p(x), so
the evaluation reports no log-likelihood and says so (``bound: false``).
"""

import json
import math

import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyro_vae import CVAE, VAE, TrainConfig, VAEConfig, evaluate, fit, log_likelihood
from pyro_vae.cli import main
from tests.conftest import binary_batch


def _autoencoder(data_dim=64, **options):
    return VAE(data_dim, VAEConfig(latent_dim=3, hidden_dims=(32,), guide="delta", **options))


def test_objective_is_the_joint_density_at_the_encoded_point():
    """With a point mass, Trace_ELBO is -(log p(x | z) + log p(z)) at z = encoder mean: no entropy."""
    ae = _autoencoder(6).double()
    x = binary_batch(5, 6, dtype=torch.float64)
    loss = Trace_ELBO().differentiable_loss(ae.model, ae.guide, x)
    z = ae.encoder(x)[0]  # (5, 3): the deterministic code
    logits = ae.decoder(z)
    log_lik = (x * logits - torch.nn.functional.softplus(logits)).sum()
    log_prior = dist.Normal(0.0, 1.0).log_prob(z).sum()
    torch.testing.assert_close(-loss, log_lik + log_prior)
    assert not ae.is_bound and ae.has_latents
    torch.testing.assert_close(ae.encode(x), z.detach())
    torch.testing.assert_close(ae.reconstruct(x), torch.sigmoid(logits).detach())


def test_fit_trains_and_evaluation_reports_no_likelihood(digits):
    ae = _autoencoder()
    result = fit(ae, digits, TrainConfig(epochs=3, batch_size=64, lr=1e-2, progress=False))
    elbos = [h["test_elbo"] for h in result.history]
    assert all(math.isfinite(e) for e in elbos)
    assert elbos[-1] > elbos[0]  # the objective improves
    test = evaluate(ae, digits.x_test, num_samples=10)
    assert test["log_likelihood"] is None and test["log_likelihood_stderr"] is None
    assert test["bound"] is False and test["exact"] is False
    assert math.isfinite(test["elbo"])
    with pytest.raises(ValueError, match="point-mass guide has no likelihood estimate: its objective is not a bound"):
        log_likelihood(ae, digits.x_test)


def test_delta_guide_applies_to_the_cvae_too():
    cvae = CVAE(8, VAEConfig(latent_dim=2, hidden_dims=(8,), guide="delta"), num_classes=3)
    assert not cvae.is_bound
    x, y = binary_batch(4, 8), torch.tensor([0, 1, 2, 0])
    with pytest.raises(ValueError, match="no likelihood estimate"):
        log_likelihood(cvae, x, y)
    assert evaluate(cvae, x, y)["log_likelihood"] is None


def test_unknown_guide_is_refused():
    with pytest.raises(ValueError, match="unknown guide 'dirac'; choose from: delta, normal"):
        VAEConfig(guide="dirac")


def test_cli_trains_an_autoencoder(tmp_path, capsys):
    out = tmp_path / "ae"
    argv = ["train", "--model", "vae", "--guide", "delta", "--latent-dim", "2", "--hidden-dims", "32",
            "--epochs", "2", "--out", str(out), "--eval-samples", "10", "--no-progress"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["log_likelihood"] is None
    assert json.loads((out / "config.json").read_text())["model_config"]["guide"] == "delta"
    test = json.loads((out / "metrics.json").read_text())["test"]
    assert test["bound"] is False and test["log_likelihood"] is None and math.isfinite(test["elbo"])
    assert (out / "checkpoint.pt").is_file() and (out / "figures" / "reconstructions.png").is_file()

    assert main(["evaluate", str(out)]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["log_likelihood"] is None and again["bound"] is False
    assert main(["sample", str(out), "--n", "4", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").is_file()
    assert main(["train", "--guide", "point", "--out", str(tmp_path / "bad")]) == 2
    assert "unknown guide 'point'; choose from: delta, normal" in capsys.readouterr().err
