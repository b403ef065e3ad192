"""Streamed data under torchrun: each process reads only its own shard of every epoch.

:func:`pyro_vae.inference.fit` passes a torch Dataset or DataLoader through
:func:`streamed_loader`. In one process nothing changes. With several (see
:mod:`pyro_vae.inference.distributed`):

- a map-style Dataset is cut by :class:`ShardSampler` into the shards a
  :class:`~pyro_vae.data.DataSplits` gets: the same permutation, seeded by ``(seed, epoch)``,
  on every rank, every process taking ``ceil(n / world)`` items, hence as many steps;
- a DataLoader must bring its own ``DistributedSampler`` (``fit`` calls its ``set_epoch``
  every epoch): a plain one would let every process read everything, and processes with
  different numbers of batches deadlock DDP;
- an IterableDataset is refused for that reason.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.utils.data import BatchSampler, DataLoader, IterableDataset, Sampler
from torch.utils.data.distributed import DistributedSampler

from . import distributed


class ShardSampler(Sampler):
    """The indices of this process's shard of each epoch over a map-style dataset of ``n`` items.

    The same shards as a :class:`~pyro_vae.data.DataSplits` gets
    (:func:`~pyro_vae.inference.distributed.shard_batches`): the permutation seeded by
    ``(seed, epoch)`` on every rank, cut by :func:`~pyro_vae.inference.distributed.shard_indices`,
    so every process takes ``ceil(n / world)`` items, hence as many steps (which DDP needs).
    Call :meth:`set_epoch` before each epoch (:func:`pyro_vae.inference.fit` does).

    Example
    -------
    >>> shards = [ShardSampler(5, seed=0, world=2, rank=r) for r in range(2)]
    >>> for sampler in shards:
    ...     sampler.set_epoch(1)
    >>> sorted(set(list(shards[0]) + list(shards[1]))), len(shards[0])
    ([0, 1, 2, 3, 4], 3)
    """

    def __init__(self, n: int, seed: int, world: int | None = None, rank: int | None = None):
        self.n, self.seed, self.epoch = n, seed, 1
        self.world = distributed.world_size() if world is None else world
        self.rank = distributed.rank() if rank is None else rank

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(distributed.epoch_order_seed(self.seed, self.epoch))
        return iter(distributed.shard_indices(self.n, self.world, self.rank, generator).tolist())

    def __len__(self) -> int:
        return -(-self.n // self.world)


def streamed_loader(data, loader: DataLoader, batch_size: int, seed: int) -> DataLoader:
    """The loader this process streams from: ``loader`` in one process; under torchrun a shard.

    ``data`` is what :func:`~pyro_vae.inference.fit` was given and ``loader`` the DataLoader
    made of it (:func:`pyro_vae.data.streaming.training_data`). With several processes:

    - a map-style torch Dataset is read through a new DataLoader with a :class:`ShardSampler`
      (``batch_size`` per process, ``loader``'s pinning);
    - a DataLoader is used as it is if its sampler is a
      :class:`~torch.utils.data.distributed.DistributedSampler` of this world size and rank
      (``fit`` calls its ``set_epoch`` every epoch), and refused otherwise: every process
      would read the whole data set, and processes with different numbers of batches
      deadlock DDP;
    - an IterableDataset is refused for the same reason.

    The loaders' numbers of batches are then compared across the processes (one all-reduce):
    a difference is refused on every process.
    """
    world, rank = distributed.world_size(), distributed.rank()
    if world == 1:
        return loader
    if isinstance(data, DataLoader):
        sampler = data.sampler
        # batch_sampler is None without automatic batching (batch_size=None): each item a batch.
        custom_batches = data.batch_sampler is not None and not isinstance(data.batch_sampler, BatchSampler)
        if not isinstance(sampler, DistributedSampler) or custom_batches:
            raise ValueError(
                f"under torchrun a DataLoader must shard its data per process: build it with "
                f"sampler=DistributedSampler(dataset) (got sampler {type(sampler).__name__}"
                f"{' and a custom batch_sampler' if custom_batches else ''}), "
                f"or pass the Dataset itself and pyro-vae shards it")
        if (sampler.num_replicas, sampler.rank) != (world, rank):
            raise ValueError(
                f"the DataLoader's DistributedSampler has num_replicas={sampler.num_replicas}, "
                f"rank={sampler.rank}, but this process is rank {rank} of {world}; build it "
                f"inside the torchrun processes with the defaults (DistributedSampler(dataset))")
        sharded = data
    elif isinstance(data, IterableDataset) or not hasattr(data, "__len__"):
        raise ValueError(
            f"under torchrun an iterable-style dataset ({type(data).__name__}) cannot be sharded "
            f"so that every process takes as many steps; give a map-style Dataset (with __len__ "
            f"and __getitem__), or a DataLoader with a DistributedSampler")
    else:
        sharded = DataLoader(data, batch_size=batch_size, sampler=ShardSampler(len(data), seed),
                             pin_memory=loader.pin_memory)
    _check_same_length(sharded)
    return sharded


def _check_same_length(loader: DataLoader) -> None:
    """Refuse, on every process, loaders whose numbers of batches per epoch differ across the
    processes (e.g. a different data set on each): DDP would wait forever at the first extra step."""
    if not distributed.is_active():
        return
    batches = torch.tensor([len(loader)] * 2, dtype=torch.int64, device=distributed.collective_device())
    batches[1] = -batches[1]  # one all-reduce of (max, -min)
    dist.all_reduce(batches, op=dist.ReduceOp.MAX)
    most, fewest = int(batches[0]), -int(batches[1])
    if most != fewest:
        raise ValueError(
            f"under torchrun every process must take as many steps per epoch, but the processes' "
            f"loaders hold from {fewest} to {most} batches (this one {len(loader)}); give every "
            f"process the same data set")
