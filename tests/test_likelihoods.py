"""Likelihoods: log densities against hand-written formulas, means, shapes, dtypes, support checks."""

import math

import numpy as np
import pytest
import torch

from pyro_vae.data import DataConfig, load_dataset
from pyro_vae.inference import TrainConfig, fit
from pyro_vae.models import VAE, VAEConfig
from pyro_vae.models.likelihoods import (
    INIT_SCALE,
    LIKELIHOODS,
    MIN_SCALE,
    GaussianLikelihood,
    StableContinuousBernoulli,
    build_likelihood,
)

ETAS = [-50.0, -20.0, -3.0, -0.3, -0.05, -0.0499, -1e-3, 1e-6, 0.02, 0.05, 0.7, 4.0, 16.0, 30.0]


# --------------------------------------------------------------------------- references in numpy


def cb_log_prob_lambda_form(x, eta):
    """Loaiza-Ganem & Cunningham's density: log C(l) + x log l + (1 - x) log(1 - l), l = sigmoid(eta),
    C(l) = 2 atanh(1 - 2 l) / (1 - 2 l) (float64; accurate for moderate |eta| away from 0)."""
    lam = 1.0 / (1.0 + np.exp(-eta))
    log_c = np.log(2.0 * np.arctanh(1.0 - 2.0 * lam) / (1.0 - 2.0 * lam))
    return log_c + x * np.log(lam) + (1.0 - x) * np.log1p(-lam)


def cb_log_prob_natural_form(x, eta):
    """The same density as an exponential family: eta x - log((e^eta - 1) / eta)."""
    return eta * x - np.log(np.expm1(eta) / eta)


def gaussian_log_pdf(x, loc, scale):
    return np.sum(-0.5 * ((x - loc) / scale) ** 2 - np.log(scale) - 0.5 * np.log(2 * np.pi), axis=-1)


def softplus(v):
    return np.logaddexp(0.0, v)


# --------------------------------------------------------------------------- continuous Bernoulli


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 2e-5)])
def test_continuous_bernoulli_log_prob_matches_both_closed_forms(dtype, tol):
    rng = np.random.default_rng(0)
    eta = np.array(ETAS)
    x = rng.uniform(size=(5, eta.size))
    lik = build_likelihood("continuous-bernoulli", eta.size).to(dtype)
    got = lik(torch.tensor(eta, dtype=dtype)).base_dist.log_prob(torch.tensor(x, dtype=dtype))
    assert got.dtype == dtype
    natural = cb_log_prob_natural_form(x, eta)
    np.testing.assert_allclose(got.double().numpy(), natural, rtol=tol, atol=tol)
    moderate = np.abs(eta) < 15  # atanh(1 - 2 sigmoid(eta)) loses precision beyond that
    reference = cb_log_prob_lambda_form(x[:, moderate], eta[moderate])
    np.testing.assert_allclose(got.double().numpy()[:, moderate], reference, rtol=1e-6, atol=1e-6)
    # The event sums the pixels.
    total = lik(torch.tensor(eta, dtype=dtype)).log_prob(torch.tensor(x, dtype=dtype))
    np.testing.assert_allclose(total.double().numpy(), natural.sum(-1), rtol=tol, atol=tol * eta.size)


def test_continuous_bernoulli_at_logit_zero_is_uniform_and_smooth():
    """Logit 0 is the uniform density (log p = 0); the series branch joins the closed form."""
    d = StableContinuousBernoulli(torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(d.log_prob(torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)),
                               torch.zeros(3, dtype=torch.float64))
    # Just below and just above the switch to the series: equal to float64 precision.
    below = StableContinuousBernoulli(torch.tensor([0.05 - 1e-12], dtype=torch.float64))
    above = StableContinuousBernoulli(torch.tensor([0.05], dtype=torch.float64))
    assert abs(below.log_normalizer().item() - above.log_normalizer().item()) < 1e-12
    assert abs(below.mean.item() - above.mean.item()) < 1e-12
    assert abs(below.variance.item() - above.variance.item()) < 1e-11


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_continuous_bernoulli_gradient_is_finite_and_exact_everywhere(dtype):
    """d log p / d eta = x - E[x] (exponential family), including at 0 and at large |eta|."""
    eta = torch.tensor([0.0, 1e-7, -1e-7, 0.0499, 0.05, -0.05, -30.0, 30.0, -100.0, 100.0], dtype=dtype,
                       requires_grad=True)
    x = torch.full_like(eta, 0.25)
    (grad,) = torch.autograd.grad(StableContinuousBernoulli(eta).log_prob(x).sum(), eta)
    assert torch.isfinite(grad).all()
    mean = StableContinuousBernoulli(eta.detach()).mean
    torch.testing.assert_close(grad, x - mean, rtol=1e-5, atol=1e-5)


def test_continuous_bernoulli_normalizes_and_its_mean_is_the_integral():
    """Numerical integration on [0, 1]: the density integrates to 1 and its first moment is `mean`."""
    eta = torch.tensor([-20.0, -1.0, 1e-3, 0.0, 3.0, 40.0], dtype=torch.float64)
    grid = torch.linspace(0, 1, 200001, dtype=torch.float64)[:, None]  # (G, 1)
    d = StableContinuousBernoulli(eta)
    density = d.log_prob(grid).exp()  # (G, 6)
    mass = torch.trapezoid(density, grid[:, 0], dim=0)
    first = torch.trapezoid(grid * density, grid[:, 0], dim=0)
    second = torch.trapezoid(grid ** 2 * density, grid[:, 0], dim=0)
    torch.testing.assert_close(mass, torch.ones_like(eta), rtol=0, atol=1e-6)
    torch.testing.assert_close(first, d.mean, rtol=0, atol=1e-6)
    torch.testing.assert_close(second - first ** 2, d.variance, rtol=0, atol=1e-6)


def test_continuous_bernoulli_mean_is_the_cb_mean_not_the_sigmoid():
    lik = build_likelihood("continuous-bernoulli", 4).double()
    eta = torch.tensor([-3.0, -0.5, 0.5, 2.0], dtype=torch.float64)
    lam = torch.sigmoid(eta)
    expected = lam / (2 * lam - 1) + 1 / (2 * torch.atanh(1 - 2 * lam))  # the paper's formula
    torch.testing.assert_close(lik.mean(eta), expected)
    assert (lik.mean(eta) - lam).abs().min() > 0.05
    assert lik.mean(torch.zeros(4)).tolist() == [0.5] * 4


def test_continuous_bernoulli_beats_torch_at_large_logits():
    """torch's version clamps its parameter and saturates near logit 16 in float32; ours keeps
    log p(1 | eta) ~ log(eta) (the exact value at eta = 30 is 3.4012)."""
    d = StableContinuousBernoulli(torch.tensor([30.0]))
    assert abs(d.log_prob(torch.ones(1)).item() - 3.4011974) < 1e-5


def test_continuous_bernoulli_samples_lie_in_unit_interval_with_the_right_mean():
    torch.manual_seed(0)
    eta = torch.tensor([-60.0, -2.0, 0.0, 1e-3, 0.5, 5.0, 60.0])
    d = StableContinuousBernoulli(eta)
    s = d.sample((20000,))
    assert s.shape == (20000, 7) and (s >= 0).all() and (s <= 1).all()
    stderr = (d.variance / 20000).sqrt()
    assert ((s.mean(0) - d.mean).abs() < 5 * stderr + 1e-6).all()


# --------------------------------------------------------------------------- Gaussians


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gaussian_with_fixed_scale_matches_the_normal_log_pdf(dtype):
    rng = np.random.default_rng(1)
    loc, x = rng.normal(size=(2, 3, 5))
    lik = build_likelihood("gaussian", 5, obs_scale=0.3).to(dtype)
    assert list(lik.parameters()) == []
    got = lik(torch.tensor(loc, dtype=dtype)).log_prob(torch.tensor(x, dtype=dtype))
    assert got.dtype == dtype and got.shape == (3,)
    np.testing.assert_allclose(got.double().numpy(), gaussian_log_pdf(x, loc, 0.3),
                               rtol=1e-6 if dtype == torch.float32 else 1e-12)
    torch.testing.assert_close(lik.mean(torch.tensor(loc, dtype=dtype)), torch.tensor(loc, dtype=dtype))


def test_gaussian_learned_scale_is_a_parameter_following_dtype_and_receiving_gradients():
    lik = build_likelihood("gaussian", 4, obs_scale=None).double()
    (param,) = list(lik.parameters())
    assert param.dtype == torch.float64 and param.shape == (4,)
    loc = torch.zeros(2, 4, dtype=torch.float64)
    x = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.0, 0.5, 1.0, 0.2]], dtype=torch.float64)
    dist = lik(loc)
    scale = softplus(param.detach().numpy()) + MIN_SCALE  # (4,)
    np.testing.assert_allclose(scale, INIT_SCALE, rtol=1e-6)  # initialized in float32
    np.testing.assert_allclose(dist.base_dist.scale.detach().numpy(), np.broadcast_to(scale, (2, 4)), rtol=1e-14)
    np.testing.assert_allclose(dist.log_prob(x).detach().numpy(), gaussian_log_pdf(x.numpy(), 0.0, scale), rtol=1e-13)
    dist.log_prob(x).sum().backward()
    assert param.grad is not None and torch.isfinite(param.grad).all() and (param.grad != 0).all()
    with torch.no_grad():
        param.fill_(-50.0)  # the scale cannot fall below its floor
    assert torch.allclose(lik(loc).base_dist.scale, torch.tensor(MIN_SCALE, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_heteroscedastic_gaussian_reads_loc_and_scale_from_the_decoder(dtype):
    rng = np.random.default_rng(2)
    out = rng.normal(size=(3, 8))  # (batch, 2 D) with D = 4: [loc | raw scale]
    x = rng.normal(size=(3, 4))
    lik = build_likelihood("gaussian-heteroscedastic", 4).to(dtype)
    assert lik.params_per_pixel == 2 and not lik.discrete
    c = np.log(np.expm1(INIT_SCALE - MIN_SCALE))  # a zero output means INIT_SCALE
    scale = softplus(out[:, 4:] + c) + MIN_SCALE
    got = lik(torch.tensor(out, dtype=dtype)).log_prob(torch.tensor(x, dtype=dtype))
    assert got.dtype == dtype
    np.testing.assert_allclose(got.double().numpy(), gaussian_log_pdf(x, out[:, :4], scale),
                               rtol=1e-5 if dtype == torch.float32 else 1e-12)
    torch.testing.assert_close(lik.mean(torch.tensor(out, dtype=dtype)), torch.tensor(out[:, :4], dtype=dtype))
    zero = lik(torch.zeros(1, 8, dtype=dtype)).base_dist.scale
    torch.testing.assert_close(zero, torch.full((1, 4), INIT_SCALE, dtype=dtype))


# --------------------------------------------------------------------------- shapes (mixture, IWAE)


@pytest.mark.parametrize("name", sorted(LIKELIHOODS))
def test_any_batch_rank_works(name):
    """(K, D*p) outputs give batch (K,) (mixture components); (K, B, D*p) give (K, B) (IWAE);
    a (B, 1, D) batch scored against K components broadcasts to (B, K)."""
    d = 5
    lik = build_likelihood(name, d)
    p = lik.params_per_pixel
    x = torch.bernoulli(torch.full((3, d), 0.5))
    comp = lik(torch.randn(4, d * p))
    assert comp.batch_shape == (4,) and comp.event_shape == (d,)
    assert comp.log_prob(x[:, None, :]).shape == (3, 4)
    assert lik(torch.randn(6, 3, d * p)).log_prob(x).shape == (6, 3)
    assert lik.mean(torch.randn(6, 3, d * p)).shape == (6, 3, d)
    assert lik(torch.randn(d * p)).batch_shape == ()


# --------------------------------------------------------------------------- support and options


def test_validate_refuses_data_outside_each_support():
    grey = torch.tensor([[0.0, 0.5, 1.0]])
    build_likelihood("continuous-bernoulli", 3).validate(grey)
    build_likelihood("gaussian", 3).validate(torch.tensor([[-3.0, 0.5, 7.0]]))
    build_likelihood("gaussian-heteroscedastic", 3).validate(torch.tensor([[-3.0, 0.5, 7.0]]))
    with pytest.raises(ValueError, match=r"train: the bernoulli likelihood needs binary pixels"):
        build_likelihood("bernoulli", 3).validate(grey, "train")
    with pytest.raises(ValueError, match=r"continuous-bernoulli likelihood needs pixels in \[0, 1\], "
                                         r"got values in \[-0.1, 1\]"):
        build_likelihood("continuous-bernoulli", 3).validate(torch.tensor([[-0.1, 0.5, 1.0]]))
    with pytest.raises(ValueError, match=r"needs pixels in \[0, 1\], got values in \[0, 1.5\]"):
        build_likelihood("continuous-bernoulli", 3).validate(torch.tensor([[0.0, 1.5, 1.0]]))
    with pytest.raises(ValueError, match="continuous-bernoulli likelihood needs finite values"):
        build_likelihood("continuous-bernoulli", 3).validate(torch.tensor([[0.0, float("nan"), 1.0]]))
    for name in ("gaussian", "gaussian-heteroscedastic"):
        for bad in (float("nan"), float("inf")):
            with pytest.raises(ValueError, match=f"x: the {name} likelihood needs finite values"):
                build_likelihood(name, 3).validate(torch.tensor([[0.0, bad, 1.0]]))


@pytest.mark.parametrize("name", ["bernoulli", "continuous-bernoulli", "gaussian-heteroscedastic"])
def test_obs_scale_is_refused_where_it_does_not_apply(name):
    build_likelihood(name, 3, obs_scale=None)  # None means "not given"
    with pytest.raises(ValueError, match=rf"obs_scale=0.1 does not apply to the {name} likelihood "
                                         r"\(it applies to: gaussian\)"):
        build_likelihood(name, 3, obs_scale=0.1)
    with pytest.raises(ValueError, match=rf"obs_scale=0.1 does not apply to the {name} likelihood"):
        VAEConfig(likelihood=name, obs_scale=0.1, hidden_dims=(8,), latent_dim=2)  # at config time
    VAEConfig(likelihood="gaussian", obs_scale=0.1)  # where it applies: accepted


def test_bad_names_and_scales_are_refused():
    with pytest.raises(ValueError, match=r"unknown likelihood 'gauss'; choose from: bernoulli, "
                                         r"continuous-bernoulli, gaussian, gaussian-heteroscedastic"):
        build_likelihood("gauss", 3)
    with pytest.raises(ValueError, match="obs_scale must be a finite positive number, got -1"):
        GaussianLikelihood(3, obs_scale=-1.0)
    with pytest.raises(TypeError, match="obs_scale must be a positive number"):
        GaussianLikelihood(3, obs_scale="0.1")
    with pytest.raises(ValueError, match="data_dim must be a positive integer, got 0"):
        build_likelihood("bernoulli", 0)


# --------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def grey_digits():
    return load_dataset(DataConfig(name="digits", binarize="none"))


@pytest.mark.parametrize("name,obs_scale", [
    ("continuous-bernoulli", None), ("gaussian", None), ("gaussian", 0.2), ("gaussian-heteroscedastic", None),
])
def test_vae_trains_on_grey_levels(grey_digits, name, obs_scale):
    config = VAEConfig(likelihood=name, obs_scale=obs_scale, hidden_dims=(32,), latent_dim=4)
    vae = VAE(grey_digits.data_dim, config)
    result = fit(vae, grey_digits, TrainConfig(epochs=2, progress=False, lr=3e-3))
    first, last = result.history
    assert all(math.isfinite(v) for rec in result.history for v in rec.values())
    assert last["train_elbo"] > first["train_elbo"]
    assert last["test_elbo"] > first["test_elbo"]
    samples = vae.sample(5)
    assert samples.shape == (5, 64) and torch.isfinite(samples).all()


def test_continuous_likelihoods_refuse_binary_only_setups_and_bernoulli_refuses_grey(grey_digits):
    vae = VAE(grey_digits.data_dim, VAEConfig(hidden_dims=(8,), latent_dim=2))  # bernoulli
    with pytest.raises(ValueError, match="bernoulli likelihood needs binary pixels"):
        fit(vae, grey_digits, TrainConfig(epochs=1, progress=False))


def test_continuous_bernoulli_expands_like_any_pyro_distribution():
    d = StableContinuousBernoulli(torch.tensor([0.0, 2.0])).expand((3, 2))
    assert d.batch_shape == (3, 2)
    torch.testing.assert_close(d.log_prob(torch.full((3, 2), 0.5))[:, 1],
                               torch.full((3,), 1.0 - math.log(math.expm1(2.0) / 2.0)))


def test_cli_refuses_obs_scale_with_a_bernoulli_likelihood(tmp_path, capsys):
    from pyro_vae.cli import main

    code = main(["train", "--likelihood", "bernoulli", "--obs-scale", "0.1", "--epochs", "1",
                 "--out", str(tmp_path / "run"), "--no-progress", "--device", "cpu"])
    assert code == 2
    expected = "obs_scale=0.1 does not apply to the bernoulli likelihood (it applies to: gaussian)"
    assert expected in capsys.readouterr().err
