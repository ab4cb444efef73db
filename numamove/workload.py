"""A sample workload for the demo (`make run`) and the migration tests.

It holds anonymous memory (part of it in transparent huge pages) and optionally a
shared-memory file, fills it with a known pattern, and keeps reading it on a
background thread while it waits for commands on stdin, one per line:

    check   -> "ok <crc> <reads>" if every byte is intact, else "bad <crc>"
    pause   -> "pause <ms>": the longest gap between two consecutive reads of its memory since
               the last `pause` (or the start), in milliseconds; the stall a migration caused
               shows here (an idle pass sleeps 10 ms, so ~10 ms is the floor)
    quit    -> exits

Its first line on stdout is "ready <pid> <anon_start> <anon_len> <huge_start> <huge_len>"
(addresses in hex).  Run it as ``python -m numamove.workload --size 64M --huge 32M``.
"""

from __future__ import annotations

import argparse
import ctypes
import mmap
import os
import stat
import sys
import threading
import time
import zlib

HUGE = 2 << 20

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn


def _address(m: mmap.mmap) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(m))


def _fill(m: mmap.mmap, seed: int) -> None:
    block = bytes((i * 131 + seed + (i >> 8)) & 0xFF for i in range(65537))
    for off in range(0, len(m), len(block)):
        n = min(len(block), len(m) - off)
        m[off:off + n] = block[:n]


def _open_shm(path: str) -> int:
    """--shm opened once: created if new, never through a link in its last component (it usually
    lives in /dev/shm, which everyone can write), never blocking on a FIFO; a regular file only."""
    from .errors import UsageError
    from .files import open_file

    fd = open_file(path, "--shm maps the file it opens", flags=os.O_RDWR | os.O_CREAT)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UsageError(f"--shm {path} is not a regular file")
    return fd


MPOL_BIND = 2
MPOL_MF_MOVE = 1 << 1


def _private_writable_ranges() -> list[tuple[int, int]]:
    """(start, end) of this process's private writable mappings: its heap, stacks, anonymous maps and
    the copied-on-write data of its libraries."""
    from .maps import SPECIAL

    out = []
    with open("/proc/self/maps") as fh:
        for line in fh:
            f = line.split(None, 5)
            path = f[5].strip() if len(f) > 5 else ""
            if f[1][1] == "w" and f[1][3] == "p" and path not in SPECIAL:
                lo, hi = f[0].split("-")
                out.append((int(lo, 16), int(hi, 16)))
    return out


def _join_node(node: int) -> None:
    """Move what the interpreter allocated before the bind (its heap arenas, on the node of whatever CPU
    it started on) to node: every private page of the workload is then there.

    mbind(MPOL_MF_MOVE) on the private writable mappings moves the pages only this process maps.
    Not migrate_pages(2) (libnuma's numa_migrate_pages): as root that is MPOL_MF_MOVE_ALL, which also
    moves every shared library page the process maps, pages every other process maps too. In the
    guests those pages are 9p's page cache and sat on the other node after a test that moved shared
    pages; each new workload then spent 20-45 s in the kernel moving them (under TCG: moving executed
    library text is what QEMU's self-modifying-code check makes slow, see norandmaps in tests/vm/harness.py).
    """
    libnuma = ctypes.CDLL("libnuma.so.1")
    libnuma.mbind.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_void_p, ctypes.c_ulong,
                              ctypes.c_uint]
    libnuma.mbind.restype = ctypes.c_long
    mask = (ctypes.c_ulong * 16)()  # 1024 nodes
    mask[node // 64] = 1 << (node % 64)
    for lo, hi in _private_writable_ranges():
        # EIO (a page that would not move), EFAULT (a mapping gone since maps was read): the placement
        # checks of whoever uses the workload see what stayed
        libnuma.mbind(lo, hi - lo, MPOL_BIND, ctypes.addressof(mask), len(mask) * 64 + 1, MPOL_MF_MOVE)


class Workload:
    def __init__(self, size: int, huge: int, shm: str | None, node: int | None,
                 shm_size: int = 4 << 20) -> None:
        if node is not None:
            import numa  # type: ignore[import-untyped]  # py-libnuma: bind before touching memory

            numa.memory.set_membind_nodes(node)
            _join_node(node)
        private = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS  # Python's default for -1 is MAP_SHARED
        self.anon = mmap.mmap(-1, size, flags=private) if size else None
        # THP needs 2 MiB aligned ranges: over-allocate and advise the aligned interior
        self.huge_raw = mmap.mmap(-1, huge + HUGE, flags=private) if huge else None
        self.huge_off = 0
        if self.huge_raw is not None:
            base = _address(self.huge_raw)
            self.huge_off = (-base) % HUGE
            self.huge_raw.madvise(mmap.MADV_HUGEPAGE)
        self.huge_len = huge
        self.shm = None
        fresh = False
        if shm:
            fd = _open_shm(shm)
            fresh = os.fstat(fd).st_size == 0
            if fresh:
                os.ftruncate(fd, shm_size)
            self.shm = mmap.mmap(fd, shm_size, mmap.MAP_SHARED)
            os.close(fd)
        for i, r in enumerate(r for r in (self.anon, self.huge_raw) if r is not None):
            _fill(r, i + 1)
        if self.shm is not None and fresh:
            _fill(self.shm, 99)  # one pattern for every process that maps the file
        self.regions = [r for r in (self.anon, self.huge_raw, self.shm) if r is not None]
        self.crc = self.checksum()
        self.reads = 0
        self.max_gap = 0.0
        self.stop = False
        self.reader = threading.Thread(target=self._read_forever, daemon=True)
        self.reader.start()

    def checksum(self) -> int:
        crc = 0
        for r in self.regions:
            crc = zlib.crc32(r, crc)
        return crc

    def _read_forever(self) -> None:
        # keep touching the memory so the test sees the workload run during the migration,
        # with a pause per pass so that it does not take a whole CPU from the migration
        clock = time.perf_counter
        last = clock()
        while not self.stop:
            for r in self.regions:
                for off in range(0, len(r), 1 << 20):
                    _ = r[off]
                    now = clock()
                    if now - last > self.max_gap:  # `pause` resets max_gap to 0
                        self.max_gap = now - last
                    last = now
            self.reads += 1
            time.sleep(0.01)

    def ready_line(self) -> str:
        a = _address(self.anon) if self.anon is not None else 0
        h = _address(self.huge_raw) + self.huge_off if self.huge_raw is not None else 0
        return f"ready {os.getpid()} {a:x} {len(self.anon) if self.anon else 0:x} {h:x} {self.huge_len:x}"


def _check_node(node: int) -> None:
    """A node with memory, from one sysfs file: not the whole topology, whose reading would fill heap
    pages before the bind puts them on the node (tests move the workload's anonymous memory and expect
    it all on one node)."""
    from .errors import InvalidNodeError
    from .nodelist import format_list, parse_list

    with open("/sys/devices/system/node/has_memory") as fh:
        nodes = parse_list(fh.read().strip())
    if node not in nodes:
        raise InvalidNodeError(f"--node: node {node} does not exist or has no memory "
                               f"(nodes with memory: {format_list(nodes)})")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, as numamove's own errors
        self.exit(2, f"numamove.workload: error: {message}\n")


def main(argv: list[str] | None = None) -> int:
    from .errors import NumamoveError
    from .nodelist import parse_size

    ap = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="64M", help="anonymous memory in 4 KiB pages (default 64M)")
    ap.add_argument("--huge", default="0", help="anonymous memory advised for THP (default 0)")
    ap.add_argument("--shm", help="also map this file MAP_SHARED (e.g. /dev/shm/x); created if new, "
                                  "never through a symbolic link")
    ap.add_argument("--shm-size", default="4M", help="bytes of --shm to map (default 4M)")
    ap.add_argument("--node", type=int, help="allocate on this node (py-libnuma membind)")
    ns = ap.parse_args(argv)
    try:
        size = parse_size(ns.size) if ns.size != "0" else 0
        huge = parse_size(ns.huge) if ns.huge != "0" else 0
        shm_size = parse_size(ns.shm_size)
        if ns.node is not None:  # py-libnuma segfaults on a node out of range: validate first
            _check_node(ns.node)
        w = Workload(size, huge, ns.shm, ns.node, shm_size)
    except NumamoveError as exc:
        sys.stderr.write(f"numamove.workload: error: {exc}\n")
        return exc.exit_code
    print(w.ready_line(), flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "check":
            crc = w.checksum()
            print(f"{'ok' if crc == w.crc else 'bad'} {crc:x} {w.reads}", flush=True)
        elif cmd == "pause":
            gap, w.max_gap = w.max_gap, 0.0  # reset before the reply: the caller's next call starts afresh
            print(f"pause {gap * 1e3:.2f}", flush=True)
        elif cmd == "quit":
            break
    w.stop = True
    return 0


if __name__ == "__main__":
    sys.exit(main())
