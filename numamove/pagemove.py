"""Migrate a process's pages with move_pages(2) on pinned threads, and report what really happened.

(Not named migrate.py: importing a submodule numamove.migrate would replace the public numamove.migrate().)

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

from . import _native
from .errors import Interrupted, InvalidNodeError, NativeError, NodeUnavailableError
from .planner import BASE_PAGE, Plan, make_plan
from .proc import AccessError, NoSuchProcessError, ProcessError, Target, access_hint, exiting
from .scan import PageSet, collect

TYPE_CHECKING = False  # typing's own constant to mypy; importing typing costs start-up ~4 ms
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from .calibration import Loaded
    from .topology import Topology

RETRIES = 3
RETRYABLE = [-errno.EBUSY, -errno.EAGAIN, -errno.ENOMEM]
# statuses of pages left where they were (found and not moved by the kernel, or never handed to it): the
# report's "after" keeps them on their node (-EFAULT and -ENOENT: the page was gone, or never movable, by
# the time of the call)
LEFT_IN_PLACE = frozenset((-errno.EBUSY, -errno.EAGAIN, -errno.ENOMEM, -errno.EACCES, -errno.EINPROGRESS))
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


OWN_MAPPED, OWN_UNMAPPED = 1, 2  # numamove's own file mapping: its pages mapped here, or mapped nowhere


class MoveOptions:
    """What to move where, and how (see `numamove proc --help`)."""

    __slots__ = ("to", "from_nodes", "move_all", "limit", "policy", "batch", "max_pause_ms", "dry_run",
                 "calibration", "pacer")

    def __init__(self, to: int, from_nodes: frozenset[int] | None = None, move_all: bool = False,
                 limit: int | None = None, policy: str = "auto", batch: int | None = None,
                 max_pause_ms: float | None = None, dry_run: bool = False,
                 calibration: Loaded | None = None, pacer: Pacer | None = None) -> None:
        self.to = to
        self.from_nodes = from_nodes
        self.move_all = move_all
        self.limit = limit  # None: auto (the calibration's, else the patch's 4)
        self.policy = policy
        self.batch = batch  # entries per move_pages call; None: each thread's share in 4 calls
        self.max_pause_ms = max_pause_ms
        self.dry_run = dry_run
        self.calibration = calibration  # what policy/threads auto follow
        self.pacer = pacer  # --rate: one pacer shared by every target of the run

    def replace(self, **changes: Any) -> MoveOptions:
        kw = {k: getattr(self, k) for k in self.__slots__}
        kw.update(changes)
        return MoveOptions(**kw)


class Pacer:
    """--rate: the average migration rate of a whole run stays at or below rate bytes/s.

    Pages go to the kernel in rounds of about PERIOD seconds' worth at the rate; after each round the
    caller sleeps until the bytes handed over so far, at the rate, would have taken the time since the
    first round began (also after the last round, so the average never exceeds the rate). A round that
    took longer than its share (move_pages' fixed cost per call, a slow machine), or a wait that woke
    late, leaves the run behind the rate: the next round carries what is owed on top of its period's
    worth, up to CATCH_UP periods' worth in all, so the average comes back to the rate wherever the
    machine can move that fast (a slow guest's rounds of ~270 ms held it at 75% of the rate without
    this). Only pages that moved count (see _moved). One pacer serves every process of a run, so a
    group's processes share the budget.
    """

    PERIOD = 0.05
    CATCH_UP = 20  # at most this many periods' worth (1 s) in one round that catches up

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.started: float | None = None
        self.bytes = 0
        self.slept = 0.0

    def round_entries(self, page_size: int) -> int:
        """Pages for the next round for this page size (at least one): a period's worth, plus what the run
        owes the rate by now (a round or a wait that ran late), up to CATCH_UP periods' worth in all."""
        now = time.perf_counter()
        if self.started is None:
            self.started = now
        period = self.rate * self.PERIOD
        owed = max(0.0, self.rate * (now - self.started) - self.bytes)
        return max(1, int(period + min(owed, period * (self.CATCH_UP - 1))) // page_size)

    def account(self, nbytes: int) -> None:
        """nbytes were handed to the kernel: wait until the average is back at the rate (a stop signal
        ends the wait within 20 ms)."""
        if self.started is None:
            self.started = time.perf_counter()
        self.bytes += nbytes
        due = self.started + self.bytes / self.rate
        while True:
            left = due - time.perf_counter()
            if left <= 0 or _native.stop_signal():
                return
            nap = min(left, 0.02)
            time.sleep(nap)
            self.slept += nap

    def achieved(self) -> float:
        """Bytes per second handed to the kernel since the first round."""
        if self.started is None:
            return 0.0
        spent = time.perf_counter() - self.started
        return self.bytes / spent if spent > 0 else 0.0


def _pb(v: list[int]) -> dict[str, int]:
    return {"pages": v[0], "bytes": v[1]}


class TargetReport:
    """One process: pages per node before and after, moved, failed and skipped by reason, and timings."""

    def __init__(self, target: Target, to: int, dry_run: bool = False) -> None:
        self.target = target
        self.to = to
        self.dry_run = dry_run
        self.before: dict[int, list[int]] = {}  # node -> [pages, bytes]
        self.after: dict[int, list[int]] = {}
        self.requested = [0, 0]
        self.moved = [0, 0]
        self.already = [0, 0]
        self.huge_moved = 0
        self.failed: dict[str, list[int]] = {}
        self.skipped: dict[str, list[int]] = {}
        self.skipped_mappings: dict[str, int] = {}
        self.plans: list[Plan] = []
        self.batches = 0
        self.max_call_ms = 0.0
        self.seconds = 0.0  # in the move: nm_move calls, retries included
        self.bookkeeping = 0.0  # reading maps and pagemap, locating and counting pages, planning
        self.queried = 0  # pages whose node a move_pages query supplied (no PFN)
        self.workers: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.rate_limit: float | None = None  # --rate, bytes/s

    @property
    def gbps(self) -> float:
        return self.moved[1] / self.seconds / 1e9 if self.seconds > 0 else 0.0

    @property
    def achieved(self) -> float:
        """Bytes moved a second of the move (--rate's waits included)."""
        return self.moved[1] / self.seconds if self.seconds > 0 else 0.0

    @property
    def partial(self) -> bool:
        return bool(self.failed)

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.target.pid, "name": self.target.name, "to": self.to,
            "dry_run": self.dry_run,
            "before": {str(k): _pb(v) for k, v in sorted(self.before.items())},
            "after": {str(k): _pb(v) for k, v in sorted(self.after.items())},
            "requested": _pb(self.requested), "moved": _pb(self.moved), "already_there": _pb(self.already),
            "huge_pages_moved": self.huge_moved,
            "failed": {k: _pb(v) for k, v in self.failed.items()},
            "skipped": {k: _pb(v) for k, v in self.skipped.items()},
            "skipped_mappings": dict(self.skipped_mappings),
            "plans": [p.to_json() for p in self.plans],
            "move_pages_calls": self.batches, "max_call_ms": self.max_call_ms,
            "seconds": self.seconds, "bookkeeping_seconds": self.bookkeeping, "gbps": self.gbps,
            "pages_located_by_query": self.queried,
            "rate_limit_bytes_per_second": self.rate_limit,
            "achieved_bytes_per_second": self.achieved,
            "workers": self.workers, "notes": self.notes,
        }


def migrate(target: Target, topo: Topology, opts: MoveOptions, ranges: list[tuple[int, int]] | None,
            only: frozenset[str] | None, here: int, allowed: frozenset[int],
            progress: Callable[[int, int], None] | None = None) -> TargetReport:
    """Move one process's selected pages to opts.to.

    Raises:
        NoSuchProcessError: the process is gone before anything moved.
        AccessError: not permitted (reading its maps, moving its pages, --all without CAP_SYS_NICE).
        NodeUnavailableError: the destination is outside the process's cpuset or lacks free memory.
    """
    t0 = time.perf_counter()
    ps = collect(target.pid, ranges, only)
    target.check_same()  # the pages were read from this process, not from one that took its PID since
    rep = move_pageset(target, ps, topo, opts, here, allowed, progress)
    rep.bookkeeping = time.perf_counter() - t0 - rep.seconds  # collecting the pages included
    return rep


def move_pageset(target: Target, ps: PageSet, topo: Topology, opts: MoveOptions, here: int,
                 allowed: frozenset[int], progress: Callable[[int, int], None] | None = None,
                 own_file: bool = False, mapped_here: bool = True) -> TargetReport:
    """Move the pages of ps (in target's address space) to opts.to and report what happened.

    Where each page is comes from ps (its PFN's node, or a query); where it went, from the
    status array move_pages fills (nm_move asks again for the entries of a call the kernel
    cut short), so no page is looked up twice.

    own_file: ps is numamove's own mapping of a shared file (`numamove file`, in place): several
    workers are then processes, not threads (_native.move_own). mapped_here: its pages are mapped in
    numamove now (else processes that scanned them did, and a move on the calling thread maps them first).
    """
    t0 = time.perf_counter()
    rep = TargetReport(target, opts.to, dry_run=opts.dry_run)
    rep.rate_limit = opts.pacer.rate if opts.pacer is not None else None
    rep.skipped_mappings = ps.skipped
    rep.queried = ps.queried
    classes = [(c, dict(_native.tally(c.nodes, c.count))) for c in ps.ordered()]
    wanted: list[tuple[Any, int, int]] = []  # (class, source node, pages)
    for c, counts in classes:
        size = c.page_size
        for st, n in sorted(counts.items()):
            if st >= 0:
                _add(rep.before, st, n * size, n)
            if st == opts.to:
                _add_to(rep.already, n, n * size)
            elif st < 0:
                _add(rep.skipped, reason(st), n * size, n)
            elif opts.from_nodes is None or st in opts.from_nodes:
                wanted.append((c, st, n))
                _add_to(rep.requested, n, n * size)
    free = topo.node(opts.to).mem_free
    if rep.requested[1] and free and rep.requested[1] > free:
        from .nodelist import format_bytes

        raise NodeUnavailableError(f"node {opts.to} has {format_bytes(free)} free, PID {target.pid} has "
                                   f"{format_bytes(rep.requested[1])} to move there")
    flags = _native.MPOL_MF_MOVE_ALL if opts.move_all else _native.MPOL_MF_MOVE
    # pages not handed to move_pages stay where they were found; _account moves the others to
    # wherever their status says they are
    rep.after = {node: list(v) for node, v in rep.before.items()}
    if not opts.dry_run:
        _native.stop_install()  # a signal now stops the move within one batch, with its report
    try:
        for c, src, n in wanted:
            size = c.page_size
            pages = c.pages if n == c.count else _native.select_values(c.pages, c.nodes, c.count, [src])[0]
            plan = make_plan(topo, src, opts.to, n, n * size // BASE_PAGE, opts.limit, opts.policy,
                             here, allowed, opts.calibration, engine="move")
            rep.plans.append(plan)
            if opts.dry_run:
                rep.batches += -(-n // _batch_size(n, plan.threads, opts, None))
                continue
            status = _native.raw_new("int[]", n)
            tm = time.perf_counter()
            _run_batches(target.pid, pages, n, size, plan, flags, opts, rep, progress, status,
                         (OWN_MAPPED if mapped_here else OWN_UNMAPPED) if own_file else 0)
            rep.seconds += time.perf_counter() - tm
            _account(rep, status, n, size, opts, src)
            if _native.stop_signal():
                break
    finally:
        if not opts.dry_run:
            _native.stop_restore()
    if opts.dry_run:
        rep.after = rep.before
    rep.bookkeeping = time.perf_counter() - t0 - rep.seconds
    sig = _native.stop_signal()
    if sig and not opts.dry_run:
        left = rep.requested[0] - rep.moved[0] - sum(v[0] for v in rep.failed.values())
        rep.notes.append(f"interrupted: {left} requested pages not moved, still on their node")
        raise Interrupted(sig, rep)
    return rep


def _account(rep: TargetReport, status: Any, n: int, page_size: int, opts: MoveOptions, src: int) -> None:
    """Count what happened to n pages, all on src before: status says where each is now, or why not."""
    rep.after[src][0] -= n
    rep.after[src][1] -= n * page_size
    interrupted = _native.stop_signal()
    for st, c in _native.tally(status, n):
        if st >= 0:
            _add(rep.after, st, c * page_size, c)
        elif st in LEFT_IN_PLACE:  # shared without --all, busy, no room on the destination, not reached
            _add(rep.after, src, c * page_size, c)
        if st == -errno.EINPROGRESS and interrupted:
            _add(rep.skipped, "not moved: interrupted", c * page_size, c)
            continue
        if st == opts.to:
            _add_to(rep.moved, c, c * page_size)
            if page_size > BASE_PAGE:
                rep.huge_moved += c
            continue
        why = reason(st) if st < 0 else f"still on node {st}"
        shared_skip = st == -errno.EACCES and not opts.move_all
        _add(rep.skipped if shared_skip else rep.failed, why, c * page_size, c)
    rep.after = {k: v for k, v in rep.after.items() if v[0]}


def _add_to(acc: list[int], pages: int, nbytes: int) -> None:
    acc[0] += pages
    acc[1] += nbytes


def _add(d: dict[Any, list[int]], key: Any, nbytes: int, pages: int) -> None:
    _add_to(d.setdefault(key, [0, 0]), pages, nbytes)


def _batch_size(n: int, threads: int, opts: MoveOptions, progress: Callable[[int, int], None] | None) -> int:
    """Entries per move_pages call before any --max-pause measurement.

    Each call pays a fixed cost (lru_cache_disable: an RCU sync and an LRU drain on every CPU),
    so calls are large: by default each thread's share comes in 4 batches, taken from a shared
    cursor so that a thread slowed by other work on its CPU takes fewer of them. A progress bar
    wants about 20 rounds; --batch bounds one call's pause.
    """
    share = -(-n // threads)
    return opts.batch or (max(512, -(-share // 20)) if progress else max(1, -(-share // 4)))


def _run_batches(pid: int, pages: Any, n: int, page_size: int, plan: Plan, flags: int, opts: MoveOptions,
                 rep: TargetReport, progress: Callable[[int, int], None] | None, status: Any,
                 own: int = 0) -> None:
    """Move pages[0..n) in rounds of threads x batch entries, statuses into status[0..n);
    retry busy pages, and pages a cut-short call left on their node, on one thread.
    With --rate, rounds are the pacer's and each is followed by its wait. own: OWN_MAPPED or
    OWN_UNMAPPED when pages are in numamove's own file mapping (worker processes), else 0."""
    batch = _batch_size(n, plan.threads, opts, progress)
    target = _native.raw_new("int[]", n)
    _native.fill_int(target, n, plan.dst)
    pacer = opts.pacer
    k = 0
    if opts.max_pause_ms is not None and n:
        # time two small calls (a, then 4a entries), then size batches so one call stays within the pause
        # budget: a call costs a fixed part (the kernel drains the LRU caches of every CPU) plus a part per
        # entry, and the first call of a run also pays for cold caches, so the slope between the two calls
        # is the per-entry cost (the second call alone where noise makes the slope useless)
        a = 16 if page_size == BASE_PAGE else 1
        sizes = [m for m in (a, 4 * a) if m <= n] or [n]
        took = []
        for m in sizes:
            res = _call(pid, pages, k, m, plan, flags, m, rep, status, target, own, page_size)
            took.append(max(w.max_call_ns for w in res.workers) / 1e6)
            k += m
        budget = opts.max_pause_ms * 0.8
        fixed, per_entry = _call_cost(sizes, took, budget)
        batch = max(1, int((budget - fixed) / per_entry)) if per_entry > 0 else batch
        first = (f"--max-pause {opts.max_pause_ms:g} ms: {batch} entries per move_pages call at first "
                 f"(a call: {fixed:.2f} ms + {per_entry:.3f} ms an entry)")
        if pacer is not None:
            pacer.account(_moved(status, 0, k, plan.dst) * page_size)
    while k < n:
        # one nm_move over everything lets threads share out the batches; a progress bar needs
        # nm_move to return now and then, and --max-pause re-sizes batches after each round
        m = n - k if progress is None else min(n - k, batch * plan.threads)
        if opts.max_pause_ms is not None:
            m = min(m, batch * plan.threads * PAUSE_ROUND)
        b = batch
        if pacer is not None:
            m = min(m, pacer.round_entries(page_size))
            b = min(batch, -(-m // plan.threads))
        res = _call(pid, pages, k, m, plan, flags, b, rep, status, target, own, page_size)
        if pacer is not None:
            pacer.account(_moved(status, k, m, plan.dst) * page_size)
        k += m
        if opts.max_pause_ms is not None:
            batch = _resize(b, max(w.max_call_ns for w in res.workers) / 1e6, opts.max_pause_ms * 0.8, batch)
        if progress:
            progress(k, n)
        if _native.stop_signal():
            return
    if opts.max_pause_ms is not None and n:
        rep.notes.append(f"{first}, {batch} at the end (re-sized after each round by its longest call)")
    one = Plan(plan.src, plan.dst, plan.policy, plan.direction, plan.cpu_node, plan.cpus[:1], plan.split,
               n, n, 1, dict(plan.reasons))
    if own and plan.threads > 1:  # the worker processes' calls dropped numamove's own mapping of the pages
        own = OWN_UNMAPPED
    for _ in range(RETRIES):
        if _native.stop_signal():
            return
        # busy or no room, left on the source by a call cut short, or not reached (a killed worker's batch)
        sub, idx, m = _native.select_values(pages, status, n, [*RETRYABLE, plan.src, -errno.EINPROGRESS])
        if not m:
            break
        res_status = _native.raw_new("int[]", m)
        _call(pid, sub, 0, m, one, flags, batch, rep, res_status, target, own, page_size)
        _native.scatter(status, idx, res_status, m)
        if pacer is not None:
            pacer.account(_moved(res_status, 0, m, plan.dst) * page_size)


def _moved(status: Any, k: int, m: int, dst: int) -> int:
    """How many of status[k..k+m) say the page is now on dst: what --rate counts. Pages the kernel left
    where they were (shared with other processes without --all, busy) cost little and move nothing: paced
    as moved, they held a guest run at 87% of the rate (the interpreter's shared library pages)."""
    return sum(c for st, c in _native.tally(_native.offset(status, k), m) if st == dst)


PAUSE_ROUND = 4  # --max-pause: calls per thread between two re-sizings of the batch


def _resize(b: int, took_ms: float, budget_ms: float, batch: int) -> int:
    """The next batch under --max-pause, after calls of b entries whose longest took took_ms: the entries
    whose share of that call fits the budget (the call's fixed part counted as if per entry, which errs
    small), at most twice batch. A first estimate thrown by one slow call (a stall under load: a batch of
    one entry, thousands of calls each paying the fixed cost) thus grows back within a few rounds, and
    batches that overrun the budget shrink at once."""
    if took_ms > budget_ms:
        return max(1, int(b * budget_ms / took_ms))
    if took_ms <= 0:
        return 2 * batch
    # never below batch here: a short round (the last, or --rate's) has calls whose fixed part weighs more
    return max(batch, min(int(b * budget_ms / took_ms), 2 * batch))


def _call_cost(sizes: list[int], took_ms: list[float], budget_ms: float) -> tuple[float, float]:
    """(fixed ms, ms per entry) of a move_pages call, from calls of sizes[i] entries that took took_ms[i].

    The slope between the two calls, unless noise makes it useless (not rising, or a "fixed" part
    over half the budget, which would leave one entry a call): then the second call's time spread
    over its entries, which over-estimates the per-entry cost (safe for the pause, never one-entry
    calls from a blip)."""
    if len(sizes) == 2 and took_ms[1] > took_ms[0]:
        per_entry = (took_ms[1] - took_ms[0]) / (sizes[1] - sizes[0])
        fixed = max(0.0, took_ms[1] - per_entry * sizes[1])
        if fixed <= budget_ms / 2:
            return fixed, per_entry
    return 0.0, took_ms[-1] / sizes[-1]


def _call(pid: int, pages: Any, k: int, m: int, plan: Plan, flags: int, batch: int,
          rep: TargetReport, status: Any, target: Any, own: int = 0, page_size: int = 4096) -> _native.MoveBatch:
    ptr, st = _native.offset(pages, k), _native.offset(status, k)

    def move(cpus: tuple[int, ...], workers: int) -> _native.MoveBatch:
        if own:  # with several workers planned, every call after the first finds these pages dropped here
            return _native.move_own(ptr, m, plan.dst, flags, cpus, workers, batch, st, target, page_size,
                                    remap=plan.threads > 1 or own == OWN_UNMAPPED)
        return _native.move(pid, ptr, m, plan.dst, flags, cpus, workers, batch, st, target)

    try:
        res = move(plan.cpus, plan.threads)
    except NativeError as exc:
        if exc.errno not in (errno.EAGAIN, errno.ENOMEM) or plan.threads == 1:
            raise
        what = "worker processes" if own else "threads"
        rep.notes.append(f"could not start {plan.threads} {what} ({os.strerror(exc.errno or 0)}): "
                         "retried on one thread")
        res = move(plan.cpus[:1], 1)
    for w in res.workers:
        rep.batches += w.calls
        rep.max_call_ms = max(rep.max_call_ms, w.max_call_ns / 1e6)
        rep.workers.append({"cpu": w.cpu, "cpu_at_start": w.cpu_at_start, "cpu_at_end": w.cpu_at_end,
                            "pinned": w.cpu >= 0 and w.pin_err == 0, "entries": w.done, "calls": w.calls,
                            "seconds": w.ns / 1e9, "error": os.strerror(-w.err) if w.err else None})
        if w.err == -errno.ECHILD:  # a worker process killed (SIGKILL, the OOM killer): the others took its
            # batches; the pages of the one it was in say where they went, or EINPROGRESS (retried)
            note = ("a migration worker process was killed mid-move: the other workers took its batches, and "
                    "the pages it had not reached were retried on one thread")
            if note not in rep.notes:
                rep.notes.append(note)
            continue
        if w.err:
            _raise_call_error(pid, -w.err, plan.dst, flags)
    return res


def _raise_call_error(pid: int, err: int, node: int, flags: int) -> None:
    # a process that exits mid-move: ESRCH once it is reaped; EINVAL while it has no memory left
    # (the kernel's find_mm_struct finds no mm between exit_mm() and the reaping)
    if err == errno.ESRCH or (err == errno.EINVAL and exiting(pid)):
        raise NoSuchProcessError(f"PID {pid} exited during the migration")
    if err == errno.EPERM:
        if flags & _native.MPOL_MF_MOVE_ALL:
            raise AccessError("--all needs CAP_SYS_NICE: run as root or grant it "
                              "(setcap cap_sys_nice+ep, or AmbientCapabilities=CAP_SYS_NICE in systemd)")
        raise AccessError(f"not allowed to move the pages of PID {pid}: {access_hint()}")
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
