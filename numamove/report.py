"""Human-readable reports of migrations (JSON comes from the report objects themselves)."""

from __future__ import annotations

from .nodelist import format_bytes
from .pagemove import TargetReport
from .text import printable


def _nodes(d: dict[int, list[int]]) -> str:
    return ", ".join(f"node {n} {format_bytes(v[1])}" for n, v in sorted(d.items())) or "nothing resident"


def _pages(n: int) -> str:
    return f"{n} page" if n == 1 else f"{n} pages"


def render_migration(r: TargetReport) -> list[str]:
    t = r.target
    # a file's name is as its user wrote it (a glob in /dev/shm matches names others chose): one printable line
    head = (f"file {printable(t.name)} -> node {r.to}" if t.name.startswith("/")
            else f"PID {t.pid} ({t.name}) -> node {r.to}")
    lines: list[str] = []
    if r.dry_run:
        lines.append(f"{head}: dry run, nothing moved")
        lines.append(f"  would move: {_pages(r.requested[0])} ({format_bytes(r.requested[1])})")
        lines.append(f"  now: {_nodes(r.before)}")
        for p in r.plans:
            lines.append(f"  from node {p.src}: {_pages(p.items)}, {p.where()}")
        lines.append(f"  move_pages calls: about {r.batches}")
    else:
        lines.append(f"{head}: moved {_pages(r.moved[0])} ({format_bytes(r.moved[1])}, {r.huge_moved} huge) "
                     f"in {r.seconds:.3f} s, {r.gbps:.2f} GB/s")
        lines.append(f"  before: {_nodes(r.before)}")
        lines.append(f"  after:  {_nodes(r.after)}")
        if r.rate_limit is not None:
            lines.append(f"  rate: {format_bytes(r.achieved)}/s achieved "
                         f"(--rate {format_bytes(r.rate_limit)}/s); longest move_pages call {r.max_call_ms:.1f} ms")
    if r.already[0]:
        lines.append(f"  already on node {r.to}: {_pages(r.already[0])} ({format_bytes(r.already[1])})")
    for why, (pages, nbytes) in sorted(r.skipped.items()):
        lines.append(f"  skipped: {_pages(pages)} ({format_bytes(nbytes)}): {why}")
    for why, (pages, nbytes) in sorted(r.failed.items()):
        lines.append(f"  FAILED: {_pages(pages)} ({format_bytes(nbytes)}): {why}")
    for note in r.notes:
        lines.append(f"  note: {note}")
    return lines
