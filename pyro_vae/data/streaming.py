"""Data from anywhere: tensors, torch datasets and DataLoaders, for training and evaluation.

:func:`pyro_vae.inference.fit` and the functions of :mod:`pyro_vae.inference.evaluate`
accept, besides a :class:`~pyro_vae.data.DataSplits`:

- a tensor ``x`` of shape ``(n, D)``, ``(n, H, W)`` or ``(n, C, H, W)``, or a pair ``(x, y)``
  with integer labels ``y`` of shape ``(n,)``; a ``torch.utils.data.TensorDataset`` of
  ``(x,)`` or ``(x, y)``: held in memory and batched on the device as a
  :class:`~pyro_vae.data.DataSplits` is (:func:`in_memory`): no per-batch Python work;
- any other ``torch.utils.data.Dataset`` whose items are ``x`` or ``(x, y)``: streamed
  through a ``DataLoader`` that :func:`as_loader` builds (``batch_size`` of the training
  configuration, shuffled, pinned memory when training on CUDA);
- a ``torch.utils.data.DataLoader`` whose batches are ``x`` or ``(x, y)``: used as it is (its
  own batch size, sampler and workers); each batch is flattened to ``(N, D)`` and moved to
  the model's device and dtype as it arrives (:func:`to_model_batch`), so training memory
  does not grow with the data set.

Data given this way is used as given: nothing is split off, binarized or rescaled (for a
Bernoulli likelihood give 0/1 pixels, or use :func:`~pyro_vae.data.load_dataset`'s
protocol with an ``npz:`` file or a ``folder:``). Streamed batches draw their order from
torch's global generator (a DataLoader's default sampler does), which ``fit`` seeds and its
checkpoints save, so a seeded run is reproducible, with or without worker processes. Under
torchrun each process streams its own shard (see
:mod:`pyro_vae.inference.streamed_shards`).

Example
-------
>>> import torch
>>> from torch.utils.data import DataLoader, TensorDataset
>>> from pyro_vae.data.streaming import batches
>>> x = torch.bernoulli(torch.full((10, 1, 4, 4), 0.5))
>>> [tuple(b[0].shape) for b in batches(DataLoader(TensorDataset(x), batch_size=4))]
[(4, 16), (4, 16), (2, 16)]
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, IterableDataset, TensorDataset
from torch.utils.data import Dataset as TorchDataset

from .dataset import DataSplits


def tensor_pair(data) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """``(x, y)`` of a tensor, a pair of tensors or a TensorDataset; None for anything else."""
    if isinstance(data, torch.Tensor):
        return data, None
    if isinstance(data, TensorDataset):
        tensors = data.tensors
        if len(tensors) not in (1, 2):
            raise ValueError(f"data: a TensorDataset of (x,) or (x, y), got {len(tensors)} tensors")
        return tensors[0], (tensors[1] if len(tensors) == 2 else None)
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(
            isinstance(t, torch.Tensor) or t is None for t in data) and isinstance(data[0], torch.Tensor):
        return data[0], data[1]
    return None


def _image_shape(x: torch.Tensor, what: str) -> tuple[int, int, int]:
    if x.dim() == 2:
        return (1, 1, int(x.shape[1]))
    if x.dim() == 3:
        return (1, int(x.shape[1]), int(x.shape[2]))
    if x.dim() == 4:
        return tuple(int(s) for s in x.shape[1:])
    raise ValueError(f"{what} must have shape (n, D), (n, H, W) or (n, C, H, W), got {tuple(x.shape)}")


def _checked_labels(y, n: int, what: str) -> torch.Tensor | None:
    if y is None:
        return None
    if not isinstance(y, torch.Tensor) or y.dtype.is_floating_point or y.dtype == torch.bool or y.is_complex():
        raise TypeError(f"{what} labels must be an integer tensor of shape ({n},), got "
                        f"{getattr(y, 'dtype', type(y).__name__)}")
    if tuple(y.shape) != (n,):
        raise ValueError(f"{what} labels must have shape ({n},), one per example, got {tuple(y.shape)}")
    return y.long()


def in_memory(data, *, name: str = "tensors") -> DataSplits | None:
    """A tensor, ``(x, y)`` pair or TensorDataset as a :class:`DataSplits` (None for other data).

    Everything is the training split; validation and test splits are empty, binarization
    ``none`` (the pixels are used as given), ``num_classes`` is ``max(y) + 1``.

    Example
    -------
    >>> data = in_memory((torch.rand(6, 2, 3, 3), torch.tensor([0, 1, 2, 0, 1, 2])))
    >>> data.x_train.shape, data.image_shape, data.num_classes
    (torch.Size([6, 18]), (2, 3, 3), 3)
    """
    pair = tensor_pair(data)
    if pair is None:
        return None
    x, y = pair
    if x.shape[0] == 0:
        raise ValueError(f"data holds no examples (x has shape {tuple(x.shape)}); nothing to train on")
    if x.dtype == torch.bool or x.is_complex():
        raise TypeError(f"data x must hold real numbers, got dtype {x.dtype}")
    image_shape = _image_shape(x, "data x")
    y = _checked_labels(y, x.shape[0], "data")
    flat = x.reshape(x.shape[0], -1)
    if not flat.is_floating_point():
        flat = flat.to(torch.get_default_dtype())
    empty_x = flat[:0]
    empty_y = None if y is None else y[:0]
    num_classes = None if y is None or not bool((y >= 0).any()) else int(y.max()) + 1
    return DataSplits(name=name, image_shape=image_shape, x_train=flat, y_train=y, x_val=empty_x,
                   y_val=empty_y, x_test=empty_x, y_test=empty_y, num_classes=num_classes,
                   binarize="none", pixel_max=255)


def as_loader(data, batch_size: int, *, shuffle: bool = True, pin_memory: bool = False) -> DataLoader | None:
    """A DataLoader over ``data``: itself if it is one, a new one over a torch Dataset, else None."""
    if isinstance(data, DataLoader):
        return data
    if isinstance(data, IterableDataset):  # its own order: nothing to shuffle
        return DataLoader(data, batch_size=batch_size, pin_memory=pin_memory)
    if isinstance(data, TorchDataset) and not isinstance(data, TensorDataset):
        if shuffle and not hasattr(data, "__len__"):
            raise ValueError(f"data: a map-style torch Dataset ({type(data).__name__}) needs __len__ to be "
                             f"shuffled; define it, or give an IterableDataset or a DataLoader")
        return DataLoader(data, batch_size=batch_size, shuffle=shuffle, pin_memory=pin_memory)
    return None


def to_model_batch(batch, *, data_dim: int | None = None, device=None, dtype=None,
                   what: str = "batch", label_range: tuple[int, int] | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One loader batch (``x``, ``(x,)`` or ``(x, y)``) as ``(x (N, D), y (N,) or None)``.

    ``x`` is flattened, checked against ``data_dim`` (the model's pixel count, where given)
    and moved to ``device``/``dtype`` (asynchronously from pinned memory); ``y`` is checked
    to lie in ``label_range`` (``(low, high)``, where given and ``y`` is on the CPU, so
    without a device sync) and moved to ``device`` as int64.
    """
    if isinstance(batch, dict):
        raise TypeError(f"{what}: a dict; the loader must yield x or (x, y) tensors")
    if isinstance(batch, (tuple, list)):
        if len(batch) not in (1, 2):
            raise ValueError(f"{what}: the loader must yield x or (x, y), got {len(batch)} items")
        x, y = batch[0], (batch[1] if len(batch) == 2 else None)
    else:
        x, y = batch, None
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what}: x must be a tensor, got {type(x).__name__} (convert images with "
                        f"torchvision.transforms.ToTensor())")
    if x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(f"{what}: x must have shape (N, D), (N, H, W) or (N, C, H, W), got {tuple(x.shape)}")
    if x.dtype == torch.bool or x.is_complex():
        raise TypeError(f"{what}: x must hold real numbers, got dtype {x.dtype}")
    x = x.reshape(x.shape[0], -1)
    if data_dim is not None and x.shape[1] != data_dim:
        raise ValueError(f"{what}: x has {x.shape[1]} values per example but the model expects "
                         f"data_dim {data_dim}")
    y = _checked_labels(y, x.shape[0], what)
    if label_range is not None and y is not None and not _labels_on_device(y) and y.numel():
        low, high = int(y.min()), int(y.max())
        if low < label_range[0] or high > label_range[1]:
            raise ValueError(f"{what}: labels must lie in [{label_range[0]}, {label_range[1]}], got "
                             f"values in [{low}, {high}]")
    non_blocking = x.is_pinned()
    if dtype is None and not x.is_floating_point():
        dtype = torch.get_default_dtype()
    x = x.to(device=device, dtype=dtype, non_blocking=non_blocking)
    if y is not None:
        y = y.to(device=device, non_blocking=non_blocking)
    return x, y


def batches(data, batch_size: int = 1000, *, data_dim: int | None = None, device=None,
            dtype=None) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Evaluation batches ``(x (N, D), y)`` of any accepted kind of data, in order.

    Tensors and TensorDatasets are sliced (``batch_size`` rows at a time); a torch Dataset is
    read through a DataLoader without shuffling; a DataLoader yields its own batches.
    """
    pair = tensor_pair(data)
    if pair is not None:
        x, y = pair
        x = x.reshape(x.shape[0], -1) if x.dim() > 2 else x
        for start in range(0, x.shape[0], batch_size):
            yield to_model_batch((x[start:start + batch_size],
                                  None if y is None else y[start:start + batch_size]),
                                 data_dim=data_dim, device=device, dtype=dtype)
        return
    loader = as_loader(data, batch_size, shuffle=False)
    if loader is None:
        raise TypeError(f"data must be a tensor, an (x, y) pair, a torch Dataset or a DataLoader, "
                        f"got {type(data).__name__}")
    for i, batch in enumerate(loader):
        yield to_model_batch(batch, data_dim=data_dim, device=device, dtype=dtype, what=f"batch {i}")


def is_streamed(data) -> bool:
    """Whether ``data`` is read batch by batch (a torch Dataset or DataLoader, not a tensor)."""
    return isinstance(data, DataLoader) or (isinstance(data, TorchDataset) and not isinstance(data, TensorDataset))


# --------------------------------------------------------------------------- for fit


def training_data(data, batch_size: int, device: torch.device):
    """``(DataSplits or None, DataLoader or None)``: what :func:`pyro_vae.inference.fit` was
    given, in the form it trains on (``TypeError`` for anything it does not accept)."""
    if isinstance(data, DataSplits):
        converted = data
    else:
        converted = in_memory(data)
    if converted is not None:
        if converted.x_train.shape[0] == 0:
            raise ValueError(f"data {converted.name!r} has an empty training split (x_train has shape "
                             f"{tuple(converted.x_train.shape)}); nothing to train on")
        return converted, None
    loader = as_loader(data, batch_size, pin_memory=device.type == "cuda")
    if loader is None:
        raise TypeError(f"data must be a pyro_vae.data.DataSplits (load_dataset(DataConfig(...))), a tensor, "
                        f"an (x, y) pair of tensors, a torch Dataset or a DataLoader; got {type(data).__name__}")
    return None, loader


def loader_length(loader) -> int | None:
    """Batches per epoch of ``loader`` (the progress bar's total), None when it cannot say."""
    try:
        return len(loader)
    except TypeError:  # an iterable-style dataset has no length
        return None


def _labels_on_device(y: torch.Tensor) -> bool:
    """Whether labels live off the CPU, where reading them would stall the device."""
    return y.device.type != "cpu"


def _raw_labels(batch):
    """The ``y`` of a loader batch as the loader yielded it (None without one)."""
    if isinstance(batch, (tuple, list)) and len(batch) == 2 and isinstance(batch[1], torch.Tensor):
        return batch[1]
    return None


def loader_batches(model, loader, device: torch.device, epoch: int, extremes: list, label_extremes: list):
    """The loader's batches on the model's device and dtype; the epoch's first batch is
    validated as ``fit`` validates a DataSplits (one host sync per epoch), every batch's shape
    and (on the CPU, before they move) labels. ``extremes`` gets each batch's smallest and
    largest pixel, a pair of device tensors (stacked only when read), read once the epoch ends
    (:func:`check_batch_range`) and when its loss is not finite (:func:`check_finite_batches`).

    Labels the loader yields already on a device (a GPU) cannot be checked without a sync:
    ``label_extremes`` gets ``(batch number, (smallest, largest))`` of each such batch, read
    once the epoch ends (:func:`check_label_range`), and the labels are clamped into the
    model's range meanwhile, so that an out-of-range one cannot trip a device-side assert
    (which would leave a CUDA context unusable) before it is reported."""
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    label_range = model_label_range(model)
    for i, batch in enumerate(loader):
        raw_y = _raw_labels(batch)
        x, y = to_model_batch(batch, data_dim=model.data_dim, device=device, dtype=dtype,
                              what=f"epoch {epoch}, batch {i + 1}", label_range=label_range)
        # The extremes are finite exactly when every pixel is (a NaN propagates into both): one
        # pass, about ten times faster on the CPU than isfinite(x).all(), which allocates a mask.
        extremes.append(torch.aminmax(x))
        if i == 0:
            if model.needs_labels and y is None:
                raise ValueError(f"model {type(model).__name__} needs labels but the loader's batches "
                                 f"hold no y; yield (x, y)")
            model.validate_data(x, y, name=f"epoch {epoch}, batch 1 of the training data")
        if label_range is not None and y is not None and y.numel() and _labels_on_device(raw_y):
            label_extremes.append((i + 1, torch.aminmax(y)))
            y = y.clamp(*label_range)
        yield x, y


def check_finite_batches(extremes: list, epoch: int) -> None:
    """``ValueError`` naming the first streamed batch of the epoch that held NaN or Inf pixels
    (``extremes``: :func:`loader_batches`'s ``(low, high)`` per batch)."""
    if not extremes:
        return
    finite = torch.isfinite(_stacked(extremes)).all(dim=1)  # (batches,)
    if not bool(finite.all()):
        raise _non_finite(epoch, int((~finite).nonzero()[0, 0]) + 1)


def _stacked(extremes: list) -> torch.Tensor:
    """``(batches, 2)``: the per-batch ``(low, high)`` pairs as one tensor."""
    return torch.stack([value for pair in extremes for value in pair]).reshape(-1, 2)


def _non_finite(epoch: int, batch: int) -> ValueError:
    return ValueError(f"epoch {epoch}, batch {batch} of the training data contains NaN or Inf values; the "
                      f"loader must yield finite pixels")


def check_label_range(label_extremes: list, label_range: tuple[int, int] | None, epoch: int) -> None:
    """``ValueError`` naming the first batch of the epoch whose device-resident labels fell
    outside ``label_range`` (``label_extremes``: :func:`loader_batches`'s), one host sync."""
    if not label_extremes or label_range is None:
        return
    ranges = torch.stack([v for _, pair in label_extremes for v in pair]).reshape(-1, 2).cpu()  # (batches, 2)
    outside = (ranges[:, 0] < label_range[0]) | (ranges[:, 1] > label_range[1])
    if bool(outside.any()):
        first = int(outside.nonzero()[0, 0])
        low, high = (int(v) for v in ranges[first])
        raise ValueError(f"epoch {epoch}, batch {label_extremes[first][0]}: labels must lie in [{label_range[0]}, "
                         f"{label_range[1]}], got values in [{low}, {high}]")


def model_label_range(model) -> tuple[int, int] | None:
    """The labels ``model`` accepts, ``(low, high)``: ``[0, C - 1]`` (M2: from -1, unlabelled);
    None when it reads no labels."""
    classes = getattr(model, "num_classes", None)
    partial = bool(getattr(model, "partial_labels", False))  # M2: -1 marks an unlabelled row
    return (-1 if partial else 0, classes - 1) if classes and (model.needs_labels or partial) else None


def check_batch_range(extremes: list, likelihood, epoch: int) -> None:
    """``ValueError`` naming the first streamed batch of the epoch with NaN or Inf pixels or
    pixels outside ``likelihood.value_range`` (``(low, high)``, or None: any real value), one
    host sync.

    Only the epoch's first batch is checked in full (:meth:`Likelihood.validate`); the others'
    extremes come free with the finite check. A later batch's grey levels inside ``[0, 1]``
    under the Bernoulli likelihood are not detected this way.
    """
    bounds = getattr(likelihood, "value_range", None)
    if bounds is None or not extremes:
        return
    ranges = _stacked(extremes).cpu()  # (batches, 2): the one host sync
    finite = torch.isfinite(ranges).all(dim=1)
    outside = (ranges[:, 0] < bounds[0]) | (ranges[:, 1] > bounds[1])  # NaN compares False
    bad = ~finite | outside
    if not bool(bad.any()):
        return
    first = int(bad.nonzero()[0, 0])
    if not bool(finite[first]):
        raise _non_finite(epoch, first + 1)
    low, high = (float(v) for v in ranges[first])
    raise ValueError(f"epoch {epoch}, batch {first + 1} of the training data has values in [{low:.10g}, "
                     f"{high:.10g}]; the {likelihood.name} likelihood needs them in [{bounds[0]:g}, "
                     f"{bounds[1]:g}] (the first batch was; the loader must scale every batch alike)")
