"""What the commands do once their arguments are parsed, without click.

`numamove proc` runs here both from the click CLI (numamove.cli) and from the entry
point's fast path (numamove.entry, numamove.fastargs), which parses the common forms of
`proc` without importing click: click's import alone costs ~30 ms, half of a small run.
Everything here reports through echo() and raises numamove's own errors, never click's,
so that both paths print the same words and exit with the same codes.
"""

from __future__ import annotations

# the builtin under the signal module: the same calls, without building its Signals enum (~3 ms of every
# run's start-up); the name of a signal that does arrive comes from signal, imported then
import _signal  # type: ignore[import-not-found]  # noqa: I001 - no stub: the same calls as signal's
import os
import sys
import time

from .errors import EXIT_FAILURE, EXIT_PARTIAL, Interrupted, NodeUnavailableError, NumamoveError, UsageError

TYPE_CHECKING = False  # typing's own constant to mypy; importing typing costs start-up ~4 ms
if TYPE_CHECKING:
    from typing import Any


def echo(text: str, err: bool = False) -> None:
    stream = sys.stderr if err else sys.stdout
    stream.write(text + "\n")
    stream.flush()


def emit_json(doc: Any) -> None:
    import json

    echo(json.dumps(doc, indent=2, sort_keys=False))


def calibration_for(topo: Any, quiet: bool = False) -> Any:
    """The calibration policy/threads auto follow on this machine; a bad file is a warning only."""
    from .calibration import load

    loaded = load(topo)
    if loaded.warning and not quiet:
        echo(f"numamove: warning: {loaded.warning}", err=True)
    return loaded


def node_option(value: str | None, topo: Any, role: str) -> int | None:
    """One node named by an option ("1", or "all" on a one-node machine), validated; None when not given."""
    if value is None:
        return None
    from .nodelist import parse_list

    ids = parse_list(value, None, "node") if value.strip() != "all" else topo.ids
    if len(ids) != 1:
        raise UsageError(f"invalid value for {role}: '{value}' names {len(ids)} nodes; give exactly one")
    return int(topo.node(ids[0]).id)


def parse_pids(pids: tuple[str, ...]) -> list[int]:
    out = []
    for p in pids:
        if not p.isdigit() or int(p) <= 0:
            raise UsageError(f"invalid value for PID: '{p}' is not a PID")
        out.append(int(p))
    return out


def node_of_cpus(pid: int, topo: Any) -> int:
    """The one node whose CPUs pid may run on (--to cpus)."""
    try:
        cpus = os.sched_getaffinity(pid)
    except ProcessLookupError:
        from .proc import NoSuchProcessError

        raise NoSuchProcessError(f"no process with PID {pid}") from None
    nodes = sorted({n for c in cpus if (n := topo.node_of_cpu(c)) is not None})
    if len(nodes) != 1:
        raise UsageError(f"PID {pid} may run on CPUs of nodes {','.join(map(str, nodes))}: "
                         "name one with --to NODE")
    return int(nodes[0])


def timings(reports: list[Any], work_started: float) -> dict[str, float]:
    """Where the run's time went: start-up (numamove's import to the first target: imports, options,
    topology, calibration, targets), bookkeeping (maps, pagemap, counting, planning) and the move."""
    from . import IMPORTED_AT

    return {"startup_seconds": work_started - IMPORTED_AT,
            "bookkeeping_seconds": sum(r.bookkeeping for r in reports),
            "move_seconds": sum(r.seconds for r in reports),
            "total_seconds": time.perf_counter() - IMPORTED_AT}


def timings_line(t: dict[str, float]) -> str:
    return (f"time: start-up {t['startup_seconds'] * 1e3:.1f} ms, bookkeeping {t['bookkeeping_seconds'] * 1e3:.1f} ms, "
            f"move {t['move_seconds'] * 1e3:.1f} ms, total {t['total_seconds'] * 1e3:.1f} ms "
            "(from numamove's import; the interpreter's own start-up comes before)")


def print_reports(reports: list[Any], as_json: bool, doc: dict[str, Any]) -> None:
    """Migration reports on stdout: doc as JSON, or each report as text."""
    if as_json:
        emit_json(doc)
    else:
        from .report import render_migration

        for r in reports:
            for line in render_migration(r):
                echo(line)


def finish(reports: list[Any], as_json: bool, doc: dict[str, Any]) -> None:
    """Print migration reports (doc as JSON, or text) and exit 3 when any is partial."""
    print_reports(reports, as_json, doc)
    if any(r.partial for r in reports):
        sys.exit(EXIT_PARTIAL)


def proc_run(pids: tuple[str, ...], to_text: str, from_text: str | None, name: str | None,
             ranges: tuple[str, ...], only: str | None, move_all: bool, threads_text: str, policy: str,
             batch: int | None, max_pause: float | None, wait: bool, dry_run: bool, verbose: bool, quiet: bool,
             as_json: bool) -> None:
    """`numamove proc` (see its --help in numamove.cli)."""
    from .maps import parse_only, parse_range
    from .planner import parse_threads
    from .proc import (
        environment_warnings,
        resolve_targets,
    )
    from .topology import current_node, read_topology

    limit = parse_threads(threads_text)
    if len(limit) != 1:
        raise UsageError("invalid value for --threads: give one thread limit")
    range_list = [parse_range(r) for r in ranges] if ranges else None
    kinds = parse_only(only) if only else None
    pid_list = parse_pids(pids)
    if not pid_list and name is None:
        raise UsageError("give at least one PID or --name REGEX")
    topo = read_topology()
    from_nodes = frozenset(topo.parse_nodes(from_text)) if from_text else None
    to_cpus = to_text.strip() == "cpus"
    fixed_to = None if to_cpus else node_option(to_text, topo, "--to")
    if fixed_to is not None:
        topo.require(fixed_to, "--to", memory=True)
    targets, unusable = resolve_targets(pid_list, name)
    if not quiet:
        for w in environment_warnings():
            echo(f"numamove: warning: {w}", err=True)
    calibration = calibration_for(topo, quiet)
    if (verbose or dry_run) and not as_json:
        echo(f"auto: {calibration.why}", err=verbose and not dry_run)
    here = current_node(topo)
    allowed = frozenset(os.sched_getaffinity(0))
    reports: list[Any] = []
    outcomes = [Outcome(pid, "", "failed", exc) for pid, exc in unusable]
    work_started = time.perf_counter()
    from ._native import STOP_SIGNALS

    saved = _raise_on_signals(STOP_SIGNALS)
    try:
        stopped = _run_targets(targets, outcomes, reports, topo, fixed_to, from_nodes, move_all, limit[0], policy,
                               batch, max_pause, dry_run, calibration, range_list, kinds, here, allowed, wait,
                               quiet, as_json, verbose)
        spent = timings(reports, work_started)
        if verbose and not as_json:
            echo(timings_line(spent), err=True)
        # the report is written whole: a signal now waits for it, then ends the run (exit 128+signal)
        held = _signal.pthread_sigmask(_signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            print_reports(reports, as_json, {"dry_run": dry_run, "calibration": calibration.why, "timings": spent,
                                             "targets": [o.to_json() for o in outcomes],
                                             "processes": [r.to_json() for r in reports]})
            for o in outcomes:
                if o.error is not None:
                    echo(f"numamove: {'warning' if o.outcome == 'skipped' else 'error'}: {o.error}", err=True)
        finally:
            _signal.pthread_sigmask(_signal.SIG_SETMASK, held)
    finally:
        for sig, handler in saved.items():
            _signal.signal(sig, handler)
    sys.exit(stopped.exit_code if stopped is not None else exit_code(outcomes, reports))


def _run_targets(targets: list[Any], outcomes: list[Outcome], reports: list[Any], topo: Any, fixed_to: int | None,
                 from_nodes: frozenset[int] | None, move_all: bool, limit: int | None, policy: str, batch: int | None,
                 max_pause: float | None, dry_run: bool, calibration: Any, range_list: Any, kinds: Any, here: int,
                 allowed: frozenset[int], wait: bool, quiet: bool, as_json: bool, verbose: bool) -> Interrupted | None:
    """Move each target in turn, appending its outcome (and report); the signal that stopped them, if any."""
    from .migrate import MoveOptions, TargetReport, migrate, progress_printer
    from .proc import NoSuchProcessError, PidReusedError, TargetLock, mems_allowed

    for t in targets:
        # one target's trouble never discards the others' work: each gets its own outcome
        try:
            t.check_same()
            to = fixed_to if fixed_to is not None else node_of_cpus(t.pid, topo)
            if to not in mems_allowed(t.pid):
                raise NodeUnavailableError(f"node {to} is outside the cpuset of PID {t.pid} "
                                           f"(Mems_allowed: {','.join(map(str, mems_allowed(t.pid)))})")
            opts = MoveOptions(to, from_nodes, move_all, limit, policy, batch, max_pause, dry_run, calibration)
            with TargetLock(t.pid, wait=wait, start=t.start):
                t.check_same()  # the lock is taken by PID: the same process still?
                rep = migrate(t, topo, opts, range_list, kinds, here, allowed,
                              progress_printer(quiet or as_json))
        except Interrupted as exc:
            # within one batch of the signal: what moved is reported, the targets after are not touched
            if isinstance(exc.report, TargetReport):
                reports.append(exc.report)
            outcomes.append(Outcome(t.pid, t.name, "interrupted", exc))
            return exc
        except (NoSuchProcessError, PidReusedError) as exc:
            outcomes.append(Outcome(t.pid, t.name, "skipped", exc))
            continue
        except NumamoveError as exc:
            outcomes.append(Outcome(t.pid, t.name, "failed", exc))
            continue
        reports.append(rep)
        outcomes.append(Outcome(t.pid, t.name, "moved", None))
        if verbose and not as_json:
            for p in rep.plans:
                echo("plan: " + "; ".join(p.describe()), err=True)
    return None


def _raise_on_signals(signals: tuple[int, ...]) -> dict[int, Any]:
    """SIGINT, SIGTERM and SIGHUP raise Interrupted wherever Python is; inside a move the C engine's own
    handler takes over (numamove._native.stop_install) and numamove stops within one batch. Returns the
    handlers they replace, for the caller to put back."""

    def interrupted(signum: int, _frame: object) -> None:
        raise Interrupted(signum)

    saved = {}
    for sig in signals:
        saved[sig] = _signal.signal(sig, interrupted)
    return saved


class Outcome:
    """What became of one target: moved (its report says how many pages), skipped (it exited, or
    its PID now belongs to another process), failed (why, and the exit code that failure has) or
    interrupted (a signal: its report says what had moved)."""

    __slots__ = ("pid", "name", "outcome", "error")

    def __init__(self, pid: int, name: str, outcome: str, error: NumamoveError | None) -> None:
        self.pid = pid
        self.name = name
        self.outcome = outcome
        self.error = error

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "name": self.name, "outcome": self.outcome,
                "reason": str(self.error) if self.error is not None else None,
                "exit_code": self.error.exit_code if self.error is not None and self.outcome != "skipped" else 0}


def exit_code(outcomes: list[Outcome], reports: list[Any]) -> int:
    """0: every target moved whole; 3: some targets or pages failed; nothing done: the failure's own code
    (1, or 4 when another numamove holds the process), 1 when every target had exited."""
    failed = [o for o in outcomes if o.outcome == "failed"]
    if not reports:
        assert failed or outcomes, "no targets at all is refused before this"
        return failed[0].error.exit_code if failed and failed[0].error is not None else EXIT_FAILURE
    if failed or any(r.partial for r in reports):
        return EXIT_PARTIAL
    return 0
