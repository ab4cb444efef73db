"""Topology parsing on fake sysfs trees, and the real machine read two ways."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fakes import sysfs_tree

from numamove.errors import InvalidNodeError, TopologyError
from numamove.topology import read_topology


def test_one_node_tree(tmp_path: Path) -> None:
    """A plain one-node machine."""
    root = sysfs_tree(tmp_path, {0: [0, 1]}, {}, {0: (8388608, 4194304)})
    t = read_topology(root)
    assert t.ids == [0]
    assert t.nodes[0].cpus == (0, 1)
    assert t.nodes[0].mem_total == 8 << 30 and t.nodes[0].mem_free == 4 << 30
    assert t.most_distant_pair() == (0, 0)


def test_cxl_tree_with_cpuless_node_and_gaps(tmp_path: Path) -> None:
    """Node ids with gaps, a CPU-less memory node, and a node without memory."""
    root = sysfs_tree(tmp_path, {0: [0, 1, 2, 3], 2: [4, 5, 6, 7], 3: [8], 5: []},
                      {(0, 2): 21, (0, 5): 40, (2, 5): 30, (3, 5): 35}, no_memory=(3,))
    t = read_topology(root)
    assert t.ids == [0, 2, 3, 5]
    assert not t.nodes[5].has_cpu and t.nodes[5].has_memory
    assert t.nodes[3].has_cpu and not t.nodes[3].has_memory
    assert t.distance(0, 5) == 40 and t.distance(5, 0) == 40 and t.distance(2, 2) == 10
    assert t.most_distant_pair() == (0, 5)
    assert t.memory_nodes() == [0, 2, 5]
    assert t.node_of_cpu(8) == 3 and t.node_of_cpu(99) is None
    doc: Any = t.to_json()
    assert doc["nodes"][3] == {"node": 5, "cpus": "", "cpu_count": 0, "has_cpu": False,
                               "has_memory": True, "mem_total_bytes": 4 << 30,
                               "mem_free_bytes": 3 << 30}
    assert doc["distances"]["0"]["5"] == 40


def test_validation_names_the_problem(tmp_path: Path) -> None:
    """Out-of-range nodes and nodes lacking memory or CPUs are refused with their number."""
    t = read_topology(sysfs_tree(tmp_path, {0: [0], 1: []}, {}, no_memory=(0,)))
    with pytest.raises(InvalidNodeError, match=r"node 99 does not exist \(this machine has nodes 0-1\)"):
        t.node(99)
    with pytest.raises(InvalidNodeError, match="--from: node 0 has no memory"):
        t.require(0, "--from", memory=True)
    with pytest.raises(InvalidNodeError, match="--to: node 1 has no CPUs"):
        t.require(1, "--to", cpus=True)
    assert t.parse_nodes("all") == [0, 1]


def test_missing_sysfs_is_a_topology_error(tmp_path: Path) -> None:
    """No sysfs node directory: a TopologyError, not a traceback from deep inside."""
    with pytest.raises(TopologyError, match="missing"):
        read_topology(tmp_path)


def test_malformed_distance_row(tmp_path: Path) -> None:
    """A distance row of the wrong length is reported."""
    root = sysfs_tree(tmp_path, {0: [0], 1: [1]}, {})
    (root / "sys/devices/system/node/node1/distance").write_text("20\n")
    with pytest.raises(TopologyError, match="1 distances for 2 online nodes"):
        read_topology(root)


def test_libnuma_and_sysfs_agree_on_this_machine() -> None:
    """py-libnuma and the sysfs parser read the same topology on the real machine."""
    a = read_topology("/", use_libnuma=True)
    b = read_topology("/", use_libnuma=False)
    assert a.source == "libnuma" and b.source == "sysfs"
    assert a.ids == b.ids
    assert [a.nodes[n].cpus for n in a.ids] == [b.nodes[n].cpus for n in b.ids]
    assert a.distances == b.distances
    assert [a.nodes[n].mem_total for n in a.ids] == [b.nodes[n].mem_total for n in b.ids]


@pytest.mark.numa(nodes=2)
def test_guest_topology_matches_what_the_harness_configured(guest_truth: dict[str, Any]) -> None:
    """Inside each guest, both readers report the node count, cpulists, CPU-less flags and distances QEMU was given."""
    for use_libnuma in (True, False):
        t = read_topology("/", use_libnuma=use_libnuma)
        assert t.ids == [n["node"] for n in guest_truth["nodes"]]
        for n in guest_truth["nodes"]:
            node = t.nodes[n["node"]]
            assert list(node.cpus) == n["cpus"]
            assert node.has_cpu == n["has_cpu"]
            # the kernel keeps some of each node for itself; most of it must be there
            assert 0.7 * n["mem_mib"] * 2**20 < node.mem_total <= n["mem_mib"] * 2**20
        ids = t.ids
        assert [[t.distance(a, b) for b in ids] for a in ids] == guest_truth["distances"]


@pytest.mark.numa(nodes=2)
def test_guest_runs_without_address_space_randomization() -> None:
    """The guests boot with norandmaps (tests/vm/harness.py says why: under TCG, ASLR gave every Python
    process its own translations of the same library pages, and freeing such pages stalled the next
    process that got them for tens of seconds): no randomization, and two processes map libc alike."""
    with open("/proc/sys/kernel/randomize_va_space") as fh:
        assert fh.read().strip() == "0"
    code = "print([ln.split()[0] for ln in open('/proc/self/maps') if 'libc.so' in ln][0])"
    first, second = (subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
                     for _ in range(2))
    assert first == second and first.strip()
