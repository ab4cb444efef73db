"""`numamove bench`: the engine against a single-threaded memcpy of the same regions.

Both regions are real anonymous mappings bound to their nodes and faulted in
before timing, so only the copy is measured.  Every configuration is run
``repeats`` times, interleaved with the baseline, and the medians are compared:
these machines are shared and noisy, so only ratios from one run are reported.
"""

from __future__ import annotations

import functools
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import _native
from .calibration import Loaded
from .engine import run_plan
from .errors import InvalidNodeError, UsageError, VerificationError
from .nodelist import format_bytes, format_list
from .planner import BASE_PAGE, HUGE_PAGE, Plan, base_pages_of, make_plan
from .topology import Topology, current_node


@dataclass
class Measurement:
    plan: Plan
    policy: str
    limit: int | None  # None: auto
    engine_ns: list[int] = field(default_factory=list)
    call_ns: list[int] = field(default_factory=list)
    fallback: str | None = None
    pin_errors: list[str] = field(default_factory=list)
    cpus_seen: set[int] = field(default_factory=set)

    def gbps(self, nbytes: int) -> float:
        return nbytes / statistics.median(self.engine_ns)

    def overhead(self) -> float:
        """Python planning and dispatch as a fraction of the copy's time (medians)."""
        eng = statistics.median(self.engine_ns)
        return max(0.0, statistics.median(self.call_ns) - eng) / eng


@dataclass
class BenchResult:
    src: int
    dst: int
    size: int
    item_size: int
    repeats: int
    machine: dict[str, Any]
    baseline_ns: list[int]
    runs: list[Measurement]
    notes: list[str]
    calibration: str | None = None  # what policy/threads auto followed, when a run used auto

    @property
    def baseline_gbps(self) -> float:
        return self.size / statistics.median(self.baseline_ns)

    def to_json(self) -> dict[str, Any]:
        return {
            "src": self.src,
            "dst": self.dst,
            "size_bytes": self.size,
            "item_bytes": self.item_size,
            "repeats": self.repeats,
            "machine": self.machine,
            "baseline": {"what": "single-threaded memcpy of the same regions",
                         "gbps": self.baseline_gbps,
                         "seconds": [n / 1e9 for n in self.baseline_ns]},
            "runs": [
                {"policy": m.policy, "limit": m.limit if m.limit is not None else "auto", "threads": m.plan.threads,
                 "direction": m.plan.direction, "cpu_node": m.plan.cpu_node,
                 "cpus": list(m.plan.cpus), "cpus_seen": sorted(m.cpus_seen),
                 "gbps": m.gbps(self.size),
                 "ratio_to_baseline": m.gbps(self.size) / self.baseline_gbps,
                 "dispatch_overhead": m.overhead(),
                 "seconds": [n / 1e9 for n in m.engine_ns],
                 "fallback": m.fallback, "pin_errors": m.pin_errors,
                 "plan": m.plan.to_json()}
                for m in self.runs
            ],
            "verified": True,
            "calibration": self.calibration,
            "notes": self.notes,
        }


def machine_info(topo: Topology) -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "nodes": len(topo.ids), "kernel": os.uname().release}


def default_pair(topo: Topology) -> tuple[int, int, list[str]]:
    a, b = topo.most_distant_pair()
    notes = []
    if a == b:
        notes.append(f"this machine has one memory node: copying node {a} to node {a}")
    return a, b, notes


def plan_bench(topo: Topology, src: int, dst: int, size: int, limits: list[int | None],
               policies: list[str], item_size: int, here: int,
               allowed: frozenset[int], calibration: Loaded | None = None) -> list[tuple[str, int | None, Plan]]:
    """The plans bench would run, validated (nodes must have memory)."""
    topo.require(src, "--from", memory=True)
    topo.require(dst, "--to", memory=True)
    if size < BASE_PAGE:
        raise UsageError(f"--size must be at least {BASE_PAGE} bytes")
    for n in {src, dst}:
        need = size * (2 if src == dst else 1)
        free = topo.node(n).mem_free
        if free and need > free:
            raise InvalidNodeError(f"node {n} has {format_bytes(free)} free, the benchmark needs "
                                   f"{format_bytes(need)} there: use a smaller --size")
    items = -(-size // item_size)
    pages = base_pages_of([size])
    return [(p, t, make_plan(topo, src, dst, items, pages, t, p, here, allowed, calibration))
            for p in policies for t in limits]


class CopyTrial:
    """Two regions bound to src and dst, the source patterned: times one plan's copy, verified.

    The one measuring path of `numamove bench` and of `numamove calibrate`'s copy engine.
    """

    def __init__(self, size: int, src: int, dst: int, huge: bool) -> None:
        self.size = size
        self.item_size = HUGE_PAGE if huge else BASE_PAGE
        self.s = _native.Region(size, src, huge)
        try:
            self.d = _native.Region(size, dst, huge)
        except BaseException:
            self.s.close()
            raise
        _fill_pattern(self.s)

    def baseline(self) -> int:
        """Nanoseconds of a single-threaded memcpy of the same regions on this thread."""
        _native.fill(self.d.addr, 0, self.size)
        ns = _native.memcpy_ns(self.d.addr, self.s.addr, self.size)
        _verify(self.s, self.d, "baseline memcpy")
        return ns

    def run(self, make: Callable[[], Plan]) -> tuple[Plan, _native.CopyReport, str | None, int]:
        """Plan (make()) and copy as planned, EAGAIN retry included, then check every byte.

        Returns the plan, the engine's report, any fallback, and the nanoseconds of planning,
        building items and the copy: what one numamove.copy() call pays.
        """
        _native.fill(self.d.addr, 0, self.size)
        t0 = time.perf_counter_ns()
        plan = make()
        report, fallback = run_plan(plan, _native.Items.ranges(self.d.addr, self.s.addr, self.size,
                                                               self.item_size))
        call_ns = time.perf_counter_ns() - t0
        _verify(self.s, self.d, f"{plan.policy} with {plan.threads} thread(s) on CPU(s) {format_list(plan.cpus)}")
        return plan, report, fallback, call_ns

    def close(self) -> None:
        self.s.close()
        self.d.close()

    def __enter__(self) -> CopyTrial:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def move_trial(size: int, plan: Plan) -> int:
    """Nanoseconds to move_pages a fresh size-byte region of 4 KiB pages from plan.src to plan.dst
    on the plan's pinned threads (the path of `numamove proc`); the calibrate move engine's one
    measuring path.

    Raises:
        VerificationError: a page is not on the destination afterwards, or its bytes changed.
    """
    from .pagemove import MoveOptions, _batch_size

    with _native.Region(size, plan.src, base_pages=True) as r:
        n = size // BASE_PAGE
        _native.fill(r.addr, 0x5A, size)
        pages = _native.page_list([r.addr + i * BASE_PAGE for i in range(n)])
        batch = _batch_size(n, plan.threads, MoveOptions(plan.dst), None)  # as numamove proc sizes them
        res = _native.move(0, pages, n, plan.dst, _native.MPOL_MF_MOVE, plan.cpus, plan.threads, batch,
                           _native.raw_new("int[]", n))
        where = _native.query_nodes(0, pages, n)
        off = [i for i, w in enumerate(where) if w != plan.dst]
        if off:
            raise VerificationError(f"move_pages left {len(off)} of {n} pages off node {plan.dst} "
                                    f"(first: {where[off[0]]})")
        with _native.Region(size, plan.dst) as ref:
            _native.fill(ref.addr, 0x5A, size)
            if _native.compare(r.addr, ref.addr, size) != -1:
                raise VerificationError("moved pages' bytes differ from what was written")
        return res.wall_ns


def run_bench(topo: Topology, src: int, dst: int, size: int, limits: list[int | None],
              policies: list[str], repeats: int = 3, huge: bool = True,
              notes: list[str] | None = None, calibration: Loaded | None = None) -> BenchResult:
    """Measure the engine for each policy and thread limit against memcpy.

    Raises:
        VerificationError: a copy's bytes differ from the source.
        InvalidNodeError, UsageError: bad nodes or sizes.
        NativeError: the regions could not be mapped.
    """
    item_size = HUGE_PAGE if huge else BASE_PAGE
    here = current_node(topo)
    allowed = frozenset(os.sched_getaffinity(0))
    plans = plan_bench(topo, src, dst, size, limits, policies, item_size, here, allowed, calibration)
    if repeats < 1:
        raise UsageError("--repeats must be at least 1")
    runs = [Measurement(p, pol, lim) for pol, lim, p in plans]
    baseline: list[int] = []
    with CopyTrial(size, src, dst, huge) as trial:
        pages = base_pages_of([size])

        def one_baseline() -> None:
            baseline.append(trial.baseline())

        def one_run(m: Measurement) -> None:
            # what numamove.copy() pays per call: planning, building items, dispatch
            _, report, fallback, call_ns = trial.run(functools.partial(
                make_plan, topo, src, dst, -(-size // item_size), pages, m.limit, m.policy,
                here, allowed, calibration))
            m.call_ns.append(call_ns)
            m.engine_ns.append(report.wall_ns)
            m.fallback = m.fallback or fallback
            for i, w in enumerate(report.workers):
                m.cpus_seen.update({w.cpu_at_start, w.cpu_at_end})
                if w.pin_err:
                    m.pin_errors.append(f"worker {i} not pinned to CPU {w.cpu}: {os.strerror(w.pin_err)}")

        steps = [one_baseline] + [functools.partial(one_run, m) for m in runs]
        for r in range(repeats):
            # rotate the order each round so no configuration always runs first or last
            k = r % len(steps)
            for step in steps[k:] + steps[:k]:
                step()
    uses_auto = any(m.policy == "auto" or m.limit is None for m in runs)
    return BenchResult(src, dst, size, item_size, repeats, machine_info(topo), baseline, runs,
                       list(notes or []), calibration.why if calibration and uses_auto else None)


def _fill_pattern(r: _native.Region) -> None:
    """Non-repeating-per-page content, so a misplaced chunk cannot verify by accident."""
    view = r.view()
    block = bytearray(os.urandom(1 << 16))
    n = len(block)
    for off in range(0, r.length, n):
        view[off:off + n] = block[: min(n, r.length - off)]
        block[:8] = (off // n).to_bytes(8, "little")
    view.release()


def _verify(s: _native.Region, d: _native.Region, what: str) -> None:
    off = _native.compare(s.addr, d.addr, s.length)
    if off >= 0:
        raise VerificationError(f"{what}: destination differs from source at byte {off}")


def render(res: BenchResult) -> list[str]:
    """Human-readable lines for a bench result."""
    m = res.machine
    lines = [f"note: {n}" for n in res.notes]
    lines += [
        f"numamove bench: node {res.src} -> node {res.dst}, {format_bytes(res.size)}, "
        f"{format_bytes(res.item_size)} items, median of {res.repeats}",
        f"machine: {m['cpus']} CPUs, {m['nodes']} NUMA node(s), Linux {m['kernel']}",
        f"baseline (single-threaded memcpy, same regions): {res.baseline_gbps:.2f} GB/s",
        f"{'policy':<12}{'limit':>6}{'threads':>8}  {'CPUs':<10}{'GB/s':>8}{'vs memcpy':>11}{'dispatch':>10}",
    ]
    if res.calibration:
        lines.insert(len(res.notes) + 2, f"auto: {res.calibration}")
    for r in res.runs:
        pol = f"auto ({r.plan.direction})" if r.policy == "auto" else r.policy
        lines.append(
            f"{pol:<12}{r.limit or 'auto':>6}{r.plan.threads:>8}  {format_list(r.plan.cpus):<10}"
            f"{r.gbps(res.size):>8.2f}{r.gbps(res.size) / res.baseline_gbps:>10.2f}x"
            f"{r.overhead() * 100:>9.2f}%"
        )
        if r.fallback:
            lines.append(f"  fallback: {r.fallback}")
        for e in r.pin_errors[:3]:
            lines.append(f"  warning: {e}")
    lines.append("verified: every copy matched its source byte for byte")
    return lines


def run_buffer_bench(topo: Topology, node: int, size: int, limits: list[int | None],
                     repeats: int = 3) -> dict[str, Any]:
    """migrate() of a size-byte anonymous buffer against moving it by hand on one thread.

    Baselines, measured in the same run: memcpy into a fresh mapping (what a hand-written
    move pays: its page faults included), and memcpy into an already-faulted mapping.
    """
    import mmap

    from .buffers import migrate

    topo.require(node, "--to", memory=True)
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
    buf = mmap.mmap(-1, size, flags=flags)
    keep, addr, _ = _native.buffer_address(buf, writable=True)
    _native.fill(addr, 7, size)
    fresh_ns: list[int] = []
    warm_ns: list[int] = []
    mig: dict[int | None, list[float]] = {t: [] for t in limits}
    with _native.Region(size, node) as warm, _native.Region(size, node) as ref:
        _native.fill(ref.addr, 7, size)
        for _ in range(repeats):
            f = mmap.mmap(-1, size, flags=flags)
            k2, faddr, _ = _native.buffer_address(f, writable=True)
            fresh_ns.append(_native.memcpy_ns(faddr, addr, size))
            del k2
            f.close()
            warm_ns.append(_native.memcpy_ns(warm.addr, addr, size))
            for t in limits:
                t0 = time.perf_counter()
                migrate(buf, node, threads=t, topology=topo)
                mig[t].append(time.perf_counter() - t0)
                if _native.compare(addr, ref.addr, size) != -1:
                    raise VerificationError(f"migrate() with limit {t} changed the buffer's bytes")
    del keep
    buf.close()
    fresh = statistics.median(fresh_ns) / 1e9
    warm_s = statistics.median(warm_ns) / 1e9
    runs = []
    for t in limits:
        m = statistics.median(mig[t])
        runs.append({"limit": t if t is not None else "auto", "gbps": size / m / 1e9,
                     "ratio_to_fresh_memcpy": fresh / m, "ratio_to_faulted_memcpy": warm_s / m,
                     "seconds": mig[t]})
    return {"node": node, "size_bytes": size, "repeats": repeats, "machine": machine_info(topo),
            "baseline": {"fresh_memcpy_gbps": size / fresh / 1e9, "faulted_memcpy_gbps": size / warm_s / 1e9,
                         "fresh_seconds": [n / 1e9 for n in fresh_ns],
                         "faulted_seconds": [n / 1e9 for n in warm_ns]},
            "runs": runs, "verified": True}


def render_buffer_bench(doc: dict[str, Any]) -> list[str]:
    """Human-readable lines for run_buffer_bench's document."""
    m, b = doc["machine"], doc["baseline"]
    lines = [f"numamove.migrate() of {format_bytes(doc['size_bytes'])} to node {doc['node']}, median of "
             f"{doc['repeats']}, verified (machine: {m['cpus']} CPUs, {m['nodes']} node(s))",
             f"baseline: memcpy into a fresh mapping (faults included) {b['fresh_memcpy_gbps']:.2f} GB/s; "
             f"into a faulted one {b['faulted_memcpy_gbps']:.2f} GB/s"]
    for r in doc["runs"]:
        lines.append(f"migrate(), limit {r['limit']}: {r['gbps']:.2f} GB/s = {r['ratio_to_fresh_memcpy']:.2f}x "
                     f"the fresh memcpy, {r['ratio_to_faulted_memcpy']:.2f}x the faulted one")
    return lines
