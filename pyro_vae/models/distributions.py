"""Lean versions of the three distributions on every VAE training step.

Each is a ``pyro.distributions.Independent`` over the last dimension, equal in value and in
gradient to the ``dist.X(...).to_event(1)`` it replaces (tested against them), with the
per-step work that the generic classes do for every possible use removed:

- :class:`DiagonalNormal`, the guide ``q(z | x)``: ``rsample`` remembers the standard-normal
  noise ``eps`` it drew, and ``log_prob`` of that very draw is computed from it,
  ``-eps^2 / 2 - log(scale) - log(2 pi) / 2`` summed over the event, instead of recomputing
  ``(z - loc) / scale``. Its gradient with respect to the parameters is the same total
  derivative: with ``z = loc + scale * eps``, the paths through ``z`` and through
  ``(loc, scale)`` cancel except for ``-d log(scale)``. Any other value goes the generic way
  (the draw is recognized by identity: a draw modified in place is not supported);
  ``log(scale)`` is taken on the scale as given, before a plate of importance samples
  expands it;
- :class:`StandardNormal`, the prior ``N(0, I)``: ``-z^2 / 2 - log(2 pi) / 2``, without
  the loc/scale broadcasting of a general Normal;
- :class:`BernoulliPixels`, the Bernoulli likelihood: the binary cross-entropy is summed over
  the pixels before it is negated (one pass over ``(batch, D)`` fewer, forward and backward);
  without gradients (evaluation) an exact in-place form with two temporaries replaces the
  cross-entropy kernel's four.

All three return themselves from ``expand`` to their own batch shape: ``pyro.plate``
expands the distribution at every sample site, which for the common case of a batch shape
that already fits would build two new distribution objects per site and step.

Example
-------
>>> import torch
>>> q = DiagonalNormal(torch.zeros(3, 2), torch.ones(3, 2))
>>> z = q.rsample()
>>> torch.allclose(q.log_prob(z), torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1))
True
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from torch.nn import functional as F

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _bernoulli_log_prob_no_grad(logits: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``sum_d x_d * l_d - softplus(l_d)`` with two temporaries of the full size (evaluation).

    Written as ``-((|l|/2 + l * (1/2 - x)) + log1p(exp(-|l|)))``: for binary ``x`` the first
    part, ``max(l, 0) - x * l``, is computed exactly (halving and the sign are exact), so it
    cancels exactly where it should (x = 1 with a large positive logit) before the small
    ``log1p`` term is added: nothing is lost to ``softplus(l) - l``. The cross-entropy kernel
    gives the same values but allocates four temporaries, which for the ``(K, batch, D)``
    logits of an importance-sampled evaluation is most of its cost.
    """
    half_minus_x = 0.5 - value  # the size of value, usually (batch, D): small
    neg_log_p = logits.abs().mul_(0.5)  # |l| / 2
    if neg_log_p.shape == torch.broadcast_shapes(neg_log_p.shape, half_minus_x.shape):
        neg_log_p.addcmul_(logits, half_minus_x)  # + l (1/2 - x): max(l, 0) - x l
    else:  # value has more batch dimensions than the logits
        neg_log_p = neg_log_p + logits * half_minus_x
    neg_log_p += logits.abs().neg_().exp_().log1p_()  # + log1p(exp(-|l|)), in [0, log 2]
    return -neg_log_p.sum(-1)


class _LeanIndependent(dist.Independent):
    """An Independent over one event dimension whose ``expand`` to its own batch shape is free."""

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        if _instance is None and batch_shape == self.batch_shape:
            return self
        new = _instance if _instance is not None else type(self).__new__(type(self))
        return super().expand(batch_shape, _instance=new)

    def _fit_batch(self, log_p: torch.Tensor) -> torch.Tensor:
        """``log_p`` broadcast to the batch shape (a value may have fewer batch dimensions)."""
        if log_p.shape == self.batch_shape:
            return log_p
        return log_p.expand(torch.broadcast_shapes(log_p.shape, self.batch_shape))


class DiagonalNormal(_LeanIndependent):
    """``Normal(loc, scale).to_event(1)`` that scores its own reparameterized draws cheaply.

    Parameters
    ----------
    loc, scale : torch.Tensor
        ``(..., d)`` each (broadcastable); the event is the last dimension.

    Example
    -------
    >>> import torch
    >>> q = DiagonalNormal(torch.zeros(2), torch.full((2,), 2.0))
    >>> round(q.log_prob(torch.zeros(2)).item(), 4)  # 2 * log N(0; 0, 2^2)
    -3.2242
    """

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, validate_args=None):
        super().__init__(dist.Normal(loc, scale, validate_args=validate_args), 1,
                         validate_args=validate_args)
        # The scale as given, before any expansion: log(scale) is computed on it, once per
        # example rather than once per importance sample of a plate-expanded copy.
        self._given_scale = self.base_dist.scale  # broadcast against loc, not yet expanded

    def expand(self, batch_shape, _instance=None):
        new = super().expand(batch_shape, _instance)
        if new is not self:
            new._given_scale = self._given_scale
        return new

    def rsample(self, sample_shape=torch.Size()):
        base = self.base_dist
        shape = self._extended_shape(sample_shape)
        # The same draw as Normal.rsample: standard-normal noise, then loc + noise * scale.
        noise = torch.empty(shape, dtype=base.loc.dtype, device=base.loc.device).normal_()
        value = base.loc + noise * base.scale
        self._last_draw = (value, noise)
        return value

    def _graph_carried(self, value) -> bool:
        """Whether scoring from the noise gives the right gradients for ``value``.

        The lean form is exact in value and in total derivative for a draw that carries its
        graph (``d log q(loc + noise * scale) / d loc`` is 0 through the draw). A draw made
        under ``torch.no_grad()`` and scored with gradients on is a constant: its log-density
        has non-zero partial derivatives in ``loc`` and ``scale``, so it takes the full form.
        """
        base = self.base_dist
        needs = torch.is_grad_enabled() and (base.loc.requires_grad or base.scale.requires_grad)
        return value.requires_grad or not needs

    def log_prob(self, value):
        draw = getattr(self, "_last_draw", None)
        if draw is None or value is not draw[0] or not self._graph_carried(value):
            return super().log_prob(value)
        if self._validate_args:
            self._validate_sample(value)
        noise = draw[1]  # (*sample_shape, *batch_shape, d)
        sum_log_scale = self._given_scale.log().sum(-1)  # broadcasts against the batch shape
        log_p = -(0.5 * noise.square().sum(-1) + sum_log_scale) - noise.shape[-1] * _HALF_LOG_2PI
        return self._fit_batch(log_p)


class StandardNormal(_LeanIndependent):
    """``Normal(0, 1).to_event(1)`` over ``d`` dimensions, on ``zeros``' device and dtype.

    Parameters
    ----------
    zeros : torch.Tensor
        ``(..., d)`` zeros: the event size, the batch shape, the device and the dtype.

    Example
    -------
    >>> import torch
    >>> round(StandardNormal(torch.zeros(2)).log_prob(torch.zeros(2)).item(), 4)  # -log(2 pi)
    -1.8379
    """

    def __init__(self, zeros: torch.Tensor, validate_args=None):
        super().__init__(dist.Normal(zeros, torch.ones_like(zeros), validate_args=validate_args), 1,
                         validate_args=validate_args)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        log_p = -0.5 * value.square().sum(-1) - value.shape[-1] * _HALF_LOG_2PI
        return self._fit_batch(log_p)


class BernoulliPixels(_LeanIndependent):
    """``Bernoulli(logits=logits).to_event(1)``: independent binary pixels in the last dimension.

    Parameters
    ----------
    logits : torch.Tensor
        ``(..., D)`` log-odds of each pixel being 1.

    Example
    -------
    >>> import torch
    >>> round(BernoulliPixels(torch.zeros(2)).log_prob(torch.tensor([0.0, 1.0])).item(), 4)
    -1.3863
    """

    def __init__(self, logits: torch.Tensor, validate_args=None):
        super().__init__(dist.Bernoulli(logits=logits, validate_args=validate_args), 1,
                         validate_args=validate_args)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        logits = self.base_dist.logits
        # log p(x) = sum_d x_d * l_d - softplus(l_d).
        if not (torch.is_grad_enabled() and (logits.requires_grad or value.requires_grad)):
            return self._fit_batch(_bernoulli_log_prob_no_grad(logits, value))
        if logits.shape != value.shape:
            logits, value = torch.broadcast_tensors(logits, value)
        # The cross-entropy kernel: the fastest forward and backward for training.
        log_p = -F.binary_cross_entropy_with_logits(logits, value, reduction="none").sum(-1)
        return self._fit_batch(log_p)


def normal_marginals(q) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Each coordinate's marginal of a posterior ``q``: ``(loc, scale)``, ``(n, d)`` each.

    ``q`` is what a model's ``posterior(x)`` returns: a distribution with batch shape ``(n,)``
    and event shape ``(d,)``. Where its marginals are Normal (a diagonal Normal; a full or
    low-rank multivariate Normal, read through its covariance's diagonal) the scale is theirs; a point
    mass (``Delta``) has scale 0; for any other family (Student-t ...) the scale is None and
    the loc is its mean. A ``(loc, scale)`` pair, what ``posterior`` returned before it
    returned distributions, is passed through.

    Example
    -------
    >>> import torch
    >>> q = torch.distributions.MultivariateNormal(torch.zeros(4, 2), torch.diag(torch.tensor([4.0, 9.0])))
    >>> normal_marginals(q)[1][0].tolist()
    [2.0, 3.0]
    """
    if isinstance(q, tuple):
        return q
    base = q.base_dist if isinstance(q, torch.distributions.Independent) else q
    shape = q.batch_shape + q.event_shape
    if isinstance(base, torch.distributions.Normal):
        return base.loc.expand(shape), base.scale.expand(shape)
    if isinstance(base, torch.distributions.MultivariateNormal):
        return base.loc.expand(shape), base.covariance_matrix.diagonal(dim1=-2, dim2=-1).sqrt().expand(shape)
    if isinstance(base, torch.distributions.LowRankMultivariateNormal):  # cov = F F^T + diag(D)
        variance = base.cov_factor.pow(2).sum(-1) + base.cov_diag
        return base.loc.expand(shape), variance.sqrt().expand(shape)
    if isinstance(base, dist.Delta):
        return base.v.expand(shape), torch.zeros(shape, dtype=base.v.dtype, device=base.v.device)
    return q.mean, None
