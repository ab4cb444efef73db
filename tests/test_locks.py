"""Per-process locks: only in directories no other user controls; removed when released; root and the
target's owner exclude each other."""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from pathlib import Path

import pytest

from numamove.locks import BusyError, LockError, TargetLock, _acquire

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="runs as root (and as a made-up user)")


@pytest.mark.parametrize("plant", ["symlink", "others_dir", "group_writable"])
def test_a_lock_directory_someone_else_controls_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           plant: str) -> None:
    """A user's lock directory that is a link, another user's, or writable by others: one line, nothing
    created where it points."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    d = runtime / "numamove"
    if plant == "symlink":
        d.symlink_to(elsewhere)
    else:
        d.mkdir(mode=0o700)
        if plant == "group_writable":  # the user's own, but others may write into it
            os.chown(d, 4242, 4242)
            os.chmod(d, 0o770)
    monkeypatch.setattr(os, "geteuid", lambda: 4242)  # numamove as UID 4242 (others_dir: root's directory)
    me = 4242
    with pytest.raises(LockError) as exc:
        TargetLock(os.getpid(), owner=me).acquire()
    assert "not used" in str(exc.value)
    assert list(elsewhere.iterdir()) == []


@root_only
def test_lock_files_are_removed_and_a_waiter_takes_over() -> None:
    """The holder removes its lock file as it lets go; a run that was waiting then holds a fresh one."""
    first = TargetLock(os.getpid()).acquire()
    path = first.path
    got: list[TargetLock] = []
    t = threading.Thread(target=lambda: got.append(TargetLock(os.getpid(), wait=True, timeout=30).acquire()))
    t.start()
    time.sleep(0.3)
    assert not got  # still waiting
    first.release()
    t.join(timeout=30)
    assert got and os.path.exists(path)
    with pytest.raises(BusyError):
        TargetLock(os.getpid()).acquire()
    got[0].release()
    assert not os.path.exists(path)


@root_only
def test_root_and_the_targets_owner_exclude_each_other() -> None:
    """As root, the lock of the target's owner (in its /run/user/UID) is taken too: that user's run is busy."""
    uid = 4242
    rundir = f"/run/user/{uid}"
    made = not os.path.exists(rundir)
    os.makedirs(rundir, exist_ok=True)
    os.chown(rundir, uid, uid)
    os.chmod(rundir, 0o700)
    try:
        with TargetLock(os.getpid(), owner=uid) as held:
            assert len(held.held) == 2
            theirs = os.path.join(rundir, "numamove", held.held[1].name)
            assert os.stat(theirs).st_uid == uid  # the user's own runs can open it
            with pytest.raises(BusyError):
                _acquire(f"{rundir}/numamove", uid, held.held[1].name, os.getpid(), False, None, [])
        assert not os.path.exists(theirs)
    finally:
        if made:
            shutil.rmtree(rundir)


@root_only
@pytest.mark.parametrize("plant", ["hardlink", "others_file", "fifo"])
def test_what_the_owner_leaves_under_a_lock_files_name_is_refused(tmp_path: Path, plant: str) -> None:
    """Root locks in the target owner's directory, where the owner can leave anything under the lock's name.
    A hard link there to a file of root's (possible where fs.protected_hardlinks is off) was opened and then
    given to the owner by fchown; another owner's file or a FIFO is not a lock numamove made either. Each is
    refused in one line, and the planted file keeps its owner."""
    uid = 4242
    d = tmp_path / "owners"
    d.mkdir(mode=0o700)
    os.chown(d, uid, uid)
    victim = tmp_path / "roots-file"
    victim.write_text("root's\n")
    victim.chmod(0o600)
    name = f"{os.getpid()}-test.lock"
    if plant == "hardlink":
        os.link(victim, d / name)  # root may; where protected_hardlinks is off, so may the owner
    elif plant == "others_file":
        (d / name).write_text("")
        os.chown(d / name, 4343, 4343)
    else:
        os.mkfifo(d / name, 0o600)
        os.chown(d / name, uid, uid)
    with pytest.raises(LockError) as exc:
        _acquire(str(d), uid, name, os.getpid(), False, None, [])
    assert "is not one numamove made" in str(exc.value) and "\n" not in str(exc.value)
    assert os.stat(victim).st_uid == 0
    if plant != "hardlink":
        os.unlink(d / name)
    # a plain file of the owner's own, one link (left by the owner's own run): that one is a lock
    (d / name).unlink(missing_ok=True)
    (d / name).write_text("")
    os.chown(d / name, uid, uid)
    held: list = []  # type: ignore[type-arg]
    _acquire(str(d), uid, name, os.getpid(), False, None, held)
    assert len(held) == 1
    os.close(held[0].fd)
    os.close(held[0].dirfd)


@root_only
@pytest.mark.parametrize("at", ["flock", "stat"])
def test_a_stop_signal_while_locking_or_unlocking_leaves_no_lock_file(monkeypatch: pytest.MonkeyPatch,
                                                                      at: str) -> None:
    """SIGINT arriving right after the lock file is created and flocked, before numamove has recorded it,
    still ends with the file removed (the guest fault suite once found one left after a SIGINT). The signal
    is delivered, as KeyboardInterrupt here, once the file is recorded, and the release removes it."""
    import signal

    import numamove._native as native
    import numamove.locks as locks

    name = f"/run/numamove/{os.getpid()}-test.lock"
    real = {"flock": native.flock, "stat": os.stat}
    fired = []

    def interrupting(*args: object, **kw: object) -> object:
        out = real[at](*args, **kw)  # type: ignore[operator]
        if not fired and sys._getframe(1).f_code.co_filename == locks.__file__:  # numamove's call, not pytest's
            fired.append(True)
            # to this thread, as the kernel delivers a process's signal in single-threaded numamove: with
            # another thread alive (matplotlib's, after the plot test) os.kill's SIGINT went to that thread,
            # which does not hold it back, and Python ran the handler inside the held region
            signal.pthread_kill(threading.get_ident(), signal.SIGINT)  # Python's handler raises at the next bytecode
        return out

    target = native if at == "flock" else locks.os  # locks imports flock from _native when it locks
    # Python's own SIGINT handler, whatever this process inherited: started in the background by a shell
    # without job control, SIGINT is ignored, and the interpreter then installs none
    monkeypatch.setattr(target, at, interrupting)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with TargetLock(os.getpid(), owner=0, start="test"):
                pass
    finally:
        monkeypatch.undo()
        signal.signal(signal.SIGINT, previous)
    assert fired and not os.path.exists(name)


@root_only
def test_a_stop_signal_as_the_with_statement_enters_leaves_no_lock_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """A signal whose handler runs after TargetLock(...) returns and before its __enter__ runs: nothing was
    taken yet, so nothing is left (the lock was once taken in the constructor, and such a signal left the
    file behind, with no __exit__ to remove it). Simulated by __enter__ raising before it runs."""
    import numamove.locks as locks

    name = f"/run/numamove/{os.getpid()}-test.lock"
    real_enter = locks.TargetLock.__enter__

    def interrupted_on_entry(self: TargetLock) -> TargetLock:
        raise KeyboardInterrupt  # what the SIGINT handler raises at __enter__'s first bytecode

    monkeypatch.setattr(locks.TargetLock, "__enter__", interrupted_on_entry)
    with pytest.raises(KeyboardInterrupt):
        with TargetLock(os.getpid(), owner=0, start="test"):
            pass
    monkeypatch.setattr(locks.TargetLock, "__enter__", real_enter)
    assert not os.path.exists(name)
    with TargetLock(os.getpid(), owner=0, start="test") as lock:  # and the real one takes it on entry
        assert lock.path == name and os.path.exists(name)
    assert not os.path.exists(name)
