"""The only importer of the compiled module: typed wrappers, -errno -> NativeError.

cffi releases the GIL during every call, so each wrapper keeps the buffers it
passes alive until the call returns.
"""

from __future__ import annotations

import errno as _errno
from dataclasses import dataclass
from typing import Any

from .errors import NativeError, UsageError

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


@dataclass(frozen=True)
class WorkerReport:
    """What one worker thread did."""

    cpu: int  # asked for; -1 = not pinned
    cpu_at_start: int
    cpu_at_end: int
    pin_err: int
    pieces: int
    bytes: int
    ns: int


@dataclass(frozen=True)
class CopyReport:
    threads: int
    mode: str
    wall_ns: int
    workers: tuple[WorkerReport, ...]


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
        if self._open:
            self._open = False
            lib.nm_unmap(ffi.cast("void *", self.addr), self.length)

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


def fault_inject_thread_create(count: int, err: int = _errno.EAGAIN) -> None:
    """Test hook: the next ``count`` worker creations fail with ``err``."""
    lib.nm_fault_inject_thread_create(count, err)


class PageArray:
    """A caller-owned void*[] of page addresses with a pre-filled int status[] beside it."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.count = 0
        self.pages = ffi.new("void *[]", max(capacity, 1))

    def add_range(self, start: int, length: int, page_size: int, pagemap: bytes | None) -> int:
        """Append the pages of a range (only present ones when pagemap is given); returns how many."""
        pm = ffi.from_buffer("uint64_t[]", pagemap) if pagemap is not None else ffi.NULL
        n = lib.nm_collect_pages(start, length, page_size, pm, self.pages + self.count,
                                 self.capacity - self.count)
        self.count += n
        return int(n)


def resident_pages(arr: PageArray, addr: int, length: int, page_size: int) -> int:
    """Append the resident pages of our own mapping [addr, addr+length) to arr, mapping each."""
    vec = ffi.new("unsigned char[]", max(1, -(-length // 4096)))
    n = _check(lib.nm_resident_pages(ffi.cast("void *", addr), length, page_size, vec,
                                     arr.pages + arr.count, arr.capacity - arr.count), "mincore")
    arr.count += n
    return n


def prefer_node(addr: int, length: int, node: int) -> None:
    _check(lib.nm_prefer_node(ffi.cast("void *", addr), length, node), "mbind", f"preferring node {node}")


def bind_node(addr: int, length: int, node: int) -> None:
    _check(lib.nm_bind_node(ffi.cast("void *", addr), length, node), "mbind", f"binding to node {node}")


def query_nodes(pid: int, pages: Any, count: int) -> list[int]:
    """Where each page is (nodes=NULL): a node or -errno per entry."""
    if count == 0:
        return []
    status = ffi.new("int[]", [-_errno.EINPROGRESS] * count)
    _check(lib.nm_move_pages(pid, count, pages, ffi.NULL, status, 0), "move_pages",
           f"querying {count} pages of PID {pid}")
    return list(status)


@dataclass(frozen=True)
class MoveWorker:
    cpu: int
    cpu_at_start: int
    cpu_at_end: int
    pin_err: int
    err: int
    done: int
    calls: int
    not_migrated: int
    ns: int
    max_call_ns: int


@dataclass(frozen=True)
class MoveBatch:
    """One nm_move call: per-entry status and what each worker did."""

    status: list[int]
    wall_ns: int
    workers: tuple[MoveWorker, ...]


def select_node(pages: Any, status: list[int], count: int, node: int) -> tuple[Any, int]:
    """(the entries of pages whose status is `node`, how many), built in C."""
    st = ffi.new("int[]", status)
    out = ffi.new("void *[]", max(count, 1))
    idx = ffi.new("size_t[]", max(count, 1))
    n = lib.nm_select_node(pages, st, count, node, out, idx)
    return out, int(n)


def move(pid: int, pages: Any, count: int, node: int, flags: int, cpus: tuple[int, ...],
         threads: int, batch: int) -> MoveBatch:
    """nm_move: move_pages of pages[0..count) to node on pinned threads.

    Raises:
        NativeError: bad arguments, or EAGAIN/ENOMEM when workers could not start.
    """
    nodes = ffi.new("int[]", max(count, 1))
    lib.nm_fill_int(nodes, count, node)
    status = ffi.new("int[]", max(count, 1))
    lib.nm_fill_int(status, count, -_errno.EINPROGRESS)
    rep = ffi.new("nm_move_report *")
    cpu_arr = ffi.new("int[]", list(cpus)) if cpus else ffi.NULL
    rc = lib.nm_move(pid, pages, nodes, status, count, flags, cpu_arr, threads, batch, rep)
    _check(rc, "nm_move", f"starting {threads} migration threads")
    workers = tuple(
        MoveWorker(w.cpu, w.cpu_at_start, w.cpu_at_end, w.pin_err, w.err, w.done, w.calls,
                   w.not_migrated, w.ns, w.max_call_ns)
        for w in (rep.workers[i] for i in range(rep.threads)))
    return MoveBatch(list(ffi.unpack(status, count)) if count else [], rep.wall_ns, workers)


def page_list(addrs: list[Any]) -> Any:
    """A new void*[] holding these page addresses."""
    return ffi.new("void *[]", [a if isinstance(a, ffi.CData) else ffi.cast("void *", a) for a in addrs])


def offset(pages: Any, k: int) -> Any:
    """pages + k, for passing a slice of a C array without copying it."""
    return pages + k


MPOL_MF_MOVE = 1 << 1
MPOL_MF_MOVE_ALL = 1 << 2
