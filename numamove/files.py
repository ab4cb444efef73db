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
from collections.abc import Callable

from . import _native
from .errors import NativeError, NumamoveError, UsageError
from .maps import Segment
from .migrate import MoveOptions, TargetReport, move_pageset
from .proc import PageSet, Target
from .topology import Topology

SUPPORTED = ("tmpfs", "hugetlbfs")


def fs_type(path: str) -> tuple[str, str]:
    """(file system type, mount point) of the mount holding path, from /proc/self/mountinfo."""
    real = os.path.realpath(path)
    best = ("", "/")
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            left, _, right = line.partition(" - ")
            mnt = left.split()[4].replace("\\040", " ")
            inside = real == mnt or real.startswith(mnt.rstrip("/") + "/")
            if inside and len(mnt) >= len(best[1]):
                best = (right.split()[0], mnt)
    return best


def check_file(path: str) -> tuple[os.stat_result, str]:
    """The file's stat and file system type, or a UsageError naming what is wrong."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except PermissionError:
        raise UsageError(f"{path}: permission denied") from None
    if os.path.isdir(path):
        raise UsageError(f"{path} is a directory: name the files")
    if not os.path.isfile(path):
        raise UsageError(f"{path} is not a regular file")
    fstype, mnt = fs_type(path)
    if fstype not in SUPPORTED:
        raise UsageError(f"{path} is on {fstype or 'an unknown file system'} ({mnt}): numamove file moves "
                         f"files on tmpfs (/dev/shm) and hugetlbfs")
    return st, fstype


def move_file(path: str, topo: Topology, opts: MoveOptions, here: int, allowed: frozenset[int],
              progress: Callable[[int, int], None] | None = None) -> TargetReport:
    """Move the resident pages of one tmpfs/hugetlbfs file to opts.to, in place.

    Raises:
        UsageError: missing, a directory, not on tmpfs/hugetlbfs.
        NumamoveError: the file could not be opened or mapped.
    """
    st, fstype = check_file(path)
    page = os.statvfs(path).f_bsize if fstype == "hugetlbfs" else mmap.PAGESIZE
    length = -(-st.st_size // page) * page
    target = Target(os.getpid(), os.path.abspath(path), "", ())
    if length == 0:
        return TargetReport(target, opts.to, dry_run=opts.dry_run)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise NumamoveError(f"{path}: {exc.strerror}") from None
    try:
        mm = mmap.mmap(fd, length, mmap.MAP_SHARED, mmap.PROT_READ)
    except OSError as exc:
        os.close(fd)
        raise NumamoveError(f"{path}: cannot map it: {exc.strerror}") from None
    keep, addr, _ = _native.buffer_address(mm, what=path)
    try:
        arr = _native.PageArray(length // page)
        n = _native.resident_pages(arr, addr, length, page)
        seg = Segment(addr, length, page, "shm", True)
        ps = PageSet(os.getpid(), arr, [(seg, 0, n)] if n else [])
        move_all = opts.move_all or os.geteuid() == 0
        run = MoveOptions(opts.to, opts.from_nodes, move_all, opts.limit, opts.policy, opts.batch,
                          opts.max_pause_ms, opts.dry_run)
        rep = move_pageset(target, ps, topo, run, here, allowed, progress)
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
