"""Comparison entries: a model, or a named variant of one, parsed from ``NAME=MODEL:key=value``.

An entry is what one row of a comparison shows: a registered model (``vae``), an alias
(``ae``: the VAE with a point-mass guide), or a named variant with options of its own, e.g.
``vamp=vae:prior=vamp`` or ``iwae5=vae:objective=iwae:particles=5``. Options are fields of
the model's config dataclass, training settings or data settings (:data:`TRAIN_KEYS`,
:data:`DATA_KEYS`), and ``samples`` (the K of the final log-likelihood). A list value
(``hidden_dims``) separates its items with ``/``: ``big=vae:hidden_dims=512/256``.

Example
-------
>>> from pyro_vae.compare.entries import parse_entries
>>> [e.name for e in parse_entries("vae,vamp=vae:prior=vamp,beta4=vae:beta=4")]
['vae', 'vamp', 'beta4']
>>> parse_entries("beta4=vae:beta=4")[0].train_options
{'beta': 4.0}
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from ..data import DataConfig
from ..errors import check_choice
from ..inference.config import TrainConfig
from ..models import MODELS
from ..runs import field_default

#: Comparison entries beyond the registered model names: name -> (model, model options).
ALIASES = {"ae": ("vae", {"guide": "delta"})}

#: Training settings an entry may set for itself (the seed comes from ``--seeds``).
TRAIN_KEYS = ("epochs", "batch_size", "lr", "objective", "particles", "beta", "kl_warmup",
              "patience", "select_on", "eval_every", "dtype")
#: Data settings an entry may set: they change training, never the test set.
DATA_KEYS = ("binarize", "subset", "val_fraction", "labels_per_class")
#: Other spellings accepted for option keys (the CLI's flag names).
KEY_ALIASES = {"components": "num_components", "eval_samples": "samples"}

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*\Z")


def entry_choices() -> list[str]:
    """Model names and aliases an entry may start from."""
    return sorted(set(MODELS) | set(ALIASES))


@dataclass(frozen=True)
class Entry:
    """One row of a comparison: ``model`` trained with its own options on the shared budget."""

    name: str
    model: str
    model_options: dict = field(default_factory=dict)
    train_options: dict = field(default_factory=dict)
    data_options: dict = field(default_factory=dict)
    samples: int | None = None


def accepted_keys(model: str) -> list[str]:
    """Option keys an entry of ``model`` accepts."""
    model_fields = [f.name for f in dataclasses.fields(MODELS[model][0])]
    return sorted({*model_fields, *TRAIN_KEYS, *DATA_KEYS, "samples"})


def parse_entries(text: str) -> list[Entry]:
    """Parse ``--models``: comma-separated entries; refuses bad specs and duplicate names.

    A piece ``key=value`` whose value is not a model name continues the options of the entry
    before it, so ``vamp=vae:prior=vamp,prior_components=50`` is one entry.
    """
    if not isinstance(text, str):
        raise TypeError(f"models must be a comma-separated string, got {type(text).__name__}")
    pieces = text.split(",")
    if not text.strip() or any(not p.strip() for p in pieces):
        raise ValueError(f"models {text!r} has an empty entry; give comma-separated entries such "
                         f"as vae,vamp=vae:prior=vamp")
    specs: list[list] = []  # [name, model spec, extra options]
    for piece in (p.strip() for p in pieces):
        left, sep, right = piece.partition("=")
        if sep and ":" in left:  # MODEL:key=value without NAME=
            raise ValueError(f"models entry {piece!r} has options, so it needs a name: "
                             f"NAME={piece} (the name labels its row and run directory)")
        if sep and right.split(":")[0] in entry_choices():
            specs.append([left, right, []])
        elif sep and specs:  # key=value: one more option of the entry before
            specs[-1][2].append(piece)
        elif sep:
            raise ValueError(
                f"models entry {piece!r}: expected NAME=MODEL[:key=value...] with MODEL one of "
                f"{', '.join(entry_choices())}")
        else:
            specs.append([None, piece, []])
    entries = [parse_entry(name, spec, extra) for name, spec, extra in specs]
    check_unique([e.name for e in entries], "models")
    return entries


def parse_entry(name: str | None, spec: str, extra=()) -> Entry:
    """One entry from its ``name`` (None: the model or alias name) and ``MODEL[:key=value...]``."""
    model_name, *options = spec.split(":")
    check_choice("model", model_name, entry_choices())
    options = [*options, *extra]
    if name is None:
        if options:
            raise ValueError(f"models entry {spec!r} has options, so it needs a name: "
                             f"NAME={spec} (the name labels its row and run directory)")
        name = model_name
    if not _NAME.match(name):
        raise ValueError(f"entry name {name!r} must start with a letter or digit and hold only "
                         f"letters, digits and _ . + - (it names a run directory)")
    model, alias_options = ALIASES.get(model_name, (model_name, {}))
    entry = Entry(name=name, model=model, model_options=dict(alias_options))
    accepted = accepted_keys(model)
    for option in options:
        key, sep, raw = option.partition("=")
        key = KEY_ALIASES.get(key.replace("-", "_"), key.replace("-", "_"))
        if not sep or not key or not raw:
            raise ValueError(f"entry {name!r}: option {option!r} must read key=value")
        if key not in accepted:
            raise ValueError(f"entry {name!r}: unknown option {key!r} for model {model!r}; "
                             f"it accepts: {', '.join(accepted)}")
        if key == "samples":
            value = _parse_value(name, key, raw, 1)
            object.__setattr__(entry, "samples", value)
            continue
        if key in TRAIN_KEYS:
            target, default = entry.train_options, getattr(TrainConfig(), key)
        elif key in DATA_KEYS:
            target, default = entry.data_options, getattr(DataConfig(), key)
        else:
            fields = {f.name: f for f in dataclasses.fields(MODELS[model][0])}
            target, default = entry.model_options, field_default(fields[key])
        if key in target and key not in alias_options:
            raise ValueError(f"entry {name!r}: option {key!r} is given twice")
        target[key] = _parse_value(name, key, raw, default)
    return entry


def check_unique(names, what: str) -> None:
    """Refuse a name that appears twice, naming it."""
    seen = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{what} lists the entry name {name!r} twice; names label rows and run "
                             f"directories, so each must be unique (NAME=MODEL:... renames one)")
        seen.add(name)


def _parse_value(name: str, key: str, raw: str, default):
    """``raw`` converted like the option's default value; the config dataclasses check the rest."""
    try:
        if raw.lower() in ("none", "null"):
            return None
        if isinstance(default, bool):
            if raw.lower() not in ("true", "false"):
                raise ValueError
            return raw.lower() == "true"
        if isinstance(default, (tuple, list)):
            return tuple(int(part) for part in raw.split("/"))
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if default is None:  # an optional number or name
            for convert in (int, float):
                try:
                    return convert(raw)
                except ValueError:
                    pass
        return raw
    except ValueError:
        kind = {bool: "true or false", tuple: "integers separated by / such as 400/200",
                int: "an integer", float: "a number"}
        expected = next((text for t, text in kind.items() if isinstance(default, t)), "a value")
        raise ValueError(f"entry {name!r}: option {key}={raw!r} must be {expected}") from None
