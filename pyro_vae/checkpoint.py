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
  is refused, as is a truncated, corrupt or foreign one, with a ``ValueError`` naming the file
  (whatever exception a damaged byte makes ``torch.load`` raise).
- A write that fails because the disk (or the quota) is full raises :class:`DiskFullError`, an
  ``OSError`` whose one-line message names the file, even where ``torch.save`` reports it as a
  ``RuntimeError`` ("unexpected pos"); the previous file stays intact.
- :func:`validate_train_state` checks the structure of a checkpoint's ``train_state`` entry.

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

import errno
import hashlib
import math
import os
import pickle
import re
import tempfile
import time
import warnings
from collections.abc import Iterable
from pathlib import Path

import torch

#: Layout version of the checkpoint dict; 2 added the ``checksum`` entry.
FORMAT_VERSION = 2
#: Environment variable read by the fault-injection test hook (seconds to sleep before renaming).
SLOW_WRITE_ENV = "PYRO_VAE_TEST_SLOW_CHECKPOINT"
_RESERVED = ("format_version", "checksum")
#: errno values of a write that found no room: the disk is full, or the user's quota is.
_NO_ROOM = (errno.ENOSPC, errno.EDQUOT)
#: What torch.save's zip writer says when the file object took fewer bytes than it wrote.
_TORCH_SHORT_WRITE = ("unexpected pos", "PytorchStreamWriter failed")


class DiskFullError(OSError):
    """A write found no space left on the device (or in the quota); the old file is intact."""

    def __init__(self, path, detail: str = ""):
        super().__init__(
            errno.ENOSPC,
            f"No space left on device (disk full) while writing {str(path)!r}{detail}; the "
            f"previous version of the file, if any, is intact and the partial write was removed",
        )


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def _remove_stale_temporaries(path: Path) -> None:
    """Remove temporaries of ``path`` left by killed writers (there is one writer per run)."""
    for stale in path.parent.glob(f"{_temp_prefix(path)}*.tmp"):
        stale.unlink(missing_ok=True)


def _no_room(err: BaseException) -> str | None:
    """What says that ``err`` (or an exception it was raised from or during) is a full disk,
    or None. ``torch.save`` turns the ``OSError`` of a full disk into a ``RuntimeError``
    ("unexpected pos ..."), sometimes with the ``OSError`` attached as its context, sometimes
    not: a short write of a regular file means the file system had no room."""
    chain = []
    while err is not None and all(err is not e for e in chain):
        chain.append(err)
        err = err.__cause__ or err.__context__
    if any(isinstance(e, OSError) and e.errno in _NO_ROOM for e in chain):
        return ""
    for e in chain:
        if isinstance(e, RuntimeError) and any(s in str(e) for s in _TORCH_SHORT_WRITE):
            return f" (torch.save: {str(e).strip().splitlines()[0]})"
    return None


def atomic_write_bytes(path: str | os.PathLike, write, *, durable: bool = True) -> None:
    """Call ``write(file_object)`` on a temporary file, fsync it, and rename it to ``path``.

    The temporary file lives in ``path``'s directory (a rename is only atomic within one file
    system) and gets the permissions a plain ``open`` would give (``0o666`` less the umask).
    A full disk raises :class:`DiskFullError`; any failure leaves the old file as it was.
    ``durable=False`` skips the two fsyncs (file and directory; tens of milliseconds each on
    some disks) for files that can be drawn again, such as figures: the replacement stays
    atomic for other processes, but a power cut may lose it.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    except OSError as err:
        if err.errno in _NO_ROOM:  # not even room for a new directory entry
            raise DiskFullError(path) from err
        raise
    try:
        umask = os.umask(0)
        os.umask(umask)
        if hasattr(os, "fchmod"):  # POSIX
            os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        delay = os.environ.get(SLOW_WRITE_ENV)
        if delay:
            time.sleep(float(delay))  # test hook: widen the window a kill can land in
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        detail = _no_room(err) if isinstance(err, Exception) else None
        if detail is not None:
            raise DiskFullError(path, detail) from err
        raise
    if durable:
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
        with warnings.catch_warnings():  # a damaged file can make torch warn before it fails
            warnings.simplefilter("ignore")
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
    except Exception as err:  # noqa: BLE001
        # A damaged byte surfaces anywhere in torch's zip reader and unpickler: RuntimeError,
        # EOFError, BadZipFile, KeyError, IndexError, AssertionError, MemoryError, ...
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"checkpoint {name!r} is truncated or corrupt ({detail})") from err
    version = checkpoint.get("format_version") if isinstance(checkpoint, dict) else None
    if type(version) is not int or version != FORMAT_VERSION:
        found = version if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(
            f"checkpoint {name!r} is not a pyro-vae checkpoint of format version "
            f"{FORMAT_VERSION} (found {_describe(found)})"
        )
    stored = checkpoint.pop("checksum", None)
    try:
        actual = checksum(checkpoint)
    except Exception as err:  # noqa: BLE001  (an entry no tensor of ours could be: sparse, ...)
        raise ValueError(f"checkpoint {name!r} is corrupt: an entry cannot be checksummed ({err})") from err
    if not isinstance(stored, str) or stored != actual:
        raise ValueError(
            f"checkpoint {name!r} is corrupt: its contents do not match the checksum stored in it"
        )
    missing = sorted(set(required) - set(checkpoint))
    if missing:
        raise ValueError(f"checkpoint {name!r} lacks the entries {missing}")
    return checkpoint


def _describe(value) -> str:
    """``value`` for a one-line message: tensors by dtype and shape, the rest by a short repr."""
    if isinstance(value, torch.Tensor):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {tuple(value.shape)}"
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate_train_state(state, path) -> None:
    """Check a checkpoint's ``train_state`` entry against what
    :meth:`pyro_vae.inference.train.TrainState.state_dict` writes, before anything uses it.

    Required: ``optimizer`` (a dict with ``state``, a dict, and ``param_groups``, a list of
    dicts each with a ``params`` list of ints), ``epoch`` and ``step`` (non-negative ints),
    ``seconds`` (a finite non-negative number), ``history`` (a list of dicts with an int
    ``epoch`` and numbers as the other values) and ``rng`` (a dict with ``torch``, a 1-D uint8
    tensor of the size ``torch.get_rng_state()`` has, and optionally ``cuda``, a list of 1-D
    uint8 tensors). Other keys, here and in ``rng``, are allowed (later versions add some).

    Raises
    ------
    ValueError
        Naming ``path`` and the first entry that is missing or malformed.

    Example
    -------
    >>> validate_train_state({"epoch": 1, "step": 5}, "run/checkpoint.pt")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: checkpoint 'run/checkpoint.pt': train_state lacks the entries ['history', ...]
    """
    name = str(path)

    def bad(key: str, expected: str, value) -> ValueError:
        return ValueError(f"checkpoint {name!r}: train_state{key} must be {expected}, got {_describe(value)}")

    if not isinstance(state, dict):
        raise bad("", "a dict", state)
    missing = sorted({"optimizer", "epoch", "step", "seconds", "history", "rng"} - set(state))
    if missing:
        raise ValueError(f"checkpoint {name!r}: train_state lacks the entries {missing}")
    for key in ("epoch", "step"):
        if not _is_int(state[key]) or state[key] < 0:
            raise bad(f"[{key!r}]", "a non-negative integer", state[key])
    seconds = state["seconds"]
    if not _is_real(seconds) or not math.isfinite(seconds) or seconds < 0:
        raise bad("['seconds']", "a finite non-negative number", seconds)

    optimizer = state["optimizer"]
    if not isinstance(optimizer, dict):
        raise bad("['optimizer']", "a dict (an optimizer's state_dict)", optimizer)
    for key in ("state", "param_groups"):
        if key not in optimizer:
            raise ValueError(f"checkpoint {name!r}: train_state['optimizer'] lacks the entry {key!r}")
    if not isinstance(optimizer["state"], dict):
        raise bad("['optimizer']['state']", "a dict", optimizer["state"])
    groups = optimizer["param_groups"]
    if not isinstance(groups, list):
        raise bad("['optimizer']['param_groups']", "a list of dicts", groups)
    for i, group in enumerate(groups):
        if not isinstance(group, dict):
            raise bad(f"['optimizer']['param_groups'][{i}]", "a dict", group)
        params = group.get("params")
        if not isinstance(params, list) or not all(_is_int(p) for p in params):
            raise bad(f"['optimizer']['param_groups'][{i}]['params']", "a list of ints", params)

    history = state["history"]
    if not isinstance(history, list):
        raise bad("['history']", "a list of dicts (one per epoch)", history)
    for i, record in enumerate(history):
        where = f"['history'][{i}]"
        if not isinstance(record, dict):
            raise bad(where, "a dict", record)
        if not _is_int(record.get("epoch")) or record["epoch"] < 0:
            raise bad(f"{where}['epoch']", "a non-negative integer", record.get("epoch"))
        for key, value in record.items():
            if not isinstance(key, str):
                raise bad(where, "a dict with string keys", key)
            if not _is_real(value):
                raise bad(f"{where}[{key!r}]", "a number", value)

    rng = state["rng"]
    if not isinstance(rng, dict):
        raise bad("['rng']", "a dict of RNG states", rng)
    if "torch" not in rng:
        raise ValueError(f"checkpoint {name!r}: train_state['rng'] lacks the entry 'torch'")
    size = torch.get_rng_state().numel()
    torch_state = rng["torch"]
    if (not isinstance(torch_state, torch.Tensor) or torch_state.dtype != torch.uint8
            or tuple(torch_state.shape) != (size,)):
        raise bad("['rng']['torch']", f"a uint8 tensor of shape ({size},) (torch's CPU RNG state)",
                  torch_state)
    if "cuda" in rng:
        cuda = rng["cuda"]
        if not isinstance(cuda, (list, tuple)):
            raise bad("['rng']['cuda']", "a list of uint8 tensors (one per GPU)", cuda)
        for i, item in enumerate(cuda):
            if not isinstance(item, torch.Tensor) or item.dtype != torch.uint8 or item.dim() != 1:
                raise bad(f"['rng']['cuda'][{i}]", "a 1-D uint8 tensor (a CUDA RNG state)", item)
