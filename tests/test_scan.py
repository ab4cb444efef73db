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
    """A scan that fills its arrays grows them and carries on: no page is dropped."""
    m = mmap.mmap(-1, 2000 * 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    m.madvise(mmap.MADV_NOHUGEPAGE)
    for off in range(0, len(m), 4096):
        m[off] = 1
    a = _addr(m)
    ctx = _native.ScanContext(os.open("/proc/self/pagemap", os.O_RDONLY), -1, [], (0, 0))
    out = _native.PageOut(4096, 16)  # far too small on purpose
    ctx.scan(a, len(m), 4096, out, None)
    assert out.count == 2000 and out.out.cap >= 2000
    assert int(_native.ffi.cast("uintptr_t", out.pages[1999])) == a + 1999 * 4096
    os.close(ctx.ctx.pagemap_fd)
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
