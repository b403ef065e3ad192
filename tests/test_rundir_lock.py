"""pyro_vae.rundir_lock: one writer per run directory, across processes, surviving kill -9."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pyro_vae import rundir_lock
from pyro_vae.rundir_lock import LOCK_FILE, RunDirLock

pytestmark = pytest.mark.skipif(rundir_lock.fcntl is None, reason="no fcntl: locking is a no-op")

# Other processes load the module from its file, without the package (and torch): fast.
_LOAD = (f"import importlib.util, sys\n"
         f"spec = importlib.util.spec_from_file_location('rundir_lock', {rundir_lock.__file__!r})\n"
         f"m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n")
_TRY = _LOAD + ("try:\n    m.RunDirLock(sys.argv[1]).acquire()\nexcept ValueError as err:\n"
                "    print(err); sys.exit(3)\nprint('ok')\n")
_HOLD = _LOAD + "m.RunDirLock(sys.argv[1]).acquire()\nprint('locked', flush=True)\nsys.stdin.read()\n"


def _try_in_other_process(run_dir) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-c", _TRY, str(run_dir)], capture_output=True,
                          text=True, timeout=60)
    assert not done.stderr, done.stderr
    return done.returncode, done.stdout.strip()


def _in_use(run_dir, pid) -> str:
    return (f"run directory {str(run_dir)!r} is in use by process {pid} "
            f"(on host {socket.gethostname()}); wait for it to finish or stop it")


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock of ``tmp_path``; killed at the end if still alive."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(tmp_path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    yield proc
    proc.kill()
    proc.wait(timeout=60)


def test_second_process_is_refused_with_the_holders_pid(tmp_path):
    with RunDirLock(tmp_path):
        code, message = _try_in_other_process(tmp_path)
        assert (code, message) == (3, _in_use(tmp_path, os.getpid()))
        record = json.loads((tmp_path / LOCK_FILE).read_text())
        assert record == {"pid": os.getpid(), "host": socket.gethostname()}


def test_lock_held_by_another_process_refuses_us_until_it_is_killed(tmp_path, holder):
    with pytest.raises(ValueError) as info:
        RunDirLock(tmp_path).acquire()
    assert str(info.value) == _in_use(tmp_path, holder.pid)
    holder.send_signal(signal.SIGKILL)  # no chance to clean up
    holder.wait(timeout=60)
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == holder.pid  # stale file
    with RunDirLock(tmp_path) as lock:
        assert lock.held
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()  # rewritten


def test_stale_lock_file_naming_a_dead_process_does_not_block(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=60)
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": dead.pid, "host": "x"}) + "\n" + "x" * 500)
    with RunDirLock(tmp_path):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()


def test_released_on_exit_of_the_context_manager(tmp_path):
    with RunDirLock(tmp_path) as lock:
        assert lock.held
    assert not lock.held
    assert (tmp_path / LOCK_FILE).read_text() == ""  # names no one once released
    assert _try_in_other_process(tmp_path) == (0, "ok")
    with pytest.raises(KeyError):
        with RunDirLock(tmp_path):
            raise KeyError("boom")  # the exception passes through, the lock is released
    assert _try_in_other_process(tmp_path) == (0, "ok")


def test_reentrant_within_one_process(tmp_path):
    outer = RunDirLock(tmp_path)
    with outer:
        # Another object for the same directory, spelled differently: counted, not refused.
        with RunDirLock(Path(tmp_path) / "." / ".." / tmp_path.name) as inner, outer:
            assert inner.held and outer.held
        assert outer.held and not inner.held
        assert _try_in_other_process(tmp_path)[0] == 3  # still locked after the inner exits
    assert not outer.held
    assert _try_in_other_process(tmp_path) == (0, "ok")


def test_forked_child_does_not_keep_the_lock(tmp_path):
    """A fork while the lock is held (a DataLoader worker) must not hold it past the parent."""
    to_child, from_parent = os.pipe()
    from_child, to_parent = os.pipe()
    lock = RunDirLock(tmp_path).acquire()
    pid = os.fork()
    if pid == 0:  # child: report whether it can take the lock, then wait until told to exit
        try:
            RunDirLock(tmp_path).acquire()
            os.write(to_parent, b"acquired")
        except ValueError as err:
            os.write(to_parent, str(err).encode())
        os.read(to_child, 1)
        os._exit(0)
    try:
        assert os.read(from_child, 1000).decode() == _in_use(tmp_path, os.getpid())
        lock.release()
        assert _try_in_other_process(tmp_path) == (0, "ok")  # the child is still alive here
    finally:
        os.write(from_parent, b"x")
        os.waitpid(pid, 0)


def test_directory_checks(tmp_path):
    missing = tmp_path / "a" / "run"
    with pytest.raises(ValueError, match=r"^run directory '.*run' does not exist$"):
        RunDirLock(missing).acquire()
    with RunDirLock(missing, create=True):
        assert (missing / LOCK_FILE).is_file()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"run directory '.*file' (is not a directory|cannot be used)"):
        RunDirLock(tmp_path / "file").acquire()
    with pytest.raises(ValueError, match=r"run directory '.*file' cannot be used"):
        RunDirLock(tmp_path / "file", create=True).acquire()
    blocked = tmp_path / "blocked"
    (blocked / LOCK_FILE).mkdir(parents=True)
    with pytest.raises(ValueError, match=r"cannot be locked: its \.lock file cannot be opened "
                                         r"\(Is a directory\)$"):
        RunDirLock(blocked).acquire()
    with pytest.raises(RuntimeError, match="released but not held"):
        RunDirLock(tmp_path).release()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write a read-only directory")
def test_unwritable_directory_is_one_line(tmp_path):
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(ValueError, match=r"cannot be locked: its \.lock file cannot be opened "
                                             r"\(Permission denied\)"):
            RunDirLock(tmp_path).acquire()
    finally:
        tmp_path.chmod(0o755)


def test_without_fcntl_locking_is_a_no_op(tmp_path, monkeypatch):
    monkeypatch.setattr(rundir_lock, "fcntl", None)
    with RunDirLock(tmp_path) as lock, RunDirLock(tmp_path):
        assert lock.held
    assert not (tmp_path / LOCK_FILE).exists()
