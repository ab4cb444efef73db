"""policy auto against fixed push and fixed pull, inside the two-node guest (one CPU per node).

Run by `make bench` through `tests/vm/harness.py bench-auto`. Two scenarios:

* idle: nothing else runs; push and pull differ only by noise under TCG;
* node 0 loaded: a busy loop at nice -5 on node 0's CPU, so a thread pinned there gets about
  a quarter of it: 0 -> 1 should be pulled and 1 -> 0 pushed.

In each, `numamove calibrate` (the library call) measures both pairs, then for each pair and
engine (copy: the pinned memcpy engine; move: move_pages batches of 4 KiB pages) push, pull and
auto are timed RUNS times in rotating order with the very code bench and calibrate use
(bench.CopyTrial, bench.move_trial), every copy verified. Reported: medians, and auto's
throughput as a ratio to each fixed policy. Times under TCG emulation are for ratios only.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from workload_helper import BusyLoops  # noqa: E402

from numamove.bench import CopyTrial, move_trial  # noqa: E402
from numamove.calibrate import run_calibration, write  # noqa: E402
from numamove.calibration import load  # noqa: E402
from numamove.planner import BASE_PAGE, HUGE_PAGE, make_plan  # noqa: E402
from numamove.topology import current_node, read_topology  # noqa: E402

POLICIES = ("push", "pull", "auto")


def scenario(name: str, copy_size: int, move_size: int, runs: int, budget: float) -> list[str]:
    topo = read_topology()
    here = current_node(topo)
    allowed = frozenset(os.sched_getaffinity(0))
    pairs = [(0, 1), (1, 0)]
    cal = run_calibration(topo, pairs, budget=budget, size=copy_size, repeats=3)
    path = Path(tempfile.mkdtemp()) / "calibration.json"
    write(cal, path)
    loaded = load(topo, path)
    assert loaded.calibration is not None, loaded.warning
    lines = [f"scenario: {name} (calibrated in {cal.elapsed:.1f} s, budget {budget:g} s, "
             f"complete: {cal.complete})"]
    for src, dst in pairs:
        for engine, size in (("copy", copy_size), ("move", move_size)):
            item = HUGE_PAGE if engine == "copy" else BASE_PAGE
            plans = {p: make_plan(topo, src, dst, -(-size // item), size // BASE_PAGE, None, p, here, allowed,
                                  loaded, engine) for p in POLICIES}
            secs: dict[str, list[float]] = {p: [] for p in POLICIES}
            trial = CopyTrial(size, src, dst, huge=True) if engine == "copy" else None
            try:
                for r in range(runs):
                    order = POLICIES[r % 3:] + POLICIES[:r % 3]
                    for p in order:
                        if trial is not None:
                            _, rep, _, _ = trial.run(functools.partial(plans.__getitem__, p))
                            secs[p].append(rep.wall_ns / 1e9)
                        else:
                            secs[p].append(move_trial(size, plans[p]) / 1e9)
            finally:
                if trial is not None:
                    trial.close()
            gbps = {p: size / statistics.median(secs[p]) / 1e9 for p in POLICIES}
            a = plans["auto"]
            lines.append(
                f"  node {src} -> node {dst} {engine:<4} {size >> 20:>3} MiB: push {gbps['push']:.3f} GB/s, "
                f"pull {gbps['pull']:.3f} GB/s, auto ({a.direction}, {a.threads} thread(s)) {gbps['auto']:.3f} GB/s"
                f" = {gbps['auto'] / gbps['push']:.2f}x push, {gbps['auto'] / gbps['pull']:.2f}x pull")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--copy-size", type=int, default=32, help="MiB per copy")
    ap.add_argument("--move-size", type=int, default=8, help="MiB per move")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--budget", type=float, default=30)
    ap.add_argument("--nice", type=int, default=-5, help="the busy loop's nice value in the loaded scenario")
    ns = ap.parse_args()
    topo = read_topology()
    print(f"guest: {os.cpu_count()} CPUs, {len(topo.ids)} nodes "
          f"({', '.join(f'node {n}: CPUs {list(topo.nodes[n].cpus)}' for n in topo.ids)}); "
          f"median of {ns.runs}, push/pull/auto in rotating order", flush=True)
    cs, ms = ns.copy_size << 20, ns.move_size << 20
    for line in scenario("idle", cs, ms, ns.runs, ns.budget):
        print(line, flush=True)
    with BusyLoops(topo.node(0).cpus, ns.nice):
        for line in scenario(f"node 0 loaded (busy loop at nice {ns.nice} on CPU(s) "
                             f"{list(topo.node(0).cpus)})", cs, ms, ns.runs, ns.budget):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
