"""Priors: log-densities against independent computations, plumbing, and training with every objective."""

import math

import pyro.distributions as dist
import pytest
import torch
from torch.nn import functional as F

from pyro_vae.data import DataConfig, load_dataset
from pyro_vae.inference import TrainConfig, fit
from pyro_vae.models import MODELS, VAE, VAEConfig
from pyro_vae.models.priors import (
    FLOW_LAYERS,
    PRIORS,
    ConditionalNormalPrior,
    FlowPrior,
    MixtureOfGaussiansPrior,
    Prior,
    StandardNormalPrior,
    VampPrior,
    build_prior,
)


def _normal_logpdf(z, loc, scale):
    """Sum over the last dimension of the diagonal Normal log-density, written out."""
    return (-0.5 * ((z - loc) / scale) ** 2 - torch.log(scale) - 0.5 * math.log(2 * math.pi)).sum(-1)


# ---------------------------------------------------------------------------------------------
# log-densities against independent computations (float64, fixed parameters)


def test_mog_log_prob_is_the_explicit_mixture():
    prior = MixtureOfGaussiansPrior(latent_dim=2, num_components=3).double()
    with torch.no_grad():
        prior.logits.copy_(torch.tensor([0.0, 1.0, -2.0]))
        prior.locs.copy_(torch.tensor([[0.0, 0.0], [2.0, -1.0], [-3.0, 0.5]]))
        prior.raw_scales.copy_(torch.tensor([[0.0, 1.0], [-1.0, 0.5], [2.0, 0.0]]))
    z = torch.tensor([[0.3, -0.2], [1.5, -1.0], [-2.0, 2.0], [10.0, 10.0]], dtype=torch.float64)

    weights = torch.softmax(torch.tensor([0.0, 1.0, -2.0], dtype=torch.float64), 0)
    scales = F.softplus(prior.raw_scales.detach()) + 1e-5
    per_component = torch.stack([_normal_logpdf(z, prior.locs[k].detach(), scales[k])
                                 for k in range(3)], -1)  # (4, 3)
    expected = torch.logsumexp(per_component + weights.log(), -1)
    torch.testing.assert_close(prior().log_prob(z).detach(), expected)
    assert prior().event_shape == (2,) and prior().batch_shape == ()


def test_vamp_log_prob_averages_the_encoded_pseudo_inputs():
    vae = VAE(6, VAEConfig(latent_dim=2, hidden_dims=(5,), prior="vamp", prior_components=4)).double()
    z = torch.randn(3, 2, dtype=torch.float64)
    u = torch.sigmoid(vae.prior.raw_pseudo_inputs.detach())  # (4, 6)
    loc, scale = vae.encoder(u)  # by hand: the guide's own network
    per_component = torch.stack([_normal_logpdf(z, loc[k], scale[k]) for k in range(4)], -1)
    expected = torch.logsumexp(per_component, -1) - math.log(4)
    torch.testing.assert_close(vae.prior().log_prob(z).detach(), expected.detach())
    assert ((vae.prior.pseudo_inputs > 0) & (vae.prior.pseudo_inputs < 1)).all()


def test_vamp_given_labels_encodes_pseudo_inputs_with_each_label():
    config_cls, cvae_cls = MODELS["cvae"]
    cvae = cvae_cls(6, config_cls(latent_dim=2, hidden_dims=(5,), prior="vamp", prior_components=3),
                    num_classes=4).double()
    y = torch.tensor([2, 0, 3])
    z = torch.randn(3, 2, dtype=torch.float64)
    u = torch.sigmoid(cvae.prior.raw_pseudo_inputs.detach())  # (3, 6)
    expected = []
    for i in range(3):
        label = F.one_hot(y[i].expand(3), 4).double()
        loc, scale = cvae.encoder(torch.cat([u, label], -1))  # q(z | u_k, y_i), (3, 2)
        expected.append(torch.logsumexp(_normal_logpdf(z[i], loc, scale), 0) - math.log(3))
    prior = cvae.prior(y)
    assert prior.batch_shape == (3,)
    torch.testing.assert_close(prior.log_prob(z).detach(), torch.stack(expected).detach())


@pytest.mark.parametrize("layer", sorted(FLOW_LAYERS))
def test_flow_log_prob_is_the_change_of_variables(layer):
    torch.manual_seed(3)
    prior = FlowPrior(latent_dim=3, num_layers=2, layer=layer).double()
    with torch.no_grad():  # move well away from the initialization
        for p in prior.parameters():
            p.add_(0.3 * torch.randn_like(p))
    steps = list(zip(prior.layers, prior.permutations))

    def to_base(z):
        """Inverse of the sampling map u -> z (per step: permute coordinates, invert the layer)."""
        for layer, permutation in reversed(steps):
            z = layer(z)[..., torch.argsort(permutation)]
        return z

    z = torch.tensor([0.4, -1.1, 0.7], dtype=torch.float64)
    u = to_base(z)
    jacobian = torch.autograd.functional.jacobian(to_base, z)  # (3, 3) du/dz
    base = _normal_logpdf(u, torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64))
    expected = base + torch.linalg.slogdet(jacobian)[1]  # = log N(f^-1(z)) - log|det df/du|
    torch.testing.assert_close(prior().log_prob(z).detach(), expected.detach())
    # sampling runs the other direction (the layers' inverses): it undoes to_base
    sample = prior().sample((5,))
    back = to_base(sample).detach()
    for layer, permutation in steps:
        back = layer.inv(back[..., permutation].clone())  # fresh tensors: no cached pair reused
    torch.testing.assert_close(back, sample)


def test_flow_scores_a_reused_tensor_with_the_current_parameters():
    """Pyro's layers cache their last input by identity; the prior must not return stale values."""
    prior = FlowPrior(latent_dim=2, num_layers=2).double()
    z = torch.randn(5, 2, dtype=torch.float64)
    optimizer = torch.optim.SGD(prior.parameters(), lr=0.1)
    for _ in range(2):  # a second backward through a cached graph would raise
        optimizer.zero_grad()
        (-prior().log_prob(z).sum()).backward()
        optimizer.step()
    with torch.no_grad():
        before = prior().log_prob(z)
        for p in prior.parameters():
            p.add_(0.5)
        after = prior().log_prob(z)
        expected = FlowPrior(latent_dim=2, num_layers=2).double()
        expected.load_state_dict(prior.state_dict())
        torch.testing.assert_close(after, expected().log_prob(z.clone()))
        assert not torch.allclose(before, after)


def test_flow_follows_dtype_and_its_base_comes_from_buffers():
    prior = FlowPrior(latent_dim=2, num_layers=2)
    buffers = dict(prior.named_buffers())
    assert {"base_loc", "base_scale", "permutations"} <= set(buffers)
    prior = prior.double()
    d = prior()
    assert d.base_dist.base_dist.loc.dtype == torch.float64
    assert d.sample((4,)).dtype == torch.float64
    assert d.log_prob(torch.zeros(4, 2, dtype=torch.float64)).dtype == torch.float64
    assert len(list(prior.parameters())) > 0 and all(p.dtype == torch.float64 for p in prior.parameters())
    # a one-dimensional code gets an element-wise spline (nothing to be autoregressive over)
    assert FlowPrior(latent_dim=1)().log_prob(torch.zeros(3, 1)).shape == (3,)


def test_conditional_prior_is_a_normal_per_label():
    prior = ConditionalNormalPrior(latent_dim=2, num_classes=3).double()
    y = torch.tensor([0, 2, 2, 1])
    z = torch.randn(4, 2, dtype=torch.float64)
    # at initialization every class is N(0, I)
    torch.testing.assert_close(prior(y).log_prob(z).detach(),
                               _normal_logpdf(z, torch.zeros_like(z), torch.ones_like(z)))
    with torch.no_grad():
        prior.net.weight.copy_(torch.arange(12, dtype=torch.float64).reshape(4, 3) / 10 - 0.5)
        prior.net.bias.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0], dtype=torch.float64))
    w, b = prior.net.weight.detach(), prior.net.bias.detach()
    out = w[:, y].T + b  # the linear map of the one-hot label, column-picked: (4, 4)
    loc, scale = out[:, :2], F.softplus(out[:, 2:]) + 1e-5
    d = prior(y)
    assert d.batch_shape == (4,) and d.event_shape == (2,)
    torch.testing.assert_close(d.log_prob(z).detach(), _normal_logpdf(z, loc, scale))


def test_conditional_prior_refuses_missing_labels():
    prior = ConditionalNormalPrior(latent_dim=2, num_classes=3)
    with pytest.raises(ValueError, match="needs the labels y"):
        prior()
    with pytest.raises(TypeError, match="integer class labels"):
        prior(torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="needs num_classes"):
        ConditionalNormalPrior(latent_dim=2)


def test_build_prior_errors_name_the_choices():
    with pytest.raises(ValueError, match=r"unknown prior 'vamp2'; choose from: conditional, flow, mog"):
        build_prior("vamp2", 2)
    with pytest.raises(ValueError, match="needs the model's encoder"):
        build_prior("vamp", 2, num_components=3)
    with pytest.raises(ValueError, match="num_components must be a positive integer"):
        build_prior("mog", 2, num_components=0)
    with pytest.raises(ValueError, match="unknown layer 'realnvp'; choose from: affine_coupling, spline"):
        FlowPrior(2, layer="realnvp")
    with pytest.raises(ValueError, match="unknown prior"):
        VAEConfig(prior="nope")


@pytest.mark.parametrize("name", ["standard", "mog", "vamp", "flow"])
def test_every_prior_runs_in_float64_inside_the_vae(name):
    vae = VAE(8, VAEConfig(latent_dim=2, hidden_dims=(6,), prior=name, prior_components=3)).double()
    assert vae.prior().event_shape == (2,)
    assert vae.prior().log_prob(torch.zeros(5, 2, dtype=torch.float64)).dtype == torch.float64
    assert vae.sample(3).dtype == torch.float64


def test_vamp_keeps_the_encoder_once_in_the_state_dict_and_round_trips(tmp_path):
    config = VAEConfig(latent_dim=2, hidden_dims=(5,), prior="vamp", prior_components=3)
    torch.manual_seed(0)
    vae = VAE(6, config)
    keys = list(vae.state_dict())
    assert [k for k in keys if k.startswith("prior.")] == ["prior.raw_pseudo_inputs"]
    assert len(list(vae.parameters())) == len({id(p) for p in vae.parameters()})
    torch.save(vae.state_dict(), tmp_path / "vae.pt")
    torch.manual_seed(1)
    other = VAE(6, config)
    z = torch.randn(4, 2)
    assert not torch.allclose(other.prior().log_prob(z), vae.prior().log_prob(z))
    other.load_state_dict(torch.load(tmp_path / "vae.pt", weights_only=True))
    torch.testing.assert_close(other.prior().log_prob(z), vae.prior().log_prob(z))
    assert other.prior.encoder.__self__ is other  # the prior calls its own model's encoder


def test_flow_prior_round_trips_through_the_state_dict():
    config = VAEConfig(latent_dim=3, hidden_dims=(5,), prior="flow")
    torch.manual_seed(0)
    vae = VAE(6, config)
    torch.manual_seed(1)
    other = VAE(6, config)
    other.load_state_dict(vae.state_dict())
    z = torch.randn(4, 3)
    torch.testing.assert_close(other.prior().log_prob(z), vae.prior().log_prob(z))


def test_a_user_prior_registers_by_name(monkeypatch):
    class LaplacePrior(Prior):
        def __init__(self, latent_dim, **context):
            super().__init__(latent_dim)
            self.register_buffer("loc", torch.zeros(latent_dim))

        def forward(self, y=None):
            return dist.Laplace(self.loc, torch.ones_like(self.loc)).to_event(1)

    monkeypatch.setitem(PRIORS, "laplace", LaplacePrior)
    vae = VAE(6, VAEConfig(latent_dim=2, hidden_dims=(5,), prior="laplace")).double()
    assert isinstance(vae.prior, LaplacePrior)
    torch.testing.assert_close(vae.prior().log_prob(torch.zeros(2, dtype=torch.float64)),
                               torch.tensor(2 * math.log(0.5), dtype=torch.float64))


def test_the_standard_prior_is_a_prior():
    assert isinstance(build_prior("standard", 3), StandardNormalPrior)
    assert isinstance(build_prior("vamp", 3, data_dim=4, encoder=lambda x: (x, x)), VampPrior)


# ---------------------------------------------------------------------------------------------
# every prior trains with every model and objective


@pytest.fixture(scope="module")
def small_digits():
    return load_dataset(DataConfig("digits", subset=128))


def _combinations():
    for model in ("vae", "cvae"):
        for prior in ("standard", "mog", "vamp", "flow", "conditional"):
            if prior == "conditional" and model != "cvae":
                continue
            for objective in ("elbo", "meanfield", "iwae"):
                yield model, prior, objective


@pytest.mark.parametrize("model_name, prior, objective", list(_combinations()))
def test_every_prior_trains_with_every_objective(small_digits, model_name, prior, objective):
    config_cls, model_cls = MODELS[model_name]
    model = model_cls(small_digits.data_dim,
                      config_cls(latent_dim=3, hidden_dims=(32,), prior=prior, prior_components=4),
                      num_classes=small_digits.num_classes)
    before = {k: v.clone() for k, v in model.prior.state_dict().items()}
    result = fit(model, small_digits, TrainConfig(
        epochs=2, batch_size=128, lr=1e-2, objective=objective,
        particles=3 if objective == "iwae" else 1, eval_every=0, progress=False))
    assert len(result.history) == 2
    key = "train_objective" if objective == "iwae" else "train_elbo"  # IWAE is not the ELBO
    assert all(math.isfinite(r[key]) for r in result.history)
    # learnable priors were trained: some parameter moved
    params = dict(model.prior.named_parameters())
    if params:
        assert any(not torch.equal(before[k], p.detach()) for k, p in params.items())
    labels = torch.arange(2) if model.needs_labels else None
    assert model.sample(2, labels).shape == (2, small_digits.data_dim)
