"""A mixture of diagonal Gaussians scored with matrix products: the mixture priors' density.

torch's ``MixtureSameFamily(Categorical, Normal(...).to_event(1))`` scores ``N`` codes against
``C`` components by broadcasting them to ``(N, C, d)`` and making several such tensors. An
importance-sampled evaluation scores ``K * batch`` codes per block: with a VampPrior of
``C = 500`` pseudo-inputs, 100 x 100 codes and ``d = 50`` that is 1 GB per temporary, and the
evaluation runs about 15 times slower than with the standard prior.

:class:`DiagonalNormalMixture` computes the same log-density with the square expanded::

    log N(z; m_c, s_c) = -1/2 [ z^2 . (1/s_c^2) - 2 z . (m_c/s_c^2) + sum m_c^2/s_c^2 ]
                         - sum log s_c - d/2 log(2 pi)

so the ``(N, C)`` component log-densities are one matrix product of ``[z^2, z, 1]``
``(N, 2d + 1)`` with ``[-1/(2 s^2), m/s^2, constant]`` ``(C, 2d + 1)``, the constant holding
the terms without z and the log-weight; a log-sum-exp over components finishes it. Codes go through in blocks of at most
:data:`BLOCK_ELEMENTS` code-component pairs, so memory is bounded whatever ``N`` is.

Precision: the expansion subtracts terms of size ``|z|^2/s^2`` to get ``|z - m|^2/s^2``. In
float32 (500 components, d = 50, means uniform in a 6-unit box, scales 0.05 .. 2) it loses up
to 4e-3 nats for codes drawn near the components (1.6e-2 with the box 3 units off the origin),
where torch's float32 broadcast form loses 8e-6. The products and the log-sum-exp are
therefore computed in float64 and the result cast back to the codes' dtype: float32 results
are then the exact value rounded once (measured: at most 6e-8 relative, 2e-6 nats near the
components; torch's float32 form: 2e-6 relative), float64 ones agree with the broadcast form
to 1e-11 relative (``tests/test_mixture_prior_density.py``). On a device without float64
(Apple's MPS) the expansion runs in the input dtype.

Example
-------
>>> import torch
>>> mix = DiagonalNormalMixture(torch.zeros(3), torch.randn(3, 2), torch.ones(3, 2))
>>> mix.log_prob(torch.zeros(4, 5, 2)).shape
torch.Size([4, 5])
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from torch.distributions import constraints
from torch.nn import functional as F

from ..errors import check_choice

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
_EXP_FLOOR = -80.0  # see _logsumexp_last

#: Most code-component pairs scored at once (the ``(codes, components)`` block of one product):
#: 4M, 32 MiB in float64.
BLOCK_ELEMENTS = 1 << 22

#: How :func:`diagonal_normal_mixture` builds a mixture: ``expansion`` is
#: :class:`DiagonalNormalMixture`; ``broadcast`` is torch's ``MixtureSameFamily``, the
#: reference (kept to compare against, e.g. ``benchmarks/loglik_throughput.py --vamp``).
MIXTURE_FORMS = ("broadcast", "expansion")


def _compute_dtype(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """float64 (the expansion cancels; see the module notes), unless the device lacks it."""
    return dtype if device.type == "mps" else torch.promote_types(dtype, torch.float64)


def _logsumexp_last(lc: torch.Tensor) -> torch.Tensor:
    """``logsumexp(lc, -1)``; without gradients in place (no temporaries of ``lc``'s size).

    Terms more than 80 nats below the largest are raised to ``exp(-80)`` (2e-35 of it, far
    under float64 rounding of the sum, and with no gradient): ``exp`` of an underflowing
    argument takes a slow path on x86, 20 times slower, which would dominate the cost.
    """
    top = lc.detach().amax(-1, keepdim=True)
    empty = top.squeeze(-1) == -math.inf  # every term -inf: the sum is 0
    top = torch.where(top.isinf(), torch.zeros_like(top), top)  # as torch.logsumexp
    if torch.is_grad_enabled() and lc.requires_grad:
        out = (lc - top).clamp(min=_EXP_FLOOR).exp().sum(-1).log() + top.squeeze(-1)
    else:
        out = lc.sub_(top).clamp_(min=_EXP_FLOOR).exp_().sum(-1).log_().add_(top.squeeze(-1))
    return out.masked_fill(empty, -math.inf)


class DiagonalNormalMixture(dist.TorchDistribution):
    """``sum_c w_c N(z; m_c, diag(s_c^2))`` with event shape ``(d,)``, scored by matrix products.

    Equal in value and gradient to ``MixtureSameFamily(Categorical(logits=logits),
    Normal(locs, scales).to_event(1))`` (tested); see the module notes for how and why.

    Parameters
    ----------
    logits : torch.Tensor
        ``(*batch, C)`` unnormalized log mixture weights.
    locs, scales : torch.Tensor
        ``(*batch, C, d)`` each (broadcastable): component means and standard deviations.

    The batch shape is that of the parameters (``()`` for a prior shared by all examples);
    ``expand`` (as ``pyro.plate`` does) keeps the parameters as they are, so the codes of an
    importance-sampled batch, ``(K, batch, d)``, are scored against ``C`` components, not
    against ``K * batch`` copies of them. Sampling draws a component, then that component's
    Normal (no reparameterized draw, as for ``MixtureSameFamily``).
    """

    arg_constraints = {"logits": constraints.real_vector, "locs": constraints.real,
                       "scales": constraints.positive}
    support = constraints.real_vector
    has_rsample = False

    def __init__(self, logits: torch.Tensor, locs: torch.Tensor, scales: torch.Tensor,
                 validate_args=None):
        if locs.dim() < 2 or scales.dim() < 2 or logits.dim() < 1:
            raise ValueError(
                "DiagonalNormalMixture needs logits (..., C) and locs, scales (..., C, d); got "
                f"shapes {tuple(logits.shape)}, {tuple(locs.shape)}, {tuple(scales.shape)}")
        locs, scales = torch.broadcast_tensors(locs, scales)
        if logits.shape[-1] != locs.shape[-2]:
            raise ValueError(f"DiagonalNormalMixture: logits have {logits.shape[-1]} components, "
                             f"locs and scales {locs.shape[-2]}")
        self.logits, self.locs, self.scales = logits, locs, scales
        self._param_batch = torch.broadcast_shapes(logits.shape[:-1], locs.shape[:-2])
        super().__init__(self._param_batch, locs.shape[-1:], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        if _instance is None and batch_shape == self.batch_shape:
            return self
        try:
            fits = torch.broadcast_shapes(batch_shape, self._param_batch) == batch_shape
        except RuntimeError:
            fits = False
        if not fits:
            raise ValueError(f"DiagonalNormalMixture: cannot expand batch shape "
                             f"{tuple(self.batch_shape)} to {tuple(batch_shape)}")
        new = self._get_checked_instance(DiagonalNormalMixture, _instance)
        new.logits, new.locs, new.scales = self.logits, self.locs, self.scales
        new._param_batch = self._param_batch
        super(DiagonalNormalMixture, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    # ----------------------------------------------------------------- the reference form

    @property
    def mixture_distribution(self) -> dist.Categorical:
        """The component weights as ``MixtureSameFamily`` holds them, batch shape ``batch_shape``."""
        c = self.logits.shape[-1]
        return dist.Categorical(logits=self.logits.expand(self.batch_shape + (c,)),
                                validate_args=False)

    @property
    def component_distribution(self) -> dist.TorchDistribution:
        """The components as ``MixtureSameFamily`` holds them, batch shape ``batch_shape + (C,)``."""
        shape = self.batch_shape + self.locs.shape[-2:]
        return dist.Normal(self.locs.expand(shape), self.scales.expand(shape),
                           validate_args=False).to_event(1)

    def as_mixture_same_family(self) -> dist.MixtureSameFamily:
        """The same distribution as torch's broadcasting ``MixtureSameFamily`` (the reference)."""
        return dist.MixtureSameFamily(self.mixture_distribution, self.component_distribution,
                                      validate_args=self._validate_args)

    # ----------------------------------------------------------------- moments and draws

    @property
    def mean(self) -> torch.Tensor:
        weights = torch.softmax(self.logits, -1).unsqueeze(-1)  # (*params_batch, C, 1)
        mean = (weights * self.locs).sum(-2)
        return mean.expand(self.batch_shape + self.event_shape)

    @property
    def variance(self) -> torch.Tensor:
        weights = torch.softmax(self.logits, -1).unsqueeze(-1)  # (*params_batch, C, 1)
        mean = (weights * self.locs).sum(-2, keepdim=True)
        variance = (weights * (self.scales.square() + (self.locs - mean).square())).sum(-2)
        return variance.expand(self.batch_shape + self.event_shape)

    def sample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)  # (*sample, *batch, d)
        c, d = self.locs.shape[-2:]
        with torch.no_grad():
            component = self.mixture_distribution.sample(sample_shape)  # (*sample, *batch)
            index = component[..., None, None].expand(*component.shape, 1, d)
            loc = self.locs.expand(shape[:-1] + (c, d)).gather(-2, index).squeeze(-2)
            scale = self.scales.expand(shape[:-1] + (c, d)).gather(-2, index).squeeze(-2)
            noise = torch.randn(shape, dtype=loc.dtype, device=loc.device)
            return loc + scale * noise

    # ----------------------------------------------------------------- the density

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        c, d = self.locs.shape[-2:]
        out_dtype = torch.promote_types(value.dtype, self.locs.dtype)
        dtype = _compute_dtype(out_dtype, value.device)
        # Codes (*sample, *params_batch, d) -> (P, n, d): P parameter sets (1 for a prior shared
        # by every example), n codes scored against each.
        nb = len(self._param_batch)
        full = torch.broadcast_shapes(value.shape[:-1], self._param_batch)
        param_batch = full[len(full) - nb:]
        p, n = param_batch.numel(), full[: len(full) - nb].numel()
        codes = value.expand(full + (d,)).reshape(n, p, d).transpose(0, 1)  # (P, n, d)

        # Per component, the coefficients of [z^2, z, 1]: [-1/(2 s^2), m/s^2, constant], the
        # constant holding the log-weight (folded into the product: no pass to add it).
        locs, scales = self.locs.to(dtype), self.scales.to(dtype)
        precision = scales.reciprocal().square()  # (*params_batch, C, d)
        loc_precision = locs * precision
        constant = (F.log_softmax(self.logits.to(dtype), -1).expand(locs.shape[:-1])
                    - scales.log().sum(-1) - 0.5 * (locs * loc_precision).sum(-1)
                    - d * _HALF_LOG_2PI)  # (*params_batch, C)
        coefficients = torch.cat([-0.5 * precision, loc_precision, constant.unsqueeze(-1)], -1)
        coefficients = coefficients.expand(param_batch + (c, 2 * d + 1)).reshape(p, c, 2 * d + 1)
        coefficients = coefficients.transpose(1, 2)  # (P, 2d + 1, C)

        step = max(1, BLOCK_ELEMENTS // (p * c))
        pieces = []
        for start in range(0, n, step):
            z = codes[:, start:start + step].to(dtype)  # (P, m, d)
            features = torch.cat([z.square(), z, torch.ones_like(z[..., :1])], -1)  # (P, m, 2d + 1)
            per_component = torch.bmm(features, coefficients)  # (P, m, C)
            pieces.append(_logsumexp_last(per_component))  # (P, m)
        log_p = (pieces[0] if len(pieces) == 1 else torch.cat(pieces, -1)).to(out_dtype)
        log_p = log_p.transpose(0, 1).reshape(full)
        if log_p.shape != self.batch_shape:  # an expanded batch, or codes with fewer dims
            log_p = log_p.expand(torch.broadcast_shapes(log_p.shape, self.batch_shape))
        return log_p


def diagonal_normal_mixture(logits: torch.Tensor, locs: torch.Tensor, scales: torch.Tensor,
                            form: str = "expansion") -> dist.TorchDistribution:
    """The mixture of ``Normal(locs, scales).to_event(1)`` weighted by ``softmax(logits)``.

    ``form`` (one of :data:`MIXTURE_FORMS`): ``"expansion"`` returns a
    :class:`DiagonalNormalMixture`; ``"broadcast"`` torch's ``MixtureSameFamily`` (the form
    the mixture priors used before, kept as the reference).
    """
    check_choice("mixture form", form, MIXTURE_FORMS)
    mixture = DiagonalNormalMixture(logits, locs, scales)
    return mixture.as_mixture_same_family() if form == "broadcast" else mixture
