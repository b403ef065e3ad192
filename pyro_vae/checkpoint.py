"""Checkpoints that lose nothing and run nothing.

- :func:`save_checkpoint` writes to a temporary file in the same directory, flushes it to
  disk, then renames it over the target: a reader sees either the old file or the new one,
  never a partial write, whenever the process is killed.
- :func:`load_checkpoint` uses ``torch.load(weights_only=True)``: only tensors and plain
  containers are accepted; a file that would unpickle arbitrary objects (and so could run code)
  is refused, as is a truncated or corrupt one, with a ``ValueError`` naming the file.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import torch

FORMAT_VERSION = 1


def atomic_write_bytes(path: str | os.PathLike, write) -> None:
    """Call ``write(file_object)`` on a temporary file, fsync it, and rename it to ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, lambda handle: handle.write(text.encode("utf-8")))


def save_checkpoint(path: str | os.PathLike, checkpoint: dict) -> None:
    """Save ``checkpoint`` (tensors and plain containers only) atomically to ``path``."""
    payload = {"format_version": FORMAT_VERSION, **checkpoint}
    atomic_write_bytes(path, lambda handle: torch.save(payload, handle))


def load_checkpoint(path: str | os.PathLike, map_location=None) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`, refusing anything unsafe or broken."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {str(path)!r} does not exist")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"checkpoint {str(path)!r} was refused: it needs arbitrary pickled objects, which "
            f"could run code when loaded (only tensors and plain containers are accepted)"
        ) from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, KeyError, ValueError) as err:
        raise ValueError(f"checkpoint {str(path)!r} is truncated or corrupt ({err})") from err
    if not isinstance(checkpoint, dict) or checkpoint.get("format_version") != FORMAT_VERSION:
        found = checkpoint.get("format_version") if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(
            f"checkpoint {str(path)!r} is not a pyro-vae checkpoint of format version "
            f"{FORMAT_VERSION} (found {found!r})"
        )
    return checkpoint
