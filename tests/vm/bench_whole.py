"""Whole runs: the numamove CLI against the migratepages CLI, each timed as a process, in a guest.

Run by `make bench` through `tests/vm/harness.py bench-whole` in two guest shapes: one CPU a node
(the CI guest's shape, with 1.5 GiB a node), and node 0 with two vCPUs beside a memory-only node 1.
For each page size, one workload (the sample workload, reading its memory all along) is moved back
and forth between the nodes by `migratepages PID FROM TO` and by `numamove proc PID --to N`, in ABBA
order so that each tool moves both ways equally often; every move is checked page by page afterwards
(untimed), each node's recently freed pages are used once before the next move and each tool runs once
doing nothing (untimed: see LAUNDER and warm_up in tests/workload_helper.py), and the workload checks
its own bytes at the end.

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


def bench_kind(kind: str, size: str, runs: int) -> tuple[dict[str, float], bool]:
    args = ["--size", "0", "--huge", size] if kind == "THP" else ["--size", size]
    page = 2 << 20 if kind == "THP" else 4096
    mp: list[float] = []
    nm: list[float] = []
    startup: list[float] = []
    move: list[float] = []
    booked: list[float] = []
    inner: list[float] = []  # numamove's own start-up, from its import (the interpreter's comes before)
    ok = True
    with Launderer(read_topology().ids, [NUMAMOVE]) as launder, Workload(*args, "--node", "0") as w:
        region = w.huge if kind == "THP" else w.anon
        at = 0
        for r in range(runs):
            for tool in (("mp", "nm") if r % 2 == 0 else ("nm", "mp")):
                if tool == "mp":
                    wall, _ = timed(["migratepages", str(w.pid), str(at), str(1 - at)])
                    mp.append(wall)
                    if VERBOSE:
                        print(f"  migratepages {at}->{1 - at}: wall {wall:.3f} s")
                else:
                    wall, out = timed([NUMAMOVE, "proc", str(w.pid), "--to", str(1 - at), "-q", "--json"])
                    nm.append(wall)
                    doc = json.loads(out)
                    move.append(doc["timings"]["move_seconds"])
                    booked.append(doc["timings"]["bookkeeping_seconds"])
                    inner.append(doc["timings"]["startup_seconds"])
                    p = doc["processes"][0]
                    ok &= not p["failed"]
                    if VERBOSE:
                        print(f"  numamove {at}->{1 - at}: wall {wall:.3f} s = start-up {inner[-1]:.3f} (after import) "
                              f"+ bookkeeping {booked[-1]:.3f} + move {move[-1]:.3f} + rest; "
                              f"{p['move_pages_calls']} calls, longest {p['max_call_ms']:.0f} ms, "
                              f"{p['moved']['pages']} pages moved ({p['huge_pages_moved']} huge), "
                              f"{p['pages_located_by_query']} located by query, threads "
                              f"{[pl['threads'] for pl in p['plans']]} on {[pl['cpus'] for pl in p['plans']]}, "
                              f"failed {p['failed']}, notes {p['notes']}")
                at = 1 - at
                where = on_node(w.pid, region, page)
                if where != {at}:
                    print(f"  {kind}: after {tool} the region is on {where}, not {{{at}}}")
                    ok = False
                launder()
            startup.append(timed([NUMAMOVE, "proc", "1", "--to", "0", "--dry-run", "-q"])[0])
        intact, reads = w.check()
        ok &= intact
    m = {k: statistics.median(v) for k, v in (("mp", mp), ("nm", nm), ("startup", startup), ("move", move),
                                              ("booked", booked), ("inner", inner))}
    m["nm_minus_startup"] = statistics.median([x - m["startup"] for x in nm])
    print(f"{kind} {size}: migratepages {m['mp']:.3f} s | numamove {m['nm']:.3f} s, start-up {m['startup']:.3f} s, "
          f"wall minus start-up {m['nm_minus_startup']:.3f} s, move phase {m['move']:.3f} s "
          f"(numamove's own split: start-up after import {m['inner']:.3f} s, bookkeeping {m['booked']:.3f} s) | "
          f"numamove vs migratepages: end to end {m['mp'] / m['nm']:.2f}x, "
          f"wall minus start-up {m['mp'] / m['nm_minus_startup']:.2f}x, move phase {m['mp'] / m['move']:.2f}x; "
          f"data intact: {intact} ({reads} read passes), {runs} rounds, medians")
    return m, ok


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--thp", default="256M", help="THP workload size")
    ap.add_argument("--small", default="128M", help="4 KiB-page workload size")
    ap.add_argument("--runs", type=int, default=8, help="ABBA rounds (each tool moves once a round)")
    ap.add_argument("--kinds", default="THP,4KiB", help="which workloads: THP, 4KiB or both")
    ap.add_argument("-v", "--verbose", action="store_true", help="print numamove's own report of every move")
    ns = ap.parse_args()
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
        _, good = bench_kind(kind, size, ns.runs)
        ok &= good
    print("verified: every page on the destination after every move" if ok else "VERIFICATION FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
