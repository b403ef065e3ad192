"""Training objectives: each turns a model/guide pair and a batch into a differentiable loss.

An objective's ``loss(model, x, y)`` returns the *sum over the batch* of the negative
objective (nats), ready for ``backward()``; the training loop divides by the batch size and
calls ``set_epoch(epoch)`` (1, 2, ...) before each epoch. ``loss_and_parts(model, x, y)``
returns the same loss and the objective's parts from the same draws, no second pass:
``{"reconstruction": sum_i E_q[log p(x_i | z)], "kl": sum_i E_q[log q(z | x_i) - log p(z)]}``,
detached, *unweighted* by beta and warm-up, so that ``reconstruction - kl`` is the ELBO of
those draws whatever the KL weight (the loop logs their averages per example as
``train_reconstruction`` and ``train_kl``). The parts come from the importance weights:
``elbo`` (reparameterized guides, every built-in model but M2) and ``iwae``, whose parts are
the ELBO's, estimated from its K samples (its objective is not their difference). Objectives
computed by Pyro's ELBOs (``meanfield``, M2's enumeration, score-function guides) and models
whose latents are summed out (``has_latents`` False: PPCA, mixtures; their ELBO is exact)
return no parts (``{}``).

Registered objectives (:data:`OBJECTIVES`, the names ``--objective`` accepts):

- ``elbo``: Pyro's ``Trace_ELBO`` estimator, ``particles`` samples of z per example
  (averaged). For guides whose latent sites are all reparameterized (every guide in pyro-vae)
  it is computed from :func:`~pyro_vae.inference.evaluate.log_importance_weights` as
  ``-sum_i mean_k log w_ik``, which is exactly Trace_ELBO's differentiable loss (tested) at a
  lower cost per step and without Trace_ELBO's per-step NaN check, a host-device
  synchronization on a GPU (the loop checks the losses once per epoch instead). Other guides
  go through ``pyro.infer.Trace_ELBO`` itself, which adds the score-function term; a guide
  with a site marked ``infer={"enumerate": ...}`` (M2's labels) goes through
  ``pyro.infer.TraceEnum_ELBO(max_plate_nesting=1)``, which sums that site out exactly
  (``iwae`` and ``meanfield`` refuse such a model);
- ``meanfield``: Pyro's ``TraceMeanField_ELBO``: the KL term in closed form where one is
  registered for the guide/prior pair (Normal guide, standard or conditional prior) and by
  sampling otherwise (mixture, VampPrior, flow priors);
- ``iwae``: the importance-weighted bound of Burda et al. (2015) with ``K = particles``
  samples, ``log 1/K sum_k w_k``, built on
  :func:`pyro_vae.inference.evaluate.log_importance_weights`. ``K = 1`` is the ELBO; the
  bound tightens as K grows. It needs a guide with a density (not ``guide="delta"``).

KL weighting (beta-VAE, KL warm-up) applies to every objective: ``beta`` and ``kl_warmup``
multiply the log-densities of all *latent* sample sites, in the model and in the guide, by
``min(1, epoch / kl_warmup) * beta`` (just ``beta`` when ``kl_warmup`` is 0): through the
:class:`LatentScaleMessenger` effect handler for Pyro's ELBOs, and on the latent term of the
importance weights (:func:`~pyro_vae.inference.importance._weight_terms`, the same sum the
handler would scale) for ``elbo``'s fast path and ``iwae``. For the ELBOs this is
``E[log p(x|z)] - weight * KL``; for IWAE the same weight enters every importance weight,
``log w = log p(x|z) + weight * (log p(z) - log q(z|x))`` (the "beta-IWAE"). Observed sites
(the likelihood) are never scaled, and neither is evaluation, which does not go through
objectives. Models without latent variables are unaffected.

Example
-------
>>> from pyro_vae.inference.objectives import build_objective
>>> objective = build_objective("iwae", particles=5, beta=1.0, kl_warmup=10)
>>> objective.set_epoch(2)
>>> objective.kl_weight
0.2
"""

from __future__ import annotations

import math
import weakref
from types import SimpleNamespace

import pyro.infer
import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from ..errors import check_choice, check_non_negative_int, check_positive_int
from ..registry import Registry
from .importance import GlobalSiteError, _log_weights_and_sites, _weight_terms, elbo_has_terms


def check_kl_weighting(beta, kl_warmup) -> tuple[float, int]:
    """Validate ``beta`` (a finite number >= 0) and ``kl_warmup`` (epochs, an int >= 0)."""
    if isinstance(beta, bool) or not isinstance(beta, (int, float)):
        raise TypeError(f"beta must be a non-negative number, got {beta!r} ({type(beta).__name__})")
    if not math.isfinite(beta) or beta < 0:
        raise ValueError(f"beta must be a finite non-negative number, got {beta}")
    check_non_negative_int("kl_warmup", kl_warmup)
    return float(beta), kl_warmup


def check_sums_out_labels(objective: str, model) -> None:
    """Refuse ``objective`` (iwae, meanfield) for a model whose guide enumerates its labels (M2)."""
    if objective != "elbo" and getattr(model, "sums_out_labels", False):
        name = model if isinstance(model, str) else type(model).__name__
        raise ValueError(
            f"objective {objective!r} does not support model {name}, whose unlabelled examples' "
            f"labels are summed out by enumeration; use objective 'elbo' (TraceEnum_ELBO)")


class LatentScaleMessenger(Messenger):
    """Multiply the log-density of every latent (non-observed) sample site by ``weight``.

    Unlike ``poutine.scale``, which scales every site and refuses 0, this leaves observed
    sites alone and accepts ``weight = 0`` (the KL term then contributes nothing, gradients
    included). Applied to both the model and the guide it turns ``log p(x|z) + log p(z) -
    log q(z|x)`` into ``log p(x|z) + weight * (log p(z) - log q(z|x))``.

    Example
    -------
    >>> import pyro, pyro.distributions as dist, torch
    >>> def model():
    ...     z = pyro.sample("z", dist.Normal(0.0, 1.0))
    ...     pyro.sample("x", dist.Normal(z, 1.0), obs=torch.tensor(0.0))
    >>> trace = pyro.poutine.trace(LatentScaleMessenger(0.5)(model)).get_trace()
    >>> trace.nodes["z"]["scale"], trace.nodes["x"]["scale"]
    (0.5, 1.0)
    """

    def __init__(self, weight: float):
        super().__init__()
        self.weight = weight

    def _process_message(self, msg):
        if msg["type"] == "sample" and not msg["is_observed"]:
            msg["scale"] = self.weight * msg["scale"]


class Objective:
    """An ELBO-type objective with optional KL weighting; subclasses implement :meth:`loss`.

    Parameters
    ----------
    beta : float
        Weight of the KL term (of the latent sites' log-densities), >= 0; 1 is the plain bound.
    kl_warmup : int
        Epochs over which the weight rises linearly to ``beta`` (0: no warm-up).
    """

    name = "objective"
    #: K of the importance-weighted bound this objective estimates (1: the ELBO); with
    #: ``TrainConfig.select_on="bound"`` the loop selects models on that bound's validation value.
    bound_samples = 1

    def __init__(self, *, beta: float = 1.0, kl_warmup: int = 0):
        self.beta, self.kl_warmup = check_kl_weighting(beta, kl_warmup)
        self.epoch = 1  # the loop counts epochs from 1

    def loss(self, model, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Sum over the batch of the negative objective (a scalar tensor with gradients)."""
        if type(self).loss_and_parts is Objective.loss_and_parts:
            raise NotImplementedError(f"{type(self).__name__} implements neither loss nor loss_and_parts")
        return self.loss_and_parts(model, x, y)[0]

    def loss_and_parts(self, model, x: torch.Tensor, y: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """:meth:`loss` and the objective's parts from the same draws (module docstring):
        ``(loss, {"reconstruction": ..., "kl": ...})``, the parts detached sums over the
        batch, or ``(loss, {})`` for an objective that has none. A subclass implements this
        or :meth:`loss`."""
        if type(self).loss is Objective.loss:
            raise NotImplementedError(f"{type(self).__name__} implements neither loss nor loss_and_parts")
        return self.loss(model, x, y), {}

    def weighted_terms(self, model, x, y, num_samples: int):
        """``(log_w, parts)``: the KL-weighted importance weights ``observed + kl_weight *
        latent`` ``(K, batch)`` and the unweighted parts, summed over the batch and averaged
        over the K samples."""
        observed, latent, _ = _weight_terms(model, x, y, num_samples)  # (K, batch) each
        weight = self.kl_weight
        log_w = observed + latent if weight == 1.0 else observed + weight * latent
        if not elbo_has_terms(model):  # latents summed out (PPCA, mixtures): no KL term
            return log_w, {}
        reconstruction, kl = observed.detach().sum(), -latent.detach().sum()
        if num_samples > 1:  # sums over the K draws too: their mean per example
            reconstruction, kl = reconstruction / num_samples, kl / num_samples
        parts = {"reconstruction": reconstruction, "kl": kl}
        return log_w, parts

    def set_epoch(self, epoch: int) -> None:
        """Called by the loop before each epoch (1, 2, ...); drives the KL warm-up."""
        self.epoch = check_non_negative_int("epoch", epoch)

    @property
    def kl_weight(self) -> float:
        """The current weight of the KL term: ``min(1, epoch / kl_warmup) * beta``."""
        if self.kl_warmup == 0:
            return self.beta
        return min(1.0, self.epoch / self.kl_warmup) * self.beta

    def weighted(self, model):
        """``model``'s model/guide pair with the latent sites scaled by :attr:`kl_weight`.

        Returns an object with ``model`` and ``guide`` attributes (the model itself at weight 1).
        """
        weight = self.kl_weight
        if weight == 1.0:
            return model
        return SimpleNamespace(model=LatentScaleMessenger(weight)(model.model),
                               guide=LatentScaleMessenger(weight)(model.guide))


def objective_loss_and_parts(objective, model, x, y=None) -> tuple[torch.Tensor, dict]:
    """``objective``'s loss and parts, from whichever of ``loss_and_parts`` and ``loss`` its
    most derived class defines: a subclass of a built-in objective that overrides ``loss``
    alone trains with that loss (and logs no parts), not with its parent's. An object with
    ``loss`` alone (not an :class:`Objective`) has no parts."""
    for cls in type(objective).__mro__:
        if "loss_and_parts" in vars(cls):
            return objective.loss_and_parts(model, x, y)
        if "loss" in vars(cls):
            return objective.loss(model, x, y), {}
    loss_and_parts = getattr(objective, "loss_and_parts", None)  # forwarded by __getattr__, say
    if loss_and_parts is None:
        return objective.loss(model, x, y), {}
    return loss_and_parts(model, x, y)


class PyroELBOObjective(Objective):
    """A Pyro ELBO (``Trace_ELBO``, ``TraceMeanField_ELBO`` ...) through ``differentiable_loss``."""

    def __init__(self, elbo: pyro.infer.ELBO, name: str, **weighting):
        super().__init__(**weighting)
        self.elbo = elbo
        self.name = name

    def loss(self, model, x, y=None):
        check_sums_out_labels(self.name, model)
        pair = self.weighted(model)
        return self.elbo.differentiable_loss(pair.model, pair.guide, x, y)


class IWAEObjective(Objective):
    """The importance-weighted bound ``sum_i log 1/K sum_k w_ik`` (Burda et al., 2015).

    ``log w`` comes from :func:`~pyro_vae.inference.evaluate.log_importance_weights`
    (``(K, batch)``, reparameterized, so gradients flow through the sampled codes). It sums
    the traces' ``log_prob`` entries, which Pyro stores already multiplied by each site's
    scale: that is how the KL weight of :class:`LatentScaleMessenger` reaches every ``log w``.

    Parameters
    ----------
    num_samples : int
        K, the importance samples per example.
    beta, kl_warmup
        See :class:`Objective`; the weight multiplies ``log p(z) - log q(z|x)`` inside each
        ``log w``.

    Example
    -------
    >>> import torch
    >>> from pyro_vae.models import VAE, VAEConfig
    >>> vae = VAE(64, VAEConfig(latent_dim=2, hidden_dims=(16,)))
    >>> loss = IWAEObjective(num_samples=5).loss(vae, torch.bernoulli(torch.full((8, 64), 0.5)))
    >>> loss.shape
    torch.Size([])
    """

    name = "iwae"

    def __init__(self, num_samples: int = 5, **weighting):
        super().__init__(**weighting)
        self.num_samples = check_positive_int("num_samples", num_samples)

    @property
    def bound_samples(self) -> int:
        """K: this objective maximizes the importance-weighted bound of K samples."""
        return self.num_samples

    def loss_and_parts(self, model, x, y=None):
        if not getattr(model, "is_bound", True):
            raise ValueError(
                f"objective 'iwae' needs a guide with a density, but {type(model).__name__} has a "
                f"point-mass guide (guide='delta'), whose importance weights are undefined; "
                f"train it with objective 'elbo' instead"
            )
        check_sums_out_labels(self.name, model)
        log_w, parts = self.weighted_terms(model, x, y, self.num_samples)  # (K, batch)
        return -(torch.logsumexp(log_w, dim=0) - math.log(self.num_samples)).sum(), parts


class TraceELBOObjective(PyroELBOObjective):
    """Trace_ELBO's estimator, ``-sum_i mean_k log w_ik``, from the importance weights.

    Equal to ``Trace_ELBO(num_particles=K).differentiable_loss`` when every latent site of the
    guide is reparameterized; the first call checks that for each model and sends other
    guides (discrete or non-reparameterizable latents) to Pyro's Trace_ELBO itself.
    """

    def __init__(self, particles: int, **weighting):
        super().__init__(pyro.infer.Trace_ELBO(num_particles=particles, vectorize_particles=particles > 1,
                                               max_plate_nesting=1), "elbo", **weighting)
        self.particles = particles
        # model -> whether all its guide's latents have rsample (weak: forgets dropped models)
        self._reparameterized: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._enum_elbo = None  # TraceEnum_ELBO, built for the first guide with enumerated sites

    def loss(self, model, x, y=None):
        return self.loss_and_parts(model, x, y)[0]

    def loss_and_parts(self, model, x, y=None):
        reparameterized = self._reparameterized.get(model)
        if reparameterized is None:
            reparameterized = self._reparameterized[model] = _fast_path_applies(model, x, y)
        if reparameterized == "enumerate":  # discrete guide sites summed out (M2's labels)
            if self._enum_elbo is None:
                self._enum_elbo = pyro.infer.TraceEnum_ELBO(
                    num_particles=self.particles, vectorize_particles=self.particles > 1,
                    max_plate_nesting=1)
            pair = self.weighted(model)
            return self._enum_elbo.differentiable_loss(pair.model, pair.guide, x, y), {}
        if not reparameterized:
            return super().loss(model, x, y), {}
        log_w, parts = self.weighted_terms(model, x, y, self.particles)  # (K, batch)
        if self.particles == 1:
            return -log_w.sum(), parts
        return -log_w.mean(0).sum(), parts


def _fast_path_applies(model, x, y) -> bool | str:
    """Whether ``-mean_k log w`` is Trace_ELBO's loss for ``model``: every latent site of the
    guide is reparameterized and every site of model and guide lies in the ``data`` plate
    (a global site's log-density would be counted once per example).

    ``"enumerate"`` for a guide with a site marked ``infer={"enumerate": ...}`` (M2's label of
    unlabelled examples): that model trains with ``TraceEnum_ELBO(max_plate_nesting=1)``,
    which sums the site out exactly."""
    # Side traces: their random draws must not shift the training's RNG stream.
    devices = [x.device] if x.is_cuda else []
    with torch.no_grad(), pyro.poutine.block(), torch.random.fork_rng(devices=devices):
        trace = pyro.poutine.trace(model.guide).get_trace(x, y)
        if guide_enumerates(trace):
            return "enumerate"
        try:
            _log_weights_and_sites(model, x, y, 1)
        except GlobalSiteError:
            return False
    # A plate's subsample site is a "sample" site too (its fn draws indices, no rsample): skip it.
    return all(site["fn"].has_rsample for site in trace.nodes.values()
               if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site))


def guide_enumerates(trace) -> bool:
    """Whether a guide's trace has a sample site marked for enumeration (``infer["enumerate"]``)."""
    return any(site["type"] == "sample" and (site.get("infer") or {}).get("enumerate")
               for site in trace.nodes.values())


def _elbo(particles: int, **weighting) -> Objective:
    return TraceELBOObjective(particles, **weighting)


def _meanfield(particles: int, **weighting) -> Objective:
    return PyroELBOObjective(
        pyro.infer.TraceMeanField_ELBO(num_particles=particles, vectorize_particles=particles > 1,
                                       max_plate_nesting=1),
        "meanfield", **weighting,
    )


def _iwae(particles: int, **weighting) -> Objective:
    return IWAEObjective(num_samples=particles, **weighting)


#: Registered objectives: name -> factory(particles=..., beta=..., kl_warmup=...) -> Objective.
OBJECTIVES: Registry = Registry("objective", {
    "elbo": _elbo,
    "meanfield": _meanfield,
    "iwae": _iwae,
})


def build_objective(name: str = "elbo", *, particles: int = 1, beta: float = 1.0,
                    kl_warmup: int = 0, **options) -> Objective:
    """Build the registered objective ``name``.

    Parameters
    ----------
    name : str
        A name in :data:`OBJECTIVES`.
    particles : int
        Samples of z per example: averaged by ``elbo``/``meanfield``, the K of ``iwae``.
    beta : float
        Weight of the KL term (>= 0).
    kl_warmup : int
        Epochs of linear KL warm-up (0: none).
    **options
        Passed on to the objective's factory (for objectives registered with more options).
    """
    check_positive_int("particles", particles)
    check_kl_weighting(beta, kl_warmup)
    return OBJECTIVES[check_choice("objective", name, OBJECTIVES)](
        particles=particles, beta=beta, kl_warmup=kl_warmup, **options)
