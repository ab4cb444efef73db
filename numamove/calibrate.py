"""`numamove calibrate`: measure push and pull, thread counts and CPU placement for each node pair.

For each ordered pair of memory nodes and each engine, every configuration is
timed on real memory with the same code `numamove bench` uses (bench.CopyTrial for
the pinned memcpy engine, bench.move_trial for move_pages batches):

* direction: push (the source node's CPUs) and pull (the destination's), after the
  planner's CPU-less fallback, so a memory-only node is measured as it will be used;
* threads: 1, 2, 4, ... up to the CPUs of the node that copies (at most 32);
* placement: packed (fill one L3 domain first) and spread (one thread per L3 domain
  in turn), where the node's CPUs span more than one L3 domain;
* for the move engine, also ``caller``: one thread nobody pins, numamove's own, wherever the
  scheduler runs it (as migratepages and the kernel's single-threaded path run).  Where a
  pinned thread competes with the workload or the node's one CPU, this is the faster one;
  auto then uses it when it is within 5% of the best pinned setting.

Configurations that land on the same CPUs are measured once.  The time budget is
shared out between pairs and engines: the size shrinks until one round fits the
share, further rounds (up to --repeats) run while time is left, and the median is
kept.  When the budget runs out the calibration says so (``complete: false``) and
keeps only what it measured.
"""

from __future__ import annotations

import datetime
import errno
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .bench import CopyTrial, machine_info, move_trial
from .calibration import CALLER, DIRECTIONS, ENGINES, SCHEMA, UNPINNED, Setting, default_output, digest, fingerprint
from .errors import OutputError, UsageError
from .jsontext import dumps
from .nodelist import format_bytes, format_list
from .planner import BASE_PAGE, HUGE_PAGE, MAX_THREADS, Plan, choose_cpu_node, make_plan
from .topology import Topology, current_node, l3_domains

MIN_SIZE = {"copy": 4 << 20, "move": 1 << 20}
DEFAULT_SIZE = 64 << 20
DEFAULT_BUDGET = 20.0
THREADS_TOLERANCE = 0.05  # fewer threads win when within 5% of the fastest


@dataclass
class Sample:
    """One configuration: the CPUs it ran on and its measured seconds."""

    direction: str
    placement: str
    threads: int
    cpus: tuple[int, ...]
    cpu_node: int | None  # None for the caller, whom nobody pins
    size: int
    seconds: list[float] = field(default_factory=list)
    same_as: str | None = None  # "push"/"pull" when these CPUs were measured for the other direction

    @property
    def gbps(self) -> float:
        return self.size / statistics.median(self.seconds) / 1e9 if self.seconds else 0.0

    def setting(self) -> Setting:
        return Setting(self.threads, self.placement, self.cpus, self.cpu_node, self.gbps)

    def to_json(self) -> dict[str, Any]:
        return {"direction": self.direction, "placement": self.placement, "threads": self.threads,
                "cpus": format_list(self.cpus), "cpu_node": self.cpu_node, "size_bytes": self.size,
                "gbps": round(self.gbps, 4) if self.seconds else None,
                "seconds": [round(s, 6) for s in self.seconds], "same_cpus_as": self.same_as}


@dataclass
class EngineResult:
    engine: str
    samples: list[Sample]
    notes: list[str] = field(default_factory=list)

    def best_per_direction(self) -> dict[str, Sample]:
        """The fastest sample per direction (and the caller's); fewer threads (then packed) win within 5%."""
        out: dict[str, Sample] = {}
        for d in DIRECTIONS + (CALLER,):
            measured = [s for s in self.samples if s.direction == d and s.seconds]
            if not measured:
                continue
            top = max(s.gbps for s in measured)
            good = [s for s in measured if s.gbps >= top * (1 - THREADS_TOLERANCE)]
            out[d] = min(good, key=lambda s: (s.threads, s.placement != "packed", -s.gbps))
        return out

    def best(self) -> str | None:
        """The faster direction by median, push (the patch's default) on an exact tie; the caller
        (one thread, unpinned) wins within 5% of the fastest, as fewer threads do."""
        per = self.best_per_direction()
        if not per:
            return None
        top = max(s.gbps for s in per.values())
        if CALLER in per and per[CALLER].gbps >= top * (1 - THREADS_TOLERANCE):
            return CALLER
        return max((d for d in per if d != CALLER), key=lambda d: (per[d].gbps, d == "push"), default=None)

    def to_json(self) -> dict[str, Any]:
        per = self.best_per_direction()
        return {"best": self.best(),
                "settings": {d: s.setting().to_json() for d, s in per.items()},
                "samples": [s.to_json() for s in self.samples],
                "notes": self.notes}


@dataclass
class PairResult:
    src: int
    dst: int
    distance: int
    engines: dict[str, EngineResult] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"src": self.src, "dst": self.dst, "distance": self.distance,
                "engines": {e: r.to_json() for e, r in self.engines.items()}}


@dataclass
class CalibrationRun:
    topo: Topology
    pairs: list[PairResult]
    budget: float
    elapsed: float
    repeats: int
    complete: bool
    notes: list[str]
    path: str | None = None

    def to_json(self) -> dict[str, Any]:
        fp = fingerprint(self.topo)
        return {
            "schema": SCHEMA,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "numamove_version": __version__,
            "machine": machine_info(self.topo),
            "fingerprint": fp,
            "fingerprint_digest": digest(fp),
            "budget_seconds": self.budget,
            "elapsed_seconds": round(self.elapsed, 3),
            "repeats": self.repeats,
            "complete": self.complete,
            "pairs": [p.to_json() for p in self.pairs],
            "notes": self.notes,
            "path": self.path,
        }


def parse_pairs(text: str, topo: Topology) -> list[tuple[int, int]]:
    """--pairs "0:1,1:0": ordered (source, destination) pairs of memory nodes."""
    out: list[tuple[int, int]] = []
    for part in text.split(","):
        bits = part.strip().split(":")
        if len(bits) != 2 or not all(b.strip().isdigit() for b in bits):
            raise UsageError(f"invalid pair '{part.strip()}' in --pairs: use SRC:DST, e.g. 0:1,1:0")
        a, b = (int(x) for x in bits)
        topo.require(a, "--pairs", memory=True)
        topo.require(b, "--pairs", memory=True)
        if (a, b) not in out:
            out.append((a, b))
    return out


def default_pairs(topo: Topology) -> tuple[list[tuple[int, int]], list[str]]:
    mem = topo.memory_nodes()
    pairs = [(a, b) for a in mem for b in mem if a != b]
    if pairs:
        return pairs, []
    n = mem[0] if mem else topo.ids[0]
    return [(n, n)], [f"one memory node: calibrating copies within node {n} (threads and placement only)"]


def thread_counts(ncpus: int) -> list[int]:
    top = min(ncpus, MAX_THREADS)
    out = []
    t = 1
    while t < top:
        out.append(t)
        t *= 2
    out.append(top)
    return out


def placements(cpus: list[int], domains: dict[int, str]) -> dict[str, list[int]]:
    """CPU orders: packed fills one L3 domain before the next; spread takes one from each in turn."""
    groups: dict[str, list[int]] = {}
    for c in cpus:
        groups.setdefault(domains.get(c, "unknown"), []).append(c)
    packed = [c for g in groups.values() for c in g]
    if len(groups) < 2:
        return {"packed": packed}
    spread: list[int] = []
    lists = list(groups.values())
    for i in range(max(len(g) for g in lists)):
        spread += [g[i] for g in lists if i < len(g)]
    return {"packed": packed, "spread": spread}


def configurations(topo: Topology, src: int, dst: int, here: int, allowed: frozenset[int],
                   domains: dict[int, str], engine: str = "copy") -> tuple[list[Sample], list[str]]:
    """Every sample to measure for one pair and engine, CPUs deduplicated (a duplicate points at its
    twin); the move engine's list starts with the caller (one unpinned thread)."""
    out: list[Sample] = []
    notes: list[str] = []
    seen: dict[tuple[int, ...], Sample] = {}
    if engine == "move":
        out.append(Sample(CALLER, UNPINNED, 1, (), None, 0))
    for d in DIRECTIONS:
        node, _, why = choose_cpu_node(topo, src, dst, d, here, allowed)
        cpus = [c for c in topo.node(node).cpus if c in allowed] or sorted(allowed)
        if "no usable CPU" in why:
            notes.append(f"{d}: {why}")
        for placement, order in placements(cpus, domains).items():
            for t in thread_counts(len(order)):
                key = tuple(order[:t])
                twin = seen.get(key)
                s = Sample(d, placement, t, key, node, 0, same_as=twin.direction if twin else None)
                if twin is None:
                    seen[key] = s
                elif twin.direction == d:
                    continue  # spread and packed coincide (one thread, or one CPU per domain)
                out.append(s)
    return out, notes


def _fits(topo: Topology, src: int, dst: int, size: int, engine: str) -> int:
    """The size shrunk (by halves) until both nodes have room for it, with 4x to spare."""
    for n in (src, dst):
        free = topo.node(n).mem_free
        while free and size * 4 > free and size > MIN_SIZE[engine]:
            size //= 2
    return size


ProgressFn = Callable[[int, int, str], None]


def run_calibration(topo: Topology, pairs: list[tuple[int, int]], *, budget: float = DEFAULT_BUDGET,
                    size: int = DEFAULT_SIZE, repeats: int = 3, engines: tuple[str, ...] = ENGINES,
                    progress: ProgressFn | None = None, notes: list[str] | None = None) -> CalibrationRun:
    """Measure every configuration of every pair within ``budget`` seconds.

    Raises:
        UsageError: a budget, size or repeat count out of range.
        VerificationError: a copy or move did not put the right bytes on the right node.
        NativeError: memory could not be mapped on a node.
    """
    if budget <= 0:
        raise UsageError("--budget must be more than 0 seconds")
    if repeats < 1:
        raise UsageError("--repeats must be at least 1")
    for e in engines:
        if e not in ENGINES:
            raise UsageError(f"unknown engine '{e}' (choose from {', '.join(ENGINES)})")
    if size < BASE_PAGE:
        raise UsageError(f"--size must be at least {BASE_PAGE} bytes")
    t0 = time.monotonic()
    deadline = t0 + budget
    here = current_node(topo)
    allowed = frozenset(os.sched_getaffinity(0))
    domains = l3_domains(sorted(allowed))
    results = [PairResult(a, b, topo.distance(a, b)) for a, b in pairs]
    plan_of: list[tuple[PairResult, str, list[Sample], list[str]]] = []
    out_notes = list(notes or [])
    for pr in results:
        for e in engines:
            if e == "move" and pr.src == pr.dst:
                out_notes.append(f"move_pages within node {pr.src} moves nothing: the move engine is not "
                                 "measured for it")
                continue
            samples, why = configurations(topo, pr.src, pr.dst, here, allowed, domains, e)
            plan_of.append((pr, e, samples, why))
    total = sum(len([s for s in smp if s.same_as is None]) for _, _, smp, _ in plan_of) * repeats
    done = 0
    complete = True
    cost = _probe(topo, plan_of, here, allowed) if plan_of else {}
    for k, (pr, engine, samples, why) in enumerate(plan_of):
        er = EngineResult(engine, samples, list(why))
        pr.engines[engine] = er
        slot_start = time.monotonic()
        share = (deadline - slot_start) / (len(plan_of) - k)
        unique = [s for s in samples if s.same_as is None]
        # the largest power-of-two size whose rounds fit this slot's share of the budget
        sz = _fits(topo, pr.src, pr.dst, size, engine)
        while sz > MIN_SIZE[engine] and cost[engine] * sz * len(unique) * repeats > share:
            sz //= 2
        measure = _Measurer(topo, pr.src, pr.dst, engine, here, allowed)
        try:
            for r in range(repeats):
                order = unique[r % len(unique):] + unique[:r % len(unique)]
                for s in order:
                    if time.monotonic() > deadline:
                        raise _OutOfTime
                    if r > 0 and time.monotonic() - slot_start > share:
                        raise _ShareSpent
                    s.size = sz
                    s.seconds.append(measure(s, sz))
                    done += 1
                    if progress:
                        progress(done, total, f"node {pr.src} -> node {pr.dst} {engine} {s.direction} "
                                 f"{s.threads} thread(s) {s.placement}: {s.gbps:.2f} GB/s")
        except _ShareSpent:
            er.notes.append(f"{r} round(s) of {repeats} fit this pair's share of the budget")
        except _OutOfTime:
            complete = False
            er.notes.append("the budget ran out before every configuration was measured")
        finally:
            measure.close()
        for s in samples:
            if s.same_as is not None:
                twin = next(t for t in unique if t.cpus == s.cpus)
                s.size, s.seconds = twin.size, twin.seconds
        if not complete:
            break
    if not complete:
        out_notes.append(f"the {budget:g} s budget ran out: pairs or settings without a measurement "
                         "keep the patch's defaults (raise --budget or lower --size)")
    return CalibrationRun(topo, results, budget, time.monotonic() - t0, repeats, complete, out_notes)


def _probe(topo: Topology, plan_of: list[tuple[PairResult, str, list[Sample], list[str]]], here: int,
           allowed: frozenset[int]) -> dict[str, float]:
    """Seconds per byte of one whole measurement (set-up, copy, checks) per engine, from one small
    single-threaded run on the first pair: what sizes the rest to the budget."""
    out: dict[str, float] = {}
    for pr, engine, samples, _ in plan_of:
        if engine in out:
            continue
        size = MIN_SIZE[engine]
        measure = _Measurer(topo, pr.src, pr.dst, engine, here, allowed)
        t0 = time.monotonic()
        try:
            measure(samples[0], size)
        finally:
            measure.close()
        out[engine] = (time.monotonic() - t0) / size
    return out


class _OutOfTime(Exception):
    pass


class _ShareSpent(Exception):
    pass


class _Measurer:
    """Times one sample: the copy engine over regions kept for the pair, or a fresh move."""

    def __init__(self, topo: Topology, src: int, dst: int, engine: str, here: int,
                 allowed: frozenset[int]) -> None:
        self.topo, self.src, self.dst, self.engine = topo, src, dst, engine
        self.here, self.allowed = here, allowed
        self.trial: CopyTrial | None = None

    def plan(self, s: Sample, size: int) -> Plan:
        item = HUGE_PAGE if self.engine == "copy" else BASE_PAGE
        if s.direction == CALLER:  # what make_plan returns for it: one thread, nobody's CPUs
            return make_plan(self.topo, self.src, self.dst, -(-size // item), size // BASE_PAGE, 1,
                             "auto", self.here, self.allowed, engine="move")
        p = make_plan(self.topo, self.src, self.dst, -(-size // item), size // BASE_PAGE, s.threads,
                      s.direction, self.here, self.allowed, engine=self.engine)
        return p.replace(cpus=s.cpus[:p.threads])

    def __call__(self, s: Sample, size: int) -> float:
        if self.engine == "move":
            return move_trial(size, self.plan(s, size)) / 1e9
        if self.trial is None or self.trial.size != size:
            self.close()
            self.trial = CopyTrial(size, self.src, self.dst, huge=True)
        _, report, _, _ = self.trial.run(lambda: self.plan(s, size))
        return report.wall_ns / 1e9

    def close(self) -> None:
        if self.trial is not None:
            self.trial.close()
            self.trial = None


def _open_parent(out: Path) -> int:
    out.parent.mkdir(parents=True, exist_ok=True)
    return os.open(out.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def _temp_name() -> str:
    return f".numamove-{os.urandom(8).hex()}.tmp"  # secrets.token_hex's bytes, without its imports


def _unnamed(dfd: int) -> tuple[int, str | None]:
    """A new file in the directory, unnamed where the file system allows (O_TMPFILE), else under a
    random name created exclusively (never a predictable name, never through a planted link).
    Call it with the stop signals held: a named one must not be left behind."""
    try:
        return os.open(".", os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o644, dir_fd=dfd), None
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            raise
    name = _temp_name()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.open(name, flags, 0o644, dir_fd=dfd), name


def check_output(path: str | os.PathLike[str], what: str = "the calibration") -> None:
    """Fail before measuring, not after, when the calibration (or plot) could not be written there."""
    from ._native import StopSignalsHeld

    out = Path(path)
    try:
        dfd = _open_parent(out)
        try:
            with StopSignalsHeld():
                fd, name = _unnamed(dfd)
                os.close(fd)
                if name:
                    os.unlink(name, dir_fd=dfd)
        finally:
            os.close(dfd)
    except OSError as exc:
        raise OutputError(f"cannot write {what} to {out}: {exc.strerror}") from None


def write_file(path: str | os.PathLike[str], data: bytes, what: str) -> None:
    """Put data at path atomically (a reader never sees half a file).

    The directory may be one others can write (--output /tmp/...): the file is written unnamed
    and only then given a random name and renamed over path, with the stop signals held from its
    creation, so no planted link is followed and no signal leaves a temporary file behind."""
    from ._native import StopSignalsHeld

    out = Path(path)
    try:
        dfd = _open_parent(out)
        try:
            with StopSignalsHeld():
                fd, name = _unnamed(dfd)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                    os.fsync(fd)
                    if name is None:
                        name = _temp_name()
                        os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=dfd, follow_symlinks=True)
                    os.rename(name, out.name, src_dir_fd=dfd, dst_dir_fd=dfd)
                except BaseException:
                    if name is not None:
                        try:
                            os.unlink(name, dir_fd=dfd)
                        except OSError:
                            pass
                    raise
                finally:
                    os.close(fd)
        finally:
            os.close(dfd)
    except OSError as exc:
        raise OutputError(f"cannot write {what} to {out}: {exc.strerror}") from None


def write(run: CalibrationRun, path: str | os.PathLike[str] | None) -> Path:
    """Write the calibration atomically (write_file); returns the path."""
    out = Path(path if path is not None else default_output())
    run.path = str(out)
    write_file(out, (dumps(run.to_json(), indent=2) + "\n").encode(), "the calibration")
    return out


def render(run: CalibrationRun) -> list[str]:
    """The table: per pair and engine, the best push and pull, and what auto will use."""
    lines = [f"note: {n}" for n in run.notes]
    m = machine_info(run.topo)
    lines.append(f"numamove calibrate: {len(run.pairs)} pair(s) in {run.elapsed:.1f} s (budget {run.budget:g} s), "
                 f"median of up to {run.repeats}; machine: {m['cpus']} CPUs, {m['nodes']} NUMA node(s)")
    lines.append(f"{'pair':<10}{'engine':<7}{'size':>9}  {'push':<26}{'pull':<26}{'caller':<13}auto uses")
    for p in run.pairs:
        for e, er in p.engines.items():
            per = er.best_per_direction()

            cells = {d: (f"{s.gbps:6.2f} GB/s {s.threads:>2}t {s.placement}" if (s := per.get(d))
                         else "not measured") for d in DIRECTIONS}
            caller = per.get(CALLER)
            cells[CALLER] = (f"{caller.gbps:6.2f} GB/s" if caller else "-" if e != "move" else "not measured")

            best = er.best()
            if best == CALLER:
                uses = "caller: 1 thread, not pinned"
            elif best:
                uses = f"{best}, {per[best].threads} thread(s) on CPU(s) {format_list(per[best].cpus)}"
            else:
                uses = "the patch's defaults"
            size = max((s.size for s in er.samples), default=0)
            lines.append(f"{p.src:>2} -> {p.dst:<4}{e:<7}{format_bytes(size):>9}  {cells['push']:<26}"
                         f"{cells['pull']:<26}{cells[CALLER]:<13}{uses}")
            for n in er.notes:
                lines.append(f"  {e}: {n}")
    if run.path:
        lines.append(f"written to {run.path}: policy auto and --threads auto use it on this machine")
    return lines


def plot(run: CalibrationRun, path: str) -> None:
    """Throughput against threads, one panel per pair and engine, one line per direction and placement."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(p, e, er) for p in run.pairs for e, er in p.engines.items()]
    cols = len({e for _, e, _ in panels}) or 1
    rows = max(1, -(-len(panels) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.2 * rows), squeeze=False)
    for ax, (p, e, er) in zip(axes.flat, panels):
        lines: dict[tuple[str, str], list[tuple[int, float]]] = {}
        for s in er.samples:
            if s.seconds:
                lines.setdefault((s.direction, s.placement), []).append((s.threads, s.gbps))
        for (d, pl), pts in sorted(lines.items()):
            pts.sort()
            ax.plot([t for t, _ in pts], [g for _, g in pts], marker="o", label=f"{d}, {pl}")
        ax.set_xscale("log", base=2)
        ax.set_title(f"node {p.src} -> node {p.dst}: {e}")
        ax.set_xlabel("threads")
        ax.set_ylabel("GB/s")
        ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, dpi=100, format=os.path.splitext(path)[1][1:].lower() or "png")
    plt.close(fig)
    write_file(path, buf.getvalue(), "the plot")  # like the calibration: no link in /tmp followed
