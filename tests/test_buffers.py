"""numamove.migrate() and numamove.where() on in-process buffers, on the host and in the guests."""

from __future__ import annotations

import mmap
import tempfile
from typing import Any

import pytest

import numamove
from numamove.buffers import UnsafeBufferError

np = pytest.importorskip("numpy")


def _array(mib: int) -> Any:
    a = np.arange(mib << 17, dtype=np.uint64)  # mib MiB, allocated by malloc with mmap
    a *= 2654435761
    return a


def test_migrate_keeps_address_and_contents_on_this_machine() -> None:
    """Node 0 to node 0 still copies and remaps: same address, same bytes, pages on the node."""
    node = numamove.read_topology().memory_nodes()[0]
    a = _array(16)
    before = a.copy()
    addr = a.ctypes.data
    res = numamove.migrate(a, node, threads=2, verify=True)
    assert a.ctypes.data == addr == res.address
    assert np.array_equal(a, before)
    assert res.length >= a.nbytes and res.start <= addr
    assert set(numamove.where(a)) == {node}
    a += 1  # still writable, still the same memory
    assert np.array_equal(a, before + 1)


def test_migrate_an_anonymous_private_mmap() -> None:
    """A private anonymous mmap moves and stays usable."""
    m = mmap.mmap(-1, 1 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    m[:] = bytes(range(256)) * 4096
    numamove.migrate(m, numamove.read_topology().memory_nodes()[0], verify=True)
    assert m[:] == bytes(range(256)) * 4096
    m.close()


def test_refusals() -> None:
    """Read-only, shared, file-backed and tiny buffers are refused with UnsafeBufferError."""
    node = numamove.read_topology().memory_nodes()[0]
    with pytest.raises(UnsafeBufferError, match="writable"):
        numamove.migrate(b"x" * (1 << 20), node)
    with pytest.raises(UnsafeBufferError, match="under 64 KiB"):
        numamove.migrate(bytearray(100), node)
    shared = mmap.mmap(-1, 1 << 20)  # Python's default for -1: MAP_SHARED
    with pytest.raises(UnsafeBufferError, match="lives in /dev/zero"):
        numamove.migrate(shared, node)
    with tempfile.TemporaryFile() as f:
        f.truncate(1 << 20)
        fm = mmap.mmap(f.fileno(), 1 << 20, flags=mmap.MAP_PRIVATE)
        with pytest.raises(UnsafeBufferError, match="lives in"):
            numamove.migrate(fm, node)
        fm.close()
    ro = np.zeros(1 << 17)
    ro.flags.writeable = False
    with pytest.raises(UnsafeBufferError, match="writable"):
        numamove.migrate(ro, node)
    with pytest.raises(numamove.InvalidNodeError):
        numamove.migrate(_array(1), 99)


@pytest.mark.numa(nodes=2)
def test_numpy_array_moves_to_node_1() -> None:
    """A NumPy array on node 0 moves to node 1: same address, same contents, every page on node 1."""
    a = _array(8)
    numamove.migrate(a, 0)
    assert set(numamove.where(a)) == {0}
    before = a.copy()
    addr = a.ctypes.data
    res = numamove.migrate(a, 1, verify=True)
    assert a.ctypes.data == addr
    assert np.array_equal(a, before)
    assert set(numamove.where(a)) == {1}
    assert res.plan.dst == 1


@pytest.mark.numa(nodes=5, cpuless=True)
def test_numpy_array_to_and_from_the_cpuless_node(guest_truth: dict[str, Any]) -> None:
    """To and from the CPU-less node: the copy falls back to the other node's CPUs and lands right."""
    cxl = next(n["node"] for n in guest_truth["nodes"] if not n["has_cpu"])
    a = _array(8)
    before = a.copy()
    res = numamove.migrate(a, cxl, policy="pull", verify=True)
    assert set(numamove.where(a)) == {cxl} and np.array_equal(a, before)
    assert res.plan.cpu_node != cxl
    res = numamove.migrate(a, 2, policy="push", verify=True)
    assert set(numamove.where(a)) == {2} and np.array_equal(a, before)
    assert res.plan.cpu_node == 2


def test_heap_buffer_with_shared_edge_pages() -> None:
    """A malloc'd bytearray (heap or mmap chunk): interior pages remapped, shared edge pages moved in place."""
    node = numamove.read_topology().memory_nodes()[0]
    held = []
    while True:  # 256 KiB, its first page shared with a malloc header: almost always, not when the heap's
        b = bytearray(range(256)) * 1024  # free space hands out a page-aligned one (then no edge pages)
        addr = numamove.buffers._native.buffer_address(b)[1]
        if addr % mmap.PAGESIZE:
            break
        held.append(b)
    neighbour = bytearray(b"n" * 100)
    res = numamove.migrate(b, node, verify=True)
    assert numamove.buffers._native.buffer_address(b)[1] == addr
    assert b == bytearray(range(256)) * 1024 and neighbour == b"n" * 100
    assert set(numamove.where(b)) == {node}
    assert res.edge_pages and all(st == node for st in res.edge_pages.values()), (hex(addr), res.edge_pages)


def test_writes_beside_the_buffer_during_a_migration_all_survive() -> None:
    """Bytes that share the buffer's first and last pages, written by another thread all through migrate(),
    keep every write: those edge pages move in place (move_pages), never through a copy remapped over them."""
    import threading

    node = numamove.read_topology().memory_nodes()[0]
    m = mmap.mmap(-1, 66 * 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    m[:] = bytes(range(256)) * (66 * 16)
    whole = memoryview(m)
    end = 100 + 64 * 4096
    buf, head, tail = whole[100:end], whole[0:8], whole[end:end + 8]  # buf begins and ends mid-page
    stop = threading.Event()
    last = [0]

    def writer() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            head[:] = tail[:] = i.to_bytes(8, "little")
            last[0] = i

    t = threading.Thread(target=writer)
    t.start()
    try:
        res = numamove.migrate(buf, node, verify=True)
    finally:
        stop.set()
        t.join()
    assert last[0] > 0 and res.edge_pages
    assert int.from_bytes(head, "little") == last[0] == int.from_bytes(tail, "little")
    assert bytes(buf) == (bytes(range(256)) * (66 * 16))[100:end]
    for v in (buf, head, tail, whole):
        v.release()
    m.close()


@pytest.mark.parametrize("flag, advice", [("mlocked", None), ("excluded from fork", "MADV_DONTFORK"),
                                          ("wiped on fork", "MADV_WIPEONFORK")])
def test_memory_whose_flags_the_remap_would_drop_is_refused(flag: str, advice: str | None) -> None:
    """mlocked, DONTFORK and WIPEONFORK memory: one clear UnsafeBufferError, the buffer untouched."""
    import ctypes

    m = mmap.mmap(-1, 64 * 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    m[:] = b"x" * len(m)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
    libc = ctypes.CDLL(None, use_errno=True)
    if advice is None:
        assert libc.mlock(ctypes.c_void_p(addr), ctypes.c_size_t(len(m))) == 0, ctypes.get_errno()
    else:
        m.madvise(getattr(mmap, advice, {"MADV_DONTFORK": 10, "MADV_WIPEONFORK": 18}[advice]))
    node = numamove.read_topology().memory_nodes()[0]
    with pytest.raises(UnsafeBufferError, match=flag):
        numamove.migrate(m, node)
    assert numamove.buffers._native.buffer_address(m)[1] == addr and m[:] == b"x" * len(m)
    if advice is None:
        libc.munlock(ctypes.c_void_p(addr), ctypes.c_size_t(len(m)))
    m.close()


def test_public_functions_survive_importing_every_submodule() -> None:
    """numamove.migrate() and its siblings stay the API's functions after every submodule is imported (a
    submodule named like one replaced it: numamove.migrate became a module once the CLI had run)."""
    import importlib
    import pkgutil

    for mod in pkgutil.iter_modules(numamove.__path__):
        if mod.name not in ("__main__", "_native_lib"):
            importlib.import_module(f"numamove.{mod.name}")
    for name in ("copy", "migrate", "plan", "where", "read_topology"):
        assert callable(getattr(numamove, name)) and getattr(numamove, name).__module__ == "numamove", name
