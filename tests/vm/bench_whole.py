"""Whole runs: the numamove CLI against the migratepages CLI, each timed as a process, in a guest.

Run by `make bench` through `tests/vm/harness.py bench-whole` in two guest shapes: one CPU a node
(the CI guest's shape, with 1.5 GiB a node), and node 0 with two vCPUs beside a memory-only node 1.
For each page size, one workload (the sample workload, reading its memory all along) is moved back
and forth between the nodes by `migratepages PID FROM TO` and by `numamove proc PID --to N`, in ABBA
order so that each tool moves both ways equally often; every move is checked page by page afterwards
(untimed), each node's recently freed pages are used once before the next move and each tool runs once
doing nothing (untimed: see LAUNDER and warm_up in tests/workload_helper.py), and the workload checks
its own bytes at the end.

With --threads 1,2,4,8 each round runs one numamove arm per thread count (`--threads N`; the default
is one arm of `--threads auto`, the heuristics' choice), the arms and migratepages in an order reversed
every other round and rotated every two, and each arm is reported against migratepages: for more
cores than the development VM has (a KVM guest of two 8-vCPU nodes, issue #10's item 7).

Each round also times `numamove proc 1 --to 0 --dry-run -q` (PID 1 is tiny): numamove's
start-up, as a user meets it, including the interpreter. Printed per page size, as medians:
end to end (whole processes), numamove's wall minus that start-up, and numamove's own move
phase (from its --json timings), each against migratepages' whole run. Times under TCG are
for ratios only: numamove's start-up there is ~25x the host's (~0.34 s on the development VM).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from workload_helper import Launderer, Workload  # noqa: E402

from numamove import _native  # noqa: E402
from numamove.nodelist import parse_size  # noqa: E402
from numamove.topology import read_topology  # noqa: E402

NUMAMOVE = str(Path(sys.executable).parent / "numamove")
VERBOSE = False


def timed(cmd: list[str]) -> tuple[float, str]:
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (rc={p.returncode}): {p.stderr.strip()}")
    return wall, p.stdout


def on_node(pid: int, region: tuple[int, int], page: int) -> set[int]:
    return set(_native.page_nodes(region[0], region[1], page, pid))


def arm_order(arms: list[str], r: int) -> list[str]:
    """Round r's order, reversed on odd rounds (two arms: ABBA, as ever); more arms are also rotated by one
    every two rounds, so that each arm comes at each place."""
    k = (r // 2) % len(arms) if len(arms) > 2 else 0
    order = arms[k:] + arms[:k]
    return order[::-1] if r % 2 else order


def bench_kind(kind: str, size: str, runs: int, threads: list[str]) -> tuple[dict[str, dict[str, float]], bool]:
    args = ["--size", "0", "--huge", size] if kind == "THP" else ["--size", size]
    page = 2 << 20 if kind == "THP" else 4096
    arms = ["mp"] + [f"nm{t}" for t in threads]
    wall: dict[str, list[float]] = {a: [] for a in arms}
    move: dict[str, list[float]] = {a: [] for a in arms[1:]}
    booked: dict[str, list[float]] = {a: [] for a in arms[1:]}
    inner: dict[str, list[float]] = {a: [] for a in arms[1:]}  # numamove's own start-up, from its import
    used: dict[str, set[int]] = {a: set() for a in arms[1:]}  # the threads numamove's plans used
    startup: list[float] = []
    ok = True
    with Launderer(read_topology().ids, [NUMAMOVE]) as launder, Workload(*args, "--node", "0") as w:
        region = w.huge if kind == "THP" else w.anon
        at = 0
        for r in range(runs):
            for arm in arm_order(arms, r):
                if arm == "mp":
                    t, _ = timed(["migratepages", str(w.pid), str(at), str(1 - at)])
                    wall[arm].append(t)
                    if VERBOSE:
                        print(f"  migratepages {at}->{1 - at}: wall {t:.3f} s")
                else:
                    t, out = timed([NUMAMOVE, "proc", str(w.pid), "--to", str(1 - at), "--threads", arm[2:],
                                    "-q", "--json"])
                    wall[arm].append(t)
                    doc = json.loads(out)
                    move[arm].append(doc["timings"]["move_seconds"])
                    booked[arm].append(doc["timings"]["bookkeeping_seconds"])
                    inner[arm].append(doc["timings"]["startup_seconds"])
                    p = doc["processes"][0]
                    ok &= not p["failed"]
                    used[arm].update(pl["threads"] for pl in p["plans"])
                    if VERBOSE:
                        print(f"  numamove --threads {arm[2:]} {at}->{1 - at}: wall {t:.3f} s = start-up "
                              f"{inner[arm][-1]:.3f} (after import) + bookkeeping {booked[arm][-1]:.3f} + move "
                              f"{move[arm][-1]:.3f} + rest; "
                              f"{p['move_pages_calls']} calls, longest {p['max_call_ms']:.0f} ms, "
                              f"{p['moved']['pages']} pages moved ({p['huge_pages_moved']} huge), "
                              f"{p['pages_located_by_query']} located by query, threads "
                              f"{[pl['threads'] for pl in p['plans']]} on {[pl['cpus'] for pl in p['plans']]}, "
                              f"failed {p['failed']}, notes {p['notes']}")
                at = 1 - at
                where = on_node(w.pid, region, page)
                if where != {at}:
                    print(f"  {kind}: after {arm} the region is on {where}, not {{{at}}}")
                    ok = False
                launder()
            startup.append(timed([NUMAMOVE, "proc", "1", "--to", "0", "--dry-run", "-q"])[0])
        intact, reads = w.check()
        ok &= intact
    s0 = statistics.median(startup)
    mp = statistics.median(wall["mp"])
    out: dict[str, dict[str, float]] = {"mp": {"wall": mp}}
    for arm in arms[1:]:
        m = {"wall": statistics.median(wall[arm]), "startup": s0, "move": statistics.median(move[arm]),
             "booked": statistics.median(booked[arm]), "inner": statistics.median(inner[arm]),
             "minus": statistics.median([x - s0 for x in wall[arm]])}
        out[arm] = m
        label = "numamove" if threads == ["auto"] else f"numamove --threads {arm[2:]} (ran {sorted(used[arm])})"
        print(f"{kind} {size}: migratepages {mp:.3f} s | {label} {m['wall']:.3f} s, start-up {s0:.3f} s, "
              f"wall minus start-up {m['minus']:.3f} s, move phase {m['move']:.3f} s "
              f"(numamove's own split: start-up after import {m['inner']:.3f} s, bookkeeping {m['booked']:.3f} s) | "
              f"numamove vs migratepages: end to end {mp / m['wall']:.2f}x, "
              f"wall minus start-up {mp / m['minus']:.2f}x, move phase {mp / m['move']:.2f}x; "
              f"data intact: {intact} ({reads} read passes), {runs} rounds, medians")
    return out, ok


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--thp", default="256M", help="THP workload size")
    ap.add_argument("--small", default="128M", help="4 KiB-page workload size")
    ap.add_argument("--runs", type=int, default=8, help="ABBA rounds (each tool moves once a round)")
    ap.add_argument("--kinds", default="THP,4KiB", help="which workloads: THP, 4KiB or both")
    ap.add_argument("--threads", default="auto",
                    help="numamove arms: `auto` (the heuristics' choice) or thread counts, e.g. 1,2,4,8")
    ap.add_argument("-v", "--verbose", action="store_true", help="print numamove's own report of every move")
    ns = ap.parse_args()
    threads = ns.threads.split(",")
    for t in threads:
        if t != "auto" and not (t.isdigit() and int(t) > 0):
            ap.error(f"--threads: {t!r} is not auto or a positive count")
    global VERBOSE
    VERBOSE = ns.verbose
    topo = read_topology()
    print(f"guest: {os.cpu_count()} vCPUs, nodes {topo.ids}, CPUs per node "
          f"{[len(topo.nodes[n].cpus) for n in topo.ids]}; kernel {os.uname().release}")
    parse_size(ns.thp)
    parse_size(ns.small)
    ok = True
    for kind, size in (("THP", ns.thp), ("4KiB", ns.small)):
        if kind not in ns.kinds.split(","):
            continue
        _, good = bench_kind(kind, size, ns.runs, threads)
        ok &= good
    print("verified: every page on the destination after every move" if ok else "VERIFICATION FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
