"""`file` in place: scanner processes that find a large file's resident pages (see scan_split).

Mapping a file's resident pages (MADV_POPULATE_READ) and reading their nodes costs ~43 ms a GiB on one
thread, and threads of one address space do it no faster. Processes each mapping a share of the file do
it in parallel; and as none of them is numamove, numamove has nothing to unmap afterwards (~12 ms a GiB)
and the move's worker processes map their batches as they always did.
"""

from __future__ import annotations

import mmap
import os

from . import _native, files
from .errors import NumamoveError
from .scan import PageSet

TYPE_CHECKING = False  # typing's own constant to mypy (importing typing costs start-up)
if TYPE_CHECKING:
    from typing import Any


def shares(extents: list[tuple[int, int]], n: int, page: int) -> list[list[tuple[int, int]]]:
    """extents cut into n runs of about equal bytes, at page boundaries, in file order."""
    total = sum(hi - lo for lo, hi in extents)
    each = -(-total // n // page) * page
    shares: list[list[tuple[int, int]]] = [[]]
    room = each
    for lo, hi in extents:
        while lo < hi:
            if room == 0 and len(shares) < n:
                shares.append([])
                room = each
            take = hi - lo if len(shares) == n else min(hi - lo, room)
            shares[-1].append((lo, lo + take))
            lo += take
            room -= min(take, room)
    return shares


class NoScanners(Exception):
    """A scanner could not be started: the caller scans in its own process."""


def scan_split(addr: int, extents: list[tuple[int, int]], page: int, n: int, helpers: list[int]) -> PageSet:
    """files._scan_here on n forked processes, each over a share of the extents: mapping the pages and reading
    their PFNs runs in parallel (in one address space, populating from two threads was no faster than
    from one), and the pages end up mapped in none of them: numamove itself never maps them, so it has
    nothing to unmap (~12 ms a GiB), and the move's workers map their batches anyway.

    A scanner blocks the stop signals and dies with numamove (SIGKILL). It writes its page arrays into
    its slot of a shared anonymous mapping (12 bytes an entry, an entry per 4 KiB of its share at most),
    then a one-line header into its pipe, closes it and leaves with os._exit (nothing of numamove's
    state is flushed or run twice); its exit, which unmaps its share, goes on while numamove moves: the
    scanners' PIDs are appended to helpers, for reap. A stop signal numamove hears while it waits
    raises as before (nothing has moved); reap then kills the scanners."""
    import select

    parent = os.getpid()
    parts = shares(extents, n, page)
    entry = _native.PAGE_ENTRY_BYTES
    slots = [0]
    for share in parts:
        slots.append(slots[-1] + (sum(hi - lo for lo, hi in share) // 4096 + 1) * entry)
    try:
        region = mmap.mmap(-1, slots[-1])  # MAP_SHARED: the scanners write, numamove reads
    except OSError as exc:  # ENOMEM
        raise NoScanners from exc
    reads: list[int] = []
    try:
        try:
            for i, share in enumerate(parts):
                try:
                    r, w = os.pipe()
                except OSError as exc:
                    raise NoScanners from exc
                # the stop signals are held across the fork, so the scanner starts with them blocked: none
                # can raise in it before it is inside _scanner, which always ends in os._exit
                with _native.StopSignalsHeld():
                    try:
                        pid = os.fork()
                    except OSError as exc:
                        os.close(r)
                        os.close(w)
                        raise NoScanners from exc
                    if pid == 0:  # pragma: no cover - runs in the scanner, which never returns from here
                        try:
                            os.close(r)
                            _scanner(w, parent, addr, share, page, region, slots[i], slots[i + 1])
                        finally:
                            os._exit(1)
                os.close(w)
                helpers.append(pid)
                reads.append(r)
            got = _read_all(reads, select)
        finally:
            for r in reads:
                os.close(r)
        for data in got:
            if data[:1] != b"P":
                why = data[1:].decode(errors="replace") if data[:1] == b"E" else "it ended before its report"
                raise NumamoveError(f"a scanner of the file's pages failed: {why}")
        return _merge(parent, got, region, slots)
    finally:
        region.close()


def reap(pids: list[int]) -> None:
    """Wait for the scanners (done, or exiting); one still running (numamove stopped early) is killed."""
    for pid in pids:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == 0:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
    pids.clear()


def _read_all(fds: list[int], select: Any) -> list[bytes]:
    """Everything each pipe gives until its end, read as it comes (a scanner blocks on a full pipe)."""
    bufs: dict[int, list[bytes]] = {fd: [] for fd in fds}
    poll = select.poll()
    for fd in fds:
        poll.register(fd, select.POLLIN)
    open_ = set(fds)
    while open_:
        for fd, _ev in poll.poll():
            chunk = os.read(fd, 1 << 20)
            if chunk:
                bufs[fd].append(chunk)
            else:
                poll.unregister(fd)
                open_.discard(fd)
    return [b"".join(bufs[fd]) for fd in fds]


def _scanner(w: int, parent: int, addr: int, share: list[tuple[int, int]], page: int, region: mmap.mmap,
             lo: int, hi: int) -> None:
    """A scanner's whole life (see scan_split), the stop signals blocked: its arrays into region[lo:hi],
    then "P" and a header, or "E" and why, into w; never returns."""
    code = 1
    try:
        if _native.die_with_parent(parent) == 0:
            ps = files._scan_here(addr, share, page)
            classes = [(size, c.count) for size, c in sorted(ps.classes.items()) if c.count]
            at = lo
            for size, _count in classes:
                at += _native.pack_pages(ps.classes[size], memoryview(region)[:hi], at)
            _write(w, b"P" + _head(ps, classes))
            os.close(w)  # numamove reads on while this process unmaps its share in its exit
            code = 0
    except BaseException as exc:  # noqa: BLE001 - whatever it was, the parent is told and this process ends
        try:
            _write(w, b"E" + str(exc).encode(errors="replace"))
        except BaseException:  # noqa: BLE001
            pass
    os._exit(code)


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# a scanner's header: lines of fields parted by _FS (json would import re: ~10 ms of a run's start-up)
_FS, _RS = "\x1f", "\x1e"


def _head(ps: PageSet, classes: list[tuple[int, int]]) -> bytes:
    """The queried count, the classes' (size, count), the segments and the skipped mappings, as text."""
    rows = [str(ps.queried),
            _RS.join(f"{size}{_FS}{count}" for size, count in classes),
            _RS.join(_FS.join(map(str, seg)) for seg in ps.segments),
            _RS.join(f"{why}{_FS}{k}" for why, k in ps.skipped.items())]
    return "\n".join(rows).encode()


def _parse_head(raw: bytes) -> dict[str, Any]:
    """_head's text back (raw without its leading "P")."""
    queried, classes, segments, skipped = raw.decode().split("\n")

    def rows(text: str) -> list[list[str]]:
        return [r.split(_FS) for r in text.split(_RS)] if text else []

    return {"queried": int(queried),
            "classes": [(int(a), int(b)) for a, b in rows(classes)],
            "segments": [(k, int(a), int(b), int(c)) for k, a, b, c in rows(segments)],
            "skipped": {why: int(k) for why, k in rows(skipped)}}


def _merge(pid: int, heads_raw: list[bytes], region: mmap.mmap, slots: list[int]) -> PageSet:
    """One PageSet from the scanners' headers and arrays (region[slots[i]:]), in share (file) order."""
    ps = PageSet(pid)
    ps.source = "maps"
    heads = [_parse_head(raw[1:]) for raw in heads_raw]
    totals: dict[int, int] = {}
    for h in heads:
        for size, count in h["classes"]:
            totals[size] = totals.get(size, 0) + count
    pos = dict.fromkeys(totals, 0)
    last: dict[int, int] = {}  # page size -> index of its latest segment
    with memoryview(region) as view:
        for h, lo in zip(heads, slots):
            at = lo
            for size, count in h["classes"]:
                at += _native.unpack_pages(ps.output(size, totals[size]), pos[size], view[at:], count)
            for kind, size, first, count in h["segments"]:
                first += pos[size]
                i = last.get(size)
                if i is not None and ps.segments[i][0] == kind and ps.segments[i][2] + ps.segments[i][3] == first:
                    # a run of one kind that two shares split: one run, as one scan makes it
                    ps.segments[i] = (kind, size, ps.segments[i][2], ps.segments[i][3] + count)
                else:
                    last[size] = len(ps.segments)
                    ps.segments.append((kind, size, first, count))
            for size, count in h["classes"]:
                pos[size] += count
            ps.queried += h["queried"]
            for why, k in h["skipped"].items():
                ps.skipped[why] = ps.skipped.get(why, 0) + k
    return ps
