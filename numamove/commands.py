"""What the commands do once their arguments are parsed, without click.

`numamove proc` and `numamove file` run here both from the click CLI (numamove.cli) and from
the entry point's fast path (numamove.entry, numamove.fastargs), which parses their common
forms without importing click: click's import alone costs ~30 ms, half of a small run.
Everything here reports through echo() and raises numamove's own errors, never click's,
so that both paths print the same words and exit with the same codes.
"""

from __future__ import annotations

# the builtin under the signal module: the same calls, without building its Signals enum (~3 ms of every
# run's start-up); the name of a signal that does arrive comes from signal, imported then
import _signal  # type: ignore[import-not-found]  # noqa: I001 - no stub: the same calls as signal's
import errno
import os
import sys
import time

from .errors import EXIT_FAILURE, EXIT_PARTIAL, Interrupted, NodeUnavailableError, NumamoveError, UsageError

TYPE_CHECKING = False  # typing's own constant to mypy; importing typing costs start-up ~4 ms
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


class Stdout:
    """What became of standard output in this run. A write that fails (a full disk, a closed pipe,
    an I/O error, a closed descriptor) is kept in `lost` and later output is dropped: never a
    traceback, and never a half-written move left unreported in its exit status. The entry point
    (numamove.entry.guarded) turns it into one line on stderr and an exit code; `after_move` says
    the output being written was a move's report, whose exit status then still says how the move went."""

    lost: OSError | None = None
    after_move = False


def echo(text: str, err: bool = False) -> None:
    """Text on stdout (or stderr), each line printable (numamove.text.printable: names and paths others
    chose can forge no line and no terminal escape); see Stdout for what a failed write does."""
    if err:
        from .entry import say

        say(text)  # one message, one line
        return
    if not text.isprintable():
        from .text import printable

        # reports and JSON come a line or a document at a time
        text = "\n".join(printable(line) for line in text.split("\n"))
    if Stdout.lost is not None:
        return
    try:
        if sys.stdout is None:  # started with descriptor 1 closed (see entry.main)
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        _write(sys.stdout, text)
    except OSError as exc:
        Stdout.lost = exc
        discard_stdout()


def _write(stream: Any, text: str) -> None:
    try:
        stream.write(text + "\n")
    except UnicodeEncodeError:  # a locale that cannot show some printable character (an ASCII-only stdout)
        stream.write(text.encode("ascii", "backslashreplace").decode("ascii") + "\n")
    stream.flush()


def discard_stdout() -> None:
    """Point descriptor 1 at /dev/null: what stdout still buffers then goes nowhere at exit, instead of
    failing again in the interpreter's last flush ("Exception ignored", exit 120)."""
    try:
        fd = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.dup2(fd, sys.stdout.fileno() if sys.stdout is not None else 1)
    except (OSError, ValueError):  # no descriptor behind sys.stdout (a test's capture)
        pass
    finally:
        os.close(fd)


def emit_json(doc: Any) -> None:
    from .jsontext import dumps  # not the json package: its import is ~13 ms (see jsontext)

    echo(dumps(doc, indent=2))


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


def file_run(paths: tuple[str, ...], to_text: str, from_text: str | None, threads_text: str, policy: str,
             do_copy: bool, output: str | None, dry_run: bool, quiet: bool, as_json: bool) -> None:
    """`numamove file` (see its --help in numamove.cli)."""
    from .planner import parse_threads
    from .topology import current_node, read_topology

    limit = parse_threads(threads_text)
    if len(limit) != 1:
        raise UsageError("invalid value for --threads: give one thread limit")
    if output and not do_copy:
        raise UsageError("--output goes with --copy")
    if output and len(paths) != 1:
        raise UsageError("--output takes one source file")
    topo = read_topology()
    to = node_option(to_text, topo, "--to")
    assert to is not None
    topo.require(to, "--to", memory=True)
    from_nodes = frozenset(topo.parse_nodes(from_text)) if from_text else None
    here = current_node(topo)
    allowed = frozenset(os.sched_getaffinity(0))
    calibration = calibration_for(topo, quiet)
    if dry_run and not as_json:
        echo(f"auto: {calibration.why}")
    if do_copy:
        _copy_files(paths, output, to, topo, limit[0], policy, here, allowed, dry_run, calibration, as_json)
        return
    from .files import move_file
    from .pagemove import MoveOptions, progress_printer

    opts = MoveOptions(to, from_nodes, False, limit[0], policy, None, None, dry_run, calibration)
    work_started = time.perf_counter()
    reports, outcomes, stopped = _each_file(
        paths, "moved", lambda p: move_file(p, topo, opts, here, allowed, progress_printer(quiet or as_json)))
    docs = []
    for r in reports:
        d = r.to_json()
        d.pop("pid")
        d["file"] = d.pop("name")
        docs.append(d)
    _file_finish(reports, outcomes, stopped, dry_run, as_json,
                 {"dry_run": dry_run, "calibration": calibration.why, "timings": timings(reports, work_started),
                  "files": docs, "targets": [_file_outcome(o) for o in outcomes]})


def _copy_files(paths: tuple[str, ...], output: str | None, to: int, topo: Any, limit: int | None, policy: str,
                here: int, allowed: frozenset[int], dry_run: bool, calibration: Any, as_json: bool) -> None:
    from .filecopy import copy_file

    copies, outcomes, stopped = _each_file(
        paths, "copied", lambda p: copy_file(p, output, to, topo, limit, policy, here, allowed, dry_run, calibration))
    _file_finish(copies, outcomes, stopped, dry_run, as_json,
                 {"dry_run": dry_run, "calibration": calibration.why, "copies": [c.to_json() for c in copies],
                  "targets": [_file_outcome(o) for o in outcomes]})


def _copy_lines(copies: list[Any], dry_run: bool) -> list[str]:
    from .nodelist import format_bytes
    from .text import printable

    lines = []
    for c in copies:
        verb = "would copy" if dry_run else "copied"
        line = f"{verb} {printable(c.source)} -> {printable(c.output)} on node {c.node}: {format_bytes(c.bytes)}"
        if c.data_bytes != c.bytes:
            line += f" ({format_bytes(c.data_bytes)} of data, the rest holes)"
        if not dry_run and c.seconds:
            line += f" in {c.seconds:.3f} s ({c.data_bytes / c.seconds / 1e9:.2f} GB/s), verified"
        lines.append(line)
        if c.plan:
            lines.append("  " + "; ".join(c.plan.describe()[1:]))
        if not dry_run and c.fill["method"] == "userfaultfd":
            lines.append("  pages: allocated on the node holding their bytes (userfaultfd: no zeroing pass)")
        elif not dry_run and c.fill["method"] == "populate":
            lines.append(f"  pages: allocated zeroed, then copied into ({c.fill['why']})")
        lines += [f"  note: {note}" for note in c.notes]
    return lines


def _each_file(paths: tuple[str, ...], done: str, one: Callable[[str], Any]) -> tuple[list[Any], list[Outcome],
                                                                                        Interrupted | None]:
    """one(path) for each path in turn: (the reports, each path's outcome, the signal that stopped the run).
    One file's trouble (a planted link, a file in use, not on tmpfs) never discards what was done for the
    others, as with proc's targets: `numamove file /dev/shm/*` reports every file it moved or copied.
    A stop signal ends the run within the file it arrives in (that file's report says what had moved, a
    copy is discarded), and the files after it are not touched."""
    from ._native import STOP_SIGNALS

    results: list[Any] = []
    outcomes: list[Outcome] = []
    stopped = None
    saved = _raise_on_signals(STOP_SIGNALS)
    try:
        for path in paths:
            try:
                results.append(one(path))
                outcomes.append(Outcome(0, path, done, None))
            except Interrupted as exc:
                if exc.report is not None:
                    results.append(exc.report)
                outcomes.append(Outcome(0, path, "interrupted", exc))
                stopped = exc
                break
            except NumamoveError as exc:
                outcomes.append(Outcome(0, path, "failed", exc))
    except Interrupted as exc:  # between two files
        stopped = exc
    finally:
        for sig, handler in saved.items():
            _signal.signal(sig, handler)
    return results, outcomes, stopped


def _file_outcome(o: Outcome) -> dict[str, Any]:
    return {"file": o.name, "outcome": o.outcome, "reason": str(o.error) if o.error is not None else None,
            "exit_code": o.error.exit_code if o.error is not None else 0}


def _file_finish(reports: list[Any], outcomes: list[Outcome], stopped: Interrupted | None, dry_run: bool,
                 as_json: bool, doc: dict[str, Any]) -> None:
    """Print what was done for every file, then each failure as one line on stderr, whole (a signal waits
    for it); exit 128+signal, or 0, 3 (some files or pages failed) or the failure's own code (none done)."""
    from ._native import StopSignalsHeld

    Stdout.after_move = not dry_run and any(o.outcome != "failed" for o in outcomes)
    with StopSignalsHeld():
        if as_json:
            emit_json(doc)
        elif "copies" in doc:
            for line in _copy_lines(reports, dry_run):
                echo(line)
        else:
            print_reports(reports, False, doc)
        for o in outcomes:
            if o.error is not None:
                echo(f"numamove: error: {o.error}", err=True)
    sys.exit(stopped.exit_code if stopped is not None else exit_code(outcomes, reports))


def proc_run(pids: tuple[str, ...], to_text: str, from_text: str | None, name: str | None,
             ranges: tuple[str, ...], only: str | None, move_all: bool, threads_text: str, policy: str,
             batch: int | None, max_pause: float | None, wait: bool, dry_run: bool, verbose: bool, quiet: bool,
             as_json: bool, cgroup: str | None = None, unit: str | None = None, set_mems: bool = False,
             rate: str | None = None) -> None:
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
    if cgroup is not None and unit is not None:
        raise UsageError("give --cgroup or --unit, not both")
    if set_mems and cgroup is None and unit is None:
        raise UsageError("--set-mems hands a group over to the node: give --cgroup PATH or --unit NAME")
    if not pid_list and name is None and cgroup is None and unit is None:
        raise UsageError("give at least one PID, --name REGEX, --cgroup PATH or --unit NAME")
    pacer = None
    if rate is not None:
        from .cgroups import parse_rate
        from .pagemove import Pacer

        pacer = Pacer(parse_rate(rate))
    topo = read_topology()
    from_nodes = frozenset(topo.parse_nodes(from_text)) if from_text else None
    to_cpus = to_text.strip() == "cpus"
    if to_cpus and (cgroup is not None or unit is not None):
        raise UsageError("--to cpus is per process: with --cgroup or --unit, name the node")
    fixed_to = None if to_cpus else node_option(to_text, topo, "--to")
    if fixed_to is not None:
        topo.require(fixed_to, "--to", memory=True)
    group = None
    if cgroup is not None or unit is not None:
        from .cgroups import open_cgroup, unit_cgroup

        group = open_cgroup(cgroup if cgroup is not None else unit_cgroup(unit or ""))
    try:
        _proc_run(pid_list, name, group, unit, set_mems, pacer, topo, fixed_to, from_nodes, range_list, kinds,
                  move_all, limit[0], policy, batch, max_pause, wait, dry_run, verbose, quiet, as_json,
                  environment_warnings, resolve_targets, current_node)
    finally:
        if group is not None:
            group.close()


def _proc_run(pid_list: list[int], name: str | None, group: Any, unit: str | None, set_mems: bool, pacer: Any,
              topo: Any, fixed_to: int | None, from_nodes: frozenset[int] | None, range_list: Any, kinds: Any,
              move_all: bool, limit: int | None, policy: str, batch: int | None, max_pause: float | None,
              wait: bool, dry_run: bool, verbose: bool, quiet: bool, as_json: bool, environment_warnings: Any,
              resolve_targets: Any, current_node: Any) -> None:
    from ._native import STOP_SIGNALS, StopSignalsHeld

    targets, unusable = resolve_targets(pid_list, name)
    outcomes = [Outcome(pid, "", "failed", exc) for pid, exc in unusable]
    saved = _raise_on_signals(STOP_SIGNALS)
    try:
        handover = None
        if group is not None:
            from .cgroups import Handover

            assert fixed_to is not None
            handover = Handover(group, fixed_to, set_mems, dry_run)
            try:
                # widening is a few quick writes: whole, or undone on a signal (nothing has moved yet)
                with StopSignalsHeld():
                    handover.prepare()
            except Interrupted:
                with StopSignalsHeld():
                    handover.undo()
                raise
            _add_group_targets(group, targets, outcomes, resolve_targets)
            if not targets and not outcomes:
                with StopSignalsHeld():
                    handover.undo()
                from .proc import NoSuchProcessError

                raise NoSuchProcessError(f"cgroup {group.rel} has no processes"
                                         + (" but numamove itself" if group.myself else ""))
        _proc_move(targets, outcomes, group, unit, handover, pacer, topo, fixed_to, from_nodes, range_list, kinds,
                   move_all, limit, policy, batch, max_pause, wait, dry_run, verbose, quiet, as_json,
                   environment_warnings, resolve_targets, current_node)
    finally:
        for sig, handler in saved.items():
            _signal.signal(sig, handler)


def _proc_move(targets: list[Any], outcomes: list[Outcome], group: Any, unit: str | None, handover: Any,
               pacer: Any, topo: Any, fixed_to: int | None, from_nodes: frozenset[int] | None, range_list: Any,
               kinds: Any, move_all: bool, limit: int | None, policy: str, batch: int | None,
               max_pause: float | None, wait: bool, dry_run: bool, verbose: bool, quiet: bool, as_json: bool,
               environment_warnings: Any, resolve_targets: Any, current_node: Any) -> None:
    from ._native import StopSignalsHeld

    if not quiet:
        for w in environment_warnings():
            echo(f"numamove: warning: {w}", err=True)
    calibration = calibration_for(topo, quiet)
    if (verbose or dry_run) and not as_json:
        echo(f"auto: {calibration.why}", err=verbose and not dry_run)
    here = current_node(topo)
    allowed = frozenset(os.sched_getaffinity(0))
    reports: list[Any] = []
    work_started = time.perf_counter()
    rescans = 0
    appeared: list[int] = []
    group_error: NumamoveError | None = None
    run = (topo, fixed_to, from_nodes, move_all, limit, policy, batch, max_pause, dry_run, calibration,
           range_list, kinds, here, allowed, wait, quiet, as_json, verbose, group, pacer,
           handover is not None and handover.dry_run and bool(handover.widened))
    stopped = _run_targets(targets, outcomes, reports, *run)
    try:
        while group is not None and stopped is None:
            # processes that appeared in the group during the move (forks, new tasks): a bounded rescan
            fresh: list[Any] = []
            _add_group_targets(group, fresh, outcomes, resolve_targets, {(t.pid, t.start) for t in targets})
            if not fresh:
                break
            if rescans == RESCANS:
                appeared = [t.pid for t in fresh]
                break
            rescans += 1
            targets += fresh
            stopped = _run_targets(fresh, outcomes, reports, *run)
        if handover is not None and stopped is None:
            try:
                handover.finish()
            except Interrupted:
                raise
            except NumamoveError as exc:
                group_error = exc
    except Interrupted as exc:
        stopped = exc
    spent = timings(reports, work_started)
    if verbose and not as_json:
        echo(timings_line(spent), err=True)
    doc: dict[str, Any] = {"dry_run": dry_run, "calibration": calibration.why, "timings": spent}
    if group is not None:
        doc["cgroup"] = _group_json(group, unit, handover, rescans, appeared, reports, outcomes, pacer)
    elif pacer is not None:
        doc["rate"] = _rate_json(reports, pacer)
    doc["targets"] = [o.to_json() for o in outcomes]
    doc["processes"] = [r.to_json() for r in reports]
    # the report is written whole: a signal now waits for it, then ends the run (exit 128+signal)
    Stdout.after_move = not dry_run and bool(reports)
    with StopSignalsHeld():
        print_reports(reports, as_json, doc)
        if not as_json and group is not None:
            for line in _group_lines(doc["cgroup"], handover):
                echo(line)
        elif not as_json and pacer is not None and len(reports) > 1:
            r = doc["rate"]
            echo(f"rate: {r['achieved_bytes_per_second'] / 2**20:.1f} MiB/s over the run "
                 f"(--rate {r['limit_bytes_per_second'] / 2**20:.1f} MiB/s)")
        for o in outcomes:
            if o.error is not None:
                echo(f"numamove: {'warning' if o.outcome == 'skipped' else 'error'}: {o.error}", err=True)
        if appeared:
            echo(f"numamove: warning: processes kept appearing in cgroup {group.rel} after {RESCANS} rescans: "
                 f"{len(appeared)} not moved (PIDs {' '.join(map(str, appeared[:10]))})", err=True)
        if group_error is not None:
            echo(f"numamove: error: {group_error}", err=True)
    if stopped is not None:
        sys.exit(stopped.exit_code)
    code = exit_code(outcomes, reports)
    if (group_error is not None or appeared) and code == 0:
        code = EXIT_PARTIAL
    sys.exit(code)


RESCANS = 5  # rounds of picking up processes that appeared in a group while it was being moved


def _add_group_targets(group: Any, targets: list[Any], outcomes: list[Outcome], resolve_targets: Any,
                       seen: set[tuple[int, str]] | None = None) -> None:
    """Append the group's processes not in targets (or in seen) to targets; one that exited between
    the listing and the look is skipped, not failed. A kernel thread (the root group holds them) has
    no user memory: it is counted in group.kernel_threads, not failed. A process that failed once is
    not looked at again by a rescan (nor reported twice). numamove itself, when it runs inside the group,
    is left out and named in group.myself."""
    failed = {o.pid for o in outcomes if o.outcome == "failed"}
    have = {t.pid for t in targets} | failed | group.kernel_threads
    me = os.getpid()
    pids = [pid for pid in group.processes() if pid not in have]
    if me in pids:
        group.myself = me
        pids.remove(me)
    found, bad = resolve_targets(pids)
    from .proc import KernelThreadError, NoSuchProcessError

    for pid, exc in bad:
        if isinstance(exc, NoSuchProcessError):
            if seen is None:
                outcomes.append(Outcome(pid, "", "skipped", exc))
        elif isinstance(exc, KernelThreadError):
            group.kernel_threads.add(pid)
        else:
            outcomes.append(Outcome(pid, "", "failed", exc))
    for t in found:
        if seen is not None and (t.pid, t.start) in seen:
            continue
        t.in_group = True
        targets.append(t)


def _moved(reports: list[Any]) -> tuple[int, float, float]:
    """Bytes moved, seconds in the move, and their ratio, over the reports."""
    moved = sum(r.moved[1] for r in reports)
    secs = sum(r.seconds for r in reports)
    return moved, secs, moved / secs if secs > 0 else 0.0


def _rate_json(reports: list[Any], pacer: Any) -> dict[str, Any]:
    return {"limit_bytes_per_second": pacer.rate, "achieved_bytes_per_second": _moved(reports)[2],
            "slept_seconds": pacer.slept}


def _group_json(group: Any, unit: str | None, handover: Any, rescans: int, appeared: list[int],
                reports: list[Any], outcomes: list[Outcome], pacer: Any) -> dict[str, Any]:
    moved, secs, rate = _moved(reports)
    return {"path": group.rel, "mount": group.mount, "unit": unit,
            "processes": sum(1 for o in outcomes if o.outcome in ("moved", "interrupted")),
            "exited": sum(1 for o in outcomes if o.outcome == "skipped"),
            "failed": sum(1 for o in outcomes if o.outcome == "failed"),
            "kernel_threads": len(group.kernel_threads),
            "numamove_pid": group.myself,
            "rescans": rescans, "appeared_not_moved": appeared,
            "moved_bytes": moved, "move_seconds": secs,
            "achieved_bytes_per_second": rate,
            "max_call_ms": max((r.max_call_ms for r in reports), default=0.0),
            "rate": _rate_json(reports, pacer) if pacer is not None else None,
            "cpuset": handover.to_json() if handover is not None else None}


def _group_lines(g: dict[str, Any], handover: Any) -> list[str]:
    from .nodelist import format_bytes

    head = f"unit {g['unit']} (cgroup {g['path']})" if g["unit"] else f"cgroup {g['path']}"
    lines = [f"{head}: {g['processes']} process(es) moved, {g['exited']} exited, {g['failed']} failed; "
             f"{format_bytes(g['moved_bytes'])} in {g['move_seconds']:.3f} s "
             f"({format_bytes(g['achieved_bytes_per_second'])}/s), longest move_pages call {g['max_call_ms']:.1f} ms"
             + (f"; {g['rescans']} rescan(s) for new processes" if g["rescans"] else "")
             + (f"; {g['kernel_threads']} kernel thread(s) left alone (no user memory)" if g["kernel_threads"]
                else "")
             + (f"; numamove itself (PID {g['numamove_pid']}) is in the group: not moved" if g["numamove_pid"]
                else "")]
    if g["rate"] is not None:
        lines.append(f"  rate: {format_bytes(g['rate']['achieved_bytes_per_second'])}/s achieved "
                     f"(--rate {format_bytes(g['rate']['limit_bytes_per_second'])}/s)")
    if handover is not None:
        lines += ["  " + line for line in handover.summary()]
    return lines


def _run_targets(targets: list[Any], outcomes: list[Outcome], reports: list[Any], topo: Any, fixed_to: int | None,
                 from_nodes: frozenset[int] | None, move_all: bool, limit: int | None, policy: str, batch: int | None,
                 max_pause: float | None, dry_run: bool, calibration: Any, range_list: Any, kinds: Any, here: int,
                 allowed: frozenset[int], wait: bool, quiet: bool, as_json: bool, verbose: bool, group: Any = None,
                 pacer: Any = None, widen_planned: bool = False) -> Interrupted | None:
    """Move each target in turn, appending its outcome (and report); the signal that stopped them, if any."""
    from .pagemove import MoveOptions, TargetReport, migrate, progress_printer
    from .proc import NoSuchProcessError, PidReusedError, TargetLock, mems_allowed

    for t in targets:
        # one target's trouble never discards the others' work: each gets its own outcome
        try:
            t.check_same()
            if t.in_group and not group.contains(t.pid):
                outcomes.append(Outcome(t.pid, t.name, "skipped", NoSuchProcessError(
                    f"PID {t.pid} ({t.name}) left cgroup {group.rel} before it was moved: not moved")))
                continue
            to = fixed_to if fixed_to is not None else node_of_cpus(t.pid, topo)
            if to not in mems_allowed(t.pid) and not (widen_planned and t.in_group):  # a dry run's --set-mems
                raise NodeUnavailableError(f"node {to} is outside the cpuset of PID {t.pid} "
                                           f"(Mems_allowed: {','.join(map(str, mems_allowed(t.pid)))})")
            opts = MoveOptions(to, from_nodes, move_all, limit, policy, batch, max_pause, dry_run, calibration,
                               pacer)
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
    if failed or any(getattr(r, "partial", False) for r in reports):  # a copy is whole or not made
        return EXIT_PARTIAL
    return 0
