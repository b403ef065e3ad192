"""Runs that outlive their data: absolute data paths, the recorded spec and fingerprint,
loading without the data, and refusing data that changed under a run."""

import json
import shutil

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from pyro_vae import load_model
from pyro_vae.cli import main
from pyro_vae.data import DataConfig, DataSpec, load_dataset
from pyro_vae.inference import TrainConfig
from pyro_vae.rundata import data_fingerprint
from pyro_vae.runs import RunConfig, evaluate_run, load_run, resume_run, train_run

SPEC = {"data_dim": 64, "image_shape": [1, 8, 8], "num_classes": 10}


def write_digits_npz(path, n=300, offset=0):
    """``n`` digits as uint8 grey levels ``(n, 8, 8)`` with labels (``offset`` picks other rows)."""
    bunch = load_digits()
    x = (bunch.data[offset:offset + n] * 255 / 16).round().astype(np.uint8).reshape(n, 8, 8)
    np.savez(path, x=x, y=bunch.target[offset:offset + n])
    return path


def tiny_config(name, model="vae", epochs=1, **data):
    return RunConfig(model=model, model_config={"latent_dim": 2, "hidden_dims": (16,)},
                     data=DataConfig(name=name, **data),
                     train=TrainConfig(epochs=epochs, progress=False, device="cpu"), eval_samples=2)


def one_line_error(capsys, argv, *fragments):
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.fixture
def relative_run(tmp_path, monkeypatch):
    """A run trained from ``tmp_path/work`` on the relative ``npz:d.npz``; the cwd is then elsewhere."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    write_digits_npz("d.npz")
    train_run(tiny_config("npz:d.npz"), "run")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return work / "run", work / "d.npz"


def test_config_records_the_absolute_path_the_spec_and_the_fingerprint(relative_run):
    run_dir, npz = relative_run
    config = json.loads((run_dir / "config.json").read_text())
    assert config["data"]["name"] == f"npz:{npz}"  # absolute, though given as npz:d.npz
    assert config["data_spec"] == SPEC
    data = load_dataset(DataConfig(name=f"npz:{npz}"))
    assert config["data_fingerprint"] == data_fingerprint(data)
    # From another working directory the run finds its data, and its checkpoint matches.
    run = load_run(run_dir)
    assert run.data is not None and run.spec == DataSpec(64, (1, 8, 8), 10)
    assert evaluate_run(run_dir, 2)["num_examples"] == 60


def test_the_fingerprint_is_a_pure_function_of_the_data_definition(tmp_path):
    npz = write_digits_npz(tmp_path / "d.npz")
    config = DataConfig(name=f"npz:{npz}", val_fraction=0.2)
    data = load_dataset(config)
    reference = data_fingerprint(data)
    assert data_fingerprint(load_dataset(config)) == reference  # loaded again
    assert data_fingerprint(data.to(dtype=torch.float64)) == reference  # any floating dtype
    assert len(reference) == 64 and int(reference, 16) >= 0
    # Anything in the definition or the values changes it: a subset, a split, one pixel, a label.
    assert data_fingerprint(load_dataset(DataConfig(name=f"npz:{npz}", val_fraction=0.2, subset=100))) != reference
    assert data_fingerprint(load_dataset(DataConfig(name=f"npz:{npz}", val_fraction=0.1))) != reference
    changed = data.to()
    changed.x_train = data.x_train.clone()
    changed.x_train[0, 0] = 1 - changed.x_train[0, 0]
    assert data_fingerprint(changed) != reference
    relabelled = data.to()
    relabelled.y_test = (data.y_test + 1) % 10
    assert data_fingerprint(relabelled) != reference


def test_a_run_without_its_data_samples_but_does_not_evaluate(relative_run, tmp_path, capsys):
    run_dir, npz = relative_run
    npz.rename(tmp_path / "moved.npz")
    run = load_run(run_dir, data=False)
    assert run.data is None and run.spec == DataSpec(64, (1, 8, 8), 10)
    assert run.model.sample(3).shape == (3, 64)
    with pytest.raises(ValueError, match=rf"file not found \(looked at {npz}\)"):
        load_run(run_dir)
    one_line_error(capsys, ["evaluate", run_dir], "file not found", str(npz))
    one_line_error(capsys, ["report", run_dir], "file not found", str(npz))
    assert main(["sample", str(run_dir), "--n", "4", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 0
    for kind in ("samples", "manifold", "interpolation"):  # figures of the model alone
        assert main(["plot", str(run_dir), "--kind", kind, "--out", str(tmp_path / f"{kind}.png")]) == 0
        assert (tmp_path / f"{kind}.png").stat().st_size > 0
    one_line_error(capsys, ["plot", run_dir, "--kind", "reconstructions", "--out", tmp_path / "r.png"],
                   "file not found", str(npz))
    # the model saves without its data, and the saved file encodes exactly as the run's model
    run.model.save(tmp_path / "model.pt")
    restored = load_model(tmp_path / "model.pt")
    x = torch.bernoulli(torch.full((5, 64), 0.4))
    assert torch.equal(restored.encode(x), run.model.encode(x))


def test_changed_data_is_refused_on_resume_and_evaluate(relative_run, capsys):
    run_dir, npz = relative_run
    recorded = json.loads((run_dir / "config.json").read_text())["data_fingerprint"]
    write_digits_npz(npz, offset=300)  # same name, other digits
    now = data_fingerprint(load_dataset(DataConfig(name=f"npz:{npz}")))
    assert now != recorded
    message = rf"data set 'npz:{npz}' now has fingerprint {now}, but the run was trained on {recorded}"
    with pytest.raises(ValueError, match=message):
        resume_run(run_dir, 2)
    with pytest.raises(ValueError, match=message):
        evaluate_run(run_dir, 2)
    one_line_error(capsys, ["evaluate", run_dir], "changed", now, recorded)
    one_line_error(capsys, ["train", "--resume", run_dir, "--epochs", "2"], "changed", now, recorded)
    assert json.loads((run_dir / "config.json").read_text())["data_fingerprint"] == recorded
    assert load_run(run_dir, data=False).data is None  # what needs no data still works


def test_resume_accepts_its_own_data_whatever_the_dtype_split_and_binarization(tmp_path):
    npz = write_digits_npz(tmp_path / "d.npz")
    config = tiny_config(f"npz:{npz}", val_fraction=0.2, subset=150, binarize="static")
    config.train = TrainConfig(epochs=1, progress=False, device="cpu", dtype="float64")
    train_run(config, tmp_path / "run")
    metrics = resume_run(tmp_path / "run", 2)
    assert metrics["epochs"] == 2
    assert load_run(tmp_path / "run").data.x_train.dtype == torch.float64


def test_a_run_of_an_older_version_without_spec_or_fingerprint_still_loads(tmp_path):
    npz = write_digits_npz(tmp_path / "d.npz")
    train_run(tiny_config(f"npz:{npz}"), tmp_path / "run")
    path = tmp_path / "run" / "config.json"
    raw = json.loads(path.read_text())
    fingerprint = raw.pop("data_fingerprint")
    raw.pop("data_spec")
    path.write_text(json.dumps(raw))
    run = load_run(tmp_path / "run", data=False)  # learns the spec from the data
    assert run.data is None and run.spec == DataSpec(64, (1, 8, 8), 10)
    assert load_run(tmp_path / "run").data is not None
    resume_run(tmp_path / "run", 2)  # records both from now on
    raw = json.loads(path.read_text())
    assert raw["data_spec"] == SPEC and raw["data_fingerprint"] == fingerprint


@pytest.mark.parametrize("key, value, fragment", [
    ("data_spec", {"data_dim": 64, "image_shape": [1, 8, 9], "num_classes": 10}, "data_dim 64"),
    ("data_spec", [64], "data_spec must be an object"),
    ("data_fingerprint", "abc", "data_fingerprint must be 64 lowercase hex digits"),
])
def test_a_damaged_data_record_is_refused_naming_the_file(tmp_path, capsys, key, value, fragment):
    npz = write_digits_npz(tmp_path / "d.npz")
    train_run(tiny_config(f"npz:{npz}"), tmp_path / "run")
    path = tmp_path / "run" / "config.json"
    raw = json.loads(path.read_text())
    raw[key] = value
    path.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="config.json") as info:
        load_run(tmp_path / "run", data=False)
    assert fragment in str(info.value)
    one_line_error(capsys, ["sample", tmp_path / "run", "--out", tmp_path / "s.npy"], "config.json", fragment)


def test_a_copied_run_finds_its_data_by_absolute_path(relative_run, tmp_path):
    run_dir, _ = relative_run
    shutil.copytree(run_dir, tmp_path / "copy")
    assert load_run(tmp_path / "copy").data.x_test.shape == (60, 64)
