"""Move the pages under an in-process buffer to a node, keeping its address.

``migrate(buffer, node)``: the engine's pinned threads copy the pages into a fresh
mapping bound to the node (its pages are faulted by the copying threads, on the
node, in parallel), then mremap(MREMAP_MAYMOVE | MREMAP_FIXED) puts that mapping
where the old pages were: the buffer's address never changes and the old pages
are freed. Only private anonymous memory is eligible: remapping a file-backed
or shared mapping would detach it from the file or from the other processes.
"""

from __future__ import annotations

import mmap
import os
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from . import _native
from .calibration import for_library
from .engine import run_plan
from .errors import UsageError
from .maps import read_smaps
from .planner import BASE_PAGE, HUGE_PAGE, Plan, make_plan
from .topology import Topology, current_node, read_topology

PAGE = mmap.PAGESIZE
MIN_BYTES = 64 << 10  # below this a buffer shares its pages with other objects (malloc, pymalloc)


class UnsafeBufferError(UsageError):
    """The buffer's memory cannot be migrated by copy and remap (file-backed, shared, heap, read-only)."""


@dataclass(frozen=True)
class BufferMigration:
    """What migrate() did."""

    address: int  # the buffer's address, before and after
    start: int  # the page-aligned range that was moved
    length: int
    plan: Plan
    seconds: float
    fallback: str | None
    verified: bool
    edge_pages: dict[int, int]  # shared first/last page -> its move_pages status (node or -errno)

    @property
    def gbps(self) -> float:
        return self.length / self.seconds / 1e9 if self.seconds else 0.0


def _page_range(addr: int, n: int) -> tuple[int, int]:
    """The whole pages [lo, hi) that bytes [addr, addr+n) touch."""
    return addr - addr % PAGE, addr + n + (-(addr + n)) % PAGE


def _span(buf: Any) -> tuple[Any, int, int, int, int]:
    keep, addr, n = _native.buffer_address(buf, writable=True, what="buffer")
    if n == 0:
        raise UsageError("buffer is empty")
    lo, hi = _page_range(addr, n)
    return keep, addr, n, lo, hi


def where(buffer: Any) -> dict[int, int]:
    """Pages of the buffer per node; negative keys count pages not on any node (-errno, e.g. -2 ENOENT).

    Raises:
        UsageError: not a buffer.
    """
    keep, addr, n = _native.buffer_address(buffer, what="buffer")
    lo, hi = _page_range(addr, n)
    status = _native.page_nodes(lo, hi - lo, PAGE)
    del keep
    return dict(Counter(status))


# VmFlags of /proc/PID/smaps that a copy remapped over the buffer would not carry over
REMAP_DROPS = {
    "lo": "mlocked (mlock, MCL_FUTURE)",
    "dc": "excluded from fork (MADV_DONTFORK)",
    "wf": "wiped on fork (MADV_WIPEONFORK)",
    "um": "registered with userfaultfd",
    "uw": "registered with userfaultfd (write-protect)",
    "ui": "registered with userfaultfd (minor faults)",
}


def _check_mappings(lo: int, hi: int) -> None:
    covered = lo
    for m in read_smaps(os.getpid()):
        if m.end <= lo or m.start >= hi:
            continue
        what = m.path or "anonymous"
        if m.path and not m.path.startswith("[anon") and m.path != "[heap]":
            raise UnsafeBufferError(
                f"buffer lives in {m.path}: migrate() moves only private anonymous memory "
                "(mmap'd or malloc'd, a NumPy array, a bytearray of 64 KiB or more)")
        if m.shared:
            raise UnsafeBufferError(f"buffer is in a shared mapping ({what}): other mappers would lose it")
        if m.hugetlb:
            raise UnsafeBufferError("buffer is in a hugetlb mapping: use numamove proc on it instead")
        if "w" not in m.perms:
            raise UnsafeBufferError("buffer's mapping is read-only")
        # the remap puts a fresh mapping's flags in place of these: refuse what they would drop
        dropped = [why for flag, why in REMAP_DROPS.items() if flag in m.vmflags]
        if dropped:
            raise UnsafeBufferError(f"buffer's mapping is {' and '.join(dropped)}, which the remap would undo: "
                                    "use numamove proc on this process instead (move_pages keeps it)")
        if m.start > covered:
            break
        covered = max(covered, m.end)
    if covered < hi:
        raise UnsafeBufferError("buffer is not entirely inside mapped memory")


def migrate(buffer: Any, node: int, *, threads: int | None = None, policy: str = "auto", verify: bool = False,
            topology: Topology | None = None) -> BufferMigration:
    """Move the pages under ``buffer`` to ``node``; the buffer's address does not change.

    Every page the buffer spans is moved: the whole pages inside it by copy and remap,
    a first or last page it shares with other objects by move_pages (in place). Afterwards
    the remapped pages have the memory policy of the copy's mapping: bound (MPOL_BIND) to
    node, so pages the buffer gets later (after MADV_DONTNEED, say) come from node too. Other
    threads must not write to the buffer during the call: the copy runs without the
    GIL, and a write made between the copy and the remap would be lost.

    Args:
        buffer: a writable buffer (mmap, NumPy array, ...) in private anonymous memory.
        node: the destination node (must have memory).
        threads: the copy thread limit, 1..32; None: the calibration's for this pair, else 4.
        policy: "push", "pull" or "auto" (the calibration's faster direction, else push).
        verify: compare every byte of the copy before the remap (costs one more pass).
        topology: the machine (read from sysfs when omitted).

    Returns:
        BufferMigration with the moved range, the plan and the timing.

    Raises:
        UnsafeBufferError: read-only, file-backed, shared or hugetlb memory; mlocked, DONTFORK,
            WIPEONFORK or userfaultfd-registered memory (the remap would drop those flags).
        NodeUnavailableError: the node has less free memory than the buffer spans.
        InvalidNodeError: a node that does not exist or has no memory.
        VerificationError: with verify, a copy that differs (nothing was remapped).
        NativeError: the new mapping or the remap failed (the buffer is untouched).
    """
    from .errors import VerificationError

    t0 = time.perf_counter()
    try:
        keep, addr, _n, lo, hi = _span(buffer)
    except UsageError as exc:
        raise UnsafeBufferError(str(exc)) from None
    if _n < MIN_BYTES:
        raise UnsafeBufferError(f"buffer of {_n} bytes is under {MIN_BYTES // 1024} KiB: its pages hold other "
                                "objects, which a copy and remap could lose writes to")
    topo = topology or read_topology()
    topo.require(node, "node", memory=True)
    _check_mappings(lo, hi)
    free = topo.node(node).mem_free
    if free and hi - lo > free:
        from .errors import NodeUnavailableError
        from .nodelist import format_bytes

        raise NodeUnavailableError(f"node {node} has {format_bytes(free)} free, the buffer needs "
                                   f"{format_bytes(hi - lo)}")
    # Whole pages inside the buffer are copied and remapped. A first or last page the buffer
    # shares with other objects (malloc headers, neighbours) goes through move_pages instead:
    # the kernel migrates it in place, so a concurrent write to a neighbour cannot be lost.
    inner_lo = addr + (-addr) % PAGE
    inner_hi = (addr + _n) - (addr + _n) % PAGE
    edges = [p for p in (lo, inner_hi) if (p == lo and lo < inner_lo) or (p == inner_hi and inner_hi < hi)]
    size = inner_hi - inner_lo
    first = _native.page_nodes(inner_lo, PAGE)[0]
    here = current_node(topo)
    src = first if first >= 0 else here
    # 2 MiB items: the copy threads fault the fresh mapping's THPs, which keep their alignment
    # relative to the buffer (nm_map_like), so the remap moves them whole
    item = HUGE_PAGE
    plan = make_plan(topo, src, node, -(-size // item), size // BASE_PAGE, threads, policy, here,
                     frozenset(os.sched_getaffinity(0)), for_library(topo))
    fresh = _native.Region(size, node, like=inner_lo)
    try:
        _report, fallback = run_plan(plan, _native.Items.ranges(fresh.addr, inner_lo, size, item))
        if verify:
            off = _native.compare(fresh.addr, inner_lo, size)
            if off >= 0:
                raise VerificationError(f"copy differs at byte {off}: buffer left where it was")
        fresh.remap_onto(inner_lo)
    finally:
        fresh.close()  # a no-op after a successful remap
    edge_status: list[int] = []
    if edges:
        st = _native.raw_new("int[]", len(edges))
        _native.move(0, _native.page_list(edges), len(edges), node, _native.MPOL_MF_MOVE, (), 1, 16, st)
        edge_status = list(st)
    del keep
    return BufferMigration(addr, lo, hi - lo, plan, time.perf_counter() - t0, fallback, verify,
                           dict(zip(edges, edge_status)))
