"""The seed patch's heuristics in numamove.planner, rule by rule."""

from __future__ import annotations

import pytest
from fakes import topo

from numamove.errors import InvalidNodeError, UsageError
from numamove.planner import (
    SPLIT_CHUNK,
    SPLIT_GROUP,
    chunk_bounds,
    group_ranges,
    make_plan,
    parse_policies,
    parse_threads,
    validate_limit,
)

BIG = topo({0: list(range(0, 16)), 1: list(range(16, 32)), 2: list(range(32, 72))})
ONE_CPU = topo({0: [0], 1: [1]})
CXL = topo({0: [0, 1, 2, 3], 1: [4, 5, 6, 7], 2: [], 3: []}, {(0, 2): 30, (1, 2): 30})


@pytest.mark.parametrize(
    "items, pages, limit, policy, want_threads, want_split",
    [
        (0, 0, 4, "push", 1, SPLIT_CHUNK),       # nothing to copy: one thread, never zero
        (1, 1, 4, "push", 1, SPLIT_GROUP),       # one page
        (32, 32, 4, "push", 1, SPLIT_GROUP),     # the threshold itself stays single-threaded
        (33, 33, 4, "push", 4, SPLIT_GROUP),     # one above: multi-threaded, limit 4
        (512, 512, 4, "push", 4, SPLIT_GROUP),
        (1, 512, 4, "push", 4, SPLIT_CHUNK),     # one 2 MiB huge page = 512 base pages, cut in 4
        (3, 1536, 4, "pull", 4, SPLIT_CHUNK),    # threads > items: every item cut per thread
        (4, 2048, 4, "push", 4, SPLIT_GROUP),    # items == threads: groups of one
        (1000, 1000, 1, "push", 1, SPLIT_GROUP),  # limit 1
        (1000, 1000, 32, "push", 16, SPLIT_GROUP),  # limit 32 bounded by node 0's 16 CPUs
        (1000, 1000, 32, "pull", 16, SPLIT_GROUP),  # node 1 also has 16
    ],
)
def test_threads_and_split(items: int, pages: int, limit: int, policy: str, want_threads: int,
                           want_split: str) -> None:
    """Thread count follows the >32-page threshold and min(limit, node CPUs); split follows items < threads."""
    p = make_plan(BIG, 0, 1, items, pages, limit, policy, running_node=0)
    assert p.threads == want_threads
    assert p.split == want_split
    assert len(p.cpus) == p.threads


def test_limit_32_caps_at_32_on_a_large_node() -> None:
    """Never more than 32 threads, even on a 40-CPU node."""
    p = make_plan(BIG, 2, 0, 10_000, 10_000, 32, "push", running_node=0)
    assert p.threads == 32
    assert p.cpus == tuple(range(32, 64))


def test_push_uses_source_cpus_and_pull_destination_cpus() -> None:
    """push = CPUs of the source node (patch 5/5 default), pull = the destination's."""
    push = make_plan(BIG, 0, 1, 100, 100, 4, "push", running_node=0)
    pull = make_plan(BIG, 0, 1, 100, 100, 4, "pull", running_node=0)
    assert (push.cpu_node, push.cpus, push.direction) == (0, (0, 1, 2, 3), "push")
    assert (pull.cpu_node, pull.cpus, pull.direction) == (1, (16, 17, 18, 19), "pull")


def test_auto_is_push_until_calibration_exists() -> None:
    """auto applies push and says why."""
    p = make_plan(BIG, 1, 0, 100, 100, 4, "auto", running_node=0)
    assert p.direction == "push" and p.cpu_node == 1
    assert "auto" in p.reasons["cpus"]


def test_single_cpu_nodes_get_one_thread() -> None:
    """min(limit, CPUs): a one-CPU node copies on one thread however large the batch."""
    p = make_plan(ONE_CPU, 0, 1, 4096, 4096, 4, "pull", running_node=0)
    assert p.threads == 1 and p.cpus == (1,)


@pytest.mark.parametrize(
    "machine, pages, limit, policy, engine, pinned",
    [
        (ONE_CPU, 4096, 4, "auto", "move", False),   # one CPU a node: one move_pages thread, the caller's
        (BIG, 32, 4, "auto", "move", False),         # below the threshold
        (BIG, 4096, 1, "auto", "move", False),       # a thread limit of 1
        (BIG, 4096, 4, "auto", "move", True),        # several threads: pinned, push
        (ONE_CPU, 4096, 4, "push", "move", True),    # asked for: pinned as asked
        (ONE_CPU, 4096, 4, "pull", "move", True),
        (ONE_CPU, 4096, 4, "auto", "copy", True),    # the memcpy engine keeps the patch's placement
    ],
)
def test_one_move_pages_thread_under_auto_is_the_callers(machine: object, pages: int, limit: int, policy: str,
                                                         engine: str, pinned: bool) -> None:
    """One thread under policy auto on the move engine runs on the calling thread, not pinned (as the kernel's
    single-threaded path and migratepages do); an explicit push or pull, several threads, or the copy
    engine pin as before."""
    p = make_plan(machine, 0, 1, pages, pages, limit, policy, running_node=0, engine=engine)  # type: ignore[arg-type]
    assert p.pinned is pinned and p.threads == (len(p.cpus) if pinned else 1)
    if pinned:
        assert p.direction in ("push", "pull") and p.cpu_node is not None
    else:
        assert (p.direction, p.cpu_node, p.cpus) == ("caller", None, ())
        assert "not pinned" in p.reasons["cpus"] and "not pinned" in " ".join(p.describe())
        assert p.to_json()["cpus"] == [] and p.to_json()["threads"] == 1


@pytest.mark.parametrize(
    "src, dst, policy, want_node, want_cpus",
    [
        (0, 2, "pull", 0, (0, 1, 2, 3)),   # CPU-less destination: fall back to the source
        (2, 1, "push", 1, (4, 5, 6, 7)),   # CPU-less source: fall back to the destination
        (2, 3, "push", 1, (4, 5, 6, 7)),   # both CPU-less: the node numamove runs on (1)
        (2, 3, "pull", 1, (4, 5, 6, 7)),
    ],
)
def test_cpuless_fallback(src: int, dst: int, policy: str, want_node: int, want_cpus: tuple[int, ...]) -> None:
    """A CPU-less chosen node never leaves zero threads."""
    p = make_plan(CXL, src, dst, 512, 512, 4, policy, running_node=1)
    assert p.cpu_node == want_node
    assert p.cpus == want_cpus
    assert p.threads >= 1
    assert "no usable CPU" in p.reasons["cpus"]


def test_cpus_outside_our_affinity_count_as_missing() -> None:
    """Only CPUs this process may run on are planned; a node with none allowed falls back."""
    p = make_plan(CXL, 0, 1, 512, 512, 4, "push", running_node=0, allowed=frozenset({1, 2, 5}))
    assert p.cpus == (1, 2)
    q = make_plan(CXL, 0, 1, 512, 512, 4, "push", running_node=0, allowed=frozenset({5, 6}))
    assert q.cpu_node == 1 and q.cpus == (5, 6)


def test_unknown_nodes_and_bad_limits_are_usage_errors() -> None:
    """Out-of-range nodes, limits 0/33, and unknown policies are refused before anything runs."""
    with pytest.raises(InvalidNodeError, match="node 9 does not exist"):
        make_plan(ONE_CPU, 0, 9, 1, 1)
    for bad in (0, 33, -1):
        with pytest.raises(UsageError):
            validate_limit(bad)
    with pytest.raises(UsageError, match="unknown policy"):
        make_plan(ONE_CPU, 0, 1, 1, 1, 4, "sideways")


@pytest.mark.parametrize("text, want", [("1", [1]), ("1,2,4", [1, 2, 4]), ("32", [32]), ("auto", [None]),
                                        ("1,auto", [1, None])])
def test_parse_threads_ok(text: str, want: list[int | None]) -> None:
    """--threads accepts comma lists of 1..32 and auto (None: the calibration's, else 4)."""
    assert parse_threads(text) == want


@pytest.mark.parametrize("text", ["0", "33", "abc", "", "1,,2", "-1", "2.5", "Auto", "autox"])
def test_parse_threads_rejects(text: str) -> None:
    """--threads rejects 0, 33, words, blanks and negatives."""
    with pytest.raises(UsageError):
        parse_threads(text)


def test_parse_policies() -> None:
    """--policy takes push, pull, auto."""
    assert parse_policies("push,pull") == ["push", "pull"]
    with pytest.raises(UsageError):
        parse_policies("push,up")


@pytest.mark.parametrize("n, t", [(0, 1), (1, 1), (7, 3), (10, 4), (512, 4), (33, 32), (5, 5)])
def test_group_ranges_deal_contiguous_groups(n: int, t: int) -> None:
    """n/t items each, the first n%t threads one more, contiguous and covering every item once."""
    ranges = group_ranges(n, t)
    assert [c for _, c in ranges] == [n // t + (1 if i < n % t else 0) for i in range(t)]
    covered = [i for first, count in ranges for i in range(first, first + count)]
    assert covered == list(range(n))


@pytest.mark.parametrize("length, t", [(4096, 4), (2 << 20, 3), (4097, 4), (100, 7), (1, 2), (0, 3)])
def test_chunk_bounds_cover_the_item_exactly(length: int, t: int) -> None:
    """Chunks tile the item exactly (the patch only warned about remainders)."""
    b = chunk_bounds(length, t)
    assert b[0][0] == 0 and b[-1][1] == length
    assert all(b[i][1] == b[i + 1][0] for i in range(t - 1))
    assert all(s <= e for s, e in b)


def test_max_pause_call_cost_from_two_probes() -> None:
    """--max-pause: the slope of two probe calls gives the per-entry cost and the fixed part; a noisy pair
    (falling, or a fixed part over half the budget) falls back to the second call's average."""
    from numamove.pagemove import _call_cost

    assert _call_cost([16, 64], [2.0, 5.0], 16.0) == (1.0, 0.0625)
    assert _call_cost([16, 64], [5.0, 4.0], 16.0) == (0.0, 4.0 / 64)
    assert _call_cost([16, 64], [12.0, 13.0], 16.0) == (0.0, 13.0 / 64)  # 11.7 ms "fixed": noise
    assert _call_cost([3], [6.0], 16.0) == (0.0, 2.0)


def test_max_pause_batches_recover_from_a_first_estimate_a_stall_threw() -> None:
    """--max-pause re-sizes its batch after each round of calls: a first estimate from a stalled probe call
    (one entry a call) grows back to what the budget allows within a few rounds, instead of moving 4096 pages
    in 4096 calls that each pay the fixed cost (a guest test once took 86 s so); an overrun shrinks it at
    once; a short round (the last, or --rate's) never shrinks it."""
    from numamove.pagemove import PAUSE_ROUND, _resize

    def cost(b: int) -> float:  # a call: 1 ms fixed + 0.02 ms an entry
        return 1.0 + 0.02 * b

    budget, batch, k, calls, n = 16.0, 1, 0, 0, 4096
    while k < n:
        m = min(n - k, batch * PAUSE_ROUND)
        calls += -(-m // batch)
        k += m
        assert cost(min(batch, m)) <= budget * 1.1
        batch = _resize(min(batch, m), cost(min(batch, m)), budget, batch)
    assert calls < 60 and 500 <= batch <= 750, (calls, batch)
    assert _resize(1000, 32.0, 16.0, 1000) == 500  # twice the budget: half the entries
    assert _resize(10, 1.2, 16.0, 600) == 600  # a short round says little: kept
    assert _resize(600, 13.0, 16.0, 600) == 738 and _resize(600, 1.0, 16.0, 600) == 1200  # at most twice


def test_a_dry_runs_text_says_where_each_plan_runs() -> None:
    """The dry run's text names the caller's unpinned thread, or the pinned threads and their CPUs."""
    from numamove.pagemove import TargetReport
    from numamove.proc import Target
    from numamove.report import render_migration

    rep = TargetReport(Target(1234, "app", "app", (1234,)), 1, dry_run=True)
    rep.plans = [make_plan(ONE_CPU, 0, 1, 4096, 4096, 4, "auto", running_node=0, engine="move"),
                 make_plan(BIG, 0, 1, 4096, 4096, 2, "pull", running_node=0, engine="move")]
    text = "\n".join(render_migration(rep))
    assert "from node 0: 4096 pages, 1 thread, the caller's, not pinned" in text
    assert "from node 0: 4096 pages, pull on node 1's CPUs, 2 thread(s) on CPU(s) 16-17" in text


def test_the_reports_text_counts_one_page_in_the_singular() -> None:
    """'1 page', '2 pages': in every line of the text report that counts pages."""
    from numamove.pagemove import TargetReport
    from numamove.proc import Target
    from numamove.report import render_migration

    rep = TargetReport(Target(1234, "app", "app", (1234,)), 1)
    rep.moved, rep.already = (1, 4096), (2, 8192)
    rep.skipped = {"mapped by other processes (use --all)": (1, 4096)}
    text = "\n".join(render_migration(rep))
    assert "moved 1 page (4.00 KiB, 0 huge)" in text
    assert "already on node 1: 2 pages (8.00 KiB)" in text
    assert "skipped: 1 page (4.00 KiB): mapped by other processes" in text
    assert "1 pages" not in text


def test_the_split_reason_reads_right_for_one_thread_and_even_groups() -> None:
    """The split's reason names what happens: one thread takes every item; groups of n/t, and only where
    n%t is not 0, the first threads taking one more (it read "the first 0 one more")."""
    one = make_plan(BIG, 0, 1, 3, 16, 4, "push", running_node=0, engine="move")
    assert one.threads == 1 and one.reasons["split"] == "3 item(s) on one thread"
    even = make_plan(BIG, 0, 1, 8, 4096, 2, "push", running_node=0, engine="move")
    assert even.reasons["split"] == "8 items dealt out in contiguous groups of 4"
    odd = make_plan(BIG, 0, 1, 9, 4096, 2, "push", running_node=0, engine="move")
    assert odd.reasons["split"] == "9 items dealt out in contiguous groups of 4, the first 1 thread(s) taking one more"


def test_after_keeps_pages_the_kernel_left_in_place_on_their_node() -> None:
    """_account: "after" is where the pages are. Moved pages count on the destination; pages the kernel found
    and left (shared without --all, busy, no memory on the destination), or never handed to it, still count on
    their source; pages gone by the time of the call (not present, zero page) count nowhere. It dropped the
    left ones: a move with shared pages skipped read "after: node 1" alone."""
    import errno

    from numamove import _native
    from numamove.pagemove import MoveOptions, TargetReport, _account
    from numamove.proc import Target

    rep = TargetReport(Target(1234, "app", "app", (1234,)), 1)
    rep.before = {0: [11, 11 * 4096]}
    rep.after = {0: [11, 11 * 4096]}
    codes = [1, 1, 1, -errno.EACCES, -errno.EBUSY, -errno.ENOMEM, -errno.ENOMEM, -errno.ENOENT, -errno.EFAULT, 0,
             -errno.EINPROGRESS]
    status = _native.raw_new("int[]", len(codes))
    for i, c in enumerate(codes):
        status[i] = c
    _account(rep, status, len(codes), 4096, MoveOptions(to=1), 0)
    assert rep.moved == [3, 3 * 4096]
    assert rep.after == {1: [3, 3 * 4096], 0: [6, 6 * 4096]}  # 4 left in place, 1 not reached, 1 "still on node 0"
    assert rep.failed["no memory on the destination"] == [2, 2 * 4096]
    assert rep.failed["still on node 0"] == [1, 4096]
    assert rep.failed["not reached (the call failed before it)"] == [1, 4096]
    assert rep.skipped["shared with other processes (use --all)"] == [1, 4096]
