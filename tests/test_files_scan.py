"""`file` in place: the resident pages found by scanner processes (filescan.scan_split), on the host.

What the scanners find must be exactly what one process finds; numamove itself must end up mapping none of
the pages; a scanner that fails, dies or cannot be started must be an error line or a fallback, never a
traceback, a hang or a process left behind. The move itself through the scanners is tested in the
two-node guest (test_numa_proc.py)."""

from __future__ import annotations

import errno
import json
import mmap
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from test_cli import run
from workload_helper import died_starting

from numamove import _native, files, filescan
from numamove.scan import PageSet, collect
from numamove.topology import read_topology

MIB = 1 << 20


@pytest.fixture
def sparse() -> Iterator[str]:
    """A 40 MiB /dev/shm file: data at 0-3 MiB, one page at 10 MiB, 12.5-29 MiB, and the last 5 bytes."""
    path = f"/dev/shm/numamove-scan-{os.getpid()}"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, 40 * MIB)
        for off, n in ((0, 3 * MIB), (10 * MIB, 4096), (12 * MIB + MIB // 2, 16 * MIB + MIB // 2), (40 * MIB - 5, 5)):
            os.pwrite(fd, os.urandom(n), off)
    finally:
        os.close(fd)
    yield path
    os.unlink(path)


def _no_children() -> bool:
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def test_scanners_are_counted_from_the_data_the_cpus_and_threads() -> None:
    """One scanner below SCAN_SPLIT_MIN of data; above, one a SCAN_SHARE, at most the CPUs, --threads and
    SCAN_MAX."""
    assert files._scanners(files.SCAN_SPLIT_MIN - 1, None, 64) == 1
    assert files._scanners(files.SCAN_SPLIT_MIN, None, 64) == files.SCAN_SPLIT_MIN // files.SCAN_SHARE
    assert files._scanners(1 << 40, None, 64) == files.SCAN_MAX
    assert files._scanners(1 << 40, None, 3) == 3
    assert files._scanners(1 << 40, 2, 64) == 2
    assert files._scanners(1 << 40, 1, 64) == 1
    assert files._scanners(1 << 40, None, 1) == 1


def _arrays(ps: PageSet) -> dict[int, tuple[list[int], list[int]]]:
    return {size: ([int(_native.ffi.cast("uintptr_t", c.pages[i])) for i in range(c.count)],
                   [c.nodes[i] for i in range(c.count)]) for size, c in ps.classes.items() if c.count}


def test_shares_cut_the_extents_into_equal_runs_in_file_order() -> None:
    """filescan.shares: n runs of about equal bytes, cut at page boundaries, covering the extents exactly, in order."""
    ext = [(0, 10 * 4096), (20 * 4096, 21 * 4096), (30 * 4096, 60 * 4096)]
    for n in (1, 2, 3, 5, 41):
        shares = filescan.shares(ext, n, 4096)
        assert 1 <= len(shares) <= n and all(shares)
        flat = [r for s in shares for r in s]
        assert all(lo % 4096 == 0 and hi > lo for lo, hi in flat)
        merged: list[tuple[int, int]] = []
        for lo, hi in flat:  # in order, no overlap, nothing lost
            if merged and merged[-1][1] == lo:
                merged[-1] = (merged[-1][0], hi)
            else:
                assert not merged or merged[-1][1] < lo
                merged.append((lo, hi))
        assert merged == ext
        sizes = [sum(hi - lo for lo, hi in s) for s in shares]
        assert max(sizes) - min(sizes) <= -(-41 * 4096 // n // 4096) * 4096
    assert [sum(hi - lo for lo, hi in s) for s in filescan.shares(ext, 2, 4096)] == [21 * 4096, 20 * 4096]


@pytest.mark.parametrize("n", [2, 3, 7])
def test_scanners_find_what_one_process_finds_and_leave_nothing_mapped(sparse: str, n: int) -> None:
    """scan_split over n processes gives the page set _scan_here gives (every address, node, segment and
    count, in the same order), numamove ends up mapping none of those pages, and every scanner is reaped."""
    fd = os.open(sparse, os.O_RDONLY)
    mm = mmap.mmap(fd, 40 * MIB, mmap.MAP_SHARED, mmap.PROT_READ)
    keep, addr, _ = _native.buffer_address(mm)
    try:
        extents = files.data_extents(fd, 40 * MIB, gap=0, exact=True)
        assert len(extents) == 4
        helpers: list[int] = []
        split = filescan.scan_split(addr, extents, 4096, n, helpers)
        assert len(helpers) == n
        filescan.reap(helpers)
        assert helpers == [] and _no_children()
        assert collect(os.getpid(), [(addr, addr + 40 * MIB)]).count == 0  # numamove maps none of them
        here = files._scan_here(addr, extents, 4096)
        assert here.count == (3 * MIB + 4096 + 16 * MIB + MIB // 2 + 4096) // 4096
        assert _arrays(split) == _arrays(here)
        assert (split.segments, split.queried, split.skipped, split.source) == \
            (here.segments, here.queried, here.skipped, here.source)
    finally:
        del keep
        mm.close()
        os.close(fd)


@pytest.fixture
def split_small(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scanner processes for files of a few MiB (they start at 128 MiB of data), on a machine of 1 CPU too."""
    monkeypatch.setattr(files, "SCAN_SPLIT_MIN", 0)
    monkeypatch.setattr(files, "SCAN_SHARE", MIB)
    real = files._scanners
    monkeypatch.setattr(files, "_scanners", lambda data, limit, cpus: real(data, limit, 4))


def _file_json(path: str, *extra: str) -> tuple[int, dict[str, Any], str]:
    node = read_topology().memory_nodes()[0]
    code, out, err = run("file", path, "--to", str(node), "--json", "-q", *extra)
    return code, (json.loads(out)["files"][0] if code in (0, 3) else {}), err


def test_file_in_place_through_scanners_reports_every_page_and_keeps_holes(sparse: str, split_small: None,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole command with scanners: every data page counted (moved or already there), holes stay holes,
    no scanner left; with --threads 1 no scanner is forked at all."""
    forks: list[int] = []
    real_fork = os.fork

    def counting_fork() -> int:
        pid = real_fork()
        if pid:
            forks.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", counting_fork)
    blocks = os.stat(sparse).st_blocks
    code, f, err = _file_json(sparse)
    assert code == 0, err
    assert f["already_there"]["bytes"] + f["moved"]["bytes"] == blocks * 512 and f["failed"] == {}
    assert len(forks) == 4 and _no_children()
    assert os.stat(sparse).st_blocks == blocks
    forks.clear()
    code, f, err = _file_json(sparse, "--threads", "1")
    assert code == 0 and forks == [] and f["already_there"]["bytes"] + f["moved"]["bytes"] == blocks * 512


def test_scanners_that_cannot_start_fall_back_to_scanning_here(sparse: str, split_small: None,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """fork refused (EAGAIN: a process limit) after one scanner started: that one is killed and reaped, the
    pages are found in numamove's own process, and the run is as it would be."""
    real_fork, calls = os.fork, []

    def failing_fork() -> int:
        calls.append(1)
        if len(calls) > 1:
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
        return real_fork()

    monkeypatch.setattr(os, "fork", failing_fork)
    code, f, err = _file_json(sparse)
    assert code == 0, err
    assert f["already_there"]["bytes"] + f["moved"]["bytes"] == os.stat(sparse).st_blocks * 512
    assert len(calls) == 2 and _no_children()


@pytest.mark.parametrize("how", ["raises", "dies"])
def test_a_scanner_that_fails_is_one_line(sparse: str, split_small: None, monkeypatch: pytest.MonkeyPatch,
                                          how: str) -> None:
    """A scanner that raises (its message passed on) or is killed before its report: one line, exit 1, no
    traceback, no process left."""
    from numamove.errors import NumamoveError

    def broken(addr: int, extents: list[tuple[int, int]], page: int) -> PageSet:
        if how == "dies":
            os.kill(os.getpid(), signal.SIGKILL)
        raise NumamoveError("pagemap unreadable")

    monkeypatch.setattr(files, "_scan_here", broken)
    code, _f, err = _file_json(sparse)
    want = "pagemap unreadable" if how == "raises" else "it ended before its report"
    assert code == 1 and err.count("\n") == 1 and f"a scanner of the file's pages failed: {want}" in err, err
    assert _no_children()


def _scanners_of(marker: str) -> list[int]:
    """PIDs of processes whose command line holds marker (the file's unique path)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    if marker.encode() in fh.read():
                        found.append(int(entry))
            except OSError:
                continue
    return found


def test_signals_at_random_points_leave_no_scanner_behind() -> None:
    """`numamove file` on a 256 MiB file (scanner processes by default) stopped by SIGKILL, SIGINT or SIGTERM
    at random moments: it ends as a stop says (or finished first), and no scanner outlives it (they die
    with it: PR_SET_PDEATHSIG)."""
    path = f"/dev/shm/numamove-scan-kill-{os.getpid()}"
    with open(path, "wb") as fh:
        for _ in range(256):
            fh.write(os.urandom(MIB))
    node = read_topology().memory_nodes()[0]
    rng = random.Random(2026)
    try:
        for _ in range(8):
            sig = rng.choice([signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
            p = subprocess.Popen([sys.executable, "-m", "numamove", "file", path, "--to", str(node), "-q"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            time.sleep(rng.uniform(0.05, 0.6))
            p.send_signal(sig)
            _, err = p.communicate(timeout=60)
            assert p.returncode in (0, -sig, 128 + sig) or died_starting(p.returncode, err), (p.returncode, err)
            assert "Traceback" not in err or died_starting(p.returncode, err)
            deadline = time.monotonic() + 5
            while _scanners_of(path) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _scanners_of(path) == [], f"scanners left after signal {sig}"
    finally:
        os.unlink(path)


def _running(pid: int) -> bool:
    """pid exists and has not exited: a zombie (dead, waiting for whoever adopted it to reap it, which an
    init such as a container's may do late) counts as exited."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_a_helper_dies_with_its_parent() -> None:
    """_native.die_with_parent: a forked helper (a scanner) is killed when numamove dies, even by SIGKILL, so
    none outlives it."""
    code = ("import os, sys, time\n"
            "from numamove import _native\n"
            "parent = os.getpid()\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    rc = _native.die_with_parent(parent)\n"
            "    os.write(1, b'%d\\n' % rc)\n"
            "    time.sleep(60)\n"
            "    os._exit(0)\n"
            "print(pid, flush=True)\n"
            "time.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        lines = {p.stdout.readline().strip(), p.stdout.readline().strip()}
        assert "0" in lines
        helper = int(next(x for x in lines if x != "0"))
        assert _running(helper)  # alive while its parent is
        p.kill()
        p.wait()
        deadline = time.monotonic() + 5
        while _running(helper) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _running(helper), "the helper outlived its parent"
    finally:
        p.kill()
        p.wait()
