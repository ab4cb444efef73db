"""Multi-node behaviour of the engine and planner, run inside the QEMU NUMA guests.

On the host these are skipped with the reason; `make test-numa` runs them in a
two-node guest and a five-node guest whose node 4 is CPU-less (CXL-like).
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from test_cli import run

from numamove import _native
from numamove.engine import run_plan
from numamove.planner import make_plan
from numamove.topology import read_topology

SIZE = 8 << 20


def _pattern_region(node: int, seed: int, huge: bool = False) -> _native.Region:
    r = _native.Region(SIZE, node, huge)
    v = r.view()
    block = bytes((i * 31 + seed) & 0xFF for i in range(4099))  # odd length: no page repeats
    for off in range(0, SIZE, len(block)):
        v[off:off + len(block)] = block[: SIZE - off]
    v.release()
    return r


@pytest.fixture()
def pinned_back() -> Iterator[None]:
    before = os.sched_getaffinity(0)
    yield
    os.sched_setaffinity(0, before)


@pytest.mark.numa(nodes=2)
@pytest.mark.parametrize("policy", ["push", "pull"])
@pytest.mark.parametrize("huge", [False, True])
def test_copy_between_every_pair_lands_on_the_destination(policy: str, huge: bool) -> None:
    """For every ordered pair of memory nodes: bytes verify, and every destination page is on dst."""
    topo = read_topology()
    mem = topo.memory_nodes()
    for src, dst in itertools.permutations(mem, 2):
        # the destination is bound to dst but not faulted: the copy threads (on src's CPUs for push) fault
        # every page in, and each must still land on dst
        with _pattern_region(src, src * 7 + dst, huge) as s, _native.Region(SIZE, dst, huge, fault=False) as d:
            item = (2 << 20) if huge else 4096
            items = _native.Items.ranges(d.addr, s.addr, SIZE, item)
            plan = make_plan(topo, src, dst, items.count, SIZE // 4096, 4, policy, running_node=0)
            report, fallback = run_plan(plan, items)
            assert fallback is None
            assert _native.compare(s.addr, d.addr, SIZE) == -1, f"{src}->{dst} bytes differ"
            assert set(_native.page_nodes(d.addr, SIZE)) == {dst}, f"{src}->{dst} pages misplaced"
            assert set(_native.page_nodes(s.addr, SIZE)) == {src}
            assert sum(w.bytes for w in report.workers) == SIZE


@pytest.mark.numa(nodes=2)
@pytest.mark.parametrize("policy, side", [("push", "src"), ("pull", "dst")])
def test_planned_threads_ran_on_the_chosen_nodes_cpus(policy: str, side: str) -> None:
    """push runs on the source node's CPUs and pull on the destination's: sched_getcpu() says so."""
    topo = read_topology()
    cpu_nodes = [n for n in topo.memory_nodes() if topo.nodes[n].has_cpu]
    for src, dst in itertools.permutations(cpu_nodes[:2], 2):
        with _pattern_region(src, 3) as s, _native.Region(SIZE, dst) as d:
            items = _native.Items.ranges(d.addr, s.addr, SIZE, 4096)
            plan = make_plan(topo, src, dst, items.count, SIZE // 4096, 4, policy, running_node=0)
            want_node = src if side == "src" else dst
            assert plan.cpu_node == want_node
            report, _ = run_plan(plan, items)
            for w in report.workers:
                assert w.pin_err == 0
                assert topo.node_of_cpu(w.cpu_at_start) == want_node
                assert topo.node_of_cpu(w.cpu_at_end) == want_node
            assert _native.compare(s.addr, d.addr, SIZE) == -1


@pytest.mark.numa(nodes=4)
def test_threads_pinned_across_nodes_each_run_where_asked() -> None:
    """Four workers pinned to CPUs of four different nodes each run on their own CPU."""
    topo = read_topology()
    cpus = tuple(topo.nodes[n].cpus[0] for n in topo.ids if topo.nodes[n].has_cpu)[:4]
    with _pattern_region(0, 5) as s, _native.Region(SIZE, 1) as d:
        rep = _native.copy(_native.Items.ranges(d.addr, s.addr, SIZE, 4096), cpus, len(cpus), "group")
        assert [(w.cpu_at_start, w.cpu_at_end) for w in rep.workers] == [(c, c) for c in cpus]
        assert _native.compare(s.addr, d.addr, SIZE) == -1
        assert set(_native.page_nodes(d.addr, SIZE)) == {1}


@pytest.mark.numa(nodes=2)
def test_regions_map_on_every_memory_node() -> None:
    """nm_map_on_node puts every page of a region on the node asked, for each node."""
    topo = read_topology()
    for n in topo.memory_nodes():
        with _native.Region(4 << 20, n) as r:
            assert set(_native.page_nodes(r.addr, r.length)) == {n}


@pytest.mark.numa(nodes=5, cpuless=True)
@pytest.mark.parametrize("policy", ["push", "pull"])
def test_cpuless_destination_falls_back_and_completes(policy: str, guest_truth: dict[str, Any]) -> None:
    """Copies to and from the CPU-less node use the other node's CPUs, verify, and land right."""
    topo = read_topology()
    cxl = next(n["node"] for n in guest_truth["nodes"] if not n["has_cpu"])
    for src, dst in ((0, cxl), (cxl, 1)):
        with _pattern_region(src, 11) as s, _native.Region(SIZE, dst) as d:
            items = _native.Items.ranges(d.addr, s.addr, SIZE, 4096)
            plan = make_plan(topo, src, dst, items.count, SIZE // 4096, 4, policy, running_node=2)
            cpu_side, other = (dst, src) if policy == "pull" else (src, dst)
            if cpu_side == cxl:
                assert plan.cpu_node == other and "no usable CPU" in plan.reasons["cpus"]
            else:
                assert plan.cpu_node == cpu_side
            assert plan.threads >= 1
            report, _ = run_plan(plan, items)
            assert all(topo.node_of_cpu(w.cpu_at_start) == plan.cpu_node for w in report.workers)
            assert _native.compare(s.addr, d.addr, SIZE) == -1
            assert set(_native.page_nodes(d.addr, SIZE)) == {dst}


@pytest.mark.numa(nodes=5, cpuless=True)
def test_both_cpuless_uses_the_node_numamove_runs_on(guest_truth: dict[str, Any], pinned_back: None) -> None:
    """Source and destination both CPU-less: the copy runs on the node of the running CPU."""
    topo = read_topology()
    cxl = next(n["node"] for n in guest_truth["nodes"] if not n["has_cpu"])
    os.sched_setaffinity(0, {topo.nodes[2].cpus[0]})
    from numamove.topology import current_node

    here = current_node(topo)
    assert here == 2
    os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    with _pattern_region(cxl, 13) as s, _native.Region(SIZE, cxl) as d:
        items = _native.Items.ranges(d.addr, s.addr, SIZE, 4096)
        plan = make_plan(topo, cxl, cxl, items.count, SIZE // 4096, 4, "push", running_node=here)
        assert plan.cpu_node == 2 and plan.cpus == topo.nodes[2].cpus[:1]
        report, _ = run_plan(plan, items)
        assert [w.cpu_at_start for w in report.workers] == list(plan.cpus)
        assert _native.compare(s.addr, d.addr, SIZE) == -1
        assert set(_native.page_nodes(d.addr, SIZE)) == {cxl}


@pytest.mark.numa(nodes=2)
def test_bench_cli_between_nodes(guest_truth: dict[str, Any]) -> None:
    """`numamove bench` defaults to the most distant pair, copies across nodes and verifies."""
    code, out, err = run("bench", "--size", "8M", "--threads", "1,2", "--repeats", "1", "--json")
    assert code == 0, err
    doc = json.loads(out)
    dist = guest_truth["distances"]
    ids = [n["node"] for n in guest_truth["nodes"]]
    far = max(dist[ids.index(a)][ids.index(b)] for a in ids for b in ids)
    assert dist[ids.index(doc["src"])][ids.index(doc["dst"])] == far
    assert doc["src"] != doc["dst"] and doc["verified"] is True
    topo = read_topology()
    for r in doc["runs"]:
        assert all(topo.node_of_cpu(c) == r["cpu_node"] for c in r["cpus_seen"])


@pytest.mark.numa(nodes=2)
def test_nodes_cli_in_guest(guest_truth: dict[str, Any]) -> None:
    """`numamove nodes --json` shows the guest's nodes, CPU-less ones flagged."""
    code, out, _ = run("nodes", "--json")
    doc = json.loads(out)
    assert code == 0
    assert [(n["node"], n["has_cpu"]) for n in doc["nodes"]] == [
        (n["node"], n["has_cpu"]) for n in guest_truth["nodes"]]
    code, text, _ = run("nodes")
    assert ("CPU-less" in text) == any(not n["has_cpu"] for n in guest_truth["nodes"])
