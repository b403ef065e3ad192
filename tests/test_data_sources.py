"""File-based data sources: IDX (MNIST, Fashion-MNIST), Frey Face .mat, npz:PATH, and downloads."""

import dataclasses
import gzip
import struct
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from pyro_vae.cli import main
from pyro_vae.data import DataConfig, load_dataset
from pyro_vae.data import idx as idx_source
from pyro_vae.data.idx import read_idx

IDX_CODES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype(">i2"): 0x0B, np.dtype(">i4"): 0x0C,
             np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}
SYSTEM_FASHION = Path("/usr/share/datasets/fashion-mnist")


def write_idx(path: Path, array: np.ndarray, gz: bool) -> Path:
    """An IDX file written by hand: 0, 0, type code, ndim, big-endian sizes, big-endian values."""
    array = np.asarray(array)
    big = array.astype(array.dtype.newbyteorder(">")) if array.dtype.itemsize > 1 else array
    payload = struct.pack(">BBBB", 0, 0, IDX_CODES[big.dtype], array.ndim)
    payload += struct.pack(f">{array.ndim}I", *array.shape) + big.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        payload = gzip.compress(payload)
    path.write_bytes(payload)
    return path


def make_idx_set(directory: Path, gz: bool = True, n_train=12, n_test=5, h=4, w=3, seed=0,
                 dotted=False):
    """Four tiny MNIST-style files in ``directory``; returns the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, h, w), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, h, w), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for stem, array in arrays.items():
        write_idx(directory / (stem.replace("-idx", ".idx") if dotted else stem), array, gz)
    return arrays


def rows(x):
    """Examples as a sorted list of tuples (order-free comparison of splits)."""
    return sorted(map(tuple, np.asarray(x).tolist()))


# --------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_reads_idx_files_with_the_official_test_split(tmp_path, gz):
    arrays = make_idx_set(tmp_path, gz=gz)
    data = load_dataset(DataConfig(name="mnist", data_dir=str(tmp_path), binarize="none"))
    assert data.image_shape == (1, 4, 3) and data.num_classes == 10 and data.data_dim == 12
    # The test set is the t10k files, in file order, scaled to [0, 1].
    expected_test = arrays["t10k-images-idx3-ubyte"].reshape(5, 12).astype(np.float32) / 255
    np.testing.assert_array_equal(data.x_test.numpy(), expected_test)
    np.testing.assert_array_equal(data.y_test.numpy(), arrays["t10k-labels-idx1-ubyte"])
    # The training set is the train files, shuffled, with each label still beside its image.
    train = arrays["train-images-idx3-ubyte"].reshape(12, 12).astype(np.float32) / 255
    pairs = np.column_stack([train, arrays["train-labels-idx1-ubyte"]])
    got = np.column_stack([data.x_train.numpy(), data.y_train.numpy()])
    assert rows(got) == rows(pairs)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64


def test_fashion_mnist_in_torchvision_folder_with_dotted_names(tmp_path):
    arrays = make_idx_set(tmp_path / "FashionMNIST" / "raw", gz=False, dotted=True, seed=3)
    data = load_dataset(DataConfig(name="fashion-mnist", data_dir=str(tmp_path), binarize="none",
                                   val_fraction=0.25, subset=4))
    assert data.x_val.shape == (3, 12) and data.x_train.shape == (4, 12) and data.x_test.shape == (5, 12)
    np.testing.assert_array_equal(data.y_test.numpy(), arrays["t10k-labels-idx1-ubyte"])


def test_binarized_test_set_is_binary_and_identical_across_loads(tmp_path):
    make_idx_set(tmp_path, n_train=40, n_test=30)
    config = DataConfig(name="mnist", data_dir=str(tmp_path), binarize="dynamic", split_seed=5)
    first, second = load_dataset(config), load_dataset(config)
    assert set(first.x_test.unique().tolist()) == {0.0, 1.0}
    torch.testing.assert_close(first.x_test, second.x_test, rtol=0, atol=0)
    torch.testing.assert_close(first.x_train, second.x_train, rtol=0, atol=0)  # same split
    assert not torch.equal(first.x_train, torch.bernoulli(first.x_train))  # grey levels kept for dynamic
    other = load_dataset(dataclasses.replace(config, split_seed=6))
    assert not torch.equal(other.x_test, first.x_test)  # another one-off draw
    static = load_dataset(dataclasses.replace(config, binarize="static"))
    assert set(static.x_train.unique().tolist()) == {0.0, 1.0}


def test_read_idx_handles_every_idx_type(tmp_path):
    for dtype in (">i2", ">i4", ">f4", ">f8", "i1"):
        array = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
        got = read_idx(write_idx(tmp_path / f"a-{dtype[-2:]}", array, gz=dtype == ">f4"))
        np.testing.assert_array_equal(got, array)
        assert got.dtype.isnative and got.shape == (2, 3, 4)


def test_corrupt_idx_files_are_reported_by_name(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x00\x00\x08")
    with pytest.raises(ValueError, match=r"bad: not an IDX file \(magic number 000008"):
        read_idx(bad)
    bad.write_bytes(b"PK\x03\x04 whatever")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(bad)
    bad.write_bytes(struct.pack(">BBBBII", 0, 0, 8, 2, 3, 3) + bytes(8))  # 8 of 9 bytes
    with pytest.raises(ValueError, match=r"announces shape \(3, 3\) \(9 bytes of values\) but the file holds 8"):
        read_idx(bad)
    bad.write_bytes(struct.pack(">BBBB", 0, 0, 8, 3) + bytes(5))
    with pytest.raises(ValueError, match="IDX header truncated"):
        read_idx(bad)
    bad.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x05" + bytes(5))[:-6])
    with pytest.raises(ValueError, match="bad: corrupt gzip file"):
        read_idx(bad)

    # Through the loader: a broken image file in an otherwise complete set.
    make_idx_set(tmp_path / "set")
    (tmp_path / "set" / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"garbage"))
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.gz: not an IDX file"):
        load_dataset(DataConfig(name="mnist", data_dir=str(tmp_path / "set")))


def test_inconsistent_idx_contents_are_refused(tmp_path):
    arrays = make_idx_set(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", arrays["train-labels-idx1-ubyte"][:11], gz=True)
    with pytest.raises(ValueError, match=r"holds 12 images but .*train-labels-idx1-ubyte.gz holds 11 labels"):
        load_dataset(DataConfig(name="mnist", data_dir=str(tmp_path)))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.full(12, 10, np.uint8), gz=True)
    with pytest.raises(ValueError, match=r"labels must lie in 0..9, found 10"):
        load_dataset(DataConfig(name="mnist", data_dir=str(tmp_path)))
    write_idx(tmp_path / "train-labels-idx1-ubyte", arrays["train-labels-idx1-ubyte"], gz=True)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((5, 4, 4), np.uint8), gz=True)
    with pytest.raises(ValueError, match=r"training images are \(4, 3\) but test images are \(4, 4\)"):
        load_dataset(DataConfig(name="mnist", data_dir=str(tmp_path)))
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((5, 12), ">i4"), gz=True)
    with pytest.raises(ValueError, match=r"expected uint8 images of shape \(n, H, W\), got int32 \(5, 12\)"):
        load_dataset(DataConfig(name="mnist", data_dir=str(tmp_path)))


def test_missing_mnist_says_where_it_looked_and_how_to_get_it(tmp_path):
    with pytest.raises(ValueError, match=rf"MNIST not found: looked for train-images-idx3-ubyte\[.gz\].* in "
                                         rf"{tmp_path}, {tmp_path}/MNIST/raw .*--download.*--data-dir DIR"):
        load_dataset(DataConfig(name="mnist", data_dir=str(tmp_path)))
    make_idx_set(tmp_path)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (tmp_path / name).unlink()
    with pytest.raises(ValueError, match=rf"{tmp_path} lacks t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte"):
        load_dataset(DataConfig(name="mnist", data_dir=str(tmp_path)))


def test_missing_fashion_mnist_names_the_apt_package(tmp_path, monkeypatch):
    nowhere = tmp_path / "system"
    monkeypatch.setattr(idx_source, "FASHION_MNIST",
                        dataclasses.replace(idx_source.FASHION_MNIST, system_dirs=(str(nowhere),)))
    with pytest.raises(ValueError, match=rf"Fashion-MNIST not found.* in {tmp_path}, {tmp_path}/FashionMNIST/raw, "
                                         rf"{nowhere} .*apt-get install dataset-fashion-mnist"):
        load_dataset(DataConfig(name="fashion-mnist", data_dir=str(tmp_path)))


def test_default_data_root_is_in_the_home_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    make_idx_set(tmp_path / ".cache" / "pyro-vae" / "MNIST" / "raw")
    assert load_dataset(DataConfig(name="mnist")).x_test.shape == (5, 12)


# --------------------------------------------------------------------------- download (no network)


class FakeTorchvisionDataset:
    """Stands in for torchvision.datasets.MNIST/FashionMNIST: 'downloads' tiny files."""

    calls = []
    fail = None

    def __init__(self, root, train=True, download=False):
        type(self).calls.append((self.__class__.__name__, root, train, download))
        if self.fail:
            raise self.fail
        make_idx_set(Path(root) / self.folder / "raw", seed=7)


class MNIST(FakeTorchvisionDataset):
    folder = "MNIST"


class FashionMNIST(FakeTorchvisionDataset):
    folder = "FashionMNIST"


@pytest.fixture
def fake_torchvision(monkeypatch):
    import torchvision.datasets

    FakeTorchvisionDataset.calls = []
    FakeTorchvisionDataset.fail = None
    monkeypatch.setattr(torchvision.datasets, "MNIST", MNIST)
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FashionMNIST)
    return FakeTorchvisionDataset


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_download_goes_through_torchvision_into_the_data_dir(tmp_path, fake_torchvision, monkeypatch, name, folder):
    monkeypatch.setattr(idx_source, "FASHION_MNIST",  # hide this machine's system copy
                        dataclasses.replace(idx_source.FASHION_MNIST, system_dirs=()))
    data = load_dataset(DataConfig(name=name, data_dir=str(tmp_path), download=True, binarize="none"))
    assert fake_torchvision.calls == [(folder, str(tmp_path), False, True)]
    assert data.x_test.shape == (5, 12)
    # Once there, the files are found without downloading again.
    load_dataset(DataConfig(name=name, data_dir=str(tmp_path), download=True))
    assert len(fake_torchvision.calls) == 1


def test_download_defaults_to_the_home_cache_and_reports_failures(tmp_path, fake_torchvision, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    fake_torchvision.fail = urllib.error.URLError("no network")
    with pytest.raises(ValueError, match=rf"downloading MNIST into {tmp_path}/.cache/pyro-vae failed .*no network"):
        load_dataset(DataConfig(name="mnist", download=True))
    fake_torchvision.fail = None
    assert load_dataset(DataConfig(name="mnist", download=True)).x_train.shape == (12, 12)
    assert (tmp_path / ".cache" / "pyro-vae" / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").is_file()


def test_download_without_torchvision_says_so(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)  # import fails
    with pytest.raises(ValueError, match=r"downloading MNIST needs torchvision \(pip install torchvision\)"):
        load_dataset(DataConfig(name="mnist", data_dir=str(tmp_path), download=True))


# --------------------------------------------------------------------------- real Fashion-MNIST


@pytest.mark.skipif(not SYSTEM_FASHION.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_from_the_debian_package(tmp_path):
    data = load_dataset(DataConfig(name="fashion-mnist", data_dir=str(tmp_path), subset=500, binarize="static"))
    assert data.image_shape == (1, 28, 28) and data.num_classes == 10
    assert data.x_train.shape == (500, 784) and data.x_test.shape == (10000, 784)
    assert set(data.x_test.unique().tolist()) == {0.0, 1.0}
    assert torch.bincount(data.y_test).tolist() == [1000] * 10  # the official balanced test set
    assert 0.2 < data.x_test.mean().item() < 0.4


# --------------------------------------------------------------------------- Frey Face


def frey_images(n=7, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 20), dtype=np.uint8)


def test_frey_faces_are_read_as_28_by_20_images(tmp_path):
    images = frey_images()
    scipy.io.savemat(tmp_path / "frey_rawface.mat", {"ff": images.reshape(7, 560).T})  # one image per column
    data = load_dataset(DataConfig(name="frey", data_dir=str(tmp_path), binarize="none"))
    assert data.image_shape == (1, 28, 20) and data.num_classes is None
    assert data.y_train is None and data.y_test is None
    assert data.x_train.shape == (6, 560) and data.x_test.shape == (1, 560)  # test_fraction 0.2 of 7
    every = torch.cat([data.x_train, data.x_test]).numpy()
    assert rows(every) == rows(images.reshape(7, 560).astype(np.float32) / 255)
    # Row-major 28 x 20: the first image's first row is the first 20 values of its column.
    first = images.reshape(7, 560).astype(np.float32) / 255
    assert any(np.array_equal(r.reshape(28, 20)[0], first[i, :20]) for r in every for i in range(7))


def test_frey_errors(tmp_path):
    with pytest.raises(ValueError, match=rf"Frey Face not found: looked for frey_rawface.mat in {tmp_path}.*"
                                         r"Sam Roweis' data page.*--data-dir FOLDER"):
        load_dataset(DataConfig(name="frey", data_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="--download does not apply"):
        load_dataset(DataConfig(name="frey", data_dir=str(tmp_path), download=True))
    path = tmp_path / "frey_rawface.mat"
    scipy.io.savemat(path, {"faces": np.zeros((560, 3), np.uint8)})
    with pytest.raises(ValueError, match=r"no variable 'ff' \(the Frey Face images\); found: faces"):
        load_dataset(DataConfig(name="frey", data_dir=str(tmp_path)))
    scipy.io.savemat(path, {"ff": np.zeros((28, 20), np.uint8)})
    with pytest.raises(ValueError, match=r"'ff' must have shape \(560, n\).*got \(28, 20\)"):
        load_dataset(DataConfig(name="frey", data_dir=str(tmp_path)))
    scipy.io.savemat(path, {"ff": np.full((560, 3), 0.5)})
    with pytest.raises(ValueError, match=r"'ff' must hold grey levels 0..255 \(uint8\), got float64"):
        load_dataset(DataConfig(name="frey", data_dir=str(tmp_path)))
    path.write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(ValueError, match="frey_rawface.mat: not a readable MATLAB file"):
        load_dataset(DataConfig(name="frey", data_dir=str(tmp_path)))


# --------------------------------------------------------------------------- npz:PATH


def test_npz_flat_uint8_with_labels(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (10, 16), dtype=np.uint8)
    y = np.array([0, 1, 2, 4, 0, 1, 2, 4, 0, 1])
    np.savez(tmp_path / "a.npz", x=x, y=y)
    data = load_dataset(DataConfig(name=f"npz:{tmp_path / 'a.npz'}", binarize="none"))
    assert data.image_shape == (1, 4, 4) and data.num_classes == 5  # max label + 1
    got = np.column_stack([torch.cat([data.x_train, data.x_test]).numpy(),
                           torch.cat([data.y_train, data.y_test]).numpy()])
    assert rows(got) == rows(np.column_stack([x.astype(np.float32) / 255, y]))
    # A width that is not a square is shown as one row.
    np.savez(tmp_path / "b.npz", x=x[:, :15])
    assert load_dataset(DataConfig(name=f"npz:{tmp_path / 'b.npz'}")).image_shape == (1, 1, 15)


def test_npz_image_arrays_floats_bools_and_a_fixed_test_split(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(6, 3, 2, 5))  # (n, C, H, W) floats in [0, 1]
    x_test = rng.uniform(size=(2, 3, 2, 5))
    np.savez(tmp_path / "c.npz", x=x, y=np.arange(6), x_test=x_test, y_test=np.array([7, 0]))
    data = load_dataset(DataConfig(name=f"npz:{tmp_path / 'c.npz'}", binarize="none"))
    assert data.image_shape == (3, 2, 5) and data.num_classes == 8
    np.testing.assert_allclose(data.x_test.numpy(), x_test.reshape(2, 30).astype(np.float32))
    assert data.y_test.tolist() == [7, 0] and data.x_train.shape == (6, 30)
    np.savez(tmp_path / "d.npz", x=rng.uniform(size=(5, 3, 4)) > 0.5)  # (n, H, W) bools
    data = load_dataset(DataConfig(name="npz:d.npz", data_dir=str(tmp_path), binarize="none"))  # relative
    assert data.image_shape == (1, 3, 4) and set(data.x_train.unique().tolist()) <= {0.0, 1.0}


U8 = np.zeros((4, 4), np.uint8)  # a valid x


@pytest.mark.parametrize("arrays,message", [
    ({"images": U8}, r"no array 'x' \(the images\); found: images"),
    ({"x": np.zeros((4, 1, 1, 2, 2), np.uint8)},
     r"x must have shape \(n, D\), \(n, H, W\) or \(n, C, H, W\), got \(4, 1, 1, 2, 2\)"),
    ({"x": np.zeros((0, 4), np.uint8)}, r"x is empty \(shape \(0, 4\)\)"),
    ({"x": U8, "y": np.zeros(3, np.int64)}, r"y must have shape \(4,\), one label per example, got \(3,\)"),
    ({"x": U8, "y": np.array([0, 1, -2, 2])},
     r"y labels must be >= 0 \(classes 0..K-1\) or -1 \(unlabelled\), found -2"),
    ({"x": U8, "y": np.full(4, -1)}, r"y marks every example unlabelled \(-1\)"),
    ({"x": U8, "y": np.zeros(4)}, r"y must hold integer class labels, got dtype float64"),
    ({"x": np.full((4, 4), 2.0)}, r"float x must lie in \[0, 1\], got range \[2, 2\]"),
    ({"x": np.full((4, 4), np.nan)}, "x contains NaN or Inf values"),
    ({"x": np.zeros((4, 4), np.int16)},
     r"x has dtype int16; store uint8 \(0..255, scaled by 1/255\), bool, or floats"),
    ({"x": U8, "x_test": np.zeros((2, 5), np.uint8)}, r"x_test images are \(1, 1, 5\) but x images are \(1, 2, 2\)"),
    ({"x": U8, "y": np.zeros(4, int), "x_test": np.zeros((2, 4), np.uint8)}, "give labels for both splits"),
    ({"x": U8, "y_test": np.zeros(2, int)}, "has 'y_test' but no 'x_test'"),
    ({"x": np.array([[None, 1]] * 4, dtype=object)}, r"cannot read 'x' without unpickling"),
])
def test_npz_errors(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=message):
        load_dataset(DataConfig(name=f"npz:{tmp_path / 'bad.npz'}"))


def test_npz_file_errors(tmp_path):
    with pytest.raises(ValueError, match=rf"dataset 'npz:{tmp_path}/none.npz': file not found "
                                         rf"\(looked at {tmp_path}/none.npz\)"):
        load_dataset(DataConfig(name=f"npz:{tmp_path}/none.npz"))
    with pytest.raises(ValueError, match=rf"file not found \(looked at none.npz and {tmp_path}/none.npz\)"):
        load_dataset(DataConfig(name="npz:none.npz", data_dir=str(tmp_path)))
    with pytest.raises(ValueError, match=r"dataset 'npz:' needs a path"):
        load_dataset(DataConfig(name="npz:"))
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match="junk.npz: not a readable .npz archive"):
        load_dataset(DataConfig(name=f"npz:{tmp_path / 'junk.npz'}"))
    np.save(tmp_path / "one.npy", np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"a single .npy array, not an .npz archive"):
        load_dataset(DataConfig(name=f"npz:{tmp_path / 'one.npy'}"))


# --------------------------------------------------------------------------- CLI


def test_cli_reports_a_missing_data_set_in_one_line(tmp_path, capsys):
    code = main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path), "--out", str(tmp_path / "run"),
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("pyro-vae: error: MNIST not found") and err.count("\n") == 1


def test_cli_trains_on_an_npz_file(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "toy.npz", x=rng.integers(0, 256, (40, 3, 3), dtype=np.uint8), y=np.arange(40) % 2)
    code = main(["train", "--dataset", f"npz:{tmp_path / 'toy.npz'}", "--out", str(tmp_path / "run"),
                 "--epochs", "1", "--hidden-dims", "8", "--latent-dim", "2", "--eval-samples", "2",
                 "--likelihood", "continuous-bernoulli", "--binarize", "none", "--no-progress", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "run").is_dir()


def test_subset_and_splits_hold_only_their_own_rows(tmp_path):
    """The source is read as uint8 and only the kept rows become floats: a subset's tensor
    owns a buffer of its own size (a view into the whole scaled set would keep it alive)."""
    arrays = make_idx_set(tmp_path, n_train=40, n_test=6)
    data = load_dataset(DataConfig(name="mnist", data_dir=str(tmp_path), binarize="none",
                                   subset=7, val_fraction=0.25))
    assert data.x_train.shape == (7, 12) and data.x_val.shape == (10, 12)
    for t in (data.x_train, data.x_val, data.x_test):
        assert t.untyped_storage().nbytes() == t.numel() * 4  # float32, nothing more behind it
    # Same rows as the whole set scaled first and split afterwards (the earlier pipeline).
    full = load_dataset(DataConfig(name="mnist", data_dir=str(tmp_path), binarize="none",
                                   val_fraction=0.25))
    assert torch.equal(full.x_train[:7], data.x_train) and torch.equal(full.x_val, data.x_val)
    scaled = arrays["train-images-idx3-ubyte"].reshape(40, 12).astype(np.float32) / 255
    assert set(rows(data.x_train)) <= set(rows(scaled))


def test_integer_sources_outside_their_grey_levels_are_refused():
    from pyro_vae.data.dataset import RawData, _validate_raw  # noqa: PLC0415

    raw = RawData(x=np.array([[0, 3, 17]], dtype=np.uint16), y=None, image_shape=(1, 1, 3),
                  pixel_max=16)
    with pytest.raises(ValueError, match=r"grey levels must lie in 0..16, got range \[0, 17\]"):
        _validate_raw(raw, "custom")
    _validate_raw(dataclasses.replace(raw, pixel_max=17), "custom")  # in range: accepted
