"""The data layer: configuration and splits, file sources, and streaming for training.

- :mod:`~pyro_vae.data.config`: :class:`DataConfig`, :class:`DataSpec`, :class:`RawData` and
  the :data:`DATASETS` registry;
- :mod:`~pyro_vae.data.dataset`: :class:`DataSplits` (the splits as tensors), :func:`load_dataset`
  (load, validate, split, binarize), the per-split generators;
- sources: the embedded ``digits`` (in ``dataset``), :mod:`~pyro_vae.data.idx` (MNIST,
  Fashion-MNIST), :mod:`~pyro_vae.data.matlab` (Frey Face), :mod:`~pyro_vae.data.npz`
  (``npz:PATH``), :mod:`~pyro_vae.data.folder` (``folder:PATH``, image folders);
- :mod:`~pyro_vae.data.streaming`: what :func:`pyro_vae.inference.fit` and the evaluation
  accept besides a :class:`DataSplits` (tensors, torch datasets, DataLoaders).

Example
-------
>>> from pyro_vae.data import DataConfig, load_dataset
>>> data = load_dataset(DataConfig(name="digits"))
>>> data.x_train.shape[1], data.image_shape
(64, (1, 8, 8))
"""

from . import embedded, idx, matlab  # noqa: F401  (register digits, mnist, fashion-mnist, frey)
from .config import BINARIZE_CHOICES, DATASETS, PATH_SOURCES, DataConfig, DataSpec, RawData
from .dataset import DataSplits, iterate_batches, keep_labels_per_class, load_dataset, split_generator
from .dataset import deprecated_alias as _deprecated_alias
from .files import default_data_root

__all__ = [
    "BINARIZE_CHOICES", "DATASETS", "PATH_SOURCES", "DataConfig", "DataSpec", "DataSplits", "RawData",
    "default_data_root", "iterate_batches", "keep_labels_per_class", "load_dataset", "split_generator",
]


def __getattr__(name: str):  # the old name Dataset of DataSplits, with a DeprecationWarning
    return _deprecated_alias(__name__, name)
