"""Scoring any model/guide pair in one currency: nats per example, higher is better.

Everything here is built on :func:`log_importance_weights`, which draws K codes per example
from the guide and replays the model on them, returning
``log w[k, i] = log p(x_i, z_ik) - log q(z_ik | x_i)`` of shape ``(K, batch)`` in one
vectorized pass (the guide and model run inside an extra plate of size K).

- the ELBO is the mean of ``log w`` over k;
- the importance-sampled log-likelihood is ``logsumexp_k log w - log K``;
- for a model without latent variables ``log w`` is its exact log-likelihood.

Example
-------
>>> import torch
>>> from pyro_vae.models import VAE, VAEConfig
>>> from pyro_vae.inference.evaluate import log_likelihood
>>> vae = VAE(64, VAEConfig(latent_dim=2, hidden_dims=(16,)))
>>> x = torch.bernoulli(torch.full((8, 64), 0.5))
>>> est = log_likelihood(vae, x, num_samples=100)
>>> est.per_example.shape
torch.Size([8])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyro
import pyro.poutine as poutine
import torch

from ..errors import check_positive_int


@dataclass
class Estimate:
    """A per-example estimate and its summary (mean and standard error of the mean)."""

    per_example: torch.Tensor  # (n,)
    num_samples: int

    @property
    def mean(self) -> float:
        return self.per_example.mean().item()

    @property
    def stderr(self) -> float:
        n = self.per_example.numel()
        return self.per_example.std().item() / math.sqrt(n) if n > 1 else float("nan")


def _with_sample_plate(fn, num_samples: int):
    """Run ``fn`` inside a plate of ``num_samples`` importance samples left of the data plate."""

    def wrapped(*args, **kwargs):
        with pyro.plate("importance_samples", num_samples, dim=-2):
            return fn(*args, **kwargs)

    return wrapped


def log_importance_weights(model, x: torch.Tensor, y: torch.Tensor | None = None,
                           num_samples: int = 1) -> torch.Tensor:
    """Return ``log p(x, z_k) - log q(z_k | x)`` for K codes per example, shape ``(K, batch)``.

    Gradients flow through reparameterized samples, so the result can be used as a training
    objective (the IWAE bound) as well as for evaluation under ``torch.no_grad()``.
    """
    check_positive_int("num_samples", num_samples)
    guide_trace = poutine.trace(_with_sample_plate(model.guide, num_samples)).get_trace(x, y)
    model_trace = poutine.trace(
        poutine.replay(_with_sample_plate(model.model, num_samples), trace=guide_trace)
    ).get_trace(x, y)
    shape = (num_samples, x.shape[0])
    log_w = x.new_zeros(shape)
    for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
        trace.compute_log_prob()
        for site in trace.nodes.values():
            if site["type"] == "sample":
                log_w = log_w + sign * site["log_prob"].expand(shape)
    return log_w


def _per_example(model, x, y, num_samples, batch_size, sample_chunk, reduce):
    """Apply ``reduce`` to ``log w`` chunked over examples and over samples; ``(n,)``.

    ``reduce`` is ``"mean"`` or ``"logmeanexp"`` over the K samples. Memory is bounded by
    ``batch_size * sample_chunk`` weights (and the network activations for them).
    """
    check_positive_int("num_samples", num_samples)
    check_positive_int("batch_size", batch_size)
    check_positive_int("sample_chunk", sample_chunk)
    out = []
    for start in range(0, x.shape[0], batch_size):
        xb = x[start:start + batch_size]
        yb = None if y is None else y[start:start + batch_size]
        pieces = []
        done = 0
        while done < num_samples:
            k = min(sample_chunk, num_samples - done)
            log_w = log_importance_weights(model, xb, yb, k)  # (k, b)
            pieces.append(log_w.sum(0) if reduce == "mean" else torch.logsumexp(log_w, 0))
            done += k
        stacked = torch.stack(pieces)  # (chunks, b)
        if reduce == "mean":
            out.append(stacked.sum(0) / num_samples)
        else:
            out.append(torch.logsumexp(stacked, 0) - math.log(num_samples))
    return torch.cat(out)


@torch.no_grad()
def elbo(model, x, y=None, *, num_samples: int = 1, batch_size: int = 1000,
         sample_chunk: int = 100) -> Estimate:
    """The ELBO of each example, averaged over ``num_samples`` draws from the guide."""
    per = _per_example(model, x, y, num_samples, batch_size, sample_chunk, "mean")
    return Estimate(per, num_samples)


@torch.no_grad()
def log_likelihood(model, x, y=None, *, num_samples: int = 1000, batch_size: int = 100,
                   sample_chunk: int = 100) -> Estimate:
    """Importance-sampled log p(x) (log p(x | y) for conditional models) with the guide as proposal.

    For a model without latent variables one sample is exact and ``num_samples`` is ignored.
    """
    if not model.is_bound:
        raise ValueError(
            f"{type(model).__name__} with a point-mass guide has no likelihood estimate: "
            f"its objective is not a bound on log p(x)"
        )
    if not model.has_latents:
        num_samples = 1
    per = _per_example(model, x, y, num_samples, batch_size, sample_chunk, "logmeanexp")
    return Estimate(per, num_samples)


def evaluate(model, x, y=None, *, num_samples: int = 1000, elbo_samples: int = 1,
             batch_size: int = 100, sample_chunk: int = 100) -> dict:
    """The ``test`` object of ``metrics.json`` for data ``x`` (and labels ``y``).

    Keys: ``elbo``, ``elbo_stderr``, ``log_likelihood``, ``log_likelihood_stderr``,
    ``log_likelihood_samples``, ``exact``, ``bound``, ``conditional``, ``discrete``,
    ``num_examples``. Values are nats per example (log scale, higher is better);
    ``log_likelihood`` is ``None`` when the model has no estimate (a point-mass guide).
    """
    was_training = model.training
    model.eval()
    try:
        elbo_est = elbo(model, x, y, num_samples=elbo_samples, batch_size=batch_size * 10,
                        sample_chunk=sample_chunk)
        result = {
            "elbo": elbo_est.mean,
            "elbo_stderr": elbo_est.stderr,
            "log_likelihood": None,
            "log_likelihood_stderr": None,
            "log_likelihood_samples": None,
            "exact": not model.has_latents,
            "bound": bool(model.is_bound),
            "conditional": bool(model.conditional),
            "discrete": bool(getattr(getattr(model, "likelihood", None), "discrete", True)),
            "num_examples": int(x.shape[0]),
        }
        if model.is_bound:
            ll = log_likelihood(model, x, y, num_samples=num_samples, batch_size=batch_size,
                                sample_chunk=sample_chunk)
            result.update(log_likelihood=ll.mean, log_likelihood_stderr=ll.stderr,
                          log_likelihood_samples=ll.num_samples)
        return result
    finally:
        model.train(was_training)
