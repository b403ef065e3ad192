"""Where :func:`~pyro_vae.inference.train.fit`'s batches come from: one interface, three sources.

A batch source answers, once per epoch, "which batches, how many, and is anything wrong with
them": :meth:`BatchSource.epoch` returns the epoch's batches (an iterator of on-device
``(x, y)``) and their count (None where unknown); :meth:`BatchSource.check_epoch` runs the
checks that wait for the epoch's end (one host read), and :meth:`BatchSource.check_non_finite`
names a batch of bad data when the epoch's loss is not finite, before that is called divergence.

- :class:`InMemoryBatches`: a :class:`~pyro_vae.data.DataSplits` in one process, shuffled slices
  of its on-device training tensors (the fast path; data checked once, before training);
- :class:`ShardedBatches`: the same under torchrun, this process's shard of the epoch;
- :class:`LoaderBatches`: a DataLoader (streamed data), each batch checked and moved as it comes.

Every source reseeds this process's random stream from ``(seed, epoch, rank)`` at the start of
an epoch where several processes train (:func:`~pyro_vae.inference.distributed.seed_epoch`), so
a resumed run draws what an uninterrupted one draws.

Example
-------
>>> from pyro_vae.data import DataConfig, load_dataset
>>> source = InMemoryBatches(load_dataset(DataConfig("digits")), batch_size=500)
>>> batches, count = source.epoch(1)
>>> count, next(batches)[0].shape
(3, torch.Size([500, 64]))
"""

from __future__ import annotations

from ..data import DataSplits
from ..data.streaming import (
    check_batch_range,
    check_finite_batches,
    check_label_range,
    loader_batches,
    loader_length,
    model_label_range,
)
from . import distributed


class BatchSource:
    """One epoch's training batches at a time (see the module docstring)."""

    def epoch(self, epoch: int):
        """``(iterator of on-device (x, y) batches, number of batches or None)`` of epoch ``epoch``."""
        raise NotImplementedError

    def check_epoch(self, epoch: int) -> None:
        """Checks that wait for the epoch's end (``ValueError`` naming the batch); none here."""

    def check_non_finite(self, epoch: int) -> None:
        """Called when the epoch's loss or parameters are not finite: ``ValueError`` naming a
        batch of NaN/Inf pixels if there was one (bad data, not divergence); none here."""


class InMemoryBatches(BatchSource):
    """Shuffled slices of a :class:`~pyro_vae.data.DataSplits`' training tensors (one process)."""

    def __init__(self, data: DataSplits, batch_size: int):
        self.data, self.batch_size = data, batch_size

    def epoch(self, epoch: int):
        return self.data.train_batches(self.batch_size), -(-self.data.x_train.shape[0] // self.batch_size)


class ShardedBatches(InMemoryBatches):
    """This process's shard of each epoch of a :class:`~pyro_vae.data.DataSplits` under torchrun."""

    def __init__(self, data: DataSplits, batch_size: int, seed: int):
        super().__init__(data, batch_size)
        self.seed = seed

    def epoch(self, epoch: int):
        distributed.seed_epoch(self.seed, epoch)
        return distributed.shard_batches(self.data, self.batch_size, self.seed, epoch)


class LoaderBatches(BatchSource):
    """A DataLoader's batches, checked and moved to ``device`` one by one
    (:func:`~pyro_vae.data.streaming.loader_batches`); their pixel and label extremes are read
    once the epoch ends."""

    def __init__(self, loader, model, device, seed: int):
        self.loader, self.model, self.device, self.seed = loader, model, device, seed
        self.pixel_extremes: list = []  # per batch (low, high) pixels, device tensors
        self.label_extremes: list = []  # (batch number, (low, high)) of labels yielded on a device

    def epoch(self, epoch: int):
        if distributed.world_size() > 1:  # this process's stream reseeded, as for a shard
            distributed.seed_epoch(self.seed, epoch)
        if callable(getattr(self.loader.sampler, "set_epoch", None)):  # ShardSampler, DistributedSampler
            self.loader.sampler.set_epoch(epoch)
        self.pixel_extremes, self.label_extremes = [], []
        batches = loader_batches(self.model, self.loader, self.device, epoch, self.pixel_extremes,
                                 self.label_extremes)
        return batches, loader_length(self.loader)

    def check_epoch(self, epoch: int) -> None:
        check_label_range(self.label_extremes, model_label_range(self.model), epoch)
        check_batch_range(self.pixel_extremes, getattr(self.model, "likelihood", None), epoch)

    def check_non_finite(self, epoch: int) -> None:
        check_finite_batches(self.pixel_extremes, epoch)


def batch_source(data, loader, *, model, batch_size: int, seed: int, device) -> BatchSource:
    """The source of ``fit``'s batches: ``loader`` where given, else ``data`` in memory
    (sharded when several processes train)."""
    if loader is not None:
        return LoaderBatches(loader, model, device, seed)
    if distributed.world_size() > 1:
        return ShardedBatches(data, batch_size, seed)
    return InMemoryBatches(data, batch_size)


__all__ = ["BatchSource", "InMemoryBatches", "LoaderBatches", "ShardedBatches", "batch_source"]
