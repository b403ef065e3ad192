"""The lean scoring path: lean distributions, record-and-replay of sample sites, Trace_ELBO fast path.

Every lean piece is checked against the generic Pyro/torch machinery it replaces:
``dist.Normal(...).to_event(1)`` / ``dist.Bernoulli(logits=...).to_event(1)`` for the
distributions, ``poutine.trace`` + ``poutine.replay`` + ``Trace.compute_log_prob`` for the
site recording, and ``pyro.infer.Trace_ELBO`` for the elbo objective.
"""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.distributions.kl import kl_divergence
from pyro.poutine.util import site_is_subsample

from pyro_vae.inference.evaluate import log_importance_weights
from pyro_vae.inference.objectives import TraceELBOObjective, _fast_path_applies, build_objective
from pyro_vae.inference.tracing import record_sites, scaled_log_prob, scored_sites
from pyro_vae.models import CVAE, PPCA, VAE, Mixture, MixtureConfig, PPCAConfig, VAEConfig
from pyro_vae.models.distributions import BernoulliPixels, DiagonalNormal, StandardNormal
from tests.conftest import binary_batch

F64 = torch.float64
TIGHT = dict(rtol=0.0, atol=1e-12)  # float64 agreement with the generic distributions


def _randn(*shape):
    return torch.randn(*shape, dtype=F64)


def _loc_scale(*shape, requires_grad=False):
    loc = _randn(*shape)
    scale = (torch.rand(*shape, dtype=F64) + 0.3)
    return loc.requires_grad_(requires_grad), scale.requires_grad_(requires_grad)


def _binary(*shape, dtype=F64):
    return torch.bernoulli(torch.full(shape, 0.4, dtype=dtype))


@pytest.fixture
def generic_independent_forbidden(monkeypatch):
    """While active, the generic ``Independent.log_prob`` raises: proves a fast path ran."""

    def forbid():
        def boom(self, value):
            raise AssertionError("generic Independent.log_prob called on the fast path")

        monkeypatch.setattr(torch.distributions.Independent, "log_prob", boom)

    return forbid


# =============================================================================================
# 1. distributions: DiagonalNormal


def test_diagonal_normal_log_prob_of_plain_values_matches_generic():
    loc, scale = _loc_scale(4, 3)
    q, p = DiagonalNormal(loc, scale), dist.Normal(loc, scale).to_event(1)
    assert q.batch_shape == (4,) and q.event_shape == (3,)
    for value in (_randn(4, 3), _randn(3), _randn(3, 4, 3)):  # fewer, equal, more batch dims
        got = q.log_prob(value)
        expected = p.log_prob(value)
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, **TIGHT)


def test_diagonal_normal_rsample_draws_what_torch_normal_draws():
    loc, scale = _loc_scale(4, 3)
    for sample_shape in ((), (2,)):
        torch.manual_seed(11)
        z = DiagonalNormal(loc, scale).rsample(sample_shape)
        torch.manual_seed(11)
        z_ref = dist.Normal(loc, scale).rsample(sample_shape)
        assert z.shape == (*sample_shape, 4, 3)
        assert torch.equal(z, z_ref)
        torch.manual_seed(11)
        eps = torch.empty(z.shape, dtype=F64).normal_()
        assert torch.equal(z, loc + eps * scale)


def test_diagonal_normal_scores_its_own_draw_on_the_fast_path(generic_independent_forbidden):
    loc, scale = _loc_scale(4, 3)
    q = DiagonalNormal(loc, scale)
    z = q.rsample((2,))
    expected = dist.Normal(loc, scale).to_event(1).log_prob(z)  # (2, 4)
    copy = z.clone()  # equal values, another tensor: the generic path
    torch.testing.assert_close(q.log_prob(copy), expected, **TIGHT)
    generic_independent_forbidden()
    with pytest.raises(AssertionError, match="generic"):
        q.log_prob(copy)  # the copy does go the generic way ...
    got = q.log_prob(z)  # ... the draw itself does not
    assert got.shape == (2, 4)
    torch.testing.assert_close(got, expected, **TIGHT)


def test_diagonal_normal_forgets_an_older_draw():
    loc, scale = _loc_scale(4, 3)
    q = DiagonalNormal(loc, scale)
    first = q.rsample()
    second = q.rsample()
    p = dist.Normal(loc, scale).to_event(1)
    torch.testing.assert_close(q.log_prob(first), p.log_prob(first), **TIGHT)
    torch.testing.assert_close(q.log_prob(second), p.log_prob(second), **TIGHT)


def test_diagonal_normal_with_broadcast_scale():
    """A scale of shape (d,) against loc (batch, d): log(scale) is broadcast, not summed once."""
    loc = _randn(4, 3)
    scale = torch.tensor([0.5, 1.5, 2.5], dtype=F64)
    q = DiagonalNormal(loc, scale)
    z = q.rsample((2,))
    expected = dist.Normal(loc, scale).to_event(1).log_prob(z)
    torch.testing.assert_close(q.log_prob(z), expected, **TIGHT)
    torch.testing.assert_close(q.expand((5, 4)).log_prob(z[0]),
                               dist.Normal(loc, scale).to_event(1).expand((5, 4)).log_prob(z[0]), **TIGHT)


def test_diagonal_normal_expanded_like_an_importance_plate():
    loc, scale = _loc_scale(4, 3)
    q = DiagonalNormal(loc, scale).expand((3, 4))
    assert type(q) is DiagonalNormal and q.batch_shape == (3, 4) and q.event_shape == (3,)
    torch.manual_seed(5)
    z = q.rsample()
    torch.manual_seed(5)
    z_ref = dist.Normal(loc, scale).to_event(1).expand((3, 4)).rsample()
    assert z.shape == (3, 4, 3) and torch.equal(z, z_ref)
    expected = dist.Normal(loc, scale).to_event(1).expand((3, 4)).log_prob(z)
    torch.testing.assert_close(q.log_prob(z), expected, **TIGHT)  # fast path
    torch.testing.assert_close(q.log_prob(z.clone()), expected, **TIGHT)  # generic path
    # The original (unexpanded) distribution scores the (3, 4, 3) value by broadcasting.
    torch.testing.assert_close(DiagonalNormal(loc, scale).log_prob(z), expected, **TIGHT)


def test_diagonal_normal_inside_real_plates_matches_generic():
    """What pyro.plate does at a site: expand to (K, batch), then draw; score the draw."""
    loc, scale = _loc_scale(4, 3)

    def program(make):
        with pyro.plate("importance_samples", 3, dim=-2), pyro.plate("data", 4, dim=-1):
            return pyro.sample("z", make(loc, scale))

    pyro.set_rng_seed(2)
    site = record_sites(program, DiagonalNormal)["z"]
    pyro.set_rng_seed(2)
    ref = poutine.trace(program).get_trace(lambda loc, s: dist.Normal(loc, s).to_event(1))
    assert site["fn"].batch_shape == (3, 4)
    assert torch.equal(site["value"], ref.nodes["z"]["value"])
    ref.compute_log_prob()
    torch.testing.assert_close(scaled_log_prob(site), ref.nodes["z"]["log_prob"], **TIGHT)


def _grads(output, inputs):
    """d output / d inputs, zeros for an input the output does not depend on."""
    grads = torch.autograd.grad(output, inputs, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(i) if g is None else g for g, i in zip(grads, inputs)]


@pytest.mark.parametrize("expand_to", [None, (3, 4)])
def test_diagonal_normal_gradient_of_own_draw_matches_generic(expand_to):
    loc, scale = _loc_scale(4, 3, requires_grad=True)

    def lean():
        q = DiagonalNormal(loc, scale)
        return q if expand_to is None else q.expand(expand_to)

    def generic():
        p = dist.Normal(loc, scale).to_event(1)
        return p if expand_to is None else p.expand(expand_to)

    torch.manual_seed(7)
    q = lean()
    z = q.rsample()
    # log q(z) alone, and with a downstream use of z (as the model's decoder makes of it).
    lean_terms = [q.log_prob(z).sum(), q.log_prob(z).sum() + (z ** 3).sum()]
    torch.manual_seed(7)
    z_ref = generic().rsample()
    assert torch.equal(z, z_ref)
    generic_terms = [generic().log_prob(z_ref).sum(), generic().log_prob(z_ref).sum() + (z_ref ** 3).sum()]
    for lean_term, generic_term in zip(lean_terms, generic_terms):
        torch.testing.assert_close(lean_term, generic_term, **TIGHT)
        g_lean = _grads(lean_term, (loc, scale))
        g_ref = _grads(generic_term, (loc, scale))
        for a, b in zip(g_lean, g_ref):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    # The total derivative of log q(z(loc, scale)) is 0 in loc and -1/scale in scale (per draw).
    g_loc, g_scale = _grads(lean_terms[0], (loc, scale))
    copies = 1 if expand_to is None else expand_to[0]
    torch.testing.assert_close(g_loc, torch.zeros_like(loc), rtol=0, atol=1e-10)
    torch.testing.assert_close(g_scale, -copies / scale.detach(), rtol=1e-10, atol=1e-10)


def test_diagonal_normal_fast_path_respects_validation():
    q = DiagonalNormal(_randn(2), torch.ones(2, dtype=F64), validate_args=True)
    z = q.rsample()
    torch.testing.assert_close(q.log_prob(z), dist.Normal(q.mean, 1.0).to_event(1).log_prob(z), **TIGHT)
    with pytest.raises(ValueError):
        DiagonalNormal(_randn(2), -torch.ones(2, dtype=F64), validate_args=True)


# =============================================================================================
# 1. distributions: StandardNormal


def test_standard_normal_log_prob_matches_generic_with_broadcasting():
    d = 3
    prior = StandardNormal(torch.zeros(d, dtype=F64))
    generic = dist.Normal(torch.zeros(d, dtype=F64), 1.0).to_event(1)
    assert prior.batch_shape == () and prior.event_shape == (d,)
    for value in (_randn(d), _randn(5, d), _randn(3, 5, d)):
        torch.testing.assert_close(prior.log_prob(value), generic.log_prob(value), **TIGHT)
    batched = StandardNormal(torch.zeros(4, d, dtype=F64))
    generic_batched = dist.Normal(torch.zeros(4, d, dtype=F64), 1.0).to_event(1)
    for value in (_randn(d), _randn(4, d), _randn(3, 4, d)):  # fewer, equal, more batch dims
        got = batched.log_prob(value)
        expected = generic_batched.log_prob(value)
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, **TIGHT)


def test_standard_normal_at_zero_and_its_dtype():
    for d in (1, 3, 7):
        value = StandardNormal(torch.zeros(d, dtype=F64)).log_prob(torch.zeros(d, dtype=F64))
        assert value.dtype == F64
        assert value.item() == pytest.approx(-d / 2 * math.log(2 * math.pi), abs=1e-13)


# =============================================================================================
# 1. distributions: BernoulliPixels


def _bernoulli_both_ways(logits, value):
    """``(lean, generic)`` log-probabilities, once with gradients enabled and once without."""
    out = []
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            out.append((BernoulliPixels(logits).log_prob(value),
                        dist.Bernoulli(logits=logits).to_event(1).log_prob(value)))
    return out


@pytest.mark.parametrize("logits_shape,value_shape", [
    ((5, 16), (5, 16)),
    ((5, 16), (3, 5, 16)),   # the value has more batch dims (importance samples)
    ((5, 16), (16,)),        # the value has fewer
    ((1, 16), (5, 16)),      # the logits broadcast
    ((3, 5, 16), (5, 16)),   # logits of K samples against the data
])
def test_bernoulli_pixels_matches_generic_with_and_without_grad(logits_shape, value_shape):
    logits = (3 * _randn(*logits_shape)).requires_grad_()
    value = _binary(*value_shape)
    for lean, generic in _bernoulli_both_ways(logits, value):
        assert lean.shape == generic.shape
        torch.testing.assert_close(lean, generic, **TIGHT)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_bernoulli_pixels_extreme_logits(dtype):
    extremes = torch.tensor([-100.0, -30.0, 30.0, 100.0, -40.5, 40.5, 0.0], dtype=dtype)
    logits = extremes.repeat(2).reshape(1, 14).expand(5, 14).clone()  # (5, D)
    # Every logit against a 0 and a 1, and a value with extra leading dims.
    value = torch.cat([torch.zeros(7, dtype=dtype), torch.ones(7, dtype=dtype)]).expand(3, 5, 14).clone()
    truth = dist.Bernoulli(logits=logits.double()).to_event(1).log_prob(value.double())
    tol = dict(rtol=0.0, atol=1e-12) if dtype == torch.float64 else dict(rtol=2e-7, atol=1e-5)
    for requires_grad in (False, True):
        lg = logits.clone().requires_grad_(requires_grad)
        for lean, generic in _bernoulli_both_ways(lg, value):
            assert lean.dtype == dtype and lean.shape == (3, 5)
            assert torch.isfinite(lean).all()
            torch.testing.assert_close(lean, generic, **tol)
            torch.testing.assert_close(lean.double(), truth, **tol)
    # A plain 2-d case too: a value shaped exactly like the logits (the in-place branch).
    with torch.no_grad():
        torch.testing.assert_close(BernoulliPixels(logits).log_prob(value[0]).double(), truth[0], **tol)


def test_bernoulli_pixels_no_grad_float32_loses_nothing_to_cancellation():
    """Each pixel's log-probability to float32 rounding of its own (possibly tiny) value.

    softplus(l) - x l computed naively loses about one ulp of |l| per pixel where x = 1 and l is
    large (at l = 15 the true -3.06e-7 comes out as 0 or -4.8e-7).
    """
    logits = torch.linspace(-25, 25, 101, dtype=torch.float32).reshape(101, 1)  # one pixel each
    for x in (0.0, 1.0):
        value = torch.full((101, 1), x)
        truth = dist.Bernoulli(logits=logits.double()).to_event(1).log_prob(value.double())
        with torch.no_grad():
            lean = BernoulliPixels(logits).log_prob(value)
        # rtol: torch's vectorized float32 exp/log1p are good to about 3e-5 relative at
        # exp(-25); the naive form is off by 50-100% there (and the cross-entropy kernel,
        # which returns 0 for these pixels, by 100%).
        torch.testing.assert_close(lean.double(), truth, rtol=1e-4, atol=1e-30)


def test_bernoulli_pixels_no_grad_leaves_logits_untouched():
    logits = 2 * _randn(5, 8)
    before = logits.clone()
    with torch.no_grad():
        BernoulliPixels(logits).log_prob(_binary(5, 8))
        BernoulliPixels(logits).log_prob(_binary(3, 5, 8))
    assert torch.equal(logits, before)


@pytest.mark.parametrize("value_shape", [(5, 16), (3, 5, 16)])
def test_bernoulli_pixels_gradient_matches_generic(value_shape):
    logits = (4 * _randn(5, 16)).requires_grad_()
    value = _binary(*value_shape)
    weights = _randn(*value_shape[:-1])  # a non-uniform upstream gradient
    lean = (BernoulliPixels(logits).log_prob(value) * weights).sum()
    generic = (dist.Bernoulli(logits=logits).to_event(1).log_prob(value) * weights).sum()
    (g_lean,) = torch.autograd.grad(lean, logits)
    (g_ref,) = torch.autograd.grad(generic, logits)
    torch.testing.assert_close(g_lean, g_ref, rtol=1e-12, atol=1e-12)
    # By hand: d/dl sum (x l - softplus(l)) = x - sigmoid(l).
    by_hand = ((value - torch.sigmoid(logits.detach())) * weights.unsqueeze(-1))
    by_hand = by_hand.reshape(-1, 5, 16).sum(0)
    torch.testing.assert_close(g_lean, by_hand, rtol=1e-12, atol=1e-12)


# =============================================================================================
# 1. distributions: common behaviour (expand, mean, sample, KL)


def _lean_and_generic(kind, batch, d=3):
    if kind == "diagonal":
        loc, scale = _loc_scale(*batch, d)
        return DiagonalNormal(loc, scale), dist.Normal(loc, scale).to_event(1)
    if kind == "standard":
        zeros = torch.zeros(*batch, d, dtype=F64)
        return StandardNormal(zeros), dist.Normal(zeros, 1.0).to_event(1)
    logits = 2 * _randn(*batch, d)
    return BernoulliPixels(logits), dist.Bernoulli(logits=logits).to_event(1)


KINDS = ["diagonal", "standard", "bernoulli"]


@pytest.mark.parametrize("kind", KINDS)
def test_expand_to_own_batch_shape_is_free(kind):
    lean, _ = _lean_and_generic(kind, (4,))
    assert lean.expand(lean.batch_shape) is lean
    assert lean.expand((4,)) is lean
    assert lean.expand(torch.Size([4])) is lean


@pytest.mark.parametrize("kind", KINDS)
def test_expand_to_a_new_shape_is_a_new_instance(kind):
    lean, generic = _lean_and_generic(kind, (4,))
    expanded = lean.expand((2, 4))
    assert expanded is not lean and type(expanded) is type(lean)
    assert expanded.batch_shape == (2, 4) and expanded.event_shape == (3,)
    assert lean.batch_shape == (4,)  # the original is unchanged
    value = _binary(2, 4, 3) if kind == "bernoulli" else _randn(2, 4, 3)
    expected = generic.expand((2, 4)).log_prob(value)
    got = expanded.log_prob(value)
    assert got.shape == (2, 4)
    torch.testing.assert_close(got, expected, **TIGHT)
    # A value without the new leading dim is broadcast to the full batch shape.
    got_small = expanded.log_prob(value[0])
    assert got_small.shape == (2, 4)
    torch.testing.assert_close(got_small, generic.expand((2, 4)).log_prob(value[0]), **TIGHT)
    # Expanding twice, the second time to the shape it has, is free again.
    assert expanded.expand((2, 4)) is expanded


@pytest.mark.parametrize("kind", KINDS)
def test_mean_and_sample_shapes(kind):
    lean, generic = _lean_and_generic(kind, (4,))
    torch.testing.assert_close(lean.mean, generic.mean, **TIGHT)
    assert lean.sample().shape == (4, 3)
    assert lean.sample((2,)).shape == (2, 4, 3)
    if kind == "bernoulli":
        assert set(lean.sample((50,)).unique().tolist()) <= {0.0, 1.0}
    else:
        assert lean.rsample((2,)).shape == (2, 4, 3)
    assert lean.has_rsample == generic.has_rsample


def test_kl_divergence_diagonal_normal_to_standard_normal_closed_form():
    loc, scale = _loc_scale(4, 3)
    kl = kl_divergence(DiagonalNormal(loc, scale), StandardNormal(torch.zeros(4, 3, dtype=F64)))
    closed_form = 0.5 * (loc ** 2 + scale ** 2 - 1 - 2 * scale.log()).sum(-1)
    assert kl.shape == (4,)
    torch.testing.assert_close(kl, closed_form, **TIGHT)
    # And against an unbatched prior, broadcast.
    kl_b = kl_divergence(DiagonalNormal(loc, scale), StandardNormal(torch.zeros(3, dtype=F64)).expand((4,)))
    torch.testing.assert_close(kl_b, closed_form, **TIGHT)


# =============================================================================================
# 2. tracing: record_sites / scaled_log_prob against poutine.trace + replay


def _generic_twin(fn):
    """The generic distribution a lean one stands for (same parameters, same batch shape)."""
    if isinstance(fn, DiagonalNormal):
        return dist.Normal(fn.base_dist.loc, fn.base_dist.scale).to_event(1)
    if isinstance(fn, StandardNormal):
        return dist.Normal(torch.zeros_like(fn.base_dist.loc), 1.0).to_event(1)
    if isinstance(fn, BernoulliPixels):
        return dist.Bernoulli(logits=fn.base_dist.logits).to_event(1)
    return fn


def _trace_log_prob(trace):
    """Sum of the sites' log_prob (Trace.compute_log_prob, generic distributions), plates skipped."""
    for site in trace.nodes.values():
        if site["type"] == "sample":
            site["fn"] = _generic_twin(site["fn"])
    trace.compute_log_prob()
    total = 0.0
    for site in trace.nodes.values():
        if site["type"] == "sample" and not site_is_subsample(site):
            total = total + site["log_prob"]
    return total


def _reference_log_weights(model, x, y, num_samples):
    guide, generative = model.guide, model.model
    if num_samples > 1:
        def in_plate(fn):
            def wrapped(*args):
                with pyro.plate("importance_samples", num_samples, dim=-2):
                    return fn(*args)
            return wrapped
        guide, generative = in_plate(guide), in_plate(generative)
    guide_trace = poutine.trace(guide).get_trace(x, y)
    model_trace = poutine.trace(poutine.replay(generative, trace=guide_trace)).get_trace(x, y)
    log_w = _trace_log_prob(model_trace) - _trace_log_prob(guide_trace)
    return log_w.expand(num_samples, x.shape[0])


def _models():
    """name -> (model, x, y), float64, small."""
    torch.manual_seed(0)
    config = VAEConfig(latent_dim=3, hidden_dims=(8,))
    x = binary_batch(6, 64, dtype=F64)
    mixture = Mixture(64, MixtureConfig(num_components=3)).double()
    mixture.init_from_data(x)
    return {
        "vae": (VAE(64, config).double(), x, None),
        "cvae": (CVAE(64, config, num_classes=4).double(), x, torch.tensor([0, 1, 2, 3, 0, 1])),
        "mixture": (mixture, x, None),
        "ppca": (PPCA(64, PPCAConfig(latent_dim=2)).double(), _randn(6, 64), None),
    }


@pytest.fixture(scope="module")
def models():
    return _models()


@pytest.mark.parametrize("num_samples", [1, 4])
@pytest.mark.parametrize("name", ["vae", "cvae", "mixture", "ppca"])
def test_log_importance_weights_match_poutine_trace_and_replay(models, name, num_samples):
    model, x, y = models[name]
    pyro.set_rng_seed(123)
    log_w = log_importance_weights(model, x, y, num_samples)
    pyro.set_rng_seed(123)
    expected = _reference_log_weights(model, x, y, num_samples)
    assert log_w.shape == (num_samples, x.shape[0]) == expected.shape
    assert torch.isfinite(log_w).all()
    torch.testing.assert_close(log_w, expected, rtol=1e-12, atol=1e-10)
    if name in ("mixture", "ppca"):  # no latents: log w is the exact log-likelihood
        exact = model.log_marginal(x).expand(num_samples, -1)
        torch.testing.assert_close(log_w, exact, rtol=1e-12, atol=1e-10)
    elif num_samples > 1:  # K distinct draws per example, not one repeated
        assert not torch.allclose(log_w[0], log_w[1])


def test_log_importance_weights_differ_with_another_seed(models):
    """The agreement above is not a coincidence of both ignoring the draw."""
    model, x, y = models["vae"]
    pyro.set_rng_seed(1)
    a = log_importance_weights(model, x, y, 2)
    pyro.set_rng_seed(2)
    b = _reference_log_weights(model, x, y, 2)
    assert not torch.allclose(a, b)


def test_replay_gives_the_model_the_guides_exact_tensor(models):
    model, x, _ = models["vae"]
    guide_sites = record_sites(model.guide, x)
    model_sites = record_sites(model.model, x, replay=guide_sites)
    assert sorted(guide_sites) == ["data", "z"] and sorted(model_sites) == ["data", "x", "z"]
    assert [site["name"] for site in scored_sites(model_sites)] == ["z", "x"]
    assert model_sites["z"]["value"] is guide_sites["z"]["value"]
    assert model_sites["z"]["infer"] is guide_sites["z"]["infer"]
    assert model_sites["x"]["value"] is x and model_sites["x"]["is_observed"]
    # Without replay the model draws its own z.
    own = record_sites(model.model, x)
    assert not torch.equal(own["z"]["value"], guide_sites["z"]["value"])


def test_observed_sites_are_not_replayed():
    obs = torch.tensor([0.5, -0.5], dtype=F64)

    def guide():
        pyro.sample("z", dist.Normal(torch.zeros(2, dtype=F64), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(torch.zeros(2, dtype=F64), 1.0).to_event(1))  # latent here

    def model():
        z = pyro.sample("z", dist.Normal(torch.zeros(2, dtype=F64), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=obs)

    guide_sites = record_sites(guide)
    model_sites = record_sites(model, replay=guide_sites)
    assert model_sites["x"]["value"] is obs
    assert model_sites["z"]["value"] is guide_sites["z"]["value"]
    # A site observed in the replayed run but latent in this one is refused, as poutine.replay does.
    with pytest.raises(RuntimeError, match="observed"):
        record_sites(guide, replay=model_sites)
    with pytest.raises(RuntimeError):
        poutine.replay(guide, trace=poutine.trace(model).get_trace())()


def test_replay_ignores_sites_the_program_lacks_and_samples_the_rest():
    def guide():
        pyro.sample("a", dist.Normal(0.0, 1.0))
        pyro.sample("unused", dist.Normal(0.0, 1.0))

    def model():
        pyro.sample("a", dist.Normal(0.0, 1.0))
        pyro.sample("b", dist.Normal(0.0, 1.0))

    guide_sites = record_sites(guide)
    sites = record_sites(model, replay=guide_sites)
    assert sorted(sites) == ["a", "b"]
    assert sites["a"]["value"] is guide_sites["a"]["value"]


def test_a_repeated_site_name_is_refused():
    def program():
        pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("z", dist.Normal(0.0, 1.0))

    with pytest.raises(RuntimeError, match="'z'"):
        record_sites(program)


def test_plate_sites_are_recorded_not_scored_and_arguments_pass():
    def program(x, shift=0.0):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x + shift, 1.0))

    x = _randn(5)
    trace = poutine.trace(program).get_trace(x)
    assert site_is_subsample(trace.nodes["data"])  # Pyro records the plate as a sample site
    sites = record_sites(program, x, shift=100.0)
    assert list(sites) == ["data", "z"] and site_is_subsample(sites["data"])
    assert [site["name"] for site in scored_sites(sites)] == ["z"]
    assert sites["z"]["fn"].batch_shape == (5,)
    torch.testing.assert_close(sites["z"]["fn"].mean, x + 100.0)


def test_a_subsampling_plate_draws_the_guides_subset_in_the_model():
    data = _randn(20)

    def guide():
        with pyro.plate("data", 20, subsample_size=4) as idx:
            pyro.sample("z", dist.Normal(data[idx], 1.0))

    def model():
        with pyro.plate("data", 20, subsample_size=4) as idx:
            pyro.sample("z", dist.Normal(data[idx] + 1.0, 1.0))
            model.seen = idx

    pyro.set_rng_seed(3)
    guide_sites = record_sites(guide)
    record_sites(model, replay=guide_sites)
    assert torch.equal(model.seen, guide_sites["data"]["value"])
    pyro.set_rng_seed(3)  # the same as poutine.replay does
    guide_trace = poutine.trace(guide).get_trace()
    poutine.replay(model, trace=guide_trace)()
    assert torch.equal(model.seen, guide_trace.nodes["data"]["value"])
    assert torch.equal(guide_trace.nodes["data"]["value"], guide_sites["data"]["value"])


def test_scaled_log_prob_applies_scale_and_mask():
    value = torch.tensor([0.3, -1.2, 2.0], dtype=F64)

    def program():
        with poutine.scale(scale=0.5):
            pyro.sample("half", dist.Normal(0.0, 1.0), obs=value)
        with poutine.mask(mask=torch.tensor([True, False, True])):
            pyro.sample("masked", dist.Normal(torch.zeros(3, dtype=F64), 1.0), obs=value)
        with poutine.scale(scale=3.0), poutine.mask(mask=torch.tensor([False, True, True])):
            pyro.sample("both", dist.Normal(torch.zeros(3, dtype=F64), 1.0), obs=value)
        pyro.sample("plain", dist.Normal(0.0, 1.0), obs=value)

    sites = record_sites(program)
    plain = dist.Normal(0.0, 1.0).log_prob(value)
    torch.testing.assert_close(scaled_log_prob(sites["plain"]), plain, **TIGHT)
    torch.testing.assert_close(scaled_log_prob(sites["half"]), 0.5 * plain, **TIGHT)
    torch.testing.assert_close(scaled_log_prob(sites["masked"]),
                               torch.stack([plain[0], torch.zeros((), dtype=F64), plain[2]]), **TIGHT)
    torch.testing.assert_close(scaled_log_prob(sites["both"]),
                               torch.stack([torch.zeros((), dtype=F64), 3 * plain[1], 3 * plain[2]]),
                               **TIGHT)
    trace = poutine.trace(program).get_trace()
    trace.compute_log_prob()
    for name in sites:
        torch.testing.assert_close(scaled_log_prob(sites[name]), trace.nodes[name]["log_prob"], **TIGHT)


# =============================================================================================
# 3. objectives: the elbo objective's fast path and its fallback


@pytest.fixture
def trace_elbo_forbidden(monkeypatch):
    def boom(self, *args, **kwargs):
        raise AssertionError("Trace_ELBO.differentiable_loss called: the fast path was not taken")

    monkeypatch.setattr(pyro.infer.Trace_ELBO, "differentiable_loss", boom)


@pytest.mark.parametrize("particles", [1, 3])
@pytest.mark.parametrize("name", ["vae", "cvae", "mixture", "ppca"])
def test_elbo_objective_takes_the_fast_path(models, trace_elbo_forbidden, name, particles):
    model, x, y = models[name]
    objective = build_objective("elbo", particles=particles)
    assert isinstance(objective, TraceELBOObjective)
    pyro.set_rng_seed(9)
    loss = objective.loss(model, x, y)
    pyro.set_rng_seed(9)
    log_w = log_importance_weights(model, x, y, particles)
    torch.testing.assert_close(loss, -log_w.mean(0).sum(), rtol=1e-12, atol=1e-10)
    assert loss.shape == () and loss.requires_grad
    # A second call (decision cached) still goes the fast way.
    objective.loss(model, x, y).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    model.zero_grad()


@pytest.mark.parametrize("particles", [1, 3])
def test_elbo_fast_path_equals_trace_elbo_value_and_gradient(models, particles):
    model, x, _ = models["vae"]
    objective = build_objective("elbo", particles=particles)
    params = list(model.parameters())
    pyro.set_rng_seed(4)
    loss = objective.loss(model, x)
    grads = torch.autograd.grad(loss, params)
    pyro.set_rng_seed(4)
    elbo = pyro.infer.Trace_ELBO(num_particles=particles, vectorize_particles=particles > 1,
                                 max_plate_nesting=1)
    expected = elbo.differentiable_loss(model.model, model.guide, x)
    expected_grads = torch.autograd.grad(expected, params)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-10)
    for g, e in zip(grads, expected_grads):
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-10)


class _DiscreteLatent:
    """A model/guide pair with a Bernoulli latent per example: no rsample in the guide."""

    def __init__(self, data_dim=4):
        self.guide_logits = torch.zeros(data_dim, dtype=F64, requires_grad=True)
        self.weight = torch.linspace(-1, 1, data_dim, dtype=F64)

    def guide(self, x, y=None):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("b", dist.Bernoulli(logits=x @ self.weight + self.guide_logits.sum()))

    def model(self, x, y=None):
        with pyro.plate("data", x.shape[0]):
            b = pyro.sample("b", dist.Bernoulli(torch.tensor(0.3, dtype=F64)))
            pyro.sample("x", dist.Normal(b.unsqueeze(-1), 1.0).to_event(1), obs=x)


def test_a_non_reparameterized_guide_falls_back_to_trace_elbo(monkeypatch):
    pair = _DiscreteLatent()
    x = _randn(5, 4)
    assert not _fast_path_applies(pair, x, None)
    calls = []
    original = pyro.infer.Trace_ELBO.differentiable_loss

    def spy(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pyro.infer.Trace_ELBO, "differentiable_loss", spy)
    objective = build_objective("elbo")
    pyro.set_rng_seed(21)
    loss = objective.loss(pair, x)
    assert calls, "the fallback did not go through Trace_ELBO"
    (grad,) = torch.autograd.grad(loss, pair.guide_logits)
    monkeypatch.setattr(pyro.infer.Trace_ELBO, "differentiable_loss", original)
    pyro.set_rng_seed(21)
    expected = pyro.infer.Trace_ELBO().differentiable_loss(pair.model, pair.guide, x)
    (expected_grad,) = torch.autograd.grad(expected, pair.guide_logits)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=1e-12)
    # Same value as -sum log w (Trace_ELBO's loss is -ELBO in value), but not the same gradient:
    # -sum log w lacks the score-function term, so a fast path taken by mistake would show here.
    pyro.set_rng_seed(21)
    naive = -log_importance_weights(pair, x, None, 1).sum()
    torch.testing.assert_close(loss, naive, rtol=1e-12, atol=1e-12)
    (naive_grad,) = torch.autograd.grad(naive, pair.guide_logits)
    assert not torch.allclose(grad, naive_grad)


def test_regression_plate_subsample_site_does_not_make_a_guide_non_reparameterized(models):
    """A plate's subsample site is a sample site without rsample; it used to send every guide
    (every guide here has a data plate) to Trace_ELBO."""
    model, x, _ = models["vae"]
    trace = poutine.trace(model.guide).get_trace(x)
    subsample = [site for site in trace.nodes.values()
                 if site["type"] == "sample" and site_is_subsample(site)]
    assert subsample and not subsample[0]["fn"].has_rsample  # the trap is there
    assert _fast_path_applies(model, x, None)

    def normal_guide(x, y=None):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x.sum(-1), 1.0))

    def mixed_guide(x, y=None):
        normal_guide(x)
        with pyro.plate("data2", x.shape[0]):
            pyro.sample("c", dist.Categorical(logits=torch.zeros(3, dtype=F64)))

    def generative(x, y=None):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], dtype=F64), 1.0))
            pyro.sample("x", dist.Normal(torch.zeros_like(x), 1.0).to_event(1), obs=x)

    def as_pair(guide):
        return type("Pair", (), {"guide": staticmethod(guide), "model": staticmethod(generative)})()

    assert _fast_path_applies(as_pair(normal_guide), x, None)
    assert not _fast_path_applies(as_pair(mixed_guide), x, None)


def test_reparameterization_check_does_not_shift_the_rng(models):
    model, x, _ = models["vae"]
    pyro.set_rng_seed(8)
    assert _fast_path_applies(model, x, None)
    after_check = torch.rand(3)
    pyro.set_rng_seed(8)
    assert torch.equal(after_check, torch.rand(3))
