"""The machine's NUMA topology: nodes, their CPUs and memory, and the distance matrix.

Everything comes from sysfs by default: it is what libnuma itself reads, and reading it
directly keeps py-libnuma's import (~15 ms: ctypes.util runs a subprocess to find the
library) off the path of `numamove proc`.  `numamove nodes` asks py-libnuma for CPUs,
distances and memory sizes (use_libnuma=True), after every node has been validated
against sysfs: py-libnuma segfaults on an out-of-range node.
"""

from __future__ import annotations

import os

from .errors import InvalidNodeError, TopologyError
from .nodelist import format_list, parse_list

TYPE_CHECKING = False  # typing's own constant to mypy; importing typing costs start-up ~4 ms
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

NODE_DIR = "sys/devices/system/node"


class Node:
    """One online NUMA node."""

    __slots__ = ("id", "cpus", "mem_total", "mem_free", "has_memory")

    def __init__(self, id: int, cpus: tuple[int, ...], mem_total: int, mem_free: int, has_memory: bool) -> None:
        self.id = id
        self.cpus = cpus
        self.mem_total = mem_total  # bytes
        self.mem_free = mem_free  # bytes
        self.has_memory = has_memory

    def __repr__(self) -> str:
        return f"Node({self.id}, cpus={self.cpus}, has_memory={self.has_memory})"

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


class Topology:
    """Online nodes and the distances between them."""

    __slots__ = ("nodes", "distances", "source")

    def __init__(self, nodes: dict[int, Node], distances: dict[tuple[int, int], int] | None = None,
                 source: str = "sysfs") -> None:
        self.nodes = nodes
        self.distances = distances if distances is not None else {}
        self.source = source

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


def _read(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError as exc:
        raise TopologyError(f"cannot read {path}: {exc.strerror}") from None


def _meminfo(path: str) -> tuple[int, int]:
    total = free = 0
    for line in _read(path).splitlines():
        words = line.split()  # "Node 0 MemTotal:       24691728 kB"
        if len(words) >= 4 and words[2] in ("MemTotal:", "MemFree:") and words[3].isdigit():
            value = int(words[3]) * 1024
            if words[2] == "MemTotal:":
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


def read_topology(root: str | os.PathLike[str] = "/", use_libnuma: bool = False) -> Topology:
    """Read the topology.

    Args:
        root: the file-system root holding ``sys/`` (a fake tree in tests).
        use_libnuma: ask py-libnuma for CPUs, distances and memory (when libnuma loads and
            root is the real one); by default sysfs, which is what libnuma reads too.

    Raises:
        TopologyError: sysfs has no NUMA information.
    """
    base = os.path.join(os.fspath(root), NODE_DIR)
    if not os.path.isdir(base):
        raise TopologyError(f"{base} missing: is this Linux with sysfs mounted?")
    online = parse_list(_read(os.path.join(base, "online")), None, "node")
    with_mem = set(_optional_list(os.path.join(base, "has_memory"), online))
    numa = None
    if use_libnuma and os.path.realpath(root) == "/":
        numa = _libnuma()
        if numa is not None and not numa.info.numa_available():
            numa = None
    nodes: dict[int, Node] = {}
    distances: dict[tuple[int, int], int] = {}
    for n in online:
        ndir = os.path.join(base, f"node{n}")
        if numa is not None:
            cpus = tuple(numa.info.node_to_cpus(n))
            total, free = numa.memory.node_memory_info(n)
        else:
            cpus = tuple(parse_list(_read(os.path.join(ndir, "cpulist")), None, "CPU"))
            total, free = _meminfo(os.path.join(ndir, "meminfo"))
        nodes[n] = Node(n, cpus, int(total), int(free), n in with_mem)
    for a in online:
        if numa is not None:
            row = [int(numa.info.numa_distance(a, b)) for b in online]
        else:
            raw = [int(x) for x in _read(os.path.join(base, f"node{a}", "distance")).split()]
            row = _distance_row(raw, online, base)
        for b, d in zip(online, row):
            distances[(a, b)] = d
    return Topology(nodes, distances, "libnuma" if numa is not None else "sysfs")


def _optional_list(path: str, default: Iterable[int]) -> list[int]:
    return parse_list(_read(path), None, "node") if os.path.exists(path) else list(default)


def _distance_row(raw: list[int], online: list[int], base: str) -> list[int]:
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
        cache = os.path.join(os.fspath(root), "sys/devices/system/cpu", f"cpu{cpu}", "cache")
        try:
            indexes = sorted(e for e in os.listdir(cache) if e.startswith("index"))
        except OSError:
            continue
        for idx in indexes:
            try:
                if _read(os.path.join(cache, idx, "level")) == "3":
                    out[cpu] = _read(os.path.join(cache, idx, "shared_cpu_list"))
                    break
            except TopologyError:
                continue
    return out


def pfn_ranges(root: str = "/") -> list[tuple[int, int, int]]:
    """(first PFN, end PFN, node) runs of the memory blocks sysfs lists under each node, merged.

    A block listed under two nodes (a node boundary inside it) is left out: its pages' nodes
    are then asked of the kernel. No memory-block directory (no memory hotplug support): [].
    """
    mem = os.path.join(root, "sys/devices/system/memory")
    nodes = os.path.join(root, NODE_DIR)
    try:
        with open(os.path.join(mem, "block_size_bytes")) as fh:
            per = int(fh.read().strip(), 16) // 4096
        names = os.listdir(nodes)
    except (OSError, ValueError):
        return []
    owner: dict[int, int] = {}
    shared: set[int] = set()
    for name in names:
        if not (name.startswith("node") and name[4:].isdigit()):
            continue
        n = int(name[4:])
        try:
            entries = os.listdir(os.path.join(nodes, name))
        except OSError:
            continue
        for e in entries:
            if e.startswith("memory") and e[6:].isdigit():
                b = int(e[6:])
                if owner.setdefault(b, n) != n:
                    shared.add(b)
    out: list[tuple[int, int, int]] = []
    for b in sorted(owner):
        if b in shared:
            continue
        n = owner[b]
        if out and out[-1][1] == b * per and out[-1][2] == n:
            out[-1] = (out[-1][0], (b + 1) * per, n)
        else:
            out.append((b * per, (b + 1) * per, n))
    return out
