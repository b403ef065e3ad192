"""The evaluation stack against closed forms and against itself."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO
from scipy.stats import multivariate_normal

from pyro_vae import VAE, TrainConfig, VAEConfig, fit
from pyro_vae.inference.evaluate import (
    bits_per_dim,
    elbo,
    evaluate,
    latent_diagnostics,
    log_importance_weights,
    log_likelihood,
)
from pyro_vae.models.base import GenerativeModel
from tests.conftest import binary_batch


class LatentPPCA(GenerativeModel):
    """PPCA with z kept as a latent variable and the exact posterior as its guide (test only)."""

    pyro_name = "latent_ppca"

    def __init__(self, W, mu, sigma):
        super().__init__()
        self.W, self.mu, self.sigma = torch.nn.Parameter(W), torch.nn.Parameter(mu), sigma

    def model(self, x, y=None):
        d = self.W.shape[1]
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(self.W.new_zeros(d), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + self.mu, self.sigma).to_event(1), obs=x)

    def guide(self, x, y=None):
        # p(z | x) = N(M^-1 W^T (x - mu), sigma^2 M^-1), M = W^T W + sigma^2 I
        d = self.W.shape[1]
        M = self.W.T @ self.W + self.sigma ** 2 * torch.eye(d, dtype=self.W.dtype)
        loc = torch.linalg.solve(M, self.W.T @ (x - self.mu).T).T
        cov = self.sigma ** 2 * torch.linalg.inv(M)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(loc, covariance_matrix=cov))

    def sample(self, n, y=None, *, mean=True):
        raise NotImplementedError


def _ppca_pair(D=5, d=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    W = torch.randn(D, d, generator=gen, dtype=torch.float64)
    mu = torch.randn(D, generator=gen, dtype=torch.float64)
    return LatentPPCA(W, mu, 0.7)


def test_exact_posterior_proposal_gives_the_exact_marginal():
    pair = _ppca_pair()
    x = torch.randn(6, 5, dtype=torch.float64)
    with torch.no_grad():
        log_w = log_importance_weights(pair, x, num_samples=50)
    assert log_w.shape == (50, 6)
    # With the exact posterior as proposal every weight equals p(x): zero variance.
    assert float(log_w.std(0).max()) < 1e-8
    cov = (pair.W @ pair.W.T + 0.49 * torch.eye(5, dtype=torch.float64)).detach().numpy()
    exact = multivariate_normal(pair.mu.detach().numpy(), cov).logpdf(x.numpy())
    estimate = log_likelihood(pair, x, num_samples=30, sample_chunk=7)
    np.testing.assert_allclose(estimate.per_example.numpy(), exact, rtol=0, atol=1e-8)


def test_iwae_weights_with_one_sample_equal_trace_elbo():
    vae = VAE(6, VAEConfig(latent_dim=2, hidden_dims=(5,))).double()
    x = binary_batch(4, 6, dtype=torch.float64)
    pyro.set_rng_seed(3)
    log_w = log_importance_weights(vae, x, num_samples=1)
    pyro.set_rng_seed(3)
    loss = Trace_ELBO().differentiable_loss(vae.model, vae.guide, x)
    torch.testing.assert_close(log_w.sum(), -loss)


@pytest.fixture(scope="module")
def trained_vae():
    from pyro_vae.data import DataConfig, load_dataset

    data = load_dataset(DataConfig("digits"))
    pyro.set_rng_seed(0)
    vae = VAE(data.data_dim, VAEConfig(latent_dim=8, hidden_dims=(128,)))
    fit(vae, data, TrainConfig(epochs=15, progress=False))
    return vae.eval(), data


def test_bounds_tighten_with_more_samples(trained_vae):
    vae, data = trained_vae
    x = data.x_test
    e = elbo(vae, x, num_samples=10)
    ll10 = log_likelihood(vae, x, num_samples=10)
    ll1000 = log_likelihood(vae, x, num_samples=1000)
    # Paired per-example differences: E[ELBO] <= E[IWAE_10] <= E[IWAE_1000]; allow 3 standard errors.
    for low, high in ((e, ll10), (ll10, ll1000)):
        diff = high.per_example - low.per_example
        stderr = diff.std().item() / math.sqrt(diff.numel())
        assert diff.mean().item() > -3 * stderr
    assert ll1000.mean - e.mean > 0.2  # and the gap is real, not noise


def test_chunk_sizes_agree(trained_vae):
    vae, data = trained_vae
    x = data.x_test[:100]
    a = log_likelihood(vae, x, num_samples=400, batch_size=100, sample_chunk=400)
    b = log_likelihood(vae, x, num_samples=400, batch_size=7, sample_chunk=33)
    diff = a.per_example - b.per_example
    assert abs(diff.mean().item()) < 4 * diff.std().item() / math.sqrt(100) + 1e-6
    assert diff.abs().max().item() < 0.5


def test_evaluate_reports_the_test_object(trained_vae):
    vae, data = trained_vae
    test = evaluate(vae, data.x_test, num_samples=50)
    assert test["log_likelihood_samples"] == 50 and test["num_examples"] == data.x_test.shape[0]
    assert test["exact"] is False and test["bound"] is True and test["discrete"] is True
    assert test["elbo"] < test["log_likelihood"] and test["elbo_stderr"] > 0
    assert "bits_per_dim" not in test  # only for densities


def test_point_mass_guide_has_no_likelihood_estimate():
    ae = VAE(6, VAEConfig(latent_dim=2, hidden_dims=(5,), guide="delta"))
    x = binary_batch(4, 6)
    with pytest.raises(ValueError, match="point-mass guide has no likelihood estimate"):
        log_likelihood(ae, x, num_samples=5)
    test = evaluate(ae, x, num_samples=5)
    assert test["log_likelihood"] is None and test["bound"] is False


def test_latent_diagnostics_match_closed_forms(trained_vae):
    vae, data = trained_vae
    diag = latent_diagnostics(vae, data.x_test, data.y_test, x_train=data.x_train, y_train=data.y_train)
    q = vae.posterior(data.x_test)
    loc, scale = q.base_dist.loc, q.base_dist.scale
    kl = torch.distributions.kl_divergence(
        torch.distributions.Normal(loc, scale), torch.distributions.Normal(0.0, 1.0)).mean(0)
    np.testing.assert_allclose(diag["kl_per_dim"], kl.numpy(), rtol=1e-5, atol=1e-6)
    variance = np.var(loc.numpy(), axis=0, ddof=1)
    assert diag["active_units"] == int((variance > 0.01).sum())
    assert 0.3 < diag["classifier_accuracy"] <= 1.0  # well above chance (0.1) on digits


def test_bits_per_dim():
    # A uniform density on [0, 1] has log p = 0: log2(pixel_max) bits per pixel.
    assert bits_per_dim(0.0, 10, pixel_max=256) == pytest.approx(8.0)
    assert bits_per_dim(-10 * math.log(2), 10, pixel_max=256) == pytest.approx(9.0)
    assert bits_per_dim(0.0, 3) == pytest.approx(math.log2(255))
