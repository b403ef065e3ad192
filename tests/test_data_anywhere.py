"""Data from anywhere (issue 13): tensors, torch datasets and DataLoaders for fit and evaluation,
image folders in grey and colour, channels-last npz arrays; each bad input in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Sampler, TensorDataset

from pyro_vae.cli import main
from pyro_vae.data import DataConfig, load_dataset
from pyro_vae.data.npz import channels_first
from pyro_vae.data.streaming import batches, in_memory
from pyro_vae.inference import TrainConfig, fit
from pyro_vae.inference.evaluate import evaluate_per_example, log_likelihood
from pyro_vae.models import CVAE, VAE, VAEConfig

QUIET = dict(epochs=2, batch_size=32, progress=False, device="cpu", dtype="float64")


@pytest.fixture(scope="module")
def binary_digits():
    data = load_dataset(DataConfig("digits", binarize="static"))
    return data.x_train[:160].double(), data.y_train[:160]


def _trained(data, model_cls=VAE, **train):
    torch.manual_seed(0)
    model = model_cls(64, VAEConfig(latent_dim=2, hidden_dims=(16,)), num_classes=10)
    result = fit(model, data, TrainConfig(**{**QUIET, **train}))
    return torch.cat([p.detach().flatten() for p in model.parameters()]), result


# ------------------------------------------------------------------ training from anything


def test_tensor_pair_and_tensordataset_train_exactly_as_a_dataset(binary_digits):
    x, y = binary_digits
    reference, result = _trained(in_memory(x.reshape(-1, 1, 8, 8)))
    for data in (x, x.reshape(-1, 1, 8, 8), (x, None), TensorDataset(x)):
        params, _ = _trained(data)
        assert torch.equal(params, reference)
    assert [set(r) for r in result.history] == [{"epoch", "train_elbo", "train_reconstruction", "train_kl", "lr",
                                                 "grad_norm"}] * 2
    with_labels, _ = _trained((x, y), model_cls=CVAE)
    assert torch.equal(with_labels, _trained(TensorDataset(x, y), model_cls=CVAE)[0])


class _InMemoryOrder(Sampler):
    """Batches in the order the in-memory path draws them (one randperm of the global RNG)."""

    def __init__(self, n, batch_size):
        self.n, self.batch_size = n, batch_size

    def __iter__(self):
        order = torch.randperm(self.n)
        return iter([order[s:s + self.batch_size].tolist() for s in range(0, self.n, self.batch_size)])

    def __len__(self):
        return -(-self.n // self.batch_size)


def test_a_dataloader_with_the_same_batches_gives_the_same_parameters(binary_digits):
    x, _ = binary_digits
    reference, _ = _trained(x)
    # A generator of its own keeps the loader's base-seed draw off the global stream.
    loader = DataLoader(TensorDataset(x), batch_sampler=_InMemoryOrder(len(x), 32),
                        generator=torch.Generator().manual_seed(5))
    streamed, result = _trained(loader)
    assert torch.allclose(streamed, reference, rtol=0, atol=1e-12)
    assert len(result.history) == 2


def test_worker_processes_change_nothing(binary_digits):
    x, y = binary_digits

    def loader(workers):
        return DataLoader(TensorDataset(x.reshape(-1, 1, 8, 8), y), batch_size=40, shuffle=True,
                          num_workers=workers)

    one, _ = _trained(loader(0), model_cls=CVAE)
    two, _ = _trained(loader(2), model_cls=CVAE)
    assert torch.equal(one, two)
    assert not torch.equal(one, _trained(loader(0), model_cls=CVAE, seed=1)[0])


class _Images(torch.utils.data.Dataset):
    """A map-style dataset yielding (image (1, 8, 8), label), as torchvision datasets do."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i].reshape(1, 8, 8).float(), int(self.y[i])


def test_a_torch_dataset_is_streamed_and_learns(binary_digits):
    x, y = binary_digits
    _, result = _trained(_Images(x, y), epochs=6)
    curve = [r["train_elbo"] for r in result.history]
    assert curve[-1] > curve[0] + 1  # it learns


@pytest.mark.parametrize("data,match", [
    (lambda x, y: DataLoader(TensorDataset(x[:, :32]), batch_size=8), "epoch 1, batch 1: x has 32 values"),
    (lambda x, y: DataLoader(TensorDataset(x * 0.5), batch_size=8), "bernoulli likelihood needs binary"),
    (lambda x, y: DataLoader([{"x": x[0]}] * 4, batch_size=2), "a dict; the loader must yield x or"),
    (lambda x, y: DataLoader(TensorDataset(x, y, y), batch_size=8), "must yield x or \\(x, y\\), got 3"),
    (lambda x, y: DataLoader(TensorDataset(x, y.double()), batch_size=8), "labels must be an integer"),
    (lambda x, y: DataLoader(TensorDataset(x[:0]), batch_size=8), "yielded no batch in epoch 1"),
    (lambda x, y: x[:0], "holds no examples"),
    (lambda x, y: (x, y[:3]), "labels must have shape \\(160,\\)"),
    (lambda x, y: x.numpy(), "data must be a pyro_vae.data.DataSplits .* got ndarray"),
])
def test_bad_training_data_is_one_line(binary_digits, data, match):
    x, y = binary_digits
    with pytest.raises((ValueError, TypeError), match=match) as err:
        _trained(data(x, y))
    assert "\n" not in str(err.value)


def test_streamed_data_cannot_watch_a_validation_split(binary_digits):
    with pytest.raises(ValueError, match="patience 2 needs a validation split"):
        _trained(DataLoader(TensorDataset(binary_digits[0]), batch_size=8), patience=2)


# ------------------------------------------------------------------ evaluation from anything


def test_evaluation_streams_loaders_and_matches_the_tensor_path(binary_digits):
    x, y = binary_digits
    model = VAE(64, VAEConfig(latent_dim=2, hidden_dims=(16,))).double()
    torch.manual_seed(3)
    direct = log_likelihood(model, x, num_samples=7, batch_size=40)
    torch.manual_seed(3)
    loader = DataLoader(TensorDataset(x.reshape(-1, 1, 8, 8)), batch_size=40,
                        generator=torch.Generator().manual_seed(0))
    streamed = log_likelihood(model, loader, num_samples=7, batch_size=40)
    assert torch.equal(direct.per_example, streamed.per_example)
    summary, per_example = evaluate_per_example(model, _Images(x, y), num_samples=5, batch_size=20)
    assert summary["num_examples"] == 160 and per_example["elbo"].shape == (160,)
    assert summary["elbo"] == pytest.approx(per_example["elbo"].mean().item())
    assert summary["log_likelihood"] == pytest.approx(per_example["log_likelihood"].mean().item())
    with pytest.raises(ValueError, match="y must be None when x is a torch Dataset"):
        log_likelihood(model, loader, y, num_samples=2)


def test_batches_flattens_and_keeps_order():
    x = torch.arange(30.0).reshape(5, 1, 2, 3)
    got = list(batches((x, torch.arange(5)), batch_size=2))
    assert [tuple(b.shape) for b, _ in got] == [(2, 6), (2, 6), (1, 6)]
    assert torch.equal(torch.cat([b for b, _ in got]), x.reshape(5, 6))
    assert torch.equal(torch.cat([y for _, y in got]), torch.arange(5))


# ------------------------------------------------------------------ image folders


def _write_images(root, shape, classes=("a", "b"), per_class=6, mode=None, seed=0, prefix=""):
    rng = np.random.default_rng(seed)
    for label, name in enumerate(classes):
        folder = root / name if name else root
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, shape, dtype=np.uint8)
            Image.fromarray(pixels, mode=mode).save(folder / f"{prefix}{label}-{i}.png")


def test_folder_of_grey_images_with_classes(tmp_path):
    _write_images(tmp_path, (5, 7))
    data = load_dataset(DataConfig(f"folder:{tmp_path}", binarize="none", test_fraction=0.25))
    assert data.image_shape == (1, 5, 7) and data.num_classes == 2
    assert data.x_train.shape[0] + data.x_test.shape[0] == 12
    # the pixel values are the files' values / 255
    first = np.asarray(Image.open(sorted((tmp_path / "a").iterdir())[0]), dtype=np.float32) / 255
    all_rows = torch.cat([data.x_train, data.x_test])
    assert any(torch.allclose(row, torch.from_numpy(first).reshape(-1)) for row in all_rows)


def test_folder_of_colour_images_keeps_channels_in_order(tmp_path):
    pixels = np.zeros((4, 6, 3), dtype=np.uint8)
    pixels[..., 0] = 255  # pure red
    for i in range(5):
        Image.fromarray(pixels).save(tmp_path / f"{i}.png")
    data = load_dataset(DataConfig(f"folder:{tmp_path}", binarize="none"))
    assert data.image_shape == (3, 4, 6) and data.num_classes is None and data.y_train is None
    image = data.x_test[0].reshape(3, 4, 6)
    assert torch.all(image[0] == 1) and torch.all(image[1:] == 0)
    grey = load_dataset(DataConfig(f"folder:{tmp_path}", binarize="none", channels=1))
    assert grey.image_shape == (1, 4, 6)


def test_folder_resize_and_train_test_layout(tmp_path):
    _write_images(tmp_path / "train", (10, 10, 3), per_class=4)
    _write_images(tmp_path / "test", (12, 9, 3), per_class=2, seed=1)
    with pytest.raises(ValueError, match="test images are \\(3, 12, 9\\).*--image-size"):
        load_dataset(DataConfig(f"folder:{tmp_path}", binarize="none"))
    data = load_dataset(DataConfig(f"folder:{tmp_path}", binarize="none", image_size=(8,)))
    assert data.image_shape == (3, 8, 8)
    assert data.x_train.shape[0] == 8 and data.x_test.shape[0] == 4  # the folders' own split
    assert data.y_test.tolist() == [0, 0, 1, 1]


@pytest.mark.parametrize("build,match", [
    (lambda root: None, "no images found"),
    (lambda root: (root / "a").mkdir(), "class folder without images"),
    (lambda root: [_write_images(root, (4, 4), classes=("",), per_class=1),
                   _write_images(root, (5, 4), classes=("",), per_class=1, seed=3, prefix="z")],
     "images differ in size: .* is 4x4 \\(HxW\\) but .* is 5x4; give --image-size"),
    (lambda root: [_write_images(root, (4, 4), classes=("",), per_class=2),
                   (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")],
     "broken.png: not a readable image"),
    (lambda root: [_write_images(root, (4, 4), classes=("",), per_class=2),
                   (root / "cut.png").write_bytes((root / "0-0.png").read_bytes()[:60])],
     "cut.png: not a readable image"),
    (lambda root: [_write_images(root, (4, 4), classes=("a",), per_class=2),
                   _write_images(root, (4, 4), classes=("",), per_class=1)],
     "holds both images .* and class folders"),
])
def test_bad_folders_are_one_line(tmp_path, build, match):
    build(tmp_path)
    with pytest.raises(ValueError, match=match) as err:
        load_dataset(DataConfig(f"folder:{tmp_path}", binarize="none"))
    assert "\n" not in str(err.value)


def test_folder_options_apply_to_folders_only():
    with pytest.raises(ValueError, match="image_size applies to folder: data sets, not 'digits'"):
        DataConfig("digits", image_size=(8, 8))
    with pytest.raises(ValueError, match=r"channels must be 1 \(grey\) or 3 \(RGB\), got 2"):
        DataConfig("folder:x", channels=2)
    with pytest.raises(ValueError, match="folder not found"):
        load_dataset(DataConfig("folder:/nonexistent/images"))


def test_cli_trains_a_conv_vae_on_a_colour_folder(tmp_path):
    _write_images(tmp_path / "images", (6, 6, 3), per_class=8)
    out = tmp_path / "run"
    assert main(["train", "--dataset", f"folder:{tmp_path / 'images'}", "--image-size", "4",
                 "--channels", "3", "--arch", "conv", "--conv-channels", "4,8",
                 "--epochs", "1", "--latent-dim", "2", "--hidden-dims", "8",
                 "--eval-samples", "2", "--out", str(out), "--no-progress"]) == 0
    data = json.loads((out / "config.json").read_text())["data"]
    assert data["image_size"] == [4, 4] and data["channels"] == 3
    assert data["name"] == f"folder:{tmp_path / 'images'}"
    assert json.loads((out / "config.json").read_text())["data_spec"]["image_shape"] == [3, 4, 4]
    assert main(["sample", str(out), "--n", "4", "--out", str(tmp_path / "s.png")]) == 0


def test_cli_refuses_a_bad_folder_in_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["train", "--dataset", f"folder:{tmp_path / 'empty'}", "--epochs", "1",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no images found" in err and len(err.splitlines()) == 1


# ------------------------------------------------------------------ npz layouts


def test_channels_last_npz_is_read_as_channels_first(tmp_path):
    rng = np.random.default_rng(0)
    last = rng.integers(0, 256, (6, 5, 4, 3), dtype=np.uint8)
    np.savez(tmp_path / "last.npz", x=last)
    np.savez(tmp_path / "first.npz", x=last.transpose(0, 3, 1, 2))
    a = load_dataset(DataConfig(f"npz:{tmp_path / 'last.npz'}", binarize="none"))
    b = load_dataset(DataConfig(f"npz:{tmp_path / 'first.npz'}", binarize="none"))
    assert a.image_shape == b.image_shape == (3, 5, 4)
    assert torch.equal(a.x_test, b.x_test) and torch.equal(a.x_train, b.x_train)


@pytest.mark.parametrize("shape,match", [
    ((2, 3, 5, 3), "ambiguous, both axis 1 and axis 3"),
    ((2, 1, 5, 1), "ambiguous"),
    ((2, 4, 5, 4), "no channel axis of size 1 \\(grey\\) or 3 \\(RGB\\)"),
])
def test_ambiguous_or_channel_less_arrays_are_refused(shape, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        channels_first(np.zeros(shape), "x")
    np.savez(tmp_path / "a.npz", x=np.zeros(shape, np.uint8))
    with pytest.raises(ValueError, match=match):
        load_dataset(DataConfig(f"npz:{tmp_path / 'a.npz'}", binarize="none"))


def test_the_old_name_dataset_still_works_and_warns():
    """pyro-vae's data class was called Dataset, like torch's; the old name is an alias that warns."""
    import pyro_vae  # noqa: PLC0415
    import pyro_vae.data  # noqa: PLC0415
    import pyro_vae.data.dataset  # noqa: PLC0415

    for module in (pyro_vae, pyro_vae.data, pyro_vae.data.dataset):
        with pytest.warns(DeprecationWarning, match="now called DataSplits"):
            assert module.Dataset is pyro_vae.DataSplits
        with pytest.raises(AttributeError, match="has no attribute 'Datasets'"):
            module.Datasets  # noqa: B018
    assert "Dataset" not in pyro_vae.__all__ and "DataSplits" in pyro_vae.data.__all__


# --------------------------------------------------------------------------- labels already on a device


def _labelled_loader(bad_batch: int | None, value: int = 5):
    """16 items of 16 pixels, labels 0..2, batches of 4 in order; batch ``bad_batch`` (1-based)
    holds one label ``value``."""
    x = torch.bernoulli(torch.full((16, 16), 0.3), generator=torch.Generator().manual_seed(0))
    y = torch.arange(16) % 3
    if bad_batch is not None:
        y[4 * (bad_batch - 1) + 1] = value
    return DataLoader(TensorDataset(x, y), batch_size=4)  # a DataLoader: streamed


def _cvae():
    torch.manual_seed(0)
    return CVAE(16, VAEConfig(latent_dim=2, hidden_dims=(8,)), num_classes=3)


@pytest.fixture
def labels_on_device(monkeypatch):
    """Treat every label tensor as if it lived on a GPU: the check waits for the epoch's end."""
    monkeypatch.setattr("pyro_vae.data.streaming._labels_on_device", lambda y: True)


@pytest.mark.parametrize(("value", "seen"), [(5, "[1, 5]"), (-1, "[-1, 2]")])  # batch 3 is [2, value, 1, 2]
def test_device_labels_out_of_range_are_reported_at_the_epochs_end_naming_the_batch(labels_on_device, value, seen):
    # Without the clamp the bad label would reach one_hot mid-epoch (a RuntimeError on the CPU,
    # a device-side assert on a GPU); with it the epoch ends and one line names the batch.
    with pytest.raises(ValueError) as caught:
        fit(_cvae(), _labelled_loader(bad_batch=3, value=value), TrainConfig(epochs=1, batch_size=4, progress=False))
    assert str(caught.value) == f"epoch 1, batch 3: labels must lie in [0, 2], got values in {seen}"


def test_device_labels_in_the_first_batch_are_checked_at_once(labels_on_device):
    with pytest.raises(ValueError, match=r"batch 1 of the training data"):
        fit(_cvae(), _labelled_loader(bad_batch=1), TrainConfig(epochs=1, batch_size=4, progress=False))


def test_device_labels_in_range_train_exactly_as_host_labels(monkeypatch):
    config = TrainConfig(epochs=2, batch_size=4, progress=False)
    host = _cvae()
    fit(host, _labelled_loader(bad_batch=None), config)
    monkeypatch.setattr("pyro_vae.data.streaming._labels_on_device", lambda y: True)
    device = _cvae()
    fit(device, _labelled_loader(bad_batch=None), config)
    for (name, a), b in zip(host.state_dict().items(), device.state_dict().values()):
        assert torch.equal(a, b), name
