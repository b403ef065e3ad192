"""Log importance weights of any model/guide pair, and their per-example reductions.

:func:`log_importance_weights` draws K codes per example from the guide and replays the model
on them, returning ``log w[k, i] = log p(x_i, z_ik) - log q(z_ik | x_i)`` of shape
``(K, batch)`` in one vectorized pass (the guide and model run inside an extra plate of size
K). :func:`reduce_log_weights` reduces them over K (mean: the ELBO; log-mean-exp: the
importance-sampled log-likelihood) in chunks of examples and samples, so memory stays bounded.
:mod:`pyro_vae.inference.evaluate` builds the public scores on these.

Example
-------
>>> import torch
>>> from pyro_vae.models import VAE, VAEConfig
>>> from pyro_vae.inference.importance import log_importance_weights
>>> vae = VAE(64, VAEConfig(latent_dim=2, hidden_dims=(16,)))
>>> x = torch.bernoulli(torch.full((8, 64), 0.5))
>>> log_importance_weights(vae, x, num_samples=5).shape
torch.Size([5, 8])
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import pyro
import torch
from tqdm.auto import tqdm

from ..errors import check_positive_int
from .heap import release_free_heap
from .tracing import record_sites, scaled_log_prob, scored_sites


def _with_sample_plate(fn, num_samples: int, device: torch.device):
    """Run ``fn`` inside a plate of ``num_samples`` importance samples left of the data plate."""

    def wrapped(*args, **kwargs):
        with pyro.plate("importance_samples", num_samples, dim=-2, device=device):
            return fn(*args, **kwargs)

    return wrapped


def log_importance_weights(model, x: torch.Tensor, y: torch.Tensor | None = None,
                           num_samples: int = 1) -> torch.Tensor:
    """Return ``log p(x, z_k) - log q(z_k | x)`` for K codes per example, shape ``(K, batch)``.

    Gradients flow through reparameterized samples, so the result can be used as a training
    objective (the IWAE bound) as well as for evaluation under ``torch.no_grad()``.
    """
    check_positive_int("num_samples", num_samples)
    return _log_weights_and_sites(model, x, y, num_samples)[0]


def _log_weights_and_sites(model, x, y, num_samples):
    """``(log_w, sites)``: :func:`log_importance_weights` and the sites it was computed from."""
    observed, latent, sites = _weight_terms(model, x, y, num_samples)
    return observed + latent, sites


def elbo_has_terms(model) -> bool:
    """Whether ``model``'s ELBO splits into a reconstruction and a KL term that pyro-vae reports:
    not where the latents are summed out (``has_latents`` False: PPCA, mixtures, whose ELBO is
    exact) nor where the label is (``sums_out_labels``: M2, scored class by class)."""
    return getattr(model, "has_latents", True) and not getattr(model, "sums_out_labels", False)


def _weight_terms(model, x, y, num_samples):
    """``(observed, latent, sites)``: ``log w`` split as ``observed + latent``, each ``(K, batch)``.

    ``observed`` sums the observed sites' log-densities (the model's ``log p(x | z)`` and any
    other observed site, less a guide's observed sites), ``latent`` the latent sites' (the
    model's ``log p(z)`` less the guide's ``log q(z | x)``): the ELBO's reconstruction term is
    the mean of ``observed`` over k, its KL term minus the mean of ``latent``. A KL weight
    multiplies ``latent`` alone (see :mod:`pyro_vae.inference.objectives`).
    """
    guide, generative = model.guide, model.model
    if num_samples > 1:  # K = 1 draws the same numbers without the plate's bookkeeping
        guide = _with_sample_plate(guide, num_samples, x.device)
        generative = _with_sample_plate(generative, num_samples, x.device)
    guide_sites = record_sites(guide, x, y)
    _check_per_example(guide_sites, "guide", model)
    model_sites = record_sites(generative, x, y, replay=guide_sites)
    _check_per_example(model_sites, "model", model)
    model_observed, model_latent = _sum_log_probs(model_sites)  # (K, batch), (batch,), a scalar or None
    if model_observed is None and model_latent is None:
        raise ValueError(f"{type(model).__name__}.model has no sample site; it must observe x")
    guide_observed, guide_latent = _sum_log_probs(guide_sites)  # None for an empty guide (latents summed out)
    shape = (num_samples, x.shape[0])
    observed = _difference(model_observed, guide_observed, shape, x)
    latent = _difference(model_latent, guide_latent, shape, x)
    return observed, latent, (guide_sites, model_sites)


def _difference(plus, minus, shape, like: torch.Tensor) -> torch.Tensor:
    """``plus - minus`` (either may be None: no such site) broadcast to ``shape``."""
    if plus is None and minus is None:
        return like.new_zeros(shape)
    total = -minus if plus is None else plus if minus is None else plus - minus
    return total if total.shape == shape else total.expand(shape)


class GlobalSiteError(ValueError):
    """A model or guide has a sample site outside the ``data`` plate (a global latent)."""


def _check_per_example(sites: dict, which: str, model) -> None:
    """Refuse sites outside the data plate: their log-density is not per example.

    Summed into ``log w`` it would be broadcast to every example (counted ``batch`` times),
    so neither per-example weights, nor the IWAE bound, nor the importance-sampled
    log-likelihood are defined for such a model.
    """
    for site in scored_sites(sites):
        if not any(frame.name == "data" for frame in site["cond_indep_stack"]):
            raise GlobalSiteError(
                f"{type(model).__name__}.{which} has the sample site {site['name']!r} outside the "
                f"'data' plate (a global latent): per-example importance weights, the IWAE "
                f"objective and the importance-sampled log-likelihood are not defined for it; "
                f"train it with objective 'elbo' or 'meanfield' (Pyro's Trace_ELBO)")


def _sum_log_probs(sites: dict):
    """``(observed, latent)``: the sums of the observed and of the latent sites' scaled
    log-densities (broadcast), each None where there is no such site."""
    totals = {True: None, False: None}
    for site in scored_sites(sites):
        term = scaled_log_prob(site)
        observed = bool(site["is_observed"])
        totals[observed] = term if totals[observed] is None else totals[observed] + term
    return totals[True], totals[False]


def reduce_log_weights(model, x, y, num_samples, batch_size, sample_chunk, reduce, progress=False, *,
                       start: int = 0, on_batch=None):
    """Apply ``reduce`` to ``log w`` chunked over examples and over samples; ``(n,)``.

    ``reduce`` is ``"mean"`` or ``"logmeanexp"`` over the K samples, or ``"mean_parts"``: the
    mean over K of ``log w`` and of its two parts, ``(n, 3)`` holding the ELBO, its
    reconstruction term and its KL term (``elbo = reconstruction - kl``; see
    :func:`_weight_terms`). Memory is bounded by
    ``batch_size * sample_chunk`` weights (and the network activations for them). Inputs are
    checked by the public callers, once; Pyro's per-distribution argument validation is off
    here (it re-checks every chunk's tensors for nothing: measured in
    ``benchmarks/loglik_throughput.py``).

    ``start`` (a multiple of ``batch_size``) skips the examples before it, whose batches an
    earlier call finished: the result covers ``x[start:]``. ``on_batch(values)``, where given,
    is called after each batch with the values of ``x[start:end]`` so far (``end`` the
    batch's last example + 1), for a caller that keeps a long evaluation's progress.
    """
    if start % batch_size and start != x.shape[0]:
        raise ValueError(f"start must be a multiple of batch_size {batch_size} (a batch boundary) or all "
                         f"{x.shape[0]} examples, got {start}")
    out = []
    starts = range(start, x.shape[0], batch_size)
    # No param-store registration either: scoring needs the module's parameters, not Pyro's
    # global store (and registering them at every chunk costs time and leaves entries behind).
    unregistered = getattr(model, "optimized_by_torch", None)
    with pyro.validation_enabled(False), (unregistered() if unregistered else nullcontext()):
        for start in tqdm(starts, desc=f"log p(x), K={num_samples}", disable=not progress, leave=False):
            xb = x[start:start + batch_size]
            yb = None if y is None else y[start:start + batch_size]
            pieces = []
            done = 0
            while done < num_samples:
                k = min(sample_chunk, num_samples - done)
                # The previous chunk's sites (its decoder output above all) are released only
                # once this chunk has allocated its own: freed first, glibc would return those
                # pages to the system and fault them back in on the next chunk.
                observed, latent, sites = _weight_terms(model, xb, yb, k)  # (k, b) each
                log_w = observed + latent
                if reduce == "logmeanexp":
                    pieces.append(torch.logsumexp(log_w, 0))
                elif reduce == "mean":
                    pieces.append(log_w.sum(0))
                else:  # (b, 3): the ELBO and its parts, summed over this chunk's draws
                    pieces.append(torch.stack([log_w.sum(0), observed.sum(0), -latent.sum(0)], -1))
                done += k
            stacked = torch.stack(pieces)  # (chunks, b) or (chunks, b, 3)
            if reduce == "logmeanexp":
                out.append(torch.logsumexp(stacked, 0) - math.log(num_samples))
            else:
                out.append(stacked.sum(0) / num_samples)
            del log_w, observed, latent, sites
            if x.device.type == "cpu":  # the tensors of a GPU evaluation are not on the C heap
                release_free_heap()
            if on_batch is not None:
                on_batch(torch.cat(out))
    return torch.cat(out) if out else x.new_zeros((0,) if reduce != "mean_parts" else (0, 3))
