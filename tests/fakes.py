"""Builders of fake machines: Topology values and fake sysfs trees for parsing tests."""

from __future__ import annotations

from pathlib import Path

from numamove.nodelist import format_list
from numamove.topology import Node, Topology

GIB = 1 << 30


def topo(cpus: dict[int, list[int]], dist: dict[tuple[int, int], int] | None = None) -> Topology:
    """A Topology with the given CPUs per node (an empty list: CPU-less), 4 GiB each."""
    nodes = {n: Node(n, tuple(c), 4 * GIB, 3 * GIB, True) for n, c in cpus.items()}
    distances: dict[tuple[int, int], int] = {}
    for a in cpus:
        for b in cpus:
            d = 10 if a == b else (dist or {}).get((a, b), (dist or {}).get((b, a), 20))
            distances[(a, b)] = d
    return Topology(nodes, distances)


def sysfs_tree(root: Path, cpus: dict[int, list[int]], dist: dict[tuple[int, int], int],
               mem_kb: dict[int, tuple[int, int]] | None = None, no_memory: tuple[int, ...] = ()) -> Path:
    """Write /sys/devices/system/node as the kernel would for this machine."""
    base = root / "sys" / "devices" / "system" / "node"
    base.mkdir(parents=True)
    ids = sorted(cpus)
    (base / "online").write_text(format_list(ids) + "\n")
    (base / "possible").write_text(format_list(range(max(ids) + 1)) + "\n")
    (base / "has_cpu").write_text(format_list(n for n in ids if cpus[n]) + "\n")
    (base / "has_memory").write_text(format_list(n for n in ids if n not in no_memory) + "\n")
    for n in ids:
        d = base / f"node{n}"
        d.mkdir()
        (d / "cpulist").write_text(format_list(cpus[n]) + "\n")
        row = [10 if n == m else dist.get((n, m), dist.get((m, n), 20)) for m in ids]
        (d / "distance").write_text(" ".join(map(str, row)) + "\n")
        total, free = (mem_kb or {}).get(n, (4194304, 3145728))
        (d / "meminfo").write_text(
            f"Node {n} MemTotal:       {total} kB\nNode {n} MemFree:        {free} kB\n"
            f"Node {n} MemUsed:        {total - free} kB\n")
    return root
