"""A container's move: the kernel's cpuset.mems write against `numamove proc --cgroup --set-mems`, in a guest.

Run by `make bench` through `tests/vm/harness.py bench-cgroup`, in the bench guest (node 0 with two
vCPUs, node 1 memory-only). Each round makes a cgroup v2 group with cpuset.mems=0 and starts three
sample workloads in it (the total split between them; each reads its memory all along and measures
the longest gap between two of its reads), then moves the group to node 1 by one of:

  (a) kernel:   writing 1 to cpuset.mems (the write migrates every task, one after another, on one
                kernel thread, and returns when done)
  (b) numamove: `numamove proc --cgroup G --to 1 --set-mems --max-pause 20` as a whole process

alternating the arms (ABBA), a fresh group and fresh workloads for every move. Printed per page size,
as medians: total time (the write; numamove's whole process), numamove's total minus its start-up
(`numamove proc 1 --to 0 --dry-run`), and the longest pause any workload saw. After every move every
page is checked to be on node 1 and every workload checks its bytes (untimed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from workload_helper import Workload  # noqa: E402

from numamove import _native  # noqa: E402
from numamove.cgroups import remove_group  # noqa: E402
from numamove.nodelist import parse_size  # noqa: E402

NUMAMOVE = str(Path(sys.executable).parent / "numamove")
ROOT = "/sys/fs/cgroup"
VERBOSE = False
MAX_PAUSE = ["--max-pause", "20"]


def write(path: str, value: str) -> float:
    t0 = time.perf_counter()
    with open(path, "w") as fh:
        fh.write(value)
    return time.perf_counter() - t0


def one_move(arm: str, kind: str, each: int, count: int) -> tuple[float, float, float, bool]:
    """(total seconds, the hand-over write's seconds, longest pause in ms, verified) for one fresh group."""
    rel = f"/nmbench-{uuid.uuid4().hex[:8]}"
    path = ROOT + rel
    os.mkdir(path)
    write(f"{path}/cpuset.mems", "0")
    size = f"{each >> 20}M"
    args = ["--size", "0", "--huge", size] if kind == "THP" else ["--size", size]
    page = 2 << 20 if kind == "THP" else 4096
    loads = []
    try:
        for _ in range(count):
            loads.append(Workload(*args, cgroup=path))
        regions = [w.huge if kind == "THP" else w.anon for w in loads]
        ok = all(set(_native.page_nodes(r[0], r[1], page, w.pid)) == {0} for w, r in zip(loads, regions))
        time.sleep(0.5)
        for w in loads:
            w.pause_ms()  # from here on
        if arm == "kernel":
            total = write(f"{path}/cpuset.mems", "1")
            handover = total
        else:
            t0 = time.perf_counter()
            p = subprocess.run([NUMAMOVE, "proc", "--cgroup", rel, "--to", "1", "--set-mems", *MAX_PAUSE,
                                "-q", "--json"], capture_output=True, text=True)
            total = time.perf_counter() - t0
            if p.returncode != 0:
                raise SystemExit(f"numamove failed (rc={p.returncode}): {p.stderr.strip()}")
            doc = json.loads(p.stdout)
            handover = doc["cgroup"]["cpuset"]["write_seconds"]["."]
            if VERBOSE:
                t = doc["timings"]
                print(f"    numamove: start-up after import {t['startup_seconds']:.3f} s, bookkeeping "
                      f"{t['bookkeeping_seconds']:.3f} s, move {t['move_seconds']:.3f} s, total after import "
                      f"{t['total_seconds']:.3f} s; hand-over write {handover:.3f} s")
                for q in doc["processes"]:
                    print(f"    PID {q['pid']}: {q['moved']['bytes'] >> 20} MiB in {q['seconds']:.3f} s, "
                          f"{q['move_pages_calls']} calls, longest {q['max_call_ms']:.0f} ms, bookkeeping "
                          f"{q['bookkeeping_seconds']:.3f} s, threads {[pl['threads'] for pl in q['plans']]}, "
                          f"notes {q['notes']}")
        pause = max(w.pause_ms() for w in loads)
        for w, r in zip(loads, regions):
            where = set(_native.page_nodes(r[0], r[1], page, w.pid))
            if where != {1}:
                print(f"  {arm} {kind}: PID {w.pid} is on {where} after the move, not {{1}}")
                ok = False
            ok &= w.check()[0]
        return total, handover, pause, ok
    finally:
        for w in loads:
            w.close()
        remove_group(path)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--total", default="504M", help="memory of the three workloads together (default 504M)")
    ap.add_argument("--workloads", type=int, default=3)
    ap.add_argument("--runs", type=int, default=4, help="ABBA rounds: each arm moves a fresh group once a round")
    ap.add_argument("--kinds", default="THP,4KiB")
    ap.add_argument("--max-pause", default="20", help="numamove's --max-pause (ms); 'none' for none")
    ap.add_argument("-v", "--verbose", action="store_true", help="print numamove's own split of every move")
    ns = ap.parse_args()
    global VERBOSE, MAX_PAUSE
    VERBOSE = ns.verbose
    MAX_PAUSE = [] if ns.max_pause == "none" else ["--max-pause", ns.max_pause]
    each = parse_size(ns.total) // ns.workloads // (2 << 20) * (2 << 20)
    print(f"guest: {os.cpu_count()} vCPUs, kernel {os.uname().release}; a group of {ns.workloads} workloads, "
          f"{each >> 20} MiB each, moved from node 0 to node 1; {ns.runs} rounds, ABBA, medians")
    startup = []
    ok = True
    for kind in ns.kinds.split(","):
        res: dict[str, list[tuple[float, float, float]]] = {"kernel": [], "numamove": []}
        for r in range(ns.runs):
            for arm in (("kernel", "numamove") if r % 2 == 0 else ("numamove", "kernel")):
                total, handover, pause, good = one_move(arm, kind, each, ns.workloads)
                ok &= good
                res[arm].append((total, handover, pause))
                print(f"  {kind} round {r + 1} {arm}: total {total:.3f} s, hand-over write {handover * 1e3:.1f} ms, "
                      f"longest pause {pause:.0f} ms", flush=True)
            t0 = time.perf_counter()
            subprocess.run([NUMAMOVE, "proc", "1", "--to", "0", "--dry-run", "-q"], capture_output=True)
            startup.append(time.perf_counter() - t0)
        med = {arm: [statistics.median(x[i] for x in v) for i in range(3)] for arm, v in res.items()}
        s = statistics.median(startup)
        k, n = med["kernel"], med["numamove"]
        print(f"{kind}: (a) cpuset.mems write {k[0]:.3f} s, longest pause {k[2]:.0f} ms | (b) numamove "
              f"--set-mems --max-pause 20: {n[0]:.3f} s whole process ({n[0] - s:.3f} s minus its start-up "
              f"{s:.3f} s; its hand-over write {n[1] * 1e3:.1f} ms), longest pause {n[2]:.0f} ms | "
              f"(b) vs (a): total {k[0] / n[0]:.2f}x faster, minus start-up {k[0] / (n[0] - s):.2f}x; "
              f"longest pause {n[2] / k[2]:.2f} of (a)'s", flush=True)
    print("verified: every page on node 1 and every workload intact after every move" if ok
          else "VERIFICATION FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
