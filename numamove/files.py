"""`numamove file`: move the pages of tmpfs and hugetlbfs files in place.

numamove maps the file shared, maps each of its resident pages (found with mincore,
so holes are never filled), and moves them with the same pinned move_pages
batches as `proc`: every process that has the file mapped keeps working and reads
from the new node. MPOL_MF_MOVE_ALL (root, or CAP_SYS_NICE) is needed for pages
other processes map too; without it those are skipped with the hint. Afterwards
the file's shared policy prefers the node (tmpfs keeps one per file), so pages the
file gets later come from there too, while that node has free memory.
"""

from __future__ import annotations

import errno
import mmap
import os
import stat

from . import _native
from .errors import NativeError, NumamoveError, UsageError
from .pagemove import MoveOptions, TargetReport, move_pageset
from .planner import Plan
from .proc import CAP_SYS_NICE, Target, has_capability
from .scan import PageSet, collect
from .text import open_text, printable
from .topology import Topology

TYPE_CHECKING = False  # typing's own constant to mypy: `file`'s fast path imports neither typing,
if TYPE_CHECKING:  # collections.abc nor dataclasses (~25 ms of start-up together, with inspect and re)
    from collections.abc import Callable
    from typing import Any


def fs_type(path: str) -> tuple[str, str]:
    """(file system type, mount point) of the mount holding path, from /proc/self/mountinfo."""
    from .maps import mounts

    real = os.path.realpath(path)
    best = ("", "/")
    for _dev, _root, mnt, fstype in mounts():
        inside = real == mnt or real.startswith(mnt.rstrip("/") + "/")
        if inside and len(mnt) >= len(best[1]):
            best = (fstype, mnt)
    return best


def data_extents(fd: int, size: int, align: int = mmap.PAGESIZE, gap: int = 0,
                 exact: bool = True) -> list[tuple[int, int]]:
    """[start, end) byte ranges of the open file's data (SEEK_DATA, SEEK_HOLE), widened to align and
    merged where they touch or a hole of at most gap bytes parts them, the last end clipped to size:
    what holds bytes, the rest being holes. A file system that cannot tell reports the whole file as
    data (the kernel's generic lseek does so). A file whose blocks cover its size has no holes and is
    not walked (tmpfs finds a hole by walking the page cache: 5 ms a GiB of data).

    Not exact: a file at least half allocated is taken whole, and where the walk finds more than 64
    extents plus one a MiB of the file walked (a file of many small holes: two lseeks each, ~1 us),
    the rest of the file is one extent; a scan of holes costs less (mincore and pagemap: ~3 ms a GiB)
    than walking them."""
    st = os.fstat(fd)
    if size and st.st_blocks * 512 >= (st.st_size if exact else st.st_size // 2):
        return [(0, size)]
    out: list[tuple[int, int]] = []
    off = seen = 0
    while off < size:
        if not exact and seen > 64 + (off >> 20):
            out.append((off - off % align, size))
            break
        seen += 1
        try:
            lo = os.lseek(fd, off, os.SEEK_DATA)
            hi = os.lseek(fd, lo, os.SEEK_HOLE)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data past off (or the file shrank meanwhile)
                break
            if exc.errno == errno.EINVAL:  # no SEEK_DATA here: all of it
                return [(0, size)] if size else []
            raise
        lo -= lo % align
        hi = min(size, hi + (-hi) % align)
        if lo >= hi:
            break
        out.append((lo, hi))
        off = hi
    return coarse(out, gap)


def coarse(extents: list[tuple[int, int]], gap: int = 8 << 20) -> list[tuple[int, int]]:
    """Sorted extents merged where they overlap, touch or a hole of at most gap bytes parts them: with the
    default, what a scan of holes should cover (mincore and pagemap walk 8 MiB of hole in ~20 us, about
    what each range costs them in Python; a file of alternating pages and holes would otherwise be
    131,072 ranges a GiB)."""
    out: list[tuple[int, int]] = []
    for lo, hi in extents:
        if out and lo <= out[-1][1] + gap:
            out[-1] = (out[-1][0], max(hi, out[-1][1]))
        else:
            out.append((lo, hi))
    return out


def open_file(path: str, link_hint: str, dir_fd: int | None = None, name: str | None = None,
              flags: int = os.O_RDONLY) -> int:
    """path opened once (for reading unless flags say otherwise, O_CREAT with mode 0600): a symbolic
    link in its last component is refused (link_hint says why), a FIFO or device never blocks the
    open; what it is comes from the descriptor afterwards.

    With dir_fd, name is opened relative to it (path is then for messages only).

    Raises:
        UsageError: a link, no such file, permission denied. NumamoveError: any other open error.
    """
    try:
        return os.open(name if name is not None else path,
                       flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            raise UsageError(f"{path} is a symbolic link (to {target}): {link_hint}; name the file itself") from None
        if exc.errno == errno.ENOENT:
            raise UsageError(f"{path}: no such file") from None
        if exc.errno == errno.EACCES:
            raise UsageError(f"{path}: permission denied") from None
        if exc.errno == errno.EAGAIN:  # O_NONBLOCK against another process's write lease
            raise NumamoveError(f"{path} is leased by another process (another numamove file --copy?): "
                                "try again once it is done") from None
        raise NumamoveError(f"{path}: {exc.strerror}") from None


def check_file(fd: int, path: str) -> tuple[os.stat_result, str]:
    """The open file's stat and file system type, or a UsageError naming what is wrong."""
    st = os.fstat(fd)
    if stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{path} is a directory: name the files")
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{path} is not a regular file")
    fstype = {_native.TMPFS_MAGIC: "tmpfs", _native.HUGETLBFS_MAGIC: "hugetlbfs"}.get(_native.fs_type(fd), "")
    if not fstype:
        name, mnt = fs_type(path)  # for the message only: the descriptor decided
        raise UsageError(f"{path} is on {name or 'an unknown file system'} ({mnt}): numamove file moves "
                         f"files on tmpfs (/dev/shm) and hugetlbfs")
    return st, fstype


_WINDOW = 1 << 30  # mincore's window over a file's data: its vector and the page list grow by at most this much
_GAP = 8 << 20  # holes this short are scanned rather than skipped (see coarse)
SCAN_SPLIT_MIN = 128 << 20  # data from which scanner processes find the resident pages (filescan)
SCAN_SHARE = 64 << 20  # the least data one scanner takes
SCAN_MAX = 16  # scanner processes at most


def move_file(path: str, topo: Topology, opts: MoveOptions, here: int, allowed: frozenset[int],
              progress: Callable[[int, int], None] | None = None) -> TargetReport:
    """Move the resident pages of one tmpfs/hugetlbfs file to opts.to, in place.

    Raises:
        UsageError: missing, a symbolic link, a directory, not on tmpfs/hugetlbfs.
        NumamoveError: the file could not be opened or mapped.
    """
    # opened once, never through a link (others may write /dev/shm); everything after acts on fd
    fd = open_file(path, "numamove moves the file it opens, never one a link in a shared directory leads to")
    try:
        st, fstype = check_file(fd, path)
    except BaseException:
        os.close(fd)
        raise
    page = os.fstatvfs(fd).f_bsize if fstype == "hugetlbfs" else mmap.PAGESIZE
    length = -(-st.st_size // page) * page
    target = Target(os.getpid(), os.path.abspath(path), "", ())
    if length == 0:
        os.close(fd)
        return TargetReport(target, opts.to, dry_run=opts.dry_run)
    try:
        # the file's own size (Python refuses a length past it): the kernel maps the whole last page,
        # which is all the page-granular calls below see
        mm = mmap.mmap(fd, length if fstype == "hugetlbfs" else st.st_size, mmap.MAP_SHARED, mmap.PROT_READ)
    except (OSError, ValueError) as exc:
        os.close(fd)
        why = exc.strerror if isinstance(exc, OSError) else "it changed size while being opened"
        raise NumamoveError(f"{path}: cannot map it: {why}") from None
    keep, addr, _ = _native.buffer_address(mm, what=path)
    helpers: list[int] = []  # scanner processes that may still be exiting
    try:
        if fstype == "hugetlbfs":
            # mincore sees only this mapping's page tables on hugetlbfs, not the file's pages:
            # move a file whose every page exists (st_blocks), reading each so we map it
            if st.st_blocks * 512 < length:
                raise UsageError(f"{path}: a hugetlbfs file with holes ({st.st_blocks * 512} of {length} "
                                 "bytes allocated) would get them filled; not moved")
            _map_every_page(mm, length, page, path)
            ps = collect(os.getpid(), [(addr, addr + length)])
            mapped_here = True
        else:
            # the resident pages (mincore: holes stay holes) of the file's data only: a sparse file's size
            # costs nothing
            extents = data_extents(fd, length, gap=_GAP, exact=False)
            scanners = _scanners(sum(hi - lo for lo, hi in extents), opts.limit, len(allowed))
            split: PageSet | None = None
            if scanners > 1:
                from .filescan import NoScanners, reap, scan_split

                try:
                    split = scan_split(addr, extents, page, scanners, helpers)
                except NoScanners:  # no process, pipe or mapping to be had (EAGAIN, EMFILE, ENOMEM): scanned here
                    reap(helpers)
            mapped_here = split is None
            ps = _scan_here(addr, extents, page) if split is None else split
        # pages other processes map need MPOL_MF_MOVE_ALL, which CAP_SYS_NICE allows (root has it)
        move_all = opts.move_all or has_capability(CAP_SYS_NICE)
        run = opts.replace(move_all=move_all)
        rep = move_pageset(target, ps, topo, run, here, allowed, progress, own_file=True, mapped_here=mapped_here)
        if not opts.dry_run:
            try:
                _native.prefer_node(addr, length, opts.to)
                rep.notes.append(f"the file's shared policy now prefers node {opts.to} for pages it gets later")
            except NativeError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                rep.notes.append("this file system keeps no shared policy: pages the file gets later "
                                 "follow the writer's policy")
        return rep
    finally:
        del keep
        mm.close()
        os.close(fd)
        if helpers:
            from .filescan import reap

            reap(helpers)


def _scan_here(addr: int, extents: list[tuple[int, int]], page: int) -> PageSet:
    """The resident pages of the file's data extents, mapped here (mincore, then MADV_POPULATE_READ a run)
    a window at a time, each with its node from its PFN (a query only where unreadable)."""
    out = _native.PageOut(page, 16)  # the scratch list is not needed: each window reuses it
    for lo, hi in extents:
        for w in range(lo, hi, _WINDOW):
            out.out.count = 0
            _native.resident_pages(out, addr + w, min(_WINDOW, hi - w), page)
    ranges = [(addr + lo, addr + hi) for lo, hi in extents]
    return collect(os.getpid(), ranges) if ranges else PageSet(os.getpid())


def _scanners(data: int, limit: int | None, cpus: int) -> int:
    """How many processes find the resident pages of data bytes: one below SCAN_SPLIT_MIN, else one a
    SCAN_SHARE, at most the cpus numamove may use, --threads, and SCAN_MAX."""
    if data < SCAN_SPLIT_MIN:
        return 1
    n = min(data // SCAN_SHARE, cpus, SCAN_MAX)
    return max(1, min(n, limit) if limit else n)


def _map_every_page(mm: mmap.mmap, length: int, page: int, path: str) -> None:
    """Map every page of mm here (MADV_POPULATE_READ): a file cut shorter meanwhile by someone else is an
    error, never a SIGBUS. Before Linux 5.14 (no such advice) each page is read."""
    try:
        mm.madvise(_native.MADV_POPULATE_READ, 0, length)
    except OSError as exc:
        if exc.errno == errno.EFAULT:
            raise NumamoveError(f"{path} was truncated while being moved; not moved") from None
        if exc.errno != errno.EINVAL:
            raise NumamoveError(f"{path}: cannot map its pages: {exc.strerror}") from None
        for off in range(0, length, page):
            _ = mm[off]


def users_of(fd: int) -> list[tuple[int, str]]:
    """(PID, name) of every other process that has the open file fd names open or mapped (scans /proc).

    The file is known by its device and inode, from the descriptor: never by a path, which a link or a
    rename in a shared directory could point elsewhere meanwhile, and which misses a process that opened
    it under another name (a hard link)."""
    st = os.fstat(fd)
    dev, ino = st.st_dev, st.st_ino
    me = os.getpid()
    found: list[tuple[int, str]] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        pid = int(entry)
        try:
            hit = False
            for n in os.listdir(f"/proc/{pid}/fd"):
                try:
                    s = os.stat(f"/proc/{pid}/fd/{n}")
                except OSError:
                    continue
                if (s.st_dev, s.st_ino) == (dev, ino):
                    hit = True
                    break
            if not hit:
                with open_text(f"/proc/{pid}/maps") as fh:
                    hit = any(_maps_file(line) == (dev, ino) for line in fh)
            if hit:
                with open_text(f"/proc/{pid}/comm") as fh:
                    found.append((pid, printable(fh.read().rstrip("\n"))))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return found


def _maps_file(line: str) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the file a /proc/PID/maps line maps ("... 00:1a 12345 /path"), or None."""
    f = line.split(None, 5)
    if len(f) < 5 or f[4] == "0":
        return None
    major, _, minor = f[3].partition(":")
    try:
        return os.makedev(int(major, 16), int(minor, 16)), int(f[4])
    except ValueError:
        return None


class CopyReport:
    """What `file --copy` did."""

    __slots__ = ("source", "output", "node", "bytes", "data_bytes", "seconds", "plan", "verified", "dry_run",
                 "pages_on_node", "notes", "fill")

    def __init__(self, source: str, output: str, node: int, bytes: int, seconds: float, plan: Plan | None,
                 verified: bool, dry_run: bool, pages_on_node: dict[int, int], notes: list[str] | None = None,
                 data_bytes: int | None = None) -> None:
        self.source = source
        self.output = output
        self.node = node
        self.bytes = bytes  # the file's size
        self.data_bytes = bytes if data_bytes is None else data_bytes  # what was copied: the size less its holes
        self.seconds = seconds
        self.plan = plan
        self.verified = verified
        self.dry_run = dry_run
        self.pages_on_node = pages_on_node
        self.notes = notes if notes is not None else []  # metadata that could not be kept, and why
        # how the copy's pages were allocated: "userfaultfd", "populate", or "none" (dry run, empty file);
        # why not userfaultfd
        self.fill: dict[str, str | None] = {"method": "none", "why": "dry run" if dry_run else None}

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "output": self.output, "node": self.node, "bytes": self.bytes,
                "data_bytes": self.data_bytes, "seconds": self.seconds,
                "gbps": self.data_bytes / self.seconds / 1e9 if self.seconds else 0.0,
                "plan": self.plan.to_json() if self.plan else None, "verified": self.verified,
                "dry_run": self.dry_run, "pages_on_node": {str(k): v for k, v in self.pages_on_node.items()},
                "notes": self.notes, "fill": self.fill}
