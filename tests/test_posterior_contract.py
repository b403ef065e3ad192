"""The model contract's names: ``posterior(x)`` is a distribution for every model that has one,
and priors say ``needs_labels`` as models do (DESIGN's model contract).

Its batch shape is ``(batch,)`` and its event shape ``(latent_dim,)``; its mean is ``encode(x)``;
for the models with a guide it is the guide itself (its log-density of a code is the guide
site's, under the same inputs); and ``normal_marginals`` reads every family's per-coordinate
Normal marginals or says there are none.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_vae.models.distributions import normal_marginals
from pyro_vae.plots.compute import kl_per_dimension
from tests.test_model_devices import CASES, build, defines

F64 = torch.float64


def _inputs(model):
    x = torch.bernoulli(torch.full((5, 64), 0.4, dtype=F64))
    labels = torch.tensor([0, 1, 2, 1, 0])
    return x, (labels if model.needs_labels else None)


@pytest.mark.parametrize(("name", "arch"), CASES)
def test_posterior_is_a_distribution_over_codes_whose_mean_is_the_code(name, arch):
    model = build(name, arch)
    if not defines(model, "posterior"):
        pytest.skip(f"{name} has no posterior")
    x, y = _inputs(model)
    q = model.posterior(x, y)
    assert isinstance(q, torch.distributions.Distribution), type(q)
    code = model.encode(x, y)
    assert q.batch_shape == (5,) and q.event_shape == code.shape[-1:]
    torch.testing.assert_close(q.mean, code)
    assert q.log_prob(code).shape == (5,)


@pytest.mark.parametrize("guide", ["normal", "studentt"])
def test_the_vae_posterior_is_its_guide(guide):
    """``posterior(x).log_prob(z)`` equals the guide site's log-density of the same draw."""
    from pyro_vae.models import VAE, VAEConfig  # noqa: PLC0415

    vae = VAE(64, VAEConfig(latent_dim=3, hidden_dims=(8,), guide=guide)).double()
    x = torch.bernoulli(torch.full((5, 64), 0.4, dtype=F64))
    pyro.set_rng_seed(1)
    trace = pyro.poutine.trace(vae.guide).get_trace(x)
    site = trace.nodes["z"]
    torch.testing.assert_close(vae.posterior(x).log_prob(site["value"]), site["fn"].log_prob(site["value"]))


def test_normal_marginals_of_every_family():
    loc, scale = torch.randn(4, 3, dtype=F64), torch.rand(4, 3, dtype=F64) + 0.5
    got = normal_marginals(dist.Normal(loc, scale).to_event(1))
    torch.testing.assert_close(got[0], loc)
    torch.testing.assert_close(got[1], scale)
    cov = torch.tensor([[4.0, 1.0, 0.0], [1.0, 9.0, 0.5], [0.0, 0.5, 1.0]], dtype=F64)
    got = normal_marginals(dist.MultivariateNormal(loc, covariance_matrix=cov))
    torch.testing.assert_close(got[1], torch.tensor([2.0, 3.0, 1.0], dtype=F64).expand(4, 3))
    got = normal_marginals(dist.Delta(loc).to_event(1))
    torch.testing.assert_close(got[0], loc)
    torch.testing.assert_close(got[1], torch.zeros_like(loc))
    got = normal_marginals(dist.StudentT(5.0, loc, scale).to_event(1))
    torch.testing.assert_close(got[0], loc)
    assert got[1] is None  # no Normal marginals: no closed-form KL per dimension
    pair = (loc, scale)
    assert normal_marginals(pair) is pair  # a pre-contract (loc, scale) pair, passed through


def test_kl_per_dimension_reads_the_distribution():
    """The KL figure's numbers: KL(q(z_d | x) || N(0, 1)) from the posterior's own marginals."""
    from pyro_vae.models import VAE, VAEConfig  # noqa: PLC0415

    vae = VAE(64, VAEConfig(latent_dim=3, hidden_dims=(8,))).double()
    x = torch.bernoulli(torch.full((6, 64), 0.4, dtype=F64))
    q = vae.posterior(x)
    expected = torch.distributions.kl_divergence(q.base_dist, torch.distributions.Normal(0.0, 1.0)).mean(0)
    torch.testing.assert_close(kl_per_dimension(vae, x)["kl"], expected)


def test_a_prior_written_with_the_old_name_needs_label_still_reads_labels():
    """Priors said ``needs_label`` where models say ``needs_labels``; one name now, the old one warns."""
    from pyro_vae.models import VAE, VAEConfig  # noqa: PLC0415
    from pyro_vae.models.priors import ConditionalNormalPrior, Prior  # noqa: PLC0415

    with pytest.warns(DeprecationWarning, match="needs_label is now called needs_labels"):
        class OldStyle(ConditionalNormalPrior):
            needs_label = True

    assert OldStyle.needs_labels and not Prior.needs_labels and ConditionalNormalPrior.needs_labels
    vae = VAE(64, VAEConfig(latent_dim=2, hidden_dims=(8,)), num_classes=3)
    vae.prior = OldStyle(2, num_classes=3)
    assert vae.prior.needs_labels  # what the models and the figures read
