"""Red-team findings on select_on="bound", compare's shared-option check and
benchmarks/reproduce.py --status (gated twins, baselines). Tiny models on the embedded digits."""

from __future__ import annotations

import shutil

import pytest

from pyro_vae.checkpoint import load_checkpoint, save_checkpoint
from pyro_vae.cli import main
from pyro_vae.compare import CompareConfig
from pyro_vae.data import DataConfig
from pyro_vae.inference import Callback, TrainConfig
from pyro_vae.inference import train as train_module
from pyro_vae.runs import RunConfig, resume_run, train_run


def _config(epochs: int, **train) -> RunConfig:
    return RunConfig(model="vae", model_config={"latent_dim": 2, "hidden_dims": (8,)},
                     data=DataConfig(val_fraction=0.2),
                     train=TrainConfig(**{"epochs": epochs, "objective": "iwae", "particles": 3,
                                          "select_on": "bound", "patience": 5, "progress": False,
                                          "device": "cpu", **train}),
                     eval_samples=3)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 2-epoch IWAE run selected on its bound."""
    run = tmp_path_factory.mktemp("r17") / "vae"
    train_run(_config(2), run)
    return run


class _Interrupt(Callback):
    """Raises KeyboardInterrupt (Ctrl-C, kill) once epoch ``at`` is checkpointed."""

    def __init__(self, at: int):
        self.at = at

    def on_epoch_end(self, model, state):
        if state.epoch == self.at:
            raise KeyboardInterrupt


def test_status_does_not_call_a_resumed_then_interrupted_run_finished(bench, finished, tmp_path):
    """A run scored at a smaller --max-epochs cap, then resumed towards a larger one and
    interrupted, still holds the old metrics.json; --status must report where its checkpoint
    stands (interrupted, epoch 3 of 5), not 'finished: 2 epochs' (ensure_run would resume it)."""
    run = tmp_path / "vae"
    shutil.copytree(finished, run)
    with pytest.raises(KeyboardInterrupt):
        resume_run(run, 5, progress=False, callbacks=[_Interrupt(3)])
    assert load_checkpoint(run / "checkpoint.pt", map_location="cpu")["train_state"]["epoch"] == 3
    line = bench.run_status("vae", run)
    assert "finished" not in line, line
    assert "epoch 3 of 5" in line, line


@pytest.mark.parametrize("train_state", [[1], None, {"epoch": 1, "seconds": 1.0, "selection": [1]}])
def test_status_survives_a_checkpoint_whose_train_state_is_not_a_mapping(bench, finished, tmp_path, train_state):
    """--status must print one line per entry and never crash: a checkpoint in pyro-vae's
    format (valid checksum) whose train_state or selection is not a dict is reported as
    unreadable (the library's validate_train_state would refuse it), not an AttributeError."""
    run = tmp_path / "vae"
    shutil.copytree(finished, run)
    (run / "metrics.json").unlink()
    checkpoint = load_checkpoint(run / "checkpoint.pt", map_location="cpu")
    checkpoint.pop("format_version", None)
    checkpoint.pop("checksum", None)
    checkpoint["train_state"] = train_state
    save_checkpoint(run / "checkpoint.pt", checkpoint)
    line = bench.run_status("vae", run)
    assert line.startswith("vae ") and "\n" not in line


def test_compare_refuses_a_model_option_that_fits_only_reused_runs(finished, tmp_path, capsys):
    """An entry named in --runs is reused, not trained: a shared model option then applies to
    no model to train and must be refused (exit 2, one line), as with --runs alone; it is
    accepted instead and silently changes nothing."""
    out = tmp_path / "cmp"
    rc = main(["compare", "--models", "vae", "--runs", f"vae={finished}", "--latent-dim", "3",
               "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "--latent-dim" in err and len(err.strip().splitlines()) == 1


def test_compare_names_an_alias_whose_own_option_overrides_a_shared_one(tmp_path, capsys):
    """`ae` is the VAE with guide=delta: a shared --guide never reaches it. Like --activation on
    ppca, the CLI must say so on stderr (or refuse, as it fits no entry); it trains ae with the
    delta guide without a word."""
    rc = main(["compare", "--models", "ae", "--guide", "studentt", "--epochs", "1", "--samples", "2",
               "--latent-dim", "2", "--hidden-dims", "8", "--out", str(tmp_path / "cmp"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc in (0, 2)
    assert any("--guide" in line and "ae" in line for line in err.splitlines()), err


@pytest.mark.parametrize("options", [None, "latent_dim"])
def test_compare_config_names_model_options_of_the_wrong_type(options):
    """CompareConfig checks each field's type with a message naming it (check_instance); a
    model_options that is not a dict gives "'NoneType' object is not iterable" or iterates a
    string's letters ("model_options['l'] applies to none of the entries")."""
    with pytest.raises(TypeError, match="model_options"):
        CompareConfig(entries=("vae",), model_options=options)


def test_resume_of_an_early_stopped_bound_run_names_the_bound(tmp_path, monkeypatch):
    """A select_on='bound' run stops on its val_bound; resuming it once complete is refused
    with a line that must name that score, not 'no better validation ELBO'."""
    scripted = iter([-50.0, -60.0, -70.0])
    monkeypatch.setattr(train_module, "held_out_bound", lambda *a, **k: next(scripted))
    run = tmp_path / "run"
    metrics = train_run(_config(5, patience=1), run)
    assert metrics["stopped_early"] and metrics["best_epoch"] == 1
    with pytest.raises(ValueError, match="stopped early") as err:
        resume_run(run, 6, progress=False)
    assert "ELBO" not in str(err.value) and "bound" in str(err.value)


def test_iwae5_gated_note_names_its_baseline(bench):
    """iwae5-gated has no published figure and its target pairs it with vae-gated
    (paired_vs_baseline), but its published note, copied from iwae5, says it is judged against
    the vae entry (paired_vs_vae)."""
    note = bench.ENTRIES["iwae5-gated"]["published"]["note"]
    assert bench.baseline("iwae5-gated") == "vae-gated"
    assert "vae-gated" in note, note
