"""Raw exports: `pyro-vae sample` to .npy/.npz/.pt and `pyro-vae encode`, with and without the data."""

import os

import numpy as np
import pytest
import torch

from pyro_vae.cli import main
from pyro_vae.data import DataConfig, load_dataset
from pyro_vae.exports import encode_run, sample_run, write_codes
from pyro_vae.runs import load_run, train_run

from .test_dataless_runs import one_line_error, tiny_config, write_digits_npz


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A VAE trained on an npz file that is then moved away, and a CVAE on digits (data present)."""
    root = tmp_path_factory.mktemp("exports")
    npz = write_digits_npz(root / "d.npz")
    train_run(tiny_config(f"npz:{npz}"), root / "vae")
    npz.rename(root / "moved.npz")
    train_run(tiny_config("digits", model="cvae", subset=200), root / "cvae")
    return {"vae": root / "vae", "cvae": root / "cvae", "npz": npz}


def run_ok(capsys, argv):
    assert main([str(a) for a in argv]) == 0, capsys.readouterr().err
    return capsys.readouterr().out.strip()


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".pt"])
def test_sample_writes_the_samples_without_the_data(runs, tmp_path, capsys, suffix):
    out = tmp_path / f"s{suffix}"
    assert run_ok(capsys, ["sample", runs["vae"], "--n", "5", "--out", out]) == str(out)
    if suffix == ".pt":
        x = torch.load(out, weights_only=True)
        assert isinstance(x, torch.Tensor)
        x = x.numpy()
    elif suffix == ".npz":
        with np.load(out, allow_pickle=False) as archive:
            assert sorted(archive) == ["x"]  # no labels were used
            x = archive["x"]
    else:
        x = np.load(out, allow_pickle=False)
    assert x.shape == (5, 1, 8, 8) and x.dtype == np.float32
    assert 0 <= x.min() and x.max() <= 1 and len(np.unique(x)) > 2  # decoder means of a Bernoulli


def test_pixel_samples_are_binary_and_the_figure_still_draws(runs, tmp_path, capsys):
    run_ok(capsys, ["sample", runs["vae"], "--n", "40", "--pixels", "--out", tmp_path / "p.npy"])
    assert set(np.unique(np.load(tmp_path / "p.npy"))) == {0.0, 1.0}
    run_ok(capsys, ["sample", runs["vae"], "--n", "4", "--out", tmp_path / "s.png"])
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_conditional_samples_carry_their_labels(runs, tmp_path, capsys):
    run_ok(capsys, ["sample", runs["cvae"], "--n", "12", "--out", tmp_path / "c.npz"])
    with np.load(tmp_path / "c.npz", allow_pickle=False) as archive:
        assert archive["x"].shape == (12, 1, 8, 8)
        assert archive["y"].tolist() == [i % 10 for i in range(12)]
    run_ok(capsys, ["sample", runs["cvae"], "--n", "3", "--label", "7", "--out", tmp_path / "seven.npz"])
    assert np.load(tmp_path / "seven.npz")["y"].tolist() == [7, 7, 7]


def test_samples_are_reproducible_by_seed(runs):
    run = load_run(runs["vae"], data=False)
    a, _ = sample_run(run, 4, seed=3)
    b, _ = sample_run(run, 4, seed=3)
    c, _ = sample_run(run, 4, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_an_existing_export_is_not_replaced_without_overwrite(runs, tmp_path, capsys):
    out = tmp_path / "s.npy"
    out.write_bytes(b"mine")
    one_line_error(capsys, ["sample", runs["vae"], "--out", out], "--out", str(out), "exists", "--overwrite")
    assert out.read_bytes() == b"mine"
    codes = tmp_path / "codes.npz"
    codes.write_bytes(b"mine too")
    one_line_error(capsys, ["encode", runs["cvae"], "--out", codes], "exists", "--overwrite")
    assert codes.read_bytes() == b"mine too"
    run_ok(capsys, ["sample", runs["vae"], "--n", "2", "--out", out, "--overwrite"])
    assert np.load(out).shape == (2, 1, 8, 8)
    assert not [p.name for p in tmp_path.iterdir() if p.name not in ("s.npy", "codes.npz")]  # no temporaries


@pytest.mark.parametrize("argv, fragments", [
    (["sample", "RUN", "--out", "OUT/s.csv"], ["--out", "s.csv", "'.csv'", ".png, .pdf, .svg, .npy, .npz, .pt"]),
    (["sample", "RUN", "--out", "OUT/s"], ["--out", "'(none)'", ".npy"]),
    (["sample", "RUN", "--n", "0", "--out", "OUT/s.npy"], ["n must be a positive integer", "got 0"]),
    (["sample", "RUN", "--out", "OUT/file/s.npy"], ["cannot write --out", "not a directory"]),
    (["sample", "RUN", "--pixels", "--out", "OUT/s.png"], ["--pixels", "raw samples", ".npy"]),
    (["sample", "RUN", "--mean", "--pixels", "--out", "OUT/s.npy"], ["--pixels", "--mean"]),
    (["encode", "RUN", "--out", "OUT/codes.npy"], ["--out", "'.npy'", "accepted: .npz"]),
    (["encode", "RUN", "--split", "val", "--out", "OUT/c.npz"], ["split 'val'", "empty", "choose from: test, train"]),
    (["encode", "RUN", "--split", "dev", "--out", "OUT/c.npz"], ["split 'dev'", "test, train, val"]),
    (["encode", "RUN", "--batch-size", "0", "--out", "OUT/c.npz"], ["--batch-size", "got 0"]),
    (["encode", "RUN", "--out", "OUT/file/c.npz"], ["cannot write --out", "not a directory"]),
])
def test_bad_export_arguments_get_one_line(runs, tmp_path, capsys, argv, fragments):
    (tmp_path / "file").write_text("")
    argv = [a.replace("RUN", str(runs["cvae"])).replace("OUT", str(tmp_path)) for a in argv]
    one_line_error(capsys, argv, *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing written


def test_encode_writes_codes_scales_and_labels(runs, tmp_path, capsys):
    out = tmp_path / "codes.npz"
    run_ok(capsys, ["encode", runs["cvae"], "--out", out, "--batch-size", "7"])
    data = load_dataset(DataConfig("digits", subset=200))
    with np.load(out, allow_pickle=False) as archive:
        assert sorted(archive) == ["y", "z_loc", "z_scale"]
        z_loc, z_scale, y = archive["z_loc"], archive["z_scale"], archive["y"]
    assert z_loc.shape == z_scale.shape == (359, 2) == (len(data.y_test), 2) and (z_scale > 0).all()
    np.testing.assert_array_equal(y, data.y_test.numpy())
    # The same codes as the model's own encoder on the test set, whatever the batch size.
    run = load_run(runs["cvae"])
    expected = run.model.encode(run.data.x_test, run.data.y_test).numpy()
    np.testing.assert_allclose(z_loc, expected, rtol=1e-5, atol=1e-6)
    run_ok(capsys, ["encode", runs["cvae"], "--split", "train", "--out", tmp_path / "train.npz"])
    with np.load(tmp_path / "train.npz") as archive:
        assert archive["z_loc"].shape == (200, 2)
        np.testing.assert_array_equal(archive["y"], data.y_train.numpy())


def test_encode_of_the_vae_needs_its_data(runs, tmp_path, capsys):
    one_line_error(capsys, ["encode", runs["vae"], "--out", tmp_path / "c.npz"],
                   "file not found", str(runs["npz"]))
    assert not (tmp_path / "c.npz").exists()
    runs["npz"].parent.joinpath("moved.npz").rename(runs["npz"])
    try:
        codes = encode_run(runs["vae"], batch_size=1000)
        assert codes["z_loc"].shape == codes["z_scale"].shape == (60, 2)
        assert codes["y"].shape == (60,)
        assert np.array_equal(codes["z_loc"], encode_run(runs["vae"], batch_size=13)["z_loc"])
        write_codes(tmp_path / "c.npz", codes)
        with np.load(tmp_path / "c.npz", allow_pickle=False) as archive:
            assert np.array_equal(archive["z_loc"], codes["z_loc"])
        with pytest.raises(ValueError, match="exists"):
            write_codes(tmp_path / "c.npz", codes)
    finally:
        runs["npz"].rename(runs["npz"].parent / "moved.npz")


@pytest.mark.parametrize("model, model_config, keys, width", [
    ("ppca", {"latent_dim": 3}, ["y", "z_loc"], 3),  # one shared covariance: no per-example scale
    ("hvae", {"latent_dim": 2, "levels": 2, "hidden_dims": (16,)}, ["y", "z_loc", "z_scale"], 2),  # top layer
    ("mixture", {"num_components": 4}, ["y", "z_loc"], 4),  # responsibilities
])
def test_encode_follows_each_model_family(tmp_path, model, model_config, keys, width):
    from pyro_vae.inference import TrainConfig
    from pyro_vae.runs import RunConfig, default_binarize

    config = RunConfig(model=model, model_config=model_config, eval_samples=2,
                       data=DataConfig("digits", subset=100, binarize=default_binarize(model, model_config)),
                       train=TrainConfig(epochs=1, progress=False, device="cpu"))
    train_run(config, tmp_path / "run")
    codes = encode_run(tmp_path / "run", batch_size=50)
    assert sorted(codes) == keys and codes["z_loc"].shape == (359, width)
    run = load_run(tmp_path / "run")
    np.testing.assert_allclose(codes["z_loc"], run.model.encode(run.data.x_test).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("suffix,magic", [(".png", b"\x89PNG"), (".pdf", b"%PDF"), (".svg", b"<?xml")])
def test_figures_are_written_in_the_format_their_suffix_names(runs, tmp_path, suffix, magic):
    out = tmp_path / f"samples{suffix}"
    assert main(["sample", str(runs["vae"]), "--n", "4", "--out", str(out)]) == 0
    assert out.read_bytes().startswith(magic)
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary file left behind
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # as a plain open() would create it
