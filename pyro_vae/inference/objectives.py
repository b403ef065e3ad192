"""Training objectives: each turns a model/guide pair and a batch into a differentiable loss.

An objective's ``loss(model, x, y)`` returns the *sum over the batch* of the negative
objective (nats), ready for ``backward()``; the training loop divides by the batch size.

Example
-------
>>> from pyro_vae.inference.objectives import build_objective
>>> objective = build_objective("elbo", particles=1)
"""

from __future__ import annotations

import pyro.infer
import torch

from ..errors import check_choice, check_positive_int


class Objective:
    """An ELBO-type objective. Subclasses wrap a Pyro ELBO or compute their own bound."""

    name = "objective"

    def loss(self, model, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        """Called by the loop before each epoch (for schedules such as KL warm-up)."""


class PyroELBOObjective(Objective):
    """Pyro's ``Trace_ELBO`` (or another Pyro ELBO class) through ``differentiable_loss``."""

    def __init__(self, elbo: pyro.infer.ELBO, name: str):
        self.elbo = elbo
        self.name = name

    def loss(self, model, x, y=None):
        return self.elbo.differentiable_loss(model.model, model.guide, x, y)


def _elbo(particles: int, **unused) -> Objective:
    return PyroELBOObjective(
        pyro.infer.Trace_ELBO(num_particles=particles, vectorize_particles=particles > 1,
                              max_plate_nesting=1),
        "elbo",
    )


def _meanfield(particles: int, **unused) -> Objective:
    return PyroELBOObjective(
        pyro.infer.TraceMeanField_ELBO(num_particles=particles, vectorize_particles=particles > 1,
                                       max_plate_nesting=1),
        "meanfield",
    )


#: Registered objectives: name -> factory(**options) -> Objective.
OBJECTIVES = {
    "elbo": _elbo,
    "meanfield": _meanfield,
}


def build_objective(name: str = "elbo", *, particles: int = 1, **options) -> Objective:
    """Build the registered objective ``name`` (``particles``: samples of z per example)."""
    check_positive_int("particles", particles)
    return OBJECTIVES[check_choice("objective", name, OBJECTIVES)](particles=particles, **options)
