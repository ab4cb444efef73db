"""The command line: parse with click, call the API, render text or JSON, map errors to exit codes.

Heavy modules (the C extension, py-libnuma) are imported inside the commands so
that `numamove --version` and `--help` stay fast for cron and scripts.
"""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import click

from . import __version__
from .errors import EXIT_FAILURE, EXIT_USAGE, NumamoveError

EXIT_CODES_HELP = """\b
Exit codes:
  0  success
  1  failure (nothing was done)
  2  usage error (bad option or argument)
  3  partly done (some pages could not be moved)"""


def _emit_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, sort_keys=False))


def _fail(msg: str, code: int) -> NoReturn:
    click.echo(f"numamove: error: {msg}", err=True)
    sys.exit(code)


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
      numamove bench                 # engine vs single-threaded memcpy
      numamove bench --from 0 --to 1 --size 256M --threads 1,2,4 --policy push,pull
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

    topo = read_topology()
    if as_json:
        _emit_json(topo.to_json())
        return
    click.echo(f"{'node':>4}  {'cpus':<14}{'count':>5}  {'memory total':>13}  {'free':>11}  notes")
    for n in topo.ids:
        node = topo.nodes[n]
        notes = []
        if not node.has_cpu:
            notes.append("CPU-less (memory only)")
        if not node.has_memory:
            notes.append("no memory")
        cpus = format_list(node.cpus)
        click.echo(f"{n:>4}  {cpus or '-':<14}{len(node.cpus):>5}  {format_bytes(node.mem_total):>13}  "
                   f"{format_bytes(node.mem_free):>11}  {', '.join(notes)}".rstrip())
    click.echo("distances:")
    click.echo("      " + "".join(f"{b:>5}" for b in topo.ids))
    for a in topo.ids:
        click.echo(f"{a:>5} " + "".join(f"{topo.distance(a, b):>5}" for b in topo.ids))


def _node_option(value: str | None, topo: Any, role: str) -> int | None:
    if value is None:
        return None
    from .nodelist import parse_list

    ids = parse_list(value, None, "node") if value.strip() != "all" else topo.ids
    if len(ids) != 1:
        raise click.BadParameter(f"'{value}' names {len(ids)} nodes; give exactly one", param_hint=role)
    return int(topo.node(ids[0]).id)


@cli.command()
@click.option("--from", "src_text", metavar="NODE", help="Source node [default: the most distant pair].")
@click.option("--to", "dst_text", metavar="NODE", help="Destination node [default: the most distant pair].")
@click.option("--size", "size_text", default="1G", show_default=True, metavar="SIZE",
              help="Bytes to copy: 4096, 512M, 1G ...")
@click.option("--threads", "threads_text", default="1,2,4", show_default=True, metavar="LIST",
              help="Thread limits to try, each 1..32 (the plan may use fewer: node CPUs).")
@click.option("--policy", "policy_text", default="push,pull", show_default=True, metavar="LIST",
              help="CPU policies to try: push (source CPUs), pull (destination CPUs), auto.")
@click.option("--page-size", type=click.Choice(["4k", "2m"]), default="2m", show_default=True,
              help="Copy item size: 4 KiB base pages or 2 MiB huge-page folios (THP-backed regions).")
@click.option("--repeats", type=click.IntRange(1, 100), default=3, show_default=True,
              help="Runs per configuration; the median is reported.")
@click.option("--dry-run", is_flag=True, help="Print the plans and exit without copying.")
@click.option("-v", "--verbose", is_flag=True, help="Show each plan and the reason for each choice.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def bench(src_text: str | None, dst_text: str | None, size_text: str, threads_text: str,
          policy_text: str, page_size: str, repeats: int, dry_run: bool, verbose: bool,
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
    """
    from .bench import default_pair, plan_bench, render, run_bench
    from .nodelist import parse_size
    from .plan import BASE_PAGE, HUGE_PAGE, parse_policies, parse_threads
    from .topology import current_node, read_topology

    limits = parse_threads(threads_text)
    policies = parse_policies(policy_text)
    size = parse_size(size_text)
    topo = read_topology()
    src = _node_option(src_text, topo, "--from")
    dst = _node_option(dst_text, topo, "--to")
    notes: list[str] = []
    if src is None or dst is None:
        a, b, notes = default_pair(topo)
        src = a if src is None else src
        dst = (b if src != b else a) if dst is None else dst
    huge = page_size == "2m"
    if dry_run or verbose:
        import os

        item = HUGE_PAGE if huge else BASE_PAGE
        plans = plan_bench(topo, src, dst, size, limits, policies, item, current_node(topo),
                           frozenset(os.sched_getaffinity(0)))
        if dry_run:
            if as_json:
                _emit_json({"dry_run": True, "notes": notes,
                            "plans": [p.to_json() for _, _, p in plans]})
            else:
                for n in notes:
                    click.echo(f"note: {n}")
                for pol, lim, p in plans:
                    click.echo(f"plan (policy {pol}, limit {lim}):")
                    for line in p.describe():
                        click.echo(f"  {line}")
            return
        for pol, lim, p in plans:
            click.echo(f"plan (policy {pol}, limit {lim}): " + "; ".join(p.describe()[1:]), err=True)
    res = run_bench(topo, src, dst, size, limits, policies, repeats, huge, notes)
    if as_json:
        _emit_json(res.to_json())
    else:
        for line in render(res):
            click.echo(line)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI and turn every error into one line and an exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not args:
        with click.Context(cli, info_name="numamove") as ctx:
            click.echo(cli.get_help(ctx))
        return EXIT_USAGE
    try:
        cli.main(args=args, prog_name="numamove", standalone_mode=False)
    except click.UsageError as exc:
        hint = f" (see 'numamove {exc.ctx.command.name} --help')" if exc.ctx and exc.ctx.parent else ""
        _fail(exc.format_message().replace("\n", " ") + hint, EXIT_USAGE)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.Abort:
        _fail("aborted", 130)
    except NumamoveError as exc:
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except BrokenPipeError:
        return EXIT_FAILURE
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
