"""The check :func:`~pyro_vae.inference.train.fit` makes of its data once, before training.

Example
-------
>>> from pyro_vae.data import DataConfig, load_dataset
>>> from pyro_vae.models import VAEConfig
>>> from pyro_vae.models.cvae import CVAE
>>> data = load_dataset(DataConfig("digits"))
>>> validate_training_data(CVAE(data.data_dim, VAEConfig(latent_dim=2), num_classes=10), data)
"""

from __future__ import annotations

import torch


def validate_training_data(model, data) -> None:
    """Raise ``ValueError`` if ``data`` cannot train ``model`` (labels, shapes, pixel support).

    :func:`fit` calls it; a caller may call it earlier, before it commits to anything.
    """
    x_test, y_test = data.split("test")  # empty for data given as tensors: then not checked
    if model.needs_labels and (data.y_train is None or (y_test is None and x_test.shape[0])):
        raise ValueError(f"model {type(model).__name__} needs labels but dataset {data.name!r} has none")
    unlabelled = 0 if y_test is None or not y_test.numel() else int((y_test < 0).sum())
    if unlabelled:
        raise ValueError(f"{data.name} test data has {unlabelled} unlabelled rows (y = -1); the test "
                         f"split scores every model and must be fully labelled")
    if model.needs_labels and data.y_train is not None and data.y_train.numel():
        unlabelled = int((data.y_train < 0).sum())
        if unlabelled:
            raise ValueError(
                f"model {type(model).__name__} needs every label but {data.name} training data has "
                f"{unlabelled} unlabelled rows (y = -1); use --model m2 (semi-supervised)")
    x_train, y_train = data.x_train, data.y_train
    if data.binarize == "dynamic":
        # Grey levels are Bernoulli probabilities (False for NaN too); the likelihood then
        # sees 0/1 draws, so a draw is what it checks.
        if x_train.numel() and not bool(((x_train >= 0) & (x_train <= 1)).all()):
            raise ValueError(
                f"{data.name} training data: dynamic binarization needs grey levels in [0, 1], "
                f"got values in [{x_train.min().item():.4g}, {x_train.max().item():.4g}]"
            )
        x_train = torch.bernoulli(x_train[:1024])
        y_train = None if y_train is None else y_train[:1024]  # rows matching the checked draw
    model.validate_data(x_train, y_train, name=f"{data.name} training data")
    if x_test.shape[0]:
        model.validate_data(x_test, y_test, name=f"{data.name} test data")
