import math

import pyro
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO

from pyro_vae import VAE, TrainConfig, VAEConfig, fit
from pyro_vae.inference import elbo as elbo_estimate
from tests.conftest import binary_batch


def _normal_logpdf(z, loc, scale):
    return (-0.5 * ((z - loc) / scale) ** 2 - torch.log(scale) - 0.5 * math.log(2 * math.pi)).sum(-1)


def test_elbo_equals_hand_computed_value():
    """Trace_ELBO on a tiny batch equals log p(x|z) + log p(z) - log q(z|x) written out by hand."""
    vae = VAE(6, VAEConfig(latent_dim=3, hidden_dims=(5,))).double()
    x = binary_batch(4, 6, dtype=torch.float64)
    pyro.set_rng_seed(1)
    loss = Trace_ELBO().differentiable_loss(vae.model, vae.guide, x)

    pyro.set_rng_seed(1)
    loc, scale = vae.encoder(x)
    z = torch.distributions.Normal(loc, scale).rsample()  # the same draw as the guide's
    logits = vae.decoder(z)
    log_lik = (x * logits - torch.nn.functional.softplus(logits)).sum(-1)  # Bernoulli, by hand
    log_prior = _normal_logpdf(z, torch.zeros_like(z), torch.ones_like(z))
    log_q = _normal_logpdf(z, loc, scale)
    torch.testing.assert_close(-loss, (log_lik + log_prior - log_q).sum())


def test_monte_carlo_kl_matches_closed_form():
    """With many samples, the sampled ELBO agrees with the analytic-KL (mean-field) ELBO."""
    vae = VAE(6, VAEConfig(latent_dim=2, hidden_dims=(5,))).double()
    x = binary_batch(3, 6, dtype=torch.float64)
    n = 20000
    sampled = elbo_estimate(vae, x, num_samples=n, sample_chunk=5000).per_example
    analytic = -TraceMeanField_ELBO(num_particles=n, vectorize_particles=True, max_plate_nesting=1
                                    ).loss(vae.model, vae.guide, x) / 3
    assert abs(sampled.mean().item() - analytic) < 0.05


def test_short_training_improves_test_elbo(digits):
    vae = VAE(digits.data_dim, VAEConfig())
    result = fit(vae, digits, TrainConfig(epochs=30, progress=False))
    first, last = result.history[0]["test_elbo"], result.history[-1]["test_elbo"]
    # Measured: about -35.4 after 1 epoch and -25.5 after 30 (seed 0, 2 CPU cores).
    assert last > -27.0
    assert last - first > 7.0


def test_plain_pyro_svi_trains_the_model(digits):
    vae = VAE(digits.data_dim, VAEConfig(latent_dim=4, hidden_dims=(64,)))
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 3e-3}), Trace_ELBO())
    x = digits.x_test
    before = elbo_estimate(vae, x, num_samples=10).mean
    for _ in range(3):
        for xb, _ in digits.train_batches(128):
            svi.step(xb)
    after = elbo_estimate(vae, x, num_samples=10).mean
    assert after > before + 5.0
    # pyro.optim found the module's parameters through pyro.module
    assert len(pyro.get_param_store()) == len(list(vae.parameters()))


def test_runs_in_float64(digits):
    vae = VAE(digits.data_dim, VAEConfig(latent_dim=4, hidden_dims=(32,)))
    result = fit(vae, digits, TrainConfig(epochs=1, dtype="float64", progress=False))
    assert all(p.dtype == torch.float64 for p in vae.parameters())
    assert math.isfinite(result.history[-1]["train_elbo"])
    x = digits.x_test[:5].double()
    assert vae.reconstruct(x).dtype == torch.float64
    assert vae.sample(3).dtype == torch.float64 and vae.sample(3).shape == (3, 64)
    assert vae.encode(x).shape == (5, 4)


def test_same_seed_same_numbers(digits):
    runs = []
    for _ in range(2):
        pyro.set_rng_seed(3)  # initialization is part of the run
        vae = VAE(digits.data_dim, VAEConfig(latent_dim=4, hidden_dims=(32,)))
        runs.append(fit(vae, digits, TrainConfig(epochs=2, seed=3, progress=False)).history)
    assert runs[0] == runs[1]


@pytest.mark.parametrize("kwargs, error, match", [
    ({"latent_dim": 0}, ValueError, "latent_dim must be a positive integer, got 0"),
    ({"latent_dim": 2.5}, TypeError, "latent_dim must be a positive integer"),
    ({"hidden_dims": (64, -1)}, ValueError, "hidden_dims must contain positive integers"),
    ({"likelihood": "poisson"}, ValueError, "unknown likelihood 'poisson'; choose from"),
    ({"prior": "vamp2"}, ValueError, "unknown prior 'vamp2'; choose from"),
    ({"guide": "flow"}, ValueError, "unknown guide 'flow'; choose from: delta, normal, studentt"),
])
def test_bad_vae_config(kwargs, error, match):
    with pytest.raises(error, match=match):
        VAEConfig(**kwargs)


def test_data_outside_bernoulli_support_is_refused(digits):
    from pyro_vae.data import DataConfig, load_dataset

    grey = load_dataset(DataConfig("digits", binarize="none"))
    vae = VAE(grey.data_dim, VAEConfig(latent_dim=2, hidden_dims=(8,)))
    with pytest.raises(ValueError, match="bernoulli likelihood needs binary pixels"):
        fit(vae, grey, TrainConfig(epochs=1, progress=False))


def test_fit_uses_one_fused_adam_that_matches_the_default_implementation(digits):
    """fit's optimizer is torch's fused Adam over all parameters: the same algorithm as the
    default implementation, so a few steps from the same start agree to float rounding."""
    from pyro_vae.inference.evaluate import log_importance_weights  # noqa: PLC0415
    from pyro_vae.inference.train import build_optimizer  # noqa: PLC0415

    vae = VAE(64, VAEConfig(latent_dim=3, hidden_dims=(16,)))
    result = fit(vae, digits, TrainConfig(epochs=1, progress=False, eval_every=0))
    (group,) = result.state.optimizer.param_groups
    assert group["fused"] is True and len(group["params"]) == len(list(vae.parameters()))

    models, optimizers = [], []
    for fused in (True, False):
        pyro.set_rng_seed(0)
        vae = VAE(64, VAEConfig(latent_dim=3, hidden_dims=(16,)))
        opt = build_optimizer(vae.parameters(), 1e-2) if fused else torch.optim.Adam(vae.parameters(), lr=1e-2)
        models.append(vae)
        optimizers.append(opt)
    start = [p.detach().clone() for p in models[0].parameters()]
    x = digits.x_train[:64].bernoulli(generator=torch.Generator().manual_seed(1))
    for _ in range(5):
        for vae, opt in zip(models, optimizers):
            pyro.set_rng_seed(2)
            opt.zero_grad()
            with vae.optimized_by_torch():
                (-log_importance_weights(vae, x).mean()).backward()
            opt.step()
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert all(not torch.equal(a, b) for a, b in zip(start, models[0].parameters()))  # it moved
