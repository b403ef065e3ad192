"""The data set shipped with the library's dependencies: scikit-learn's digits (no download)."""

from __future__ import annotations

import numpy as np

from .config import DATASETS, DataConfig, RawData


@DATASETS.register("digits")
def _load_digits(config: DataConfig) -> RawData:
    """scikit-learn's 1,797 handwritten digits, 8 x 8 grey levels 0..16, labels 0..9 (embedded)."""
    from sklearn.datasets import load_digits  # noqa: PLC0415

    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32)  # grey levels 0..16 -> [0, 1]
    return RawData(x=x, y=bunch.target.astype(np.int64), image_shape=(1, 8, 8), num_classes=10,
                   pixel_max=16)
