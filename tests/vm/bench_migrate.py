"""numamove proc against numactl's migratepages, on one live workload, inside the bench guest.

Run by `make bench` through `tests/vm/harness.py bench` (two nodes with two CPUs and 1.5 GiB
each). For each page size, one workload holding SIZE is moved back and forth between the
nodes, alternating the tools in ABBA order so that each moves both ways equally often, RUNS
rounds; every move is verified page by page, each node's recently freed pages are used once and each
tool runs once doing nothing before the next move (untimed: workload_helper.LAUNDER and warm_up), and
the workload checks its own bytes at the end.
Both tools move every migratable page of the process. Reported: medians and their ratio.
Times under TCG emulation are for ratios only.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from workload_helper import Launderer, Workload  # noqa: E402

from numamove import _native  # noqa: E402
from numamove.nodelist import parse_size  # noqa: E402
from numamove.pagemove import MoveOptions, migrate  # noqa: E402
from numamove.proc import resolve_targets  # noqa: E402
from numamove.topology import current_node, read_topology  # noqa: E402

SIZE = "512M"
RUNS = 3
PROFILE = False
KINDS = ("huge", "4k", "file")


def nodes_of(pid: int, start: int, length: int) -> set[int]:
    return set(_native.page_nodes(start, length, 4096, pid))


def main() -> int:
    global SIZE, RUNS, PROFILE, KINDS
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default=SIZE)
    ap.add_argument("--runs", type=int, default=RUNS)
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--profile", action="store_true", help="cProfile the first numamove move")
    ap.add_argument("--threads", type=int, default=4, help="numamove's thread limit")
    ap.add_argument("--policy", default="auto")
    ns = ap.parse_args()
    SIZE, RUNS, PROFILE, KINDS = ns.size, ns.runs, ns.profile, tuple(ns.kinds.split(","))
    opts = {"limit": ns.threads, "policy": ns.policy}
    topo = read_topology()
    here = current_node(topo)
    allowed = frozenset(os.sched_getaffinity(0))
    print(f"guest: {os.cpu_count()} CPUs, nodes {topo.ids}, "
          f"CPUs per node {[len(topo.nodes[n].cpus) for n in topo.ids]}, workload {SIZE}, {RUNS} runs")
    print("(the proc figures call numamove in-process, without the CLI's start-up; the file figures time "
          "whole processes)")
    ok = True
    with Launderer(topo.ids, [sys.executable, "-m", "numamove"]) as launder:
        ok &= bench_proc(topo, here, allowed, opts, launder)
        if "file" in KINDS:
            ok &= bench_file(topo, here, allowed, launder)
    print("verified: every page on the destination after every move" if ok else "VERIFICATION FAILED")
    return 0 if ok else 1


def bench_proc(topo: Any, here: int, allowed: frozenset[int], opts: dict[str, Any], launder: Launderer) -> bool:
    """numamove's proc path in-process against the migratepages CLI, on one workload per page size."""
    ok = True
    for kind in [k for k in KINDS if k in ("huge", "4k")]:
        args = ["--size", "0", "--huge", SIZE] if kind == "huge" else ["--size", SIZE]
        with Workload(*args, "--node", "0") as w:
            region = w.huge if kind == "huge" else w.anon
            target = resolve_targets([w.pid])[0][0]
            at = 0
            mp: list[float] = []
            nm: list[float] = []
            for r in range(RUNS):
                # ABBA order: each tool moves in both directions equally often (the nodes are not
                # alike: node 0 holds the kernel and is fragmented, so THP allocation there costs more)
                for tool in (("mp", "nm") if r % 2 == 0 else ("nm", "mp")):
                    t = time.perf_counter()
                    if tool == "mp":
                        subprocess.run(["migratepages", str(w.pid), str(at), str(1 - at)], check=True)
                        mp.append(time.perf_counter() - t)
                        at = 1 - at
                        ok &= nodes_of(w.pid, *region) == {at}
                        launder()
                        continue
                    if PROFILE and not nm:
                        import cProfile
                        import pstats

                        prof = cProfile.Profile()
                        rep = prof.runcall(migrate, target, topo, MoveOptions(1 - at, **opts), None, None,
                                           here, allowed)
                        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
                    else:
                        rep = migrate(target, topo, MoveOptions(1 - at, **opts), None, None, here, allowed)
                    nm.append(time.perf_counter() - t)
                    print(f"  numamove {at}->{1 - at}: {nm[-1]:.2f} s (move_pages phase {rep.seconds:.2f} s, "
                          f"longest call {rep.max_call_ms:.0f} ms); "
                          f"migratepages so far {[round(x, 2) for x in mp]}")
                    at = 1 - at
                    ok &= nodes_of(w.pid, *region) == {at} and not rep.failed
                    launder()
            intact, _ = w.check()
            ok &= intact
            a, b = statistics.median(mp), statistics.median(nm)
            mib = parse_size(SIZE) / 2**20
            threads = rep.plans[0].threads if rep.plans else 0
            print(f"{kind:>4} pages, {mib:.0f} MiB: migratepages median {a:.2f} s; numamove median {b:.2f} s "
                  f"({threads} threads, {rep.batches} move_pages calls in the last run): "
                  f"numamove {a / b:.2f}x faster; data intact: {intact}")
    return ok


HOLDER = ("import mmap, os, sys, time\n"
          "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
          "m = mmap.mmap(fd, os.fstat(fd).st_size, mmap.MAP_SHARED, mmap.PROT_READ)\n"
          "for off in range(0, len(m), 4096):\n"
          "    _ = m[off]\n"
          "print('ready', flush=True)\n"
          "sys.stdin.read()\n")


def _cli(*args: str) -> float:
    t = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "numamove"), *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def bench_file(topo: Any, here: int, allowed: frozenset[int], launder: Launderer) -> bool:
    """A SIZE file in /dev/shm on node 0, moved to node 1 by whole processes, RUNS rounds in rotating order:
    `numactl --membind=1 cp` against `numamove file --copy --output`, and the kernel's own path for a
    shared file (a process maps it, `migratepages` as root moves its shared pages) against `numamove
    file` in place. Each in-place move is undone untimed before the next, and between any two timed runs
    the nodes are laundered and each tool warmed (untimed, as in the proc arms). numamove's start-up is
    a whole `numamove file` run with nothing to move (a one-page file already on node 0): the interpreter,
    the file path's imports and a run, as the proc benchmark's is a `--dry-run` (`numamove --version`
    would load click, which neither path imports)."""
    from numamove.files import move_file

    path = "/dev/shm/numamove-bench"
    tiny = path + ".tiny"
    mib = parse_size(SIZE) >> 20
    subprocess.run(["numactl", "--membind=0", sys.executable, "-c",
                    f"f = open('{path}', 'wb')\nb = bytes(range(256)) * 4096\n"
                    f"for _ in range({mib}): f.write(b)\n"
                    f"open('{tiny}', 'wb').write(b[:4096])\n"], check=True)
    times: dict[str, list[float]] = {"cp": [], "copy": [], "migratepages": [], "inplace": [], "startup": []}
    ok = True
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
    try:
        arms = list(times)
        for r in range(RUNS):
            for arm in arms[r % len(arms):] + arms[:r % len(arms)]:
                t = time.perf_counter()
                if arm == "cp":
                    subprocess.run(["numactl", "--membind=1", "cp", path, path + ".out"], check=True)
                elif arm == "copy":
                    _cli("file", path, "--copy", "--output", path + ".out", "--to", "1", "-q")
                elif arm == "migratepages":
                    subprocess.run(["migratepages", str(holder.pid), "0", "1"], check=True)
                elif arm == "startup":  # the interpreter, the file path's imports, a run moving nothing
                    _cli("file", tiny, "--to", "0", "-q")
                else:
                    _cli("file", path, "--to", "1", "-q")
                times[arm].append(time.perf_counter() - t)
                if arm == "startup":
                    launder()
                    continue
                if arm in ("cp", "copy"):
                    c = _native_file_nodes(path + ".out")
                    ok &= c == {1}
                    os.unlink(path + ".out")
                else:
                    ok &= _native_file_nodes(path) == {1}
                    move_file(path, topo, MoveOptions(0), here, allowed)  # back, untimed
                launder()
    finally:
        holder.kill()
        holder.wait()
    os.unlink(path)
    os.unlink(tiny)
    m = {k: statistics.median(v) for k, v in times.items()}
    start = m["startup"]
    print(f"file {mib} MiB on /dev/shm, node 0 -> 1, whole processes, medians of {RUNS}: "
          f"numactl --membind=1 cp {m['cp']:.2f} s, numamove file --copy --output {m['copy']:.2f} s "
          f"({m['cp'] / m['copy']:.2f}x cp); migratepages of a process mapping it {m['migratepages']:.2f} s, "
          f"numamove file in place {m['inplace']:.2f} s ({m['migratepages'] / m['inplace']:.2f}x migratepages)")
    print(f"  wall minus numamove's start-up (a `numamove file` run moving nothing, median {start:.2f} s): --copy "
          f"{m['cp'] / max(m['copy'] - start, 1e-3):.2f}x cp, in place "
          f"{m['migratepages'] / max(m['inplace'] - start, 1e-3):.2f}x migratepages")
    return ok


def _native_file_nodes(path: str) -> set[int]:
    """Nodes of a tmpfs file's pages: mapped and read here, then asked of the kernel."""
    import mmap

    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        m = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
        for off in range(0, size, 4096):
            _ = m[off]
        keep, addr, _ = _native.buffer_address(m)
        nodes = set(_native.page_nodes(addr, size))
        del keep
        m.close()
        return nodes
    finally:
        os.close(fd)


if __name__ == "__main__":
    sys.exit(main())
