"""numamove: move memory between NUMA nodes with pinned, multi-threaded copies.

The public API::

    import numamove
    numamove.read_topology()                 # nodes, CPUs, memory, distances
    numamove.plan(0, 1, 1 << 30)             # what a copy would do, and why
    numamove.copy(dst, src, threads=4)       # copy a buffer on pinned threads

The C extension and py-libnuma are imported on first use, so importing
numamove (and running ``numamove --version``) stays cheap.
"""

from __future__ import annotations

import time as _time

IMPORTED_AT = _time.perf_counter()  # where the CLI's "start-up" timing begins (after the interpreter's own)


__version__ = "0.1.0"

__all__ = [
    "__version__",
    "copy",
    "migrate",
    "plan",
    "where",
    "read_topology",
    "CopyResult",
    "BufferMigration",
    "UnsafeBufferError",
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

from .errors import (  # noqa: E402
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

TYPE_CHECKING = False  # typing's own constant to mypy; importing typing costs start-up ~4 ms
if TYPE_CHECKING:
    from typing import Any

    from .buffers import BufferMigration
    from .engine import CopyResult
    from .planner import Plan
    from .topology import Topology


def read_topology(root: str = "/") -> Topology:
    """The machine's NUMA topology (see numamove.topology.read_topology).

    (Not named ``topology``: importing the submodule numamove.topology would shadow it.)
    """
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


def migrate(buffer: Any, node: int, **kwargs: Any) -> BufferMigration:
    """Move the pages under a buffer to node, keeping its address (see numamove.buffers.migrate)."""
    from .buffers import migrate as _migrate

    return _migrate(buffer, node, **kwargs)


def where(buffer: Any) -> dict[int, int]:
    """Pages of a buffer per node (see numamove.buffers.where)."""
    from .buffers import where as _where

    return _where(buffer)


def __getattr__(name: str) -> Any:
    if name in ("BufferMigration", "UnsafeBufferError"):
        from . import buffers

        return getattr(buffers, name)
    if name in ("CopyResult",):
        from . import engine

        return getattr(engine, name)
    if name == "Plan":
        from .planner import Plan

        return Plan
    if name == "Topology":
        from .topology import Topology

        return Topology
    raise AttributeError(f"module 'numamove' has no attribute {name!r}")
