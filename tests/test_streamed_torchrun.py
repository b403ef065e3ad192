"""Red-team of streamed data under torchrun (pyro_vae.inference.streamed_shards and its use in fit).

The refusals and the one-process behaviour are checked in this process, with
``distributed.world_size``/``rank`` monkeypatched where several processes are pretended (no
process group: DDP is not involved, the checks run before any collective). The multi-process
promises launch ``python -m torch.distributed.run --nproc-per-node 2`` (gloo on the CPU):
one quick launch in the default tier (resume exactness of every streamed kind of data), the
launches whose job must fail in ``-m slow``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch.utils.data import BatchSampler, DataLoader, Dataset, IterableDataset
from torch.utils.data.distributed import DistributedSampler

from pyro_vae.data.streaming import in_memory
from pyro_vae.inference import TrainConfig, distributed, fit
from pyro_vae.inference.streamed_shards import ShardSampler
from pyro_vae.models import VAE, VAEConfig

needs_gloo = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with gloo is not available")

D = 16


def _x(n: int, seed: int = 0) -> torch.Tensor:
    return torch.bernoulli(torch.full((n, D), 0.3), generator=torch.Generator().manual_seed(seed))


class Items(Dataset):
    """A map-style Dataset of ``x`` (or ``(x, y)``) items that records the indices it reads."""

    def __init__(self, x, y=None):
        self.x, self.y, self.seen = x, y, []

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        self.seen.append(int(i))
        return self.x[i] if self.y is None else (self.x[i], self.y[i])


class Stream(IterableDataset):
    def __iter__(self):
        return iter(_x(6))


class Unsized(Dataset):
    """Map-style (``__getitem__``) but without ``__len__``: its length is unknown."""

    def __getitem__(self, i):
        return _x(6)[i]


class RecordingSampler(DistributedSampler):
    """A DistributedSampler that records the epochs it is set to and the orders it yields."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.epochs, self.orders = [], []

    def set_epoch(self, epoch):
        self.epochs.append(epoch)
        super().set_epoch(epoch)

    def __iter__(self):
        order = list(super().__iter__())
        self.orders.append(order)
        return iter(order)


def _vae():
    torch.manual_seed(1)  # the same initial parameters every time
    return VAE(D, VAEConfig(latent_dim=2, hidden_dims=(8,)))


def _config(epochs: int = 1, **kwargs) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=4, device="cpu", progress=False, **kwargs)


@pytest.fixture
def two_processes(monkeypatch):
    """Pretend to be one of two processes; returns a function that sets this process's rank."""
    current = {"rank": 1}
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed, "rank", lambda: current["rank"])

    def set_rank(r: int) -> None:
        current["rank"] = r

    return set_rank


def _one_line_value_error(model, data, match: str, config: TrainConfig | None = None) -> str:
    with pytest.raises(ValueError, match=match) as info:
        fit(model, data, config or _config())
    assert "\n" not in str(info.value)
    return str(info.value)


# --------------------------------------------------------------------------- refusals (in process)


@pytest.mark.parametrize("num_replicas, sampler_rank", [(2, 0), (3, 1), (1, 0)])
def test_a_distributed_sampler_of_another_world_or_rank_is_refused(two_processes, num_replicas, sampler_rank):
    data = Items(_x(8))
    loader = DataLoader(data, batch_size=4,
                        sampler=DistributedSampler(data, num_replicas=num_replicas, rank=sampler_rank))
    model = _vae()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    message = _one_line_value_error(model, loader, "the DataLoader's DistributedSampler has")
    assert f"num_replicas={num_replicas}, rank={sampler_rank}, but this process is rank 1 of 2" in message
    assert data.seen == []  # refused before a single item is read
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_the_matching_distributed_sampler_is_accepted_and_set_every_epoch(two_processes):
    data = Items(_x(10))
    sampler = RecordingSampler(data, num_replicas=2, rank=1, seed=4)
    result = fit(_vae(), DataLoader(data, batch_size=4, sampler=sampler), _config(epochs=3))
    assert sampler.epochs == [1, 2, 3]
    assert result.steps == 3 * 2  # 5 items of 10 per process, batches of 4
    assert sorted(data.seen) == sorted(i for order in sampler.orders for i in order)
    assert len(data.seen) == 15


def test_a_custom_batch_sampler_is_refused_even_around_a_distributed_sampler(two_processes):
    data = Items(_x(8))
    sharded = BatchSampler(DistributedSampler(data, num_replicas=2, rank=1), batch_size=2, drop_last=False)
    _one_line_value_error(_vae(), DataLoader(data, batch_sampler=sharded),
                          r"must shard its data per process: .*\(got sampler SequentialSampler\)")
    plain = [[0, 1], [2, 3, 4], [5]]  # not a BatchSampler at all
    _one_line_value_error(_vae(), DataLoader(data, batch_sampler=plain),
                          r"\(got sampler SequentialSampler and a custom batch_sampler\)")
    assert data.seen == []


def test_a_loader_over_an_iterable_dataset_is_refused(two_processes):
    _one_line_value_error(_vae(), DataLoader(Stream(), batch_size=2),
                          r"must shard its data per process: .*\(got sampler _InfiniteConstantSampler\)")


@pytest.mark.parametrize("data", [Stream(), Unsized()], ids=["IterableDataset", "no __len__"])
def test_an_iterable_style_dataset_is_refused_in_pyro_vaes_words(two_processes, data):
    _one_line_value_error(_vae(), data, r"^under torchrun an iterable-style dataset \(Stream\) cannot be sharded"
                          if isinstance(data, Stream) else
                          r"^data: a map-style torch Dataset \(Unsized\) needs __len__ to be shuffled")


def test_one_process_trains_on_an_iterable_dataset_in_its_own_order():
    result = fit(_vae(), Stream(), _config(epochs=2))
    assert result.steps == 2 * 2  # 6 items in batches of 4, twice
    with pytest.raises(ValueError, match=r"^data: a map-style torch Dataset \(Unsized\) needs __len__"):
        fit(_vae(), Unsized(), _config(epochs=1))


def test_a_matching_distributed_sampler_without_automatic_batching_is_accepted(two_processes):
    # Each item is a ready-made batch of 3: the DistributedSampler shards the batches.
    batches = Items(_x(12).reshape(4, 3, D))
    loader = DataLoader(batches, batch_size=None, sampler=DistributedSampler(batches, num_replicas=2, rank=1))
    result = fit(_vae(), loader, _config(epochs=2))
    assert result.steps == 2 * 2
    assert len(batches.seen) == 4


def test_an_empty_dataset_is_refused_with_one_line(two_processes):
    _one_line_value_error(_vae(), Items(_x(0)), r"(?i)empty|no (item|example|batch)|num_samples=0")


# --------------------------------------------------------------------------- ShardSampler (in process)


@pytest.mark.parametrize("n, world", [(1, 2), (5, 2), (21, 2), (4, 3), (2, 5)])
def test_shard_sampler_yields_the_in_memory_paths_shards(monkeypatch, n, world):
    """ShardSampler's indices are exactly the rows distributed.shard_batches gives the same rank."""
    data = in_memory(torch.arange(n, dtype=torch.float32).unsqueeze(1))
    monkeypatch.setattr(distributed, "world_size", lambda: world)
    for r in range(world):
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        for epoch in (1, 2, 3):
            sampler = ShardSampler(n, seed=11, world=world, rank=r)
            sampler.set_epoch(epoch)
            batches, _ = distributed.shard_batches(data, batch_size=n, seed=11, epoch=epoch)
            rows = torch.cat([xb[:, 0] for xb, _ in batches]).long().tolist()
            assert list(sampler) == rows, (r, epoch)
            assert len(sampler) == len(rows) == -(-n // world)
    defaulted = ShardSampler(n, seed=11)  # world and rank come from the (patched) process group
    assert (defaulted.world, defaulted.rank) == (world, world - 1)


def test_a_dataset_smaller_than_the_world_trains_on_every_rank(two_processes):
    """One item, two processes: each process reads it once per epoch, one step per epoch."""
    for r in (0, 1):
        two_processes(r)
        data = Items(_x(1))
        result = fit(_vae(), data, _config(epochs=3))
        assert result.steps == 3, r
        assert data.seen == [0, 0, 0], r
        assert all(torch.isfinite(torch.tensor(h["train_elbo"])) for h in result.history)


def test_the_dataset_path_gives_two_ranks_disjoint_shards_with_a_new_order_each_epoch(two_processes):
    seen = []
    for r in (0, 1):
        two_processes(r)
        data = Items(_x(8))
        fit(_vae(), data, _config(epochs=2))
        seen.append(data.seen)
    for epoch in (0, 1):
        shards = [s[epoch * 4:(epoch + 1) * 4] for s in seen]
        assert sorted(shards[0] + shards[1]) == list(range(8)), epoch
    assert seen[0][:4] != seen[0][4:]


# --------------------------------------------------------------------------- one process (in process)


def _fit_with_sampler(epochs: int, num_workers: int, seed: int = 3, resume=None):
    data = Items(_x(12))
    sampler = RecordingSampler(data, num_replicas=1, rank=0, seed=2)
    loader = DataLoader(data, batch_size=4, sampler=sampler, num_workers=num_workers)
    model = _vae()
    if resume is not None:
        model.load_state_dict(resume[0])
    result = fit(model, loader, _config(epochs=epochs, seed=seed),
                 resume_state=None if resume is None else resume[1])
    return model, result, sampler


@pytest.mark.parametrize("num_workers", [0, 2])
def test_one_process_sets_the_samplers_epoch_shuffles_anew_and_is_reproducible(num_workers):
    model, result, sampler = _fit_with_sampler(3, num_workers)
    assert sampler.epochs == [1, 2, 3]
    assert all(sorted(order) == list(range(12)) for order in sampler.orders)
    assert len({tuple(order) for order in sampler.orders}) == 3  # a new order every epoch
    for epoch, order in zip((1, 2, 3), sampler.orders, strict=True):  # the order set_epoch(epoch) asks for
        fresh = DistributedSampler(Items(_x(12)), num_replicas=1, rank=0, seed=2)
        fresh.set_epoch(epoch)
        assert order == list(fresh), epoch
    again, result_again, sampler_again = _fit_with_sampler(3, num_workers)
    assert sampler_again.orders == sampler.orders
    assert result_again.history == result.history
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[name]), name
    other, _, _ = _fit_with_sampler(3, num_workers, seed=4)  # the seed matters (z draws)
    assert not all(torch.equal(t, other.state_dict()[k]) for k, t in model.state_dict().items())


@pytest.mark.parametrize("num_workers", [0, 2])
def test_one_process_resume_with_a_distributed_sampler_equals_an_uninterrupted_run(num_workers):
    full, full_result, _ = _fit_with_sampler(4, num_workers)
    part, part_result, _ = _fit_with_sampler(2, num_workers)
    saved = ({k: v.clone() for k, v in part.state_dict().items()}, part_result.state.state_dict())
    resumed, resumed_result, sampler = _fit_with_sampler(4, num_workers, resume=saved)
    assert sampler.epochs == [3, 4]
    assert resumed_result.history == full_result.history
    for name, tensor in full.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name


def test_one_process_loader_with_a_shard_sampler_and_workers_resumes_exactly():
    def run(epochs, resume=None):
        data = Items(_x(10))
        sampler = ShardSampler(len(data), seed=5)
        assert (sampler.world, sampler.rank) == (1, 0)
        model = _vae()
        if resume is not None:
            model.load_state_dict(resume[0])
        result = fit(model, DataLoader(data, batch_size=4, sampler=sampler, num_workers=2),
                     _config(epochs=epochs, seed=1), resume_state=None if resume is None else resume[1])
        assert sampler.epoch == epochs
        return model, result

    full, full_result = run(3)
    part, part_result = run(1)
    resumed, resumed_result = run(3, ({k: v.clone() for k, v in part.state_dict().items()},
                                      part_result.state.state_dict()))
    assert resumed_result.history == full_result.history
    for name, tensor in full.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name


# --------------------------------------------------------------------------- torchrun


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(tmp_path, script: str, *args: str, timeout: float = 240) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``script`` in 2 gloo processes (argv: tmp_path, *args); on timeout every process of the job is killed."""
    path = tmp_path / "script.py"
    path.write_text(script)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in distributed.TORCHRUN_ENV:
        env.pop(name, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), str(path), str(tmp_path), *args]
    started, timed_out = time.monotonic(), False
    # Files, not pipes: torchrun's workers live in sessions of their own and would hold a pipe open.
    with open(tmp_path / "stdout.txt", "w") as out, open(tmp_path / "stderr.txt", "w") as err:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=out, stderr=err, text=True)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            for pid in [*_descendants(proc.pid), proc.pid]:  # the workers first, then torchrun
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.wait()
    stdout, stderr = ((tmp_path / f"{name}.txt").read_text() for name in ("stdout", "stderr"))
    if timed_out:
        pytest.fail(f"the torchrun job did not end within {timeout} s (a process hangs)\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr), time.monotonic() - started


def _descendants(pid: int) -> list[int]:
    """The processes started by ``pid``, recursively (from /proc; none where it is absent)."""
    try:
        children = (Path("/proc") / str(pid) / "task" / str(pid) / "children").read_text().split()
    except OSError:
        return []
    return [d for c in children for d in (*_descendants(int(c)), int(c))]


def _check(proc):
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"


#: What every torchrun script starts with: imports and a map-style Dataset of x or (x, y) items
#: that records the indices this process reads.
SCRIPT_PREAMBLE = '''
import json, os, sys
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler
from pyro_vae.inference import TrainConfig, distributed, fit
from pyro_vae.models import CVAE, VAE, VAEConfig

class Items(Dataset):
    def __init__(self, x, y=None):
        self.x, self.y, self.seen = x, y, []
    def __len__(self):
        return len(self.x)
    def __getitem__(self, i):
        self.seen.append(int(i))
        return self.x[i] if self.y is None else (self.x[i], self.y[i])
'''

RESUME_SCRIPT = SCRIPT_PREAMBLE + '''

out, rank = sys.argv[1], int(os.environ["RANK"])
distributed.setup(torch.device("cpu"))  # a DistributedSampler needs the group
x = torch.bernoulli(torch.full((13, 16), 0.3), generator=torch.Generator().manual_seed(0))
y = torch.arange(13) % 3

def given(mode):
    if mode == "dataset":
        return Items(x)
    if mode == "labels":  # (x, y) items for a model that needs labels
        return Items(x, y)
    if mode == "one-item":  # fewer items than processes
        return Items(x[:1])
    data = Items(x)  # "sampler-workers"
    return DataLoader(data, batch_size=4, sampler=DistributedSampler(data, seed=5), num_workers=2)

def model(mode):
    torch.manual_seed(1)
    if mode == "labels":
        return CVAE(16, VAEConfig(latent_dim=2, hidden_dims=(8,)), num_classes=3)
    return VAE(16, VAEConfig(latent_dim=2, hidden_dims=(8,)))

def config(epochs):
    return TrainConfig(epochs=epochs, batch_size=4, device="cpu", progress=False, seed=7)

record = {}
for mode in ("dataset", "labels", "one-item", "sampler-workers"):
    full_model = model(mode)
    full = fit(full_model, given(mode), config(4))
    part_model = model(mode)
    part = fit(part_model, given(mode), config(2))
    # Every rank resumes from rank 0's model and TrainState, as a run directory does.
    saved = [{k: v.clone() for k, v in part_model.state_dict().items()}, part.state.state_dict()]
    dist.broadcast_object_list(saved, src=0)
    resumed_model = model(mode)
    resumed_model.load_state_dict(saved[0])
    resumed = fit(resumed_model, given(mode), config(4), resume_state=saved[1])
    for name, state in (("full", full_model), ("resumed", resumed_model)):
        torch.save(state.state_dict(), os.path.join(out, f"{mode}-{name}-rank{rank}.pt"))
    record[mode] = {"steps": [full.steps, part.steps, resumed.steps],
                    "full": full.history, "resumed": resumed.history}
with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
    json.dump(record, f)
distributed.shutdown()
'''


@needs_gloo
def test_resumed_streamed_runs_equal_uninterrupted_ones_under_torchrun(tmp_path):
    """2 epochs, then resumed from rank 0's TrainState to 4, equals 4 epochs in one go, for a
    Dataset, (x, y) items with a CVAE, a 1-item Dataset and a DistributedSampler loader with
    2 workers; both ranks end with the same parameters."""
    proc, _ = _torchrun(tmp_path, RESUME_SCRIPT)
    _check(proc)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    # 13 items: 7 per process, 2 batches of 4 per epoch; 1 item: 1 per process, 1 step.
    steps = {"dataset": [8, 4, 8], "labels": [8, 4, 8], "one-item": [4, 2, 4], "sampler-workers": [8, 4, 8]}
    for mode, expected in steps.items():
        for r in ranks:
            assert r[mode]["steps"] == expected, mode
            assert r[mode]["resumed"] == r[mode]["full"], mode  # the global curve, epoch by epoch
        assert ranks[0][mode]["full"] == ranks[1][mode]["full"], mode
        states = {(name, r): torch.load(tmp_path / f"{mode}-{name}-rank{r}.pt", weights_only=True)
                  for name in ("full", "resumed") for r in (0, 1)}
        reference = states["full", 0]
        for key, state in states.items():
            for name, tensor in reference.items():
                assert torch.equal(state[name], tensor), (mode, key, name)


FAILING_SCRIPT = SCRIPT_PREAMBLE + '''

mode, rank = sys.argv[2], int(os.environ["RANK"])
distributed.setup(torch.device("cpu"))
x = torch.bernoulli(torch.full((16, 16), 0.3), generator=torch.Generator().manual_seed(0))
y = torch.arange(16) % 3
vae = VAE(16, VAEConfig(latent_dim=2, hidden_dims=(8,)))
sampler = dict(shuffle=False)
if mode == "labels":  # rank 1 alone reads labels out of range, from its 3rd batch on
    if rank == 1:
        y = torch.where(torch.arange(16) >= 8, torch.tensor(5), y)
    vae = CVAE(16, VAEConfig(latent_dim=2, hidden_dims=(8,)), num_classes=3)
elif mode == "pixels":  # rank 1 alone reads pixels outside [0, 1], from its 3rd batch on
    if rank == 1:
        x = x.clone()
        x[8:] = 3.0
elif mode == "sampler":  # both ranks build the sampler of rank 0: rank 1 alone refuses it
    sampler = dict(num_replicas=2, rank=0)
elif mode == "lengths":  # rank 1 alone holds half the data set: fewer steps than rank 0
    if rank == 1:
        x, y = x[:8], y[:8]
data = Items(x, y)
given = data if mode == "lengths" else DataLoader(data, batch_size=2, sampler=DistributedSampler(data, **sampler))
fit(vae, given, TrainConfig(epochs=2, batch_size=2, device="cpu", progress=False))
print(f"rank {rank} finished", flush=True)
distributed.shutdown()
'''


@needs_gloo
@pytest.mark.slow
@pytest.mark.parametrize("mode, message", [
    ("labels", "ValueError: epoch 1, batch 3: labels must lie in [0, 2], got values in [5, 5]"),
    ("pixels", "ValueError: epoch 1, batch 3 of the training data has values in [3, 3]; the bernoulli likelihood "
               "needs them in [0, 1]"),
    ("sampler", "ValueError: the DataLoader's DistributedSampler has num_replicas=2, rank=0, but this process "
                "is rank 1 of 2"),
    ("lengths", "ValueError: under torchrun every process must take as many steps per epoch, but the processes' "
                "loaders hold from 2 to 4 batches (this one 2)"),
])
def test_bad_streamed_data_on_one_rank_ends_the_job_promptly_with_its_line(tmp_path, mode, message):
    """Bad data (or a refused loader) on rank 1 only: rank 0 must not wait forever; the job
    fails and rank 1's one-line error is in the log."""
    proc, seconds = _torchrun(tmp_path, FAILING_SCRIPT, mode, timeout=180)
    assert proc.returncode != 0
    assert f"[rank1]: {message}" in proc.stderr, proc.stderr[-3000:]
    assert "finished" not in proc.stdout
    assert seconds < 120


SHARDS_SCRIPT = SCRIPT_PREAMBLE + '''
out, rank = sys.argv[1], int(os.environ["RANK"])
distributed.setup(torch.device("cpu"))  # a DistributedSampler needs the group
x = torch.bernoulli(torch.full((21, 16), 0.3), generator=torch.Generator().manual_seed(0))
record = {}
for mode in ("dataset", "distributed-sampler", "plain-loader"):
    data = Items(x)
    given = {"dataset": data,
             "distributed-sampler": DataLoader(data, batch_size=8, sampler=DistributedSampler(data, seed=3)),
             "plain-loader": DataLoader(data, batch_size=8, shuffle=True)}[mode]
    model = VAE(16, VAEConfig(latent_dim=2, hidden_dims=(8,)))
    try:
        result = fit(model, given, TrainConfig(epochs=2, batch_size=8, device="cpu", progress=False))
    except ValueError as err:
        record[mode] = {"error": str(err)}
        continue
    torch.save(model.state_dict(), os.path.join(out, f"{mode}-rank{rank}.pt"))
    record[mode] = {"seen": data.seen, "steps": result.steps, "history": result.history}
with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
    json.dump(record, f)
distributed.shutdown()
'''


@needs_gloo
@pytest.mark.slow
def test_streamed_data_is_sharded_per_process(tmp_path):
    """In a real group of two: a torch Dataset is cut into per-process shards as a DataSplits
    is; a DataLoader with a DistributedSampler is used with set_epoch called every epoch; both
    ranks end with the same parameters; a plain DataLoader (every process would read
    everything) is refused on every rank with one line."""
    proc, _ = _torchrun(tmp_path, SHARDS_SCRIPT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for mode in ("dataset", "distributed-sampler"):
        # 21 items, 2 processes: 11 each per epoch (one seen twice), 2 batches of 8 per epoch.
        assert [r[mode]["steps"] for r in ranks] == [4, 4], mode
        assert ranks[0][mode]["history"] == ranks[1][mode]["history"], mode  # the global curve
        epochs = [[r[mode]["seen"][e * 11:(e + 1) * 11] for r in ranks] for e in range(2)]
        assert all(len(r[mode]["seen"]) == 22 for r in ranks), mode
        for shards in epochs:
            assert set(shards[0]) | set(shards[1]) == set(range(21)), mode  # the epoch is covered
            assert len(set(shards[0]) & set(shards[1])) <= 1, mode  # disjoint but the wrapped item
        assert epochs[0][0] != epochs[1][0], mode  # a new order each epoch (set_epoch)
        states = [torch.load(tmp_path / f"{mode}-rank{r}.pt", weights_only=True) for r in (0, 1)]
        for name, tensor in states[0].items():
            assert torch.equal(tensor, states[1][name]), (mode, name)
    # The Dataset's shards are the in-memory path's: the permutation seeded by (seed, epoch).
    expected = [distributed.shard_indices(21, 2, 0, torch.Generator().manual_seed(distributed.epoch_order_seed(0, e)))
                for e in (1, 2)]
    assert ranks[0]["dataset"]["seen"] == torch.cat(expected).tolist()
    for r in ranks:
        assert r["plain-loader"]["error"].startswith(
            "under torchrun a DataLoader must shard its data per process: build it with "
            "sampler=DistributedSampler(dataset) (got sampler RandomSampler)")
