"""What the training loop scores on held-out data: the ELBO and the importance-weighted bound.

:func:`~pyro_vae.inference.train.fit` calls these at its evaluation epochs on the validation
split (or the test split without one), inside :func:`evaluation_rng` so that evaluating never
moves the training's random stream. They skip the public scorers' input checks (``fit``
validated and placed the data once) and, under torchrun, average every rank's shard.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from . import distributed
from .evaluate import _elbo, _log_likelihood
from .importance import elbo_has_terms


@torch.no_grad()
def held_out_elbo(model, x, y, world: int) -> tuple[float, dict]:
    """The single-sample ELBO of ``x`` (validation or test) with
    :func:`~pyro_vae.inference.evaluate.elbo`'s defaults, without its input checks: fit
    validated and placed the data once. Under torchrun each rank scores its shard.

    Returns ``(elbo, parts)``: the mean ELBO per example and its parts' means from the same
    draws, ``{"reconstruction": ..., "kl": ...}`` (``{}`` for a model whose ELBO has none)."""
    names = ["reconstruction", "kl"] if elbo_has_terms(model) else []

    def per_example(xs, ys):  # (n_shard, 1 + len(names)): the ELBO, then its parts
        estimate = _elbo(model, xs, ys, num_samples=1, batch_size=1000, sample_chunk=100)
        return torch.stack([estimate.per_example, *(estimate.parts[name] for name in names)], -1)

    if world > 1:
        means = distributed.sharded_means(per_example, x, y, width=1 + len(names))
    else:
        means = per_example(x, y).double().mean(0)
    means = means.tolist()
    return means[0], dict(zip(names, means[1:]))


@torch.no_grad()
def held_out_bound(model, x, y, num_samples: int, world: int) -> float:
    """The importance-weighted bound of ``num_samples`` samples (one draw per example) of
    ``x``, as :func:`~pyro_vae.inference.evaluate.log_likelihood` estimates it, without its
    input checks. Under torchrun each rank scores its shard."""
    chunk = min(num_samples, 100)
    batch = max(1, min(1000, 20_000 // chunk))  # at most 20,000 codes at a time, whatever K

    def per_example(xs, ys):
        return _log_likelihood(model, xs, ys, num_samples, batch, chunk, False).per_example

    if world > 1:
        return distributed.sharded_mean(per_example, x, y)
    return per_example(x, y).mean().item()


@contextmanager
def evaluation_rng(seed: int, epoch: int, device: torch.device):
    """A block whose random draws come from a stream of their own, a function of (seed, epoch).

    Evaluation during training must not consume the training stream: otherwise evaluating
    at one more epoch (a resumed run with another ``eval_every`` schedule, say) would change
    every later batch and draw. The training stream is restored on exit.
    """
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed((seed * 1_000_003 + epoch) % 2**63)
        yield
