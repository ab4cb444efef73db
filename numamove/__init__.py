"""numamove: move memory between NUMA nodes with pinned, multi-threaded copies.

The public API::

    import numamove
    numamove.topology()                      # nodes, CPUs, memory, distances
    numamove.plan(0, 1, 1 << 30)             # what a copy would do, and why
    numamove.copy(dst, src, threads=4)       # copy a buffer on pinned threads

The C extension and py-libnuma are imported on first use, so importing
numamove (and running ``numamove --version``) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "copy",
    "plan",
    "topology",
    "CopyResult",
    "Plan",
    "Topology",
    "NumamoveError",
    "UsageError",
    "InvalidNodeError",
    "NodeListError",
    "NodeUnavailableError",
    "SizeError",
    "TopologyError",
    "NativeError",
    "PinningError",
    "VerificationError",
]

from .errors import (
    InvalidNodeError,
    NativeError,
    NodeListError,
    NodeUnavailableError,
    NumamoveError,
    PinningError,
    SizeError,
    TopologyError,
    UsageError,
    VerificationError,
)

if TYPE_CHECKING:
    from .engine import CopyResult
    from .plan import Plan
    from .topology import Topology


def topology(root: str = "/") -> Topology:
    """The machine's NUMA topology (see numamove.topology.read_topology)."""
    from .topology import read_topology

    return read_topology(root)


def plan(src_node: int, dst_node: int, nbytes: int, **kwargs: Any) -> Plan:
    """The plan for copying nbytes between two nodes (see numamove.engine.plan)."""
    from .engine import plan as _plan

    return _plan(src_node, dst_node, nbytes, **kwargs)


def copy(dst: Any, src: Any, **kwargs: Any) -> CopyResult:
    """Copy buffer src into dst on pinned threads (see numamove.engine.copy)."""
    from .engine import copy as _copy

    return _copy(dst, src, **kwargs)


def __getattr__(name: str) -> Any:
    if name in ("CopyResult",):
        from . import engine

        return getattr(engine, name)
    if name == "Plan":
        from .plan import Plan

        return Plan
    if name == "Topology":
        from .topology import Topology

        return Topology
    raise AttributeError(f"module 'numamove' has no attribute {name!r}")
