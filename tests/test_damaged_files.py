"""Every damaged file the library reads is refused with one ValueError naming it; a full disk
is one OSError naming the file, with the previous file intact.

- ``npz:PATH``: a zip member with a bad CRC, an ``.npy`` header claiming more values than the
  member holds (checked before anything is allocated), a member that is not an ``.npy`` array,
  labels that would wrap (uint64 >= 2**63) or declare absurd class counts (>= MAX_CLASSES).
- IDX and Frey Face files: truncated, corrupt, or not files at all; a MATLAB file whose element
  type code would crash ``scipy.io.loadmat`` (an unchecked table index) is refused instead.
- Checkpoints: every single flipped bit either loads the identical contents or is refused with
  ``ValueError``, never AssertionError and friends from torch's unpickler.
- Writes: ENOSPC / EDQUOT, or torch.save's "unexpected pos" for the same cause, on a
  monkeypatched writer and on a real, tiny tmpfs.
- :func:`~pyro_vae.checkpoint.validate_train_state` against what ``TrainState`` writes.
"""

from __future__ import annotations

import errno
import gzip
import io
import math
import pickletools
import random
import shutil
import struct
import subprocess
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from pyro_vae.checkpoint import (
    DiskFullError,
    atomic_write_text,
    checksum,
    load_checkpoint,
    save_checkpoint,
    validate_train_state,
)
from pyro_vae.data import DataConfig, load_dataset
from pyro_vae.data.idx import read_idx
from pyro_vae.data.npz import MAX_CLASSES, load_npz
from pyro_vae.inference.train import TrainState
from tests.test_data_sources import write_idx


def only_value_errors(load, variants, path: Path) -> tuple[int, int]:
    """Write each damaged variant to ``path`` and load it: (loaded, refused); anything but a
    ValueError naming ``path`` fails the test."""
    loaded = refused = 0
    for damaged in variants:
        path.write_bytes(bytes(damaged))
        try:
            load()
        except ValueError as err:
            assert path.name in str(err) and "\n" not in str(err), str(err)
            refused += 1
        else:
            loaded += 1
    return loaded, refused


def damaged_variants(original: bytes, count: int, seed: int):
    """Seeded damage: truncations, single bit flips and bursts of random bytes."""
    rng = random.Random(seed)
    for i in range(count):
        data = bytearray(original)
        if i % 3 == 0:
            data = data[:rng.randrange(len(data))]
        elif i % 3 == 1:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        else:
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        yield data


# --------------------------------------------------------------------------- npz:PATH


def npz_name(path: Path) -> DataConfig:
    return DataConfig(name=f"npz:{path}", binarize="none")


def npy_bytes(header: dict, payload: bytes) -> bytes:
    """An .npy member written by hand: any header, any payload."""
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, header)
    return out.getvalue() + payload


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


@pytest.mark.parametrize("compressed", [False, True], ids=["stored", "deflated"])
def test_npz_member_with_a_bad_crc_is_refused(tmp_path, compressed):
    x = np.arange(64, dtype=np.uint8).reshape(4, 16)
    path = tmp_path / "bad.npz"
    (np.savez_compressed if compressed else np.savez)(path, x=x)
    data = bytearray(path.read_bytes())
    if compressed:  # a byte of the deflate stream (after the 30-byte local header and name)
        data[30 + len("x.npy") + 20] ^= 0x10
    else:  # a pixel value: the zip's CRC is the only thing that can notice
        data[data.find(x.tobytes()) + 5] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"bad\.npz: array 'x' \(member 'x\.npy'\) cannot be read "
                                         r"\(.*\); the file is corrupt"):
        load_npz(npz_name(path))


@pytest.mark.parametrize("shape,stored,message", [
    ((10**6, 10**6), 16, r"declares shape \(1000000, 1000000\) of uint8 \(1000000000000 bytes\) "
                         r"but the member holds 16 bytes of values"),
    ((2**40, 2**40), 16, r"declares shape \(1099511627776, 1099511627776\) of uint8 \(\d+ bytes\) "
                         r"but the member holds 16 bytes of values"),
    ((4, 4), 8, r"declares shape \(4, 4\) of uint8 \(16 bytes\) but the member holds 8 bytes of values"),
    ((4, 4), 20, r"declares shape \(4, 4\) of uint8 \(16 bytes\) but the member holds 20 bytes of values"),
], ids=["huge", "beyond-int64", "truncated", "overlong"])
def test_npy_header_is_checked_against_the_stored_size_before_allocating(tmp_path, shape, stored, message):
    header = {"descr": "|u1", "fortran_order": False, "shape": shape}
    path = write_zip(tmp_path / "big.npz", {"x.npy": npy_bytes(header, bytes(stored))})
    with pytest.raises(ValueError, match=rf"big\.npz: array 'x' \(member 'x\.npy'\): its header {message}; "
                                         r"the file is truncated or corrupt"):
        load_npz(npz_name(path))


def test_npz_members_that_are_not_npy_arrays_are_refused(tmp_path):
    path = write_zip(tmp_path / "odd.npz", {"x": b"not an array at all"})
    with pytest.raises(ValueError, match=r"odd\.npz: array 'x' \(member 'x'\) is not a readable .npy array"):
        load_npz(npz_name(path))
    header = "{'descr': '|u1', 'fortran_order': False, 'shape': (4, 4), }"
    broken = np.lib.format.MAGIC_PREFIX + b"\x01\x00" + struct.pack("<H", len(header)) + header[:-9].encode()
    path = write_zip(tmp_path / "odd.npz", {"x.npy": broken + bytes(16)})
    with pytest.raises(ValueError, match=r"odd\.npz: array 'x' \(member 'x\.npy'\) is not a readable .npy array"):
        load_npz(npz_name(path))
    path = write_zip(tmp_path / "odd.npz", {"x.npy": npy_bytes({"descr": "|u1", "fortran_order": False,
                                                                "shape": (2, 2)}, bytes(4)),
                                            "x": b"again"})
    with pytest.raises(ValueError, match=r"odd\.npz: holds two members for array 'x' \('x\.npy' and 'x'\)"):
        load_npz(npz_name(path))


@pytest.mark.parametrize("key,labels,found", [
    ("y", np.array([0, 2**63 + 5, 1, 2], dtype=np.uint64), 2**63 + 5),
    ("y", np.array([0, 2**64 - 1, 1, 2], dtype=np.uint64), 2**64 - 1),
    ("y", np.array([0, 10**12, 1, 2]), 10**12),
    ("y", np.array([0, MAX_CLASSES, 1, 2], dtype=np.uint32), MAX_CLASSES),
    ("y_test", np.array([3, 2**63], dtype=np.uint64), 2**63),
])
def test_npz_labels_that_wrap_or_declare_absurd_class_counts_are_refused(tmp_path, key, labels, found):
    arrays = {"x": np.zeros((4, 4), np.uint8), "y": np.arange(4), "x_test": np.zeros((2, 4), np.uint8),
              "y_test": np.arange(2)}
    arrays[key] = labels
    np.savez(tmp_path / "labels.npz", **arrays)
    with pytest.raises(ValueError, match=rf"labels\.npz: {key} labels must be < {MAX_CLASSES} "
                                         rf"\(classes 0..K-1 with K <= MAX_CLASSES = {MAX_CLASSES}\), "
                                         rf"found {found}$"):
        load_npz(npz_name(tmp_path / "labels.npz"))
    # the largest label accepted
    arrays[key] = np.full(len(labels), MAX_CLASSES - 1, dtype=labels.dtype)
    np.savez(tmp_path / "labels.npz", **arrays)
    assert load_npz(npz_name(tmp_path / "labels.npz")).num_classes == MAX_CLASSES


@pytest.mark.parametrize("compressed", [False, True], ids=["stored", "deflated"])
def test_randomly_damaged_npz_files_are_each_one_value_error(tmp_path, compressed):
    rng = np.random.default_rng(0)
    x = np.asfortranarray(rng.integers(0, 256, (20, 4, 4), dtype=np.uint8))
    y = rng.integers(0, 3, 20).astype(">i4")  # big-endian labels
    x_test = rng.random((5, 16))
    path = tmp_path / "data.npz"
    (np.savez_compressed if compressed else np.savez)(path, x=x, y=y, x_test=x_test, y_test=np.arange(5))
    # undamaged, the reader keeps Fortran order and byte order as np.load does
    raw = load_npz(npz_name(path))
    np.testing.assert_array_equal(raw.x, x.reshape(20, 16))
    np.testing.assert_array_equal(raw.x_test, x_test.astype(np.float32))
    assert raw.y.tolist() == y.tolist() and raw.y.dtype == np.int64 and raw.num_classes == 5
    loaded, refused = only_value_errors(lambda: load_npz(npz_name(path)),
                                        damaged_variants(path.read_bytes(), 150, seed=1), path)
    assert refused > 100


# --------------------------------------------------------------------------- IDX


def test_damaged_idx_files_are_each_one_value_error(tmp_path):
    with pytest.raises(ValueError, match=rf"{tmp_path}: cannot be read \(Is a directory\)"):
        read_idx(tmp_path)
    labels = np.arange(10, dtype=np.uint8)
    good = write_idx(tmp_path / "labels-idx1-ubyte", labels, gz=True).read_bytes()
    bad = tmp_path / "bad-idx1-ubyte.gz"
    bad.write_bytes(good[:-8] + bytes([good[-8] ^ 1]) + good[-7:])  # the gzip trailer's CRC
    with pytest.raises(ValueError, match=r"bad-idx1-ubyte.gz: corrupt gzip file \(CRC check failed"):
        read_idx(bad)
    bad.write_bytes(gzip.compress(struct.pack(">BBBBI", 0, 0, 8, 1, 2**32 - 1) + labels.tobytes()))
    with pytest.raises(ValueError, match=r"announces shape \(4294967295,\) \(4294967295 bytes of values\) "
                                         r"but the file holds 10"):
        read_idx(bad)
    assert only_value_errors(lambda: read_idx(bad), damaged_variants(good, 150, seed=2), bad)[1] > 100


# --------------------------------------------------------------------------- Frey Face (.mat)


def mat5(variables: dict, order: str = "<", value_type: int | None = None) -> bytes:
    """A MATLAB 5 file written by hand: one uncompressed miMATRIX per uint8 array.
    ``value_type`` overrides the type code of the values' element (2 = miUINT8)."""
    def element(mdtype, payload):
        return struct.pack(order + "II", mdtype, len(payload)) + payload + bytes(-len(payload) % 8)

    header = b"MATLAB 5.0 MAT-file, written by hand".ljust(116) + bytes(8)
    out = header + struct.pack(order + "H", 0x0100) + (b"IM" if order == "<" else b"MI")
    for name, array in variables.items():
        body = (element(6, struct.pack(order + "II", 9, 0))  # flags: mxUINT8_CLASS
                + element(5, struct.pack(f"{order}{array.ndim}i", *array.shape))
                + element(1, name.encode())
                + element(2 if value_type is None else value_type, array.tobytes(order="F")))
        out += struct.pack(order + "II", 14, len(body)) + body
    return out


def frey(tmp_path):
    return load_dataset(DataConfig(name="frey", data_dir=str(tmp_path), binarize="none"))


@pytest.mark.parametrize("order", ["<", ">"], ids=["little-endian", "big-endian"])
def test_mat_element_type_that_crashes_scipy_is_refused(tmp_path, order):
    """Type code 0x3d02 on a numeric element makes scipy's compiled reader index past its
    table of dtypes (a bus error or segfault: scipy/scipy#25349); here it is a ValueError."""
    path = tmp_path / "frey_rawface.mat"
    ff = np.random.default_rng(0).integers(0, 256, (560, 3), dtype=np.uint8)
    # undamaged, the file reads as scipy reads it (which also checks the helper)
    data = mat5({"other": np.arange(6, dtype=np.uint8).reshape(2, 3), "ff": ff}, order)
    np.testing.assert_array_equal(scipy.io.loadmat(io.BytesIO(data))["ff"], ff)
    path.write_bytes(data)
    loaded = frey(tmp_path)
    got = torch.cat([loaded.x_train, loaded.x_val, loaded.x_test]).numpy()
    assert loaded.image_shape == (1, 28, 20)
    assert sorted(map(tuple, got.tolist())) == sorted(map(tuple, (ff.T.astype(np.float32) / 255).tolist()))

    path.write_bytes(mat5({"ff": ff}, order, value_type=0x3D02))
    with pytest.raises(ValueError, match=r"frey_rawface.mat: not a readable MATLAB file \(variable at "
                                         r"byte 128: variable 'ff' lacks its numeric values \(type 15618\)\)"):
        frey(tmp_path)
    path.write_bytes(mat5({"ff": ff}, order)[:-100])
    with pytest.raises(ValueError, match=r"element at byte 128 claims 1736 bytes but 1636 remain; "
                                         r"the file is truncated or corrupt"):
        frey(tmp_path)
    path.write_bytes(b"MATLAB 7.3 MAT-file".ljust(124) + b"\x00\x02IM")
    with pytest.raises(ValueError, match=r"a MATLAB 7.3 \(HDF5\) file, which is not supported"):
        frey(tmp_path)


def test_frey_variables_of_other_kinds_are_described(tmp_path):
    scipy.io.savemat(tmp_path / "frey_rawface.mat", {"ff": {"a": np.arange(3)}})
    with pytest.raises(ValueError, match=r"'ff' must hold grey levels 0..255 \(uint8\), got a struct array"):
        frey(tmp_path)
    scipy.io.savemat(tmp_path / "frey_rawface.mat", {"ff": np.full((560, 2), 1 + 2j)})
    with pytest.raises(ValueError, match=r"got a complex array"):
        frey(tmp_path)


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "compressed"])
def test_randomly_damaged_mat_files_are_each_one_value_error(tmp_path, compressed):
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"ff": rng.integers(0, 256, (560, 7), dtype=np.uint8),
                              "notes": "text", "s": {"a": np.arange(3)}, "d": np.eye(3)},
                     do_compression=compressed)
    path = tmp_path / "frey_rawface.mat"
    loaded, refused = only_value_errors(lambda: frey(tmp_path),
                                        damaged_variants(buffer.getvalue(), 300, seed=3), path)
    assert refused > 90  # most bytes are pixels, which a MATLAB file does not checksum


# --------------------------------------------------------------------------- checkpoints


def small_real_checkpoint(path: Path) -> dict:
    """A checkpoint as a run writes one: model weights, Adam's state after one step, the
    training state with its RNG state and history, a config string."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    state = TrainState(optimizer, epoch=1, step=3, seconds=0.25,
                       history=[{"epoch": 1, "train_elbo": -1.5, "test_elbo": -1.75}])
    save_checkpoint(path, {"model": net.state_dict(), "train_state": state.state_dict(), "config": "{}"})
    return load_checkpoint(path)


def pickle_span(data: bytes) -> tuple[int, bytes]:
    """Where the checkpoint's pickle (``data.pkl``) lies in the file, and its bytes."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        pkl = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    return data.find(pkl), pkl


def test_damaged_storage_reference_is_a_value_error(tmp_path):
    """torch's unpickler asserts that a tensor's storage reference is a tuple. One bit turns the
    reference's last item, BININT1 (K, one byte), into BININT (J, four bytes), which swallows the
    TUPLE opcode: an AssertionError ("saved_id must be a tuple") before, a ValueError now."""
    path = tmp_path / "c.pt"
    small_real_checkpoint(path)
    data = bytearray(path.read_bytes())
    start, pkl = pickle_span(bytes(data))
    ops = list(pickletools.genops(pkl))
    first_persid = next(i for i, (op, _, _) in enumerate(ops) if op.name == "BINPERSID")
    tuple_at = max(i for i in range(first_persid) if ops[i][0].name == "TUPLE")
    assert ops[tuple_at - 1][0].name == "BININT1"  # the storage's element count
    data[start + ops[tuple_at - 1][2]] ^= 0x01  # 'K' -> 'J'
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"checkpoint '{path}' is truncated or corrupt"):
        load_checkpoint(path)


def test_every_single_bit_flip_loads_identically_or_is_refused(tmp_path):
    """300 seeded single-bit flips, half of them in the pickle, half anywhere in the file:
    each load gives the original contents or one ValueError naming the file, silently."""
    original_path = tmp_path / "original.pt"
    reference = checksum(small_real_checkpoint(original_path))
    original = original_path.read_bytes()
    start, pkl = pickle_span(original)
    rng = random.Random(0)
    path = tmp_path / "flipped.pt"
    refused = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a damaged file must not make torch warn either
        for i in range(300):
            damaged = bytearray(original)
            where = start + rng.randrange(len(pkl)) if i % 2 else rng.randrange(len(original))
            damaged[where] ^= 1 << rng.randrange(8)
            path.write_bytes(bytes(damaged))
            try:
                loaded = load_checkpoint(path)
            except ValueError as err:
                assert f"checkpoint '{path}'" in str(err) and "\n" not in str(err)
                refused += 1
            else:
                assert checksum(loaded) == reference
    assert refused > 150


def test_odd_version_and_checksum_entries_are_value_errors(tmp_path):
    for payload in ({"format_version": torch.tensor([2, 2])}, {"format_version": True},
                    {"format_version": 2, "checksum": torch.zeros(2)}):
        torch.save(payload, tmp_path / "c.pt")
        with pytest.raises(ValueError, match=r"c\.pt"):
            load_checkpoint(tmp_path / "c.pt")


# --------------------------------------------------------------------------- full disks


def assert_refused_write(err: OSError, path: Path):
    assert isinstance(err, DiskFullError) and err.errno == errno.ENOSPC
    message = str(err)
    assert str(path) in message and "No space left on device (disk full)" in message
    assert "previous version of the file, if any, is intact" in message and "\n" not in message


@pytest.mark.parametrize("failure", [
    OSError(errno.ENOSPC, "No space left on device"),
    OSError(errno.EDQUOT, "Disk quota exceeded"),
    RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 832 vs 726"),
    RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed"),
], ids=["ENOSPC", "EDQUOT", "unexpected-pos", "stream-writer"])
def test_disk_full_while_saving_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch, failure):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(3)}})
    before = path.read_bytes()

    def failing_save(obj, handle):
        handle.write(b"partial bytes")
        raise failure

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(DiskFullError) as caught:
        save_checkpoint(path, {"model": {"w": torch.zeros(3)}})
    assert_refused_write(caught.value, path)
    assert caught.value.__cause__ is failure
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(3))


def test_disk_full_in_flush_fsync_or_mkstemp_and_other_failures_keep_their_type(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    atomic_write_text(path, '{"old": 1}')
    import pyro_vae.checkpoint as checkpoint_module

    def no_room(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    for module, name in ((checkpoint_module.os, "fsync"), (checkpoint_module.tempfile, "mkstemp")):
        with monkeypatch.context() as patch:
            patch.setattr(module, name, no_room)
            with pytest.raises(DiskFullError) as caught:
                atomic_write_text(path, '{"new": 2}')
        assert_refused_write(caught.value, path)
        assert path.read_text() == '{"old": 1}' and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    # failures that are not a full disk are not reported as one
    for failure in (OSError(errno.EIO, "Input/output error"), RuntimeError("something else")):
        def failing(handle, failure=failure):
            raise failure

        with pytest.raises(type(failure)) as caught:
            checkpoint_module.atomic_write_bytes(path, failing)
        assert caught.value is failure
        assert path.read_text() == '{"old": 1}' and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


@pytest.fixture
def tiny_tmpfs():
    """A 256 KiB tmpfs (needs root on Linux), unmounted afterwards."""
    mount_point = Path(tempfile.mkdtemp(prefix="pyro-vae-tmpfs-"))
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as err:
        done = None
        reason = str(err)
    if done is None or done.returncode != 0:
        mount_point.rmdir()
        pytest.skip(f"cannot mount a tmpfs here ({reason if done is None else done.stderr.strip()}); "
                    f"needs root on Linux")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], capture_output=True, timeout=30)
        shutil.rmtree(mount_point, ignore_errors=True)


def test_a_really_full_disk_keeps_the_old_checkpoint(tiny_tmpfs):
    path = tiny_tmpfs / "checkpoint.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(1000)}})  # 4 KB: fits
    before = path.read_bytes()
    with pytest.raises(DiskFullError) as caught:  # 1 MB of weights: does not
        save_checkpoint(path, {"model": {"w": torch.zeros(2**18)}})
    assert_refused_write(caught.value, path)
    assert path.read_bytes() == before and [p.name for p in tiny_tmpfs.iterdir()] == ["checkpoint.pt"]
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(1000))
    with pytest.raises(DiskFullError) as caught:
        atomic_write_text(tiny_tmpfs / "metrics.json", "x" * 2**20)
    assert_refused_write(caught.value, tiny_tmpfs / "metrics.json")
    assert [p.name for p in tiny_tmpfs.iterdir()] == ["checkpoint.pt"]


# --------------------------------------------------------------------------- validate_train_state


def real_train_state() -> dict:
    net = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(net.parameters())
    net(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    return TrainState(optimizer, epoch=2, step=8, seconds=1.5,
                      history=[{"epoch": 1, "train_elbo": -3.0}, {"epoch": 2, "train_elbo": -2.5,
                                                                  "test_elbo": -2.75}]).state_dict()


def test_validate_train_state_accepts_what_train_state_writes(tmp_path):
    state = real_train_state()
    validate_train_state(state, "c.pt")
    validate_train_state({**state, "selection": {"best": 1}}, "c.pt")  # later versions add keys
    validate_train_state({**state, "rng": {**state["rng"], "cuda": [torch.zeros(16, dtype=torch.uint8)]}}, "c.pt")
    save_checkpoint(tmp_path / "c.pt", {"train_state": state})
    loaded = load_checkpoint(tmp_path / "c.pt")["train_state"]  # after a round trip
    validate_train_state(loaded, tmp_path / "c.pt")


def _with(key, value):
    state = real_train_state()
    if value is _DROP:
        del state[key]
    else:
        state[key] = value
    return state


_DROP = object()
_RNG_SIZE = torch.get_rng_state().numel()


@pytest.mark.parametrize("make,message", [
    (lambda: {}, r" lacks the entries \['epoch', 'history', 'optimizer', 'rng', 'seconds', 'step'\]"),
    (lambda: [1, 2], r" must be a dict, got \[1, 2\]"),
    (lambda: _with("rng", _DROP), r" lacks the entries \['rng'\]"),
    (lambda: _with("epoch", -1), r"\['epoch'\] must be a non-negative integer, got -1"),
    (lambda: _with("epoch", True), r"\['epoch'\] must be a non-negative integer, got True"),
    (lambda: _with("step", "3"), r"\['step'\] must be a non-negative integer, got '3'"),
    (lambda: _with("step", 2.0), r"\['step'\] must be a non-negative integer, got 2.0"),
    (lambda: _with("seconds", math.nan), r"\['seconds'\] must be a finite non-negative number, got nan"),
    (lambda: _with("seconds", -1.0), r"\['seconds'\] must be a finite non-negative number"),
    (lambda: _with("seconds", "1.5"), r"\['seconds'\] must be a finite non-negative number, got '1.5'"),
    (lambda: _with("optimizer", "adam"), r"\['optimizer'\] must be a dict \(an optimizer's state_dict\)"),
    (lambda: _with("optimizer", {"state": {}}), r"\['optimizer'\] lacks the entry 'param_groups'"),
    (lambda: _with("optimizer", {"state": [], "param_groups": []}), r"\['optimizer'\]\['state'\] must be a dict"),
    (lambda: _with("optimizer", {"state": {}, "param_groups": [{"lr": 1}]}),
     r"\['optimizer'\]\['param_groups'\]\[0\]\['params'\] must be a list of ints, got None"),
    (lambda: _with("history", "epoch 1: -3.0"),
     r"\['history'\] must be a list of dicts \(one per epoch\), got 'epoch 1: -3.0'"),
    (lambda: _with("history", [{"epoch": 1, "train_elbo": -3.0}, 7]), r"\['history'\]\[1\] must be a dict, got 7"),
    (lambda: _with("history", [{"train_elbo": -3.0}]),
     r"\['history'\]\[0\]\['epoch'\] must be a non-negative integer, got None"),
    (lambda: _with("history", [{"epoch": 1, "train_elbo": "-3"}]),
     r"\['history'\]\[0\]\['train_elbo'\] must be a number, got '-3'"),
    (lambda: _with("rng", torch.get_rng_state()), r"\['rng'\] must be a dict of RNG states, got a uint8 tensor"),
    (lambda: _with("rng", {}), r"\['rng'\] lacks the entry 'torch'"),
    (lambda: _with("rng", {"torch": torch.zeros(10, dtype=torch.uint8)}),
     rf"\['rng'\]\['torch'\] must be a uint8 tensor of shape \({_RNG_SIZE},\) \(torch's CPU RNG state\), "
     rf"got a uint8 tensor of shape \(10,\)"),
    (lambda: _with("rng", {"torch": torch.get_rng_state().float()}),
     r"\['rng'\]\['torch'\] must be a uint8 tensor of shape .*, got a float32 tensor of shape"),
    (lambda: _with("rng", {"torch": torch.get_rng_state(), "cuda": torch.zeros(16, dtype=torch.uint8)}),
     r"\['rng'\]\['cuda'\] must be a list of uint8 tensors \(one per GPU\)"),
    (lambda: _with("rng", {"torch": torch.get_rng_state(), "cuda": [torch.zeros(16)]}),
     r"\['rng'\]\['cuda'\]\[0\] must be a 1-D uint8 tensor \(a CUDA RNG state\), got a float32 tensor"),
])
def test_validate_train_state_names_the_file_and_the_bad_entry(make, message):
    with pytest.raises(ValueError, match=r"^checkpoint 'run/checkpoint\.pt': train_state" + message):
        validate_train_state(make(), Path("run/checkpoint.pt"))
