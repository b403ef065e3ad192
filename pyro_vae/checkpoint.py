"""Checkpoints that lose nothing, run nothing and never pass off a damaged file as a good one.

- :func:`atomic_write_bytes` (behind :func:`save_checkpoint` and :func:`atomic_write_text`)
  writes to a temporary file in the same directory, flushes it to disk, then renames it over
  the target: a reader sees either the old file or the new one, never a partial write,
  whenever the process is killed. A failed write removes its temporary file and leaves the
  old file as it was; temporaries orphaned by a killed process are removed by the next
  successful write of the same file.
- :func:`save_checkpoint` stores a SHA-256 checksum of every tensor and value in the file;
  :func:`load_checkpoint` recomputes it, because the zip container ``torch.save`` writes does
  not check its own contents: a flipped bit in a weight would otherwise load silently.
- :func:`load_checkpoint` uses ``torch.load(weights_only=True)``: only tensors and plain
  containers are accepted; a file that would unpickle arbitrary objects (and so could run code)
  is refused, as is a truncated, corrupt or foreign one, with a ``ValueError`` naming the file.

Test hook: when the environment variable ``PYRO_VAE_TEST_SLOW_CHECKPOINT`` holds a number of
seconds, every atomic write sleeps that long between writing its temporary file and renaming
it, so that fault-injection tests can kill a process in the middle of a write.

Example
-------
>>> import torch
>>> from pyro_vae.checkpoint import load_checkpoint, save_checkpoint
>>> save_checkpoint("/tmp/pyro-vae-doc.pt", {"model": {"w": torch.ones(2)}})
>>> load_checkpoint("/tmp/pyro-vae-doc.pt")["model"]["w"]
tensor([1., 1.])
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import tempfile
import time
import zipfile
from collections.abc import Iterable
from pathlib import Path

import torch

#: Layout version of the checkpoint dict; 2 added the ``checksum`` entry.
FORMAT_VERSION = 2
#: Environment variable read by the fault-injection test hook (seconds to sleep before renaming).
SLOW_WRITE_ENV = "PYRO_VAE_TEST_SLOW_CHECKPOINT"
_RESERVED = ("format_version", "checksum")


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def _remove_stale_temporaries(path: Path) -> None:
    """Remove temporaries of ``path`` left by killed writers (there is one writer per run)."""
    for stale in path.parent.glob(f"{_temp_prefix(path)}*.tmp"):
        stale.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, write) -> None:
    """Call ``write(file_object)`` on a temporary file, fsync it, and rename it to ``path``.

    The temporary file lives in ``path``'s directory (a rename is only atomic within one file
    system) and gets the permissions a plain ``open`` would give (``0o666`` less the umask).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        if hasattr(os, "fchmod"):  # POSIX
            os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        delay = os.environ.get(SLOW_WRITE_ENV)
        if delay:
            time.sleep(float(delay))  # test hook: widen the window a kill can land in
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)
    _remove_stale_temporaries(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, lambda handle: handle.write(text.encode("utf-8")))


def _feed(digest, obj) -> None:
    """Hash ``obj`` (nested dicts/lists/tuples of tensors and plain values) into ``digest``."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().to("cpu").contiguous()
        digest.update(f"T{t.dtype}{tuple(t.shape)}:".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        digest.update(f"D{len(obj)}:".encode())
        for key in sorted(obj, key=repr):
            _feed(digest, key)
            _feed(digest, obj[key])
    elif isinstance(obj, (list, tuple)):
        digest.update(f"{type(obj).__name__}{len(obj)}:".encode())
        for item in obj:
            _feed(digest, item)
    else:  # str, int, float (repr round-trips exactly), bool, None, bytes
        digest.update(f"{type(obj).__name__}:{obj!r};".encode())


def checksum(payload: dict) -> str:
    """SHA-256 (hex) of every tensor's bytes, dtype and shape and every plain value in ``payload``."""
    digest = hashlib.sha256()
    _feed(digest, payload)
    return digest.hexdigest()


def save_checkpoint(path: str | os.PathLike, checkpoint: dict) -> None:
    """Save ``checkpoint`` (tensors and plain containers only) atomically to ``path``.

    The file holds ``checkpoint`` plus ``format_version`` and a ``checksum`` of it all.
    """
    if not isinstance(checkpoint, dict):
        raise TypeError(f"checkpoint must be a dict, got {type(checkpoint).__name__}")
    reserved = [key for key in _RESERVED if key in checkpoint]
    if reserved:
        raise ValueError(f"checkpoint keys {reserved} are reserved for the file format")
    payload = {"format_version": FORMAT_VERSION, **checkpoint}
    payload["checksum"] = checksum(payload)
    atomic_write_bytes(path, lambda handle: torch.save(payload, handle))


def load_checkpoint(path: str | os.PathLike, map_location=None, *,
                    required: Iterable[str] = ()) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`, refusing anything unsafe or broken.

    Parameters
    ----------
    path : path-like
    map_location : optional
        Passed to ``torch.load`` (e.g. ``"cpu"``).
    required : iterable of str
        Keys the checkpoint must hold (besides ``format_version`` and ``checksum``).

    Raises
    ------
    ValueError
        If the file is missing or unreadable, would need arbitrary Python objects to load,
        is truncated or corrupt (its checksum does not match), or is not a pyro-vae checkpoint
        of this format version.
    """
    path = Path(path)
    name = str(path)
    if not path.exists():
        raise ValueError(f"checkpoint {name!r} does not exist")
    if not path.is_file():
        raise ValueError(f"checkpoint {name!r} is not a file")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's weights-only unpickler names a refused object "GLOBAL module.name"; any
        # other unpickling error means a damaged byte stream.
        refused = re.search(r"GLOBAL\s+([\w.]+)", str(err))
        if refused:
            raise ValueError(
                f"checkpoint {name!r} was refused: loading it would create the Python object "
                f"{refused.group(1)!r}, which could run code (only tensors and plain containers "
                f"are accepted); nothing in it was executed"
            ) from err
        raise ValueError(f"checkpoint {name!r} is truncated or corrupt (unreadable pickle data)") from err
    except PermissionError as err:
        raise ValueError(f"checkpoint {name!r} could not be read ({err.strerror})") from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, KeyError, ValueError, TypeError,
            AttributeError, IndexError, UnicodeDecodeError) as err:
        raise ValueError(f"checkpoint {name!r} is truncated or corrupt ({err})") from err
    if not isinstance(checkpoint, dict) or checkpoint.get("format_version") != FORMAT_VERSION:
        found = checkpoint.get("format_version") if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(
            f"checkpoint {name!r} is not a pyro-vae checkpoint of format version "
            f"{FORMAT_VERSION} (found {found!r})"
        )
    stored = checkpoint.pop("checksum", None)
    if stored != checksum(checkpoint):
        raise ValueError(
            f"checkpoint {name!r} is corrupt: its contents do not match the checksum stored in it"
        )
    missing = sorted(set(required) - set(checkpoint))
    if missing:
        raise ValueError(f"checkpoint {name!r} lacks the entries {missing}")
    return checkpoint
