"""Data-parallel training under torchrun (pyro_vae.inference.distributed).

The end-to-end tests launch ``python -m torch.distributed.run --nproc-per-node 2`` (gloo on
the CPU) as a subprocess: about 10 s of start-up per launch on a small machine.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

from pyro_vae.checkpoint import load_checkpoint
from pyro_vae.cli import main
from pyro_vae.inference import distributed
from pyro_vae.inference.objectives import build_objective
from pyro_vae.models import VAE, VAEConfig

needs_gloo = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with gloo is not available")

TINY = ["--hidden-dims", "32", "--latent-dim", "4", "--eval-samples", "10", "--device", "cpu",
        "--no-progress"]


# --------------------------------------------------------------------------- sharding


@pytest.mark.parametrize("n, world", [(12, 3), (1438, 2), (7, 7), (5, 1)])
def test_shards_are_disjoint_and_cover_the_epoch(n, world):
    shards = [distributed.shard_indices(n, world, r, torch.Generator().manual_seed(3))
              for r in range(world)]
    everything = torch.cat(shards)
    assert all(s.numel() == n // world for s in shards)
    assert sorted(everything.tolist()) == list(range(n))  # disjoint and complete


@pytest.mark.parametrize("n, world", [(10, 4), (1437, 2), (2, 3)])
def test_uneven_shards_have_equal_length_and_cover_the_epoch(n, world):
    shards = [distributed.shard_indices(n, world, r, torch.Generator().manual_seed(3))
              for r in range(world)]
    per_rank = -(-n // world)
    assert all(s.numel() == per_rank for s in shards)  # every rank takes as many steps
    everything = torch.cat(shards)
    assert set(everything.tolist()) == set(range(n))
    assert everything.numel() - n == per_rank * world - n  # only the wrap-around repeats


def test_shards_follow_the_seeded_permutation():
    first = distributed.shard_indices(100, 2, 0, torch.Generator().manual_seed(5))
    again = distributed.shard_indices(100, 2, 0, torch.Generator().manual_seed(5))
    other = distributed.shard_indices(100, 2, 0, torch.Generator().manual_seed(6))
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.equal(first, other)
    order = torch.randperm(100, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(first, order[0::2], rtol=0, atol=0)


def test_shard_indices_refuses_a_bad_rank():
    with pytest.raises(ValueError, match="rank must lie in \\[0, 1\\] for world size 2, got 2"):
        distributed.shard_indices(10, 2, 2, torch.Generator())


# --------------------------------------------------------------------------- single process


def test_single_process_helpers_are_no_ops():
    assert (distributed.world_size(), distributed.rank(), distributed.is_main_process()) == (1, 0, True)
    assert distributed.setup(torch.device("cpu")) == torch.device("cpu")
    t = torch.arange(3.0)
    assert distributed.all_reduce_sum(t) is t
    assert distributed.on_main(lambda: 7) == 7
    assert distributed.main_first(lambda: 8) == 8
    x = torch.arange(10.0)[:, None]
    assert distributed.sharded_mean(lambda xs, ys: xs[:, 0], x) == pytest.approx(4.5)


def test_loss_module_is_the_objective():
    vae = VAE(64, VAEConfig(latent_dim=2, hidden_dims=(8,)))
    objective = build_objective("elbo")
    x = torch.bernoulli(torch.full((6, 64), 0.4))
    torch.manual_seed(1)
    direct = objective.loss(vae, x)
    torch.manual_seed(1)
    module = distributed.LossModule(vae, objective)
    loss, parts = module(x)
    torch.testing.assert_close(loss, direct)
    assert sorted(parts) == ["kl", "reconstruction"]
    assert {n for n, _ in module.named_parameters()} == {f"model.{n}" for n, _ in vae.named_parameters()}


def test_setup_refuses_a_cuda_device_other_than_local_rank(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(ValueError, match="LOCAL_RANK=0 trains on cuda:0, got device 'cuda:1'"):
        distributed.setup(torch.device("cuda:1"))


def test_only_train_runs_under_torchrun(monkeypatch, capsys):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert main(["evaluate", "some-run"]) == 2
    assert "only 'train' runs under torchrun" in capsys.readouterr().err


# --------------------------------------------------------------------------- torchrun


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(tmp_path, *args, dump=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in distributed.TORCHRUN_ENV:
        env.pop(name, None)
    if dump is not None:
        env[distributed.DUMP_STATE_ENV] = str(dump)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
           "-m", "pyro_vae", "train", *args]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def _check(proc):
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"


@needs_gloo
def test_two_processes_train_one_model(tmp_path):
    run, dump = tmp_path / "run", tmp_path / "ranks"
    proc = _torchrun(tmp_path, "--out", str(run), "--epochs", "2", *TINY, dump=dump)
    _check(proc)
    test = json.loads(proc.stdout)  # rank 0 alone prints the test object
    assert test["log_likelihood_samples"] == 10
    # Both ranks end with the same parameters, and rank 0 checkpointed exactly those.
    rank0, rank1 = (torch.load(dump / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    checkpoint = load_checkpoint(run / "checkpoint.pt")
    assert set(rank0) == set(rank1) == set(checkpoint["model"])
    for name, tensor in rank0.items():
        assert torch.equal(tensor, rank1[name]), name
        assert torch.equal(tensor, checkpoint["model"][name]), name
    # A complete run directory, with the global history: the loss falls.
    assert {p.name for p in run.iterdir()} >= {"config.json", "metrics.json", "checkpoint.pt", "figures"}
    assert any((run / "figures").glob("*.png"))
    metrics = json.loads((run / "metrics.json").read_text())
    history = metrics["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[1]["train_elbo"] > history[0]["train_elbo"]
    assert all(-80 < h["test_elbo"] < 0 for h in history)
    # The ELBO's parts are global sums too: one rank's alone would not add up to the curve.
    for h in history:
        assert h["train_reconstruction"] - h["train_kl"] == pytest.approx(h["train_elbo"], rel=1e-5)
    # 1,438 training examples, 2 ranks x 719, batch 128 per rank: 6 steps per epoch.
    assert metrics["steps"] == 12 and checkpoint["train_state"]["step"] == 12
    assert metrics["test"] == test


@needs_gloo
@pytest.mark.slow
def test_two_processes_refuse_an_occupied_directory_together(tmp_path):
    """rank 0's error reaches rank 1: both exit 2 instead of waiting for each other."""
    (tmp_path / "file").write_text("")
    proc = _torchrun(tmp_path, "--out", str(tmp_path / "file"), "--epochs", "1", *TINY)
    assert proc.returncode != 0
    assert proc.stderr.count("exists and is not a directory") == 2


@needs_gloo
@pytest.mark.slow
def test_resumed_distributed_run_equals_uninterrupted_one(tmp_path):
    part, full = tmp_path / "part", tmp_path / "full"
    _check(_torchrun(tmp_path, "--out", str(part), "--epochs", "2", *TINY))
    _check(_torchrun(tmp_path, "--resume", str(part), "--epochs", "4", "--no-progress"))
    _check(_torchrun(tmp_path, "--out", str(full), "--epochs", "4", *TINY))
    m_part = json.loads((part / "metrics.json").read_text())
    m_full = json.loads((full / "metrics.json").read_text())
    assert [h["epoch"] for h in m_part["history"]] == [1, 2, 3, 4]
    # Each rank reseeds from (seed, epoch, rank): no per-rank RNG state needs checkpointing.
    assert m_part["history"] == m_full["history"]
    assert m_part["test"] == m_full["test"]
    a, b = load_checkpoint(part / "checkpoint.pt"), load_checkpoint(full / "checkpoint.pt")
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name

