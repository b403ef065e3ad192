"""A lean record-and-replay of sample sites: the part of ``poutine.trace`` the scoring needs.

:func:`~pyro_vae.inference.evaluate.log_importance_weights` runs the guide, replays the
model on the guide's draws and sums the sites' scaled log-densities: once per training step
and once per evaluation chunk. ``poutine.trace`` + ``poutine.replay`` do that with a full
:class:`pyro.poutine.Trace` (a copy of every message, input and return nodes, plate
subsample sites and a ``log_prob_sum`` per site); measured on this project's machine that
bookkeeping was about a third of the Python time of a VAE step. The two messengers here keep
only what the sum needs: the sample sites' messages, by name, with the same semantics as
Pyro's handlers for sample sites (values, ``infer`` dicts and ``done`` copied by the replay,
plates' subsample indices included; observed sites never replayed; repeated names refused).
:func:`scored_sites` leaves out the subsample sites, which carry no density.

Example
-------
>>> import pyro, pyro.distributions as dist, torch
>>> def guide():
...     pyro.sample("z", dist.Normal(0.0, 1.0))
>>> def model():
...     z = pyro.sample("z", dist.Normal(0.0, 1.0))
...     pyro.sample("x", dist.Normal(z, 1.0), obs=torch.tensor(0.5))
>>> guide_sites = record_sites(guide)
>>> model_sites = record_sites(model, replay=guide_sites)
>>> bool(model_sites["z"]["value"] is guide_sites["z"]["value"]), sorted(model_sites)
(True, ['x', 'z'])
>>> [site["name"] for site in scored_sites(model_sites)]
['z', 'x']
"""

from __future__ import annotations

from pyro.distributions.util import scale_and_mask
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample


class _SampleSiteRecorder(Messenger):
    """Keep the message of every sample site, plates' subsample sites included, by name."""

    def __init__(self):
        super().__init__()
        self.sites: dict = {}

    def _pyro_post_sample(self, msg) -> None:
        name = msg["name"]
        if name in self.sites:
            raise RuntimeError(f"sample site {name!r} appears twice in one run of the program; "
                               f"site names must be unique")
        self.sites[name] = msg


class _LatentReplay(Messenger):
    """Give every unobserved sample site found in ``sites`` that site's value (as poutine.replay).

    That includes a plate's subsample site: a plate that draws a subset of the data in the
    guide draws the same subset in the model.
    """

    def __init__(self, sites: dict):
        super().__init__()
        self.sites = sites

    def _pyro_sample(self, msg) -> None:
        if msg["is_observed"]:
            return
        recorded = self.sites.get(msg["name"])
        if recorded is None:
            return
        if recorded["is_observed"]:
            raise RuntimeError(f"site {msg['name']!r} is observed in the replayed run, latent here")
        msg["value"] = recorded["value"]
        msg["infer"] = recorded["infer"]
        msg["done"] = True


def record_sites(fn, *args, replay: dict | None = None, **kwargs) -> dict:
    """Run ``fn(*args, **kwargs)`` and return its sample sites' messages, ``{name: msg}``.

    With ``replay`` (the result of an earlier call), latent sites of the same name take their
    values from it instead of being sampled. Each message has Pyro's usual keys: ``fn``,
    ``value``, ``is_observed``, ``scale``, ``mask``, ``infer``, ``cond_indep_stack``.
    """
    recorder = _SampleSiteRecorder()
    with recorder:
        if replay is None:
            fn(*args, **kwargs)
        else:
            with _LatentReplay(replay):
                fn(*args, **kwargs)
    return recorder.sites


def scored_sites(sites: dict):
    """The sites that carry a log-density: ``sites``' values less plates' subsample sites."""
    return [site for site in sites.values() if not site_is_subsample(site)]


def scaled_log_prob(site):
    """``site``'s log-density at its value, times its scale, masked: what Trace.compute_log_prob stores."""
    log_p = site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"])
    return scale_and_mask(log_p, site["scale"], site["mask"])
