"""Objectives: IWAE against the ELBO and by hand, KL weighting and warm-up, conflicting options."""

import json
import math

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO
from torch.nn import functional as F

import pyro_vae.inference.train as train_module
from pyro_vae.cli import main
from pyro_vae.data import DataConfig, load_dataset
from pyro_vae.inference import TrainConfig, fit
from pyro_vae.inference.evaluate import log_importance_weights
from pyro_vae.inference.objectives import IWAEObjective, LatentScaleMessenger, build_objective
from pyro_vae.models import VAE, VAEConfig
from pyro_vae.runs import RunConfig
from tests.conftest import binary_batch


def _normal_logpdf(z, loc, scale):
    return (-0.5 * ((z - loc) / scale) ** 2 - torch.log(scale) - 0.5 * math.log(2 * math.pi)).sum(-1)


def _tiny_vae(prior="standard", **config):
    config = VAEConfig(latent_dim=2, hidden_dims=(5,), prior=prior, prior_components=3, **config)
    return VAE(6, config).double()


def _loss(objective, vae, x, seed=3):
    pyro.set_rng_seed(seed)
    return objective.loss(vae, x)


@pytest.fixture(scope="module")
def small_digits():
    return load_dataset(DataConfig("digits", subset=128))


# ---------------------------------------------------------------------------------------------
# IWAE


@pytest.mark.parametrize("prior", ["standard", "mog"])
def test_iwae_with_one_sample_is_the_elbo_on_the_same_draw(prior):
    vae = _tiny_vae(prior)
    x = binary_batch(5, 6, dtype=torch.float64)
    iwae = _loss(build_objective("iwae", particles=1), vae, x)
    pyro.set_rng_seed(3)
    elbo = Trace_ELBO().differentiable_loss(vae.model, vae.guide, x)
    torch.testing.assert_close(iwae, elbo)
    pyro.set_rng_seed(3)
    torch.testing.assert_close(iwae, -log_importance_weights(vae, x, None, 1).sum())


def test_beta_iwae_by_hand():
    """K=4, weight 0.3: logsumexp_k(log p(x|z) + 0.3 (log p(z) - log q(z|x))) - log K, written out."""
    vae = _tiny_vae()
    x = binary_batch(3, 6, dtype=torch.float64)
    loss = _loss(IWAEObjective(num_samples=4, beta=0.3), vae, x, seed=5)
    pyro.set_rng_seed(5)
    loc, scale = vae.encoder(x)
    z = torch.distributions.Normal(loc, scale).rsample((4,))  # (4, 3, 2): the guide's draw
    logits = vae.decoder(z)
    log_lik = (x * logits - F.softplus(logits)).sum(-1)  # Bernoulli, (4, 3)
    log_w = log_lik + 0.3 * (_normal_logpdf(z, torch.zeros_like(z), torch.ones_like(z))
                             - _normal_logpdf(z, loc, scale))
    expected = -(torch.logsumexp(log_w, 0) - math.log(4)).sum()
    torch.testing.assert_close(loss, expected)


def test_bounds_are_ordered_elbo_iwae5_iwae50():
    """On a briefly trained model, E[ELBO] <= E[IWAE_5] <= E[IWAE_50] (gaps of many std. errors)."""
    data = load_dataset(DataConfig("digits", subset=512))
    vae = VAE(data.data_dim, VAEConfig(latent_dim=4, hidden_dims=(64,)))
    fit(vae, data, TrainConfig(epochs=5, lr=3e-3, eval_every=0, progress=False))
    x = data.x_test  # (360, 64), binarized once
    repeats = 8
    stats = {}
    with torch.no_grad():
        for name, objective in (("elbo", build_objective("elbo")),
                                ("iwae5", build_objective("iwae", particles=5)),
                                ("iwae50", build_objective("iwae", particles=50))):
            values = torch.tensor([-objective.loss(vae, x).item() / x.shape[0] for _ in range(repeats)])
            stats[name] = (values.mean().item(), values.std().item() / math.sqrt(repeats))
    # Measured (seed 0): ELBO -32.37, IWAE_5 -31.76, IWAE_50 -31.62 nats; std. errors < 0.02.
    for low, high in (("elbo", "iwae5"), ("iwae5", "iwae50")):
        gap = stats[high][0] - stats[low][0]
        stderr = math.hypot(stats[high][1], stats[low][1])
        assert gap > 3 * stderr, (low, high, stats)


def test_iwae_refuses_a_point_mass_guide():
    vae = _tiny_vae(guide="delta")
    with pytest.raises(ValueError, match="point-mass guide"):
        IWAEObjective(num_samples=3).loss(vae, binary_batch(2, 6, dtype=torch.float64))
    with pytest.raises(ValueError, match="--guide delta cannot be combined with --objective iwae"):
        RunConfig(model="vae", model_config={"guide": "delta"}, train=TrainConfig(objective="iwae"))


# ---------------------------------------------------------------------------------------------
# KL weighting


def test_latent_scale_messenger_scales_latent_sites_only():
    vae = _tiny_vae()
    x = binary_batch(2, 6, dtype=torch.float64)
    model_trace = pyro.poutine.trace(LatentScaleMessenger(0.0)(vae.model)).get_trace(x)
    guide_trace = pyro.poutine.trace(LatentScaleMessenger(0.25)(vae.guide)).get_trace(x)
    assert model_trace.nodes["z"]["scale"] == 0.0 and model_trace.nodes["x"]["scale"] == 1.0
    assert guide_trace.nodes["z"]["scale"] == 0.25


@pytest.mark.parametrize("name", ["elbo", "meanfield", "iwae"])
def test_kl_weight_enters_linearly(name):
    """With one sample, loss(w) = -E log p(x|z) + w KL on the same draw: linear in w."""
    vae = _tiny_vae()
    x = binary_batch(4, 6, dtype=torch.float64)
    losses = [_loss(build_objective(name, beta=b), vae, x) for b in (0.0, 1.0, 2.0)]
    torch.testing.assert_close(losses[2], 2 * losses[1] - losses[0])
    # beta = 0 leaves minus the expected log-likelihood alone, whatever the objective
    pyro.set_rng_seed(3)
    loc, scale = vae.encoder(x)
    logits = vae.decoder(torch.distributions.Normal(loc, scale).rsample())
    torch.testing.assert_close(losses[0], -(x * logits - F.softplus(logits)).sum())


@pytest.mark.parametrize("name", ["elbo", "meanfield", "iwae"])
def test_beta_zero_removes_the_kl_gradient(name):
    vae = _tiny_vae("mog")
    x = binary_batch(4, 6, dtype=torch.float64)
    _loss(build_objective(name, particles=2, beta=0.0), vae, x).backward()
    for p in vae.prior.parameters():
        assert p.grad is None or torch.count_nonzero(p.grad) == 0
    assert torch.count_nonzero(vae.decoder[0].weight.grad) > 0
    vae.zero_grad()
    _loss(build_objective(name, particles=2, beta=0.5), vae, x).backward()
    assert torch.count_nonzero(vae.prior.locs.grad) > 0


def test_warmup_schedule():
    objective = build_objective("elbo", beta=0.5, kl_warmup=4)
    weights = []
    for epoch in range(1, 7):
        objective.set_epoch(epoch)
        weights.append(objective.kl_weight)
    assert weights == pytest.approx([0.125, 0.25, 0.375, 0.5, 0.5, 0.5])
    plain = build_objective("iwae", particles=2, beta=2.0)
    plain.set_epoch(1)
    assert plain.kl_weight == 2.0
    # the loss uses the scheduled weight: at epoch 2, 0.25 = a quarter of the way from 0 to 1
    vae = _tiny_vae()
    x = binary_batch(4, 6, dtype=torch.float64)
    objective.set_epoch(2)
    l0, l1 = (_loss(build_objective("elbo", beta=b), vae, x) for b in (0.0, 1.0))
    torch.testing.assert_close(_loss(objective, vae, x), l0 + 0.25 * (l1 - l0))


def test_fit_drives_the_warmup_and_passes_beta(monkeypatch, small_digits):
    seen = []
    real_build = train_module.build_objective

    def recording_build(*args, **kwargs):
        objective = real_build(*args, **kwargs)
        inner = objective.loss_and_parts

        def loss_and_parts(model, x, y=None):
            seen.append((objective.epoch, objective.kl_weight))
            return inner(model, x, y)

        objective.loss_and_parts = loss_and_parts
        return objective

    monkeypatch.setattr(train_module, "build_objective", recording_build)
    vae = VAE(small_digits.data_dim, VAEConfig(latent_dim=2, hidden_dims=(16,)))
    fit(vae, small_digits, TrainConfig(epochs=3, batch_size=128, beta=0.5, kl_warmup=2,
                                       eval_every=0, progress=False))
    assert seen == [(1, 0.25), (2, 0.5), (3, 0.5)]


def test_training_with_beta_zero_leaves_the_prior_untouched(small_digits):
    vae = VAE(small_digits.data_dim, VAEConfig(latent_dim=2, hidden_dims=(16,), prior="mog",
                                               prior_components=3))
    prior_before = {k: v.clone() for k, v in vae.prior.state_dict().items()}
    encoder_before = vae.encoder.net[0].weight.detach().clone()
    fit(vae, small_digits, TrainConfig(epochs=2, batch_size=64, beta=0.0, eval_every=0, progress=False))
    for k, v in vae.prior.state_dict().items():
        assert torch.equal(v, prior_before[k]), k
    assert not torch.equal(vae.encoder.net[0].weight, encoder_before)


# ---------------------------------------------------------------------------------------------
# options: validation, configs and the CLI


def test_bad_options_are_refused_by_name():
    with pytest.raises(ValueError, match="beta must be a finite non-negative number, got -1.0"):
        build_objective("elbo", beta=-1.0)
    with pytest.raises(TypeError, match="beta must be a non-negative number, got '1'"):
        build_objective("elbo", beta="1")
    with pytest.raises(TypeError, match="kl_warmup must be a non-negative integer"):
        TrainConfig(kl_warmup=1.5)
    with pytest.raises(ValueError, match="beta must be a finite"):
        TrainConfig(beta=float("nan"))
    with pytest.raises(ValueError, match="unknown objective 'vi'; choose from: elbo, iwae, meanfield"):
        build_objective("vi")
    with pytest.raises(ValueError, match="particles must be a positive integer"):
        build_objective("iwae", particles=0)
    assert TrainConfig(beta=2).beta == 2.0 and isinstance(TrainConfig(beta=2).beta, float)


def test_cli_weighting_flags(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--out", str(run), "--subset", "64", "--epochs", "1", "--latent-dim", "2",
            "--hidden-dims", "8", "--eval-samples", "2", "--eval-every", "0", "--no-progress"]
    assert main([*args, "--objective", "iwae", "--particles", "3", "--beta", "0.5",
                 "--kl-warmup", "3"]) == 0
    train = json.loads((run / "config.json").read_text())["train"]
    assert (train["objective"], train["particles"], train["beta"], train["kl_warmup"]) == ("iwae", 3, 0.5, 3)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--epochs", "2", "--beta", "1"]) == 2
    assert "drop --beta" in capsys.readouterr().err
    assert main([*args, "--overwrite", "--beta", "-1"]) == 2
    assert "beta must be a finite non-negative number" in capsys.readouterr().err
    assert main([*args, "--overwrite", "--guide", "delta", "--objective", "iwae"]) == 2
    assert "--guide delta cannot be combined with --objective iwae" in capsys.readouterr().err


@pytest.mark.parametrize("particles", [1, 3])
def test_elbo_objective_is_exactly_trace_elbo(particles):
    """The `elbo` objective computes Trace_ELBO's loss from the importance weights: same draw, same number."""
    from pyro.infer import Trace_ELBO

    vae = VAE(6, VAEConfig(latent_dim=2, hidden_dims=(5,))).double()
    x = torch.bernoulli(torch.full((4, 6), 0.4, dtype=torch.float64))
    objective = build_objective("elbo", particles=particles)
    pyro.set_rng_seed(2)
    ours = objective.loss(vae, x)
    pyro.set_rng_seed(2)
    pyros = Trace_ELBO(num_particles=particles, vectorize_particles=particles > 1,
                       max_plate_nesting=1).differentiable_loss(vae.model, vae.guide, x)
    torch.testing.assert_close(ours, pyros)
    grads = torch.autograd.grad(ours, list(vae.parameters()))
    expected = torch.autograd.grad(pyros, list(vae.parameters()))
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want)


def test_elbo_objective_sends_non_reparameterized_guides_to_trace_elbo():
    import pyro.distributions as dist
    from pyro.infer import Trace_ELBO

    class DiscreteLatent(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.logit = torch.nn.Parameter(torch.tensor(0.3))

        def model(self, x, y=None):
            with pyro.plate("data", x.shape[0]):
                k = pyro.sample("k", dist.Bernoulli(logits=torch.zeros(())))
                pyro.sample("x", dist.Normal(k, 1.0), obs=x)

        def guide(self, x, y=None):
            with pyro.plate("data", x.shape[0]):
                pyro.sample("k", dist.Bernoulli(logits=self.logit))

    pair, x = DiscreteLatent(), torch.randn(5)
    pyro.set_rng_seed(4)
    ours = build_objective("elbo").loss(pair, x)
    pyro.set_rng_seed(4)
    pyros = Trace_ELBO().differentiable_loss(pair.model, pair.guide, x)
    torch.testing.assert_close(ours, pyros)
    # The values of -sum log w and Trace_ELBO's surrogate agree anyway; the gradient shows that
    # the score-function term is there, i.e. that the loss really went through Trace_ELBO.
    (pyros_grad,) = torch.autograd.grad(pyros, pair.logit)
    torch.testing.assert_close(torch.autograd.grad(ours, pair.logit)[0], pyros_grad)
    pyro.set_rng_seed(4)
    without_score_term = -log_importance_weights(pair, x).sum()
    assert not torch.allclose(torch.autograd.grad(without_score_term, pair.logit)[0], pyros_grad)
