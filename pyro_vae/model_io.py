"""Save a model without its data and load it back without running code.

:func:`save_model` (``model.save(path)``) writes one file, atomically and with a checksum,
through :func:`pyro_vae.checkpoint.save_checkpoint`: the weights (``state_dict``, on the CPU)
and what rebuilding them needs, as a JSON string ``meta``:

- ``model``: the registry name (:data:`pyro_vae.models.MODELS`), and ``model_config``: the
  fields of its config dataclass, serialized as a run's ``config.json`` holds them;
- ``data_dim``, ``image_shape`` ``[C, H, W]``, ``num_classes`` (or null), ``dtype``;
- ``versions`` (pyro_vae, torch, pyro, python) and ``plugins``: the records of the plug-ins
  whose names the model uses (:func:`pyro_vae.registry.plugins_used`);
- ``user_networks``: the networks the user passed in (name -> class name), which the file
  cannot rebuild.

:func:`load_model` reads it with ``torch.load(weights_only=True)`` (tensors, strings and ints:
nothing is unpickled into code), checks the checksum and the layout, builds the model from the
registry (a plug-in's model must be loaded first, with :func:`pyro_vae.load_plugin`; nothing is
imported on the file's word), asks for the user's networks again, and loads the weights. Any
damage (truncation, a flipped byte, a foreign file, weights that do not fit) is a one-line
``ValueError`` naming the file.

Example
-------
>>> import torch
>>> from pyro_vae import VAE, VAEConfig, load_model
>>> vae = VAE(64, VAEConfig(latent_dim=2, hidden_dims=(16,)), image_shape=(1, 8, 8))
>>> vae.save("/tmp/pyro-vae-doc-vae.pt")
>>> again = load_model("/tmp/pyro-vae-doc-vae.pt")
>>> x = torch.rand(3, 64).round()
>>> torch.equal(again.encode(x), vae.encode(x)), again.image_shape
(True, (1, 8, 8))
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
from pathlib import Path

import torch

from .checkpoint import load_checkpoint, save_checkpoint
from .models import MODELS, ImageInput, ImageOutput
from .models.nets import GaussianHead
from .registry import plugins_used
from .runconfig import versions

#: What marks a file as a saved model (a run's checkpoint.pt has no ``kind``).
MODEL_FILE_KIND = "pyro_vae.model"
#: Layout version of a saved model's entries.
MODEL_FORMAT = 1
#: Dtypes a saved model may name.
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
           "float64": torch.float64}
_META_KEYS = {"model", "model_config", "data_dim", "image_shape", "num_classes", "dtype", "versions",
              "plugins", "user_networks"}


def registry_name(model) -> str:
    """The name under which ``model``'s class is registered in :data:`~pyro_vae.models.MODELS`.

    Example
    -------
    >>> from pyro_vae.models import CVAE
    >>> registry_name(CVAE(4, num_classes=2))
    'cvae'
    """
    names = [name for name, (config_cls, cls) in MODELS.items()
             if cls is type(model) and isinstance(getattr(model, "config", None), config_cls)]
    if not names:
        raise TypeError(f"model class {type(model).__name__} is not registered in pyro_vae.models.MODELS "
                        f"with its config class; register it (@register('model', NAME)) to save it")
    return names[0]


def _unwrapped(module):
    """The user's network inside the model's adapters (Gaussian head, image input/output)."""
    while isinstance(module, (GaussianHead, ImageInput, ImageOutput)):
        module = module.net
    return module


def save_model(model, path: str | os.PathLike) -> None:
    """Write ``model`` to ``path``: one checksummed file, replaced atomically, no data needed.

    Parameters
    ----------
    model : GenerativeModel
        A registered model (built-in or plug-in), with ``config``, ``data_dim`` and, where it
        has them, ``image_shape``, ``num_classes`` and ``user_networks``.
    path : path-like
        The file to write (its directory must exist).

    Example
    -------
    >>> from pyro_vae.models import PPCA, PPCAConfig
    >>> save_model(PPCA(10, PPCAConfig(latent_dim=2)), "/tmp/pyro-vae-doc-ppca.pt")
    """
    name = registry_name(model)
    config = json.loads(json.dumps(dataclasses.asdict(model.config), allow_nan=False))  # as config.json
    image_shape = getattr(model, "image_shape", None) or (1, 1, model.data_dim)
    dtype = str(model.dtype).removeprefix("torch.")
    names = {"model": name, "prior": config.get("prior"), "likelihood": config.get("likelihood"),
             "guide": config.get("guide")}
    user = {key: type(_unwrapped(getattr(model, key))).__name__ for key in getattr(model, "user_networks", ())}
    meta = {"model": name, "model_config": config, "data_dim": model.data_dim,
            "image_shape": list(image_shape), "num_classes": getattr(model, "num_classes", None),
            "dtype": dtype, "versions": versions(), "plugins": plugins_used(names), "user_networks": user}
    state = {key: value.detach().to("cpu") for key, value in model.state_dict().items()}
    save_checkpoint(path, {"kind": MODEL_FILE_KIND, "model_format": MODEL_FORMAT,
                           "meta": json.dumps(meta, allow_nan=False), "state_dict": state})


def _read_meta(name: str, checkpoint: dict) -> dict:
    """The checked ``meta`` entry of a saved model (``name`` is the file, for messages)."""
    if checkpoint.get("kind") != MODEL_FILE_KIND:
        raise ValueError(f"{name!r} is not a saved pyro-vae model (model.save writes those; a run's "
                         f"checkpoint loads with pyro_vae.load_run)")
    version = checkpoint.get("model_format")
    if type(version) is not int or version != MODEL_FORMAT:
        raise ValueError(f"saved model {name!r} has layout version {version!r}; this pyro-vae reads "
                         f"version {MODEL_FORMAT}")
    try:
        meta = json.loads(checkpoint.get("meta"))
    except (TypeError, ValueError):
        meta = None
    if not isinstance(meta, dict) or set(meta) != _META_KEYS:
        raise ValueError(f"saved model {name!r} has a malformed meta entry (expected the keys "
                         f"{', '.join(sorted(_META_KEYS))})")
    shape = meta["image_shape"]
    sizes = [meta["data_dim"], *(shape if isinstance(shape, list) and len(shape) == 3 else [None])]
    classes = meta["num_classes"]
    if (not all(type(v) is int and v > 0 for v in sizes) or len(sizes) != 4
            or not (classes is None or (type(classes) is int and classes > 0))
            or meta["dtype"] not in _DTYPES or not isinstance(meta["model"], str)
            or not isinstance(meta["model_config"], dict) or not isinstance(meta["user_networks"], dict)
            or not isinstance(meta["plugins"], list)):
        raise ValueError(f"saved model {name!r} has a malformed meta entry (one of data_dim, image_shape, "
                         f"num_classes, dtype, model, model_config, plugins, user_networks)")
    return meta


def _model_class(name: str, meta: dict):
    """``(config_cls, model_cls)`` of the saved model's registry name, or a message naming the plug-ins."""
    if meta["model"] not in MODELS:
        plugins = [p.get("module") or p.get("path") for p in meta["plugins"] if isinstance(p, dict)]
        hint = (f"it was saved with the plug-in(s) {', '.join(map(str, plugins))}: load them first with "
                f"pyro_vae.load_plugin" if plugins else f"choose from: {', '.join(sorted(MODELS))}")
        raise ValueError(f"saved model {name!r} is a {meta['model']!r}, which is not registered; {hint}")
    return MODELS[meta["model"]]


def _networks(name: str, meta: dict, given: dict, model_cls) -> dict:
    """The user's networks to pass to the constructor, checked against the ones saved."""
    saved = meta["user_networks"]
    takes = inspect.signature(model_cls).parameters
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in takes.values())  # a plug-in's **kwargs
    for key, net in given.items():
        if net is not None and key not in takes and not open_ended:
            raise ValueError(f"saved model {name!r} is a {meta['model']!r}, which takes no {key}; pass no "
                             f"{key} to load_model")
        if key in saved and net is None:
            raise ValueError(f"saved model {name!r} was built with your own {key} ({saved[key]}); "
                             f"pass {key}=<a {saved[key]} built as before> to load_model")
        if key not in saved and net is not None:
            raise ValueError(f"saved model {name!r} uses the built-in {key}; pass no {key} to load_model")
    return {key: net for key, net in given.items() if net is not None}


def _check_shapes(name: str, state: dict, build) -> None:
    """Refuse weights whose names or shapes differ from those of ``build()``'s model, built on
    the meta device first (no memory): sizes in a damaged file's meta cannot claim gigabytes."""
    try:
        with torch.device("meta"):
            shapes = {key: tuple(value.shape) for key, value in build().state_dict().items()}
    except Exception:  # noqa: BLE001  (a model that cannot be built there is checked after the real build)
        return
    saved = {key: tuple(value.shape) for key, value in state.items()}
    missing, unexpected = sorted(shapes.keys() - saved.keys()), sorted(saved.keys() - shapes.keys())
    sizes = sorted(key for key in shapes.keys() & saved.keys() if shapes[key] != saved[key])
    problems = [f"{what}: {', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''}"
                for what, keys in (("Missing key(s)", missing), ("Unexpected key(s)", unexpected)) if keys]
    problems += [f"size mismatch for {key}: {saved[key]} in the file, {shapes[key]} in the model"
                 for key in sizes[:1]]
    if problems:
        raise ValueError(f"saved model {name!r}: its weights do not fit the model built from it "
                         f"({'; '.join(problems)})")


def load_model(path: str | os.PathLike, *, device=None, encoder=None, decoder=None, classifier=None):
    """Load a model written by :meth:`~pyro_vae.models.GenerativeModel.save`, in evaluation mode.

    Parameters
    ----------
    path : path-like
    device : str or torch.device, optional
        Where to put the model (default: the CPU).
    encoder, decoder, classifier : nn.Module, optional
        Required exactly when the model was built with networks of your own (``classifier``:
        M2's q(y | x)): modules of the same architecture (their weights are replaced by the
        saved ones).

    Raises
    ------
    ValueError
        One line naming ``path``: missing, truncated or corrupt file, not a saved model, a
        model or plug-in not registered, networks missing or not fitting the saved weights.

    Example
    -------
    >>> from pyro_vae import HVAE, HVAEConfig
    >>> HVAE(64, HVAEConfig(levels=2, latent_dim=2, hidden_dims=(8,))).save("/tmp/pyro-vae-doc-h.pt")
    >>> load_model("/tmp/pyro-vae-doc-h.pt").latent_dims
    (4, 2)
    """
    name = str(Path(path))
    try:
        target = None if device is None else torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device!r} is not a torch device; give cpu, cuda or cuda:N") from None
    checkpoint = load_checkpoint(path, map_location="cpu")  # checksum, weights only
    meta = _read_meta(name, checkpoint)
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"saved model {name!r} has a malformed state_dict (a dict of tensors expected)")
    bad = next((key for key, value in state.items()
                if value.is_floating_point() and not bool(torch.isfinite(value).all())), None)
    if bad is not None:  # a model trained to NaN, or a damaged file with a valid checksum
        raise ValueError(f"saved model {name!r} has non-finite weights ({bad} holds NaN or Inf)")
    config_cls, model_cls = _model_class(name, meta)
    raw = meta["model_config"]
    known = {f.name for f in dataclasses.fields(config_cls)}
    if set(raw) - known:
        raise ValueError(f"saved model {name!r}: option(s) {', '.join(sorted(set(raw) - known))} do not "
                         f"apply to model {meta['model']!r} in this version of pyro-vae")
    try:
        config = config_cls(**raw)
    except (TypeError, ValueError) as err:
        raise ValueError(f"saved model {name!r} has an invalid model_config ({err})") from None
    networks = _networks(name, meta, {"classifier": classifier, "encoder": encoder, "decoder": decoder}, model_cls)
    sizes = {"num_classes": meta["num_classes"], "image_shape": tuple(meta["image_shape"]), **networks}
    with torch.random.fork_rng(devices=[]):  # building draws initial weights: leave the caller's RNG as it was
        if not networks:
            _check_shapes(name, state, lambda: model_cls(meta["data_dim"], config, **sizes))
        try:
            model = model_cls(meta["data_dim"], config, **sizes)
        except (ValueError, TypeError) as err:  # TypeError: a network this model does not take
            raise ValueError(f"saved model {name!r}: {err}") from None
    model.to(dtype=_DTYPES[meta["dtype"]])
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        detail = " ".join(str(err).split())
        raise ValueError(f"saved model {name!r}: its weights do not fit the model built from it "
                         f"({detail[:300]})") from None
    if target is not None:
        model.to(device=target)
    return model.eval()


__all__ = ["MODEL_FILE_KIND", "MODEL_FORMAT", "load_model", "registry_name", "save_model"]
