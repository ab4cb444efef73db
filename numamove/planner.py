"""The seed patch's heuristics as pure functions: pages -> threads, CPUs, split mode.

Rules (shared/reference/seed-rfc-mt-page-copy.txt, mm/copy_pages.c and its review):

* more than 32 base pages in the batch: multi-threaded; otherwise one thread.
  A 2 MiB huge page counts as 512 base pages;
* threads = min(limit, CPUs of the chosen node), never above 32; limit defaults to 4;
* push (patch 5/5's default) uses the source node's CPUs, pull the destination's;
  policy auto and thread limit auto follow a calibration made on this machine
  (numamove.calibration), else push and 4;
* a CPU-less chosen node falls back to the other node, and where both are
  CPU-less, to the node of the CPU running numamove: never zero threads;
* one thread under policy auto on the move engine (move_pages) is not pinned: the
  calling thread moves, wherever the scheduler runs it, exactly as the kernel's own
  single-threaded path (below the patch's threshold) and migratepages do. Pinning
  one thread buys no parallelism and holds it on one CPU even when that CPU is
  busy (one CPU a node: 2-3x slower for THP in the guest); --policy push or pull
  still pins it, as asked, and so does a calibration that measured the pair (it
  measures pinned threads only);
* fewer items than threads: every item is cut into one chunk per thread;
  otherwise items are dealt out in contiguous groups of n/t, the first n%t one more.

Nothing here touches the machine: the topology, the allowed CPUs and the node
numamove runs on are arguments, so every rule is tested on made-up machines.
"""

from __future__ import annotations

from .errors import UsageError
from .nodelist import format_list

TYPE_CHECKING = False  # typing's own constant to mypy; importing typing costs start-up ~4 ms
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

    from .calibration import Choice, Loaded
    from .topology import Topology

BASE_PAGE = 4096
HUGE_PAGE = 2 << 20
MT_THRESHOLD_PAGES = 32
DEFAULT_LIMIT = 4
MAX_THREADS = 32
POLICIES = ("push", "pull", "auto")
CHUNK_ALIGN = 64  # the C engine starts chunks on cache lines

SPLIT_GROUP = "group"
SPLIT_CHUNK = "chunk"


class Plan:
    """How one batch is copied, and why."""

    __slots__ = ("src", "dst", "policy", "direction", "cpu_node", "cpus", "split", "items", "base_pages",
                 "limit", "reasons")

    def __init__(self, src: int, dst: int, policy: str, direction: str, cpu_node: int | None, cpus: tuple[int, ...],
                 split: str, items: int, base_pages: int, limit: int, reasons: dict[str, str] | None = None) -> None:
        self.src = src
        self.dst = dst
        self.policy = policy  # as asked: push, pull or auto
        self.direction = direction  # what was applied: push, pull, or caller (one thread, not pinned)
        self.cpu_node = cpu_node  # node whose CPUs run the copy; None when not pinned
        self.cpus = cpus  # one per thread; empty: one thread, the caller's, not pinned
        self.split = split
        self.items = items
        self.base_pages = base_pages
        self.limit = limit
        self.reasons = reasons if reasons is not None else {}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Plan) and all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    def replace(self, **changes: Any) -> Plan:
        kw = {k: getattr(self, k) for k in self.__slots__}
        kw.update(changes)
        return Plan(**kw)

    def __repr__(self) -> str:
        return "Plan(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__) + ")"

    @property
    def threads(self) -> int:
        return len(self.cpus) or 1

    @property
    def pinned(self) -> bool:
        return bool(self.cpus)

    def where(self) -> str:
        """Where the copy runs, for a report line."""
        if not self.pinned:
            return "1 thread, the caller's, not pinned"
        return (f"{self.direction} on node {self.cpu_node}'s CPUs, "
                f"{self.threads} thread(s) on CPU(s) {format_list(self.cpus)}")

    def to_json(self) -> dict[str, Any]:
        return {
            "src": self.src,
            "dst": self.dst,
            "policy": self.policy,
            "direction": self.direction,
            "cpu_node": self.cpu_node,
            "threads": self.threads,
            "cpus": list(self.cpus),
            "split": self.split,
            "items": self.items,
            "base_pages": self.base_pages,
            "limit": self.limit,
            "reasons": dict(self.reasons),
        }

    def describe(self) -> list[str]:
        """Human lines: the choice and its reason, one line each."""
        return [
            f"node {self.src} -> node {self.dst}: {self.items} item(s), {self.base_pages} base page(s)",
            (f"direction: {self.direction} on node {self.cpu_node}'s CPUs ({self.reasons['cpus']})" if self.pinned
             else f"direction: the calling thread, not pinned ({self.reasons['cpus']})"),
            (f"threads: {self.threads} on CPU(s) {format_list(self.cpus)} ({self.reasons['threads']})"
             if self.pinned else f"threads: 1 ({self.reasons['threads']})"),
            f"split: {self.split} ({self.reasons['split']})",
        ]


def base_pages_of(sizes: Iterable[int]) -> int:
    """Base (4 KiB) pages covered by items of these byte sizes; a 2 MiB page is 512."""
    return sum(-(-s // BASE_PAGE) for s in sizes)


def validate_limit(limit: int) -> int:
    """The thread limit, 1..32, or UsageError."""
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_THREADS:
        raise UsageError(f"thread count must be an integer from 1 to {MAX_THREADS}, not {limit!r}")
    return limit


def validate_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise UsageError(f"unknown policy '{policy}' (choose from {', '.join(POLICIES)})")
    return policy


def choose_cpu_node(
    topo: Topology, src: int, dst: int, policy: str, running_node: int,
    allowed: frozenset[int] | None = None, why: str | None = None,
) -> tuple[int, str, str]:
    """The node whose CPUs copy, the direction applied, and why.

    policy is push or pull here (auto is resolved before: push without a calibration).
    A node counts as CPU-less here when none of its CPUs is allowed to us: pinning
    there would fail just as surely.
    """
    validate_policy(policy)
    direction = "pull" if policy == "pull" else "push"
    if why is None:
        why = "policy auto: push, the patch's default" if policy == "auto" else f"policy {policy}"
    first, other = (dst, src) if direction == "pull" else (src, dst)

    def usable(n: int) -> bool:
        return bool(_usable_cpus(topo, n, allowed))

    if usable(first):
        return first, direction, f"{why}: node {first}'s CPUs"
    if usable(other):
        return other, direction, f"{why}, but node {first} has no usable CPU: node {other}'s CPUs"
    return (running_node, direction,
            f"{why}, but nodes {src} and {dst} have no usable CPU: "
            f"node {running_node}, where numamove runs")


def _usable_cpus(topo: Topology, node: int, allowed: frozenset[int] | None) -> list[int]:
    cpus = topo.node(node).cpus
    return [c for c in cpus if allowed is None or c in allowed]


def _auto_direction(policy: str, choice: Choice | None, calibration: Loaded | None,
                    src: int, dst: int, engine: str) -> tuple[str, str]:
    """(push or pull, why) for a policy; auto follows a matching calibration."""
    if policy != "auto":
        return policy, f"policy {policy}"
    if choice is not None:
        assert calibration is not None and calibration.calibration is not None
        best = choice.best
        if best == "caller":  # several threads asked for: the faster pinned direction
            best = choice.best_pinned() or "push"
            return best, (f"policy auto: {calibration.calibration.label} measured one unpinned thread fastest, "
                          f"but more threads may run: {best}, the faster pinned direction, for {choice.describe()}")
        return best, (f"policy auto: {calibration.calibration.label} measured {best} "
                      f"fastest for {choice.describe()}")
    if calibration is not None and calibration.calibration is not None:
        return "push", (f"policy auto: {calibration.calibration.label} has no {engine} measurement "
                        f"for node {src} -> node {dst}: push, the patch's default")
    why = calibration.why if calibration is not None else "no calibration consulted"
    return "push", f"policy auto: {why}: push, the patch's default"


def make_plan(
    topo: Topology,
    src: int,
    dst: int,
    items: int,
    base_pages: int,
    limit: int | None = DEFAULT_LIMIT,
    policy: str = "auto",
    running_node: int | None = None,
    allowed: frozenset[int] | None = None,
    calibration: Loaded | None = None,
    engine: str = "copy",
) -> Plan:
    """Plan one batch of ``items`` items covering ``base_pages`` 4 KiB pages.

    Args:
        topo: the machine.
        src, dst: source and destination nodes (validated against topo).
        items: how many items (pages, folios or regions) the batch holds.
        base_pages: their size in base pages (a 2 MiB page is 512).
        limit: the thread limit (the patch's limit_mt_num), 1..32; None (auto): the
            calibration's best thread count, else the patch's default of 4.
        policy: push, pull or auto (the calibration's faster direction, else push).
        running_node: the node numamove runs on (the last CPU-less fallback);
            defaults to the lowest node with CPUs.
        allowed: CPUs this process may run on (None: all).
        calibration: the outcome of calibration.load() (None: none consulted).
        engine: which calibration applies: copy (memcpy engine) or move (move_pages).

    Returns:
        The plan; never zero threads.

    Raises:
        InvalidNodeError: src or dst is not a node of topo.
        UsageError: bad limit, policy or counts.
    """
    topo.node(src)
    topo.node(dst)
    validate_policy(policy)
    if limit is not None:
        validate_limit(limit)
    if items < 0 or base_pages < 0:
        raise UsageError("item and page counts cannot be negative")
    if running_node is None:
        running_node = next((n for n in topo.ids if topo.nodes[n].has_cpu), topo.ids[0])
    cal = calibration.calibration if calibration is not None else None
    choice = cal.choice(src, dst, engine) if cal is not None else None
    reasons: dict[str, str] = {}
    if (policy == "auto" and choice is not None and choice.best == "caller"
            and (limit in (None, 1) or base_pages <= MT_THRESHOLD_PAGES)):
        assert calibration is not None and calibration.calibration is not None
        return _caller_plan(src, dst, policy, items, base_pages, 1, {
            "threads": "one thread, from the calibration" if limit is None else "thread limit 1",
            "cpus": (f"policy auto: {calibration.calibration.label} measured one unpinned thread (the caller) "
                     f"fastest for {choice.describe()}")})
    want, why = _auto_direction(policy, choice, calibration, src, dst, engine)
    node, direction, reasons["cpus"] = choose_cpu_node(topo, src, dst, want, running_node, allowed, why)
    cpus = _usable_cpus(topo, node, allowed) or sorted(allowed or ()) or [0]
    setting = choice.settings.get(direction) if choice is not None else None
    if setting is not None and setting.cpu_node == node:
        # the calibrated placement first (spread across L3 domains, or packed), then the rest
        first = [c for c in setting.cpus if c in cpus]
        cpus = first + [c for c in cpus if c not in first]
    if limit is None:
        if setting is not None:
            limit = setting.threads
            limit_why = f"thread limit {limit} ({setting.placement}) from the calibration"
        else:
            limit = DEFAULT_LIMIT
            limit_why = f"thread limit {limit}, the patch's default (no calibration for this pair)"
    else:
        limit_why = f"thread limit {limit}"

    if base_pages <= MT_THRESHOLD_PAGES:
        threads = 1
        reasons["threads"] = f"{base_pages} base page(s) <= {MT_THRESHOLD_PAGES}: one thread"
    else:
        threads = min(limit, len(cpus), MAX_THREADS)
        bound = limit_why if threads == limit else f"node {node}'s {len(cpus)} usable CPU(s)"
        reasons["threads"] = f"{base_pages} base pages > {MT_THRESHOLD_PAGES}: bounded by {bound}"
    if threads == 1 and policy == "auto" and engine == "move" and choice is None:
        reasons["cpus"] = ("policy auto, one thread: the calling thread, not pinned, as the kernel's single-threaded "
                           "path and migratepages run (pinning one thread gains no parallelism)")
        return _caller_plan(src, dst, policy, items, base_pages, limit, reasons)
    if items < threads:
        split = SPLIT_CHUNK
        reasons["split"] = f"{items} item(s) < {threads} threads: each item cut into {threads} chunks"
    else:
        split = SPLIT_GROUP
        if threads == 1:
            reasons["split"] = f"{items} item(s) on one thread"
        else:
            extra = items % threads
            reasons["split"] = (f"{items} items dealt out in contiguous groups of {items // threads}"
                                + (f", the first {extra} thread(s) taking one more" if extra else ""))
    return Plan(src, dst, policy, direction, node, tuple(cpus[:threads]), split, items,
                base_pages, limit, reasons)


def _caller_plan(src: int, dst: int, policy: str, items: int, base_pages: int, limit: int,
                 reasons: dict[str, str]) -> Plan:
    """One move_pages thread, numamove's own, not pinned."""
    return Plan(src, dst, policy, "caller", None, (), SPLIT_GROUP, items, base_pages, limit, reasons | {
        "split": f"{items} item(s) on one thread"})


def group_ranges(items: int, threads: int) -> list[tuple[int, int]]:
    """(first, count) of the items each thread copies in group mode."""
    per, extra = divmod(items, threads)
    out = []
    first = 0
    for t in range(threads):
        count = per + (1 if t < extra else 0)
        out.append((first, count))
        first += count
    return out


def chunk_bounds(length: int, threads: int) -> list[tuple[int, int]]:
    """(start, end) byte offsets of each thread's chunk of one item in chunk mode.

    Boundaries fall on cache lines; together the chunks cover the item exactly once.
    """
    def start(i: int) -> int:
        return length if i >= threads else (length * i // threads) & ~(CHUNK_ALIGN - 1)

    return [(start(i), start(i + 1)) for i in range(threads)]


def parse_threads(text: str) -> list[int | None]:
    """A --threads list like "1,2,4" or "auto": each 1..32, or None for auto."""
    out: list[int | None] = []
    for part in text.split(","):
        part = part.strip()
        if part == "auto":
            out.append(None)
            continue
        if not part.isdigit():
            raise UsageError(f"invalid thread count '{part}' in '{text}': use integers from 1 to {MAX_THREADS} or auto")
        out.append(validate_limit(int(part)))
    return out


def parse_policies(text: str) -> list[str]:
    return [validate_policy(p.strip()) for p in text.split(",")]
