"""Data sets held as tensors, split once with a fixed seed, batched on the training device.

A :class:`DataSplits` keeps every split as one float tensor of shape ``(n, D)`` with pixels in
[0, 1] (``D = C * H * W``) and, where the source has them, integer labels of shape ``(n,)``.
Batches are slices of those tensors on the training device: no per-item ``DataLoader`` work.

Binarization (for Bernoulli likelihoods) follows the literature's protocol:

- ``dynamic``: every training batch is a fresh Bernoulli draw of its grey levels; the
  validation and test sets are binarized once with a fixed seed, so reported log-likelihoods
  are proper discrete likelihoods that do not change between evaluations;
- ``static``: the training set too is binarized once;
- ``none``: grey levels are kept (for continuous likelihoods).

One test set per data definition: each split is binarized by a generator of its own, seeded
from ``(split_seed, split name)``, so the binary test set depends only on the data set, its
split (``test_fraction``, ``split_seed``) and that seed, never on the training binarization
mode, ``val_fraction`` or ``subset``. Runs on the same definition are scored on the same
tensor, which :func:`pyro_vae.inference.evaluate.fingerprint` identifies.

Example
-------
>>> from pyro_vae.data import DataConfig, load_dataset
>>> data = load_dataset(DataConfig(name="digits"))
>>> data.x_train.shape[1], data.image_shape
(64, (1, 8, 8))
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import check_choice, check_instance, check_positive_int
from .config import DATASETS, PATH_SOURCES, DataConfig, DataSpec, RawData


@dataclass
class DataSplits:
    """Train/validation/test tensors of one data set, ready for batching.

    ``x_*`` have shape ``(n, D)``; ``y_*`` have shape ``(n,)`` or are ``None``.
    The validation split is empty (``n = 0``) unless ``val_fraction > 0``. Formerly
    ``Dataset``, a name torch's ``Dataset`` made ambiguous (the old name still works, and warns).
    """

    name: str
    image_shape: tuple[int, int, int]
    x_train: torch.Tensor
    y_train: torch.Tensor | None
    x_val: torch.Tensor
    y_val: torch.Tensor | None
    x_test: torch.Tensor
    y_test: torch.Tensor | None
    num_classes: int | None
    binarize: str
    pixel_max: int = 255  # integer grey levels of the source: x = level / pixel_max

    @property
    def data_dim(self) -> int:
        return self.x_train.shape[1]

    @property
    def spec(self) -> DataSpec:
        """Shapes and classes of this data set (:class:`DataSpec`)."""
        return DataSpec.from_dataset(self)

    @property
    def binary(self) -> bool:
        """Whether every batch this data set yields holds only 0s and 1s."""
        return self.binarize != "none"

    def to(self, device=None, dtype=None) -> DataSplits:
        """Return a copy with every ``x`` tensor moved/cast and every ``y`` tensor moved."""

        def move(t, cast):
            if t is None:
                return None
            return t.to(device=device, dtype=dtype) if cast else t.to(device=device)

        changes = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, torch.Tensor):
                changes[field.name] = move(value, field.name.startswith("x_"))
        return dataclasses.replace(self, **changes)

    def train_batches(self, batch_size: int, shuffle: bool = True) -> Iterator[tuple]:
        """Yield ``(x, y)`` training batches; ``x`` is freshly binarized if ``dynamic``."""
        yield from iterate_batches(
            self.x_train, self.y_train, batch_size, shuffle=shuffle,
            binarize=self.binarize == "dynamic",
        )

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return ``(x, y)`` of the split ``train``, ``val`` or ``test`` (fixed, no resampling)."""
        check_choice("split", name, ("train", "val", "test"))
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")


def iterate_batches(x, y, batch_size, *, shuffle=True, binarize=False):
    """Yield ``(x_batch, y_batch)`` slices of on-device tensors.

    The permutation and the binarization draw from torch's global generator on ``x``'s device,
    so a seeded run is reproducible and a resumed one continues the same stream.
    """
    check_positive_int("batch_size", batch_size)
    n = x.shape[0]
    order = torch.randperm(n, device=x.device) if shuffle else None
    for start in range(0, n, batch_size):
        if order is None:
            xb = x[start:start + batch_size]
            yb = None if y is None else y[start:start + batch_size]
        else:
            idx = order[start:start + batch_size]
            xb = x[idx]
            yb = None if y is None else y[idx]
        if binarize:
            xb = torch.bernoulli(xb)
        yield xb, yb


# --------------------------------------------------------------------------- sources


def _source_for(name: str) -> Callable[[DataConfig], RawData]:
    kind, sep, _ = name.partition(":")
    if sep and kind == "npz":
        from .npz import load_npz  # noqa: PLC0415
        return load_npz
    if sep and kind == "folder":
        from .folder import load_folder  # noqa: PLC0415
        return load_folder
    return DATASETS.get(check_choice("dataset", name, list(DATASETS) + [f"{k}:PATH" for k in PATH_SOURCES]))


def load_dataset(config: DataConfig | None = None) -> DataSplits:
    """Load, validate, split and (where asked) binarize a data set.

    Returns CPU float32 tensors; :meth:`DataSplits.to` moves them to the training device.
    """
    config = DataConfig() if config is None else config
    if isinstance(config, str):
        raise TypeError(f"config must be a DataConfig, got the string {config!r}; "
                        f"write load_dataset(DataConfig({config!r}))")
    check_instance("config", config, DataConfig)
    raw = _source_for(config.name)(config)
    _validate_raw(raw, config.name)
    rng = np.random.default_rng(config.split_seed)

    # Rows are chosen by index and copied once each, straight from the source's array.
    if raw.x_test is None:
        order = rng.permutation(raw.x.shape[0])
        n_test = max(1, int(round(config.test_fraction * len(order))))
        test_idx, rest_idx = order[:n_test], order[n_test:]
        x_test, y_test = raw.x[test_idx], _take(raw.y, test_idx)
    else:
        rest_idx = rng.permutation(raw.x.shape[0])
        x_test, y_test = raw.x_test, raw.y_test
    n_val = int(round(config.val_fraction * len(rest_idx)))
    val_idx, train_idx = rest_idx[:n_val], rest_idx[n_val:]
    if config.subset is not None:
        train_idx = train_idx[: config.subset]
    x_val, y_val = raw.x[val_idx], _take(raw.y, val_idx)
    x_train, y_train = raw.x[train_idx], _take(raw.y, train_idx)
    if config.labels_per_class is not None:
        y_train = keep_labels_per_class(y_train, config.labels_per_class, config.split_seed, config.name)
    if x_train.shape[0] == 0 or x_test.shape[0] == 0:
        raise ValueError(
            f"dataset {config.name!r} leaves an empty split (train={x_train.shape[0]}, "
            f"test={x_test.shape[0]}); it needs at least 2 examples"
        )

    def to_tensor(a, split, binarize_once):
        t = torch.from_numpy(_unit_float32(a, raw.pixel_max))
        if not binarize_once:
            return t
        # One generator per split, independent of training's RNG and of the other splits.
        return torch.bernoulli(t, generator=split_generator(config.split_seed, split))

    binarize_eval = config.binarize != "none"
    return DataSplits(
        name=config.name,
        image_shape=tuple(raw.image_shape),
        x_train=to_tensor(x_train, "train", config.binarize == "static"),
        y_train=_label_tensor(y_train),
        x_val=to_tensor(x_val, "val", binarize_eval),
        y_val=_label_tensor(y_val),
        x_test=to_tensor(x_test, "test", binarize_eval),
        y_test=_label_tensor(y_test),
        num_classes=raw.num_classes,
        binarize=config.binarize,
        pixel_max=raw.pixel_max,
    )


#: Stream numbers of the per-split generators (see :func:`split_generator`).
_SPLIT_STREAMS = {"train": 0, "val": 1, "test": 2, "probe": 3, "labels": 4, "preflight": 5}


def keep_labels_per_class(y: np.ndarray | None, per_class: int, split_seed: int, name: str = "data") -> np.ndarray:
    """``y`` with ``per_class`` labels kept per class and the others set to -1 (unlabelled).

    Which rows keep their label is drawn by the ``labels`` stream of ``split_seed`` (a pure
    function of the seed and the training labels); rows already unlabelled stay so. Raises
    ``ValueError`` for a data set without labels or a class with fewer labelled rows.

    Example
    -------
    >>> keep_labels_per_class(np.array([0, 0, 1, 1, 1]), 1, 0)
    array([-1,  0,  1, -1, -1])
    """
    if y is None:
        raise ValueError(f"labels_per_class needs labels but dataset {name!r} has none")
    check_positive_int("labels_per_class", per_class)
    generator = split_generator(split_seed, "labels")
    out = np.full_like(y, -1, dtype=np.int64)
    for c in np.unique(y[y >= 0]):
        rows = np.flatnonzero(y == c)
        if per_class > rows.size:
            raise ValueError(f"labels_per_class {per_class} is larger than class {int(c)}'s "
                             f"{rows.size} labelled training examples in dataset {name!r}")
        keep = rows[torch.randperm(rows.size, generator=generator)[:per_class].numpy()]
        out[keep] = c
    return out


def split_generator(split_seed: int, split: str) -> torch.Generator:
    """A CPU generator for the one-off draws of ``split``, a pure function of both arguments.

    ``probe`` is the stream that binarizes the training images the latent probe encodes;
    ``preflight`` the batch a run tries before its directory is replaced.
    """
    state = np.random.SeedSequence([split_seed, _SPLIT_STREAMS[split]]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def _unit_float32(a: np.ndarray, pixel_max: int) -> np.ndarray:
    """``a`` as contiguous float32 in [0, 1]: integer levels divided by ``pixel_max`` in place."""
    if np.issubdtype(a.dtype, np.integer):
        out = a.astype(np.float32)
        out /= pixel_max  # float32 arithmetic, the same values as a.astype(float32) / pixel_max
        return out
    return np.ascontiguousarray(a, dtype=np.float32)


def _take(y, idx):
    return None if y is None else y[idx]


def _label_tensor(y):
    return None if y is None else torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))


def _validate_raw(raw: RawData, name: str) -> None:
    """Refuse arrays that cannot be images in [0, 1], naming what was wrong."""
    for label, x in (("x", raw.x), ("x_test", raw.x_test)):
        if x is None:
            continue
        if x.ndim != 2:
            raise ValueError(f"dataset {name!r}: {label} must have shape (n, D), got {x.shape}")
        if x.shape[0] == 0:
            raise ValueError(f"dataset {name!r}: {label} is empty")
        if np.issubdtype(x.dtype, np.integer):  # the source's grey levels 0..pixel_max
            if x.min() < 0 or x.max() > raw.pixel_max:
                raise ValueError(
                    f"dataset {name!r}: {label} grey levels must lie in 0..{raw.pixel_max}, got "
                    f"range [{x.min()}, {x.max()}]"
                )
            continue
        if not np.isfinite(x).all():
            raise ValueError(f"dataset {name!r}: {label} contains NaN or Inf values")
        if x.min() < 0 or x.max() > 1:
            raise ValueError(
                f"dataset {name!r}: float {label} must lie in [0, 1], got range "
                f"[{x.min():.4g}, {x.max():.4g}]; store grey levels as integers 0..{raw.pixel_max} "
                f"or divide by the maximum first"
            )
    c, h, w = raw.image_shape
    if raw.x.shape[1] != c * h * w:
        raise ValueError(
            f"dataset {name!r}: {raw.x.shape[1]} features do not match image shape {raw.image_shape}"
        )


def __getattr__(name: str):
    return deprecated_alias(__name__, name)


def deprecated_alias(module: str, name: str):
    """``DataSplits`` for the old name ``Dataset`` (with a DeprecationWarning); else AttributeError.

    The modules that exported ``Dataset`` call it from their ``__getattr__`` (PEP 562).
    """
    if name == "Dataset":
        warnings.warn("pyro_vae's Dataset is now called DataSplits (torch's Dataset made the old name "
                      "ambiguous); the name Dataset will be removed", DeprecationWarning, stacklevel=3)
        return DataSplits
    raise AttributeError(f"module {module!r} has no attribute {name!r}")
