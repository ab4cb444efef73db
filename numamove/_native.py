"""The only importer of the compiled module: typed wrappers, -errno -> NativeError.

cffi releases the GIL during every call, so each wrapper keeps the buffers it
passes alive until the call returns.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # signal's builtin: no enum to build
import errno as _errno
import os

from .errors import NativeError, UsageError

TYPE_CHECKING = False  # typing's own constant to mypy; importing typing costs start-up ~4 ms
if TYPE_CHECKING:
    from typing import Any

try:
    from ._native_lib import ffi, lib  # type: ignore[import-not-found]
except ImportError as exc:  # pragma: no cover - only on an unbuilt tree
    raise ImportError(
        f"numamove's C extension is not built ({exc}): run 'make build' or 'pip install -e .'"
    ) from exc

MAX_THREADS: int = lib.NM_MAX_THREADS
SPLIT_MODES = {"group": lib.NM_SPLIT_GROUP, "chunk": lib.NM_SPLIT_CHUNK}


def _check(rc: int, func: str, detail: str = "") -> int:
    if rc < 0:
        raise NativeError(-rc, func, detail)
    return rc


class WorkerReport:
    """What one copy worker did: CPU asked for (-1 = not pinned), CPUs seen, pinning errno, work, time."""

    __slots__ = ("cpu", "cpu_at_start", "cpu_at_end", "pin_err", "pieces", "bytes", "ns")

    def __init__(self, cpu: int, cpu_at_start: int, cpu_at_end: int, pin_err: int, pieces: int,
                 nbytes: int, ns: int) -> None:
        self.cpu, self.cpu_at_start, self.cpu_at_end, self.pin_err = cpu, cpu_at_start, cpu_at_end, pin_err
        self.pieces, self.bytes, self.ns = pieces, nbytes, ns


class CopyReport:
    """One nm_copy call."""

    __slots__ = ("threads", "mode", "wall_ns", "workers")

    def __init__(self, threads: int, mode: str, wall_ns: int, workers: tuple[WorkerReport, ...]) -> None:
        self.threads, self.mode, self.wall_ns, self.workers = threads, mode, wall_ns, workers


class Items:
    """A caller-owned nm_item array of (dst, src, len)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._arr = ffi.new("nm_item[]", max(count, 1))

    @classmethod
    def ranges(cls, dst: int, src: int, length: int, item_size: int) -> Items:
        """Two equal ranges cut into items of item_size, built in C (no per-item Python)."""
        if length < 0 or item_size <= 0:
            raise ValueError("length must be >= 0 and item_size > 0")
        self = cls(-(-length // item_size))
        lib.nm_fill_items(ffi.cast("void *", dst), ffi.cast("void *", src), length, item_size,
                          self._arr, self.count)
        return self

    @classmethod
    def explicit(cls, triples: list[tuple[int, int, int]]) -> Items:
        """Arbitrary (dst address, src address, length) items."""
        self = cls(len(triples))
        for i, (d, s, n) in enumerate(triples):
            self._arr[i].dst = ffi.cast("void *", d)
            self._arr[i].src = ffi.cast("void *", s)
            self._arr[i].len = n
        return self

    @property
    def cdata(self) -> Any:
        return self._arr


def copy(items: Items, cpus: tuple[int, ...] | None, threads: int, mode: str) -> CopyReport:
    """Run nm_copy; raises NativeError (EAGAIN/ENOMEM: workers could not start)."""
    rep = ffi.new("nm_copy_report *")
    cpu_arr = ffi.new("int[]", list(cpus)) if cpus else ffi.NULL
    rc = lib.nm_copy(items.cdata, items.count, cpu_arr, threads, SPLIT_MODES[mode], rep)
    _check(rc, "nm_copy", f"starting {threads} copy threads")
    workers = tuple(
        WorkerReport(w.cpu, w.cpu_at_start, w.cpu_at_end, w.pin_err, w.pieces, w.bytes, w.ns)
        for w in (rep.workers[i] for i in range(rep.threads))
    )
    return CopyReport(rep.threads, mode, rep.wall_ns, workers)


FILL_NAMES = {lib.NM_FILL_POPULATE: "populate", lib.NM_FILL_UFFD: "userfaultfd"}
_UFFD_STEPS = {lib.NM_UFFD_STEP_OPEN: "userfaultfd()", lib.NM_UFFD_STEP_API: "UFFDIO_API",
               lib.NM_UFFD_STEP_REGISTER: "UFFDIO_REGISTER"}


class FillReport(CopyReport):
    """One nm_copy_into_map call: a CopyReport, and how the new pages were allocated ("userfaultfd" or
    "populate") with, when userfaultfd was asked for and could not be had, why (else None)."""

    __slots__ = ("fill", "fill_why")

    def __init__(self, threads: int, wall_ns: int, workers: tuple[WorkerReport, ...], fill: str,
                 fill_why: str | None) -> None:
        super().__init__(threads, "pieces", wall_ns, workers)
        self.fill, self.fill_why = fill, fill_why


def copy_into_map(dst: int, src_fd: int, length: int, chunk: int, cpus: tuple[int, ...] | None,
                  threads: int, uffd: bool = True, extents: list[tuple[int, int]] | None = None) -> FillReport:
    """nm_copy_into_map: fill the shared tmpfs mapping dst (page-aligned) with the file src_fd's bytes
    [0..length) (only its extents [start, end) when given, the rest left holes), each piece read by the
    kernel, its pages allocated on the file's policy node (userfaultfd's UFFDIO_COPY when uffd and
    available: no zeroing; else MADV_POPULATE_WRITE, then pread), read again and compared, on pinned
    threads.

    Raises:
        NativeError: func "UFFDIO_COPY" or "madvise" (populating) when allocating failed (ENOMEM,
            ENOSPC, EFAULT: no room; EINVAL from madvise: a kernel before 5.14); func "pread" when
            reading the source failed, ENODATA when it ended early (the offset in the message);
            EILSEQ when a piece read twice differs (its offset in the message); func
            "pthread_create" when no worker could start.
    """
    rep = ffi.new("nm_copy_report *")
    mismatch = ffi.new("long long *")
    failed = ffi.new("int *")
    cpu_arr = ffi.new("int[]", list(cpus)) if cpus else ffi.NULL
    ext = ffi.new("uint64_t[]", [x for e in extents for x in e]) if extents is not None else ffi.NULL
    rc = lib.nm_copy_into_map(ffi.cast("void *", dst), src_fd, length, ext, len(extents or ()), chunk, cpu_arr,
                              threads, lib.NM_FILL_UFFD if uffd else lib.NM_FILL_POPULATE, rep, mismatch, failed)
    if rc == -_errno.EILSEQ and failed[0] == lib.NM_COPY_FAILED_COMPARE:
        raise NativeError(_errno.EILSEQ, "nm_copy_into_map", f"the copy differs from its source at byte {mismatch[0]}")
    if rc == -_errno.ENODATA and failed[0] == lib.NM_COPY_FAILED_READ:
        raise NativeError(_errno.ENODATA, "pread", f"the source ended at byte {mismatch[0]} of {length}")
    if rc < 0 and rep.threads == 0:
        raise NativeError(-rc, "pthread_create", f"starting {threads} copy threads")
    if rc < 0 and failed[0] == lib.NM_COPY_FAILED_READ:
        _check(rc, "pread", "reading the source")
    if rep.fill == lib.NM_FILL_UFFD:
        _check(rc, "UFFDIO_COPY", f"allocating {length} bytes")
    _check(rc, "madvise", f"allocating {length} bytes (MADV_POPULATE_WRITE)")
    workers = tuple(WorkerReport(w.cpu, w.cpu_at_start, w.cpu_at_end, w.pin_err, w.pieces, w.bytes, w.ns)
                    for w in (rep.workers[i] for i in range(rep.threads)))
    why = None
    if uffd and rep.fill_err:
        why = f"{_UFFD_STEPS.get(rep.fill_step, 'userfaultfd')}: {os.strerror(rep.fill_err)}"
    return FillReport(rep.threads, rep.wall_ns, workers, FILL_NAMES[rep.fill], why)


def memcpy_ns(dst: int, src: int, length: int) -> int:
    """Single-threaded memcpy on the calling thread: the baseline. Returns nanoseconds."""
    return int(lib.nm_memcpy_ns(ffi.cast("void *", dst), ffi.cast("void *", src), length))


def compare(a: int, b: int, length: int) -> int:
    """Offset of the first differing byte of two ranges, or -1 when they are equal."""
    return int(lib.nm_compare(ffi.cast("void *", a), ffi.cast("void *", b), length))


def fill(addr: int, byte: int, length: int) -> None:
    lib.nm_fill(ffi.cast("void *", addr), byte, length)


class Region:
    """Anonymous memory bound to one node, faulted in (unless fault=False); unmapped by close().

    huge: 2 MiB aligned and THP-advised; base_pages: MADV_NOHUGEPAGE, 4 KiB pages only.
    """

    def __init__(self, length: int, node: int, huge: bool = False, fault: bool = True,
                 like: int | None = None, base_pages: bool = False) -> None:
        out = ffi.new("void **")
        if like is not None:  # unfaulted, THP-advised, congruent to `like` modulo 2 MiB
            rc = lib.nm_map_like(length, node, like, out)
        else:
            flags = ((lib.NM_MAP_HUGE if huge else 0) | (0 if fault else lib.NM_MAP_NOFAULT)
                     | (lib.NM_MAP_NOHUGE if base_pages else 0))
            rc = lib.nm_map_on_node(length, node, flags, out)
        _check(rc, "nm_map_on_node", f"mapping {length} bytes on node {node}")
        self.node = node
        self.huge = huge
        self.length = length
        # what nm_map_on_node really mapped: it rounds up to whole (huge) pages
        align = (2 << 20) if huge and like is None else 4096
        self._mapped = -(-length // align) * align
        self.addr = int(ffi.cast("uintptr_t", out[0]))
        self._open = True

    def remap_onto(self, dst: int) -> None:
        """Move this region's pages to address dst (mremap FIXED); the region no longer owns them."""
        _check(lib.nm_remap(ffi.cast("void *", self.addr), self.length, ffi.cast("void *", dst)),
               "mremap", f"moving {self.length} bytes onto {dst:#x}")
        self._open = False

    def view(self) -> memoryview:
        return memoryview(ffi.buffer(ffi.cast("char *", self.addr), self.length))

    def close(self) -> None:
        if getattr(self, "_open", False):  # not set when the mapping itself failed
            self._open = False
            lib.nm_unmap(ffi.cast("void *", self.addr), self._mapped)

    def __enter__(self) -> Region:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


def page_nodes(addr: int, length: int, page_size: int = 4096, pid: int = 0) -> list[int]:
    """Where each page of [addr, addr+length) is: a node, or -errno (e.g. -ENOENT)."""
    n = -(-length // page_size)
    if n == 0:
        return []
    pages = ffi.new("void *[]", n)
    lib.nm_fill_pages(ffi.cast("void *", addr), length, page_size, pages, n)
    return query_nodes(pid, pages, n)


def buffer_address(buf: Any, writable: bool = False, what: str = "buffer") -> tuple[Any, int, int]:
    """(keep-alive cdata, address, length in bytes) of an object with the buffer protocol.

    Raises:
        UsageError: not a buffer, or read-only where ``writable`` is asked for.
    """
    try:
        cdata = ffi.from_buffer(buf, require_writable=writable)
    except (TypeError, BufferError, ValueError) as exc:
        need = "a writable buffer" if writable else "a buffer"
        raise UsageError(f"{what} must be {need} ({type(buf).__name__}: {exc})") from None
    return cdata, int(ffi.cast("uintptr_t", cdata)), len(cdata)


def current_cpu() -> int:
    return _check(lib.nm_current_cpu(), "sched_getcpu")


def die_with_parent(parent: int) -> int:
    """In a forked helper: SIGKILL when parent dies; 0, or -ESRCH when it already has."""
    return int(lib.nm_die_with_parent(parent))


def fault_inject_thread_create(count: int, err: int = _errno.EAGAIN, skip: int = 0) -> None:
    """Test hook: after ``skip`` more successful worker creations, the next ``count`` fail with ``err``."""
    lib.nm_fault_inject_thread_create(count, err, skip)


def fault_inject_worker_kill(on: bool) -> None:
    """Test hook: while on, move_own's first worker process is SIGKILLed holding a batch it has not begun."""
    lib.nm_fault_inject_worker_kill(int(on))


def resident_pages(out: PageOut, addr: int, length: int, page_size: int) -> int:
    """Append the resident pages of our own mapping [addr, addr+length) to out, mapping each (pages cut
    off by a truncation meanwhile are left out)."""
    while out.out.cap - out.out.count < -(-length // page_size):
        out.grow()
    vec = ffi.new("unsigned char[]", max(1, -(-length // 4096)))
    o = out.out
    n = _check(lib.nm_resident_pages(ffi.cast("void *", addr), length, page_size, vec,
                                     o.pages + o.count, o.cap - o.count), "mincore")
    lib.nm_fill_int(o.nodes + o.count, n, NODE_UNKNOWN)
    o.count += n
    return n


def prefer_node(addr: int, length: int, node: int) -> None:
    _check(lib.nm_prefer_node(ffi.cast("void *", addr), length, node), "mbind", f"preferring node {node}")


def bind_node(addr: int, length: int, node: int) -> None:
    _check(lib.nm_bind_node(ffi.cast("void *", addr), length, node), "mbind", f"binding to node {node}")


def query_nodes(pid: int, pages: Any, count: int) -> list[int]:
    """Where each page is (nodes=NULL): a node or -errno per entry."""
    if count == 0:
        return []
    status = ffi.new("int[]", count)
    query_into(pid, pages, count, status)
    return list(status)


def query_into(pid: int, pages: Any, count: int, status: Any) -> None:
    """Where each of pages[0..count) is, written into status[0..count) (a node or -errno)."""
    if count:
        lib.nm_fill_int(status, count, -_errno.EINPROGRESS)
        _check(lib.nm_move_pages(pid, count, pages, ffi.NULL, status, 0), "move_pages",
               f"querying {count} pages of PID {pid}")


class MoveWorker:
    """What one nm_move worker did."""

    __slots__ = ("cpu", "cpu_at_start", "cpu_at_end", "pin_err", "err", "done", "calls", "not_migrated",
                 "ns", "max_call_ns")

    def __init__(self, w: Any) -> None:
        self.cpu, self.cpu_at_start, self.cpu_at_end = w.cpu, w.cpu_at_start, w.cpu_at_end
        self.pin_err, self.err, self.done, self.calls = w.pin_err, w.err, w.done, w.calls
        self.not_migrated, self.ns, self.max_call_ns = w.not_migrated, w.ns, w.max_call_ns


class MoveBatch:
    """One nm_move call: how long it took and what each worker did (statuses are in the caller's array)."""

    __slots__ = ("wall_ns", "workers")

    def __init__(self, wall_ns: int, workers: tuple[MoveWorker, ...]) -> None:
        self.wall_ns = wall_ns
        self.workers = workers


def move(pid: int, pages: Any, count: int, node: int, flags: int, cpus: tuple[int, ...],
         threads: int, batch: int, status: Any, nodes: Any | None = None) -> MoveBatch:
    """nm_move: move_pages of pages[0..count) to node on pinned threads; status[0..count) receives
    where each reached page is, or -errno (entries not reached keep -EINPROGRESS).

    nodes: a target array already filled with node (reused between calls), or None.

    Raises:
        NativeError: bad arguments, or EAGAIN/ENOMEM when workers could not start.
    """
    if nodes is None:
        nodes = raw_new("int[]", max(count, 1))
        lib.nm_fill_int(nodes, count, node)
    lib.nm_fill_int(status, count, -_errno.EINPROGRESS)
    rep = ffi.new("nm_move_report *")
    cpu_arr = ffi.new("int[]", list(cpus)) if cpus else ffi.NULL
    rc = lib.nm_move(pid, pages, nodes, status, count, flags, cpu_arr, threads, batch, rep)
    _check(rc, "nm_move", f"starting {threads} migration threads")
    return MoveBatch(rep.wall_ns, tuple(MoveWorker(rep.workers[i]) for i in range(rep.threads)))


def move_own(pages: Any, count: int, node: int, flags: int, cpus: tuple[int, ...], workers: int, batch: int,
             status: Any, nodes: Any, page_size: int, remap: bool = True) -> MoveBatch:
    """nm_move_own: move() for pages of numamove's own shared file mapping, page_size apart at most, on
    worker processes (each an mm of its own: no TLB shootdowns between the workers; numamove's own
    mapping of the pages is dropped), or on the calling thread when workers is 1, mapping the pages
    here again first when remap (an earlier call with several workers dropped them). nodes: a target
    array already filled with node.

    Raises:
        NativeError: bad arguments, or EAGAIN/ENOMEM when no worker could be forked.
    """
    lib.nm_fill_int(status, count, -_errno.EINPROGRESS)
    rep = ffi.new("nm_move_report *")
    cpu_arr = ffi.new("int[]", list(cpus)) if cpus else ffi.NULL
    rc = lib.nm_move_own(pages, nodes, status, count, flags, cpu_arr, workers, batch, page_size, int(remap), rep)
    _check(rc, "nm_move_own", f"starting {workers} migration worker processes")
    return MoveBatch(rep.wall_ns, tuple(MoveWorker(rep.workers[i]) for i in range(rep.threads)))


raw_new = ffi.new_allocator(should_clear_after_alloc=False)  # arrays C fills before anyone reads them


def tally(values: Any, count: int) -> list[tuple[int, int]]:
    """(value, how many) of values[0..count), counted in C."""
    if count == 0:
        return []
    keys = ffi.new("int[]", lib.NM_HIST_MAX)
    counts = ffi.new("size_t[]", lib.NM_HIST_MAX)
    k = lib.nm_tally(values, count, keys, counts)
    if k >= 0:
        return [(keys[i], counts[i]) for i in range(k)]
    out: dict[int, int] = {}  # more distinct values than C counts at once (many errnos): rare
    for v in ffi.unpack(values, count):
        out[v] = out.get(v, 0) + 1
    return list(out.items())


def select_values(pages: Any, values: Any, count: int, want: list[int]) -> tuple[Any, Any, int]:
    """(the entries of pages whose value is in want, their indexes, how many), built in C."""
    out = raw_new("void *[]", max(count, 1))
    idx = raw_new("size_t[]", max(count, 1))
    w = ffi.new("int[]", want)
    n = lib.nm_select_values(pages, values, count, w, len(want), out, idx)
    return out, idx, int(n)


def fill_int(arr: Any, count: int, value: int) -> None:
    """arr[0..count) = value."""
    lib.nm_fill_int(arr, count, value)


def scatter(dst: Any, idx: Any, src: Any, count: int) -> None:
    """dst[idx[k]] = src[k] for k < count."""
    lib.nm_scatter_int(dst, idx, src, count)


NODE_UNKNOWN: int = lib.NM_NODE_UNKNOWN


class PageOut:
    """A growable pair of C arrays: page addresses and the node (or -errno) of each."""

    __slots__ = ("page_size", "out", "_keep")

    def __init__(self, page_size: int, cap: int) -> None:
        self.page_size = page_size
        self.out = ffi.new("nm_page_out *")
        self._alloc(max(cap, 16))

    def _alloc(self, cap: int) -> None:
        o = self.out
        pages, nodes = raw_new("void *[]", cap), raw_new("int[]", cap)
        if o.count:
            ffi.memmove(pages, o.pages, o.count * ffi.sizeof("void *"))
            ffi.memmove(nodes, o.nodes, o.count * ffi.sizeof("int"))
        self._keep = (pages, nodes)
        o.pages, o.nodes, o.cap = pages, nodes, cap

    def grow(self) -> None:
        self._alloc(self.out.cap * 2)

    @property
    def count(self) -> int:
        return int(self.out.count)

    @property
    def pages(self) -> Any:
        return self.out.pages

    @property
    def nodes(self) -> Any:
        return self.out.nodes


PAGE_ENTRY_BYTES = 12  # an address and a node: what pack_pages writes an entry


def pack_pages(out: PageOut, buf: Any, at: int) -> int:
    """Write out's addresses, then its nodes, into the writable buffer buf (a shared mapping that the
    process this one was forked from reads) from byte at. Returns the bytes written."""
    n = out.count
    p, q = n * int(ffi.sizeof("void *")), n * int(ffi.sizeof("int"))
    if at + p + q > len(buf):
        raise ValueError("page arrays larger than their room")
    dst = ffi.from_buffer(buf) + at
    ffi.memmove(dst, out.pages, p)
    ffi.memmove(dst + p, out.nodes, q)
    return p + q


def unpack_pages(out: PageOut, at: int, data: bytes | memoryview, count: int) -> int:
    """Put count entries that pack_pages wrote (at the start of data) at index at of out, which has room;
    out's count becomes at + count. Returns the bytes taken from data."""
    p, q = count * int(ffi.sizeof("void *")), count * int(ffi.sizeof("int"))
    if len(data) < p + q or at + count > out.out.cap:
        raise ValueError("page arrays cut short or larger than their room")
    ffi.memmove(out.pages + at, data[:p], p)
    ffi.memmove(out.nodes + at, data[p:p + q], q)
    out.out.count = at + count
    return p + q


class ScanContext:
    """pagemap (and kpageflags, the PFN -> node table, the zero pages' PFNs) for nm_scan_range."""

    def __init__(self, pagemap_fd: int, kpageflags_fd: int, ranges: list[tuple[int, int, int]],
                 zero: tuple[int, int]) -> None:
        self._ranges = ffi.new("nm_pfn_range[]", [(a, b, n) for a, b, n in ranges]) if ranges else ffi.NULL
        self._scratch = raw_new("uint64_t[]", lib.NM_PAGEMAP_CHUNK)
        self.ctx = ffi.new("nm_scan_ctx *", {
            "pagemap_fd": pagemap_fd, "kpageflags_fd": kpageflags_fd, "ranges": self._ranges,
            "n_ranges": len(ranges), "zero_pfn": zero[0], "huge_zero_pfn": zero[1], "scratch": self._scratch})

    def scan_all(self, starts: list[int], ends: list[int], sizes: list[int], outs: list[PageOut],
                 thps: list[PageOut | None], sparse: list[bool] | None = None) -> tuple[list[int], list[int]]:
        """Append the present pages of every range [starts[i], ends[i]) (pages of sizes[i]) to outs[i], THP
        heads to thps[i], in one C call (nm_scan_ranges), growing a full output and going on; the entries
        each range appended to its out and to its thp. Where sparse[i], few of range i's pages are present:
        PAGEMAP_SCAN finds them (Linux 6.7) instead of reading the range's whole pagemap."""
        n = len(starts)
        got, got_thp = ffi.new("size_t[]", n), ffi.new("size_t[]", n)
        c_starts, c_ends = ffi.new("unsigned long[]", starts), ffi.new("unsigned long[]", ends)
        c_sizes = ffi.new("size_t[]", sizes)
        c_sparse = ffi.new("unsigned char[]", [bool(x) for x in sparse]) if sparse else ffi.NULL
        c_outs = ffi.new("nm_page_out *[]", [o.out for o in outs])
        c_thps = ffi.new("nm_page_out *[]", [ffi.NULL if t is None else t.out for t in thps])
        done, nxt = ffi.new("size_t *"), ffi.new("unsigned long *")
        while True:
            rc = lib.nm_scan_ranges(self.ctx, n, c_starts, c_ends, c_sizes, c_sparse, c_outs, c_thps, got, got_thp,
                                    done, nxt)
            _check(rc, "pread", "reading /proc/PID/pagemap")
            i = done[0]
            if i >= n:
                return ffi.unpack(got, n), ffi.unpack(got_thp, n)
            thp = thps[i]
            (thp if thp is not None and thp.out.count >= thp.out.cap else outs[i]).grow()

    def present(self, start: int, length: int) -> bool:
        """Whether [start, start+length) has a present page (the scan stops at the first)."""
        one = PageOut(4096, 1)
        one.out.cap = 1
        nxt = ffi.new("unsigned long *")
        _check(lib.nm_scan_range(self.ctx, start, length, 4096, one.out, ffi.NULL, nxt), "pread",
               "reading /proc/PID/pagemap")
        return one.count > 0


def zero_pfns() -> tuple[int, int]:
    """PFNs of the zero page and the huge zero page (0 where unknown, e.g. without CAP_SYS_ADMIN)."""
    zero = ffi.new("uint64_t[2]")
    try:
        fd = os.open("/proc/self/pagemap", os.O_RDONLY)
    except OSError:
        return 0, 0
    try:
        lib.nm_zero_pfns(fd, zero, zero + 1)
    finally:
        os.close(fd)
    return int(zero[0]), int(zero[1])


def page_list(addrs: list[Any]) -> Any:
    """A new void*[] holding these page addresses."""
    return ffi.new("void *[]", [a if isinstance(a, ffi.CData) else ffi.cast("void *", a) for a in addrs])


def offset(pages: Any, k: int) -> Any:
    """pages + k, for passing a slice of a C array without copying it."""
    return pages + k


MADV_POPULATE_READ = 22  # Linux 5.14
MPOL_MF_MOVE = 1 << 1
MPOL_MF_MOVE_ALL = 1 << 2


TMPFS_MAGIC = 0x01021994
HUGETLBFS_MAGIC = 0x958458F6
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


def fs_type(fd: int) -> int:
    """statfs f_type of an open file (TMPFS_MAGIC, HUGETLBFS_MAGIC, ...)."""
    return _check(lib.nm_fs_type(fd), "fstatfs")


def renameat2(olddirfd: int, old: str, newdirfd: int, new: str, flags: int) -> None:
    """renameat2(2); raises OSError with the errno (EXDEV, EPERM, EEXIST ...)."""
    rc = lib.nm_renameat2(olddirfd, os.fsencode(old), newdirfd, os.fsencode(new), flags)  # any bytes a name holds
    if rc < 0:
        raise OSError(-rc, os.strerror(-rc), new)


def flock(fd: int, op: int) -> None:
    """flock(2) (op: LOCK_EX, LOCK_NB, LOCK_UN below); raises OSError with the errno, BlockingIOError when
    LOCK_NB finds the lock held."""
    rc = lib.nm_flock(fd, op)
    if rc < 0:
        raise OSError(-rc, os.strerror(-rc))  # OSError picks its subclass: EWOULDBLOCK is BlockingIOError


LOCK_EX: int = lib.NM_LOCK_EX
LOCK_NB: int = lib.NM_LOCK_NB
LOCK_UN: int = lib.NM_LOCK_UN


# the signals nm_stop_install() records (its C list), for Python code that holds them back or handles them
STOP_SIGNALS: tuple[int, int, int] = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP)


class StopSignalsHeld:
    """`with StopSignalsHeld():` the stop signals wait for the block to end (a report written whole, a
    publish or a widening done whole); one that arrived meanwhile is delivered as the block ends."""

    __slots__ = ("_old",)

    def __enter__(self) -> StopSignalsHeld:
        self._old = _signal.pthread_sigmask(_signal.SIG_BLOCK, STOP_SIGNALS)
        return self

    def __exit__(self, *exc: object) -> None:
        _signal.pthread_sigmask(_signal.SIG_SETMASK, self._old)


def stop_install() -> None:
    """Point SIGINT, SIGTERM and SIGHUP at a handler that records them: move and copy workers then take
    no new batch (see stop_signal). Python's handlers cannot run while the main thread is in C.
    Forgets a signal recorded before."""
    lib.nm_stop_clear()
    _check(lib.nm_stop_install(), "sigaction")


def stop_restore() -> None:
    """Put back the handlers stop_install() replaced."""
    lib.nm_stop_restore()


def stop_signal() -> int:
    """The signal recorded since the last stop_clear() (0: none)."""
    return int(lib.nm_stop_signal())


def stop_clear() -> None:
    lib.nm_stop_clear()
