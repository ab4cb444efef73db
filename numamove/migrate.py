"""Migrate a process's pages with move_pages(2) on pinned threads, and report what really happened.

For each source node the planner chooses threads and CPUs exactly as for a copy
(push: the source node's CPUs, pull: the destination's, CPU-less fallback, the
32-page threshold, the thread limit); the C engine runs the move_pages batches on
those threads, since the kernel copies on the calling thread's CPU.  Pages the
kernel reports busy are retried a bounded number of times; afterwards a
nodes=NULL query says where every page really is, and that is what is reported.
"""

from __future__ import annotations

import errno
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import _native
from .calibration import Loaded
from .errors import InvalidNodeError, NativeError, NodeUnavailableError
from .planner import BASE_PAGE, Plan, make_plan
from .proc import AccessError, NoSuchProcessError, PageSet, ProcessError, Target, collect, tally, where
from .topology import Topology

RETRIES = 3
RETRYABLE = {-errno.EBUSY, -errno.EAGAIN, -errno.ENOMEM}
# what a status means, for reports
REASONS = {
    -errno.EACCES: "shared with other processes (use --all)",
    -errno.EBUSY: "busy (pinned or under I/O)",
    -errno.EFAULT: "not migratable (zero page or special mapping)",
    -errno.ENOENT: "not present",
    -errno.ENOMEM: "no memory on the destination",
    -errno.EIO: "I/O error",
    -errno.EINVAL: "not movable",
    -errno.EPERM: "not permitted",
    -errno.EINPROGRESS: "not reached (the call failed before it)",
}


def reason(status: int) -> str:
    return REASONS.get(status, f"{errno.errorcode.get(-status, status)}")


@dataclass(frozen=True)
class MoveOptions:
    to: int
    from_nodes: frozenset[int] | None = None
    move_all: bool = False
    limit: int | None = None  # None: auto (the calibration's, else the patch's 4)
    policy: str = "auto"
    batch: int | None = None  # entries per move_pages call; None: each thread's share in one call
    max_pause_ms: float | None = None
    dry_run: bool = False
    calibration: Loaded | None = None  # what policy/threads auto follow


@dataclass
class TargetReport:
    """One process: pages per node before and after, moved, failed and skipped by reason."""

    target: Target
    to: int
    before: dict[int, list[int]] = field(default_factory=dict)  # node -> [pages, bytes]
    after: dict[int, list[int]] = field(default_factory=dict)
    requested: list[int] = field(default_factory=lambda: [0, 0])
    moved: list[int] = field(default_factory=lambda: [0, 0])
    already: list[int] = field(default_factory=lambda: [0, 0])
    huge_moved: int = 0
    failed: dict[str, list[int]] = field(default_factory=dict)
    skipped: dict[str, list[int]] = field(default_factory=dict)
    skipped_mappings: dict[str, int] = field(default_factory=dict)
    plans: list[Plan] = field(default_factory=list)
    batches: int = 0
    max_call_ms: float = 0.0
    seconds: float = 0.0
    workers: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    dry_run: bool = False

    @property
    def gbps(self) -> float:
        return self.moved[1] / self.seconds / 1e9 if self.seconds > 0 else 0.0

    @property
    def partial(self) -> bool:
        return bool(self.failed)

    def to_json(self) -> dict[str, Any]:
        def pb(v: list[int]) -> dict[str, int]:
            return {"pages": v[0], "bytes": v[1]}

        return {
            "pid": self.target.pid, "name": self.target.name, "to": self.to,
            "dry_run": self.dry_run,
            "before": {str(k): pb(v) for k, v in sorted(self.before.items())},
            "after": {str(k): pb(v) for k, v in sorted(self.after.items())},
            "requested": pb(self.requested), "moved": pb(self.moved), "already_there": pb(self.already),
            "huge_pages_moved": self.huge_moved,
            "failed": {k: pb(v) for k, v in self.failed.items()},
            "skipped": {k: pb(v) for k, v in self.skipped.items()},
            "skipped_mappings": dict(self.skipped_mappings),
            "plans": [p.to_json() for p in self.plans],
            "move_pages_calls": self.batches, "max_call_ms": self.max_call_ms,
            "seconds": self.seconds, "gbps": self.gbps,
            "workers": self.workers, "notes": self.notes,
        }


def _by_node(ps: PageSet, status: list[int]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for (st, _kind, _huge), (pages, nbytes) in tally(ps, status).items():
        if st >= 0:
            acc = out.setdefault(st, [0, 0])
            acc[0] += pages
            acc[1] += nbytes
    return out


def migrate(target: Target, topo: Topology, opts: MoveOptions, ranges: list[tuple[int, int]] | None,
            only: frozenset[str] | None, here: int, allowed: frozenset[int],
            progress: Callable[[int, int], None] | None = None) -> TargetReport:
    """Move one process's selected pages to opts.to.

    Raises:
        NoSuchProcessError: the process is gone before anything moved.
        AccessError: not permitted (reading its maps, moving its pages, --all without CAP_SYS_NICE).
        NodeUnavailableError: the destination is outside the process's cpuset or lacks free memory.
    """
    ps = collect(target.pid, ranges, only)
    return move_pageset(target, ps, topo, opts, here, allowed, progress)


def move_pageset(target: Target, ps: PageSet, topo: Topology, opts: MoveOptions, here: int,
                 allowed: frozenset[int], progress: Callable[[int, int], None] | None = None) -> TargetReport:
    """Move the pages of ps (in target's address space) to opts.to and report what happened."""
    rep = TargetReport(target, opts.to, dry_run=opts.dry_run)
    rep.skipped_mappings = ps.skipped
    before = where(ps)
    rep.before = _by_node(ps, before)
    wanted: set[int] = set()
    for (st, _kind, _huge), (pages, nbytes) in tally(ps, before).items():
        if st == opts.to:
            rep.already[0] += pages
            rep.already[1] += nbytes
        elif st < 0:
            _add(rep.skipped, reason(st), nbytes, pages)
        elif opts.from_nodes is None or st in opts.from_nodes:
            wanted.add(st)
            rep.requested[0] += pages
            rep.requested[1] += nbytes
    free = topo.node(opts.to).mem_free
    if rep.requested[1] and free and rep.requested[1] > free:
        from .nodelist import format_bytes

        raise NodeUnavailableError(f"node {opts.to} has {format_bytes(free)} free, PID {target.pid} has "
                               f"{format_bytes(rep.requested[1])} to move there")
    flags = _native.MPOL_MF_MOVE_ALL if opts.move_all else _native.MPOL_MF_MOVE
    # pages not handed to move_pages stay where the first query found them; _account moves the
    # others to wherever the query after their batch finds them
    rep.after = {node: list(v) for node, v in rep.before.items()}
    t0 = time.perf_counter()
    for page_size, lo, hi in ps.classes():
        base = _native.offset(ps.pages.pages, lo)
        for src in sorted(wanted):
            pages, n = _native.select_node(base, before[lo:hi], hi - lo, src)
            if n == 0:
                continue
            plan = make_plan(topo, src, opts.to, n, n * page_size // BASE_PAGE, opts.limit, opts.policy,
                             here, allowed, opts.calibration, engine="move")
            rep.plans.append(plan)
            if opts.dry_run:
                rep.batches += -(-n // _batch_size(n, plan.threads, opts, None))
                continue
            statuses = _run_batches(target.pid, pages, n, plan, flags, opts, rep, progress)
            _account(rep, target.pid, pages, n, page_size, statuses, opts, src)
    if opts.dry_run:
        rep.after = rep.before
        return rep
    rep.seconds = time.perf_counter() - t0
    return rep


def _account(rep: TargetReport, pid: int, pages: Any, n: int, page_size: int, statuses: list[int],
             opts: MoveOptions, src: int) -> None:
    """Count what really happened to pages[0..n) (all on src before): a nodes=NULL query says where
    they are now, and the move's status says why the others are not on the destination."""
    try:
        after = _native.query_nodes(pid, pages, n)
    except NativeError as exc:
        if exc.errno == errno.ESRCH:
            _add(rep.failed, "process exited", n * page_size, n)
            rep.notes.append("the process exited during the move: final placement unknown")
            return
        raise
    rep.after[src][0] -= n
    rep.after[src][1] -= n * page_size
    for node, c in Counter(after).items():
        if node >= 0:
            acc = rep.after.setdefault(node, [0, 0])
            acc[0] += c
            acc[1] += c * page_size
    rep.after = {k: v for k, v in rep.after.items() if v[0]}
    moved = after.count(opts.to)
    rep.moved[0] += moved
    rep.moved[1] += moved * page_size
    if page_size > BASE_PAGE:
        rep.huge_moved += moved
    for k in [k for k, a in enumerate(after) if a != opts.to]:
        st = statuses[k]
        why = reason(st) if st < 0 else (
            "moved, then moved away again" if st == opts.to else f"still on node {after[k]}")
        shared_skip = st == -errno.EACCES and not opts.move_all
        _add(rep.skipped if shared_skip else rep.failed, why, page_size, 1)


def _add(d: dict[str, list[int]], key: str, nbytes: int, pages: int) -> None:
    acc = d.setdefault(key, [0, 0])
    acc[0] += pages
    acc[1] += nbytes


def _batch_size(n: int, threads: int, opts: MoveOptions, progress: Callable[[int, int], None] | None) -> int:
    """Entries per move_pages call before any --max-pause measurement.

    Each call pays a fixed cost (lru_cache_disable: an RCU sync and an LRU drain on every CPU),
    so calls are large: by default each thread's share comes in 4 batches, taken from a shared
    cursor so that a thread slowed by other work on its CPU takes fewer of them. A progress bar
    wants about 20 rounds; --batch bounds one call's pause.
    """
    share = -(-n // threads)
    return opts.batch or (max(512, -(-share // 20)) if progress else max(1, -(-share // 4)))


def _run_batches(pid: int, pages: Any, n: int, plan: Plan, flags: int, opts: MoveOptions,
                 rep: TargetReport, progress: Callable[[int, int], None] | None) -> list[int]:
    """Move pages[0..n) in rounds of threads x batch entries; retry busy pages; return statuses."""
    status: list[int] = []
    batch = _batch_size(n, plan.threads, opts, progress)
    k = 0
    if opts.max_pause_ms is not None and n:
        # measure one small call, then size batches so one call stays within the pause budget
        probe = min(n, 64)
        status += _call(pid, pages, 0, probe, plan, flags, probe, rep)
        per_entry = rep.max_call_ms / probe
        batch = max(1, int(opts.max_pause_ms * 0.8 / per_entry)) if per_entry > 0 else batch
        rep.notes.append(f"--max-pause {opts.max_pause_ms:g} ms: {batch} entries per move_pages call")
        k = probe
    while k < n:
        # one nm_move over everything lets threads share out the batches; a progress bar needs
        # nm_move to return now and then
        m = n - k if progress is None else min(n - k, batch * plan.threads)
        status += _call(pid, pages, k, m, plan, flags, batch, rep)
        k += m
        if progress:
            progress(k, n)
    for _ in range(RETRIES):
        again = [i for i, st in enumerate(status) if st in RETRYABLE]
        if not again:
            break
        sub = _native.page_list([pages[i] for i in again])
        one = Plan(plan.src, plan.dst, plan.policy, plan.direction, plan.cpu_node, plan.cpus[:1], plan.split,
                   len(again), len(again), 1, dict(plan.reasons))
        res = _call(pid, sub, 0, len(again), one, flags, batch, rep)
        for i, st in zip(again, res):
            status[i] = st
    return status


def _call(pid: int, pages: Any, k: int, m: int, plan: Plan, flags: int, batch: int,
          rep: TargetReport) -> list[int]:
    ptr = _native.offset(pages, k)
    try:
        res = _native.move(pid, ptr, m, plan.dst, flags, plan.cpus, plan.threads, batch)
    except NativeError as exc:
        if exc.errno not in (errno.EAGAIN, errno.ENOMEM) or plan.threads == 1:
            raise
        rep.notes.append(f"could not start {plan.threads} threads ({os.strerror(exc.errno or 0)}): "
                         "retried on one thread")
        res = _native.move(pid, ptr, m, plan.dst, flags, plan.cpus[:1], 1, batch)
    for w in res.workers:
        rep.batches += w.calls
        rep.max_call_ms = max(rep.max_call_ms, w.max_call_ns / 1e6)
        rep.workers.append({"cpu": w.cpu, "cpu_at_start": w.cpu_at_start, "cpu_at_end": w.cpu_at_end,
                            "pinned": w.pin_err == 0, "entries": w.done, "calls": w.calls,
                            "seconds": w.ns / 1e9, "error": os.strerror(-w.err) if w.err else None})
        if w.err:
            _raise_call_error(pid, -w.err, plan.dst, flags)
    return res.status


def _raise_call_error(pid: int, err: int, node: int, flags: int) -> None:
    if err == errno.ESRCH:
        raise NoSuchProcessError(f"PID {pid} exited during the migration")
    if err == errno.EPERM:
        if flags & _native.MPOL_MF_MOVE_ALL:
            raise AccessError("--all needs CAP_SYS_NICE: run as root or grant it "
                              "(setcap cap_sys_nice+ep, or AmbientCapabilities=CAP_SYS_NICE in systemd)")
        raise AccessError(f"not allowed to move the pages of PID {pid}: run as its owner or root, "
                          "or with CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH")
    if err == errno.EACCES:
        raise NodeUnavailableError(f"node {node} is outside the cpuset of PID {pid} (its Mems_allowed)")
    if err == errno.ENODEV:
        raise InvalidNodeError(f"node {node} is not online")
    raise ProcessError(f"move_pages failed for PID {pid}: {os.strerror(err)}")


def progress_printer(quiet: bool) -> Callable[[int, int], None] | None:
    """A one-line progress bar on stderr when it is a terminal."""
    if quiet or not sys.stderr.isatty():
        return None

    def show(k: int, n: int) -> None:
        width = 30
        filled = width * k // max(n, 1)
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {k}/{n} pages")
        if k >= n:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show
