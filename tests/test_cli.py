"""The CLI end to end and the run-directory output contract."""

import json

import matplotlib.image
import pytest
import torch

from pyro_vae.checkpoint import load_checkpoint
from pyro_vae.cli import main

TINY = ["--latent-dim", "4", "--hidden-dims", "32", "--eval-samples", "20", "--no-progress"]


def _train(out, *extra):
    return main(["train", "--model", "vae", "--dataset", "digits", "--out", str(out), *TINY, *extra])


def test_train_writes_the_output_contract(tmp_path, capsys):
    assert _train(tmp_path / "run", "--epochs", "3", "--eval-every", "2") == 0
    run = tmp_path / "run"
    printed = json.loads(capsys.readouterr().out)
    config = json.loads((run / "config.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert config["model"] == "vae" and config["train"]["epochs"] == 3
    assert config["model_config"]["latent_dim"] == 4 and config["train"]["seed"] == 0
    assert {"torch", "pyro", "pyro_vae", "python"} <= set(config["versions"])
    assert metrics["model"] == "vae" and metrics["dataset"] == "digits" and metrics["epochs"] == 3
    assert metrics["seconds"] > 0
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3]
    assert ["test_elbo" in h for h in metrics["history"]] == [False, True, True]
    test = metrics["test"]
    assert test == printed
    assert test["log_likelihood_samples"] == 20 and test["exact"] is False
    # the importance-sampled estimate is a tighter bound than the ELBO
    assert test["elbo"] < test["log_likelihood"] < 0
    checkpoint = load_checkpoint(run / "checkpoint.pt")
    assert checkpoint["train_state"]["epoch"] == 3
    for name in ("curves", "reconstructions", "samples"):
        assert matplotlib.image.imread(run / "figures" / f"{name}.png").ndim == 3


def test_resume_equals_uninterrupted_run(tmp_path):
    assert _train(tmp_path / "full", "--epochs", "4") == 0
    assert _train(tmp_path / "part", "--epochs", "2") == 0
    assert main(["train", "--resume", str(tmp_path / "part"), "--epochs", "4", "--no-progress"]) == 0
    full = load_checkpoint(tmp_path / "full" / "checkpoint.pt")
    part = load_checkpoint(tmp_path / "part" / "checkpoint.pt")
    for name, tensor in full["model"].items():
        assert torch.equal(tensor, part["model"][name]), name
    m_full = json.loads((tmp_path / "full" / "metrics.json").read_text())
    m_part = json.loads((tmp_path / "part" / "metrics.json").read_text())
    assert m_full["history"] == m_part["history"]
    assert m_full["test"] == m_part["test"]
    assert json.loads((tmp_path / "part" / "config.json").read_text())["train"]["epochs"] == 4


def test_evaluate_and_sample(tmp_path, capsys):
    assert _train(tmp_path / "run", "--epochs", "1") == 0
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "run"), "--samples", "50"]) == 0
    test = json.loads(capsys.readouterr().out)
    assert test["log_likelihood_samples"] == 50
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test"] == test and len(metrics["history"]) == 1
    assert main(["sample", str(tmp_path / "run"), "--n", "16", "--out", str(tmp_path / "s.png")]) == 0
    assert matplotlib.image.imread(tmp_path / "s.png").ndim == 3


@pytest.mark.parametrize("argv, message", [
    (["train", "--model", "gan", "--out", "X"], "unknown model 'gan'; choose from"),
    (["train", "--dataset", "cifar", "--out", "X"], "unknown dataset 'cifar'"),
    (["train", "--epochs", "0", "--out", "X"], "epochs must be a positive integer, got 0"),
    (["train", "--batch-size", "-3", "--out", "X"], "batch_size must be a positive integer, got -3"),
    (["train", "--latent-dim", "0", "--out", "X"], "latent_dim must be a positive integer, got 0"),
    (["train", "--lr", "-1", "--out", "X"], "lr must be a finite positive number"),
    (["train", "--device", "tpu", "--out", "X"], "unknown device 'tpu'"),
    (["train", "--objective", "wake-sleep", "--out", "X"], "unknown objective 'wake-sleep'"),
    (["train"], "train needs --out DIR"),
    (["evaluate", "does-not-exist"], "run directory 'does-not-exist' does not exist"),
    (["sample", "does-not-exist", "--out", "x.png"], "does not exist"),
])
def test_bad_input_exits_2_with_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert err.count("\n") == 1


def test_existing_run_is_not_overwritten_silently(tmp_path, capsys):
    assert _train(tmp_path / "run", "--epochs", "1") == 0
    assert _train(tmp_path / "run", "--epochs", "1") == 2
    assert "already holds a run; pass --overwrite" in capsys.readouterr().err
    assert _train(tmp_path / "run", "--epochs", "1", "--overwrite") == 0


def test_checkpoint_from_a_different_configuration_is_refused(tmp_path, capsys):
    assert _train(tmp_path / "a", "--epochs", "1") == 0
    assert _train(tmp_path / "b", "--epochs", "1", "--latent-dim", "3") == 0
    (tmp_path / "b" / "checkpoint.pt").write_bytes((tmp_path / "a" / "checkpoint.pt").read_bytes())
    assert main(["evaluate", str(tmp_path / "b")]) == 2
    assert "written for a different configuration (model_config.latent_dim" in capsys.readouterr().err
