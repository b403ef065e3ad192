"""The data layer's configuration and plain records: no loading happens here.

:class:`DataConfig` says which data set and how to split it, :class:`RawData` is what a
source returns, :class:`DataSpec` what a model must know of its data (shapes, classes), and
:data:`DATASETS` the registry of named sources (filled by the source modules).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import check_bool, check_choice, check_fraction, check_int_tuple, check_positive_int, check_seed
from ..registry import Registry

if TYPE_CHECKING:
    from .dataset import DataSplits

#: Registered sources: name -> loader(config) -> RawData. Filled where each source is
#: defined (:mod:`pyro_vae.data.dataset`, :mod:`~pyro_vae.data.idx`, :mod:`~pyro_vae.data.matlab`).
DATASETS: Registry = Registry("dataset")

#: The largest ``image_size`` side a folder's images are resized to.
MAX_IMAGE_SIDE = 4096

#: Sources named by a path, ``KIND:PATH`` (the loaders live in :mod:`pyro_vae.data.dataset`).
PATH_SOURCES = ("npz", "folder")

BINARIZE_CHOICES = ("dynamic", "static", "none")


@dataclass
class DataConfig:
    """Which data set to load and how to split and binarize it.

    Parameters
    ----------
    name : str
        A registered data set (``digits`` ...), ``npz:PATH`` for a user's own arrays or
        ``folder:PATH`` for a directory of images (see :mod:`pyro_vae.data.folder`).
    binarize : str
        ``dynamic`` (default), ``static`` or ``none``; see the module docstring.
    test_fraction : float
        Share held out for testing, for sources without an official test split.
    val_fraction : float
        Share of the training part held out for validation (0 disables it).
    split_seed : int
        Seed of the train/validation/test split and of the one-off binarizations.
    data_dir : str or None
        Where file-based sources look for their files.
    download : bool
        Allow sources that can download (MNIST, Fashion-MNIST) to do so.
    subset : int or None
        Keep only the first ``subset`` training examples (after shuffling); for quick runs.
    image_size : tuple of int or None
        ``folder:`` only: resize every image to ``(H, W)`` (None: the images' own size,
        which must then be the same for all).
    channels : int or None
        ``folder:`` only: 1 (grey) or 3 (RGB) (None: 1 when every image is grey, else 3).
    labels_per_class : int or None
        Keep the labels of this many training examples per class (balanced, drawn from the
        ``labels`` stream of ``split_seed``) and mark the others unlabelled (``y = -1``), for
        semi-supervised models (M2). Validation and test labels are kept.
    """

    name: str = "digits"
    binarize: str = "dynamic"
    test_fraction: float = 0.2
    val_fraction: float = 0.0
    split_seed: int = 0
    data_dir: str | None = None
    download: bool = False
    subset: int | None = None
    labels_per_class: int | None = None
    image_size: tuple[int, int] | None = None
    channels: int | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"dataset must be a non-empty string, got {self.name!r}")
        if self.name.partition(":")[0] not in PATH_SOURCES or ":" not in self.name:
            check_choice("dataset", self.name, list(DATASETS) + [f"{kind}:PATH" for kind in PATH_SOURCES])
        check_choice("binarize", self.binarize, BINARIZE_CHOICES)
        check_fraction("test_fraction", self.test_fraction, allow_zero=False)
        check_fraction("val_fraction", self.val_fraction)
        check_seed("split_seed", self.split_seed)
        check_bool("download", self.download)
        if hasattr(self.data_dir, "__fspath__"):  # a pathlib.Path: kept as a JSON-friendly str
            self.data_dir = str(self.data_dir.__fspath__())
        if self.data_dir is not None and not isinstance(self.data_dir, str):
            raise TypeError(f"data_dir must be a path string or None, got {self.data_dir!r}")
        if self.subset is not None:
            check_positive_int("subset", self.subset)
        if self.labels_per_class is not None:
            check_positive_int("labels_per_class", self.labels_per_class)
        folder = self.name.startswith("folder:")
        if self.image_size is not None:
            if not folder:
                raise ValueError(f"image_size applies to folder: data sets, not {self.name!r}")
            size = check_int_tuple("image_size", self.image_size)
            if len(size) == 1:
                size = size * 2
            if len(size) != 2:
                raise ValueError(f"image_size must be H or (H, W), got {self.image_size!r}")
            if max(size) > MAX_IMAGE_SIDE:  # every image is decoded at this size, then kept
                raise ValueError(f"image_size must be at most {MAX_IMAGE_SIDE} per side, got {size}")
            self.image_size = size
        if self.channels is not None:
            if not folder:
                raise ValueError(f"channels applies to folder: data sets, not {self.name!r}")
            if self.channels not in (1, 3) or isinstance(self.channels, bool):
                raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {self.channels!r}")

    def resolved(self) -> DataConfig:
        """A copy whose file paths are absolute, so a run keeps finding its data from anywhere.

        ``data_dir`` becomes absolute; a relative ``npz:PATH`` (or ``folder:PATH``) becomes
        the absolute path of the file it names now (looked up from the working directory,
        then in ``data_dir``, as :func:`load_dataset` does).
        """
        from pathlib import Path  # noqa: PLC0415

        data_dir = None if self.data_dir is None else str(Path(self.data_dir).expanduser().absolute())
        name = self.name
        kind, sep, text = name.partition(":")
        if sep and text:
            path = Path(text).expanduser()
            if not path.is_absolute():
                in_dir = None if data_dir is None else Path(data_dir) / path
                path = in_dir if in_dir is not None and not path.exists() and in_dir.exists() else path.absolute()
            name = f"{kind}:{path}"
        return dataclasses.replace(self, name=name, data_dir=data_dir)


@dataclass(frozen=True)
class DataSpec:
    """What a model needs to know of its data, without the data: shapes and classes.

    A run directory stores it (config.json ``data_spec``), so a trained model can be rebuilt,
    sampled and plotted after its training data is gone.

    Example
    -------
    >>> spec = DataSpec(data_dim=64, image_shape=(1, 8, 8), num_classes=10)
    >>> DataSpec.from_dict(spec.to_dict()) == spec
    True
    """

    data_dim: int
    image_shape: tuple[int, int, int]  # (C, H, W), C * H * W == data_dim
    num_classes: int | None = None

    def __post_init__(self):
        check_positive_int("data_dim", self.data_dim)
        shape = tuple(self.image_shape) if isinstance(self.image_shape, (tuple, list)) else None
        if shape is None or len(shape) != 3 or not all(
                isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
            raise ValueError(f"image_shape must be three positive ints (C, H, W), got {self.image_shape!r}")
        if shape[0] * shape[1] * shape[2] != self.data_dim:
            raise ValueError(f"image_shape {shape} holds {shape[0] * shape[1] * shape[2]} values, "
                             f"not data_dim {self.data_dim}")
        object.__setattr__(self, "image_shape", shape)
        if self.num_classes is not None:
            check_positive_int("num_classes", self.num_classes)

    @classmethod
    def from_dataset(cls, data: DataSplits) -> DataSpec:
        return cls(data_dim=data.data_dim, image_shape=tuple(data.image_shape), num_classes=data.num_classes)

    def to_dict(self) -> dict:
        return {"data_dim": self.data_dim, "image_shape": list(self.image_shape),
                "num_classes": self.num_classes}

    @classmethod
    def from_dict(cls, raw) -> DataSpec:
        """Rebuild from :meth:`to_dict`'s output; ``ValueError`` for anything else."""
        if not isinstance(raw, dict) or set(raw) != {"data_dim", "image_shape", "num_classes"}:
            raise ValueError(f"data_spec must be an object with keys data_dim, image_shape, "
                             f"num_classes, got {raw!r}")
        return cls(data_dim=raw["data_dim"], image_shape=raw["image_shape"], num_classes=raw["num_classes"])


@dataclass
class RawData:
    """What a source loader returns: flattened images before splitting.

    ``x`` holds grey levels in [0, 1] (floating point) or the source's integer levels
    ``0..pixel_max`` (an unsigned integer array, e.g. 8-bit images as read from disk): those
    are scaled to float32 in [0, 1] by :func:`load_dataset` only for the rows it keeps, so a
    large source is never held as floats in full beside its split copies.
    ``x_test``/``y_test`` are ``None`` for sources without an official test split.
    """

    x: np.ndarray  # (n, D) float in [0, 1], or unsigned integers in 0..pixel_max
    y: np.ndarray | None  # (n,) int64
    image_shape: tuple[int, int, int]  # (C, H, W)
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    num_classes: int | None = None
    pixel_max: int = 255  # the source's integer grey levels are 0..pixel_max
