"""Scoring any model/guide pair in one currency: nats per example, higher is better.

Everything here is built on :func:`log_importance_weights` (in
:mod:`pyro_vae.inference.importance`, importable from here too), which draws K codes per example
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

import torch

from ..data import DataSplits
from ..data.streaming import batches, is_streamed, tensor_pair
from ..errors import check_positive_int
from ..models.base import _model_float
from .fingerprints import fingerprint, hash_values  # noqa: F401  (importable from here as before)
from .importance import (  # noqa: F401  (log_importance_weights, GlobalSiteError: re-exported)
    GlobalSiteError,
    elbo_has_terms,
    log_importance_weights,
    reduce_log_weights,
)


@dataclass
class Estimate:
    """A per-example estimate and its summary (mean and standard error of the mean).

    An ELBO's ``parts`` map ``"reconstruction"`` and ``"kl"`` to their per-example values
    ``(n,)`` (``per_example = reconstruction - kl``); None where there are none (a
    log-likelihood, M2's label-summed ELBO, a model without latents)."""

    per_example: torch.Tensor  # (n,)
    num_samples: int
    parts: dict | None = None

    @property
    def mean(self) -> float:
        return self.per_example.double().mean().item()  # as a float64 reader of per_example gets it

    @property
    def stderr(self) -> float | None:
        """Standard error of the mean; None for a single example (it has none)."""
        n = self.per_example.numel()
        return self.per_example.std().item() / math.sqrt(n) if n > 1 else None


def _unpack(data, y):
    """``(x, y)`` of an ``(x, y)`` pair, a TensorDataset or a :class:`~pyro_vae.data.DataSplits`
    (its test split); a tensor and streamed data (a torch Dataset, a DataLoader) as given."""
    if isinstance(data, DataSplits):
        data = data.split("test")
    elif isinstance(data, torch.Tensor) or is_streamed(data):
        return data, y
    pair = tensor_pair(data)
    if pair is None:
        return data, y  # refused by _prepare_inputs, naming what it got
    if y is not None:
        raise ValueError(f"y must be None when x is a {type(data).__name__} of (x, y): it carries the labels")
    return pair


def _prepare_inputs(model, x, y):
    """Check ``x`` (and ``y``) once per public call and return them on the model's device/dtype.

    ``x`` must be a ``(batch, D)`` tensor of finite values that fits the model (feature
    count, the likelihood's support: ``model.validate_data`` where the model has it); a
    model with ``needs_labels`` needs ``y`` of shape ``(batch,)``. Integer pixels are cast to
    the model's floating dtype. Raises ``TypeError``/``ValueError`` naming ``x`` or ``y``.
    """
    if not (isinstance(model, torch.nn.Module) and callable(getattr(model, "model", None))
            and callable(getattr(model, "guide", None))):
        raise TypeError(f"model must be a pyro-vae model (an nn.Module with model and guide methods), "
                        f"got {type(model).__name__}")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor of shape (batch, D) or (batch, C, H, W), a torch "
                        f"Dataset or a DataLoader, got {type(x).__name__}")
    if x.dim() in (3, 4):  # images (batch, H, W) or (batch, C, H, W): the models see (batch, D)
        x = x.reshape(x.shape[0], -1)
    if x.dim() != 2:
        raise ValueError(f"x must have shape (batch, D), (batch, H, W) or (batch, C, H, W), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"x holds no examples (shape {tuple(x.shape)}); nothing to evaluate")
    if x.dtype == torch.bool or x.is_complex():
        raise TypeError(f"x must hold real numbers, got dtype {x.dtype}")
    placement = _model_float(model)
    if placement is not None:
        device, dtype = placement
        x = x.to(device=device, dtype=dtype)
    elif not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    needs_labels = bool(getattr(model, "needs_labels", False))
    if y is not None:
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"y must be a torch.Tensor of shape (batch,), got {type(y).__name__}")
        if y.dim() != 1 or y.shape[0] != x.shape[0]:
            raise ValueError(f"y must have shape ({x.shape[0]},) to match x, got {tuple(y.shape)}")
        y = y.to(device=x.device)
    elif needs_labels:
        raise ValueError(
            f"model {type(model).__name__} needs labels: pass y of shape ({x.shape[0]},) with x")
    validate = getattr(model, "validate_data", None)
    if validate is not None:
        validate(x, y, name="x")
    elif not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN or Inf values")
    return x, y


@torch.no_grad()
def elbo(model, x, y=None, *, num_samples: int = 1, batch_size: int = 1000,
         sample_chunk: int = 100) -> Estimate:
    """The ELBO of each example, averaged over ``num_samples`` draws from the guide.

    ``x`` is ``(n, D)`` (cast to the model's device and dtype); ``y`` holds the labels
    ``(n,)`` of a model with ``needs_labels``. Raises ``ValueError`` for data that does not fit
    the model (feature count, shape, NaN/Inf, pixel support, missing labels).

    Example
    -------
    >>> import torch
    >>> from pyro_vae.models import VAE, VAEConfig
    >>> vae = VAE(64, VAEConfig(latent_dim=2, hidden_dims=(16,)))
    >>> elbo(vae, torch.bernoulli(torch.full((8, 64), 0.5)), num_samples=3).per_example.shape
    torch.Size([8])
    """
    _check_counts(num_samples, batch_size, sample_chunk)
    x, y = _unpack(x, y)
    if is_streamed(x):
        return _streamed(lambda xb, yb: elbo(model, xb, yb, num_samples=num_samples, batch_size=batch_size,
                                             sample_chunk=sample_chunk), x, y, batch_size, num_samples)
    x, y = _prepare_inputs(model, x, y)
    return _elbo(model, x, y, num_samples, batch_size, sample_chunk)


def _elbo(model, x, y, num_samples, batch_size, sample_chunk) -> Estimate:
    if getattr(model, "sums_out_labels", False):
        return _label_summed(model, x, num_samples, batch_size, sample_chunk, "mean", False)
    terms = reduce_log_weights(model, x, y, num_samples, batch_size, sample_chunk, "mean_parts")  # (n, 3)
    # contiguous columns: a strided one would be summed in another order (the last bits differ)
    elbo_values, reconstruction, kl = terms.T.contiguous()
    if not elbo_has_terms(model):  # latents summed out: the ELBO is exact and has no KL term
        return Estimate(elbo_values, num_samples)
    return Estimate(elbo_values, num_samples, parts={"reconstruction": reconstruction, "kl": kl})


def _label_summed(model, x, num_samples, batch_size, sample_chunk, reduce, progress) -> Estimate:
    """The ELBO or log p(x) of a model that sums its label out (``sums_out_labels``, M2).

    For each class c every example is scored with ``y = c`` through the same importance
    weights (``log w_c = log p(c) + log p(x, z | c) - log q(z | x, c)``, z from q(z | x, c)),
    with the model in eval mode (no training-only terms). Then
    ``log p(x) = logsumexp_c log p^(x, c)`` with ``log p^(x, c)`` the K-sample estimate, and the
    ELBO exact in y: ``sum_c q(c | x) (E_q(z|x,c)[log w_c] - log q(c | x))``, with
    ``model.classify(x)`` giving ``log q(y | x)`` ``(batch, C)``. Any given labels are not read:
    the figure is the marginal log p(x). ``(n,)``.
    """
    was_training = model.training
    model.eval()
    try:
        per_class = []
        for c in range(model.num_classes):
            labels = torch.full((x.shape[0],), c, dtype=torch.long, device=x.device)
            per_class.append(reduce_log_weights(model, x, labels, num_samples, batch_size, sample_chunk,
                                          reduce, progress))
        scores = torch.stack(per_class, -1)  # (n, C)
        if reduce != "mean":
            return Estimate(torch.logsumexp(scores, -1), num_samples)
        log_q = torch.cat([model.classify(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])
        q = log_q.exp()  # xlogy: a class of probability 0 adds 0, not 0 * inf
        return Estimate((q * scores).sum(-1) - torch.special.xlogy(q, q).sum(-1), num_samples)
    finally:
        model.train(was_training)


#: The most importance samples per example: K = 10**7 already costs 2,000 times the
#: literature's K = 5000; a larger K is a typo, not a budget (it would run for days).
MAX_SAMPLES = 10_000_000


def _check_counts(num_samples, batch_size, sample_chunk) -> None:
    check_positive_int("num_samples", num_samples)
    if num_samples > MAX_SAMPLES:
        raise ValueError(f"num_samples must be at most {MAX_SAMPLES:,} importance samples per example, "
                         f"got {num_samples:,}")
    check_positive_int("batch_size", batch_size)
    check_positive_int("sample_chunk", sample_chunk)


@torch.no_grad()
def log_likelihood(model, x, y=None, *, num_samples: int = 1000, batch_size: int = 100,
                   sample_chunk: int = 100, progress: bool = False) -> Estimate:
    """Importance-sampled log p(x) (log p(x | y) for conditional models) with the guide as proposal.

    ``log p(x) ~ logsumexp_k(log p(x, z_k) - log q(z_k | x)) - log K``, ``z_k ~ q(z | x)``:
    a consistent estimate whose expectation is a lower bound that tightens as K grows.
    Memory is bounded by ``batch_size * sample_chunk`` importance weights at a time, so
    K = 5000 over a whole test set runs in constant memory. For a model without latent
    variables one sample is exact and ``num_samples`` is ignored. Inputs are checked as in
    :func:`elbo`.
    """
    _check_counts(num_samples, batch_size, sample_chunk)
    x, y = _unpack(x, y)
    if is_streamed(x):
        return _streamed(lambda xb, yb: log_likelihood(model, xb, yb, num_samples=num_samples,
                                                       batch_size=batch_size, sample_chunk=sample_chunk),
                         x, y, batch_size, num_samples)
    x, y = _prepare_inputs(model, x, y)
    return _log_likelihood(model, x, y, num_samples, batch_size, sample_chunk, progress)


def _log_likelihood(model, x, y, num_samples, batch_size, sample_chunk, progress, *, done=None,
                    on_batch=None) -> Estimate:
    """:func:`log_likelihood` without its checks. ``done`` holds the values of the first
    examples (whole batches) that an earlier call finished, ``on_batch(values)`` is told the
    values so far after each batch (neither for a model that sums out its label: M2)."""
    if not model.is_bound:
        raise ValueError(
            f"{type(model).__name__} with a point-mass guide has no likelihood estimate: "
            f"its objective is not a bound on log p(x)"
        )
    if not model.has_latents:
        num_samples = 1
    if getattr(model, "sums_out_labels", False):
        return _label_summed(model, x, num_samples, batch_size, sample_chunk, "logmeanexp", progress)
    start = 0 if done is None else done.shape[0]
    report = None if on_batch is None else (
        lambda values: on_batch(values if done is None else torch.cat([done, values])))
    per = reduce_log_weights(model, x, y, num_samples, batch_size, sample_chunk, "logmeanexp", progress,
                             start=start, on_batch=report)
    return Estimate(per if done is None else torch.cat([done, per]), num_samples)


def evaluate(model, x, y=None, *, num_samples: int = 1000, elbo_samples: int = 1,
             batch_size: int = 100, sample_chunk: int = 100, progress: bool = False,
             pixel_max: int | None = None) -> dict:
    """The ``test`` object of ``metrics.json`` for data ``x`` (and labels ``y``).

    Keys: ``elbo``, ``elbo_stderr``, ``log_likelihood``, ``log_likelihood_stderr``,
    ``log_likelihood_samples``, ``exact``, ``bound``, ``conditional``, ``discrete``,
    ``num_examples``; the ELBO's two terms ``reconstruction`` (E_q[log p(x | z)]) and ``kl``
    (E_q[log q(z | x) - log p(z)]), each with its ``_stderr``, where the model's ELBO has
    them (not M2's, whose label is summed out, nor an exact one: PPCA, mixtures); and, for
    densities over grey levels whose integer scale ``pixel_max`` is given (255 for 8-bit
    images), ``bits_per_dim``. Values are nats per example (log scale, higher is better);
    ``log_likelihood`` is ``None`` when the model has no estimate (a point-mass guide), a
    standard error ``None`` for a single example.
    :func:`evaluate_per_example` also returns the per-example values.
    """
    return evaluate_per_example(model, x, y, num_samples=num_samples, elbo_samples=elbo_samples,
                                batch_size=batch_size, sample_chunk=sample_chunk,
                                progress=progress, pixel_max=pixel_max)[0]


def evaluate_per_example(model, x, y=None, *, num_samples: int = 1000, elbo_samples: int = 1,
                         batch_size: int = 100, sample_chunk: int = 100, progress: bool = False,
                         pixel_max: int | None = None, resume: dict | None = None,
                         on_batch=None) -> tuple[dict, dict]:
    """:func:`evaluate`'s ``test`` object and the per-example values behind it.

    The second item maps ``"elbo"``, where they exist the ELBO's ``"reconstruction"`` and
    ``"kl"``, and (where the model has an estimate) ``"log_likelihood"`` to float64 CPU
    tensors of shape ``(n,)``: what paired comparisons of two models on the same test set need.

    A long evaluation can be continued (in-memory data; not for M2, whose label is summed
    out): ``on_batch(state)`` is called after each batch of the log-likelihood with the state
    so far, a dict of float64 CPU tensors: ``"elbo"`` (and its parts) and ``"log_likelihood"``
    (the examples finished) and ``"rng"``, torch's RNG state then (``"cuda_rng"`` on a GPU).
    Given as ``resume`` to a later call with the same model, data and arguments, the ELBO is
    not recomputed and the log-likelihood continues where that state stood, with the random
    stream where it stood: the results equal an uninterrupted call's. The caller checks that
    model, data and arguments are the same (:mod:`pyro_vae.evaluation_progress`).
    """
    _check_counts(num_samples, batch_size, sample_chunk)
    check_positive_int("elbo_samples", elbo_samples)
    x, y = _unpack(x, y)
    if is_streamed(x):
        return _streamed_evaluation(model, x, y, num_samples=num_samples, elbo_samples=elbo_samples,
                                    batch_size=batch_size, sample_chunk=sample_chunk, pixel_max=pixel_max)
    x, y = _prepare_inputs(model, x, y)  # once, for both estimates
    was_training = model.training
    model.eval()
    try:
        # Resumable: batches of the log-likelihood (M2 sums its label out class by class: no).
        resumable = model.is_bound and not getattr(model, "sums_out_labels", False)
        done = None  # the log-likelihoods an earlier call finished
        if resume is None or not resumable:
            with torch.no_grad():
                elbo_est = _elbo(model, x, y, elbo_samples, batch_size * 10, sample_chunk)
        else:
            elbo_est, done = _resumed(resume, x, elbo_samples)
        result = {
            "elbo": elbo_est.mean,
            "elbo_stderr": elbo_est.stderr,
            "log_likelihood": None,
            "log_likelihood_stderr": None,
            "log_likelihood_samples": None,
            "exact": not model.has_latents,
            "bound": bool(model.is_bound),
            "conditional": bool(model.conditional),
            "discrete": is_discrete(model),
            "num_examples": int(x.shape[0]),
        }
        per_example = {"elbo": elbo_est.per_example.detach().to("cpu", torch.float64)}
        for name, values in (elbo_est.parts or {}).items():
            part = Estimate(values, elbo_samples)
            result[name], result[f"{name}_stderr"] = part.mean, part.stderr
            per_example[name] = values.detach().to("cpu", torch.float64)
        if model.is_bound:
            report = None
            if on_batch is not None and resumable:
                def report(values):
                    on_batch({**{key: value.detach().to("cpu", torch.float64) for key, value in per_example.items()},
                              "log_likelihood": values.detach().to("cpu", torch.float64), **_rng_states(x.device)})
            with torch.no_grad():
                ll = _log_likelihood(model, x, y, num_samples, batch_size, sample_chunk, progress,
                                     done=done, on_batch=report)
            result.update(log_likelihood=ll.mean, log_likelihood_stderr=ll.stderr,
                          log_likelihood_samples=ll.num_samples)
            per_example["log_likelihood"] = ll.per_example.detach().to("cpu", torch.float64)
            if not result["discrete"] and pixel_max is not None:
                result["bits_per_dim"] = bits_per_dim(ll.mean, x.shape[-1], pixel_max)
        return result, per_example
    finally:
        model.train(was_training)


def _rng_states(device: torch.device) -> dict:
    """torch's RNG state (and the device's on a GPU) as uint8 CPU tensors."""
    states = {"rng": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda_rng"] = torch.cuda.get_rng_state(device)
    return states


def _resumed(state: dict, x: torch.Tensor, elbo_samples: int) -> tuple[Estimate, torch.Tensor | None]:
    """The ELBO estimate and the finished log-likelihoods of an ``on_batch`` state, on ``x``'s
    device and dtype, with torch's random stream set where the state left it."""
    def back(values):
        return values.to(x.device, x.dtype)

    parts = {name: back(state[name]) for name in ("reconstruction", "kl") if name in state}
    estimate = Estimate(back(state["elbo"]), elbo_samples, parts=parts or None)
    torch.set_rng_state(state["rng"])
    if "cuda_rng" in state and x.device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda_rng"], x.device)
    done = state.get("log_likelihood")
    return estimate, None if done is None else back(done)


def _streamed(score, data, y, batch_size: int, num_samples: int) -> Estimate:
    """``score(x, y) -> Estimate`` over the batches of a torch Dataset or DataLoader, concatenated."""
    if y is not None:
        raise ValueError("y must be None when x is a torch Dataset or DataLoader: its batches carry the labels")
    estimates = [score(xb, yb) for xb, yb in batches(data, batch_size)]
    if not estimates:
        raise ValueError("x (a torch Dataset or DataLoader) yielded no examples; nothing to evaluate")
    parts = None
    if estimates[0].parts is not None:
        parts = {name: torch.cat([e.parts[name] for e in estimates]) for name in estimates[0].parts}
    return Estimate(per_example=torch.cat([e.per_example for e in estimates]), num_samples=num_samples,
                    parts=parts)


def _streamed_evaluation(model, data, y, **options) -> tuple[dict, dict]:
    """:func:`evaluate_per_example` batch by batch: the summaries of the concatenated values."""
    if y is not None:
        raise ValueError("y must be None when x is a torch Dataset or DataLoader: its batches carry the labels")
    results, parts = [], []
    for xb, yb in batches(data, 10 * options["batch_size"]):
        result, per_example = evaluate_per_example(model, xb, yb, **options)
        results.append(result)
        parts.append(per_example)
    if not results:
        raise ValueError("x (a torch Dataset or DataLoader) yielded no examples; nothing to evaluate")
    per_example = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
    result = dict(results[0])
    for key in per_example:
        est = Estimate(per_example=per_example[key], num_samples=1)
        result[key], result[f"{key}_stderr"] = est.mean, est.stderr
    result["num_examples"] = int(per_example["elbo"].numel())
    if "bits_per_dim" in result:
        result["bits_per_dim"] = bits_per_dim(result["log_likelihood"], model.data_dim, options["pixel_max"])
    return result, per_example


def is_discrete(model) -> bool:
    """Whether the model's log-likelihood is a probability mass (True) or a density (False)."""
    if hasattr(model, "discrete"):
        return bool(model.discrete)
    return bool(getattr(getattr(model, "likelihood", None), "discrete", True))


def bits_per_dim(log_likelihood_nats: float, data_dim: int, pixel_max: int = 255) -> float:
    """Bits per dimension of a density over pixels scaled to [0, 1] from integers 0..pixel_max.

    ``(-log p(x) + D log(pixel_max)) / (D log 2)``: the density of the [0, 1]-scaled pixels is
    converted to a density per unit of the original integer pixels. It is a proper discrete
    code length only for a density trained and evaluated on dequantized pixels; otherwise read
    it as a density in those units.
    """
    return (-log_likelihood_nats + data_dim * math.log(pixel_max)) / (data_dim * math.log(2))


# The latent diagnostics live in diagnostics.py; importable from here as before.
from .diagnostics import (  # noqa: E402, F401
    ACTIVE_UNIT_THRESHOLD,
    kl_normal,
    kl_to_standard_normal,
    latent_diagnostics,
)
