"""Run a plan on the C engine: the copy API, the single-threaded retry, and its report."""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass
from typing import Any

from . import _native
from .calibration import for_library
from .errors import NativeError, PinningError, UsageError
from .planner import HUGE_PAGE, Plan, base_pages_of, make_plan
from .topology import Topology, current_node, read_topology


@dataclass(frozen=True)
class CopyResult:
    """What a copy did: the plan, each worker's CPU and bytes, timing, and any fallback."""

    plan: Plan
    report: _native.CopyReport
    bytes: int
    seconds: float  # the whole call as Python saw it: planning, dispatch, copy
    fallback: str | None  # why the copy was retried single-threaded, if it was

    @property
    def engine_seconds(self) -> float:
        return self.report.wall_ns / 1e9

    @property
    def gbps(self) -> float:
        return self.bytes / self.engine_seconds / 1e9 if self.report.wall_ns else 0.0

    @property
    def pin_errors(self) -> list[str]:
        return [f"worker {i} could not be pinned to CPU {w.cpu}: {os.strerror(w.pin_err)}"
                for i, w in enumerate(self.report.workers) if w.pin_err]

    def to_json(self) -> dict[str, Any]:
        return {
            "plan": self.plan.to_json(),
            "bytes": self.bytes,
            "seconds": self.seconds,
            "engine_seconds": self.engine_seconds,
            "gbps": self.gbps,
            "fallback": self.fallback,
            "workers": [
                {"cpu": w.cpu, "cpu_at_start": w.cpu_at_start, "cpu_at_end": w.cpu_at_end,
                 "pinned": w.pin_err == 0, "bytes": w.bytes, "pieces": w.pieces,
                 "seconds": w.ns / 1e9}
                for w in self.report.workers
            ],
            "pin_errors": self.pin_errors,
        }


def run_plan(plan: Plan, items: _native.Items) -> tuple[_native.CopyReport, str | None]:
    """Copy items as planned; when workers cannot be created, retry on one thread.

    The seed's review asked for exactly this retry (and the author agreed): a
    multi-threaded copy that cannot get its threads must still move the data.
    """
    try:
        return _native.copy(items, plan.cpus, plan.threads, plan.split), None
    except NativeError as exc:
        if exc.errno not in (errno.EAGAIN, errno.ENOMEM) or plan.threads == 1:
            raise
        why = f"could not start {plan.threads} threads ({os.strerror(exc.errno or 0)}): retried on one thread"
        return _native.copy(items, plan.cpus[:1], 1, "group"), why


def _node_of(addr: int, fallback: int) -> int:
    status = _native.page_nodes(addr, 1)
    return status[0] if status and status[0] >= 0 else fallback


def plan(src_node: int, dst_node: int, nbytes: int, *, threads: int | None = None,
         policy: str = "auto", item_size: int = HUGE_PAGE,
         topology: Topology | None = None) -> Plan:
    """The plan numamove would follow to copy nbytes from src_node to dst_node.

    Args:
        src_node, dst_node: nodes, validated against the machine.
        nbytes: bytes to copy.
        threads: the thread limit (1..32); the plan may use fewer. None: the
            calibration's for this pair, else the patch's default of 4.
        policy: "push", "pull" or "auto" (the calibration's faster direction, else push).
        item_size: bytes per item (a folio: 4096 or 2 MiB).
        topology: the machine (read from sysfs when omitted).

    Returns:
        A Plan (threads, CPUs, CPU node, split mode, and the reason for each).

    Raises:
        InvalidNodeError, UsageError: bad nodes, sizes, limit or policy.
    """
    topo = topology or read_topology()
    if nbytes < 0 or item_size <= 0:
        raise UsageError("nbytes must be >= 0 and item_size > 0")
    items = -(-nbytes // item_size)
    pages = base_pages_of([nbytes])
    return make_plan(topo, src_node, dst_node, items, pages, threads, policy,
                     running_node=current_node(topo), allowed=frozenset(os.sched_getaffinity(0)),
                     calibration=for_library(topo), engine="copy")


def copy(dst: Any, src: Any, *, threads: int | None = None, policy: str = "auto",
         item_size: int = HUGE_PAGE, src_node: int | None = None, dst_node: int | None = None,
         topology: Topology | None = None, strict_pinning: bool = False) -> CopyResult:
    """Copy the bytes of buffer ``src`` into buffer ``dst`` with pinned threads.

    The plan follows the seed patch: more than 32 base pages go multi-threaded,
    up to ``threads`` threads on the CPUs of the source node (push) or the
    destination node (pull). The GIL is released while copying; no other thread
    may write to either buffer during the call.

    Args:
        dst: a writable buffer (bytearray, mmap, NumPy array...) at least as long as src.
        src: a readable buffer.
        threads: the thread limit, 1..32; None: the calibration's for this pair, else 4.
        policy: "push", "pull" or "auto" (the calibration's faster direction, else push).
        item_size: bytes per copy item (2 MiB mimics huge-page folios).
        src_node, dst_node: the buffers' nodes; found from their first page when omitted.
        topology: the machine (read from sysfs when omitted).
        strict_pinning: raise PinningError if a worker could not be pinned
            (the copy itself has completed correctly by then).

    Returns:
        CopyResult with the plan, per-worker CPUs and bytes, timing and any fallback.

    Raises:
        UsageError: dst is shorter than src, or bad options.
        InvalidNodeError: a node that does not exist.
        PinningError: with strict_pinning, a worker ran unpinned.
    """
    t0 = time.perf_counter()
    keep_dst, dst_addr, dst_len = _native.buffer_address(dst, writable=True, what="dst")
    keep_src, src_addr, src_len = _native.buffer_address(src, what="src")
    if dst_len < src_len:
        raise UsageError(f"destination holds {dst_len} bytes, source {src_len}")
    topo = topology or read_topology()
    here = current_node(topo)
    s = src_node if src_node is not None else _node_of(src_addr, here)
    d = dst_node if dst_node is not None else _node_of(dst_addr, here)
    p = plan(s, d, src_len, threads=threads, policy=policy, item_size=item_size, topology=topo)
    items = _native.Items.ranges(dst_addr, src_addr, src_len, item_size)
    report, fallback = run_plan(p, items)
    del keep_dst, keep_src
    result = CopyResult(p, report, src_len, time.perf_counter() - t0, fallback)
    if strict_pinning and result.pin_errors:
        raise PinningError("; ".join(result.pin_errors))
    return result
