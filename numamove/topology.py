"""The machine's NUMA topology: nodes, their CPUs and memory, and the distance matrix.

Which nodes exist (online, with CPUs, with memory) always comes from sysfs, and
every node is validated against it before py-libnuma sees it: py-libnuma
segfaults on an out-of-range node.  CPUs, distances and memory sizes come from
py-libnuma on the real machine, and from the sysfs files when ``root`` points at a
fake tree (tests) or libnuma cannot be loaded.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InvalidNodeError, TopologyError
from .nodelist import format_list, parse_list

NODE_DIR = "sys/devices/system/node"


@dataclass(frozen=True)
class Node:
    """One online NUMA node."""

    id: int
    cpus: tuple[int, ...]
    mem_total: int  # bytes
    mem_free: int  # bytes
    has_memory: bool

    @property
    def has_cpu(self) -> bool:
        return bool(self.cpus)

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.id,
            "cpus": format_list(self.cpus),
            "cpu_count": len(self.cpus),
            "has_cpu": self.has_cpu,
            "has_memory": self.has_memory,
            "mem_total_bytes": self.mem_total,
            "mem_free_bytes": self.mem_free,
        }


@dataclass(frozen=True)
class Topology:
    """Online nodes and the distances between them."""

    nodes: dict[int, Node]
    distances: dict[tuple[int, int], int] = field(default_factory=dict)
    source: str = "sysfs"

    @property
    def ids(self) -> list[int]:
        return sorted(self.nodes)

    def node(self, n: int) -> Node:
        """The node n, or InvalidNodeError naming the nodes that exist."""
        try:
            return self.nodes[n]
        except KeyError:
            raise InvalidNodeError(
                f"node {n} does not exist (this machine has nodes {format_list(self.ids)})"
            ) from None

    def require(self, n: int, role: str, memory: bool = False, cpus: bool = False) -> Node:
        """Validate node n for a role ("--from"): it exists and has what the role needs."""
        node = self.node(n)
        if memory and not node.has_memory:
            raise InvalidNodeError(f"{role}: node {n} has no memory")
        if cpus and not node.has_cpu:
            raise InvalidNodeError(f"{role}: node {n} has no CPUs")
        return node

    def parse_nodes(self, text: str) -> list[int]:
        """A numactl-syntax node list validated against the online nodes."""
        return parse_list(text, self.ids, "node")

    def distance(self, a: int, b: int) -> int:
        return self.distances.get((a, b), 10 if a == b else 20)

    def node_of_cpu(self, cpu: int) -> int | None:
        for n in self.nodes.values():
            if cpu in n.cpus:
                return n.id
        return None

    def memory_nodes(self) -> list[int]:
        return [n for n in self.ids if self.nodes[n].has_memory]

    def most_distant_pair(self) -> tuple[int, int]:
        """The two memory nodes farthest apart (lowest ids on ties); (n, n) on one node."""
        mem = self.memory_nodes() or self.ids
        best = (mem[0], mem[0])
        best_d = -1
        for a in mem:
            for b in mem:
                if a < b and self.distance(a, b) > best_d:
                    best, best_d = (a, b), self.distance(a, b)
        return best

    def to_json(self) -> dict[str, Any]:
        return {
            "nodes": [self.nodes[n].to_json() for n in self.ids],
            "distances": {str(a): {str(b): self.distance(a, b) for b in self.ids} for a in self.ids},
            "source": self.source,
        }


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise TopologyError(f"cannot read {path}: {exc.strerror}") from None


def _meminfo(path: Path) -> tuple[int, int]:
    total = free = 0
    for line in _read(path).splitlines():
        m = re.match(r"Node \d+ (MemTotal|MemFree):\s+(\d+) kB", line)
        if m:
            value = int(m.group(2)) * 1024
            if m.group(1) == "MemTotal":
                total = value
            else:
                free = value
    return total, free


def _libnuma() -> Any:
    """py-libnuma's module, or None when libnuma cannot be loaded."""
    try:
        import numa  # type: ignore[import-untyped]

        return numa
    except (ImportError, OSError, AttributeError):
        return None


def read_topology(root: str | os.PathLike[str] = "/", use_libnuma: bool | None = None) -> Topology:
    """Read the topology.

    Args:
        root: the file-system root holding ``sys/`` (a fake tree in tests).
        use_libnuma: ask py-libnuma for CPUs, distances and memory; the default
            is True for the real root when libnuma loads.

    Raises:
        TopologyError: sysfs has no NUMA information.
    """
    base = Path(root) / NODE_DIR
    if not base.is_dir():
        raise TopologyError(f"{base} missing: is this Linux with sysfs mounted?")
    online = parse_list(_read(base / "online"), None, "node")
    with_mem = set(_optional_list(base / "has_memory", online))
    numa = None
    if use_libnuma or (use_libnuma is None and Path(root) == Path("/")):
        numa = _libnuma()
        if numa is not None and not numa.info.numa_available():
            numa = None
    nodes: dict[int, Node] = {}
    distances: dict[tuple[int, int], int] = {}
    for n in online:
        ndir = base / f"node{n}"
        if numa is not None:
            cpus = tuple(numa.info.node_to_cpus(n))
            total, free = numa.memory.node_memory_info(n)
        else:
            cpus = tuple(parse_list(_read(ndir / "cpulist"), None, "CPU"))
            total, free = _meminfo(ndir / "meminfo")
        nodes[n] = Node(n, cpus, int(total), int(free), n in with_mem)
    for a in online:
        if numa is not None:
            row = [int(numa.info.numa_distance(a, b)) for b in online]
        else:
            raw = [int(x) for x in _read(base / f"node{a}" / "distance").split()]
            row = _distance_row(raw, online, base)
        for b, d in zip(online, row):
            distances[(a, b)] = d
    return Topology(nodes, distances, "libnuma" if numa is not None else "sysfs")


def _optional_list(path: Path, default: Iterable[int]) -> list[int]:
    return parse_list(_read(path), None, "node") if path.exists() else list(default)


def _distance_row(raw: list[int], online: list[int], base: Path) -> list[int]:
    # the kernel prints one distance per online node, in id order
    if len(raw) != len(online):
        raise TopologyError(f"{base}: {len(raw)} distances for {len(online)} online nodes")
    return raw


def current_node(topo: Topology) -> int:
    """The node of the CPU this thread runs on now (the last fallback of the planner)."""
    from . import _native

    node = topo.node_of_cpu(_native.current_cpu())
    return node if node is not None else topo.ids[0]


def l3_domains(cpus: Iterable[int], root: str | os.PathLike[str] = "/") -> dict[int, str]:
    """CPU -> the CPU list sharing its L3 cache (its "domain": a CCD/CCX on AMD, a socket on Intel).

    CPUs whose cache topology sysfs does not show share one domain, "unknown": placement
    then cannot matter to what numamove can choose.
    """
    out: dict[int, str] = {}
    for cpu in cpus:
        out[cpu] = "unknown"
        cache = Path(root) / "sys/devices/system/cpu" / f"cpu{cpu}" / "cache"
        for idx in sorted(cache.glob("index*")):
            try:
                if (idx / "level").read_text().strip() == "3":
                    out[cpu] = (idx / "shared_cpu_list").read_text().strip()
                    break
            except OSError:
                continue
    return out
