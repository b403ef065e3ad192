"""The mixture priors' density (matrix-product form) against torch's MixtureSameFamily."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.distributions import constraints

from pyro_vae.inference.evaluate import log_importance_weights
from pyro_vae.models import MODELS, VAE, VAEConfig, mixture_density
from pyro_vae.models.mixture_density import DiagonalNormalMixture, diagonal_normal_mixture
from pyro_vae.models.priors import MixtureOfGaussiansPrior, build_prior

F64 = torch.float64


def _parameters(batch=(), components=30, d=6, offset=0.0, seed=0, dtype=F64):
    """Realistic mixture parameters: means within a few units, scales 0.05 .. 2 (log-uniform)."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(*batch, components, generator=gen, dtype=dtype)
    locs = torch.rand(*batch, components, d, generator=gen, dtype=dtype) * 6 - 3 + offset
    log_scales = torch.rand(*batch, components, d, generator=gen, dtype=dtype)
    scales = torch.exp(math.log(0.05) + log_scales * (math.log(2.0) - math.log(0.05)))
    return logits, locs, scales


def _codes_near(locs, scales, shape, seed=1):
    """Codes drawn from randomly picked components (where the expansion cancels most)."""
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randint(locs.shape[-2], shape, generator=gen)
    return locs[pick] + scales[pick] * torch.randn(*shape, locs.shape[-1], generator=gen,
                                                   dtype=locs.dtype)


def _reference(logits, locs, scales):
    return dist.MixtureSameFamily(dist.Categorical(logits=logits), dist.Normal(locs, scales).to_event(1))


def _close(actual, expected, rel=1e-10):
    """``|actual - expected| <= rel * max(|expected|, 1)``: relative, in nats for log-densities."""
    torch.testing.assert_close(actual, expected, rtol=rel, atol=rel)


# ---------------------------------------------------------------------------------------------
# values and gradients in float64


@pytest.mark.parametrize("offset", [0.0, 3.0])
@pytest.mark.parametrize("codes", ["standard", "near"])
def test_log_prob_equals_mixture_same_family_with_sample_dims(offset, codes):
    logits, locs, scales = _parameters(offset=offset)
    if codes == "standard":
        z = torch.randn(7, 5, 6, generator=torch.Generator().manual_seed(2), dtype=F64)  # (K, batch, d)
    else:
        z = _codes_near(locs, scales, (7, 5))
    ours = DiagonalNormalMixture(logits, locs, scales)
    assert ours.batch_shape == () and ours.event_shape == (6,)
    expected = _reference(logits, locs, scales).log_prob(z)
    assert expected.shape == (7, 5)
    _close(ours.log_prob(z), expected)
    with torch.no_grad():  # the in-place log-sum-exp
        _close(ours.log_prob(z), expected)
    # as pyro.plate expands it (importance samples x batch), and codes without sample dims
    expanded = ours.expand((7, 5))
    assert expanded.batch_shape == (7, 5) and ours.expand(()) is ours
    _close(expanded.log_prob(z), expected)
    _close(expanded.log_prob(z[0]), expected[0].expand(7, 5))


def test_gradients_equal_mixture_same_family():
    logits, locs, scales = _parameters(components=20, d=5, offset=1.0)
    z = torch.cat([_codes_near(locs, scales, (4, 3)),
                   torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(3), dtype=F64)])
    weights = torch.rand(6, 3, generator=torch.Generator().manual_seed(4), dtype=F64)

    def grads(build):
        params = [t.clone().requires_grad_() for t in (logits, locs, scales, z)]
        (build(*params[:3]).log_prob(params[3]) * weights).sum().backward()
        return [p.grad for p in params]

    for ours, expected, name in zip(grads(DiagonalNormalMixture), grads(_reference),
                                    ("logits", "locs", "scales", "z")):
        scale = expected.abs().max().item()
        torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-10 * scale, msg=name)


def test_batched_parameters_as_the_conditional_vamp_prior_builds_them():
    logits, locs, scales = _parameters(batch=(4,), components=9, d=3, offset=-2.0)
    z = _codes_near(locs[0], scales[0], (6, 4))  # (K, batch, d), near the first example's components
    params = [t.clone().requires_grad_() for t in (logits, locs, scales)]
    ours = DiagonalNormalMixture(*params)
    assert ours.batch_shape == (4,)
    value = ours.log_prob(z)
    expected = _reference(logits, locs, scales).log_prob(z)
    _close(value, expected)
    value.sum().backward()
    reference = [t.clone().requires_grad_() for t in (logits, locs, scales)]
    _reference(*reference).log_prob(z).sum().backward()
    for a, b in zip(params, reference):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-10 * b.grad.abs().max().item())
    _close(ours.expand((6, 4)).log_prob(z), expected)
    with pytest.raises(ValueError, match=r"cannot expand batch shape \(4,\) to \(6, 3\)"):
        ours.expand((6, 3))


def test_blocks_of_codes_give_the_same_values_and_gradients(monkeypatch):
    logits, locs, scales = _parameters(batch=(2,), components=7, d=4)
    z = torch.randn(11, 2, 4, generator=torch.Generator().manual_seed(5), dtype=F64)
    whole = DiagonalNormalMixture(logits, locs, scales).log_prob(z)
    monkeypatch.setattr(mixture_density, "BLOCK_ELEMENTS", 30)  # 2 codes x 2 x 7 per block
    locs_grad = locs.clone().requires_grad_()
    blocked = DiagonalNormalMixture(logits, locs_grad, scales).log_prob(z)
    torch.testing.assert_close(blocked, whole, rtol=1e-14, atol=1e-14)
    blocked.sum().backward()
    expected = locs.clone().requires_grad_()
    _reference(logits, expected, scales).log_prob(z).sum().backward()
    torch.testing.assert_close(locs_grad.grad, expected.grad, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------------------------------
# float32


@pytest.mark.parametrize("codes", ["standard", "near"])
def test_float32_error_is_float32_rounding(codes):
    """float32 parameters and codes: the products run in float64, so the error against the
    exact value (float64 on the same float32 numbers) is the final rounding, at most ~6e-8
    relative; torch's float32 broadcast form loses more (2e-6 relative near components).
    The expansion itself in float32 would lose up to 4e-3 .. 1.6e-2 nats near components."""
    logits, locs, scales = _parameters(components=200, d=50, offset=1.0, dtype=torch.float32)
    if codes == "standard":
        z = torch.randn(8, 50, 50, generator=torch.Generator().manual_seed(6))
    else:
        z = _codes_near(locs, scales, (8, 50))
    exact = _reference(logits.double(), locs.double(), scales.double()).log_prob(z.double())
    ours = DiagonalNormalMixture(logits, locs, scales).log_prob(z)
    assert ours.dtype == torch.float32
    error = (ours.double() - exact).abs()
    torch_error = (_reference(logits, locs, scales).log_prob(z).double() - exact).abs()
    bound = 1.2e-7 * exact.abs().clamp(min=1.0)  # float32 rounding of the result
    assert (error <= bound).all(), (error / exact.abs().clamp(min=1.0)).max()
    assert error.max() <= torch_error.max()


# ---------------------------------------------------------------------------------------------
# sampling, moments, checks


def test_sampling_shapes_and_moments():
    logits, locs, scales = _parameters(components=3, d=2, seed=7)
    mixture = DiagonalNormalMixture(logits, locs, scales)
    reference = _reference(logits, locs, scales)
    _close(mixture.mean, reference.mean)
    _close(mixture.variance, reference.variance)
    assert not mixture.has_rsample and mixture.support is constraints.real_vector
    pyro.set_rng_seed(0)
    draws = mixture.sample((40000,))
    assert draws.shape == (40000, 2) and draws.dtype == F64
    standard_error = (reference.variance / 40000).sqrt()
    assert ((draws.mean(0) - reference.mean).abs() < 5 * standard_error).all()
    torch.testing.assert_close(draws.var(0), reference.variance, rtol=0.05, atol=0.0)
    # batched parameters, expanded as a plate does
    batched = DiagonalNormalMixture(*_parameters(batch=(4,), components=3, d=2))
    assert batched.expand((5, 4)).sample((2,)).shape == (2, 5, 4, 2)
    assert batched.sample().shape == (4, 2)


def test_argument_checks():
    logits, locs, scales = _parameters(components=3, d=2)
    with pytest.raises(ValueError, match="logits have 4 components, locs and scales 3"):
        DiagonalNormalMixture(torch.zeros(4, dtype=F64), locs, scales)
    with pytest.raises(ValueError, match=r"needs logits \(..., C\) and locs, scales \(..., C, d\)"):
        DiagonalNormalMixture(logits, locs[0], scales[0])
    with pytest.raises(ValueError, match="scales"):
        DiagonalNormalMixture(logits, locs, -scales, validate_args=True)
    with pytest.raises(ValueError):
        DiagonalNormalMixture(logits, locs, scales, validate_args=True).log_prob(torch.zeros(3, dtype=F64))
    with pytest.raises(ValueError, match="unknown mixture form 'fast'; choose from: broadcast, expansion"):
        diagonal_normal_mixture(logits, locs, scales, "fast")


# ---------------------------------------------------------------------------------------------
# the priors


def test_mog_prior_returns_the_matrix_form_and_the_broadcast_form_on_request():
    prior = MixtureOfGaussiansPrior(latent_dim=3, num_components=5).double()
    z = torch.randn(4, 6, 3, dtype=F64)
    fast = prior()
    assert isinstance(fast, DiagonalNormalMixture)
    prior.mixture_form = "broadcast"
    slow = prior()
    assert isinstance(slow, dist.MixtureSameFamily)
    _close(fast.log_prob(z), slow.log_prob(z))


@pytest.mark.parametrize("model_name", ["vae", "cvae"])
def test_importance_weights_with_a_vamp_prior_equal_the_broadcast_form(model_name):
    if model_name not in MODELS:
        pytest.skip(f"no {model_name} model registered")
    config_cls, model_cls = MODELS[model_name]
    torch.manual_seed(0)
    model = model_cls(10, config_cls(latent_dim=3, hidden_dims=(8,), prior="vamp", prior_components=6),
                      num_classes=3).double()
    x = torch.rand(5, 10, dtype=F64).bernoulli()
    y = torch.tensor([0, 2, 1, 1, 0]) if model.needs_labels else None
    assert isinstance(model.prior(y), DiagonalNormalMixture)
    weights = {}
    for form in ("expansion", "broadcast"):
        model.prior.mixture_form = form
        pyro.set_rng_seed(1)
        weights[form] = log_importance_weights(model, x, y, num_samples=4)  # (K, batch)
    assert weights["expansion"].shape == (4, 5)
    _close(weights["expansion"], weights["broadcast"])


def test_vamp_prior_samples_through_the_model():
    vae = VAE(6, VAEConfig(latent_dim=2, hidden_dims=(5,), prior="vamp", prior_components=4)).double()
    assert vae.sample(3).shape == (3, 6)
    assert isinstance(build_prior("mog", 2, num_components=3)(), DiagonalNormalMixture)
