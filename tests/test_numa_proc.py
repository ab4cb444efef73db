"""`numamove proc` and `show` on live processes, inside the QEMU NUMA guests."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import seccomp_helper
from test_cli import run
from workload_helper import Workload, died_starting

from numamove import _native
from numamove.proc import TargetLock
from numamove.scan import PageSet, collect
from numamove.topology import read_topology

MIB = 1 << 20


def where_range(pid: int, start: int, length: int, page: int = 4096) -> set[int]:
    """Nodes of the pages of [start, start+length) in pid (move_pages, nodes=NULL)."""
    return set(_native.page_nodes(start, length, page, pid))


def mapped_at(pid: int, path: str) -> int:
    """Where pid maps path (the start of its first mapping of it, from /proc/PID/maps)."""
    with open(f"/proc/{pid}/maps") as fh:
        return int(fh.read().split(path)[0].splitlines()[-1].split("-")[0], 16)


@contextlib.contextmanager
def shm_holder(path: str, size: str = "8M") -> Iterator[tuple[Workload, int]]:
    """A workload mapping a new /dev/shm file at path on node 0: (it, where it maps the file); the file
    is removed afterwards."""
    if os.path.exists(path):
        os.unlink(path)
    try:
        with Workload("--size", "0", "--shm", path, "--shm-size", size, "--node", "0") as w:
            yield w, mapped_at(w.pid, path)
    finally:
        if os.path.exists(path):
            os.unlink(path)


def proc_json(*args: str) -> tuple[int, dict[str, Any], str]:
    code, out, err = run("proc", *args, "--json", "-q")
    return code, (json.loads(out) if out.strip() else {}), err


@pytest.mark.numa(nodes=2)
def test_a_workload_bound_to_a_node_moves_only_its_own_pages_there() -> None:
    """`numamove.workload --node 0` puts its heap and anonymous memory on node 0 and leaves shared library
    pages where they are. It used migrate_pages(2), which as root moves every page the process maps,
    other processes' shared pages included: with libc's pages on node 1 after a `migratepages` as root,
    each workload start spent 20-45 s of this guest's time moving them back."""
    was = -1
    # a process that maps libc, once it says so (its maps read before the exec would be pytest's own)
    sleeper = subprocess.Popen([sys.executable, "-c", "import sys, time; print('up', flush=True); time.sleep(300)"],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert sleeper.stdout is not None and sleeper.stdout.readline() == "up\n"
        with open(f"/proc/{sleeper.pid}/maps") as fh:
            text = next(f for f in (line.split() for line in fh) if "libc.so" in f[-1] and f[1] == "r-xp")
        page = int(text[0].split("-")[0], 16)
        (was,) = where_range(sleeper.pid, page, 4096)
        assert subprocess.run(["migratepages", str(sleeper.pid), "all", "1"]).returncode == 0
        assert where_range(sleeper.pid, page, 4096) == {1}, "migratepages as root moves shared libc pages"
        with Workload("--size", "8M", "--node", "0") as w:
            assert where_range(sleeper.pid, page, 4096) == {1}  # not moved back by the workload
            assert where_range(w.pid, *w.anon) == {0} and w.check()[0]
            with open(f"/proc/{w.pid}/maps") as fh:
                heap = next(line.split()[0] for line in fh if "[heap]" in line)
            lo, hi = (int(x, 16) for x in heap.split("-"))
            assert {n for n in where_range(w.pid, lo, hi - lo) if n >= 0} == {0}  # (<0: never touched)
    finally:
        if was >= 0:  # where the shared pages were, for the tests that follow
            subprocess.run(["migratepages", str(sleeper.pid), "1", str(was)])
        sleeper.kill()
        sleeper.wait()


@pytest.mark.numa(nodes=2)
def test_workload_moved_to_node_1_intact_and_running() -> None:
    """Every anonymous page of a running workload ends on node 1, its checksum holds, and it kept reading."""
    with Workload("--size", "24M", "--huge", "8M", "--node", "0") as w:
        assert where_range(w.pid, *w.anon) == {0}
        ok, reads0 = w.check()
        assert ok
        code, doc, err = proc_json(str(w.pid), "--to", "1")
        assert code == 0, err
        p = doc["processes"][0]
        assert p["moved"]["bytes"] >= 32 * MIB and not p["failed"]
        assert where_range(w.pid, *w.anon) == {1}
        assert where_range(w.pid, *w.huge) == {1}
        time.sleep(0.5)
        ok, reads1 = w.check()
        assert ok and reads1 > reads0
        assert p["after"].get("0", {"bytes": 0})["bytes"] < p["before"]["0"]["bytes"]


@pytest.mark.numa(nodes=2, guest="two")
def test_one_thread_under_auto_is_the_callers_and_push_pins_it() -> None:
    """One CPU a node allows one thread: under policy auto (no calibration) move_pages runs on numamove's own
    thread, not pinned, as migratepages does; --policy push pins that thread to the source node's CPU."""
    topo = read_topology()
    with Workload("--size", "16M", "--huge", "8M", "--node", "0") as w:
        code, doc, err = proc_json(str(w.pid), "--to", "1")
        assert code == 0, err
        p = doc["processes"][0]
        caller = ("caller", [], 1, None)
        assert p["plans"] and all((pl["direction"], pl["cpus"], pl["threads"], pl["cpu_node"]) == caller
                                  for pl in p["plans"])
        assert p["workers"] and all(wk["cpu"] == -1 and not wk["pinned"] for wk in p["workers"])
        assert where_range(w.pid, *w.anon) == {1} and where_range(w.pid, *w.huge) == {1}
        code, doc, err = proc_json(str(w.pid), "--to", "0", "--policy", "push")
        assert code == 0, err
        p = doc["processes"][0]
        assert p["plans"] and all(pl["direction"] == "push" and pl["cpus"] == list(topo.node(pl["src"]).cpus[:1])
                                  for pl in p["plans"])
        srcs = {pl["src"] for pl in p["plans"]}
        assert p["workers"] and all(wk["pinned"] and topo.node_of_cpu(wk["cpu_at_start"]) in srcs
                                    for wk in p["workers"])
        assert where_range(w.pid, *w.anon) == {0} and w.check()[0]


@pytest.mark.numa(nodes=2)
def test_huge_pages_move_as_huge_pages() -> None:
    """THP-backed memory is passed one address per 2 MiB page and lands whole on the destination."""
    with Workload("--size", "0", "--huge", "16M", "--node", "0") as w:
        code, doc, err = proc_json(str(w.pid), "--to", "1", "--only", "anon")
        assert code == 0, err
        p = doc["processes"][0]
        assert p["huge_pages_moved"] >= 4  # at least half of the 8 blocks were THPs
        assert where_range(w.pid, *w.huge) == {1}
        assert w.check()[0]


@pytest.mark.numa(nodes=2)
def test_dry_run_moves_nothing() -> None:
    """--dry-run reports the plan and the pages it would move, and every page stays put."""
    with Workload("--size", "8M", "--node", "0") as w:
        code, doc, _ = proc_json(str(w.pid), "--to", "1", "--dry-run")
        assert code == 0
        p = doc["processes"][0]
        assert p["dry_run"] and p["requested"]["bytes"] >= 8 * MIB and p["moved"]["bytes"] == 0
        assert p["plans"] and p["plans"][0]["src"] == 0 and p["plans"][0]["dst"] == 1
        assert where_range(w.pid, *w.anon) == {0}


@pytest.mark.numa(nodes=2)
def test_range_and_only_restrict_the_move() -> None:
    """--range moves only that range; --only heap leaves the anonymous regions alone."""
    with Workload("--size", "8M", "--node", "0") as w:
        start, length = w.anon
        half = f"{start:x}-{start + length // 2:x}"
        code, _, err = proc_json(str(w.pid), "--to", "1", "--range", half)
        assert code == 0, err
        assert where_range(w.pid, start, length // 2) == {1}
        assert where_range(w.pid, start + length // 2, length // 2) == {0}
        code, _, _ = proc_json(str(w.pid), "--to", "1", "--only", "heap")
        assert code == 0
        assert where_range(w.pid, start + length // 2, length // 2) == {0}


@pytest.mark.numa(nodes=2)
def test_from_filters_source_nodes_and_several_pids() -> None:
    """Two processes at once; --from 1 moves nothing from node 0."""
    with Workload("--size", "4M", "--node", "0") as a, Workload("--size", "4M", "--node", "0") as b:
        code, doc, _ = proc_json(str(a.pid), str(b.pid), "--to", "1", "--from", "1")
        assert code == 0 and all(p["moved"]["pages"] == 0 for p in doc["processes"])
        assert where_range(a.pid, *a.anon) == {0}
        code, doc, _ = proc_json(str(a.pid), str(b.pid), "--to", "1", "--from", "0")
        assert code == 0 and len(doc["processes"]) == 2
        assert where_range(a.pid, *a.anon) == {1} and where_range(b.pid, *b.anon) == {1}


@pytest.mark.numa(nodes=2)
def test_threads_of_one_process_are_one_target() -> None:
    """Naming a process and one of its threads (its TID) migrates their one address space once."""
    with Workload("--size", "4M", "--node", "0") as w:
        tid = next(int(t) for t in os.listdir(f"/proc/{w.pid}/task") if int(t) != w.pid)  # its reader thread
        code, doc, _ = proc_json(str(w.pid), str(tid), "--to", "1")
        assert code == 0 and [p["pid"] for p in doc["processes"]] == [w.pid]
        code, doc, _ = proc_json(str(tid), "--to", "0")  # the thread alone: its process
        assert code == 0 and [p["pid"] for p in doc["processes"]] == [w.pid]
        assert where_range(w.pid, *w.anon) == {0}


@pytest.mark.numa(nodes=2)
def test_shared_memory_needs_all() -> None:
    """A shm page mapped by two processes is skipped (exit 0, with the hint) without --all, moved with it."""
    path = "/dev/shm/numamove-test-shared"
    if os.path.exists(path):
        os.unlink(path)
    with Workload("--size", "4M", "--shm", path, "--node", "0") as a, \
            Workload("--size", "0", "--shm", path, "--node", "0") as b:
        code, doc, err = proc_json(str(a.pid), "--to", "1", "--only", "shm")
        assert code == 0, err
        p = doc["processes"][0]
        assert any("--all" in k for k in p["skipped"]), p["skipped"]
        assert p["moved"]["pages"] == 0
        code, doc, err = proc_json(str(a.pid), "--to", "1", "--only", "shm", "--all")
        assert code == 0, err
        assert doc["processes"][0]["moved"]["pages"] > 0
        code, out, _ = run("show", str(b.pid), "--json")
        shm = json.loads(out)["processes"][0]["by_kind"]["shm"]
        assert shm.get("1", 0) > 0 and shm.get("0", 0) == 0
        assert a.check()[0] and b.check()[0]
    os.unlink(path)


@pytest.mark.numa(nodes=2)
def test_to_cpus_uses_the_node_of_the_process_cpus() -> None:
    """--to cpus moves memory to the node of the CPUs the process may run on; two nodes' CPUs is an error."""
    with Workload("--size", "4M", "--node", "0") as w:
        os.sched_setaffinity(w.pid, {1})
        code, doc, err = proc_json(str(w.pid), "--to", "cpus")
        assert code == 0, err
        assert doc["processes"][0]["to"] == 1 and where_range(w.pid, *w.anon) == {1}
        os.sched_setaffinity(w.pid, {0, 1})
        code, _, err = run("proc", str(w.pid), "--to", "cpus")
        assert code == 2 and "nodes 0,1" in err


@pytest.mark.numa(nodes=2)
def test_show_reports_per_node_and_kind() -> None:
    """`show --json` puts the workload's anonymous memory on the node it was bound to."""
    with Workload("--size", "8M", "--huge", "4M", "--node", "1") as w:
        code, out, _ = run("show", str(w.pid), "--json")
        doc = json.loads(out)["processes"][0]
        assert code == 0 and doc["pid"] == w.pid
        anon = sum(v.get("1", 0) for k, v in doc["by_kind"].items() if k.startswith("anon"))
        assert anon >= 12 * MIB
        code, text, _ = run("show", str(w.pid))
        assert "node 1" in text and "anon" in text


@pytest.mark.numa(nodes=2)
def test_bad_targets_get_one_line_and_the_right_code() -> None:
    """No such PID, a kernel thread, node 99: one line each, codes 1, 1 and 2."""
    code, _, err = run("proc", "999999", "--to", "1")
    assert code == 1 and "no process with PID 999999" in err and err.count("\n") == 1
    code, _, err = run("proc", "2", "--to", "1")
    assert code == 1 and "kernel thread" in err
    with Workload("--size", "1M") as w:
        code, _, err = run("proc", str(w.pid), "--to", "99")
        assert code == 2 and "node 99 does not exist" in err


@pytest.mark.numa(nodes=2)
def test_unprivileged_user_cannot_move_pid_1() -> None:
    """As nobody, moving PID 1 is refused with a one-line permission error and exit 1."""
    target = 1
    # Real and effective IDs become nobody's: move_pages checks those (PTRACE_MODE_READ_REALCREDS).
    # The file-system ID stays root's (the saved ID permits it) only so that the interpreter,
    # which lives under /root (mode 700), can still load its modules.
    script = (
        "import ctypes, os, sys\n"
        "os.setgroups([]); os.setresgid(65534, 65534, 0); os.setresuid(65534, 65534, 0)\n"
        "ctypes.CDLL(None).setfsuid(0)\n"
        "assert os.getuid() == os.geteuid() == 65534\n"
        "from numamove.cli import main\n"
        f"sys.exit(main(['proc', '1', '--to', '{target}', '-q']))\n"
    )
    # nobody's own runtime directory, as a login session would give it (a shared /tmp is never trusted
    # for locks); its numamove/ made here too, since the file-system ID above stays root's
    import tempfile

    runtime = tempfile.mkdtemp(prefix="numamove-nobody-")
    os.mkdir(os.path.join(runtime, "numamove"), 0o700)
    for d in (runtime, os.path.join(runtime, "numamove")):
        os.chown(d, 65534, 65534)
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "XDG_RUNTIME_DIR": runtime})
    assert p.returncode == 1, p.stderr
    assert "not allowed" in p.stderr and "Traceback" not in p.stderr
    assert p.stderr.count("\n") == 1


@pytest.mark.numa(nodes=2)
def test_second_numamove_on_the_same_pid_is_refused_or_waits() -> None:
    """A held lock: exit 4 with a message; --wait proceeds once it is released."""
    with Workload("--size", "4M", "--node", "0") as w:
        lock = TargetLock(w.pid).acquire()
        code, _, err = run("proc", str(w.pid), "--to", "1")
        assert code == 4 and "another numamove is migrating" in err
        threading.Timer(1.0, lock.release).start()
        code, _, err = run("proc", str(w.pid), "--to", "1", "--wait", "-q")
        assert code == 0, err
        assert where_range(w.pid, *w.anon) == {1}


@pytest.mark.numa(nodes=2)
def test_process_exiting_before_the_move_is_reported() -> None:
    """A target that exits after its pages were listed: NoSuchProcessError, exit code 1."""
    from numamove.pagemove import MoveOptions, migrate
    from numamove.proc import NoSuchProcessError, resolve_targets
    from numamove.topology import read_topology

    w = Workload("--size", "4M", "--node", "0")
    t = resolve_targets([w.pid])[0][0]
    w.close()
    with pytest.raises(NoSuchProcessError) as exc:
        migrate(t, read_topology(), MoveOptions(1), None, None, 0, frozenset({0, 1}))
    assert exc.value.exit_code == 1


@pytest.mark.numa(nodes=5, cpuless=True)
@pytest.mark.parametrize("policy", ["push", "pull"])
def test_move_to_the_cpuless_node(policy: str, guest_truth: dict[str, Any]) -> None:
    """To the CPU-less node: pages land there; pull falls back to the source node's CPUs."""
    cxl = next(n["node"] for n in guest_truth["nodes"] if not n["has_cpu"])
    with Workload("--size", "8M", "--node", "1") as w:
        code, doc, err = proc_json(str(w.pid), "--to", str(cxl), "--policy", policy)
        assert code == 0, err
        p = doc["processes"][0]
        # the workload's own memory is on node 1; the interpreter's may be elsewhere: either way
        # the CPU-less destination makes both push and pull run on each source node's CPUs
        assert any(pl["src"] == 1 for pl in p["plans"])
        assert all(pl["cpu_node"] == pl["src"] for pl in p["plans"])
        srcs = {pl["src"] for pl in p["plans"]}  # in this guest CPU n belongs to node n
        assert all(wk["cpu_at_start"] in srcs and wk["pinned"] for wk in p["workers"])
        assert where_range(w.pid, *w.anon) == {cxl}
        assert w.check()[0]


@pytest.mark.numa(nodes=2)
def test_batch_and_max_pause_bound_the_calls() -> None:
    """--batch caps pages per move_pages call; --max-pause sizes batches from a first call and says so."""
    with Workload("--size", "8M", "--node", "0") as w:
        code, doc, err = proc_json(str(w.pid), "--to", "1", "--only", "anon", "--batch", "256")
        assert code == 0, err
        p = doc["processes"][0]
        assert p["move_pages_calls"] >= p["moved"]["pages"] // 256 >= 8
        assert where_range(w.pid, *w.anon) == {1}
        code, doc, err = proc_json(str(w.pid), "--to", "0", "--only", "anon", "--max-pause", "50")
        assert code == 0, err
        p = doc["processes"][0]
        assert any("--max-pause 50 ms" in n for n in p["notes"])
        assert p["move_pages_calls"] >= 2
        assert where_range(w.pid, *w.anon) == {0}
        assert w.check()[0]


@pytest.mark.numa(nodes=2, guest="two")
def test_max_pause_grows_back_from_a_first_estimate_a_stall_threw(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stalled probe call makes --max-pause's first estimate one entry a call. The batch is re-sized after
    each round, so 2048 pages take a few dozen calls, not 2048 each paying the fixed cost (a guest test once
    took 86 s so), and the report says where the batch started and ended."""
    import numamove.pagemove as pagemove

    monkeypatch.setattr(pagemove, "_call_cost", lambda sizes, took, budget: (0.0, 1000.0))  # the stall
    with Workload("--size", "8M", "--node", "0") as w:
        code, doc, err = proc_json(str(w.pid), "--to", "1", "--only", "anon", "--max-pause", "50", "--threads", "1")
        assert code == 0, err
        p = doc["processes"][0]
        note = next(n for n in p["notes"] if n.startswith("--max-pause 50 ms"))
        assert "1 entries per move_pages call at first" in note and "at the end" in note
        assert p["moved"]["pages"] >= 2048 and p["move_pages_calls"] < p["moved"]["pages"] // 8, (p, note)
        assert p["max_call_ms"] < 5000
        assert where_range(w.pid, *w.anon) == {1} and w.check()[0]


@pytest.mark.numa(nodes=2)
def test_not_enough_free_memory_on_the_destination() -> None:
    """More to move than the destination has free: one line, exit 1, nothing moved."""
    from numamove.topology import read_topology

    free = read_topology().nodes[1].mem_free
    fill = f"{(free >> 20) - 48}M"  # leave under 48 MiB free on node 1 (the guests' nodes differ in size)
    # a tmpfs file holds node 1's memory: the kernel fills it (a Python workload writing and checking
    # ~450 MiB took 15-30 s of the guests' time under TCG)
    filler = "/dev/shm/numamove-test-filler"
    try:
        subprocess.run(["numactl", "--membind=1", "fallocate", "-l", fill, filler], check=True)
        assert read_topology().nodes[1].mem_free < 96 * MIB  # less than the move below needs
        with Workload("--size", "96M", "--node", "0") as w:
            code, _, err = run("proc", str(w.pid), "--to", "1", "-q")
            assert code == 1 and "node 1 has" in err and "free" in err and err.count("\n") == 1
            assert where_range(w.pid, *w.anon) == {0}
    finally:
        if os.path.exists(filler):
            os.unlink(filler)


@pytest.mark.numa(nodes=2)
def test_node_outside_the_process_cpuset() -> None:
    """A process confined to node 0 by a cpuset cgroup: --to 1 is refused naming its Mems_allowed."""
    root = "/sys/fs/cgroup"
    if not os.path.exists(f"{root}/cgroup.controllers"):
        subprocess.run(["mount", "-t", "cgroup2", "none", root], check=True)
    with open(f"{root}/cgroup.subtree_control", "w") as fh:
        fh.write("+cpuset")
    group = f"{root}/numamove-test"
    os.makedirs(group, exist_ok=True)
    with open(f"{group}/cpuset.mems", "w") as fh:
        fh.write("0")
    with Workload("--size", "4M") as w:
        with open(f"{group}/cgroup.procs", "w") as fh:
            fh.write(str(w.pid))
        code, _, err = run("proc", str(w.pid), "--to", "1", "-q")
        assert code == 1 and "outside the cpuset" in err and "Mems_allowed: 0" in err
        w.close()
    os.rmdir(group)


@pytest.mark.numa(nodes=2)
@pytest.mark.parametrize("scan", ["here", "scanners"])
def test_file_moved_in_place_while_another_process_maps_it(scan: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A /dev/shm file mapped by a running process: moved to node 1 in place; that process reads the same bytes.
    Its resident pages found by numamove itself, or by three scanner processes (as for files of 128 MiB of
    data and more), which leave numamove mapping none of them: the move's workers map their own."""
    from numamove import files

    if scan == "scanners":
        real = files._scanners
        monkeypatch.setattr(files, "SCAN_SPLIT_MIN", 0)
        monkeypatch.setattr(files, "SCAN_SHARE", MIB)
        monkeypatch.setattr(files, "_scanners", lambda data, limit, cpus: real(data, limit, 3))
    path = "/dev/shm/numamove-test-file"
    with shm_holder(path) as (w, start):
        assert where_range(w.pid, start, 8 * MIB) == {0}
        code, out, err = run("file", path, "--to", "1", "--json", "-q")
        assert code == 0, err
        f = json.loads(out)["files"][0]
        assert f["moved"]["bytes"] == 8 * MIB and f["failed"] == {}
        assert any("shared policy" in n for n in f["notes"])
        assert where_range(w.pid, start, 8 * MIB) == {1}
        ok, _ = w.check()
        assert ok


@pytest.mark.numa(nodes=2)
def test_file_pages_move_on_worker_processes_while_another_process_maps_them() -> None:
    """The in-place move's several workers are processes (each its own mm, so no TLB shootdowns between
    them): a mapped file's pages, listed in numamove's mapping, all reach node 1 through two workers pinned
    to both CPUs, the mapper sees node 1 and its own bytes, and numamove's mapping no longer maps them.
    Then back, through the whole CLI with --policy push."""
    import mmap

    path = "/dev/shm/numamove-test-own"
    with shm_holder(path) as (w, start):
        assert where_range(w.pid, start, 8 * MIB) == {0}
        fd = os.open(path, os.O_RDONLY)
        m = mmap.mmap(fd, 8 * MIB, mmap.MAP_SHARED, mmap.PROT_READ)
        keep, addr, _ = _native.buffer_address(m)
        try:
            out = _native.PageOut(4096, 2048)
            n = _native.resident_pages(out, addr, 8 * MIB, 4096)
            assert n == 2048
            status, nodes = _native.raw_new("int[]", n), _native.raw_new("int[]", n)
            _native.fill_int(nodes, n, 1)
            cpus = tuple(sorted(os.sched_getaffinity(0)))[:2]
            res = _native.move_own(out.out.pages, n, 1, _native.MPOL_MF_MOVE_ALL, cpus, 2, 64, status, nodes, 4096)
            assert list(status) == [1] * n, sorted(set(status))
            assert len(res.workers) == 2 and sum(wk.done for wk in res.workers) == n
            assert [wk.cpu_at_start for wk in res.workers] == list(cpus)
            assert where_range(w.pid, start, 8 * MIB) == {1}
            assert collect(os.getpid(), [(addr, addr + 8 * MIB)]).tally() == {}  # numamove maps none of them
        finally:
            del keep
            m.close()
            os.close(fd)
        ok, _ = w.check()
        assert ok
        code, out_text, err = run("file", path, "--to", "0", "--policy", "push", "--json", "-q")
        assert code == 0, err
        f = json.loads(out_text)["files"][0]
        assert f["moved"]["bytes"] == 8 * MIB and f["failed"] == {}, f
        assert where_range(w.pid, start, 8 * MIB) == {0}
        ok, _ = w.check()
        assert ok


@pytest.mark.numa(nodes=5, cpuless=True)
def test_file_to_and_from_the_cpuless_node(guest_truth: dict[str, Any]) -> None:
    """A shm file moves to the CPU-less node and back, using the other node's CPUs."""
    cxl = next(n["node"] for n in guest_truth["nodes"] if not n["has_cpu"])
    path = "/dev/shm/numamove-test-cxl"
    with open(path, "wb") as fh:
        fh.write(os.urandom(4 * MIB))
    for dst in (cxl, 3):
        code, out, err = run("file", path, "--to", str(dst), "--json", "-q")
        assert code == 0, err
        f = json.loads(out)["files"][0]
        assert f["after"] == {str(dst): {"pages": 1024, "bytes": 4 * MIB}}
        assert all(p["cpu_node"] != cxl for p in f["plans"])
    os.unlink(path)


@pytest.mark.numa(nodes=2)
def test_file_copy_keeps_content_mode_owner_xattrs_and_lands_on_the_node() -> None:
    """--copy: the new file is on node 1 page by page, with the same bytes, mode, owner and xattrs."""
    path = "/dev/shm/numamove-test-copy"
    data = os.urandom(3 * MIB + 123)
    with open(path, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o640)
    os.chown(path, 65534, 65534)
    os.setxattr(path, "trusted.numamove", b"kept")
    code, out, err = run("file", path, "--to", "1", "--copy", "--json")
    assert code == 0, err
    c = json.loads(out)["copies"][0]
    # UFFDIO_COPY allocated every page on node 1 (the new file's policy), holding its bytes
    assert c["verified"] and c["pages_on_node"] == {"1": 769}
    assert c["fill"] == {"method": "userfaultfd", "why": None}
    with open(path, "rb") as fh:
        assert fh.read() == data
    st = os.stat(path)
    assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o640, 65534, 65534)
    assert os.getxattr(path, "trusted.numamove") == b"kept"
    assert not [n for n in os.listdir("/dev/shm") if ".numamove-" in n]
    with Workload("--size", "0", "--shm", path, "--shm-size", "1M"):
        code, _, err = run("file", path, "--to", "0", "--copy")
        assert code == 1 and "is open or mapped by PID" in err
    os.unlink(path)


@pytest.mark.numa(nodes=2)
def test_file_copy_without_userfaultfd_populates_on_the_node() -> None:
    """userfaultfd refused (a seccomp filter, as in containers): the copy's pages are populated, still on
    node 1 page by page, with the same bytes, and the report says why."""
    path, out_path = "/dev/shm/numamove-test-copy-nouffd", "/dev/shm/numamove-test-copy-nouffd-out"
    data = os.urandom(3 * MIB + 123)
    with open(path, "wb") as fh:
        fh.write(data)
    p = subprocess.run([sys.executable, seccomp_helper.__file__, "--", sys.executable, "-m", "numamove", "file", path,
                        "--to", "1", "--copy", "--output", out_path, "--json"], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    c = json.loads(p.stdout)["copies"][0]
    assert c["fill"] == {"method": "populate", "why": "userfaultfd(): Operation not permitted"}
    assert c["verified"] and c["pages_on_node"] == {"1": 769}
    with open(out_path, "rb") as fh:
        assert fh.read() == data
    os.unlink(path)
    os.unlink(out_path)


def _data_page_nodes(path: str, offsets: list[int]) -> set[int]:
    """Nodes of a file's data pages at offsets (mapped and read here: only data pages, so no hole is filled)."""
    import mmap

    fd = os.open(path, os.O_RDONLY)
    try:
        m = mmap.mmap(fd, os.fstat(fd).st_size, mmap.MAP_SHARED, mmap.PROT_READ)
        keep, addr, _ = _native.buffer_address(m)
        try:
            for off in offsets:
                _ = m[off]
            return {n for off in offsets for n in _native.page_nodes(addr + off, 4096)}
        finally:
            del keep
            m.close()
    finally:
        os.close(fd)


@pytest.mark.numa(nodes=2)
def test_a_sparse_file_moves_and_copies_its_data_only() -> None:
    """A sparse /dev/shm file (64 GiB long, three runs of data far apart, written on node 0): in place, its
    data pages move to node 1 and its holes stay holes; --copy --output keeps the holes and puts the data on
    node 1. Before, the in-place scan walked the whole length, and the copy asked the node for 64 GiB."""
    path, out_path = "/dev/shm/numamove-test-sparse", "/dev/shm/numamove-test-sparse-out"
    runs = [(0, 2 * MIB), (5 << 30, 64 << 10), ((64 << 30) - MIB, MIB)]
    subprocess.run(["numactl", "--membind=0", sys.executable, "-c",
                    "import os, sys\n"
                    "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)\n"
                    "os.ftruncate(fd, 64 << 30)\n"
                    f"for off, n in {runs!r}: os.pwrite(fd, os.urandom(n), off)\n", path], check=True)
    offsets = [off for start, n in runs for off in range(start, start + n, 4096)]
    data = sum(n for _, n in runs)
    try:
        with open(path, "rb") as fh:
            want = [(fh.seek(start), fh.read(n))[1] for start, n in runs]
        assert _data_page_nodes(path, offsets) == {0}
        code, out, err = run("file", path, "--to", "1", "--json", "-q")
        assert code == 0, err
        f = json.loads(out)["files"][0]
        assert f["moved"] == {"pages": data // 4096, "bytes": data} and f["failed"] == {}, json.dumps(f)
        assert _data_page_nodes(path, offsets) == {1}
        assert os.stat(path).st_blocks * 512 == data
        code, out, err = run("file", path, "--to", "1", "--copy", "--output", out_path, "--json", "-q")
        assert code == 0, err
        c = json.loads(out)["copies"][0]
        assert (c["bytes"], c["data_bytes"], c["pages_on_node"]) == (64 << 30, data, {"1": data // 4096})
        assert os.stat(out_path).st_blocks * 512 == data
        with open(out_path, "rb") as fh:
            assert [(fh.seek(start), fh.read(n))[1] for start, n in runs] == want
    finally:
        for p in (path, out_path):
            if os.path.exists(p):
                os.unlink(p)


@pytest.mark.numa(nodes=2)
def test_file_copy_stages_a_file_from_another_file_system() -> None:
    """--copy --output: a file on another file system is staged into /dev/shm on node 1."""
    src = os.path.join(os.path.dirname(__file__), "..", "README.md")
    out_path = "/dev/shm/numamove-test-staged"
    code, out, err = run("file", src, "--to", "1", "--copy", "--output", out_path, "--json")
    assert code == 0, err
    assert json.loads(out)["copies"][0]["pages_on_node"].keys() == {"1"}
    with open(src, "rb") as a, open(out_path, "rb") as b:
        assert a.read() == b.read()
    os.unlink(out_path)


@pytest.mark.numa(nodes=2)
def test_hugetlb_pages_move_whole_with_proc_and_file() -> None:
    """hugetlbfs memory: proc moves a process's hugetlb mapping one 2 MiB page per entry, file moves it back."""
    with open("/proc/sys/vm/nr_hugepages", "w") as fh:
        fh.write("20")  # spread over the nodes by the kernel: at least 4 on each
    mnt = "/tmp/numamove-hugetlbfs"
    os.makedirs(mnt, exist_ok=True)
    subprocess.run(["mount", "-t", "hugetlbfs", "none", mnt], check=True)
    path = f"{mnt}/buf"
    try:
        with Workload("--size", "0", "--shm", path, "--shm-size", "4M", "--node", "0") as w:
            start = mapped_at(w.pid, path)
            assert where_range(w.pid, start, 4 * MIB, 2 * MIB) == {0}
            assert collect(w.pid).source == "smaps"  # maps cannot tell a hugetlbfs file: smaps says its page size
            code, doc, err = proc_json(str(w.pid), "--to", "1", "--only", "shm")
            assert code == 0, err
            p = doc["processes"][0]
            assert p["moved"] == {"pages": 2, "bytes": 4 * MIB} and p["huge_pages_moved"] == 2, json.dumps(p)
            assert where_range(w.pid, start, 4 * MIB, 2 * MIB) == {1}
            code, out, err = run("file", path, "--to", "0", "--json", "-q")
            assert code == 0, err
            f = json.loads(out)["files"][0]
            assert f["moved"] == {"pages": 2, "bytes": 4 * MIB}
            assert where_range(w.pid, start, 4 * MIB, 2 * MIB) == {0}
            assert w.check()[0]
    finally:
        if os.path.exists(path):
            os.unlink(path)
        subprocess.run(["umount", mnt], check=False)


@pytest.mark.numa(nodes=2)
def test_pages_read_from_maps_are_those_smaps_gives_on_both_nodes() -> None:
    """The fast path reads a process's mappings from /proc/PID/maps; after a real move it finds the same pages
    on the same nodes as through smaps (4 KiB pages, THPs, a /dev/shm file), and proc moves them all."""
    shm = "/dev/shm/numamove-maps-guest"

    def pages(ps: PageSet) -> dict[int, list[tuple[int, int]]]:
        return {size: [(int(_native.ffi.cast("uintptr_t", c.pages[i])), c.nodes[i]) for i in range(c.count)]
                for size, c in ps.classes.items()}

    try:
        with Workload("--size", "8M", "--huge", "8M", "--shm", shm, "--shm-size", "4M", "--node", "0") as w:
            code, doc, err = proc_json(str(w.pid), "--to", "1", "--only", "anon,shm")
            assert code == 0, err
            fast, slow = collect(w.pid, only=frozenset(("anon", "shm"))), collect(
                w.pid, only=frozenset(("anon", "shm")), smaps=True)
            assert (fast.source, slow.source) == ("maps", "smaps")
            assert pages(fast) == pages(slow)
            assert sorted(fast.segments) == sorted(slow.segments)
            nodes = {n for c in pages(fast).values() for _, n in c}
            assert 1 in nodes and nodes <= {1, -14}  # -EFAULT: the zero page, as move_pages itself says
            assert fast.classes[2 * MIB].count >= 2 and doc["processes"][0]["huge_pages_moved"] >= 2
            assert where_range(w.pid, *w.anon) == {1} and where_range(w.pid, *w.huge, 2 * MIB) == {1}
            assert w.check()[0]
    finally:
        if os.path.exists(shm):
            os.unlink(shm)


@pytest.mark.numa(nodes=2, guest="two")
def test_good_targets_move_when_another_fails() -> None:
    """proc GOOD 999999 --to 1: GOOD's pages are on node 1, the JSON reports both, the exit code is 3."""
    with Workload("--size", "8M", "--node", "0") as w:
        code, out, err = run("proc", str(w.pid), "999999", "--to", "1", "--json", "-q")
        doc = json.loads(out)
        assert code == 3, err
        outcomes = {t["pid"]: t["outcome"] for t in doc["targets"]}
        assert outcomes == {w.pid: "moved", 999999: "failed"}
        assert doc["processes"][0]["moved"]["pages"] > 0
        assert where_range(w.pid, *w.anon) == {1}
        assert w.check()[0]


def _move_under_way(w: Workload, *options: str) -> subprocess.Popen[str]:
    """`numamove proc` of w's pages to node 1 (--json -q, with options), returned once a page of w's
    anonymous region is on node 1."""
    p = subprocess.Popen([sys.executable, "-m", "numamove", "proc", str(w.pid), "--to", "1", *options,
                          "--json", "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while 1 not in where_range(w.pid, *w.anon) and time.monotonic() < deadline:
        time.sleep(0.05)
    return p


@pytest.mark.numa(nodes=2, guest="two")
@pytest.mark.parametrize("sig, code", [(2, 130), (15, 143)])
def test_a_signal_mid_move_stops_within_a_batch_and_reports_what_moved(sig: int, code: int) -> None:
    """SIGINT/SIGTERM during a move: numamove stops within one batch, prints what moved as JSON, exits
    128+signal; every page is on its old or its new node, as the report says, and no byte changed."""
    with Workload("--size", "96M", "--node", "0") as w:
        p = _move_under_way(w, "--batch", "64")
        p.send_signal(sig)
        out, err = p.communicate(timeout=300)
        assert p.returncode == code, err
        doc = json.loads(out)
        rep = doc["processes"][0]
        assert doc["targets"][0]["outcome"] == "interrupted"
        assert 0 < rep["moved"]["pages"] < rep["requested"]["pages"], rep
        assert rep["skipped"]["not moved: interrupted"]["pages"] > 0
        assert set(_native.page_nodes(w.anon[0], w.anon[1], 4096, w.pid)) == {0, 1}  # stopped part way
        assert {int(n) for n in rep["after"]} == {0, 1}
        assert w.check()[0]


# a process bound to node 1 that, told "go", takes node 1's free memory 8 MiB at a time (populated at once)
# until less than FLOOR is left, says how much it took, and holds it. The move then takes the rest of the
# node and fails: the kernel never OOM-kills for a migration's page (__GFP_THISNODE: the allocation fails).
# The filler's own faults must not meet the move's at the bottom of the node (the first version, with a
# 16 MiB floor, was OOM-killed there): it stops while the move still needs more than FLOOR, and then
# allocates nothing
_FILL_CODE = """import mmap, numa, sys
numa.memory.set_membind_nodes(1)
FLOOR, STEP = {floor}, 8 << 20
def free():
    with open('/sys/devices/system/node/node1/meminfo') as fh:
        return int(next(l for l in fh if 'MemFree' in l).split()[3]) * 1024
print('ready', flush=True)
sys.stdin.readline()
held = []
while free() > FLOOR + STEP:
    m = mmap.mmap(-1, STEP, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    m.madvise(23)  # MADV_POPULATE_WRITE
    held.append(m)
print(len(held) * STEP, flush=True)
sys.stdin.read()
"""


@pytest.mark.numa(nodes=2, guest="two")
def test_a_node_that_fills_up_mid_move_is_reported_page_by_page() -> None:
    """Node 1 fills up while numamove moves a workload there (another process takes its memory once the
    free-memory check has passed and the paced move is under way): the pages the kernel could not place
    are reported as "no memory on the destination", exit 3 (partly done), every page is on the node the
    report says, and no byte changed. No process is OOM-killed."""
    filler = subprocess.Popen([sys.executable, "-c", _FILL_CODE.format(floor=40 << 20)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert filler.stdout is not None and filler.stdin is not None
        assert filler.stdout.readline().strip() == "ready"
        with Workload("--size", "96M", "--node", "0") as w:
            p = _move_under_way(w, "--rate", "16M")  # the 96 MiB take ~6 s: most are still to move
            filler.stdin.write("go\n")
            filler.stdin.flush()
            line = filler.stdout.readline()
            assert line.strip().isdigit(), filler.stderr.read() if filler.stderr else line
            took = int(line)
            out, err = p.communicate(timeout=300)
            assert took > 0 and p.returncode == 3, (took, p.returncode, err)
            rep = json.loads(out)["processes"][0]
            short = rep["failed"]["no memory on the destination"]["pages"]
            assert short > 0 and rep["moved"]["pages"] > 0, rep
            nodes = _native.page_nodes(w.anon[0], w.anon[1], 4096, w.pid)
            assert set(nodes) == {0, 1}
            # the report's after-counts are what the kernel says: node 0 holds at least the pages reported
            # not moved (the workload's other mappings count too)
            assert rep["after"]["0"]["pages"] >= short
            assert nodes.count(0) <= short
            assert w.check()[0]
            assert w.p.poll() is None  # not OOM-killed
    finally:
        filler.kill()
        filler.wait()
    assert filler.returncode == -9  # it lived until killed here: not OOM-killed either


@pytest.mark.numa(nodes=2, guest="two")
def test_a_move_whose_threads_cannot_start_is_retried_on_one_thread() -> None:
    """When no migration thread can be created (EAGAIN), the move runs again on one thread, every page lands,
    and the report says so. (The guests' nodes have one CPU each, so the plan names CPUs 0 and 1.)"""
    from numamove.pagemove import TargetReport, _call
    from numamove.planner import Plan
    from numamove.proc import resolve_targets
    from numamove.scan import collect

    with Workload("--size", "8M", "--node", "0") as w:
        t = resolve_targets([w.pid])[0][0]
        c = collect(w.pid, [(w.anon[0], w.anon[0] + w.anon[1])]).classes[4096]
        n = c.count
        plan = Plan(0, 1, "push", "push", 0, (0, 1), "group", n, n, 2, {})
        rep = TargetReport(t, 1)
        status, target = _native.raw_new("int[]", n), _native.raw_new("int[]", n)
        _native.fill_int(target, n, 1)
        _native.fault_inject_thread_create(1)
        try:
            _call(w.pid, c.pages, 0, n, plan, _native.MPOL_MF_MOVE, 64, rep, status, target)
        finally:
            _native.fault_inject_thread_create(0)
        assert any("retried on one thread" in note for note in rep.notes), rep.notes
        assert set(status) == {1} and where_range(w.pid, *w.anon) == {1}
        assert w.check()[0]


@pytest.mark.numa(nodes=2, guest="two")
def test_fault_suite_kills_proc_at_random_points() -> None:
    """numamove proc killed with SIGKILL, SIGINT or SIGTERM at a random moment, over and over: the workload's
    every byte survives, every page is on node 0 or 1, no lock file is left, and the exit code says what
    happened (128+signal with a JSON report of what moved, or a normal exit when it finished first)."""
    import random

    rng = random.Random(1234)
    faults = verified = 0
    with Workload("--size", "48M", "--huge", "16M", "--node", "0") as w:
        to = 1
        for _ in range(8):
            sig = rng.choice([9, 2, 15])
            p = subprocess.Popen([sys.executable, "-m", "numamove", "proc", str(w.pid), "--to", str(to), "--batch",
                                  str(rng.choice([16, 64, 512])), "--json", "-q"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            time.sleep(rng.uniform(0.2, 4.0))  # before, during or after the move (start-up is ~1.5 s here)
            p.send_signal(sig)
            out, err = p.communicate(timeout=300)
            faults += 1
            if p.returncode == 0:
                assert json.loads(out)["processes"][0]["failed"] == {}
            elif p.returncode == -sig or died_starting(p.returncode, err):
                pass  # ended by the signal itself: SIGKILL, or SIGINT/SIGTERM before numamove's handlers existed
            else:
                assert p.returncode == 128 + sig, err
                if out:  # the signal came once the targets were known: the report is complete JSON
                    assert json.loads(out)["targets"]
            nodes = set(_native.page_nodes(w.anon[0], w.anon[1], 4096, w.pid))
            assert nodes <= {0, 1}, nodes
            intact, _ = w.check()
            assert intact, f"bytes changed after {sig} (rc {p.returncode})"
            verified += w.anon[1] + w.huge[1]
            import fcntl

            # a lock file survives only SIGKILL (nothing can unlink then), and then it is free: the kernel
            # released the flock, and the next run takes it and removes it
            stale = [f for f in (os.listdir("/run/numamove") if os.path.isdir("/run/numamove") else [])
                     if f.startswith(f"{w.pid}-")]
            assert not stale or sig == 9, stale
            for f in stale:
                fd = os.open(os.path.join("/run/numamove", f), os.O_RDWR)
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if still held
                os.close(fd)
            to = 1 - to
    print(f"fault suite (proc, guest): {faults} faults injected, {verified} bytes verified, 0 bytes lost")


@pytest.mark.numa(nodes=2, guest="two")
def test_a_target_that_exits_mid_move_is_reported_not_a_crash() -> None:
    """The workload is killed while numamove moves it: one document saying it is gone (exit 1), or the
    move finished first (exit 0); never a traceback."""
    w = Workload("--size", "96M", "--node", "0")
    p = subprocess.Popen([sys.executable, "-m", "numamove", "proc", str(w.pid), "--to", "1", "--batch", "64", "--json",
                          "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while 1 not in where_range(w.pid, *w.anon) and time.monotonic() < deadline:
        time.sleep(0.05)
    w.close()
    out, err = p.communicate(timeout=300)
    assert "Traceback" not in err
    doc = json.loads(out)
    if p.returncode == 1:
        reason = doc["targets"][0]["reason"]
        assert doc["targets"][0]["outcome"] == "skipped" and ("exited" in reason or "no process" in reason), doc
        assert err.count("\n") == 1
    else:
        assert p.returncode == 0, err


@pytest.mark.numa(nodes=2, guest="two")
def test_fault_suite_kills_file_in_place_at_random_points() -> None:
    """numamove file (in place) killed at random moments while a process maps the file: the mapper's bytes
    survive every kill and the file's pages are on node 0 or 1."""
    import random

    rng = random.Random(4321)
    path = "/dev/shm/numamove-fault-file"
    if os.path.exists(path):
        os.unlink(path)
    faults = verified = 0
    try:
        with Workload("--size", "0", "--shm", path, "--shm-size", "32M", "--node", "0") as w:
            to = 1
            for _ in range(6):
                sig = rng.choice([9, 2, 15])
                p = subprocess.Popen([sys.executable, "-m", "numamove", "file", path, "--to", str(to), "-q"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                time.sleep(rng.uniform(0.2, 3.0))
                p.send_signal(sig)
                _, err = p.communicate(timeout=300)
                faults += 1
                assert p.returncode in (0, -9, 128 + sig, -sig) or died_starting(p.returncode, err), (p.returncode, err)
                assert "Traceback" not in err or died_starting(p.returncode, err)
                intact, _ = w.check()
                assert intact, f"the mapper's bytes changed after signal {sig}"
                verified += 32 << 20
                to = 1 - to
        print(f"fault suite (file in place, guest): {faults} faults injected, {verified} bytes verified, 0 lost")
    finally:
        os.unlink(path)


@pytest.mark.numa(nodes=2, guest="two")
def test_max_pause_sizes_each_page_size_from_its_own_probe() -> None:
    """--max-pause times a small call per page size: 4 KiB batches are not sized from the huge-page
    calls before them (that made them ~100x too small)."""
    with Workload("--size", "16M", "--huge", "16M", "--node", "0") as w:
        code, doc, _ = proc_json(str(w.pid), "--to", "1", "--max-pause", "50")
        assert code == 0
        sizes = [int(n.split(": ")[1].split()[0]) for n in doc["processes"][0]["notes"] if "--max-pause" in n]
        assert len(sizes) >= 2, doc["processes"][0]["notes"]  # THP first (largest pages first), then 4 KiB
        assert sizes[-1] >= 5 * sizes[0], sizes


@pytest.mark.numa(nodes=2, guest="two")
def test_a_full_destination_node_is_refused_before_anything_moves() -> None:
    """Node 1 nearly full (another process holds its memory): one line naming the free and needed memory,
    exit 1, nothing moved, every byte intact."""
    from numamove.topology import read_topology

    free = read_topology().nodes[1].mem_free
    hog = max(0, free - (48 << 20))
    filler = subprocess.Popen([sys.executable, "-c",
                               "import mmap, sys, numa\nnuma.memory.set_membind_nodes(1)\n"
                               f"m = mmap.mmap(-1, {hog}, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)\n"
                               f"for o in range(0, {hog}, 4096):\n    m[o] = 1\n"
                               "print('ready', flush=True)\nsys.stdin.read()\n"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert filler.stdout is not None and filler.stdout.readline().strip() == "ready"
        with Workload("--size", "96M", "--node", "0") as w:
            code, out, err = run("proc", str(w.pid), "--to", "1", "-q")
            assert code == 1 and "free" in err and err.count("\n") == 1, err
            assert where_range(w.pid, *w.anon) == {0}
            assert w.check()[0]
    finally:
        filler.kill()
        filler.wait()
