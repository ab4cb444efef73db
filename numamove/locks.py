"""One numamove at a time per target process: flock on a file in a directory no other user controls.

Which runs exclude which:

* root's runs lock in /run/numamove (root's own, 0700). They also take the lock of the target
  process's owner in /run/user/UID/numamove when that user has a runtime directory (a login
  session or a systemd user service), so a root run and that user's run exclude each other;
* a user's runs lock in $XDG_RUNTIME_DIR/numamove, else /run/user/UID/numamove, else
  ~/.cache/numamove/locks. Two runs of one user exclude each other; a user's run whose locks
  are in ~/.cache (no runtime directory: a cron job without a session) is not seen by root's.

Every directory is checked with lstat before use: a directory, not a symbolic link, owned by
the user it is for, writable by nobody else; numamove creates it 0700 when it is missing, and
refuses with one line when someone else's (a predictable name in a shared directory is never
trusted). Lock files are opened relative to the directory's descriptor without following
links, and removed when released: a run that was waiting on a removed file finds it gone
after its flock and takes the new one.
"""

from __future__ import annotations

import os
import stat
import time

from .errors import NumamoveError

EXIT_BUSY = 4


class LockError(NumamoveError, OSError):
    """The per-process lock file cannot be created (or its directory cannot be trusted)."""


class BusyError(NumamoveError):
    """Another numamove is migrating the same process."""

    exit_code = EXIT_BUSY


def _trusted(path: str, uid: int, create: bool) -> int:
    """A descriptor of the directory path: created 0700 for uid when missing (if create), else refused
    unless it is a real directory owned by uid that only uid can write."""
    if create:
        try:
            os.mkdir(path, 0o700)
            if os.geteuid() != uid:
                os.chown(path, uid, -1, follow_symlinks=False)
        except FileExistsError:
            pass
        except OSError as exc:
            raise LockError(f"cannot create the lock directory {path}: {exc.strerror}") from None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        what = "is a symbolic link" if exc.errno in (40, 20) else exc.strerror  # ELOOP, ENOTDIR
        raise LockError(f"lock directory {path} {what}: not used") from None
    st = os.fstat(fd)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid or st.st_mode & 0o022:
        os.close(fd)
        raise LockError(f"lock directory {path} belongs to UID {st.st_uid} (mode {stat.S_IMODE(st.st_mode):o}), "
                        f"not to UID {uid} alone: not used; remove it or set XDG_RUNTIME_DIR")
    return fd


def _user_dir(uid: int) -> str:
    """Where a user's runs lock (see the module's doc)."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return os.path.join(xdg, "numamove")
    if os.path.isdir(f"/run/user/{uid}"):
        return f"/run/user/{uid}/numamove"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    os.makedirs(os.path.join(base, "numamove"), mode=0o700, exist_ok=True)
    return os.path.join(base, "numamove", "locks")


def lock_dirs(owner: int | None) -> list[tuple[str, int]]:
    """(directory, the UID it belongs to) this run locks in, for a target owned by owner."""
    me = os.geteuid()
    if me != 0:
        return [(_user_dir(me), me)]
    dirs = [("/run/numamove", 0)]
    if owner is not None and owner != 0 and os.path.isdir(f"/run/user/{owner}"):
        dirs.append((f"/run/user/{owner}/numamove", owner))
    return dirs


class _Held:
    __slots__ = ("dirfd", "name", "fd", "path")

    def __init__(self, dirfd: int, name: str, fd: int, path: str) -> None:
        self.dirfd, self.name, self.fd, self.path = dirfd, name, fd, path


def _acquire(d: str, uid: int, name: str, pid: int, wait: bool, deadline: float | None, held: list[_Held]) -> None:
    """Take the lock file name in d and append it to held. A stop signal (whose handler raises) waits while
    the file is created and locked until it is in held, where release() finds it: otherwise a signal
    between the open and the append left the file behind. The --wait sleep between tries is not held back."""
    from ._native import LOCK_EX, LOCK_NB, StopSignalsHeld, flock

    dirfd = _trusted(d, uid, create=True)
    path = os.path.join(d, name)
    while True:
        with StopSignalsHeld():
            try:
                fd = _open_lock(dirfd, name, uid, path)
                if fd < 0:  # an existing lock file went with its holder between two looks
                    continue
            except LockError:  # (an OSError too)
                os.close(dirfd)
                raise
            except OSError as exc:
                os.close(dirfd)
                raise LockError(f"cannot create the lock file {path}: {exc.strerror}") from None
            try:
                flock(fd, LOCK_EX | LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                busy = True
            else:
                busy = False
                # the holder before us may have removed the file as it let go: ours must still be the one named
                try:
                    same = os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    held.append(_Held(dirfd, name, fd, path))
                    return
                os.close(fd)
        if busy:
            if not wait or (deadline is not None and time.monotonic() > deadline):
                os.close(dirfd)
                raise BusyError(f"another numamove is migrating PID {pid} (lock {path}); "
                                "use --wait to wait for it") from None
            time.sleep(0.1)


def _open_lock(dirfd: int, name: str, uid: int, path: str) -> int:
    """The lock file name in the directory dirfd (uid's), created for uid, or the one there already if it is
    a plain file of uid's own with one link. Root locks in the target owner's directory, where the owner
    can leave anything under the name: a hard link to a file of root's (where fs.protected_hardlinks is
    off) would have been opened and then given to the owner by the fchown below. -1: the file there went
    away between the two opens (try again)."""
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(name, flags | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=dirfd)
    except FileExistsError:
        try:
            fd = os.open(name, flags | os.O_NONBLOCK, dir_fd=dirfd)  # O_NONBLOCK: a FIFO under the name
        except FileNotFoundError:
            return -1
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_uid != uid:
            os.close(fd)
            what = "not a regular file" if not stat.S_ISREG(st.st_mode) else \
                f"{st.st_nlink} links" if st.st_nlink != 1 else f"owned by UID {st.st_uid}"
            raise LockError(f"lock file {path} is not one numamove made ({what}): not used; remove it") from None
        return fd
    if os.geteuid() != uid:
        try:
            os.fchown(fd, uid, -1)  # the owner's own runs must open it too
        except OSError:
            os.close(fd)
            os.unlink(name, dir_fd=dirfd)
            raise
    return fd


class TargetLock:
    """flocks on a file per target process (PID + start time), taken as the `with` block enters (or by
    acquire()); released, and removed, when numamove is done with the process; the kernel releases them
    when numamove dies.

    Constructing one takes nothing: a stop signal delivered between the constructor and the `with`
    statement's __enter__ (a window Python's signal handlers can run in) would otherwise leave a taken
    lock that no __exit__ releases. Inside __enter__ any exception, a signal's included, releases what
    was taken before it propagates."""

    def __init__(self, pid: int, wait: bool = False, timeout: float | None = None, owner: int | None = None,
                 start: str | None = None) -> None:
        from .proc import _status_start_time, process_owner

        self.pid = pid
        self.start = start if start is not None else _status_start_time(pid)
        self.owner = owner if owner is not None else process_owner(pid)
        self.wait = wait
        self.timeout = timeout
        self.held: list[_Held] = []
        self.path = ""

    def __enter__(self) -> TargetLock:
        """Take every lock (see the module's doc); BusyError when another run holds one, LockError when a
        file or directory cannot be used."""
        try:
            deadline = None if self.timeout is None else time.monotonic() + self.timeout
            for d, uid in lock_dirs(self.owner):
                _acquire(d, uid, f"{self.pid}-{self.start}.lock", self.pid, self.wait, deadline, self.held)
                self.path = self.path or self.held[-1].path
            return self  # inside the try: nothing runs between the last lock and the with block's protection
        except BaseException:
            self.release()
            raise

    def acquire(self) -> TargetLock:
        """Take the locks outside a `with` block (release() lets go)."""
        return self.__enter__()

    def release(self) -> None:
        from ._native import LOCK_UN, StopSignalsHeld, flock

        with StopSignalsHeld():  # a signal between the pop and the unlink would leave the file behind
            while self.held:
                h = self.held.pop()
                try:
                    os.unlink(h.name, dir_fd=h.dirfd)  # while still held: a waiter then sees it gone
                except OSError:
                    pass
                flock(h.fd, LOCK_UN)
                os.close(h.fd)
                os.close(h.dirfd)

    def __exit__(self, *exc: object) -> None:
        self.release()
