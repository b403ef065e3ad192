"""An exclusive lock on a run directory, held while a process writes it.

Two processes writing one run directory (a ``train --overwrite`` started while a ``resume``
still runs, two ``evaluate`` commands) would interleave checkpoints and metrics from different
runs. :class:`RunDirLock` makes the second one stop at once with a line naming the holder.

How it works, and why:

- The lock is ``fcntl.flock(LOCK_EX | LOCK_NB)`` on the file ``run_dir/.lock``. The kernel
  releases a flock when its holder exits, however it exits (``kill -9``, a crash, a power cut
  of a node), so a killed run needs no clean-up and a lock file left by a dead process never
  blocks: the file is only a place to hang the lock on, not the lock itself.
- The holder writes ``{"pid": ..., "host": ...}`` into the file, only for the message the next
  process shows. It is rewritten on every acquire and emptied on release, so it never names
  a process that does not hold the lock (except for a holder killed before it could empty it,
  whose file a new holder rewrites). The file itself stays: deleting it while another process
  waits to open it could give two processes two different files to lock.
- The lock is per process and re-entrant: taking it again for the same directory in the
  same process (``train_run`` calling a helper that also locks) counts up instead of
  refusing, and the directory is unlocked when the outermost holder releases it. Threads of
  one process share it. A child created by ``fork`` (a DataLoader worker) does not hold it:
  its copy of the descriptor is closed at once, so that the directory is unlocked when the
  parent releases it, not when the last child exits; a child that asks for the lock is
  refused, like any other process, while the parent holds it.
- Where there is no ``fcntl`` (Windows), or the file system refuses flock (some network
  mounts), locking is a no-op (with a warning for the latter): runs work, concurrent writers
  are not detected.

Example
-------
>>> import tempfile
>>> from pyro_vae.rundir_lock import RunDirLock
>>> run_dir = tempfile.mkdtemp()
>>> with RunDirLock(run_dir) as lock:
...     lock.held
True
>>> lock.held
False
"""

from __future__ import annotations

import errno
import json
import os
import socket
import threading
import warnings
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock; see the module docstring
    fcntl = None

#: The lock file's name inside a run directory.
LOCK_FILE = ".lock"

# (pid, st_dev, st_ino) of a locked directory -> [file descriptor or None, depth]. The pid
# keeps a forked child from believing it holds its parent's lock.
_HELD: dict[tuple, list] = {}
_HELD_GUARD = threading.Lock()


def _forget_after_fork() -> None:
    """In a forked child: close the inherited descriptors; the locks stay the parent's."""
    global _HELD_GUARD
    _HELD_GUARD = threading.Lock()  # another thread may have held it at the fork
    for fd, _ in _HELD.values():
        if fd is not None:
            os.close(fd)  # not LOCK_UN, which would unlock the parent's lock too
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)

# flock errors meaning "this file system cannot lock", not "someone else holds it".
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


def _holder(fd: int) -> str:
    """Who holds the lock, from the lock file (read through our own descriptor)."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        return f"process {int(info['pid'])} (on host {info['host']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"  # it holds the lock but has not written its id yet


def lock_holder(run_dir) -> str | None:
    """Who holds ``run_dir``'s lock now, as a refusal would name them; None when nobody does.

    Read-only: a shared, non-blocking flock on a read-only descriptor of the lock file, dropped
    at once, so the file is not rewritten. (A process asking for the lock in that instant
    would be refused, as by any holder.) None also where locking is unavailable.
    """
    if fcntl is None:
        return None
    try:
        fd = os.open(Path(run_dir) / LOCK_FILE, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO: no wait
    except OSError:  # no lock file: never locked
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder(fd)
    except OSError:
        return None
    finally:
        os.close(fd)  # releases the shared lock, if it was taken
    return None


def _unlock(fd) -> None:
    if fd is None:
        return
    try:
        os.ftruncate(fd, 0)  # the file names only a live holder (see the module docstring)
    finally:
        os.close(fd)  # closing the last descriptor releases the flock


class RunDirLock:
    """Exclusive, re-entrant lock on ``run_dir`` for this process; a context manager.

    Parameters
    ----------
    run_dir : str or os.PathLike
        The run directory. It must exist unless ``create`` is true.
    create : bool
        Create ``run_dir`` (and its parents) if missing, for a run about to be trained.

    Raises
    ------
    ValueError
        From :meth:`acquire` (and ``with``): the directory is locked by another process
        (the message names its PID and host), is missing, is not a directory, or its lock
        file cannot be created.
    """

    def __init__(self, run_dir, *, create: bool = False):
        self.run_dir = Path(run_dir)
        self.create = create
        self._key = None  # registry key while this object holds the lock
        self._depth = 0  # how many times this object acquired it

    @property
    def held(self) -> bool:
        """Whether this object currently holds the lock."""
        return self._depth > 0

    def acquire(self) -> RunDirLock:
        name = str(self.run_dir)
        try:
            if self.create:
                self.run_dir.mkdir(parents=True, exist_ok=True)
            stat = self.run_dir.stat()
        except FileNotFoundError:
            raise ValueError(f"run directory {name!r} does not exist") from None
        except OSError as err:  # FileExistsError: a file where the directory should be
            raise ValueError(f"run directory {name!r} cannot be used ({err.strerror})") from None
        if not self.run_dir.is_dir():
            raise ValueError(f"run directory {name!r} is not a directory")
        key = (os.getpid(), stat.st_dev, stat.st_ino)  # one entry however the path is spelled
        with _HELD_GUARD:
            entry = _HELD.get(key)
            if entry is None:
                entry = _HELD[key] = [self._lock(name), 0]
            entry[1] += 1
        self._key, self._depth = key, self._depth + 1
        return self

    def _lock(self, name: str):
        """Take the OS lock and record this process in the file; the descriptor, or None."""
        if fcntl is None:
            return None
        try:
            fd = os.open(self.run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise ValueError(f"run directory {name!r} cannot be locked: its {LOCK_FILE} file "
                             f"cannot be opened ({err.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise ValueError(f"run directory {name!r} is in use by {holder}; "
                             f"wait for it to finish or stop it") from None
        except OSError as err:
            os.close(fd)
            if err.errno not in _UNSUPPORTED:
                raise ValueError(f"run directory {name!r} cannot be locked ({err.strerror})") from None
            warnings.warn(f"run directory {name!r} is on a file system without file locks; "
                          f"another process writing it at the same time would not be detected",
                          RuntimeWarning, stacklevel=3)
            return None
        # Ours now: replace whatever a previous (possibly killed) holder left.
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, record + b"\n", 0)
        return fd

    def release(self) -> None:
        """Release one :meth:`acquire`; the outermost release of the process unlocks."""
        if not self._depth:
            raise RuntimeError(f"RunDirLock of {str(self.run_dir)!r} released but not held")
        with _HELD_GUARD:
            entry = _HELD.get(self._key)  # None: a forked child's copy of its parent's lock
            if entry is not None:
                entry[1] -= 1
                if entry[1] == 0:
                    del _HELD[self._key]
                    _unlock(entry[0])
        self._depth -= 1
        if not self._depth:
            self._key = None

    def __enter__(self) -> RunDirLock:
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()
