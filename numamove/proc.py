"""Processes as migration targets: selecting them, their pages, where those pages are, and locking.

Threads of one process share one address space, so targets are thread-group
leaders (Tgid): `numamove proc 1234 1235` with two threads of one process
migrates that address space once.
"""

from __future__ import annotations

import os

from .errors import NumamoveError, UsageError
from .locks import BusyError, LockError, TargetLock  # noqa: F401 - numamove.proc's API
from .text import decode, open_text, printable

TYPE_CHECKING = False  # typing's own constant to mypy; importing typing costs start-up ~4 ms
if TYPE_CHECKING:
    from typing import Any

PF_KTHREAD = 0x00200000


class ProcessError(NumamoveError):
    """A target process cannot be migrated (gone, a kernel thread, not permitted)."""


class NoSuchProcessError(ProcessError, ProcessLookupError):
    """No process with that PID (or it exited)."""


class KernelThreadError(ProcessError):
    """A kernel thread has no user address space."""


class AccessError(ProcessError, PermissionError):
    """Not allowed to read or move that process's pages."""


class PidReusedError(ProcessError):
    """The process exited and another one took its PID."""


class Target:
    """A process to migrate: its thread-group leader, the PIDs/TIDs named that share its address
    space, and its start time (a PID reused by another process has another one)."""

    __slots__ = ("pid", "name", "cmdline", "asked", "start", "in_group")

    def __init__(self, pid: int, name: str, cmdline: str, asked: tuple[int, ...], start: str = "") -> None:
        self.pid = pid
        self.name = name
        self.cmdline = cmdline
        self.asked = asked
        self.start = start
        self.in_group = False  # found in --cgroup/--unit's group: moved only while it is still there

    def check_same(self) -> None:
        """Raise PidReusedError if the PID now belongs to another process, NoSuchProcessError if to none."""
        if self.start and _status_start_time(self.pid) != self.start:
            raise PidReusedError(f"PID {self.pid} ({self.name}) exited and its PID now belongs to another "
                                 "process: not moved")


def _status_field(pid: int, key: str) -> str:
    try:
        with open_text(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return line.split(":", 1)[1].strip()
    except FileNotFoundError:
        raise NoSuchProcessError(f"no process with PID {pid}") from None
    except PermissionError:
        raise AccessError(f"not allowed to read /proc/{pid}/status") from None
    raise NoSuchProcessError(f"PID {pid}: /proc/{pid}/status has no {key}")


def is_kernel_thread(pid: int) -> bool:
    try:
        with open_text(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except FileNotFoundError:
        raise NoSuchProcessError(f"no process with PID {pid}") from None
    fields = stat.rsplit(")", 1)[1].split()
    return bool(int(fields[6]) & PF_KTHREAD)


def resolve_targets(pids: list[int], name: str | None = None) -> tuple[list[Target], list[tuple[int, ProcessError]]]:
    """PIDs and a --name regex to thread-group leaders, each once, in the order given.

    Returns:
        The targets, and (PID, why) for each named PID that cannot be one (gone, a kernel thread,
        not readable): one bad PID never stops the others.

    Raises:
        UsageError: a PID <= 0, a bad regex. NoSuchProcessError: --name matches nothing and no
        PID was named.
    """
    asked: dict[int, list[int]] = {}
    bad: list[tuple[int, ProcessError]] = []
    for pid in pids:
        if pid <= 0:
            raise UsageError(f"invalid PID {pid}")
        try:
            if is_kernel_thread(pid):
                raise KernelThreadError(f"PID {pid} is a kernel thread: it has no user memory to move")
            tgid = int(_status_field(pid, "Tgid"))
        except ProcessError as exc:
            bad.append((pid, exc))
            continue
        asked.setdefault(tgid, []).append(pid)
    if name is not None:
        import re

        import psutil

        try:
            rx = re.compile(name)
        except re.error as exc:
            raise UsageError(f"invalid --name regex '{name}': {exc}") from None
        mine = _self_and_ancestors()
        found = 0
        for p in psutil.process_iter(["pid", "name", "cmdline"]):
            info: dict[str, Any] = p.info
            if info["pid"] in mine or not info.get("cmdline"):
                # numamove, and what started it (`sudo numamove ... --name x`, `sh -c '...'` hold
                # the pattern in their own command lines); kernel threads and zombies have no cmdline
                continue
            if rx.search(info["name"] or "") or rx.search(" ".join(info["cmdline"])):
                asked.setdefault(info["pid"], []).append(info["pid"])
                found += 1
        if not found and not pids:
            raise NoSuchProcessError(f"no process matches --name '{name}'")
    out = []
    for tgid, given in asked.items():
        try:
            start = _status_start_time(tgid)
        except NoSuchProcessError as exc:
            bad.append((tgid, exc))
            continue
        out.append(Target(tgid, _comm(tgid), _cmdline(tgid), tuple(given), start))
    return out, bad


def _self_and_ancestors() -> set[int]:
    """This process and every process above it, up to init."""
    out: set[int] = set()
    pid = os.getpid()
    while pid > 0 and pid not in out:
        out.add(pid)
        try:
            pid = int(_status_field(pid, "PPid"))
        except (ProcessError, ValueError):
            break
    return out


def _comm(pid: int) -> str:
    try:
        with open_text(f"/proc/{pid}/comm") as fh:
            return printable(fh.read().rstrip("\n"))
    except OSError:
        return "?"


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return printable(decode(fh.read().rstrip(b"\0").replace(b"\0", b" ")))
    except OSError:
        return ""


def mems_allowed(pid: int) -> list[int]:
    from .nodelist import parse_list

    return parse_list(_status_field(pid, "Mems_allowed_list"), None, "node")


CAP_SYS_PTRACE = 19
CAP_SYS_NICE = 23


def access_hint() -> str:
    """What to do about the kernel's ptrace check refusing a process: as root, say why root was not enough."""
    if os.geteuid() == 0:
        return ("even as root: the process holds capabilities numamove lacks (numamove may be running in a "
                "container or under a reduced bounding set), or a security module (YAMA, SELinux, AppArmor) "
                "refuses it")
    return "run as its owner or root, or with CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH"


def has_capability(cap: int) -> bool:
    """Whether this process holds capability number cap in its effective set (root holds them all)."""
    try:
        with open_text("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> cap & 1)
    except OSError:
        pass
    return os.geteuid() == 0


def exiting(pid: int) -> bool:
    """Whether pid is gone, a zombie, or past giving up its memory (PF_EXITING in /proc/PID/stat's flags):
    then move_pages answers EINVAL, the kernel's find_mm_struct finding no mm."""
    try:
        fields = _stat_fields(pid)
        return fields[0] in ("Z", "X", "x") or bool(int(fields[6]) & 0x4)
    except (OSError, ValueError, IndexError):
        return True


def process_owner(pid: int) -> int:
    """The real UID of a process (its first Uid)."""
    return int(_status_field(pid, "Uid").split()[0])


def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat's fields after the command name (which may hold anything): state first."""
    with open_text(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()


def _status_start_time(pid: int) -> str:
    try:
        return _stat_fields(pid)[19]
    except FileNotFoundError:
        raise NoSuchProcessError(f"no process with PID {pid}") from None


def _running(comm: str) -> bool:
    """Whether a process named comm runs: a /proc scan (psutil's import would cost more than it), in bytes
    through bare descriptors. Opening each comm file as text cost 16 us a process on the development VM,
    32 ms on a machine running 2000; os.open and os.read cost a third of that."""
    want = comm.encode() + b"\n"
    flags = os.O_RDONLY | os.O_CLOEXEC
    with os.scandir("/proc") as entries:  # closed on the early return too
        for entry in entries:
            name = entry.name
            if name.isdigit():
                try:
                    fd = os.open(f"/proc/{name}/comm", flags)
                except OSError:  # gone since the listing, or hidden (hidepid)
                    continue
                try:
                    if os.read(fd, 64) == want:
                        return True
                except OSError:
                    pass
                finally:
                    os.close(fd)
    return False


def environment_warnings() -> list[str]:
    """Things that can move pages back after numamove has moved them."""
    out = []
    try:
        with open("/proc/sys/kernel/numa_balancing") as fh:
            if fh.read().strip() not in ("0", ""):
                out.append("automatic NUMA balancing is on (kernel.numa_balancing): "
                           "the kernel may move pages back")
    except OSError:
        pass
    try:
        if _running("numad"):
            out.append("numad is running: it may move pages back")
    except OSError:  # a warning must never stop a migration
        pass
    return out


__all__ = ["BusyError", "LockError", "Target", "TargetLock", "resolve_targets"]
