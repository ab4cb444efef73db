"""A process's pages in C arrays: which pages to move, and the node each one is on, counted in C.

collect() reads the mappings (their kinds, huge pages, what cannot migrate) from /proc/PID/maps,
or from /proc/PID/smaps where maps cannot tell them (hugetlb, device and internal-mount files:
maps.read_maps), then scans /proc/PID/pagemap in C, a chunk at a time, so memory grows with the
resident pages and never with virtual size. From smaps, mappings without resident pages are not
scanned at all (a sanitizer's terabytes of shadow cost nothing); from maps every anonymous and
plain-file mapping is, which costs 8 bytes of pagemap per virtual page, so a process whose
mappings span more than MAPS_SCAN_LIMIT bytes of address space is read from smaps instead.

Where numamove may read PFNs (CAP_SYS_ADMIN: root), each page's node is its PFN's node,
from the memory blocks sysfs lists under each node, and the shared and huge zero pages are
recognised by their PFNs (move_pages reports them as -EFAULT). Then no move_pages query is
needed before a move: that query alone costs ~50 ms per GiB of 4 KiB pages. A PFN in no
known block, or any page when PFNs are hidden (not root), gets its node from one
move_pages(nodes=NULL) query, as before.

Pages go into one array per page size (4 KiB, THP, each hugetlb size): each is one run the
migration splits between threads by count.
"""

from __future__ import annotations

import errno
import os

from . import _native
from .maps import BASE, HUGE, Mapping, read_maps, read_smaps
from .maps import clip as _clip

CAP_SYS_ADMIN = 21
MAPS_SCAN_LIMIT = 64 << 30  # address space scanned whole from maps; beyond it smaps' Rss skips empty mappings
SPARSE_MIN = 64 << 20  # a mapping this large with at most an eighth of it resident is scanned as sparse


class PageSet:
    """The selected pages of one process: per page size a PageOut, with the mappings they came from."""

    __slots__ = ("pid", "classes", "segments", "skipped", "queried", "source")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.source = "smaps"  # where the mappings came from: maps or smaps
        self.classes: dict[int, _native.PageOut] = {}
        self.segments: list[tuple[str, int, int, int]] = []  # (kind, page size, first index, count)
        self.skipped: dict[str, int] = {}  # reason -> mappings
        self.queried = 0  # pages whose node a move_pages query supplied (PFN unknown)

    @property
    def count(self) -> int:
        return sum(c.count for c in self.classes.values())

    def ordered(self) -> list[_native.PageOut]:
        """The page-size classes that hold pages, largest pages first."""
        return [self.classes[k] for k in sorted(self.classes, reverse=True) if self.classes[k].count]

    def output(self, page_size: int, cap: int) -> _native.PageOut:
        """The array for pages of page_size, made with room for cap pages when new."""
        c = self.classes.get(page_size)
        if c is None:
            c = self.classes[page_size] = _native.PageOut(page_size, cap)
        return c

    def tally(self) -> dict[tuple[int, str, bool], tuple[int, int]]:
        """(node or -errno, kind, huge) -> (pages, bytes), counted in C per mapping."""
        out: dict[tuple[int, str, bool], tuple[int, int]] = {}
        for kind, size, first, n in self.segments:
            nodes = self.classes[size].nodes + first
            for v, c in _native.tally(nodes, n):
                p, b = out.get((v, kind, size > BASE), (0, 0))
                out[(v, kind, size > BASE)] = (p + c, b + c * size)
        return out


def _vm_rss(pid: int) -> int:
    """The process's resident bytes (VmRSS, from counters: no page-table walk); 0 when unknown."""
    from .proc import ProcessError, _status_field

    try:
        return int(_status_field(pid, "VmRSS").split()[0]) * 1024
    except (ProcessError, OSError, ValueError, IndexError):
        return 0


def _pfn_table() -> list[tuple[int, int, int]]:
    from .proc import has_capability
    from .topology import pfn_ranges

    return pfn_ranges() if has_capability(CAP_SYS_ADMIN) else []


def collect(pid: int, ranges: list[tuple[int, int]] | None = None,
            only: frozenset[str] | None = None, smaps: bool = False) -> PageSet:
    """Every present, migratable page of pid in the selection, one entry per (huge) page, with its node.

    Raises:
        NoSuchProcessError, AccessError.
    """
    from .proc import AccessError, NoSuchProcessError, access_hint

    ps = PageSet(pid)
    try:
        maps = read_maps(pid) if smaps is False else None
        if maps is not None:
            kinds, whys = _classified(maps)
            if sum(m.length for m, why in zip(maps, whys) if why is None) > MAPS_SCAN_LIMIT:
                maps = None
        if maps is None:
            maps = read_smaps(pid)
            kinds, whys = _classified(maps)
        else:
            ps.source = "maps"
        pagemap = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
    except FileNotFoundError:
        raise NoSuchProcessError(f"no process with PID {pid} (it may have exited)") from None
    except PermissionError:
        raise AccessError(f"not allowed to read the memory map of PID {pid}: {access_hint()}") from None
    try:
        kpf = os.open("/proc/kpageflags", os.O_RDONLY)
    except OSError:
        kpf = -1
    try:
        table = _pfn_table()
        ctx = _native.ScanContext(pagemap, kpf, table, _native.zero_pfns() if table else (0, 0))
        todo = []
        # page size -> resident bytes: the arrays' first size (from smaps per mapping; from maps the
        # process's VmRSS, which bounds both; the arrays grow if the process grows meanwhile)
        resident: dict[int, int] = {} if ps.source == "smaps" else dict.fromkeys((BASE, HUGE), _vm_rss(pid))
        for m, kind, why in zip(maps, kinds, whys):
            clips = _clip(m, ranges)
            if not clips:
                continue  # outside --range: neither moved nor reported
            if why:
                if m.rss or (m.rss is None and ctx.present(m.start, m.length)):
                    ps.skipped[why] = ps.skipped.get(why, 0) + 1
                continue
            if only is not None and kind not in only:
                continue
            size = m.kernel_page_size if m.hugetlb else BASE
            # sparse: at most an eighth of a large mapping is resident (smaps' Rss, or from maps the whole
            # process's): where its pages are is asked of the page tables, not read from all its pagemap
            sparse = m.length >= SPARSE_MIN and (m.rss if m.rss is not None else resident[BASE]) * 8 < m.length
            if m.rss is None:  # from maps: any anonymous mapping may hold THPs (kpageflags finds their heads)
                todo.append((kind, clips, size, kpf >= 0 and kind in ("anon", "heap", "stack") and m.length >= HUGE,
                             sparse))
                continue
            thp = not m.hugetlb and m.anon_huge > 0 and kpf >= 0
            resident[size] = resident.get(size, 0) + m.rss - (m.anon_huge if thp else 0)
            if thp:
                resident[HUGE] = resident.get(HUGE, 0) + m.anon_huge
            todo.append((kind, clips, size, thp, sparse))
        # every range in one C call: a process may have tens of thousands of mappings
        starts: list[int] = []
        ends: list[int] = []
        sizes: list[int] = []
        outs: list[_native.PageOut] = []
        thps: list[_native.PageOut | None] = []
        kinds_of: list[str] = []
        sparse_of: list[bool] = []
        for kind, clips, size, thp, sparse in todo:
            out = ps.output(size, resident[size] // size + 16)
            huge = ps.output(HUGE, resident[HUGE] // HUGE + 16) if thp else None
            for lo, hi in clips:
                starts.append(lo)
                ends.append(hi)
                sizes.append(size)
                outs.append(out)
                thps.append(huge)
                kinds_of.append(kind)
                sparse_of.append(sparse)
        try:
            got, got_thp = ctx.scan_all(starts, ends, sizes, outs, thps, sparse_of if any(sparse_of) else None)
        except OSError as exc:
            if exc.errno == errno.ESRCH:
                raise NoSuchProcessError(f"PID {pid} exited") from None
            raise
        ps.segments = _segments(kinds_of, sizes, got, got_thp)
        locate(ps)
    finally:
        os.close(pagemap)
        if kpf >= 0:
            os.close(kpf)
    return ps


def _classified(maps: list[Mapping]) -> tuple[list[str], list[str | None]]:
    """Each mapping's kind and skip reason, each worked out once (a process may have tens of thousands)."""
    kinds = [m.kind for m in maps]
    return kinds, [m.skip_reason(k) for m, k in zip(maps, kinds)]


def _segments(kinds: list[str], sizes: list[int], got: list[int],
              got_thp: list[int]) -> list[tuple[str, int, int, int]]:
    """(kind, page size, first index, count) runs of each page-size array, from what each range (in scan
    order, of kinds[i] and pages of sizes[i]) appended to its array (got) and to the THP array (got_thp):
    consecutive ranges of one kind make one run."""
    segments: list[tuple[str, int, int, int]] = []
    pos: dict[int, int] = {}  # page size -> entries so far
    filling: dict[int, tuple[str, int]] = {}  # page size -> (kind, first index) of the run being filled
    for kind, size, g, gt in zip(kinds, sizes, got, got_thp):
        for sz, n in ((size, g), (HUGE, gt)) if gt else ((size, g),):
            if not n:
                continue
            at = pos.get(sz, 0)
            cur = filling.get(sz)
            if cur is None or cur[0] != kind:
                if cur is not None:
                    segments.append((cur[0], sz, cur[1], at - cur[1]))
                filling[sz] = (kind, at)
            pos[sz] = at + n
    for sz, (kind, first) in filling.items():
        segments.append((kind, sz, first, pos[sz] - first))
    return segments


def locate(ps: PageSet) -> None:
    """Fill in with one move_pages(nodes=NULL) query the nodes the PFNs did not give."""
    for c in ps.ordered():
        counts = dict(_native.tally(c.nodes, c.count))
        unknown = counts.get(_native.NODE_UNKNOWN, 0)
        if not unknown:
            continue
        ps.queried += unknown
        if unknown == c.count:
            _query(ps.pid, c.pages, c.count, c.nodes)
            continue
        sub, idx, m = _native.select_values(c.pages, c.nodes, c.count, [_native.NODE_UNKNOWN])
        st = _native.raw_new("int[]", m)
        _query(ps.pid, sub, m, st)
        _native.scatter(c.nodes, idx, st, m)


def _query(pid: int, pages: object, n: int, into: object) -> None:
    from .errors import NativeError
    from .proc import AccessError, NoSuchProcessError, exiting

    try:
        _native.query_into(pid, pages, n, into)
    except NativeError as exc:
        if exc.errno == errno.ESRCH or (exc.errno == errno.EINVAL and exiting(pid)):
            raise NoSuchProcessError(f"PID {pid} exited") from None
        if exc.errno == errno.EPERM:
            from .proc import access_hint

            raise AccessError(f"not allowed to query the pages of PID {pid}: {access_hint()}") from None
        raise
