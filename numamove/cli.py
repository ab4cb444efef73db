"""The command line: parse with click, call the API, render text or JSON, map errors to exit codes.

Heavy modules (the C extension, py-libnuma) are imported inside the commands so
that `numamove --version` and `--help` stay fast for cron and scripts.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from . import __version__
from .commands import calibration_for, echo, emit_json, node_option, parse_pids
from .errors import EXIT_FAILURE, EXIT_USAGE

EXIT_CODES_HELP = """\b
Exit codes:
  0  success
  1  failure (nothing was done)
  2  usage error (bad option or argument)
  3  partly done (some pages could not be moved)
  4  busy: another numamove is migrating the same process (see proc --wait)
  130  interrupted"""


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EXIT_CODES_HELP,
)
@click.version_option(__version__, "-V", "--version", prog_name="numamove")
def cli() -> None:
    """Move memory between NUMA nodes with pinned, multi-threaded copies.

    numamove brings the batched multi-threaded page copy of the 2025 kernel
    patch series to userspace: copies run on threads pinned to the CPUs of the
    source node (push) or the destination node (pull).

    \b
    Examples:
      numamove nodes                 # the machine's NUMA topology
      numamove nodes --json
      numamove proc 1234 --to 1      # move a running process's memory to node 1
      numamove show 1234             # where its memory is
      numamove file /dev/shm/x --to 1  # move a shared-memory file in place
      numamove bench                 # engine vs single-threaded memcpy
      numamove bench --from 0 --to 1 --size 256M --threads 1,2,4 --policy push,pull
      numamove calibrate             # measure push/pull, threads, placement for auto
    """


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def nodes(as_json: bool) -> None:
    """Show every online NUMA node: CPUs, memory, and the distance matrix.

    CPU-less nodes (memory-only, such as CXL expanders) are marked as such.

    \b
    Examples:
      numamove nodes
      numamove nodes --json | jq '.nodes[] | select(.has_cpu == false)'
    """
    from .nodelist import format_bytes, format_list
    from .topology import read_topology

    topo = read_topology(use_libnuma=True)
    if as_json:
        emit_json(topo.to_json())
        return
    echo(f"{'node':>4}  {'cpus':<14}{'count':>5}  {'memory total':>13}  {'free':>11}  notes")
    for n in topo.ids:
        node = topo.nodes[n]
        notes = []
        if not node.has_cpu:
            notes.append("CPU-less (memory only)")
        if not node.has_memory:
            notes.append("no memory")
        cpus = format_list(node.cpus)
        echo(f"{n:>4}  {cpus or '-':<14}{len(node.cpus):>5}  {format_bytes(node.mem_total):>13}  "
                   f"{format_bytes(node.mem_free):>11}  {', '.join(notes)}".rstrip())
    echo("distances:")
    echo("      " + "".join(f"{b:>5}" for b in topo.ids))
    for a in topo.ids:
        echo(f"{a:>5} " + "".join(f"{topo.distance(a, b):>5}" for b in topo.ids))


THREADS_HELP = ("Thread limit, 1..32, or auto: the calibration's for this pair, else the patch's 4 "
                "(the plan may use fewer: node CPUs, small batches).")
POLICY_HELP = ("Which node's CPUs do the work: push = source, pull = destination, auto = the faster "
               "one by `numamove calibrate` on this machine, else push; under auto, one move_pages thread "
               "runs on numamove's own thread, not pinned, as migratepages does, where no calibration covers the "
               "pair or where calibrate measured that thread fastest.")


@cli.command()
@click.option("--from", "src_text", metavar="NODE", help="Source node [default: the most distant pair].")
@click.option("--to", "dst_text", metavar="NODE", help="Destination node [default: the most distant pair].")
@click.option("--size", "size_text", default="1G", show_default=True, metavar="SIZE",
              help="Bytes to copy: 4096, 512M, 1G ...")
@click.option("--threads", "threads_text", default="1,2,4", show_default=True, metavar="LIST",
              help="Thread limits to try, each 1..32 or auto (the plan may use fewer: node CPUs).")
@click.option("--policy", "policy_text", default="push,pull,auto", show_default=True, metavar="LIST",
              help="CPU policies to try: push (source CPUs), pull (destination CPUs), auto "
                   "(the calibration's faster one, else push).")
@click.option("--page-size", type=click.Choice(["4k", "2m"]), default="2m", show_default=True,
              help="Copy item size: 4 KiB base pages or 2 MiB huge-page folios (THP-backed regions).")
@click.option("--repeats", type=click.IntRange(1, 100), default=3, show_default=True,
              help="Runs per configuration; the median is reported.")
@click.option("--dry-run", is_flag=True, help="Print the plans and exit without copying.")
@click.option("--buffer", "buffer_bench", is_flag=True,
              help="Benchmark numamove.migrate() of a buffer (to --to) instead of the copy engine.")
@click.option("-v", "--verbose", is_flag=True, help="Show each plan and the reason for each choice.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def bench(src_text: str | None, dst_text: str | None, size_text: str, threads_text: str,
          policy_text: str, page_size: str, repeats: int, dry_run: bool, buffer_bench: bool, verbose: bool,
          as_json: bool) -> None:
    """Benchmark the copy engine against a single-threaded memcpy.

    Maps real regions bound to the source and destination nodes, copies with
    the engine for every thread limit and policy, verifies every byte, and
    prints GB/s with the ratio to a plain memcpy measured in the same run.

    \b
    Examples:
      numamove bench
      numamove bench --from 0 --to 1 --size 256M --threads 1,2,4,8
      numamove bench --dry-run -v
      numamove bench --json > bench.json
      numamove bench --buffer --to 1 --threads 1,2     # numamove.migrate() of a 1 GiB buffer
    """
    from .bench import default_pair, plan_bench, render, run_bench
    from .nodelist import parse_size
    from .planner import BASE_PAGE, HUGE_PAGE, parse_policies, parse_threads
    from .topology import current_node, read_topology

    limits = parse_threads(threads_text)
    policies = parse_policies(policy_text)
    size = parse_size(size_text)
    topo = read_topology()
    src = node_option(src_text, topo, "--from")
    dst = node_option(dst_text, topo, "--to")
    notes: list[str] = []
    if src is None or dst is None:
        a, b, notes = default_pair(topo)
        src = a if src is None else src
        dst = (b if src != b else a) if dst is None else dst
    huge = page_size == "2m"
    if buffer_bench and dry_run:
        from .nodelist import format_bytes

        what = {"dry_run": True, "buffer": True, "to": dst, "bytes": size, "threads": [t or "auto" for t in limits],
                "repeats": repeats}
        if as_json:
            emit_json(what)
        else:
            echo(f"would benchmark numamove.migrate() of a {format_bytes(size)} buffer to node {dst}, thread "
                       f"limits {','.join(str(t or 'auto') for t in limits)}, {repeats} time(s) each; nothing done")
        return
    if buffer_bench:
        from .bench import render_buffer_bench, run_buffer_bench

        doc = run_buffer_bench(topo, dst, size, limits, repeats)
        if as_json:
            emit_json(doc)
        else:
            for line in render_buffer_bench(doc):
                echo(line)
        return
    calibration = calibration_for(topo)
    if dry_run or verbose:
        import os

        item = HUGE_PAGE if huge else BASE_PAGE
        plans = plan_bench(topo, src, dst, size, limits, policies, item, current_node(topo),
                           frozenset(os.sched_getaffinity(0)), calibration)
        if dry_run:
            if as_json:
                emit_json({"dry_run": True, "notes": notes, "calibration": calibration.why,
                            "plans": [p.to_json() for _, _, p in plans]})
            else:
                for n in notes:
                    echo(f"note: {n}")
                echo(f"auto: {calibration.why}")
                for pol, lim, p in plans:
                    echo(f"plan (policy {pol}, limit {lim or 'auto'}):")
                    for line in p.describe():
                        echo(f"  {line}")
            return
        echo(f"auto: {calibration.why}", err=True)
        for pol, lim, p in plans:
            echo(f"plan (policy {pol}, limit {lim or 'auto'}): " + "; ".join(p.describe()[1:]), err=True)
    res = run_bench(topo, src, dst, size, limits, policies, repeats, huge, notes, calibration)
    if as_json:
        emit_json(res.to_json())
    else:
        for line in render(res):
            echo(line)


@cli.command()
@click.argument("pids", metavar="[PID]...", nargs=-1)
@click.option("--cgroup", metavar="PATH", help="A cgroup v2 group: its memory per node (memory.numa_stat).")
@click.option("--unit", metavar="NAME", help="A systemd unit's group: its memory per node.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def show(pids: tuple[str, ...], cgroup: str | None, unit: str | None, as_json: bool) -> None:
    """Show where memory lives: each process's per node, per kind of mapping, huge pages apart;
    a group's (--cgroup, --unit) per node and kind from its memory.numa_stat.

    Like numastat -p, with --json. Kinds: anon, heap, stack, file, shm. A group
    without the memory controller is counted from its processes' page tables.

    \b
    Examples:
      numamove show 1234
      numamove show $(pidof postgres) --json
      numamove show --cgroup /system.slice/docker-ID.scope
      numamove show --unit postgresql.service --json
    """
    from .nodelist import format_bytes
    from .proc import resolve_targets
    from .scan import collect

    if cgroup is not None or unit is not None:
        if pids or (cgroup is not None and unit is not None):
            raise click.UsageError("give PIDs, --cgroup PATH or --unit NAME: one of them")
        _show_group(cgroup, unit, as_json)
        return
    if not pids:
        raise click.UsageError("give at least one PID, --cgroup PATH or --unit NAME")
    docs = []
    targets, bad = resolve_targets(parse_pids(pids))
    if bad:
        raise bad[0][1]
    for t in targets:
        ps = collect(t.pid)
        counts = ps.tally()
        nodes = sorted({st for st, _, _ in counts if st >= 0})
        rows: dict[str, dict[int, int]] = {}
        absent: dict[str, int] = {}
        for (st, kind, huge), (_pages, nbytes) in counts.items():
            label = f"{kind} (huge)" if huge else kind
            if st >= 0:
                rows.setdefault(label, {})[st] = rows.setdefault(label, {}).get(st, 0) + nbytes
            else:
                absent[label] = absent.get(label, 0) + nbytes
        total = {n: sum(r.get(n, 0) for r in rows.values()) for n in nodes}
        docs.append({"pid": t.pid, "name": t.name, "cmdline": t.cmdline,
                     "nodes": {str(n): total[n] for n in nodes},
                     "by_kind": {k: {str(n): v.get(n, 0) for n in nodes} for k, v in sorted(rows.items())},
                     "not_on_a_node": absent, "skipped_mappings": ps.skipped})
        if not as_json:
            echo(f"PID {t.pid} ({t.name}): {format_bytes(sum(total.values()))} resident")
            echo(f"  {'kind':<14}" + "".join(f"{'node ' + str(n):>14}" for n in nodes))
            for k, v in sorted(rows.items()):
                echo(f"  {k:<14}" + "".join(f"{format_bytes(v.get(n, 0)):>14}" for n in nodes))
            echo(f"  {'total':<14}" + "".join(f"{format_bytes(total[n]):>14}" for n in nodes))
    if as_json:
        emit_json({"processes": docs})


GROUP_KINDS = ("anon", "anon_thp", "file", "shmem", "shmem_thp", "file_mapped", "kernel_stack")


def _show_group(cgroup: str | None, unit: str | None, as_json: bool) -> None:
    """`show --cgroup/--unit`: memory.numa_stat (cheap: the kernel keeps the counters), else the processes."""
    from .cgroups import open_cgroup, unit_cgroup
    from .nodelist import format_bytes

    with open_cgroup(cgroup if cgroup is not None else unit_cgroup(unit or "")) as group:
        procs = group.processes()
        stat = group.numa_stat()
        source = "memory.numa_stat"
        if stat is None:
            stat = _stat_from_processes(procs)
            source = "page tables (no memory controller on this group)"
        nodes = sorted({n for row in stat.values() for n in row})
        total = {n: stat.get("anon", {}).get(n, 0) + stat.get("file", {}).get(n, 0) for n in nodes}
        mems = (group.read("cpuset.mems.effective") or "").strip() or None
        doc = {"cgroup": group.rel, "mount": group.mount, "unit": unit, "source": source,
               "processes": len(procs), "pids": sorted(procs),
               "cpuset_mems_effective": mems, "nodes": {str(n): total[n] for n in nodes},
               "by_kind": {k: {str(n): v for n, v in sorted(row.items())} for k, row in stat.items()}}
    if as_json:
        emit_json(doc)
        return
    head = f"unit {unit} (cgroup {doc['cgroup']})" if unit else f"cgroup {doc['cgroup']}"
    echo(f"{head}: {len(procs)} process(es), {format_bytes(sum(total.values()))} resident"
               + (f", cpuset.mems.effective {mems}" if mems else "") + f" (from {source})")
    echo(f"  {'kind':<14}" + "".join(f"{'node ' + str(n):>14}" for n in nodes))
    for k in GROUP_KINDS:
        if k in stat:
            echo(f"  {k:<14}" + "".join(f"{format_bytes(stat[k].get(n, 0)):>14}" for n in nodes))
    echo(f"  {'total':<14}" + "".join(f"{format_bytes(total[n]):>14}" for n in nodes)
               + "   (anon + file)")


def _stat_from_processes(pids: list[int]) -> dict[str, dict[int, int]]:
    """anon/file/anon_thp per node summed over processes (shared pages counted once per process)."""
    from .proc import ProcessError, resolve_targets
    from .scan import collect

    out: dict[str, dict[int, int]] = {"anon": {}, "file": {}, "anon_thp": {}}
    targets, _bad = resolve_targets(pids)
    for t in targets:
        try:
            counts = collect(t.pid).tally()
        except ProcessError:
            continue
        for (st, kind, huge), (_pages, nbytes) in counts.items():
            if st < 0:
                continue
            key = "file" if kind in ("file", "shm") else "anon"
            out[key][st] = out[key].get(st, 0) + nbytes
            if huge and key == "anon":
                out["anon_thp"][st] = out["anon_thp"].get(st, 0) + nbytes
    return out


@cli.command()
@click.argument("pids", metavar="[PID]...", nargs=-1)
@click.option("--to", "to_text", required=True, metavar="NODE|cpus",
              help="Destination node, or 'cpus': the node of the CPUs each process may run on.")
@click.option("--from", "from_text", metavar="NODES", help="Only move pages now on these nodes (e.g. 0,2-3).")
@click.option("--name", metavar="REGEX", help="Also select processes whose name or command line matches.")
@click.option("--range", "ranges", metavar="START-END", multiple=True,
              help="Only this address range (hex, END exclusive); repeatable.")
@click.option("--only", metavar="KINDS", help="Only these kinds of mapping: anon,heap,stack,file,shm.")
@click.option("--all", "move_all", is_flag=True,
              help="Also move pages other processes map (MPOL_MF_MOVE_ALL; needs CAP_SYS_NICE).")
@click.option("--threads", "threads_text", default="auto", show_default=True, metavar="N|auto", help=THREADS_HELP)
@click.option("--policy", type=click.Choice(["push", "pull", "auto"]), default="auto", show_default=True,
              help=POLICY_HELP)
@click.option("--batch", type=click.IntRange(1, 1 << 24), metavar="PAGES",
              help="Pages per move_pages call [default: each thread moves its share in one call, "
                   "which amortises the call's fixed cost best].")
@click.option("--max-pause", "max_pause", type=click.FloatRange(0.1, 60000), metavar="MS",
              help="Bound the time of one move_pages call (sized from first small calls, re-sized as it goes).")
@click.option("--rate", metavar="BYTES/s",
              help="Bound the average migration rate of the whole run (e.g. 200M: 200 MiB/s; binary units).")
@click.option("--cgroup", metavar="PATH",
              help="Also every process in this cgroup v2 group and its subgroups (a path under the cgroup2 "
                   "mount, or relative to it as /proc/PID/cgroup and docker inspect give it; / is the root "
                   "group: every process; numamove itself is left out).")
@click.option("--unit", metavar="NAME", help="Also every process of this systemd unit (service, scope, slice).")
@click.option("--set-mems", is_flag=True,
              help="With --cgroup/--unit: after the move, set the group's cpuset.mems to the destination "
                   "(widened first if it excludes it); the kernel's migration on that write then finds only "
                   "the shared pages left (with --all, nothing).")
@click.option("--wait", is_flag=True, help="Wait for another numamove migrating the same process.")
@click.option("--dry-run", is_flag=True, help="Print the plan and move nothing.")
@click.option("-v", "--verbose", is_flag=True, help="Show the plans and the reason for each choice.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no warnings on stderr.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def proc(pids: tuple[str, ...], to_text: str, from_text: str | None, name: str | None,
         ranges: tuple[str, ...], only: str | None, move_all: bool, threads_text: str, policy: str,
         batch: int | None, max_pause: float | None, rate: str | None, cgroup: str | None, unit: str | None,
         set_mems: bool, wait: bool, dry_run: bool, verbose: bool, quiet: bool, as_json: bool) -> None:
    """Move the pages of running processes, containers or services to a node, while they run.

    The multi-threaded replacement for numactl's migratepages: move_pages(2)
    runs in batches on threads pinned to the source node's CPUs (push) or the
    destination's (pull), as the seed patch plans its copy threads. Threads of
    one process share an address space, which is migrated once. Pages other
    processes map too (shared libraries, shared memory) are skipped unless --all.

    With --cgroup or --unit, every process of the group is moved, one after
    another by the same pinned threads; processes that appear meanwhile are
    picked up (up to 5 rescans), processes that exit are reported as such. A
    destination outside the group's cpuset.mems.effective is refused (exit 1)
    unless --set-mems: then the pages move first and cpuset.mems is written
    afterwards (the write's time is reported), instead of the kernel moving
    them on one thread inside that write.

    \b
    Exit codes: 0 every requested page moved (or already there), 3 some pages
    could not be moved, 1 nothing could be done, 2 usage, 4 another numamove
    is migrating the process (see --wait).

    \b
    Examples:
      numamove proc 1234 --to 1
      numamove proc --name 'postgres' --to 1 --from 0 --json
      numamove proc 1234 --to cpus --only anon,heap --dry-run
      numamove proc 1234 --to 1 --max-pause 20      # latency-sensitive workload
      numamove proc --cgroup /system.slice/docker-ID.scope --to 1 --set-mems --max-pause 20
      numamove proc --unit postgresql.service --to 1 --rate 200M   # in the background
    """
    from .commands import proc_run

    proc_run(pids, to_text, from_text, name, ranges, only, move_all, threads_text, policy, batch, max_pause,
             wait, dry_run, verbose, quiet, as_json, cgroup, unit, set_mems, rate)


@cli.command(name="file")
@click.argument("paths", metavar="PATH...", nargs=-1, required=True)
@click.option("--to", "to_text", required=True, metavar="NODE", help="Destination node.")
@click.option("--from", "from_text", metavar="NODES", help="Only move pages now on these nodes.")
@click.option("--threads", "threads_text", default="auto", show_default=True, metavar="N|auto", help=THREADS_HELP)
@click.option("--policy", type=click.Choice(["push", "pull", "auto"]), default="auto", show_default=True,
              help=POLICY_HELP)
@click.option("--copy", "do_copy", is_flag=True,
              help="Copy into a new file on NODE with the memcpy engine, verify, rename over the original "
                   "(keeps mode, owner, xattrs); refused while anyone has the file open or mapped.")
@click.option("--output", metavar="PATH", help="With --copy: write the copy here (on tmpfs) and keep the "
                                              "source, which may be on any file system.")
@click.option("--dry-run", is_flag=True, help="Print the plan and move nothing.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar on stderr.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def file_cmd(paths: tuple[str, ...], to_text: str, from_text: str | None, threads_text: str, policy: str,
             do_copy: bool, output: str | None, dry_run: bool, quiet: bool, as_json: bool) -> None:
    """Move the pages of shared-memory files (tmpfs, hugetlbfs) to a node, in place.

    Every process that has the file mapped keeps working and now reads from the
    new node. Only resident pages move (holes stay holes). Pages other processes
    map need MPOL_MF_MOVE_ALL: as root numamove uses it; otherwise they are
    skipped with the hint. Pages written later: the file's shared policy is set to
    prefer NODE, so tmpfs allocates them there while NODE has free memory.

    --copy instead makes a new copy on NODE with the pinned memcpy engine, checks
    it byte for byte and renames it over the file, for a file nobody has open;
    with --output it stages any file (say, a data set on disk) into node-local
    shared memory in one parallel copy. Holes stay holes, as with cp.

    With several files, one that cannot be moved (a link, in use, not on tmpfs)
    never stops the others: each is reported, and the exit code is 3.

    \b
    Examples:
      numamove file /dev/shm/feature-store --to 1
      numamove file /dev/hugepages/buf --to 2 --json
      numamove file /dev/shm/idle-table --to 1 --copy
      numamove file /data/embeddings.bin --copy --output /dev/shm/embeddings.bin --to 1
    """
    from .commands import file_run

    file_run(paths, to_text, from_text, threads_text, policy, do_copy, output, dry_run, quiet, as_json)


@cli.command()
@click.option("--pairs", "pairs_text", metavar="SRC:DST,...",
              help="Ordered node pairs to measure [default: every pair of memory nodes].")
@click.option("--budget", type=click.FloatRange(1, 3600), default=20, show_default=True, metavar="SECONDS",
              help="Upper bound on the time spent measuring; the size shrinks and repeats drop to fit.")
@click.option("--size", "size_text", default="64M", show_default=True, metavar="SIZE",
              help="Largest copy per measurement (moves start at a quarter of it).")
@click.option("--repeats", type=click.IntRange(1, 20), default=3, show_default=True,
              help="Runs per configuration while the budget lasts; the median is kept.")
@click.option("--engines", "engines_text", default="copy,move", show_default=True, metavar="LIST",
              help="copy: the pinned memcpy engine (bench, file --copy, buffers); "
                   "move: move_pages batches (proc, file).")
@click.option("--output", metavar="PATH",
              help="Write the calibration here [default: /var/lib/numamove/calibration.json as root, "
                   "else ~/.cache/numamove/calibration.json; $NUMAMOVE_CALIBRATION overrides both].")
@click.option("--plot", "plot_path", metavar="FILE.png",
              help="Also draw GB/s against threads per pair and policy (needs matplotlib: "
                   "pip install 'numamove[plot]').")
@click.option("--show", "show_only", is_flag=True,
              help="Print the calibration that policy/threads auto follow now (which file, why) and measure nothing.")
@click.option("--dry-run", is_flag=True, help="List the configurations that would be measured and exit.")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
@click.option("--json", "as_json", is_flag=True, help="Print the calibration as one JSON document.")
def calibrate(pairs_text: str | None, budget: float, size_text: str, repeats: int, engines_text: str,
              output: str | None, plot_path: str | None, dry_run: bool, show_only: bool, quiet: bool,
              as_json: bool) -> None:
    """Measure push vs pull, thread counts and CPU placement; write what policy/threads auto use.

    For each ordered pair of memory nodes, times copies and move_pages batches
    with push (source CPUs) and pull (destination CPUs), at 1, 2, 4 ... threads
    up to the node's CPUs, packed into one L3 cache domain or spread across
    them, and move_pages on one thread nobody pins (caller, as migratepages
    runs), which auto uses when it is within 5% of the best. Every copy is
    verified. The best setting per pair is written with a
    fingerprint of this machine's topology: `--policy auto` and `--threads auto`
    (the defaults of proc, file and the Python API) follow it while the
    topology matches, and fall back to the patch's defaults (push, 4 threads)
    with a warning when it does not.

    \b
    Examples:
      numamove calibrate                       # every pair, about 20 s at most
      numamove calibrate --pairs 0:1,1:0 --budget 60 --plot cal.png
      numamove calibrate --output /tmp/cal.json --json
      numamove proc 1234 --to 1 --dry-run      # shows what auto chose and why
      numamove calibrate --show --json         # the calibration in effect now, measuring nothing
    """
    if show_only:
        _show_calibration(as_json)
        return
    from .calibrate import check_output, default_pairs, parse_pairs, plot, render, run_calibration, write
    from .calibration import ENGINES, default_output
    from .nodelist import parse_size
    from .topology import read_topology

    size = parse_size(size_text)
    engines = tuple(e.strip() for e in engines_text.split(","))
    for e in engines:
        if e not in ENGINES:
            raise click.BadParameter(f"unknown engine '{e}' (choose from {', '.join(ENGINES)})",
                                     param_hint="--engines")
    if plot_path:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise click.UsageError("--plot needs matplotlib, which is not installed: "
                                   "pip install 'numamove[plot]' (or drop --plot)") from None
        from matplotlib.backend_bases import FigureCanvasBase

        kinds = FigureCanvasBase.get_supported_filetypes()
        ext = os.path.splitext(plot_path)[1][1:].lower()
        if ext and ext not in kinds:
            raise click.BadParameter(f"{plot_path}: matplotlib cannot draw .{ext} (use one of "
                                     f"{', '.join(sorted(kinds))})", param_hint="--plot")
    topo = read_topology()
    notes: list[str] = []
    if pairs_text:
        pairs = parse_pairs(pairs_text, topo)
    else:
        pairs, notes = default_pairs(topo)
    out = output or str(default_output())
    if dry_run:
        from .calibrate import configurations
        from .topology import current_node, l3_domains

        allowed = frozenset(os.sched_getaffinity(0))
        doc: dict[str, Any] = {"dry_run": True, "output": out, "budget_seconds": budget, "notes": notes, "pairs": []}
        for a, b in pairs:
            # the move engine's list is the copy engine's with the caller (one unpinned thread) first
            engine = "move" if "move" in engines and a != b else engines[0]  # move: not within one node
            samples, why = configurations(topo, a, b, current_node(topo), allowed, l3_domains(sorted(allowed)),
                                          engine)
            doc["pairs"].append({"src": a, "dst": b, "engines": list(engines), "notes": why,
                                 "configurations": [{"direction": s.direction, "placement": s.placement,
                                                     "threads": s.threads, "cpus": list(s.cpus),
                                                     "cpu_node": s.cpu_node, "same_cpus_as": s.same_as,
                                                     "engines": ["move"] if s.direction == "caller"
                                                     else list(engines)}
                                                    for s in samples]})
        if as_json:
            emit_json(doc)
            return
        for n in notes:
            echo(f"note: {n}")
        echo(f"would measure {len(pairs)} pair(s) within {budget:g} s and write {out}")
        for p in doc["pairs"]:
            confs = ", ".join(f"{c['direction']}/{c['placement']}/{c['threads']}t" for c in p["configurations"])
            echo(f"  node {p['src']} -> node {p['dst']} ({', '.join(engines)}): {confs}")
            for w in p["notes"]:
                echo(f"    {w}")
        return
    check_output(out)
    if plot_path:
        check_output(plot_path, "the plot")
    progress = None if quiet else _calibrate_progress()
    run = run_calibration(topo, pairs, budget=budget, size=size, repeats=repeats, engines=engines,
                          progress=progress, notes=notes)
    if progress is not None:
        progress(-1, 0, "")
    write(run, out)
    if plot_path:
        plot(run, plot_path)
    if as_json:
        emit_json(run.to_json())
        return
    for line in render(run):
        echo(line)
    if plot_path:
        echo(f"plot: {plot_path}")


def _show_calibration(as_json: bool) -> None:
    """`calibrate --show`: the calibration in effect for this machine, and why (or why none)."""
    from .calibration import load, search_paths
    from .topology import read_topology

    loaded = load(read_topology())
    cal = loaded.calibration
    doc = {"in_use": cal is not None, "path": cal.path if cal else None, "created": cal.created if cal else None,
           "why": loaded.why, "warning": loaded.warning, "search_paths": search_paths(),
           "choices": [{"src": c.src, "dst": c.dst, "engine": c.engine, "best": c.best,
                        "settings": {d: st.to_json() for d, st in sorted(c.settings.items())}}
                       for _k, c in sorted(cal.choices.items())] if cal else []}
    if as_json:
        emit_json(doc)
        return
    echo(f"policy/threads auto follow: {loaded.why}")
    if loaded.warning:
        echo(f"warning: {loaded.warning}")
    for _k, c in sorted(cal.choices.items()) if cal else []:
        echo(f"  {c.describe()}: best {c.best}")


def _calibrate_progress() -> Any:
    """A progress callback: one updating line on a terminal, a line per tenth otherwise."""
    tty = sys.stderr.isatty()
    state = {"last": -1}

    def show(done: int, total: int, what: str) -> None:
        if done < 0:
            if tty:
                click.echo("\r\033[K", err=True, nl=False)
            return
        pct = 100 * done // max(total, 1)
        if tty:
            click.echo(f"\r\033[Kcalibrate [{done}/{total}] {what}", err=True, nl=False)
        elif pct // 10 != state["last"]:
            state["last"] = pct // 10
            echo(f"calibrate: {done}/{total} measured; {what}", err=True)

    return show


@cli.command()
@click.option("--size", default="256M", show_default=True, help="The workload's 4 KiB-page memory.")
@click.option("--huge", default="128M", show_default=True, help="The workload's THP-advised memory.")
@click.pass_context
def demo(ctx: click.Context, size: str, huge: str) -> None:
    """Move a live sample workload, then a whole cgroup, between the two most distant nodes (`make run`).

    Starts a child holding SIZE + HUGE of memory on one node, shows where it is,
    moves it with `numamove proc` to the most distant node while it keeps
    reading its memory, shows it again, and has the child verify every byte and
    report its longest pause. Then (as root, on cgroup v2) it does the same for a
    cgroup of two smaller workloads with `proc --cgroup --set-mems --max-pause 20`.
    On a one-node machine it says so and runs `numamove bench` instead (`make run`
    boots a two-node QEMU guest there and runs this demo inside it).
    """
    from .nodelist import parse_size
    from .topology import read_topology

    size_b, huge_b = parse_size(size), parse_size(huge)
    topo = read_topology()
    if len(topo.memory_nodes()) < 2:
        echo(f"this machine has one NUMA node with memory (node {topo.memory_nodes()[0]}): "
                   "nothing to migrate between; running the copy benchmark instead")
        ctx.invoke(bench)
        return
    src, dst = topo.most_distant_pair()
    ok = True
    with _DemoChild(size, huge, src) as child:
        echo(f"workload PID {child.pid}: {size} + {huge} (THP) on node {src}")
        ctx.invoke(show, pids=(str(child.pid),))
        echo(f"\nmoving PID {child.pid} to node {dst} (distance {topo.distance(src, dst)}):")
        child.ask("pause")
        _invoke_proc(ctx, pids=(str(child.pid),), to_text=str(dst))
        echo("")
        ctx.invoke(show, pids=(str(child.pid),))
        ok &= child.verdict()
    ok &= _demo_group(ctx, src, dst, size_b // 4, huge_b // 4)
    if not ok:
        sys.exit(EXIT_FAILURE)


class _DemoChild:
    """A numamove.workload child on node `node` (in cgroup `group` when given), spoken to over its pipes."""

    def __init__(self, size: str, huge: str, node: int, group: str | None = None) -> None:
        import subprocess

        cmd = [sys.executable, "-m", "numamove.workload", "--size", size, "--huge", huge, "--node", str(node)]
        if group is not None:
            cmd = ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', group, *cmd]
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.p.stdout.readline().split() if self.p.stdout else []
        if not line or line[0] != "ready":
            self.close()
            raise click.ClickException("the sample workload did not start")
        self.pid = int(line[1])

    def ask(self, cmd: str) -> list[str]:
        assert self.p.stdin is not None and self.p.stdout is not None
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()
        return self.p.stdout.readline().split()

    def verdict(self, label: str = "workload") -> bool:
        pause = float(self.ask("pause")[1])
        word, _crc, reads = self.ask("check")
        echo(f"{label}'s own check after the move: {'intact' if word == 'ok' else 'CORRUPTED'}, "
                   f"{reads} read passes while it ran; its longest pause between two reads {pause:.0f} ms")
        return word == "ok"

    def close(self) -> None:
        self.p.kill()
        self.p.wait()

    def __enter__(self) -> _DemoChild:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _invoke_proc(ctx: click.Context, **params: Any) -> None:
    try:
        ctx.invoke(proc, **params)
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise


def _demo_group(ctx: click.Context, src: int, dst: int, size: int, huge: int) -> bool:
    """The demo's second half: a cgroup of two workloads moved with --set-mems (root and cgroup v2 only)."""
    import uuid

    from .cgroups import CgroupError, cgroup2_mount
    from .nodelist import format_bytes

    try:
        mount = cgroup2_mount()
    except (CgroupError, OSError) as exc:
        echo(f"\n(no cgroup move: {exc})")
        return True
    if os.geteuid() != 0:
        echo("\n(no cgroup move: making a cgroup needs root)")
        return True
    rel = f"/numamove-demo-{uuid.uuid4().hex[:6]}"
    path = mount + rel
    try:
        os.mkdir(path)
    except OSError as exc:
        echo(f"\n(no cgroup move: cannot make {path}: {exc.strerror})")
        return True
    children: list[_DemoChild] = []
    try:
        cpuset = os.path.exists(f"{path}/cpuset.mems")
        if cpuset:
            with open(f"{path}/cpuset.mems", "w") as fh:
                fh.write(str(src))
        each = f"{format_bytes(size)} + {format_bytes(huge)} (THP)"
        for _ in range(2):
            children.append(_DemoChild(f"{size >> 20}M", f"{huge >> 20}M", src, path))
        echo(f"\ncgroup {rel}: workloads PID {' and '.join(str(c.pid) for c in children)}, {each} each"
                   + (f", cpuset.mems {src}" if cpuset else " (no cpuset controller here: no hand-over)"))
        ctx.invoke(show, cgroup=rel)
        echo(f"\nmoving cgroup {rel} to node {dst}"
                   + (" and handing its cpuset over (--set-mems --max-pause 20):" if cpuset else " (--max-pause 20):"))
        for c in children:
            c.ask("pause")
        _invoke_proc(ctx, pids=(), to_text=str(dst), cgroup=rel, set_mems=cpuset, max_pause=20.0)
        echo("")
        ctx.invoke(show, cgroup=rel)
        return all([c.verdict(f"workload {c.pid}") for c in children])
    finally:
        from .cgroups import remove_group

        for c in children:
            c.close()
        remove_group(path)


def click_main(args: list[str]) -> int:
    """Run the click CLI on args, turning every error into one line and an exit code."""
    from .entry import fail, guarded

    if os.environ.get("_NUMAMOVE_COMPLETE"):
        # click's shell completion: the shell calls us with this set and no arguments
        cli.main(args=args, prog_name="numamove")
        return 0
    if not args:
        with click.Context(cli, info_name="numamove") as ctx:
            echo(cli.get_help(ctx))
        return EXIT_USAGE

    def run() -> None:
        # an eager option's exit (--help, --version) comes back as its code, the commands' None
        if cli.main(args=args, prog_name="numamove", standalone_mode=False) == 0 and sys.stdout is None:
            # they print through click.echo, which drops text for a stdout that was closed at start
            # (entry.main): lost output, named as for every other command
            echo("")

    try:
        return guarded(run)
    except click.UsageError as exc:
        hint = f" (see 'numamove {exc.ctx.command.name} --help')" if exc.ctx and exc.ctx.parent else ""
        fail(exc.format_message().replace("\n", " ") + hint, EXIT_USAGE)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.Abort:
        fail("aborted", 130)


def main(argv: list[str] | None = None) -> int:
    """The entry point (numamove.entry.main): the fast path for proc, this CLI for the rest."""
    from .entry import main as entry_main

    return entry_main(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
