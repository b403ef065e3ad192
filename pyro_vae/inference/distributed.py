"""Data-parallel training with ``torch.distributed``: one process per device, gradients averaged.

Launch any ``train`` command under ``torchrun``; nothing else changes::

    torchrun --nproc-per-node 4 -m pyro_vae train --dataset mnist --out runs/vae
    torchrun --nproc-per-node 4 --no-python pyro-vae train --resume runs/vae --epochs 40

How it works (see :func:`pyro_vae.inference.fit` and :mod:`pyro_vae.runs`):

- **Process group.** When the torchrun variables ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``
  are set and ``WORLD_SIZE > 1``, :func:`setup` joins the group: backend ``gloo`` on the CPU,
  ``nccl`` on CUDA, where process ``LOCAL_RANK`` trains on ``cuda:LOCAL_RANK``. The CLI
  leaves the group (:func:`shutdown`) when the command ends. Under ``WORLD_SIZE = 1``, or
  without torchrun, every function here is a no-op and training is exactly the
  single-process loop.
- **Sharding.** Every epoch all processes draw the same permutation of the training set
  (seeded by ``(seed, epoch)``), wrap it around to a multiple of the world size W, and
  process ``r`` takes every W-th index starting at ``r`` (:func:`shard_indices`): the shards
  are disjoint and together are one epoch (when W does not divide n, up to W - 1 examples
  are seen twice so that every process takes the same number of steps, which DDP needs).
  ``batch_size`` is *per process*: one optimizer step sees ``W * batch_size`` examples.
  Each process binarizes its own batches (dynamic binarization) as usual.
- **Gradients** are averaged by :class:`~torch.nn.parallel.DistributedDataParallel` wrapped
  around a :class:`LossModule` (the objective as a module whose ``forward(x, y)`` returns the
  loss computed through the model), so DDP's hooks see every parameter of the model. The
  same seed on every rank makes the initial parameters agree; DDP also broadcasts them (and
  the buffers) from rank 0. Every parameter must receive a gradient at every step (the
  built-in models and priors all do).
- **Random numbers.** At the start of each epoch process ``r`` reseeds its own stream (z
  draws, binarization) from ``(seed, epoch, r)`` (:func:`seed_epoch`). No per-rank RNG state
  is checkpointed: a resumed run with the same number of processes continues exactly as an
  uninterrupted one (a different number of processes shards differently).
- **Results.** The per-epoch training curve (``train_elbo`` or ``train_objective``) is the
  average over the whole epoch's data of all processes (per-step losses summed with
  ``all_reduce``), and the per-epoch
  ``test_elbo`` is computed on shards of the test set and summed the same way
  (:func:`sharded_mean`): the history is identical on every rank. The final evaluation
  (importance-sampled log-likelihood, figures) runs on rank 0 alone.
- **Files.** Rank 0 alone prepares and writes the run directory (config, checkpoints,
  metrics, figures); :func:`on_main` runs such a step on rank 0, waits for it, and raises its
  error, if any, on every rank. :func:`pyro_vae.inference.fit` calls callbacks on rank 0 only.

Each process holds the whole data set on its device: what is divided is the computation.
Streamed data (a torch Dataset or DataLoader, :mod:`pyro_vae.data.streaming`) is divided too:
each process reads only its shard (:mod:`pyro_vae.inference.streamed_shards`).

Test hook: when the environment variable ``PYRO_VAE_TEST_DUMP_RANK_STATE`` names a directory,
every process of a distributed run saves its final ``model.state_dict()`` there as
``rank<r>.pt`` (:func:`dump_rank_state`), so tests can check that all ranks agree.

Example
-------
>>> import torch
>>> from pyro_vae.inference.distributed import shard_indices
>>> [shard_indices(5, 2, r, torch.Generator().manual_seed(0)).numel() for r in range(2)]
[3, 3]
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyro
import torch
import torch.distributed as dist
from torch import nn

from ..data import iterate_batches
from .objectives import objective_loss_and_parts

#: The variables torchrun sets for every process it starts.
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
#: Environment variable of the test hook (a directory for each rank's final state dict).
DUMP_STATE_ENV = "PYRO_VAE_TEST_DUMP_RANK_STATE"


def is_active() -> bool:
    """Whether a process group of more than one process is initialized."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of processes training together (1 without a process group)."""
    return dist.get_world_size() if is_active() else 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_active() else 0


def is_main_process() -> bool:
    """Whether this process is rank 0, the one that writes files and prints results."""
    return rank() == 0


def _torchrun_world_size() -> int:
    """``WORLD_SIZE`` when every torchrun variable is set, else 1."""
    if not all(name in os.environ for name in TORCHRUN_ENV):
        return 1
    try:
        return int(os.environ["WORLD_SIZE"])
    except ValueError:
        raise ValueError(f"WORLD_SIZE must be an integer, got {os.environ['WORLD_SIZE']!r}") from None


def launched_by_torchrun() -> bool:
    """Whether this process is one of several started by ``torchrun``."""
    return _torchrun_world_size() > 1


def setup(device: torch.device) -> torch.device:
    """Join the torchrun process group (once) and return the device this process trains on.

    Outside torchrun (or with one process) nothing happens and ``device`` is returned. Under
    torchrun the backend follows ``device``: ``gloo`` on the CPU; ``nccl`` on CUDA, where the
    process uses ``cuda:LOCAL_RANK`` (``device`` must then be ``cuda`` or that very device).
    A process group the caller initialized already is used as it is. :func:`fit` and the run
    functions call it; a script that calls them under torchrun calls :func:`shutdown` at the end.

    Example
    -------
    >>> setup(torch.device("cpu"))  # not under torchrun: nothing to join
    device(type='cpu')
    """
    device = torch.device(device)
    if dist.is_available() and dist.is_initialized():
        if device.type == "cuda" and device.index is None:
            return torch.device("cuda", torch.cuda.current_device())
        return device
    if not launched_by_torchrun():
        return device
    if not dist.is_available():
        raise ValueError("this PyTorch build has no torch.distributed; run without torchrun")
    if device.type == "cuda":
        local_rank = int(os.environ["LOCAL_RANK"])
        count = torch.cuda.device_count()
        if device.index is not None and device.index != local_rank:
            raise ValueError(
                f"under torchrun process LOCAL_RANK={local_rank} trains on cuda:{local_rank}, "
                f"got device {str(device)!r}; pass --device cuda"
            )
        if local_rank >= count:
            raise ValueError(
                f"LOCAL_RANK={local_rank} but only {count} CUDA device(s) are visible; launch at "
                f"most {count} processes per node (--nproc-per-node)"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)  # nccl and the object collectives use the current device
        dist.init_process_group(backend="nccl")
    else:
        dist.init_process_group(backend="gloo")
    return device


def shutdown() -> None:
    """Leave the process group, if one is initialized (the CLI calls it when a command ends)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every process gets here (no-op with one process)."""
    if is_active():
        # nccl would otherwise guess the device from the rank (and warn about it).
        on_gpu = dist.get_backend() == "nccl"
        dist.barrier(device_ids=[torch.cuda.current_device()] if on_gpu else None)


def collective_device() -> torch.device:
    """Where tensors of collectives live: the current CUDA device for nccl, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _run(fn: Callable, main_only: bool):
    if not is_active():
        return fn()
    barrier()  # nobody is still reading what rank 0 is about to write
    result, error = None, None
    if is_main_process():
        try:
            result = fn()
        except (ValueError, TypeError, OSError) as err:  # what the CLI reports as a usage error
            error = err
    message = [None if error is None else f"{error}"]
    dist.broadcast_object_list(message, src=0, device=collective_device())
    if error is not None:
        raise error
    if message[0] is not None:
        raise ValueError(message[0])  # rank 0's error, raised with the same text everywhere
    return result if main_only or is_main_process() else fn()


def on_main(fn: Callable):
    """Call ``fn()`` on rank 0 only, after every rank got here; every rank waits for it.

    Returns ``fn()``'s result on rank 0 and None elsewhere. A ``ValueError``, ``TypeError`` or
    ``OSError`` it raises on rank 0 is raised on every rank (as ``ValueError`` with the same
    message on the others), so that no process waits forever for a failed one. With one
    process it is just ``fn()``.

    Example
    -------
    >>> on_main(lambda: 3)
    3
    """
    return _run(fn, main_only=True)


def main_first(fn: Callable):
    """Call ``fn()`` on rank 0 first, then, if it succeeded, on the other ranks (e.g. a download)."""
    return _run(fn, main_only=False)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of ``tensor`` over all processes (a new tensor; itself with one process)."""
    if not is_active():
        return tensor
    total = tensor.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def _seed(*words: int) -> int:
    """A 32-bit seed mixed from the integers ``words`` (numpy's SeedSequence)."""
    return int(np.random.SeedSequence([int(w) for w in words]).generate_state(1, dtype=np.uint32)[0])


def seed_epoch(seed: int, epoch: int) -> None:
    """Seed this process's global streams (torch, numpy, random) from ``(seed, epoch, rank)``.

    Called at the start of every epoch of a distributed run, so resuming needs no per-rank
    RNG state and every rank draws different codes and binarizations.
    """
    pyro.set_rng_seed(_seed(seed, epoch, 1, rank()))


def shard_indices(n: int, world: int, rank: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of process ``rank``'s shard of one epoch over ``n`` examples, ``(ceil(n / world),)``.

    A permutation drawn from ``generator`` (the same on every rank) is wrapped around to
    ``world * ceil(n / world)`` entries and rank ``r`` takes entries ``r, r + world, ...``:
    the shards are disjoint when ``world`` divides ``n``, together they hold every example,
    and all have the same length.

    Example
    -------
    >>> shards = [shard_indices(6, 3, r, torch.Generator().manual_seed(1)) for r in range(3)]
    >>> sorted(torch.cat(shards).tolist())
    [0, 1, 2, 3, 4, 5]
    """
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank must lie in [0, {world - 1}] for world size {world}, got {rank}")
    order = torch.randperm(n, generator=generator)  # (n,)
    total = -(-n // world) * world
    order = order.repeat(-(-total // n))[:total]  # (total,), the first examples again at the end
    return order[rank::world]


def epoch_order_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s permutation of the training set, the same on every rank."""
    return _seed(seed, epoch, 0)


def shard_batches(data, batch_size: int, seed: int, epoch: int):
    """This process's batches of epoch ``epoch``: ``(iterator of (x, y), number of batches)``.

    The permutation is seeded by ``(seed, epoch)`` on every rank; batches are freshly
    binarized (from this process's stream) when the data set binarizes dynamically.
    """
    generator = torch.Generator().manual_seed(epoch_order_seed(seed, epoch))
    idx = shard_indices(data.x_train.shape[0], world_size(), rank(), generator)
    idx = idx.to(data.x_train.device)
    x = data.x_train[idx]  # (shard, D)
    y = None if data.y_train is None else data.y_train[idx]
    batches = iterate_batches(x, y, batch_size, shuffle=False, binarize=data.binarize == "dynamic")
    return batches, -(-x.shape[0] // batch_size)


def sharded_mean(fn: Callable, x: torch.Tensor, y: torch.Tensor | None = None) -> float:
    """Mean over all of ``x`` of ``fn(x_shard, y_shard)`` (per-example values, ``(n_shard,)``).

    Process ``r`` scores examples ``r, r + W, ...``; sums and counts are added over processes,
    so every rank returns the same number. With one process it is ``fn(x, y).mean()``.
    """
    return sharded_means(lambda xs, ys: fn(xs, ys)[:, None], x, y, width=1)[0].item()


def sharded_means(fn: Callable, x: torch.Tensor, y: torch.Tensor | None = None, *, width: int) -> torch.Tensor:
    """:func:`sharded_mean` of ``width`` values per example: ``fn`` returns ``(n_shard, width)``,
    the result is their means ``(width,)`` (float64), the same on every rank."""
    r, w = rank(), world_size()
    xs, ys = x[r::w], None if y is None else y[r::w]
    total = torch.zeros(width + 1, dtype=torch.float64, device=x.device)  # (sums..., count)
    if xs.shape[0]:
        total[:width] = fn(xs, ys).double().sum(0)
        total[width] = xs.shape[0]
    total = all_reduce_sum(total)
    return total[:width] / total[width]


class LossModule(nn.Module):
    """An objective as a module: ``forward(x, y)`` is ``objective.loss_and_parts(model, x, y)``,
    the loss and its parts (a dict of detached tensors; see
    :mod:`pyro_vae.inference.objectives`).

    The model is a submodule, so :class:`~torch.nn.parallel.DistributedDataParallel` wrapped
    around this module sees (and averages the gradients of) all of its parameters.

    Example
    -------
    >>> from pyro_vae.models import VAE, VAEConfig
    >>> from pyro_vae.inference.objectives import build_objective
    >>> loss_fn = LossModule(VAE(64, VAEConfig(latent_dim=2, hidden_dims=(8,))), build_objective("elbo"))
    >>> loss, parts = loss_fn(torch.bernoulli(torch.full((4, 64), 0.5)))
    >>> loss.shape, sorted(parts)
    (torch.Size([]), ['kl', 'reconstruction'])
    """

    def __init__(self, model: nn.Module, objective):
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        return objective_loss_and_parts(self.objective, self.model, x, y)


def wrap(loss_module: LossModule, device: torch.device) -> nn.Module:
    """``loss_module`` in DistributedDataParallel when several processes train, else itself."""
    if not is_active():
        return loss_module
    from torch.nn.parallel import DistributedDataParallel  # noqa: PLC0415

    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(loss_module, device_ids=device_ids)


def dump_rank_state(model: nn.Module) -> None:
    """Test hook: save ``model.state_dict()`` to ``$PYRO_VAE_TEST_DUMP_RANK_STATE/rank<r>.pt``."""
    target = os.environ.get(DUMP_STATE_ENV)
    if not target or not is_active():
        return
    Path(target).mkdir(parents=True, exist_ok=True)
    state = {name: t.detach().cpu() for name, t in model.state_dict().items()}
    torch.save(state, Path(target) / f"rank{rank()}.pt")
