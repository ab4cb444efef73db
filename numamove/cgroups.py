"""Control groups (cgroup v2) and systemd units as migration targets, and the cpuset hand-over.

A group is opened once, as a directory descriptor walked down from the cgroup2 mount one
component at a time without following links, and everything after (its processes, its
cpuset files, memory.numa_stat, the subtree) is read and written relative to that
descriptor: a path swapped under numamove cannot redirect it.

The hand-over (`proc --cgroup ... --set-mems`): when the destination is outside a group's
cpuset.mems, the group's mems are first widened to include it (a strict superset: the
kernel's own migration, do_migrate_pages, moves nothing for a node that stays allowed),
numamove moves the pages, and only then is cpuset.mems set to the destination, so the
migration the kernel runs on that write (cgroup v2 always migrates, since 5.15) finds
nothing left to move and the write returns quickly.
"""

from __future__ import annotations

import errno
import os
import time

from .errors import NodeUnavailableError, NumamoveError, UsageError
from .text import open_text, printable

TYPE_CHECKING = False  # typing's own constant to mypy; importing typing costs start-up ~4 ms
if TYPE_CHECKING:
    from typing import Any

CGROUP2_SUPER_MAGIC = 0x63677270


class CgroupError(UsageError):
    """No such cgroup, not a cgroup v2 path, no such unit: input that cannot name a group (exit 2)."""


class CpusetError(NumamoveError):
    """The cpuset hand-over cannot be done here (no cpuset controller, cgroup v1, a parent's limit)."""


def _mounts() -> list[tuple[str, str, str]]:
    """(root within the file system, mount point, file system type) of every mount, from mountinfo."""
    from .maps import mounts

    return [(root, mp, fs) for _dev, root, mp, fs in mounts()]


def cgroup2_mount() -> str:
    """Where the cgroup v2 hierarchy is mounted (its root, not a bind of a subgroup)."""
    found = [mp for root, mp, fs in _mounts() if fs == "cgroup2"]
    if not found:
        raise CgroupError("no cgroup v2 file system is mounted here (cgroup v1 only): --cgroup and --unit "
                          "need cgroup v2 (mount -t cgroup2 none /sys/fs/cgroup)")
    return "/sys/fs/cgroup" if "/sys/fs/cgroup" in found else found[0]


def v1_controller_mount(controller: str) -> str | None:
    """The mount point of a cgroup v1 hierarchy holding controller, if any (a hybrid system)."""
    for _root, mp, fs in _mounts():
        if fs == "cgroup" and os.path.basename(mp) in (controller, f"{controller},cpu"):
            return mp
        if fs == "cgroup" and controller in os.path.basename(mp).split(","):
            return mp
    return None


class Cgroup:
    """One cgroup v2 group, held by a directory descriptor. rel is its path in the hierarchy ("/a/b")."""

    def __init__(self, fd: int, rel: str, mount: str) -> None:
        self.fd = fd
        self.rel = rel
        self.mount = mount
        # kernel threads found in the group (the root group holds them): no user memory, nothing to move
        self.kernel_threads: set[int] = set()
        # numamove's own PID when it runs inside the group it moves (a service's ExecStartPost, `--cgroup /`):
        # its pages are the tool's own, briefly; not a target
        self.myself: int | None = None

    @property
    def path(self) -> str:
        return self.mount + (self.rel if self.rel != "/" else "")

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Cgroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, name: str, dir_fd: int | None = None) -> str | None:
        """The text of one of the group's files (or a descendant's, by its dir_fd); None when absent."""
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                         dir_fd=self.fd if dir_fd is None else dir_fd)
        except FileNotFoundError:
            return None
        try:
            chunks = []
            while True:
                b = os.read(fd, 65536)
                if not b:
                    break
                chunks.append(b)
            return b"".join(chunks).decode()
        except OSError as exc:
            if exc.errno == errno.ENODEV:  # the group was removed after it was opened
                return None
            raise
        finally:
            os.close(fd)

    def write(self, name: str, value: str, dir_fd: int | None = None) -> None:
        fd = os.open(name, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.fd if dir_fd is None else dir_fd)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)

    def walk(self) -> Any:
        """(path relative to the group, directory descriptor) of the group and every descendant, top-down."""
        for dirpath, _dirs, _files, dfd in os.fwalk(".", dir_fd=self.fd, follow_symlinks=False):
            yield ("" if dirpath == "." else dirpath[2:]), dfd

    def processes(self) -> list[int]:
        """The PID of every process in the subtree."""
        out = []
        for _sub, dfd in self.walk():
            out += [int(line) for line in (self.read("cgroup.procs", dfd) or "").split()]
        return out

    def contains(self, pid: int) -> bool:
        """Whether pid is (still) in this group's subtree, from /proc/PID/cgroup."""
        try:
            with open_text(f"/proc/{pid}/cgroup") as fh:
                for line in fh:
                    if line.startswith("0::"):
                        where = line[3:].strip()
                        return self.rel == "/" or where == self.rel or where.startswith(self.rel + "/")
        except OSError:
            return False
        return False

    def numa_stat(self) -> dict[str, dict[int, int]] | None:
        """memory.numa_stat: kind -> node -> bytes; None without the memory controller."""
        text = self.read("memory.numa_stat")
        if text is None:
            return None
        out: dict[str, dict[int, int]] = {}
        for line in text.splitlines():
            kind, *cells = line.split()
            row = out.setdefault(kind, {})
            for c in cells:
                if c.startswith("N") and "=" in c:
                    n, v = c[1:].split("=", 1)
                    row[int(n)] = int(v)
        return out


def open_cgroup(spec: str) -> Cgroup:
    """Open the group spec names: a path under the cgroup2 mount, or a path relative to it (as
    /proc/PID/cgroup, `docker inspect` and `systemctl show -p ControlGroup` give them).

    Raises:
        CgroupError: empty, '..', no such group, a file, a path outside cgroup v2.
    """
    if not spec or not spec.strip():
        raise CgroupError("invalid --cgroup: empty path")
    mount = cgroup2_mount()
    text = spec.rstrip("/") or "/"
    if text == mount or text.startswith(mount + "/"):
        rel = text[len(mount):] or "/"
    elif (text.startswith("/") and os.path.lexists(text) and not _under_v2(text)
          and not os.path.lexists(mount + text)):
        # a path on another file system, and no group of that name: "/" always names the root group
        # (/proc/PID/cgroup's "0::/"), whatever the file system's own root is
        raise CgroupError(f"{spec} is not a cgroup v2 group (the cgroup v2 hierarchy is mounted at {mount}"
                          f"{_v1_hint(text)})")
    else:
        rel = "/" + text.lstrip("/")
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise CgroupError(f"invalid --cgroup {spec}: '..' is not allowed")
    rel = "/" + "/".join(parts)
    fd = os.open(mount, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        from . import _native

        if _native.fs_type(fd) != CGROUP2_SUPER_MAGIC:
            raise CgroupError(f"{mount} is not a cgroup v2 file system")
        for i, p in enumerate(parts):
            try:
                nfd = os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except (FileNotFoundError, NotADirectoryError) as exc:
                where = "/" + "/".join(parts[:i + 1])
                what = "is a file, not a group" if isinstance(exc, NotADirectoryError) else "does not exist"
                raise CgroupError(f"no such cgroup: {rel} ({mount}{where} {what})") from None
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise CgroupError(f"invalid --cgroup {spec}: {p} is a symbolic link") from None
                raise
            os.close(fd)
            fd = nfd
        if not os.path.exists(f"/proc/self/fd/{fd}/cgroup.procs"):
            raise CgroupError(f"{spec} is not a cgroup (no cgroup.procs)")
    except BaseException:
        os.close(fd)
        raise
    return Cgroup(fd, rel, mount)


def _under_v2(path: str) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        from . import _native

        return bool(_native.fs_type(fd) == CGROUP2_SUPER_MAGIC)
    finally:
        os.close(fd)


def _v1_hint(path: str) -> str:
    for _root, mp, fs in _mounts():
        if fs == "cgroup" and (path == mp or path.startswith(mp + "/")):
            return f"; {mp} is a cgroup v1 hierarchy"
    return ""


def remove_group(path: str, kill: bool = True) -> None:
    """Remove a group made for a demo, test or benchmark (its path under the cgroup2 mount) and its
    subgroups, deepest first, killing what still runs in them (cgroup.kill) and waiting up to 5 s
    a group for its processes to be gone."""
    for sub, _dirs, _files in sorted(os.walk(path), key=lambda w: -len(w[0])):
        if kill:
            try:
                with open(f"{sub}/cgroup.kill", "w") as fh:
                    fh.write("1")
            except OSError:
                pass  # before 5.14: the caller has killed its processes
        for _ in range(50):
            try:
                os.rmdir(sub)
                break
            except OSError:
                time.sleep(0.1)


def unit_cgroup(unit: str) -> str:
    """A systemd unit's control group ("/system.slice/nginx.service"), from `systemctl show`.

    Raises:
        CgroupError: a malformed name, no systemctl, no such unit.
        NumamoveError: the unit exists but is not running (it has no group).
    """
    import subprocess

    if not unit or unit.startswith("-") or "/" in unit or any(c.isspace() for c in unit):
        raise CgroupError(f"invalid --unit '{unit}': give a unit name such as nginx.service")
    try:
        res = subprocess.run(["systemctl", "show", "--property=LoadState,ActiveState,ControlGroup", "--", unit],
                             capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise CgroupError("--unit needs systemctl (systemd), which is not installed: give the unit's group "
                          "with --cgroup") from None
    except subprocess.TimeoutExpired:
        raise NumamoveError(f"systemctl show {unit} did not answer in 30 s") from None
    if res.returncode != 0:
        msg = (res.stderr.strip().splitlines() or [f"exit status {res.returncode}"])[-1]
        raise NumamoveError(f"systemctl show {unit} failed: {msg}")
    props = dict(line.split("=", 1) for line in res.stdout.splitlines() if "=" in line)
    if props.get("LoadState") == "not-found":
        raise CgroupError(f"no such systemd unit: {unit}")
    group = props.get("ControlGroup", "")
    if not group:
        raise NumamoveError(f"systemd unit {unit} is {props.get('ActiveState') or 'not running'}: "
                            "it has no control group, so no processes to move")
    return group


def parse_rate(text: str) -> float:
    """--rate: bytes per second, binary units ("200M", "1.5G", "200MiB/s").

    Raises:
        UsageError: not a size, or not greater than zero.
    """
    from .errors import SizeError
    from .nodelist import parse_size

    t = text.strip()
    t = t[:-2] if t.lower().endswith("/s") else t
    try:
        return float(parse_size(t))
    except SizeError:
        raise UsageError(f"invalid value for --rate: '{text}' is not a rate greater than zero "
                         "(bytes per second, e.g. 200M for 200 MiB/s)") from None


# --------------------------------------------------------------------------- cpuset


def _nodes_text(nodes: list[int] | frozenset[int] | set[int]) -> str:
    from .nodelist import format_list

    return format_list(sorted(nodes)) or "(none)"


class Handover:
    """The cpuset side of a group move: which groups' cpuset.mems exclude the destination, widening
    them before the move, and setting them to the destination afterwards (--set-mems)."""

    def __init__(self, group: Cgroup, to: int, set_mems: bool, dry_run: bool = False) -> None:
        self.group = group
        self.to = to
        self.set_mems = set_mems
        self.dry_run = dry_run  # say what would be written, write nothing
        self.enabled = group.read("cpuset.mems.effective") is not None
        self.before: dict[str, str] = {}  # relative group -> cpuset.mems as it was (explicit value)
        self.widened: dict[str, str] = {}  # relative group -> the value written before the move
        self.final: dict[str, str] = {}  # relative group -> the value written after the move
        self.write_seconds: dict[str, float] = {}
        self.state = "unchanged"

    def _groups(self) -> list[tuple[str, int, str, list[int], bool]]:
        """(relative path, a descriptor, cpuset.mems, cpuset.mems.effective, has processes) of each group
        in the subtree that has the cpuset controller, top-down."""
        from .nodelist import parse_list

        out = []
        for sub, dfd in self.group.walk():
            mems = self.group.read("cpuset.mems", dfd)
            eff = self.group.read("cpuset.mems.effective", dfd)
            if eff is None:
                continue
            busy = bool((self.group.read("cgroup.procs", dfd) or "").strip())
            out.append((sub, os.dup(dfd), (mems or "").strip(), parse_list(eff.strip(), None, "node")
                        if eff.strip() else [], busy))
        return out

    def _require_controller(self) -> None:
        if self.enabled:
            return
        v1 = v1_controller_mount("cpuset")
        if v1:
            raise CpusetError(f"--set-mems: the cpuset controller is on cgroup v1 here (mounted at {v1}), "
                              f"not on the cgroup v2 group {self.group.rel}")
        parent = os.path.dirname(self.group.path)
        raise CpusetError(f"--set-mems: the cpuset controller is not enabled for {self.group.rel} "
                          f"(enable it with: echo +cpuset > {parent}/cgroup.subtree_control)")

    def prepare(self) -> None:
        """Check that every group with processes allows the destination; with --set-mems, widen
        those that do not (the top group first). Raises NodeUnavailableError / CpusetError."""
        if self.set_mems:
            self._require_controller()
            if self.group.rel == "/":
                raise CpusetError("--set-mems: the root cgroup has no cpuset.mems; name a group")
        if not self.enabled:
            return
        groups = self._groups()
        try:
            outside = [(sub, fd, mems, eff) for sub, fd, mems, eff, _busy in groups if self.to not in eff]
            if not self.set_mems:
                # only groups with processes matter here: an empty subgroup's cpuset moves nobody's pages
                for sub, _fd, _mems, eff, busy in groups:
                    if busy and self.to not in eff:
                        raise NodeUnavailableError(
                            f"node {self.to} is outside cpuset.mems.effective of cgroup {self._name(sub)} "
                            f"({_nodes_text(eff)}): add --set-mems to move the pages and then hand the group "
                            f"over to node {self.to}")
                return
            from .nodelist import parse_list

            if outside:
                self._require_parent_allows()
            for sub, fd, mems, eff in outside:
                if not mems and sub:
                    continue  # inherits from its parent, widened above it
                now = set(parse_list(mems, None, "node")) if mems else set(eff)
                value = _nodes_text(now | {self.to})
                self.before[sub or "."] = mems
                if self.dry_run:
                    self.widened[sub or "."] = value
                    self.state = "dry run"
                    continue
                try:
                    self.group.write("cpuset.mems", value, fd)
                except OSError as exc:
                    left = self.undo()
                    raise CpusetError(f"--set-mems: cannot widen cpuset.mems of {self._name(sub)} to {value}: "
                                      f"{exc.strerror}{left}") from None
                self.widened[sub or "."] = value
                self.state = "widened"
            for sub, fd, _mems, _eff, _busy in groups if not self.dry_run else []:
                eff_text = (self.group.read("cpuset.mems.effective", fd) or "").strip()
                eff_now = parse_list(eff_text, None, "node") if eff_text else []
                if self.to not in eff_now:
                    left = self.undo()
                    raise CpusetError(f"--set-mems: node {self.to} stays outside cpuset.mems.effective of "
                                      f"{self._name(sub)} ({_nodes_text(eff_now)}) after widening: a group "
                                      f"above it excludes the node{left}")
        finally:
            for g in groups:
                os.close(g[1])

    def _name(self, sub: str) -> str:
        """A descendant's path for reports: its name is whatever the group's owner made it (a delegated
        subtree's user), so printable."""
        return self.group.rel if not sub or sub == "." else printable(f"{self.group.rel.rstrip('/')}/{sub}")

    def _fd(self, sub: str) -> int:
        if sub in ("", "."):
            return os.dup(self.group.fd)
        return os.open(sub, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.group.fd)

    def _require_parent_allows(self) -> None:
        """The group's parent must allow the destination: widening the group itself cannot get past its
        parent's cpuset.mems.effective, and a group with processes can never be set back to inheriting
        its parent's mems (the kernel refuses empty mems for a populated cpuset), so this is checked
        before anything is written."""
        from .nodelist import parse_list

        fd = os.open("..", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.group.fd)
        try:
            eff = (self.group.read("cpuset.mems.effective", fd) or "").strip()
        finally:
            os.close(fd)
        nodes = parse_list(eff, None, "node") if eff else []
        if eff and self.to not in nodes:
            parent = os.path.dirname(self.group.rel.rstrip("/")) or "/"
            raise CpusetError(f"--set-mems: node {self.to} is outside cpuset.mems.effective of the parent group "
                              f"{parent} ({_nodes_text(nodes)}): numamove widens only the group itself and the "
                              "groups below it")

    def undo(self) -> str:
        """Put back what prepare() widened (nothing has moved yet: nothing to migrate back); what could not
        be put back, as text to append to a message ("" when all was)."""
        failed = []
        for sub in reversed(list(self.widened)):
            fd = self._fd(sub)
            try:
                # "\n", not "": the kernel never sees a zero-length write; an empty value means "inherit
                # the parent's" (refused for a group with processes: then it stays widened, and says so)
                self.group.write("cpuset.mems", self.before[sub] or "\n", fd)
            except OSError as exc:
                failed.append(f"cpuset.mems of {self._name(sub)} left at {self.widened[sub]} "
                              f"({exc.strerror})")
            finally:
                os.close(fd)
        self.widened.clear()
        self.state = "unchanged"
        return "; " + "; ".join(failed) if failed else ""

    def finish(self) -> None:
        """--set-mems after the move: cpuset.mems of the group (and of each descendant that sets its own)
        to the destination, deepest first, each write timed (the kernel's migration runs inside it)."""
        if not self.set_mems:
            return
        targets = []
        for sub, dfd in self.group.walk():
            mems = self.group.read("cpuset.mems", dfd)
            if mems is None:
                continue
            if (mems.strip() or not sub) and mems.strip() != str(self.to):
                targets.append((sub or ".", mems.strip()))
        if self.dry_run:
            self.final = {sub: str(self.to) for sub, _mems in reversed(targets)}
            self.before.update({sub: mems for sub, mems in targets if sub not in self.before})
            return
        for sub, mems in reversed(targets):
            fd = self._fd(sub)
            try:
                self.before.setdefault(sub, mems)
                t0 = time.perf_counter()
                self.group.write("cpuset.mems", str(self.to), fd)
                self.write_seconds[sub] = time.perf_counter() - t0
                self.final[sub] = str(self.to)
            except OSError as exc:
                raise CpusetError(f"--set-mems: writing cpuset.mems={self.to} for {self._name(sub)} failed: "
                                  f"{exc.strerror} (the pages moved; the group's cpuset is unchanged)") from None
            finally:
                os.close(fd)
        self.state = "handed over"

    def summary(self) -> list[str]:
        lines = []
        if self.dry_run:
            for sub, value in self.widened.items():
                lines.append(f"would widen cpuset.mems of {self._name(sub)} to {value} before the move")
            for sub, value in self.final.items():
                lines.append(f"would set cpuset.mems of {self._name(sub)} to {value} after it "
                             f"(now {self.before.get(sub) or 'inherited'})")
            return lines
        for sub, value in self.widened.items():
            if sub not in self.final:
                was = self.before[sub] or "inherited"
                lines.append(f"cpuset.mems of {self._name(sub)} left at {value} (was {was}): "
                             f"the move did not finish; run again to hand it over to node {self.to}")
        for sub, value in self.final.items():
            lines.append(f"cpuset.mems of {self._name(sub)}: {self.before.get(sub) or 'inherited'} -> {value} "
                         f"(the write, and the kernel's migration of what was left, took "
                         f"{self.write_seconds[sub] * 1e3:.1f} ms)")
        return lines

    def to_json(self) -> dict[str, Any]:
        return {"controller": self.enabled, "set_mems": self.set_mems, "dry_run": self.dry_run, "state": self.state,
                "mems_before": dict(self.before), "widened": dict(self.widened), "mems_after": dict(self.final),
                "write_seconds": dict(self.write_seconds)}
