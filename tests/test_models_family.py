"""The model family beside the VAE: CVAE, mixture (Bernoulli / Gaussian) and PPCA.

Closed forms and independent implementations (scipy, scikit-learn) check the maths; short
fits on the embedded digits check that the one training loop, plain Pyro SVI and the CLI
train each model.
"""

import json
import math

import numpy as np
import pyro
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from scipy.stats import multivariate_normal
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture

from pyro_vae import (
    CVAE,
    PPCA,
    DataConfig,
    Mixture,
    MixtureConfig,
    PPCAConfig,
    TrainConfig,
    VAEConfig,
    evaluate,
    fit,
    load_dataset,
)
from pyro_vae.cli import main
from pyro_vae.inference.evaluate import log_likelihood
from pyro_vae.models import MODELS
from tests.conftest import binary_batch

F64 = torch.float64


@pytest.fixture(scope="module")
def grey():
    """Digits with grey levels kept (for the densities: PPCA, the Gaussian mixture)."""
    return load_dataset(DataConfig("digits", binarize="none"))


def _normal_logpdf(x, loc, scale):
    return -0.5 * ((x - loc) / scale) ** 2 - torch.log(scale) - 0.5 * math.log(2 * math.pi)


def _exact_loss(m, x, y=None):
    """-Trace_ELBO of a model without latents: its exact -sum_i log p(x_i)."""
    return Trace_ELBO().differentiable_loss(m.model, m.guide, x, y)


def test_registry_holds_the_family():
    assert {"vae", "cvae", "mixture", "ppca"} <= set(MODELS)
    assert MODELS["cvae"][1] is CVAE and MODELS["mixture"] == (MixtureConfig, Mixture)
    assert MODELS["ppca"] == (PPCAConfig, PPCA)


# --------------------------------------------------------------------------- mixture


def _random_mixture(likelihood, d=5, k=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    m = Mixture(d, MixtureConfig(num_components=k, likelihood=likelihood)).double()
    with torch.no_grad():
        m.weight_logits.copy_(torch.randn(k, generator=gen, dtype=F64))
        if likelihood == "gaussian":
            m.means.copy_(torch.randn(k, d, generator=gen, dtype=F64))
            m.raw_scales.copy_(torch.randn(k, d, generator=gen, dtype=F64))
        else:
            m.component_params.copy_(2 * torch.randn(k, d, generator=gen, dtype=F64))
    return m


def test_bernoulli_mixture_log_likelihood_equals_hand_computation():
    m = _random_mixture("bernoulli")
    x = binary_batch(7, 5, dtype=F64)
    logits = m.component_params  # (K, D)
    log_pk = (x[:, None] * logits - torch.nn.functional.softplus(logits)).sum(-1)  # (n, K)
    log_w = m.weight_logits - torch.logsumexp(m.weight_logits, 0)
    expected = torch.logsumexp(log_w + log_pk, -1)  # (n,)
    torch.testing.assert_close(m.log_marginal(x), expected)
    torch.testing.assert_close(-_exact_loss(m, x), expected.sum())
    torch.testing.assert_close(log_likelihood(m, x).per_example, expected)
    torch.testing.assert_close(m.responsibilities(x), torch.softmax(log_w + log_pk, -1))


def test_gaussian_mixture_log_likelihood_equals_hand_computation():
    m = _random_mixture("gaussian")
    x = torch.randn(7, 5, dtype=F64)
    scales = torch.nn.functional.softplus(m.raw_scales) + m.config.min_scale
    log_pk = _normal_logpdf(x[:, None], m.means, scales).sum(-1)  # (n, K)
    log_w = torch.log_softmax(m.weight_logits, 0)
    expected = torch.logsumexp(log_w + log_pk, -1)
    torch.testing.assert_close(m.log_marginal(x), expected)
    torch.testing.assert_close(-_exact_loss(m, x), expected.sum())
    test = evaluate(m, x)
    assert test["exact"] and not test["discrete"] and test["bound"]
    assert test["log_likelihood"] == pytest.approx(expected.mean().item(), rel=1e-9)
    assert test["elbo"] == pytest.approx(expected.mean().item(), rel=1e-9)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_gaussian_mixture_matches_scikit_learn_with_its_parameters(grey):
    """Our density with sklearn's fitted GMM parameters equals sklearn's own score_samples."""
    x = grey.x_train.double().numpy()
    gmm = GaussianMixture(3, covariance_type="diag", reg_covar=1e-3, random_state=0, max_iter=20).fit(x)
    m = Mixture(64, MixtureConfig(num_components=3, likelihood="gaussian")).double()
    with torch.no_grad():
        m.weight_logits.copy_(torch.from_numpy(np.log(gmm.weights_)))
        m.means.copy_(torch.from_numpy(gmm.means_))
        excess = torch.from_numpy(np.sqrt(gmm.covariances_)) - m.config.min_scale  # > 0
        m.raw_scales.copy_(excess + torch.log(-torch.expm1(-excess)))  # inverse softplus
    x_test = grey.x_test.double()
    torch.testing.assert_close(m.log_marginal(x_test), torch.from_numpy(gmm.score_samples(x_test.numpy())))


def test_fitted_gaussian_mixture_is_not_collapsed(grey):
    m = Mixture(64, MixtureConfig(num_components=10, likelihood="gaussian"))
    m.init_from_data(grey.x_train)
    before = m.log_marginal(grey.x_test).mean().item()
    result = fit(m, grey, TrainConfig(epochs=5, lr=3e-2, progress=False, eval_every=0))
    resp = m.responsibilities(grey.x_test)
    torch.testing.assert_close(resp.sum(-1), torch.ones(resp.shape[0]))
    assert m.weights.max().item() < 0.9
    assert m.weights.sum().item() == pytest.approx(1.0, abs=1e-6)
    used = resp.argmax(-1).bincount(minlength=10)
    assert int((used >= 10).sum()) >= 5  # at least 5 components each own 10+ test digits
    # Measured (seed 0): about 22 nats before training, 61 after 5 epochs.
    after = m.log_marginal(grey.x_test).mean().item()
    assert after > before + 10
    assert result.history[-1]["train_elbo"] > result.history[0]["train_elbo"]


def test_bernoulli_mixture_fits_binarized_digits(digits):
    m = Mixture(64, MixtureConfig(num_components=10))
    m.init_from_data(digits.x_train)
    fit(m, digits, TrainConfig(epochs=5, lr=3e-2, progress=False, eval_every=0))
    test = evaluate(m, digits.x_test)
    assert test["exact"] and test["discrete"] and test["log_likelihood_samples"] == 1
    # Measured (seed 0): about -24.2 nats per digit after 5 epochs (a uniform Bernoulli: -44.4).
    assert test["log_likelihood"] > -26.0
    assert m.component_means().shape == (10, 64)
    assert bool(((m.component_means() > 0) & (m.component_means() < 1)).all())


def test_mixture_init_seeds_distinct_spread_out_points():
    x = torch.cat([torch.zeros(50, 4), torch.ones(50, 4), torch.full((50, 4), 0.5)])
    m = Mixture(4, MixtureConfig(num_components=3, likelihood="gaussian"))
    m.init_from_data(x)
    # k-means++ seeding cannot pick the same point twice while other points are farther away.
    assert sorted(m.means[:, 0].tolist()) == [0.0, 0.5, 1.0]
    with pytest.raises(ValueError, match="at least num_components=3 examples"):
        m.init_from_data(x[:2])


def test_mixture_sample_encode_reconstruct(digits):
    m = Mixture(64, MixtureConfig(num_components=4))
    m.init_from_data(digits.x_train)
    x = digits.x_test[:6]
    assert m.encode(x).shape == (6, 4)
    torch.testing.assert_close(m.reconstruct(x), m.component_means()[m.responsibilities(x).argmax(-1)])
    means = m.sample(5, mean=True)
    assert means.shape == (5, 64)
    assert all(any(torch.equal(row, c) for c in m.component_means()) for row in means)
    pixels = m.sample(5, mean=False)
    assert bool(((pixels == 0) | (pixels == 1)).all())


def test_mixture_config_errors():
    with pytest.raises(ValueError, match="unknown likelihood 'poisson'; choose from: .*gaussian"):
        MixtureConfig(likelihood="poisson")
    with pytest.raises(ValueError, match="num_components must be a positive integer, got 0"):
        MixtureConfig(num_components=0)
    with pytest.raises(ValueError, match="bernoulli likelihood needs binary pixels"):
        Mixture(3).validate_data(torch.full((2, 3), 0.5))
    with pytest.raises(ValueError, match="applies to likelihood 'gaussian'"):
        Mixture(3).scales()


# --------------------------------------------------------------------------- PPCA


def _random_ppca(d_data=6, d=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    m = PPCA(d_data, PPCAConfig(latent_dim=d)).double()
    with torch.no_grad():
        m.loadings.copy_(torch.randn(d_data, d, generator=gen, dtype=F64))
        m.mean.copy_(torch.randn(d_data, generator=gen, dtype=F64))
        m.log_noise_scale.fill_(math.log(0.7))
    return m


def test_ppca_log_marginal_equals_scipy():
    m = _random_ppca()
    x = torch.randn(9, 6, dtype=F64)
    W, mu = m.loadings.detach().numpy(), m.mean.detach().numpy()
    cov = W @ W.T + 0.49 * np.eye(6)
    expected = multivariate_normal(mean=mu, cov=cov).logpdf(x.numpy())
    np.testing.assert_allclose(m.log_marginal(x).numpy(), expected, rtol=1e-10)
    np.testing.assert_allclose(-_exact_loss(m, x).item(), expected.sum(), rtol=1e-10)
    np.testing.assert_allclose(m.covariance().detach().numpy(), cov, rtol=1e-12)
    test = evaluate(m, x)
    assert test["exact"] and test["bound"] and not test["discrete"]
    assert test["log_likelihood"] == pytest.approx(expected.mean(), rel=1e-10)


def test_ppca_posterior_equals_gaussian_conditioning():
    """p(z | x) from conditioning the joint Gaussian of (z, x), written without M = W^T W + s^2 I."""
    m = _random_ppca()
    x = torch.randn(4, 6, dtype=F64)
    W, mu = m.loadings.detach(), m.mean.detach()
    C = W @ W.T + 0.49 * torch.eye(6, dtype=F64)  # Cov(x); Cov(z, x) = W^T
    loc_expected = (W.T @ torch.linalg.solve(C, (x - mu).T)).T
    cov_expected = torch.eye(2, dtype=F64) - W.T @ torch.linalg.solve(C, W)
    q = m.posterior(x)
    assert q.batch_shape == (4,) and q.event_shape == (2,)
    torch.testing.assert_close(q.mean, loc_expected)
    torch.testing.assert_close(q.covariance_matrix, cov_expected.expand(4, 2, 2))
    torch.testing.assert_close(m.encode(x), loc_expected)
    torch.testing.assert_close(m.reconstruct(x), loc_expected @ W.T + mu)


def test_ppca_pca_init_is_the_maximum_likelihood_solution(grey):
    """sklearn's PCA.score is the PPCA log-likelihood at the ML parameters."""
    x = grey.x_train.double()
    m = PPCA(64, PPCAConfig(latent_dim=5)).double()
    m.init_from_data(x)
    sk = PCA(n_components=5).fit(x.numpy())
    # sklearn divides by n - 1 where the ML solution divides by n: a 1e-5 relative effect here.
    assert m.log_marginal(x).mean().item() == pytest.approx(sk.score(x.numpy()), rel=1e-4)
    np.testing.assert_allclose(m.mean.detach().numpy(), sk.mean_, atol=1e-12)
    np.testing.assert_allclose(m.noise_scale.item() ** 2, sk.noise_variance_, rtol=1e-2)
    # Same principal subspace: the projectors onto span(W) agree.
    q = torch.linalg.qr(m.loadings.detach())[0].numpy()
    np.testing.assert_allclose(q @ q.T, sk.components_.T @ sk.components_, atol=1e-8)


def test_ppca_trained_from_random_start_reaches_scikit_learn(grey):
    m = PPCA(64, PPCAConfig(latent_dim=4, init="random"))
    m.init_from_data(grey.x_train)
    x = grey.x_train
    start = m.log_marginal(x).mean().item()
    fit(m, grey, TrainConfig(epochs=30, batch_size=256, lr=1e-2, progress=False, eval_every=0))
    fitted = m.log_marginal(x).mean().item()
    ml = PCA(n_components=4).fit(x.numpy()).score(x.numpy())
    # Measured (seed 0): -7.49 at the start, 6.83 after 30 epochs, sklearn 6.86 nats.
    assert start < 0
    assert fitted == pytest.approx(ml, rel=0.01)
    assert fitted <= ml + 1e-3  # ML is optimal on the training set


def test_ppca_sample_and_errors():
    m = _random_ppca()
    pyro.set_rng_seed(3)
    means = m.sample(5, mean=True)
    pyro.set_rng_seed(3)
    noisy = m.sample(5, mean=False)
    assert means.shape == noisy.shape == (5, 6) and means.dtype == F64
    assert 0 < (noisy - means).abs().max().item() < 10 * 0.7
    with pytest.raises(ValueError, match="latent_dim must be smaller than the data dimension 6, got 6"):
        PPCA(6, PPCAConfig(latent_dim=6))
    with pytest.raises(ValueError, match="unknown init 'svd'; choose from: pca, random"):
        PPCAConfig(init="svd")


# --------------------------------------------------------------------------- CVAE


def _class_means(data):
    return torch.stack([data.x_train[data.y_train == c].mean(0) for c in range(10)])  # (10, D)


def test_cvae_generates_the_requested_classes(digits):
    cvae = CVAE(64, VAEConfig(latent_dim=4, hidden_dims=(32,)), num_classes=10)
    fit(cvae, digits, TrainConfig(epochs=3, batch_size=32, lr=1e-2, progress=False, eval_every=0))
    y = torch.arange(10).repeat_interleave(20)
    samples = cvae.sample(200, y)
    distance = torch.cdist(samples, _class_means(digits))  # (200, 10)
    nearest_is_asked = (distance.argmin(-1) == y).float().mean().item()
    # Measured (seed 0): 100% of the mean images are nearest their own class's mean image.
    assert nearest_is_asked > 0.8
    assert distance[torch.arange(200), y].mean() < 0.5 * distance.mean()
    # An int label generates that class for every image.
    assert (torch.cdist(cvae.sample(20, 3), _class_means(digits)).argmin(-1) == 3).float().mean() > 0.8
    test = evaluate(cvae, digits.x_test, digits.y_test, num_samples=20)
    assert test["conditional"] and test["bound"] and not test["exact"]


def test_cvae_refuses_data_without_labels(digits):
    with pytest.raises(ValueError, match="conditions on class labels but the data set has none"):
        CVAE(64, VAEConfig(), num_classes=None)
    cvae = CVAE(64, VAEConfig(latent_dim=2, hidden_dims=(8,)), num_classes=10)
    x = digits.x_test[:4]
    with pytest.raises(ValueError, match="needs the labels y"):
        cvae.model(x)
    with pytest.raises(ValueError, match="samples given labels"):
        cvae.sample(4)
    with pytest.raises(ValueError, match=r"y must be an int or have shape \(4,\), got shape \(3,\)"):
        cvae.sample(4, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 9\], got values in \[0, 10\]"):
        cvae.validate_data(x, torch.tensor([0, 1, 2, 10]))
    with pytest.raises(ValueError, match="needs labels"):
        cvae.validate_data(x, None)


def test_cvae_with_the_conditional_prior(digits):
    cvae = CVAE(64, VAEConfig(latent_dim=3, hidden_dims=(32,), prior="conditional"), num_classes=10)
    assert cvae.needs_labels and cvae.prior.needs_labels
    result = fit(cvae, digits, TrainConfig(epochs=2, batch_size=64, lr=1e-2, progress=False, eval_every=1))
    assert math.isfinite(result.history[-1]["test_elbo"])
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    assert cvae.sample(6, y).shape == (6, 64)
    assert cvae.prior(y).batch_shape == (6,)


def test_densities_on_binarized_data_are_reported_as_densities(digits):
    """A GMM or PPCA fitted to 0/1 pixels is refused nothing, but its metrics say discrete: false."""
    for m in (Mixture(64, MixtureConfig(num_components=3, likelihood="gaussian")), PPCA(64, PPCAConfig(latent_dim=2))):
        m.init_from_data(digits.x_train)
        fit(m, digits, TrainConfig(epochs=1, progress=False, eval_every=0))
        test = evaluate(m, digits.x_test)
        assert test["discrete"] is False and test["exact"] is True
        assert math.isfinite(test["log_likelihood"])


# --------------------------------------------------------------------------- every model


def _small(name, data_dim=64):
    if name == "cvae":
        return CVAE(data_dim, VAEConfig(latent_dim=3, hidden_dims=(32,)), num_classes=10)
    if name == "mixture":
        return Mixture(data_dim, MixtureConfig(num_components=5))
    return PPCA(data_dim, PPCAConfig(latent_dim=3))


@pytest.mark.parametrize("name", ["cvae", "mixture", "ppca"])
def test_runs_in_float64(name, digits, grey):
    data = grey if name == "ppca" else digits
    m = _small(name)
    m.init_from_data(data.x_train.double(), data.y_train)
    result = fit(m, data, TrainConfig(epochs=1, dtype="float64", progress=False))
    assert all(p.dtype == F64 for p in m.parameters())
    assert math.isfinite(result.history[-1]["test_elbo"])
    y = torch.arange(4) if name == "cvae" else None
    assert m.sample(4, y).dtype == F64
    x = data.x_test[:4].double()
    y = data.y_test[:4] if name == "cvae" else None
    assert m.reconstruct(x, y).dtype == F64


@pytest.mark.parametrize("name", ["cvae", "mixture", "ppca"])
def test_plain_pyro_svi_trains(name, digits, grey):
    data = grey if name == "ppca" else digits
    m = _small(name)
    svi = SVI(m.model, m.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    x = data.x_train[:256] if name == "ppca" else torch.bernoulli(data.x_train[:256])
    y = data.y_train[:256] if name == "cvae" else None
    losses = [svi.step(x, y) for _ in range(20)]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    # pyro.module registered every parameter, so pyro.optim trained all of them.
    stored = set(pyro.get_param_store().keys())
    assert all(any(key.endswith(n) for key in stored) for n, _ in m.named_parameters())


@pytest.mark.parametrize("name,extra", [
    ("cvae", ["--latent-dim", "2", "--hidden-dims", "32"]),
    ("mixture", ["--components", "4"]),
    ("ppca", ["--latent-dim", "3", "--binarize", "none"]),
])
def test_cli_trains_evaluates_and_samples(name, extra, tmp_path, capsys):
    out = tmp_path / name
    argv = ["train", "--model", name, "--epochs", "2", "--out", str(out), "--eval-samples", "10",
            "--no-progress", *extra]
    assert main(argv) == 0
    for written in ("config.json", "metrics.json", "checkpoint.pt", "figures/samples.png"):
        assert (out / written).is_file(), written
    test = json.loads((out / "metrics.json").read_text())["test"]
    assert test["exact"] is (name != "cvae")
    assert test["conditional"] is (name == "cvae")
    assert test["discrete"] is (name != "ppca")
    assert math.isfinite(test["log_likelihood"])
    capsys.readouterr()

    assert main(["evaluate", str(out)]) == 0
    again = json.loads(capsys.readouterr().out)
    if name != "cvae":  # exact: evaluation gives the same number again
        assert again["log_likelihood"] == pytest.approx(test["log_likelihood"], rel=1e-6)
    png = tmp_path / "samples.png"
    label = ["--label", "3"] if name == "cvae" else []
    assert main(["sample", str(out), "--n", "9", "--out", str(png), *label]) == 0
    assert png.is_file()


def test_cli_model_options_are_checked(tmp_path, capsys):
    assert main(["train", "--model", "vae", "--components", "3", "--out", str(tmp_path / "a")]) == 2
    assert "--components does not apply to --model vae" in capsys.readouterr().err
    assert main(["train", "--model", "mixture", "--latent-dim", "3", "--out", str(tmp_path / "b")]) == 2
    assert "--latent-dim does not apply to --model mixture" in capsys.readouterr().err


def test_cli_refuses_cvae_on_unlabelled_data(tmp_path, capsys):
    path = tmp_path / "toy.npz"
    np.savez(path, x=np.random.default_rng(0).random((20, 4)).astype(np.float32))
    argv = ["train", "--model", "cvae", "--dataset", f"npz:{path}", "--binarize", "static",
            "--out", str(tmp_path / "run"), "--no-progress"]
    assert main(argv) == 2
    assert "conditions on class labels but the data set has none" in capsys.readouterr().err
