"""Adversarial inputs for issue #13 (data from anywhere, image folders, conv and user networks,
saved models, runs without their data, raw exports): every bad input is one line, nothing is
lost or replaced unasked, nothing read from a file claims memory or runs code."""

import json
import os
import shutil
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from pyro_vae import VAE, VAEConfig, load_model
from pyro_vae.checkpoint import load_checkpoint, save_checkpoint
from pyro_vae.data import DataConfig, load_dataset
from pyro_vae.inference import TrainConfig, fit
from pyro_vae.inference.evaluate import elbo, evaluate, log_likelihood
from pyro_vae.inference.state import NonFiniteLossError
from pyro_vae.models import CVAE
from pyro_vae.runs import train_run

from .conftest import TINY_TRAIN_ARGS
from .test_dataless_runs import one_line_error, tiny_config, write_digits_npz

CONFIG = TrainConfig(epochs=1, progress=False, device="cpu", batch_size=8)
X = torch.bernoulli(torch.full((40, 1, 4, 4), 0.4), generator=torch.Generator().manual_seed(0))
Y = torch.arange(40) % 3


def tiny_vae():
    return VAE(16, VAEConfig(latent_dim=2, hidden_dims=(8,)), image_shape=(1, 4, 4))


def tiny_cvae():
    return CVAE(16, VAEConfig(latent_dim=2, hidden_dims=(8,)), num_classes=3, image_shape=(1, 4, 4))


# --------------------------------------------------------------------------- image folders


def save_images(folder, arrays, mode=None, suffix=".png"):
    folder.mkdir(parents=True, exist_ok=True)
    for i, pixels in enumerate(arrays):
        Image.fromarray(pixels, mode).save(folder / f"{i}{suffix}")
    return folder


def folder_data(folder, **options):
    options.setdefault("test_fraction", 0.25)
    return load_dataset(DataConfig(name=f"folder:{folder}", binarize="none", **options))


def bomb_png(path, side=100_000):
    """A valid PNG header declaring side x side pixels (over Pillow's decompression-bomb limit)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def test_alpha_palette_and_tiny_images_are_read(tmp_path):
    rgba = folder_data(save_images(tmp_path / "rgba", [np.full((5, 5, 4), 60 * i, np.uint8) for i in range(4)],
                                   "RGBA"))
    assert rgba.image_shape == (3, 5, 5)  # the alpha channel dropped
    palette = tmp_path / "p"
    palette.mkdir()
    for i in range(4):
        image = Image.fromarray(np.full((5, 5), i % 2, np.uint8), "L").convert("P")
        image.putpalette([0, 0, 0, 255, 0, 0] * 128)
        image.save(palette / f"{i}.png")
    data = folder_data(palette)
    assert data.image_shape == (3, 5, 5) and set(data.x_train.unique().tolist()) <= {0.0, 1.0}
    one = folder_data(save_images(tmp_path / "one", [np.full((1, 1), 51 * i, np.uint8) for i in range(4)]))
    assert one.image_shape == (1, 1, 1)


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    # convert("L") clips 16-bit levels at 255: 1000 and 20000 would both read as white
    levels = [0, 1000, 20000, 65535]
    folder = save_images(tmp_path / "deep", [np.full((3, 3), v, np.uint16) for v in levels])
    data = folder_data(folder)
    got = sorted(round(v * 255) for v in torch.cat([data.x_train, data.x_test])[:, 0].tolist())
    assert got == [round(v / 257) for v in levels] == [0, 4, 78, 255]


def test_floating_point_images_are_refused_naming_the_file(tmp_path):
    folder = save_images(tmp_path / "f", [np.full((3, 3), v, np.float32) for v in (0.0, 0.5, np.nan)],
                         suffix=".tif")
    with pytest.raises(ValueError, match=r"0\.tif: floating-point pixels .* accepted: 8- or 16-bit"):
        folder_data(folder)


def test_a_decompression_bomb_is_one_line_naming_the_file(tmp_path, capsys):
    folder = save_images(tmp_path / "b", [np.zeros((4, 4), np.uint8)] * 2)
    bomb_png(folder / "bomb.png")
    for options in ({}, {"image_size": (4, 4)}):
        with pytest.raises(ValueError, match=r"bomb\.png: not a readable image .*exceeds limit"):
            folder_data(folder, **options)
    one_line_error(capsys, ["train", "--dataset", f"folder:{folder}", "--out", tmp_path / "run", *TINY_TRAIN_ARGS],
                   "bomb.png", "not a readable image")
    assert not (tmp_path / "run").exists()


def test_a_non_image_with_an_image_extension_is_one_line(tmp_path, capsys):
    folder = save_images(tmp_path / "fake", [np.zeros((4, 4), np.uint8)] * 2)
    (folder / "notes.png").write_text("not an image")
    one_line_error(capsys, ["train", "--dataset", f"folder:{folder}", "--out", tmp_path / "run", *TINY_TRAIN_ARGS],
                   "notes.png", "not a readable image")


def test_symlink_loops_do_not_hang_or_multiply_images(tmp_path):
    top = save_images(tmp_path / "top", [np.zeros((4, 4), np.uint8)] * 2)
    os.symlink(top, top / "loop")
    with pytest.raises(ValueError, match="holds both images .* and class folders"):
        folder_data(top)
    classes = tmp_path / "classes"
    for name in ("a", "b"):
        save_images(classes / name, [np.full((4, 4), 9, np.uint8)] * 2)
    os.symlink(classes / "a", classes / "a" / "loop")  # a link back into its own class
    data = folder_data(classes)
    assert data.x_train.shape[0] + data.x_test.shape[0] == 4 and data.num_classes == 2


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_image_is_one_line(tmp_path):
    folder = save_images(tmp_path / "u", [np.zeros((4, 4), np.uint8)] * 2)
    os.chmod(folder / "1.png", 0)
    with pytest.raises(ValueError, match=r"1\.png"):
        folder_data(folder)


# --------------------------------------------------------------------------- loaders


class Dicts(Dataset):
    def __len__(self):
        return 40

    def __getitem__(self, i):
        return {"x": X[i], "y": Y[i]}


class Stream(IterableDataset):
    """Batches of varying size, without a length."""

    def __iter__(self):
        start = 0
        for size in (3, 7, 1, 12, 17):
            yield X[start:start + size]
            start += size


@pytest.mark.parametrize("loader, error, match", [
    (DataLoader(Dicts(), batch_size=8), TypeError, "batch 1: a dict"),
    (DataLoader(TensorDataset(X, Y, Y), batch_size=8), ValueError, "got 3 items"),
    (DataLoader(TensorDataset(X, Y.float()), batch_size=8), TypeError, "labels must be an integer"),
    (DataLoader(TensorDataset(X.to(torch.complex64)), batch_size=8), TypeError, "got dtype torch.complex64"),
    (DataLoader(TensorDataset(X.bool()), batch_size=8), TypeError, "real numbers, got dtype torch.bool"),
    (DataLoader(TensorDataset(X[:0]), batch_size=8), ValueError, "yielded no batch in epoch 1"),
])
def test_bad_loaders_are_one_line(loader, error, match):
    with pytest.raises(error, match=match) as info:
        fit(tiny_vae(), loader, CONFIG)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("bad_label", [7, -1])
def test_labels_out_of_range_in_a_later_batch_are_one_line(bad_label):
    labels = torch.where(torch.arange(40) < 30, Y, torch.tensor(bad_label))  # batches 1-3 are fine
    with pytest.raises(ValueError, match=r"epoch 1, batch 4: labels must lie in \[0, 2\]"):
        fit(tiny_cvae(), DataLoader(TensorDataset(X, labels), batch_size=8), CONFIG)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_pixels_in_a_later_batch_are_bad_data_not_divergence(value):
    x = X.clone()
    x[30, 0, 0, 0] = value  # batch 4: the first batch, which is validated, is clean
    with pytest.raises(ValueError, match="epoch 1, batch 4 of the training data contains NaN or Inf") as info:
        fit(tiny_vae(), DataLoader(TensorDataset(x), batch_size=8), CONFIG)
    assert not isinstance(info.value, NonFiniteLossError)


@pytest.mark.parametrize("likelihood, scale", [("bernoulli", 255.0), ("continuous-bernoulli", 1.5),
                                               ("bernoulli", -1.0)])
def test_pixels_outside_the_likelihoods_range_in_a_later_batch_are_one_line(likelihood, scale):
    x = X.clone()
    x[24:32] *= scale  # batch 4 only: the first batch, validated in full, is clean
    model = VAE(16, VAEConfig(latent_dim=2, hidden_dims=(8,), likelihood=likelihood), image_shape=(1, 4, 4))
    with pytest.raises(ValueError, match=rf"epoch 1, batch 4 of the training data has values in \[.*\]; "
                                         rf"the {likelihood} likelihood needs them in \[0, 1\]") as info:
        fit(model, DataLoader(TensorDataset(x), batch_size=8), CONFIG)
    assert "\n" not in str(info.value)
    gaussian = VAE(16, VAEConfig(latent_dim=2, hidden_dims=(8,), likelihood="gaussian"), image_shape=(1, 4, 4))
    assert fit(gaussian, DataLoader(TensorDataset(x), batch_size=8), CONFIG).epochs == 1  # any real value


def test_iterable_loaders_of_any_batch_size_train_and_fit_runs_twice():
    result = fit(tiny_vae(), DataLoader(Stream(), batch_size=None), CONFIG)
    assert result.steps == 5 and np.isfinite(result.history[-1]["train_elbo"])
    model = tiny_vae()
    loader = DataLoader(TensorDataset(X, Y), batch_size=8, shuffle=True)
    first = fit(model, loader, CONFIG)
    second = fit(model, loader, CONFIG)
    assert first.epochs == second.epochs == 1 and np.isfinite(second.history[-1]["train_elbo"])


def test_evaluation_takes_pairs_tensordatasets_and_datasets_like_fit(digits):
    vae = VAE(64, VAEConfig(latent_dim=2, hidden_dims=(8,)), image_shape=(1, 8, 8))
    x, y = digits.x_test, digits.y_test
    torch.manual_seed(0)
    expected = elbo(vae, x).per_example
    for data in ((x, y), (x, None), TensorDataset(x), TensorDataset(x, y), digits):
        torch.manual_seed(0)
        assert torch.equal(elbo(vae, data).per_example, expected), type(data).__name__
    assert log_likelihood(vae, TensorDataset(x[:5]), num_samples=2).per_example.shape == (5,)
    assert evaluate(vae, (x[:5], y[:5]), num_samples=2)["num_examples"] == 5
    with pytest.raises(ValueError, match="y must be None when x is a tuple"):
        elbo(vae, (x, y), y)


def test_streamed_evaluation_refuses_non_finite_and_out_of_range_in_one_line():
    x = X.clone()
    x[30, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        evaluate(tiny_vae(), DataLoader(TensorDataset(x), batch_size=8), num_samples=2)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\]"):
        elbo(tiny_cvae(), DataLoader(TensorDataset(X, torch.full((40,), 5)), batch_size=8))


# --------------------------------------------------------------------------- networks and saved models


def test_conv_on_degenerate_images_and_mismatched_shapes():
    for shape in ((1, 1, 1), (1, 1, 7), (3, 1, 2)):
        dim = shape[0] * shape[1] * shape[2]
        vae = VAE(dim, VAEConfig(latent_dim=2, hidden_dims=(8,), arch="conv", conv_channels=(4, 4)),
                  image_shape=shape)
        x = torch.bernoulli(torch.full((3, *shape), 0.5))
        assert torch.isfinite(torch.tensor(elbo(vae, x).mean)) and vae.sample(2).shape == (2, dim)
    with pytest.raises(ValueError, match=r"image_shape \(1, 4, 4\) holds 16 values but data_dim is 64"):
        VAE(64, VAEConfig(arch="conv"), image_shape=(1, 4, 4))


def resaved(tmp_path, source, name, **changes):
    """A copy of the saved model ``source`` with entries changed (re-checksummed: a crafted file)."""
    entries = {k: v for k, v in load_checkpoint(source).items() if k not in ("format_version", "checksum")}
    entries.update(changes)
    save_checkpoint(tmp_path / name, entries)
    return tmp_path / name


def test_load_model_refuses_foreign_and_crafted_files_without_allocating(tmp_path, trained_run):
    vae = VAE(64, VAEConfig(latent_dim=2, hidden_dims=(8,)), image_shape=(1, 8, 8))
    vae.save(tmp_path / "v.pt")
    meta = json.loads(load_checkpoint(tmp_path / "v.pt")["meta"])
    with pytest.raises(ValueError, match="is not a saved pyro-vae model .*load_run"):
        load_model(trained_run / "checkpoint.pt")
    np.savez(tmp_path / "a.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="a.npz"):
        load_model(tmp_path / "a.npz")
    huge = resaved(tmp_path, tmp_path / "v.pt", "huge.pt", meta=json.dumps({**meta, "pad": "x" * 10**6}))
    with pytest.raises(ValueError, match="malformed meta"):
        load_model(huge)
    other = resaved(tmp_path, tmp_path / "v.pt", "o.pt", meta=json.dumps({**meta, "model": "cvae", "num_classes": 10}))
    with pytest.raises(ValueError, match="o.pt': its weights do not fit"):
        load_model(other)
    # sizes that would claim terabytes are refused before anything is allocated
    for i, changed in enumerate([{"data_dim": 10**12, "image_shape": [1, 1, 10**12]},
                                 {"model_config": {**meta["model_config"], "latent_dim": 10**9}},
                                 {"model_config": {**meta["model_config"], "hidden_dims": [10**6, 10**6]}}]):
        path = resaved(tmp_path, tmp_path / "v.pt", f"big{i}.pt", meta=json.dumps({**meta, **changed}))
        with pytest.raises(ValueError, match=f"big{i}.pt': its weights do not fit"):
            load_model(path)
    bad_shape = resaved(tmp_path, tmp_path / "v.pt", "s.pt", meta=json.dumps({**meta, "image_shape": [1, 8, 9]}))
    with pytest.raises(ValueError, match=r"s.pt': image_shape \(1, 8, 9\) holds 72"):
        load_model(bad_shape)


# --------------------------------------------------------------------------- runs and exports


@pytest.fixture(scope="module")
def npz_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("rel13")
    write_digits_npz(root / "d.npz", n=120)
    train_run(tiny_config(f"npz:{root / 'd.npz'}"), root / "run")
    return root


def test_sample_refusals_and_what_they_leave_alone(npz_run, tmp_path, capsys):
    run = npz_run / "run"
    (tmp_path / "dir.npy").mkdir()
    one_line_error(capsys, ["sample", run, "--out", tmp_path / "dir.npy"], "is a directory")
    one_line_error(capsys, ["sample", run, "--n", "0", "--out", tmp_path / "s.npy"], "--n", "got 0")
    one_line_error(capsys, ["sample", run, "--n", str(10**12), "--out", tmp_path / "s.npy"], "--n")
    (tmp_path / "x.npz").write_bytes(b"precious")
    one_line_error(capsys, ["sample", run, "--out", tmp_path / "x.npz"], "exists", "--overwrite")
    assert (tmp_path / "x.npz").read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.npy", "x.npz"]


def test_exports_create_missing_directories_as_figures_do(npz_run, tmp_path, capsys):
    run = npz_run / "run"
    for out in (tmp_path / "a" / "b" / "s.npy", tmp_path / "c" / "codes.npz"):
        command = "encode" if out.name == "codes.npz" else "sample"
        assert main_ok(capsys, [command, run, "--out", out]) == str(out)
        assert out.is_file() and not [p for p in out.parent.iterdir() if p != out]  # no temporaries


def main_ok(capsys, argv):
    from pyro_vae.cli import main

    assert main([str(a) for a in argv]) == 0, capsys.readouterr().err
    return capsys.readouterr().out.strip()


def test_encode_val_of_a_run_without_validation_is_one_line(npz_run, tmp_path, capsys):
    one_line_error(capsys, ["encode", npz_run / "run", "--split", "val", "--out", tmp_path / "c.npz"],
                   "split 'val'", "empty", "choose from: test, train")
    assert not (tmp_path / "c.npz").exists()


@pytest.mark.parametrize("edit", [{"image_shape": [1, 4, 16]}, {"num_classes": 3}])
def test_an_edited_data_spec_is_refused_where_the_data_is_read(npz_run, tmp_path, capsys, edit):
    run = tmp_path / "run"
    shutil.copytree(npz_run / "run", run)
    config = json.loads((run / "config.json").read_text())
    config["data_spec"].update(edit)
    (run / "config.json").write_text(json.dumps(config))
    metrics = (run / "metrics.json").read_bytes()
    for command in (["evaluate", run, "--samples", "2"], ["encode", run, "--out", tmp_path / "c.npz"]):
        one_line_error(capsys, command, "config.json", "field data_spec", "does not describe")
    assert (run / "metrics.json").read_bytes() == metrics and not (tmp_path / "c.npz").exists()


def test_a_data_file_replaced_by_another_of_the_same_name_is_refused(npz_run, tmp_path, capsys):
    work = tmp_path / "w"
    work.mkdir()
    write_digits_npz(work / "d.npz", n=120)
    train_run(tiny_config(f"npz:{work / 'd.npz'}"), work / "run")
    write_digits_npz(work / "d.npz", n=120, offset=1)  # same name, other rows
    metrics = (work / "run" / "metrics.json").read_bytes()
    for command in (["evaluate", work / "run", "--samples", "2"], ["encode", work / "run", "--out", work / "c.npz"],
                    ["train", "--resume", work / "run", "--epochs", "2", "--no-progress"]):
        one_line_error(capsys, command, "changed", "fingerprint")
    assert (work / "run" / "metrics.json").read_bytes() == metrics and not (work / "c.npz").exists()
    main_ok(capsys, ["sample", work / "run", "--n", "2", "--out", work / "s.npy"])  # needs no data


def test_sizes_that_cannot_be_meant_are_refused_before_anything_is_built(tmp_path):
    with pytest.raises(ValueError, match="conv_channels holds at most 8 layers"):
        VAEConfig(arch="conv", conv_channels=(4,) * 9)
    with pytest.raises(ValueError, match=r"image_size must be at most 4096 per side, got \(5000, 2\)"):
        DataConfig("folder:x", image_size=(5000, 2))
    vae = VAE(64, VAEConfig(latent_dim=2, hidden_dims=(8,)))
    with torch.no_grad():
        next(vae.parameters()).fill_(float("nan"))
    vae.save(tmp_path / "nan.pt")
    with pytest.raises(ValueError, match="non-finite weights"):
        load_model(tmp_path / "nan.pt")
