"""What a run is: its configuration (:class:`RunConfig`), the model it builds, what config.json holds.

A :class:`RunConfig` is the model's name and settings, the data, the training and the
evaluation's K; :func:`build_model` builds its model for a data set (or a
:class:`~pyro_vae.data.DataSpec`, without the data); :func:`config_record` is what a run's
config.json holds beside the settings (plug-ins used, library versions).

Example
-------
>>> from pyro_vae.runconfig import RunConfig
>>> config = RunConfig(model="vae", model_config={"latent_dim": 4})
>>> RunConfig.from_dict(config.to_dict()) == config
True
"""

from __future__ import annotations

import dataclasses
import json
import platform
from dataclasses import dataclass, field

import pyro
import torch

from . import __version__
from .data import DataConfig, DataSplits
from .errors import allocation_message, check_choice, check_instance, check_positive_int, is_allocation_error
from .inference.config import DTYPES, TrainConfig
from .inference.evaluate import MAX_SAMPLES
from .models import GUIDES, LIKELIHOODS, MODELS
from .registry import plugins_used

#: Training settings that may differ between a checkpoint and the run resuming it.
_RESUMABLE_CHANGES = {"epochs", "device", "progress", "eval_every", "detect_anomaly", "log"}


@dataclass
class RunConfig:
    """Everything that defines a run: which model with which settings, on which data, how trained.

    ``model_config`` holds the fields of the model's own config dataclass (see
    :data:`pyro_vae.models.MODELS`); missing fields take that dataclass's defaults.
    ``eval_samples`` is the number of importance samples of the final log-likelihood estimate.
    """

    model: str = "vae"
    model_config: dict = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval_samples: int = 1000

    def __post_init__(self):
        check_instance("data", self.data, DataConfig, "build one with DataConfig(...)")
        check_instance("train", self.train, TrainConfig, "build one with TrainConfig(...)")
        check_choice("model", self.model, MODELS)
        if not isinstance(self.model_config, dict):
            if not dataclasses.is_dataclass(self.model_config) or isinstance(self.model_config, type):
                raise TypeError(f"model_config must be a dict of the model's config fields or its "
                                f"config dataclass, got {self.model_config!r}")
            self.model_config = dataclasses.asdict(self.model_config)
        self.model_config = dataclasses.asdict(self.model_config_object())
        check_positive_int("eval_samples", self.eval_samples)
        if self.eval_samples > MAX_SAMPLES:  # refused before training, not after it
            raise ValueError(f"eval_samples must be at most {MAX_SAMPLES:,} importance samples per "
                             f"example, got {self.eval_samples:,}")
        if self.train.patience and not self.data.val_fraction:
            raise ValueError(f"patience {self.train.patience} needs a validation split to watch; "
                             f"give --val-fraction > 0")
        model_cls = MODELS[self.model][1]
        if self.data.labels_per_class is not None and not getattr(model_cls, "partial_labels", False):
            raise ValueError(
                f"labels_per_class {self.data.labels_per_class} applies to models that learn from "
                f"partial labels (m2); model {self.model!r} takes none")
        if getattr(model_cls, "sums_out_labels", False) and self.train.objective != "elbo":
            raise ValueError(
                f"objective {self.train.objective!r} does not support model {self.model!r}, whose "
                f"unlabelled examples' labels are summed out by enumeration; use --objective elbo")
        guide = self.model_config.get("guide")
        if self.train.objective == "iwae" and guide is not None and not GUIDES.get(guide).has_density:
            raise ValueError(
                f"--guide {guide} cannot be combined with --objective iwae: a point-mass guide has "
                "no density, so the importance weights are undefined; use --objective elbo"
            )

    def model_config_object(self):
        """The model's config dataclass built from ``model_config`` (validates its fields)."""
        config_cls = MODELS[self.model][0]
        known = {f.name for f in dataclasses.fields(config_cls)}
        unknown = sorted(set(self.model_config) - known)
        if unknown:
            raise ValueError(
                f"option(s) {', '.join(unknown)} do not apply to model {self.model!r}; "
                f"it accepts: {', '.join(sorted(known))}"
            )
        return config_cls(**self.model_config)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))  # tuples -> lists, plain JSON

    @classmethod
    def from_dict(cls, raw: dict) -> RunConfig:
        if not isinstance(raw, dict):
            raise ValueError(f"run configuration must be a JSON object, got {type(raw).__name__}")
        try:
            return cls(
                model=raw["model"],
                model_config=dict(raw.get("model_config", {})),
                data=DataConfig(**raw.get("data", {})),
                train=TrainConfig(**raw.get("train", {})),
                eval_samples=raw.get("eval_samples", 1000),
            )
        except KeyError as err:
            raise ValueError(f"run configuration lacks the key {err}") from err
        except TypeError as err:
            raise ValueError(f"run configuration has an unknown or invalid field: {err}") from err


def default_binarize(model: str, model_config: dict) -> str:
    """``dynamic`` for models scoring binary pixels, ``none`` for densities over grey levels.

    Unknown names are left for :class:`RunConfig` to refuse with its own message.
    """
    if model not in MODELS:
        return "dynamic"
    try:
        config = MODELS[model][0](**model_config)
    except (TypeError, ValueError):
        return "dynamic"
    likelihood = getattr(config, "likelihood", None)
    if likelihood is None:  # a Gaussian model of its own (PPCA)
        return "none"
    return "dynamic" if getattr(LIKELIHOODS.get(likelihood), "discrete", True) else "none"


def build_model(config: RunConfig, data: DataSplits, *, init: bool = True):
    """Build the model of ``config`` for ``data``, seeded by ``train.seed``.

    ``init``: run its data-dependent initialization (PPCA's SVD, the mixture's k-means++
    seeding: seconds on a large data set). Callers about to load a checkpoint pass False,
    since every weight is then overwritten.
    """
    config_cls, model_cls = MODELS[config.model]
    pyro.set_rng_seed(config.train.seed)
    model_config = config.model_config_object()
    try:
        model = model_cls(data.data_dim, model_config, num_classes=data.num_classes,
                          image_shape=tuple(data.image_shape))
        model.to(dtype=DTYPES[config.train.dtype])
    except (RuntimeError, MemoryError) as err:
        if not is_allocation_error(err):
            raise
        sizes = ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(model_config).items()
                          if isinstance(v, (int, tuple)) and not isinstance(v, bool))
        raise ValueError(f"model {config.model!r} cannot be built with {sizes}: "
                         f"{allocation_message(err)}; choose smaller sizes") from None
    if init:
        model.init_from_data(data.x_train.to(dtype=DTYPES[config.train.dtype]), data.y_train)
    return model


def versions() -> dict:
    return {"pyro_vae": __version__, "torch": str(torch.__version__), "pyro": str(pyro.__version__),
            "python": platform.python_version()}


def config_record(config: RunConfig, data: dict) -> dict:
    """config.json: the settings, the data's spec and fingerprint (``data``, see
    :func:`pyro_vae.rundata.data_record`), the plug-ins whose names they use, the library versions."""
    model_config = config.model_config
    names = {"model": config.model, "prior": model_config.get("prior"),
             "likelihood": model_config.get("likelihood"), "guide": model_config.get("guide"),
             "objective": config.train.objective, "dataset": config.data.name}
    return {**config.to_dict(), **data, "plugins": plugins_used(names), "versions": versions()}


def checkpoint_config(config: RunConfig) -> dict:
    """The part of the configuration a checkpoint must match to be resumed."""
    raw = config.to_dict()
    raw["train"] = {k: v for k, v in raw["train"].items() if k not in _RESUMABLE_CHANGES}
    return raw


def without_defaults(raw) -> dict:
    """``raw`` less the settings at their defaults (training, data and model), for comparing a
    checkpoint's configuration with config.json: a setting added in a later version (absent
    from older checkpoints) then matches as long as the run leaves it at its default."""
    if not isinstance(raw, dict):
        return raw
    sections = {"train": TrainConfig, "data": DataConfig}
    if raw.get("model") in MODELS:
        sections["model_config"] = MODELS.get(raw["model"])[0]
    out = dict(raw)
    for key, cls in sections.items():
        if isinstance(raw.get(key), dict):
            defaults = {f.name: field_default(f) for f in dataclasses.fields(cls)}
            defaults = json.loads(json.dumps(defaults, default=str))  # tuples as lists, as stored
            out[key] = {k: v for k, v in raw[key].items() if k not in defaults or v != defaults[k]}
    return out


def field_default(f: dataclasses.Field):
    """A dataclass field's default value (its factory's product), None where it has none."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None
