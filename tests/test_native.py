"""The C engine through numamove._native and numamove.engine, on the host."""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from numamove import _native
from numamove.engine import copy, run_plan
from numamove.errors import NativeError, UsageError
from numamove.planner import chunk_bounds, group_ranges, make_plan
from numamove.topology import read_topology

CPUS = sorted(os.sched_getaffinity(0))


def _pattern(n: int, seed: int) -> bytes:
    return bytes((i * 131 + seed * 7 + (i >> 12)) & 0xFF for i in range(n))


@given(
    sizes=st.lists(st.integers(min_value=0, max_value=70_000), min_size=1, max_size=12),
    src_off=st.integers(min_value=0, max_value=63),
    dst_off=st.integers(min_value=0, max_value=63),
    threads=st.integers(min_value=1, max_value=8),
    chunk=st.booleans(),
)
def test_copy_is_byte_exact(sizes: list[int], src_off: int, dst_off: int, threads: int, chunk: bool) -> None:
    """Random item sizes, unaligned offsets and thread counts copy every byte, touch nothing else."""
    total = sum(sizes)
    src = bytearray(_pattern(total + src_off + 64, 1))
    dst = bytearray(b"\xee" * (total + dst_off + 64))
    keep_s, s_addr, _ = _native.buffer_address(src)
    keep_d, d_addr, _ = _native.buffer_address(dst, writable=True)
    triples, off = [], 0
    for n in sizes:
        triples.append((d_addr + dst_off + off, s_addr + src_off + off, n))
        off += n
    cpus = tuple(CPUS[i % len(CPUS)] for i in range(threads))
    rep = _native.copy(_native.Items.explicit(triples), cpus, threads, "chunk" if chunk else "group")
    assert dst[dst_off:dst_off + total] == src[src_off:src_off + total]
    assert dst[:dst_off] == b"\xee" * dst_off
    assert dst[dst_off + total:] == b"\xee" * 64
    assert sum(w.bytes for w in rep.workers) == total
    del keep_s, keep_d


def test_chunk_mode_gives_every_thread_a_share_of_each_item() -> None:
    """Items < threads: each worker copies its chunk of every item, as chunk_bounds says."""
    size, n_items, t = 1 << 16, 3, 4
    src = bytearray(_pattern(size * n_items, 3))
    dst = bytearray(size * n_items)
    _, s, _ = _native.buffer_address(src)
    _, d, _ = _native.buffer_address(dst, writable=True)
    items = _native.Items.ranges(d, s, size * n_items, size)
    rep = _native.copy(items, None, t, "chunk")
    assert dst == src
    want = [e - b for b, e in chunk_bounds(size, t)]
    assert [w.bytes for w in rep.workers] == [n_items * x for x in want]
    assert [w.pieces for w in rep.workers] == [n_items] * t


def test_group_mode_deals_contiguous_groups() -> None:
    """Items >= threads: worker i copies n/t items, the first n%t one more."""
    n, t, size = 10, 4, 4096
    src = bytearray(_pattern(n * size, 5))
    dst = bytearray(n * size)
    _, s, _ = _native.buffer_address(src)
    _, d, _ = _native.buffer_address(dst, writable=True)
    # non-contiguous destination order would coalesce differently: use explicit, reversed items
    triples = [(d + i * size, s + i * size, size) for i in range(n)][::-1]
    rep = _native.copy(_native.Items.explicit(triples), None, t, "group")
    assert dst == src
    assert [w.bytes // size for w in rep.workers] == [c for _, c in group_ranges(n, t)]


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_every_worker_runs_on_a_cpu_of_its_list(threads: int) -> None:
    """Each worker records sched_getcpu() before and after copying: both are its assigned CPU."""
    cpus = tuple(CPUS[i % len(CPUS)] for i in range(threads))
    src = bytearray(_pattern(1 << 20, 2))
    dst = bytearray(1 << 20)
    _, s, _ = _native.buffer_address(src)
    _, d, _ = _native.buffer_address(dst, writable=True)
    rep = _native.copy(_native.Items.ranges(d, s, 1 << 20, 4096), cpus, threads, "group")
    assert rep.threads == threads
    for w, cpu in zip(rep.workers, cpus):
        assert w.pin_err == 0
        assert (w.cpu, w.cpu_at_start, w.cpu_at_end) == (cpu, cpu, cpu)


def test_single_thread_copy_restores_the_callers_affinity() -> None:
    """One thread copies on the caller, pinned for the call only."""
    before = os.sched_getaffinity(0)
    src, dst = bytearray(b"x" * 8192), bytearray(8192)
    _, s, _ = _native.buffer_address(src)
    _, d, _ = _native.buffer_address(dst, writable=True)
    _native.copy(_native.Items.ranges(d, s, 8192, 4096), (CPUS[-1],), 1, "group")
    assert os.sched_getaffinity(0) == before and dst == src


def test_pinning_failure_is_reported_not_ignored() -> None:
    """A CPU that does not exist: the copy completes, and the worker says it was not pinned."""
    src, dst = bytearray(b"y" * 65536), bytearray(65536)
    _, s, _ = _native.buffer_address(src)
    _, d, _ = _native.buffer_address(dst, writable=True)
    rep = _native.copy(_native.Items.ranges(d, s, 65536, 4096), (CPUS[0], 4000), 2, "group")
    assert dst == src
    assert rep.workers[0].pin_err == 0
    assert rep.workers[1].pin_err == errno.EINVAL


def test_thread_creation_failure_retries_single_threaded() -> None:
    """EAGAIN from thread creation: run_plan retries on one thread, says so, and the copy is whole."""
    topo = read_topology()
    n = topo.ids[0]
    src = bytearray(_pattern(1 << 20, 9))
    dst = bytearray(1 << 20)
    _, s, _ = _native.buffer_address(src)
    _, d, _ = _native.buffer_address(dst, writable=True)
    plan = make_plan(topo, n, n, 256, 256, 2, "push", running_node=n)
    if plan.threads < 2:
        pytest.skip("needs a node with two CPUs to plan two threads")
    _native.fault_inject_thread_create(1, errno.EAGAIN)
    try:
        rep, why = run_plan(plan, _native.Items.ranges(d, s, 1 << 20, 4096))
    finally:
        _native.fault_inject_thread_create(0)
    assert dst == src
    assert rep.threads == 1
    assert why is not None and "retried on one thread" in why


def test_other_errors_are_not_retried() -> None:
    """Bad arguments surface as NativeError with the function's name."""
    with pytest.raises(NativeError, match="originated from nm_copy"):
        _native.copy(_native.Items(0), None, 33, "group")


def test_region_is_on_its_node_page_by_page() -> None:
    """nm_map_on_node binds and faults in: every page reports the node."""
    node = read_topology().memory_nodes()[0]
    with _native.Region(8 << 20, node) as r:
        status = _native.page_nodes(r.addr, r.length)
        assert len(status) == 2048 and set(status) == {node}


def test_unfaulted_pages_report_enoent() -> None:
    """The nodes=NULL query tells missing pages apart (-ENOENT) from placed ones."""
    import mmap

    m = mmap.mmap(-1, 4 * 4096)
    keep, addr, n = _native.buffer_address(m, writable=True)
    m[0] = 1
    status = _native.page_nodes(addr, n)
    assert status[0] >= 0
    assert status[1:] == [-errno.ENOENT] * 3
    del keep
    m.close()


def test_public_copy_api() -> None:
    """numamove.copy copies a buffer, reports its plan and workers, and refuses a short destination."""
    import numamove

    src = bytearray(_pattern(3 << 20, 4))
    dst = bytearray(3 << 20)
    res = numamove.copy(dst, src, threads=2, policy="push", item_size=1 << 20)
    assert dst == src
    assert res.bytes == 3 << 20 and res.plan.items == 3
    assert sum(w.bytes for w in res.report.workers) == 3 << 20
    assert res.to_json()["plan"]["threads"] == res.plan.threads
    with pytest.raises(UsageError, match="destination holds"):
        copy(bytearray(10), src)
    with pytest.raises(UsageError, match="dst must be a writable buffer"):
        copy(b"read-only", src)
    with pytest.raises(UsageError, match="src must be a buffer"):
        copy(dst, 42)


@contextlib.contextmanager
def _copy_pair(size: int) -> Iterator[tuple[int, bytes, int, int]]:
    """(fd of a new /dev/shm file of size bytes, random source bytes, fd of a /dev/shm file holding them,
    the new file's mapping address), all released afterwards."""
    src = os.urandom(size)
    path = f"/dev/shm/numamove-test-cim-{os.getpid()}"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    sfd = os.open(path + "-src", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(sfd, src)
    os.ftruncate(fd, size)
    m = mmap.mmap(fd, size, mmap.MAP_SHARED)
    keep_d, daddr, _ = _native.buffer_address(m, writable=True)
    try:
        yield fd, src, sfd, daddr
    finally:
        del keep_d
        m.close()
        os.close(fd)
        os.close(sfd)
        os.unlink(path)
        os.unlink(path + "-src")


@pytest.mark.parametrize("uffd", [True, False])
@pytest.mark.parametrize("size", [5 * (1 << 20) + 4096 * 3, 3 * (1 << 20) + 100, 1])
def test_copy_into_map_is_byte_exact_and_fills_the_file(uffd: bool, size: int) -> None:
    """The one-pass file copy (allocate, copy, compare per piece) leaves the file equal to the source, by
    UFFDIO_COPY and by populating, whether or not the size is a whole number of pieces or of pages."""
    with _copy_pair(size) as (fd, src, sfd, daddr):
        rep = _native.copy_into_map(daddr, sfd, size, 1 << 20, None, 2, uffd=uffd)
        assert sum(w.bytes for w in rep.workers) == size and rep.threads == 2
        assert os.pread(fd, size + 1, 0) == src
        if uffd:  # where a kernel or a seccomp filter refuses userfaultfd, the copy says why
            assert rep.fill == "userfaultfd" or (rep.fill == "populate" and rep.fill_why), rep.fill_why
        else:
            assert (rep.fill, rep.fill_why) == ("populate", None)
        # the new pages are the file's: a second mapping sees the bytes (nothing was left registered)
        with mmap.mmap(fd, size, mmap.MAP_SHARED) as again:
            assert again[:] == src


@pytest.mark.parametrize("uffd", [True, False])
def test_copy_into_map_copies_only_its_extents(uffd: bool) -> None:
    """With extents, only those byte ranges are copied, in pieces that never cross an extent's end; the rest
    of the new file stays holes. Extents not page-aligned, unsorted, overlapping or past the length are
    refused (EINVAL)."""
    size = 3 * (1 << 20) + 100
    with _copy_pair(size) as (fd, src, sfd, daddr):
        ext = [(4096, 3 * 4096), (1 << 20, (2 << 20) + 4096), (3 << 20, size)]
        rep = _native.copy_into_map(daddr, sfd, size, 1 << 20, None, 2, uffd=uffd, extents=ext)
        assert sum(w.bytes for w in rep.workers) == sum(hi - lo for lo, hi in ext)
        assert sum(w.pieces for w in rep.workers) == 1 + 2 + 1
        got = os.pread(fd, size, 0)
        for lo, hi in ext:
            assert got[lo:hi] == src[lo:hi]
        assert got[:4096] == bytes(4096) and got[3 * 4096:1 << 20] == bytes((1 << 20) - 3 * 4096)
        # each extent's pages and the page its last byte is on: the holes were never allocated
        assert os.fstat(fd).st_blocks * 512 == 2 * 4096 + 257 * 4096 + 4096
        for bad in ([(100, 4096)], [(8192, 4096)], [(0, 8192), (4096, 12288)], [(0, size + 1)],
                    [(8192, 12288), (0, 4096)], [(0, 100)]):
            with pytest.raises(NativeError) as e:
                _native.copy_into_map(daddr, sfd, size, 1 << 20, None, 1, uffd=uffd, extents=bad)
            assert e.value.errno == errno.EINVAL


def test_copy_into_map_of_a_source_that_shrank_is_an_error_not_a_sigbus() -> None:
    """The source is read, never mapped: one truncated under the copy (--output takes no lease) is a short
    read, reported with where it ended; a source mapping would have killed numamove with SIGBUS."""
    size = 4 << 20
    with _copy_pair(size) as (_fd, _src, sfd, daddr):
        os.ftruncate(sfd, size - (1 << 20) - 100)
        with pytest.raises(NativeError) as exc:
            _native.copy_into_map(daddr, sfd, size, 1 << 20, None, 2)
        assert exc.value.func == "pread" and exc.value.errno == errno.ENODATA
        assert f"ended at byte {size - (1 << 20) - 100} " in str(exc.value)


@pytest.mark.parametrize("skip, threads_seen", [(1, 1), (0, 0)])
def test_copy_into_map_thread_failures(skip: int, threads_seen: int) -> None:
    """A partial start still copies everything (the started worker takes every piece); no worker at all
    is pthread_create's error, which the engine turns into a single-threaded retry."""
    from numamove.filecopy import copy_into_mapping
    from numamove.planner import Plan

    size = 3 << 20
    with _copy_pair(size) as (fd, src, sfd, daddr):
        plan = Plan(0, 0, "push", "push", 0, (-1, -1), "group", 3, 768, 2, {})
        _native.fault_inject_thread_create(1, skip=skip)
        try:
            rep, why = copy_into_mapping(plan, daddr, sfd, size)
        finally:
            _native.fault_inject_thread_create(0)
        # one worker started: it took every piece; none: the engine retried on one thread
        assert (why is None) == (threads_seen == 1), why
        assert rep.threads == 1 and sum(w.bytes for w in rep.workers) == size
        assert os.pread(fd, size, 0) == src


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
@pytest.mark.parametrize("uffd, func", [(True, "UFFDIO_COPY"), (False, "madvise")])
def test_copy_into_a_full_file_system_is_an_error_not_a_sigbus(tmp_path: Any, uffd: bool, func: str) -> None:
    """Writing past a tmpfs's size fails the allocation with an errno, both ways of allocating; the
    process is never killed by SIGBUS."""
    import subprocess

    mnt = str(tmp_path)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "none", mnt], check=True)
    try:
        size = 4 << 20
        fd = os.open(os.path.join(mnt, "x"), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        sfd = os.open("/dev/zero", os.O_RDONLY)
        os.ftruncate(fd, size)
        m = mmap.mmap(fd, size, mmap.MAP_SHARED)
        keep_d, daddr, _ = _native.buffer_address(m, writable=True)
        try:
            with pytest.raises(NativeError) as exc:
                _native.copy_into_map(daddr, sfd, size, 1 << 20, None, 2, uffd=uffd)
        finally:
            del keep_d
            m.close()
            os.close(fd)
            os.close(sfd)
        assert exc.value.func == func and exc.value.errno in (errno.EFAULT, errno.ENOSPC, errno.ENOMEM), exc.value
    finally:
        subprocess.run(["umount", mnt], check=True)


@pytest.mark.parametrize("skip", [0, 1])
def test_move_with_workers_that_could_not_start(skip: int) -> None:
    """nm_move: when only some workers start, they take every batch (no error); when none does, the
    error comes back and migrate's caller retries on one thread."""
    with _native.Region(64 * 4096, read_topology().memory_nodes()[0], base_pages=True) as r:
        node = r.node
        pages = _native.page_list([r.addr + i * 4096 for i in range(64)])
        status = _native.raw_new("int[]", 64)
        _native.fault_inject_thread_create(1, skip=skip)
        try:
            if skip:
                res = _native.move(0, pages, 64, node, _native.MPOL_MF_MOVE, (), 2, 8, status)
                assert len(res.workers) == 1 and res.workers[0].done == 64
                assert list(status) == [node] * 64
            else:
                with pytest.raises(NativeError) as exc:
                    _native.move(0, pages, 64, node, _native.MPOL_MF_MOVE, (), 2, 8, status)
                assert exc.value.errno == errno.EAGAIN
        finally:
            _native.fault_inject_thread_create(0)


def test_a_huge_region_is_unmapped_whole() -> None:
    """A huge-page region of an odd length is mapped in whole 2 MiB pages, and close() unmaps all of them."""
    node = read_topology().memory_nodes()[0]
    r = _native.Region((3 << 20) + 1, node, huge=True, fault=False)
    lo, hi = r.addr, r.addr + (4 << 20)
    r.close()
    with open("/proc/self/maps") as fh:
        for line in fh:
            a, b = (int(x, 16) for x in line.split()[0].split("-"))
            assert b <= lo or a >= hi, f"left mapped: {line.strip()}"


def test_a_recorded_signal_stops_moves_between_batches_and_handlers_come_back() -> None:
    """With the stop handler installed, SIGINT is only recorded: nm_move takes no batch after it, and
    restoring puts Python's own handler back."""
    import signal

    before = signal.getsignal(signal.SIGINT)
    with _native.Region(64 * 4096, read_topology().memory_nodes()[0], base_pages=True) as r:
        pages = _native.page_list([r.addr + i * 4096 for i in range(64)])
        status = _native.raw_new("int[]", 64)
        _native.stop_install()
        try:
            os.kill(os.getpid(), signal.SIGINT)
            assert _native.stop_signal() == signal.SIGINT
            res = _native.move(0, pages, 64, r.node, _native.MPOL_MF_MOVE, (), 1, 8, status)
            assert sum(w.calls for w in res.workers) == 0
            assert set(status) == {-errno.EINPROGRESS}
        finally:
            _native.stop_restore()
            _native.stop_clear()
    assert signal.getsignal(signal.SIGINT) is before


@pytest.fixture()
def zombie() -> Iterator[int]:
    """A child process that has exited and is not reaped yet (reaped after the test)."""
    import subprocess
    import time

    child = subprocess.Popen(["true"])
    try:
        deadline = time.monotonic() + 10
        while open(f"/proc/{child.pid}/stat").read().rpartition(")")[2].split()[0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        yield child.pid
    finally:
        child.wait()


def test_move_pages_on_a_zombie_is_reported_as_an_exited_process(zombie: int) -> None:
    """A process that has exited but is not reaped has no memory: move_pages answers EINVAL (find_mm_struct),
    which numamove reports as the process having exited, not as a failed move_pages."""
    from numamove.pagemove import _raise_call_error
    from numamove.proc import NoSuchProcessError, ProcessError

    page = _native.page_list([0x400000])
    status = _native.raw_new("int[]", 1)
    res = _native.move(zombie, page, 1, 0, _native.MPOL_MF_MOVE, (), 1, 1, status)
    assert [-w.err for w in res.workers if w.err] == [errno.EINVAL]
    with pytest.raises(NoSuchProcessError, match="exited during the migration"):
        _raise_call_error(zombie, errno.EINVAL, 0, 0)
    with pytest.raises(NoSuchProcessError):  # reaped (no such PID): gone altogether
        _raise_call_error(4194305, errno.EINVAL, 0, 0)
    with pytest.raises(ProcessError, match="Invalid argument"):  # a live process: a real failure
        _raise_call_error(os.getpid(), errno.EINVAL, 0, 0)


def test_a_query_of_a_zombie_is_reported_as_an_exited_process(zombie: int) -> None:
    """The pre-move query (move_pages with nodes=NULL, for pages whose PFN gave no node) on a process that has
    exited but is not reaped: EINVAL from the kernel, NoSuchProcessError from numamove."""
    from numamove.proc import NoSuchProcessError
    from numamove.scan import _query

    with pytest.raises(NoSuchProcessError, match="exited"):
        _query(zombie, _native.page_list([0x400000]), 1, _native.raw_new("int[]", 1))


def _mapped_here(addr: int) -> bool:
    """Whether this process's page tables map the page at addr (pagemap's present bit)."""
    with open("/proc/self/pagemap", "rb") as fh:
        fh.seek(addr // 4096 * 8)
        return bool(int.from_bytes(fh.read(8), "little") >> 63 & 1)


def test_populate_list_maps_listed_pages_and_drops_those_truncated_away() -> None:
    """nm_populate_list (how `numamove file` maps a file's resident pages): every listed page is mapped here,
    a hole between two runs stays a hole, and pages someone else truncated away after they were listed are
    dropped from the list (compacted in place): no SIGBUS, which reading each page would have been."""
    path = f"/dev/shm/numamove-test-populate-{os.getpid()}"
    with open(path, "wb") as fh:
        fh.write(os.urandom(3 * 4096))
        fh.seek(5 * 4096)  # pages 3 and 4: a hole
        fh.write(os.urandom(3 * 4096))
    fd = os.open(path, os.O_RDWR)
    m = mmap.mmap(fd, 8 * 4096, mmap.MAP_SHARED, mmap.PROT_READ)
    keep, addr, _ = _native.buffer_address(m)
    try:
        listed = [0, 1, 2, 5, 6, 7]  # two runs
        pages = _native.ffi.new("void *[]", [_native.ffi.cast("void *", addr + i * 4096) for i in listed])
        os.ftruncate(fd, 6 * 4096)  # pages 6 and 7 are gone: the second run now fails as a whole
        n = _native.lib.nm_populate_list(pages, len(listed), 4096)
        assert n == 4
        assert [(int(_native.ffi.cast("uintptr_t", pages[i])) - addr) // 4096 for i in range(n)] == [0, 1, 2, 5]
        assert [_mapped_here(addr + i * 4096) for i in (0, 1, 2, 5)] == [True] * 4
        assert os.fstat(fd).st_blocks * 512 == 4 * 4096  # the hole was not filled
        assert _native.lib.nm_populate_list(pages, 1, 1000) == -errno.EINVAL
    finally:
        del keep
        m.close()
        os.close(fd)
        os.unlink(path)


@contextlib.contextmanager
def _own_file_pages(npages: int) -> Iterator[tuple[Any, int, int]]:
    """(page list, count, mapping address) of a /dev/shm file of npages pages, mapped here, each page
    resident and mapped (as `numamove file` lists them)."""
    path = f"/dev/shm/numamove-test-own-{os.getpid()}"
    with open(path, "wb") as fh:
        fh.write(os.urandom(npages * 4096))
    fd = os.open(path, os.O_RDONLY)
    m = mmap.mmap(fd, npages * 4096, mmap.MAP_SHARED, mmap.PROT_READ)
    keep, addr, _ = _native.buffer_address(m)
    try:
        out = _native.PageOut(4096, npages)
        assert _native.resident_pages(out, addr, npages * 4096, 4096) == npages
        yield out.out.pages, npages, addr
    finally:
        del keep
        m.close()
        os.close(fd)
        os.unlink(path)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_move_own_moves_every_listed_page_on_worker_processes(workers: int) -> None:
    """nm_move_own: worker processes take every batch and fill status (here to the only node, where the
    pages are); with several, numamove's own mapping of the pages is dropped first (it is no mapper
    during the migration); with one, the calling thread maps them again and moves them."""
    node = read_topology().memory_nodes()[0]
    with _own_file_pages(1000) as (pages, n, addr):
        status, nodes = _native.raw_new("int[]", n), _native.raw_new("int[]", n)
        _native.fill_int(nodes, n, node)
        res = _native.move_own(pages, n, node, _native.MPOL_MF_MOVE, (), workers, 64, status, nodes, 4096)
        assert list(status) == [node] * n
        assert len(res.workers) == workers and sum(w.done for w in res.workers) == n
        assert all(w.err == 0 for w in res.workers)
        assert _mapped_here(addr) == (workers == 1) and _mapped_here(addr + (n - 1) * 4096) == (workers == 1)


@pytest.mark.parametrize("skip", [0, 1])
def test_move_own_with_workers_that_could_not_fork(skip: int) -> None:
    """A worker process that cannot be forked: those that were take every batch; none is EAGAIN, which
    the move retries on one thread (pagemove._call)."""
    node = read_topology().memory_nodes()[0]
    with _own_file_pages(256) as (pages, n, _addr):
        status, nodes = _native.raw_new("int[]", n), _native.raw_new("int[]", n)
        _native.fill_int(nodes, n, node)
        _native.fault_inject_thread_create(1, skip=skip)
        try:
            if skip:
                res = _native.move_own(pages, n, node, _native.MPOL_MF_MOVE, (), 2, 16, status, nodes, 4096)
                assert len(res.workers) == 1 and res.workers[0].done == n and list(status) == [node] * n
            else:
                with pytest.raises(NativeError) as exc:
                    _native.move_own(pages, n, node, _native.MPOL_MF_MOVE, (), 2, 16, status, nodes, 4096)
                assert exc.value.errno == errno.EAGAIN
        finally:
            _native.fault_inject_thread_create(0)


def test_move_own_workers_stop_on_a_recorded_stop_signal() -> None:
    """A stop signal numamove records (SIGTERM here) reaches the worker processes through numamove: they
    stop between batches, the entries nobody reached keep -EINPROGRESS, the rest say where the page is."""
    import signal

    node = read_topology().memory_nodes()[0]
    with _own_file_pages(4096) as (pages, n, _addr):
        status, nodes = _native.raw_new("int[]", n), _native.raw_new("int[]", n)
        _native.fill_int(nodes, n, node)
        _native.stop_install()
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            assert _native.stop_signal() == signal.SIGTERM
            res = _native.move_own(pages, n, node, _native.MPOL_MF_MOVE, (), 2, 1, status, nodes, 4096)
        finally:
            _native.stop_clear()
            _native.stop_restore()
        values = set(status)
        assert -errno.EINPROGRESS in values and values <= {node, -errno.EINPROGRESS}, values
        assert sum(w.done for w in res.workers) == sum(1 for v in status if v == node) < n


def test_move_own_reports_a_worker_process_that_was_killed() -> None:
    """A worker process killed mid-move (SIGKILL, the OOM killer): numamove is not, the other worker takes
    the remaining batches, and the killed one's report says -ECHILD (pagemove turns that into one line);
    every status is a node or -EINPROGRESS (the killed worker's unfinished batch)."""
    import threading

    node = read_topology().memory_nodes()[0]
    me = os.getpid()
    with _own_file_pages(16384) as (pages, n, _addr):
        status, nodes = _native.raw_new("int[]", n), _native.raw_new("int[]", n)
        _native.fill_int(nodes, n, node)
        killed: list[int] = []
        t = threading.Thread(target=_kill_a_child_of, args=(me, killed))
        t.start()
        res = _native.move_own(pages, n, node, _native.MPOL_MF_MOVE, (), 2, 1, status, nodes, 4096)
        t.join()
        assert killed, "no worker process was seen"
        errs = [w.err for w in res.workers]
        assert errs.count(-errno.ECHILD) == 1 and errs.count(0) == 1, errs
        assert set(status) <= {node, -errno.EINPROGRESS}
        assert sum(1 for v in status if v == node) >= n - 1  # the killed worker's one batch at most


def _kill_a_child_of(me: int, killed: list[int]) -> None:
    """SIGKILL the first child process of me seen within 30 s (a migration worker); its PID into killed."""
    import signal

    deadline = time.monotonic() + 30
    while not killed and time.monotonic() < deadline:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == me:
                os.kill(int(entry), signal.SIGKILL)
                killed.append(int(entry))
                return


def test_a_killed_worker_process_is_a_note_and_its_pages_move_on_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """pagemove's move on worker processes (`file` in place) with one worker killed holding a batch it had not
    begun (the test hook): no error (it was "a migration worker process was killed", exit 1, and nothing
    said of the pages the other had moved); a note says so, and the killed worker's batch is retried on the
    calling thread, which maps those pages again first (the workers' calls dropped numamove's own mapping:
    without that, every retried page said "not present"). Every page ends with its node as status."""
    from numamove import pagemove
    from numamove.pagemove import OWN_MAPPED, MoveOptions, TargetReport, _run_batches
    from numamove.planner import Plan
    from numamove.proc import Target

    calls: list[int] = []
    real = pagemove._call

    def spy(*args: Any, **kw: Any) -> Any:
        calls.append(args[4].threads)
        return real(*args, **kw)

    monkeypatch.setattr(pagemove, "_call", spy)
    node = read_topology().memory_nodes()[0]
    with _own_file_pages(4096) as (pages, n, _addr):
        plan = Plan(node + 1, node, "push", "push", node, (0, 0), "group", n, n, 2, {})  # a made-up source
        rep = TargetReport(Target(os.getpid(), "numamove", "numamove", (os.getpid(),)), node)
        status = _native.raw_new("int[]", n)
        _native.fault_inject_worker_kill(True)
        try:
            _run_batches(0, pages, n, 4096, plan, _native.MPOL_MF_MOVE, MoveOptions(to=node, batch=512), rep, None,
                         status, OWN_MAPPED)
        finally:
            _native.fault_inject_worker_kill(False)
        assert any("worker process was killed" in note for note in rep.notes), rep.notes
        assert calls[0] == 2 and 1 in calls[1:], calls  # the workers' round, then a retry on one thread
        assert set(status) == {node}, sorted(set(status))


def test_move_own_on_one_worker_maps_the_pages_again_only_when_asked() -> None:
    """After a call with several workers dropped numamove's own mapping of the pages, a one-worker call
    (the retry of busy pages, the fallback when no worker forks) maps them again (remap) and reaches
    every page; without remap those pages are not mapped here and move_pages cannot reach them, which is
    why remap follows the plan. Pages still mapped need no remap (it would cost 20-65 ms a GiB)."""
    node = read_topology().memory_nodes()[0]
    with _own_file_pages(512) as (pages, n, addr):
        status, nodes = _native.raw_new("int[]", n), _native.raw_new("int[]", n)
        _native.fill_int(nodes, n, node)
        _native.move_own(pages, n, node, _native.MPOL_MF_MOVE, (), 1, 64, status, nodes, 4096, remap=False)
        assert list(status) == [node] * n  # still mapped: reached without remapping
        _native.move_own(pages, n, node, _native.MPOL_MF_MOVE, (), 2, 64, status, nodes, 4096)
        assert not _mapped_here(addr)
        _native.move_own(pages, n, node, _native.MPOL_MF_MOVE, (), 1, 64, status, nodes, 4096, remap=False)
        assert node not in set(status)  # dropped and not mapped again: unreachable
        _native.move_own(pages, n, node, _native.MPOL_MF_MOVE, (), 1, 64, status, nodes, 4096, remap=True)
        assert list(status) == [node] * n and _mapped_here(addr)


def test_move_own_workers_die_with_numamove() -> None:
    """numamove killed (SIGKILL) during a move on worker processes: the workers die with it
    (PR_SET_PDEATHSIG), rather than moving pages for a report nobody will read."""
    import signal
    import subprocess
    import sys

    script = (
        "import os, mmap, sys\n"
        "from numamove import _native\n"
        "path = sys.argv[1]\n"
        "n = 131072\n"
        "with open(path, 'wb') as fh: fh.write(b'x' * (n * 4096))\n"
        "fd = os.open(path, os.O_RDONLY)\n"
        "m = mmap.mmap(fd, n * 4096, mmap.MAP_SHARED, mmap.PROT_READ)\n"
        "keep, addr, _ = _native.buffer_address(m)\n"
        "out = _native.PageOut(4096, n)\n"
        "_native.resident_pages(out, addr, n * 4096, 4096)\n"
        "st, nodes = _native.raw_new('int[]', n), _native.raw_new('int[]', n)\n"
        "_native.fill_int(nodes, n, int(sys.argv[2]))\n"
        "print('go', flush=True)\n"
        "for _ in range(1000):\n"
        "    _native.move_own(out.out.pages, n, int(sys.argv[2]), _native.MPOL_MF_MOVE, (), 2, 1, st, nodes, 4096)\n"
    )
    path = f"/dev/shm/numamove-test-pdeath-{os.getpid()}"
    node = read_topology().memory_nodes()[0]
    p = subprocess.Popen([sys.executable, "-c", script, path, str(node)], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "go"
        workers: set[int] = set()
        deadline = time.monotonic() + 30
        while not workers and time.monotonic() < deadline:
            for entry in os.listdir("/proc"):
                try:
                    with open(f"/proc/{entry}/stat") as fh:
                        if int(fh.read().rsplit(")", 1)[1].split()[1]) == p.pid:
                            workers.add(int(entry))
                except (OSError, ValueError, IndexError):
                    continue
        assert workers, "no worker process was seen"
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)

        def alive(pid: int) -> bool:
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
            except OSError:
                return False

        # a worker's share of one call (65536 single-page move_pages calls) takes about a second here:
        # without PR_SET_PDEATHSIG they would still be moving pages when this looks
        deadline = time.monotonic() + 0.5
        while any(alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(alive(w) for w in workers), workers
    finally:
        p.kill()
        p.wait()
        if os.path.exists(path):
            os.unlink(path)


def test_the_c_core_builds_without_a_warning_at_O2(tmp_path: Any) -> None:
    """The C core and nmbench build with the Makefile's -O2 -Wall -Wextra -Werror (CI runs `make test`, not
    `make lint`): the warnings that need the optimizer, such as maybe-uninitialized, fail here. nmbench,
    the engine without Python, then runs and verifies a copy on one and two threads."""
    import re
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    flags = re.search(r"^CFLAGS_CHECK := (.*)$", (root / "Makefile").read_text(), re.M)
    assert flags is not None
    exe = tmp_path / "nmbench"
    cc = subprocess.run(["gcc", *flags.group(1).split(), "-Icsrc", "-o", str(exe), "csrc/nmbench.c",
                         "csrc/numamove.c"], cwd=root, capture_output=True, text=True)
    assert cc.returncode == 0, cc.stderr
    run = subprocess.run([str(exe), "16", "1", "2"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "engine  2 threads:" in run.stdout
