"""Checkpoints and run files: nothing in them runs code, nothing damaged passes, no write is half done.

- A checkpoint whose unpickling would call a function (``__reduce__``) is refused by
  ``load_checkpoint``, ``pyro-vae evaluate``, ``sample`` and ``train --resume``, and the test
  proves the function never ran (its marker file is absent), while a plain ``torch.load``
  of the same file *would* have run it.
- ``config.json`` is read as JSON and nothing else.
- Writes are atomic: the temporary file sits in the target's directory, is removed when the
  write fails (even by ``KeyboardInterrupt``), and the old file survives untouched.
- A checksum catches damage that the zip container lets through.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
import torch

import pyro_vae.checkpoint as checkpoint_module
from pyro_vae.checkpoint import (
    FORMAT_VERSION,
    SLOW_WRITE_ENV,
    atomic_write_text,
    checksum,
    load_checkpoint,
    save_checkpoint,
)
from pyro_vae.cli import main
from pyro_vae.runs import read_config


def _write_marker(path):
    """What the malicious payloads call: leaves a file behind if it ever runs."""
    Path(path).write_text("code ran")
    return {}


class _CallsFunction:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (_write_marker, (self.marker,))


class _CallsShell:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("payload", [_CallsFunction, _CallsShell], ids=["function", "os.system"])
def test_checkpoint_that_would_run_code_is_refused_everywhere(run_copy, tmp_path, capsys, payload):
    marker = tmp_path / "marker"
    good = load_checkpoint(run_copy / "checkpoint.pt")
    # A real-looking checkpoint with one poisoned entry deep inside.
    torch.save({**good, "train_state": {**good["train_state"], "extra": payload(marker)}},
               run_copy / "checkpoint.pt")
    with pytest.raises(ValueError, match="could run code"):
        load_checkpoint(run_copy / "checkpoint.pt")
    for argv in (["evaluate", str(run_copy)],
                 ["sample", str(run_copy), "--out", str(tmp_path / "s.png")],
                 ["train", "--resume", str(run_copy), "--epochs", "2", "--no-progress"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "pyro-vae: error:" in err and "could run code" in err and "nothing in it was executed" in err
        assert "Traceback" not in err
    assert not marker.exists()
    assert not (tmp_path / "s.png").exists()
    # The payload is live: an unsafe load of the same file runs it (the guard is what stops it).
    torch.load(run_copy / "checkpoint.pt", weights_only=False)
    assert marker.exists()


def test_refusal_names_the_object_it_would_have_created(tmp_path):
    torch.save({"format_version": FORMAT_VERSION, "model": _CallsShell(tmp_path / "m")}, tmp_path / "c.pt")
    with pytest.raises(ValueError, match=r"c\.pt.*'(posix|os|nt)\.system'"):
        load_checkpoint(tmp_path / "c.pt")
    assert not (tmp_path / "m").exists()


def test_config_is_json_only(run_copy, tmp_path, capsys):
    marker = tmp_path / "marker"
    config = run_copy / "config.json"
    # Python source, a pickle, and JSON that names a class: none of them is executed.
    for content in (f"__import__('pathlib').Path({str(marker)!r}).write_text('x')",
                    __import__("pickle").dumps(_CallsFunction(marker)),
                    json.dumps({"model": "vae", "train": {"__class__": "os.system"}})):
        if isinstance(content, bytes):
            config.write_bytes(content)
        else:
            config.write_text(content)
        with pytest.raises(ValueError, match=r"config\.json' is not valid (JSON|UTF-8)|unknown or invalid field"):
            read_config(run_copy)
        assert main(["evaluate", str(run_copy)]) == 2
        assert "Traceback" not in capsys.readouterr().err
    assert not marker.exists()


def test_checkpoint_round_trip_and_checksum():
    state = {"model": {"w": torch.randn(3, 2, dtype=torch.float64), "i": torch.arange(4)},
             "train_state": {"epoch": 3, "history": [{"epoch": 1, "train_elbo": -1.5}],
                             "betas": (0.9, 0.999), "rng": torch.get_rng_state()},
             "config": json.dumps({"a": 1})}
    path = Path(__import__("tempfile").mkdtemp()) / "c.pt"
    save_checkpoint(path, state)
    loaded = load_checkpoint(path, required=("model", "config"))
    assert loaded.pop("format_version") == FORMAT_VERSION and "checksum" not in loaded
    assert loaded.keys() == state.keys()
    for name, tensor in state["model"].items():
        assert torch.equal(loaded["model"][name], tensor) and loaded["model"][name].dtype == tensor.dtype
    assert loaded["train_state"]["history"] == state["train_state"]["history"]
    assert loaded["train_state"]["betas"] == (0.9, 0.999)
    with pytest.raises(ValueError, match=r"lacks the entries \['optimizer'\]"):
        load_checkpoint(path, required=("model", "optimizer"))
    # the checksum sees every value: dtype, shape, a bit of a weight, a plain number
    base = checksum({"w": torch.zeros(2)})
    assert base == checksum({"w": torch.zeros(2)})
    assert len({base, checksum({"w": torch.zeros(2, dtype=torch.float64)}),
                checksum({"w": torch.zeros(1, 2)}), checksum({"w": torch.tensor([0.0, -0.0])}),
                checksum({"w": torch.zeros(2), "epoch": 1}), checksum({"w": torch.zeros(2), "epoch": 2}),
                checksum({"w": torch.zeros(2), "epoch": 1.0})}) == 7


def test_random_byte_damage_never_loads_silently(trained_run, tmp_path):
    """Flip one bit at 150 random places of a real checkpoint: each load either fails with
    ValueError or yields exactly the original contents (the byte was padding or metadata)."""
    original = (trained_run / "checkpoint.pt").read_bytes()
    reference = load_checkpoint(trained_run / "checkpoint.pt")
    rng = random.Random(0)
    refused = identical = 0
    path = tmp_path / "flipped.pt"
    for _ in range(150):
        damaged = bytearray(original)
        damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(damaged))
        try:
            loaded = load_checkpoint(path)
        except ValueError:
            refused += 1
            continue
        assert checksum(loaded) == checksum(reference)
        identical += 1
    assert refused + identical == 150 and refused > 100


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(3)}})
    before = path.read_bytes()
    seen = []
    real_save = torch.save

    def failing_save(obj, handle):
        seen.extend(p for p in tmp_path.iterdir() if p.name != "checkpoint.pt")
        handle.write(b"partial bytes")  # something reached the disk before the failure
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, {"model": {"w": torch.zeros(3)}})
    # the temporary was in the target's directory (a rename is atomic only within one)
    assert seen and seen[0].parent == tmp_path and seen[0].name.startswith(".checkpoint.pt.")
    assert not seen[0].exists()
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]

    def interrupted_save(obj, handle):
        real_save(obj, handle)
        raise KeyboardInterrupt  # ^C right after the bytes were written, before the rename

    monkeypatch.setattr(torch, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"model": {"w": torch.zeros(3)}})
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(3))


def test_failed_rename_keeps_the_old_file(tmp_path, monkeypatch):
    atomic_write_text(tmp_path / "metrics.json", '{"old": 1}')

    def no_rename(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(checkpoint_module.os, "replace", no_rename)
    with pytest.raises(PermissionError):
        atomic_write_text(tmp_path / "metrics.json", '{"new": 2}')
    assert (tmp_path / "metrics.json").read_text() == '{"old": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_orphaned_temporaries_are_removed_by_the_next_write(tmp_path):
    """A writer killed mid-write leaves its temporary; the next write of that file removes it
    (and only its own file's temporaries)."""
    (tmp_path / ".checkpoint.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / ".metrics.json.zzz.tmp").write_bytes(b"{")
    save_checkpoint(tmp_path / "checkpoint.pt", {"model": {}})
    assert sorted(p.name for p in tmp_path.iterdir()) == [".metrics.json.zzz.tmp", "checkpoint.pt"]


def test_written_files_get_ordinary_permissions(tmp_path):
    """mkstemp creates 0600 files; the rename must not leave run files private by accident."""
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "config.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "config.json").stat().st_mode & 0o777 == 0o644


def test_slow_write_hook_delays_the_rename(tmp_path, monkeypatch):
    """The fault-injection hook: the temporary exists for the given time before the rename."""
    monkeypatch.setenv(SLOW_WRITE_ENV, "0.2")
    import threading
    import time

    seen = []
    writer = threading.Thread(target=save_checkpoint, args=(tmp_path / "c.pt", {"model": {}}))
    writer.start()
    time.sleep(0.1)
    seen.append(sorted(p.name for p in tmp_path.iterdir()))
    writer.join()
    assert len(seen[0]) == 1 and seen[0][0].startswith(".c.pt.") and seen[0][0].endswith(".tmp")
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]
