"""The lean scoring paths are taken only where they are exact (issue 14: safe fast path)."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyro_vae.inference.evaluate import log_likelihood
from pyro_vae.inference.objectives import build_objective
from pyro_vae.models.distributions import DiagonalNormal


class GlobalLatent(nn.Module):
    """A model with one global latent b ~ N(0, 1) outside the data plate, and per-example z."""

    needs_labels, is_bound, has_latents = False, True, True

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(0.3, dtype=torch.float64))
        self.q_loc = nn.Parameter(torch.tensor(0.1, dtype=torch.float64))
        self.encoder = nn.Linear(3, 1).double()

    def model(self, x, y=None):
        b = pyro.sample("b", dist.Normal(torch.zeros((), dtype=x.dtype), 1.0))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], dtype=x.dtype), 1.0))
            pyro.sample("x", dist.Normal((b + self.weight * z).unsqueeze(-1).expand(x.shape), 1.0)
                        .to_event(1), obs=x)

    def guide(self, x, y=None):
        pyro.sample("b", dist.Normal(self.q_loc, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.encoder(x).squeeze(-1), 1.0))


@pytest.mark.parametrize("batch", [1, 8])
def test_global_latent_elbo_equals_trace_elbo(batch):
    torch.manual_seed(batch)
    model, x = GlobalLatent(), torch.randn(batch, 3, dtype=torch.float64)
    pyro.set_rng_seed(0)
    ours = build_objective("elbo").loss(model, x)
    ours_grads = torch.autograd.grad(ours, list(model.parameters()))
    pyro.set_rng_seed(0)
    pyros = pyro.infer.Trace_ELBO(max_plate_nesting=1).differentiable_loss(model.model, model.guide, x)
    pyros_grads = torch.autograd.grad(pyros, list(model.parameters()))
    # the old fast path counted log q(b) - log p(b) once per example: off by (batch - 1) of it
    torch.testing.assert_close(ours, pyros, rtol=0, atol=1e-12)
    for a, b in zip(ours_grads, pyros_grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_global_latent_has_no_per_example_bound():
    model, x = GlobalLatent(), torch.randn(4, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"site 'b' outside the 'data' plate .* objective 'elbo'"):
        build_objective("iwae", particles=3).loss(model, x)
    with pytest.raises(ValueError, match="site 'b' outside the 'data' plate"):
        log_likelihood(model, x, num_samples=5)


def test_builtin_vae_keeps_the_fast_path(monkeypatch):
    from pyro_vae.models import VAE, VAEConfig

    vae = VAE(6, VAEConfig(latent_dim=2, hidden_dims=(4,)))
    monkeypatch.setattr(pyro.infer.Trace_ELBO, "differentiable_loss",
                        lambda *a, **k: pytest.fail("the VAE left the fast path"))
    loss = build_objective("elbo").loss(vae, torch.bernoulli(torch.full((5, 6), 0.5)))
    assert loss.requires_grad


def test_lean_normal_scores_a_no_grad_draw_like_normal():
    loc = torch.tensor([0.5, -1.0], dtype=torch.float64, requires_grad=True)
    scale = torch.tensor([0.7, 1.3], dtype=torch.float64, requires_grad=True)
    q = DiagonalNormal(loc, scale)
    with torch.no_grad():
        value = q.rsample()  # a constant: its log-density depends on loc and scale
    lean = q.log_prob(value)
    reference = dist.Normal(loc, scale).to_event(1).log_prob(value)
    grads = torch.autograd.grad(lean, (loc, scale))
    expected = torch.autograd.grad(reference, (loc, scale))
    torch.testing.assert_close(lean, reference)
    for a, b in zip(grads, expected):
        torch.testing.assert_close(a, b)
    assert grads[0].abs().sum() > 0  # the lean form would have given exactly 0


def test_lean_normal_fast_form_for_a_draw_with_its_graph():
    loc = torch.tensor([0.5, -1.0], dtype=torch.float64, requires_grad=True)
    scale = torch.tensor([0.7, 1.3], dtype=torch.float64, requires_grad=True)
    q = DiagonalNormal(loc, scale)
    value = q.rsample()
    lean = q.log_prob(value)
    assert lean.grad_fn is not None and "Normal" not in type(lean.grad_fn).__name__
    total = torch.autograd.grad(lean, (loc, scale), allow_unused=True)
    total = [torch.zeros_like(t) if g is None else g for g, t in zip(total, (loc, scale))]
    reference = torch.autograd.grad(dist.Normal(loc, scale).to_event(1).log_prob(value), (loc, scale))
    for a, b in zip(total, reference):  # the total derivative through the draw (0 for loc)
        torch.testing.assert_close(a, b)
