"""The contract every model keeps.

A model is an ``nn.Module`` with ``model(x, y=None)`` and ``guide(x, y=None)``: a Pyro
model/guide pair that plain Pyro code trains with
``SVI(m.model, m.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())``. Both register the
module's parameters with ``pyro.module`` so that ``pyro.optim`` finds them; the library's own
loop optimizes ``m.parameters()`` directly with a torch optimizer.

Conventions every model follows (the evaluation module relies on them):

- the observation site is named ``"x"``, its pixels form one event (``.to_event(1)``);
- every per-example site lives inside ``pyro.plate("data", x.shape[0])`` at ``dim=-1``
  (:func:`data_plate`),
  and nothing else in the model depends on the batch size, so the evaluation can add a
  plate of importance samples to the left and score K samples per example at once;
- tensors take their device and dtype from inputs, parameters or buffers;
- the public helpers (:data:`INPUT_METHODS`: ``encode``, ``decode``, ``sample`` ...) accept
  inputs on any device and in any floating dtype: :class:`GenerativeModel` moves them to the
  model's device, and casts floating ones to its dtype, before the helper runs (labels keep
  their integer dtype);
- a model is built as ``cls(data_dim, config, num_classes=None, image_shape=None)``.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from contextlib import contextmanager

import pyro
import torch
from torch import nn


def labels_for(model, y):
    """``y`` where ``model`` conditions on labels (``needs_labels``) or learns from partial
    labels (``partial_labels``, M2: -1 marks an unlabelled row), else None.

    Data sets carry labels whether or not a model uses them; this is what a model is given.
    """
    return y if getattr(model, "needs_labels", False) or getattr(model, "partial_labels", False) else None


def data_plate(x: torch.Tensor):
    """``pyro.plate("data", len(x))`` with its indices on ``x``'s device.

    Giving the device spares the plate a probe tensor per call (a plate without one creates
    ``torch.tensor(())`` only to read the default device).
    """
    return pyro.plate("data", x.shape[0], device=x.device)


#: Public helpers whose tensor arguments :class:`GenerativeModel` moves to the model's device
#: (floating ones also cast to its dtype) before they run, in every subclass that defines them.
INPUT_METHODS = ("encode", "decode", "reconstruct", "posterior", "sample", "classify",
                 "analogies", "layer_posteriors")


def _model_float(module: nn.Module) -> tuple[torch.device, torch.dtype] | None:
    """Device and dtype of the first floating parameter or buffer of ``module`` (None: none)."""
    for t in (*module.parameters(), *module.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return None


def _to_model(value, device: torch.device, dtype: torch.dtype):
    """A tensor on ``device`` (floating ones in ``dtype``, others keep theirs); anything else as is."""
    if not isinstance(value, torch.Tensor):
        return value
    return value.to(device=device, dtype=dtype) if value.is_floating_point() else value.to(device=device)


def _moving_inputs(method):
    """Wrap ``method`` so that its tensor arguments reach it on the model's device and dtype."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        target = _model_float(self)
        if target is not None:
            args = tuple(_to_model(a, *target) for a in args)
            kwargs = {k: _to_model(v, *target) for k, v in kwargs.items()}
        return method(self, *args, **kwargs)

    wrapper.moves_inputs = True
    return wrapper


class GenerativeModel(nn.Module, ABC):
    """Base class of pyro-vae's model/guide pairs.

    Class attributes describe what the evaluation may report:

    - ``has_latents``: False for models whose latent variables are summed or integrated out
      (their guide is empty and their ELBO *is* the exact log-likelihood);
    - ``is_bound``: False when the objective is not a lower bound on log p(x) (a point-mass
      guide), so no log-likelihood is reported;
    - ``conditional``: True when the model scores log p(x | y) rather than log p(x);
    - ``needs_labels``: True when ``model``/``guide`` require ``y``;
    - ``guide_reads_labels``: True when the guide's code depends on ``y`` (q(z | x, y)), so
      the code of an example carries its label (no latent probe is reported for it);
    - ``partial_labels``: True when the model learns from labels given for some examples
      only (``y = -1`` elsewhere; M2), so training passes it ``y`` and ``labels_per_class``
      applies;
    - ``sums_out_labels``: True when the evaluation sums the label out (log p(x) =
      logsumexp_c log p(x, c)); such a model has ``num_classes`` and ``classify(x)``;
    - ``adds_training_terms``: True when the model adds terms to its objective in training
      mode only (M2's classification term), so its training curve is not an ELBO.

    Optional helpers, each of a batch ``x`` ``(batch, D)``: ``encode`` (the mean code),
    ``posterior`` (the distribution of the code, ``q(z | x)`` or an exact ``p(z | x)``: batch
    shape ``(batch,)``, event shape ``(latent_dim,)``; read its per-coordinate Normal marginals
    with :func:`pyro_vae.models.distributions.normal_marginals`), ``reconstruct``, ``decode``.

    The helpers named in :data:`INPUT_METHODS` take inputs on any device and dtype: a
    subclass's own definitions are wrapped when the subclass is created
    (``__init_subclass__``), so a float64 model encodes float32 images and a CUDA model
    samples CPU labels.

    Example
    -------
    >>> import torch
    >>> from pyro_vae.models import VAE, VAEConfig
    >>> vae = VAE(64, VAEConfig(latent_dim=2, hidden_dims=(8,))).double()
    >>> vae.encode(torch.zeros(3, 64, dtype=torch.float32)).dtype
    torch.float64
    """

    has_latents: bool = True
    is_bound: bool = True
    conditional: bool = False
    needs_labels: bool = False
    guide_reads_labels: bool = False
    partial_labels: bool = False
    sums_out_labels: bool = False
    adds_training_terms: bool = False
    #: Name under which ``pyro.module`` registers the parameters.
    pyro_name: str = "model"
    #: Whether ``model``/``guide`` register the parameters with Pyro's param store, so that
    #: ``pyro.optim`` finds them (see :meth:`optimized_by_torch`).
    register_params: bool = True
    #: Networks the user passed to the constructor (``"encoder"``, ``"decoder"``), which a saved
    #: model cannot rebuild: :func:`pyro_vae.load_model` asks for them.
    user_networks: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in INPUT_METHODS:
            method = cls.__dict__.get(name)
            if callable(method) and not getattr(method, "moves_inputs", False):
                setattr(cls, name, _moving_inputs(method))

    def save(self, path) -> None:
        """Write this model (registry name, config, shapes, weights) to one checksummed file.

        See :func:`pyro_vae.model_io.save_model`; :func:`pyro_vae.load_model` reads it back.

        Example
        -------
        >>> from pyro_vae import VAE, load_model
        >>> VAE(64).save("/tmp/pyro-vae-doc-model.pt")
        >>> load_model("/tmp/pyro-vae-doc-model.pt").data_dim
        64
        """
        from ..model_io import save_model  # noqa: PLC0415  (files live outside the models)

        save_model(self, path)

    def _register(self) -> None:
        """Called first in ``model`` and ``guide``: ``pyro.module`` unless switched off."""
        if self.register_params:
            pyro.module(self.pyro_name, self)

    @contextmanager
    def optimized_by_torch(self):
        """Within this block ``model``/``guide`` skip ``pyro.module``.

        For callers that optimize ``self.parameters()`` with their own torch optimizer (as
        :func:`pyro_vae.inference.fit` does): registering every parameter with the global
        param store at every step would cost time and leave entries behind across runs.
        """
        previous = self.register_params
        self.register_params = False
        try:
            yield self
        finally:
            self.register_params = previous

    @abstractmethod
    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """The generative model p(x, z) (or p(x, z | y)); ``x`` has shape ``(batch, D)``."""

    @abstractmethod
    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """The variational posterior q(z | x) (empty for models without latents)."""

    @abstractmethod
    def sample(self, n: int, y: torch.Tensor | None = None, *, mean: bool = True) -> torch.Tensor:
        """Draw ``n`` new examples, ``(n, D)``: the likelihood's mean, or pixel samples."""

    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Mean image decoded from the guide's mean code, ``(batch, D)``."""
        raise NotImplementedError(f"{type(self).__name__} has no reconstruction")

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The guide's mean code of each example, ``(batch, latent_dim)``."""
        raise NotImplementedError(f"{type(self).__name__} has no encoder")

    def init_from_data(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """Data-dependent initialization before training (no-op by default)."""

    def validate_data(self, x: torch.Tensor, y: torch.Tensor | None = None, name: str = "x") -> None:
        """Raise ``ValueError`` if ``x``/``y`` do not fit this model (support, labels)."""
        if x.dim() != 2:
            raise ValueError(f"{name} must have shape (batch, D), got {tuple(x.shape)}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} contains NaN or Inf values")
        data_dim = getattr(self, "data_dim", None)  # every built-in model has one
        if data_dim is not None and x.shape[-1] != data_dim:
            raise ValueError(f"{name} has {x.shape[-1]} features per example; this model expects {data_dim}")
        likelihood = getattr(self, "likelihood", None)  # its support (binary pixels ...)
        if likelihood is not None:
            likelihood.validate(x, name)

    @property
    def device(self) -> torch.device:
        """Device of the model's first floating parameter or buffer (CPU if it has none)."""
        target = _model_float(self)
        return torch.device("cpu") if target is None else target[0]

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the model's first floating parameter or buffer (the default if it has none)."""
        target = _model_float(self)
        return torch.get_default_dtype() if target is None else target[1]
