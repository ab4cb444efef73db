"""The pagemap scan: pages and their nodes from PFNs, in C, with memory that follows resident pages."""

from __future__ import annotations

import ctypes
import mmap
import os
from pathlib import Path

import pytest

from numamove import _native
from numamove.scan import collect
from numamove.topology import pfn_ranges

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="PFNs in pagemap need CAP_SYS_ADMIN (run as root)")


def _addr(m: mmap.mmap) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(m))


@root_only
def test_nodes_from_pfns_agree_with_the_kernels_query_page_by_page() -> None:
    """Every page's node read from its PFN equals what move_pages(nodes=NULL) says, with no query made."""
    m = mmap.mmap(-1, 256 * 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for off in range(0, len(m), 4096):
        m[off] = 7
    a = _addr(m)
    ps = collect(os.getpid(), [(a, a + len(m))])
    c = ps.classes[4096]
    assert c.count == 256 and ps.queried == 0
    mine = list(_native.ffi.unpack(c.nodes, c.count))
    assert mine == _native.query_nodes(0, c.pages, c.count)
    assert all(n >= 0 for n in mine)
    m.close()


@root_only
def test_zero_pages_are_not_migratable_as_move_pages_says() -> None:
    """Pages only read (the shared zero page) are -EFAULT from their PFN, as the kernel's query reports."""
    m = mmap.mmap(-1, 16 * 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    m.madvise(mmap.MADV_NOHUGEPAGE)
    for off in range(0, len(m), 4096):
        _ = m[off]  # a read fault maps the zero page
    m[0] = 1  # one real page
    a = _addr(m)
    ps = collect(os.getpid(), [(a, a + len(m))])
    c = ps.classes[4096]
    mine = list(_native.ffi.unpack(c.nodes, c.count))
    assert mine == _native.query_nodes(0, c.pages, c.count)
    assert mine.count(-14) == 15 and mine[0] >= 0  # -EFAULT
    m.close()


def test_arrays_follow_resident_pages_not_virtual_size() -> None:
    """Three touched pages in a 64 GiB reservation: three entries, arrays sized by RSS, not by 16M pages."""
    size = 64 << 30
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_NORESERVE", 0x4000)
    m = mmap.mmap(-1, size, flags=flags)
    m.madvise(mmap.MADV_NOHUGEPAGE)
    for off in (0, size // 2, size - 4096):
        m[off] = 1
    a = _addr(m)
    ps = collect(os.getpid(), [(a, a + size)])
    c = ps.classes[4096]
    assert c.count == 3
    assert c.out.cap < 1024
    assert list(_native.ffi.unpack(c.pages, 3)) != []
    assert [int(_native.ffi.cast("uintptr_t", c.pages[i])) - a for i in range(3)] == [0, size // 2, size - 4096]
    m.close()


def test_arrays_grow_when_a_process_has_more_pages_than_smaps_said() -> None:
    """A scan that fills its arrays grows them and carries on, inside a range and into the next ones (all
    ranges go to C in one call): no page is dropped, each range's count is its own, order is kept."""
    m = mmap.mmap(-1, 2000 * 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    m.madvise(mmap.MADV_NOHUGEPAGE)
    for off in range(0, len(m), 4096):
        m[off] = 1
    a = _addr(m)
    ctx = _native.ScanContext(os.open("/proc/self/pagemap", os.O_RDONLY), -1, [], (0, 0))
    one, two = _native.PageOut(4096, 16), _native.PageOut(4096, 16)  # far too small on purpose
    cuts = [0, 700, 1500, 2000]
    got, got_thp = ctx.scan_all([a + c * 4096 for c in cuts[:-1]], [a + c * 4096 for c in cuts[1:]],
                                [4096] * 3, [one, two, one], [None] * 3)
    assert got == [700, 800, 500] and got_thp == [0, 0, 0]
    assert one.count == 1200 and two.count == 800 and one.out.cap >= 1200
    at = [int(_native.ffi.cast("uintptr_t", one.pages[i])) for i in range(1200)]
    assert at == [a + p * 4096 for p in [*range(700), *range(1500, 2000)]]
    assert int(_native.ffi.cast("uintptr_t", two.pages[799])) == a + 1499 * 4096
    assert ctx.scan_all([], [], [], [], []) == ([], [])
    os.close(ctx.ctx.pagemap_fd)
    m.close()


@root_only
def test_adjacent_ranges_share_pagemap_reads_and_find_what_one_by_one_finds() -> None:
    """nm_scan_ranges reads pagemap once for a run of adjacent ranges (a process's thread stacks and
    libraries are such runs: one pread each cost ~0.6 us a mapping): each range still gets exactly its own
    present pages, across a chunk's end, a gap, a one-page range and ranges resumed mid-way
    after its output filled."""
    pages = 9000  # more than one pagemap chunk (8192 entries)
    m = mmap.mmap(-1, pages * 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    m.madvise(mmap.MADV_NOHUGEPAGE)
    present = [p for p in range(pages) if p % 3 == 0 or 4000 <= p < 4100]
    for p in present:
        m[p * 4096] = 1
    a = _addr(m)
    ctx = _native.ScanContext(os.open("/proc/self/pagemap", os.O_RDONLY), -1, [], (0, 0))
    # adjacent runs, a gap (2000-2100 not asked), a single-page range, one spanning the chunk's end
    bounds = [(0, 1), (1, 700), (700, 2000), (2100, 2101), (2101, 5000), (5000, 8500), (8500, pages)]
    starts, ends = [a + lo * 4096 for lo, _ in bounds], [a + hi * 4096 for _, hi in bounds]
    outs = [_native.PageOut(4096, 16) for _ in bounds]  # too small: each fills and resumes
    got, _ = ctx.scan_all(starts, ends, [4096] * len(bounds), outs, [None] * len(bounds))
    for (lo, hi), out, n in zip(bounds, outs, got):
        want = [a + p * 4096 for p in present if lo <= p < hi]
        assert n == len(want) and [int(_native.ffi.cast("uintptr_t", out.pages[i])) for i in range(out.count)] == want
        alone = _native.PageOut(4096, 16)
        assert ctx.scan_all([a + lo * 4096], [a + hi * 4096], [4096], [alone], [None])[0] == [len(want)]
    os.close(ctx.ctx.pagemap_fd)
    m.close()


@root_only
@pytest.mark.parametrize("refused", [False, True])
@pytest.mark.parametrize("cap", [16, 1 << 16])
def test_a_sparse_range_finds_what_a_whole_scan_finds(cap: int, refused: bool) -> None:
    """A large mapping with few present pages, scanned as sparse (PAGEMAP_SCAN finds where its pages are, then
    only there is pagemap read): the same pages and THP heads as reading its whole pagemap, with more regions
    than one PAGEMAP_SCAN call returns, pages on both sides of 2 MiB boundaries, a THP, and outputs that fill
    and resume (cap 16). Where the kernel has PAGEMAP_SCAN (6.7), it is used; where it refuses it (refused:
    as before 6.7), the range is read whole."""
    size = 8 << 30
    m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | 0x4000)  # MAP_NORESERVE
    a = _addr(m)
    huge = (-a) % (2 << 20) + (1 << 30)  # a 2 MiB-aligned block 1 GiB in: a THP where THPs can be had
    m.madvise(mmap.MADV_HUGEPAGE, huge, 2 << 20)
    m[huge:huge + (2 << 20)] = b"t" * (2 << 20)
    offsets = [off for off in range(0, 600 * (64 << 10), 64 << 10)]  # 600 regions: more than one call holds
    offsets += [(3 << 30) - 4096, 3 << 30, (5 << 30) + 4096 * 7, size - 4096]  # either side of a 2 MiB boundary
    m.madvise(mmap.MADV_NOHUGEPAGE, 0, 600 * (64 << 10))
    for off in offsets:
        m[off] = 1
    ctx = _native.ScanContext(os.open("/proc/self/pagemap", os.O_RDONLY), os.open("/proc/kpageflags", os.O_RDONLY),
                              pfn_ranges(), _native.zero_pfns())

    def scan(sparse: bool) -> tuple[list[int], list[int]]:
        out, thp = _native.PageOut(4096, cap), _native.PageOut(2 << 20, cap)
        ctx.scan_all([a], [a + size], [4096], [out], [thp], [sparse])
        return ([int(_native.ffi.cast("uintptr_t", out.pages[i])) for i in range(out.count)],
                [int(_native.ffi.cast("uintptr_t", thp.pages[i])) for i in range(thp.count)])

    _native.lib.nm_pagemap_scan_refuse(int(refused))
    calls = _native.lib.nm_pagemap_scan_calls()
    try:
        whole, sparse = scan(False), scan(True)
    finally:
        _native.lib.nm_pagemap_scan_refuse(0)
    assert sparse == whole
    assert set(whole[0]) >= {a + off for off in offsets}
    assert whole[1] in ([a + huge], [])  # the THP, unless this machine gave base pages
    assert len(whole[0]) + 512 * len(whole[1]) == len(offsets) + 512
    major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    if refused:
        assert _native.lib.nm_pagemap_scan_calls() == calls
    elif (major, minor) >= (6, 7):
        assert _native.lib.nm_pagemap_scan_calls() > calls
    os.close(ctx.ctx.pagemap_fd)
    os.close(ctx.ctx.kpageflags_fd)
    m.close()


@root_only
def test_collect_scans_a_large_mostly_empty_mapping_as_sparse() -> None:
    """collect() marks a mapping of 64 MiB or more with at most an eighth of it resident (here a 16 GiB
    reservation holding 3 pages) as sparse, and still finds each of its pages on its node."""
    m = mmap.mmap(-1, 16 << 30, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | 0x4000)  # MAP_NORESERVE
    a = _addr(m)
    m.madvise(mmap.MADV_NOHUGEPAGE)
    for off in (0, 7 << 30, (16 << 30) - 4096):
        m[off] = 1
    calls = _native.lib.nm_pagemap_scan_calls()
    ps = collect(os.getpid(), [(a, a + (16 << 30))])
    out = ps.classes[4096]
    assert sorted(int(_native.ffi.cast("uintptr_t", out.pages[i])) for i in range(out.count)) == [
        a, a + (7 << 30), a + (16 << 30) - 4096]
    major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    if (major, minor) >= (6, 7):
        assert _native.lib.nm_pagemap_scan_calls() > calls
    m.close()


def test_tally_select_and_scatter_in_c() -> None:
    """tally counts every value (past 64 distinct ones too), select picks by value, scatter puts back."""
    vals = _native.ffi.new("int[]", [3, 3, -14, 1, 3, 1])
    assert sorted(_native.tally(vals, 6)) == [(-14, 1), (1, 2), (3, 3)]
    many = _native.ffi.new("int[]", list(range(100)) + [5])
    counts = dict(_native.tally(many, 101))
    assert len(counts) == 100 and counts[5] == 2
    pages = _native.ffi.new("void *[]", [_native.ffi.cast("void *", 4096 * (i + 1)) for i in range(6)])
    sub, idx, n = _native.select_values(pages, vals, 6, [1, -14])
    assert n == 3 and [idx[i] for i in range(n)] == [2, 3, 5]
    repl = _native.ffi.new("int[]", [7, 8, 9])
    _native.scatter(vals, idx, repl, n)
    assert list(vals) == [3, 3, 7, 8, 3, 9]


def _blocks(root: Path, per_node: dict[int, list[int]], block_bytes: int = 128 << 20) -> None:
    mem = root / "sys/devices/system/memory"
    mem.mkdir(parents=True)
    (mem / "block_size_bytes").write_text(f"{block_bytes:x}\n")
    for n, blocks in per_node.items():
        d = root / "sys/devices/system/node" / f"node{n}"
        d.mkdir(parents=True, exist_ok=True)
        for b in blocks:
            (d / f"memory{b}").mkdir()


def test_pfn_ranges_merge_blocks_and_leave_out_shared_ones(tmp_path: Path) -> None:
    """Consecutive blocks of a node merge; a block listed under two nodes is left to the kernel's query."""
    _blocks(tmp_path, {0: [0, 1, 2, 5], 1: [3, 4, 5, 7]})
    per = (128 << 20) // 4096
    assert pfn_ranges(str(tmp_path)) == [(0, 3 * per, 0), (3 * per, 5 * per, 1), (7 * per, 8 * per, 1)]


def test_pfn_ranges_without_memory_blocks_is_empty(tmp_path: Path) -> None:
    """No /sys/devices/system/memory (no memory hotplug): no table, every node comes from the query."""
    (tmp_path / "sys/devices/system/node/node0").mkdir(parents=True)
    assert pfn_ranges(str(tmp_path)) == []


def _proc_dir(root: Path, maps: str, mountinfo: str) -> str:
    for d in ("42", "self"):
        (root / d).mkdir(parents=True, exist_ok=True)
        (root / d / "mountinfo").write_text(mountinfo)
    (root / "42" / "maps").write_text(maps)
    return str(root)


MOUNTINFO = """\
25 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
26 25 0:5 / /dev rw,nosuid shared:2 - devtmpfs udev rw,size=1000k
27 26 0:26 / /dev/shm rw,nosuid,nodev shared:3 - tmpfs tmpfs rw
28 26 0:30 / /dev/hugepages rw,relatime shared:4 - hugetlbfs hugetlbfs rw,pagesize=2M
"""
ANON = "7f0000000000-7f0000200000 rw-p 00000000 00:00 0 \n"
LIB = "7f1000000000-7f1000010000 r-xp 00000000 08:01 1234   /usr/lib/libc.so.6\n"
SHM = "7f2000000000-7f2000400000 rw-s 00000000 00:1a 77   /dev/shm/buf file\n"


@pytest.mark.parametrize("extra, why", [
    ("7f3000000000-7f3000400000 rw-s 00000000 00:1e 5   /dev/hugepages/buf\n", "a hugetlbfs file"),
    ("7f3000000000-7f3000400000 rw-s 00000000 00:0f 9   /anon_hugepage (deleted)\n", "the internal hugetlb mount"),
    ("7f3000000000-7f3000400000 rw-s 00000000 00:01 9   /memfd:x (deleted)\n", "an internal shmem mount"),
    ("7f3000000000-7f3000400000 rw-s 00000000 00:05 3   /dev/nvidia0\n", "a device node"),
    ("7f3000000000-7f3000400000 rw-s 00000000 00:1a 3   /dev/dri/card0\n", "a device node on a tmpfs /dev"),
    ("7f3000000000-7f3000400000 rw-p 00000000 fd:07 3   /mnt/x\n", "a device no mountinfo lists"),
])
def test_maps_defers_to_smaps_wherever_it_cannot_tell(tmp_path: Path, extra: str, why: str) -> None:
    """read_maps takes anonymous mappings and files on plain file systems (by device number in mountinfo,
    maps' hex against mountinfo's decimal), and gives up (None: read smaps) on anything that may be
    hugetlb or VM_IO."""
    from numamove.maps import read_maps

    proc = _proc_dir(tmp_path, ANON + LIB + SHM, MOUNTINFO)
    got = read_maps(42, proc)
    assert got is not None
    assert [(m.start, m.perms, m.path, m.rss, m.kind) for m in got] == [
        (0x7f0000000000, "rw-p", "", None, "anon"), (0x7f1000000000, "r-xp", "/usr/lib/libc.so.6", None, "file"),
        (0x7f2000000000, "rw-s", "/dev/shm/buf file", None, "shm")]
    (tmp_path / "42" / "maps").write_text(ANON + LIB + SHM + extra)
    assert read_maps(42, proc) is None, why


def test_collect_from_maps_finds_what_smaps_finds() -> None:
    """A live process with 4 KiB pages, THPs, a /dev/shm file and its libraries: read from maps (the fast
    path), every page, node, mapping segment and skipped mapping is the same as read from smaps."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from workload_helper import Workload

    shm = f"/dev/shm/numamove-maps-{os.getpid()}"
    try:
        with Workload("--size", "24M", "--huge", "16M", "--shm", shm, "--shm-size", "4M") as w:
            fast, slow = collect(w.pid), collect(w.pid, smaps=True)
            assert (fast.source, slow.source) == ("maps", "smaps")

            def pages(ps: object) -> dict[int, list[tuple[int, int]]]:
                return {size: [(int(_native.ffi.cast("uintptr_t", c.pages[i])), c.nodes[i]) for i in range(c.count)]
                        for size, c in ps.classes.items()}  # type: ignore[attr-defined]

            assert pages(fast) == pages(slow)
            assert sorted(fast.segments) == sorted(slow.segments)
            assert fast.skipped == slow.skipped and fast.queried == slow.queried
            kinds = {k for k, _, _, _ in fast.segments}
            assert {"anon", "shm", "file"} <= kinds
            if os.geteuid() == 0:
                assert fast.classes[2 << 20].count >= 4  # THP heads, found through kpageflags
    finally:
        if os.path.exists(shm):
            os.unlink(shm)


def test_a_shared_anonymous_mapping_or_a_huge_address_space_is_read_from_smaps(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """MAP_SHARED|MAP_ANONYMOUS lives on the kernel's internal shmem mount: maps cannot tell it from hugetlb.
    And past MAPS_SCAN_LIMIT of address space, smaps' Rss spares scanning empty mappings."""
    import numamove.scan as scan

    m = mmap.mmap(-1, 1 << 20, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
    m[0] = 1
    try:
        assert collect(os.getpid()).source == "smaps"
    finally:
        m.close()
    assert collect(os.getpid()).source == "maps"
    monkeypatch.setattr(scan, "MAPS_SCAN_LIMIT", 1 << 20)
    assert collect(os.getpid()).source == "smaps"


def test_consecutive_mappings_of_one_kind_fill_one_segment() -> None:
    """collect() records the pages of each kind per page-size array as segments, from what each range
    appended: a run of ranges of one kind is one segment, a range that found nothing makes none, a range
    with THPs adds to the THP array's segments, and the tally by kind adds up to what each range put in."""
    from numamove.scan import HUGE, _segments

    put = [("file", 4096, 3, 0), ("file", 4096, 2, 0), ("anon", 4096, 4, 1), ("file", 4096, 0, 0),
           ("heap", 4096, 5, 0), ("anon", 4096, 0, 2), ("stack", 4096, 0, 0), ("heap", 4096, 1, 0),
           ("anon", 2 << 20, 2, 0)]
    segs = _segments([k for k, *_ in put], [s for _, s, _, _ in put], [g for *_, g, _ in put],
                     [t for *_, t in put])
    assert sorted(segs) == sorted([("file", 4096, 0, 5), ("anon", 4096, 5, 4), ("heap", 4096, 9, 6),
                                   ("anon", HUGE, 0, 3 + 2)])
    want: dict[tuple[str, int], int] = {}
    for kind, size, g, t in put:
        for sz, n in ((size, g), (HUGE, t)):
            if n:
                want[(kind, sz)] = want.get((kind, sz), 0) + n
    got: dict[tuple[str, int], int] = {}
    for kind, size, _first, n in segs:
        got[(kind, size)] = got.get((kind, size), 0) + n
    assert got == want


def test_a_refused_process_is_explained_for_root_and_for_a_user(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ptrace check refusing a process: a user is told what would allow it; root, that root was not
    enough and why that happens (it read "run as its owner or root" to root)."""
    from numamove.proc import access_hint

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert access_hint() == "run as its owner or root, or with CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH"
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    hint = access_hint()
    assert hint.startswith("even as root: ") and "capabilities numamove lacks" in hint and "root," not in hint
