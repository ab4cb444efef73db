"""Shared test set-up: the `numa` marker, guest detection, and the guest's known topology.

A test that needs several NUMA nodes is marked ``@pytest.mark.numa(nodes=N, cpuless=bool)``.
On the host (one node) it is skipped with that reason; inside a QEMU guest started by
tests/vm/harness.py it runs when the guest's topology satisfies it and is deselected
otherwise, so a guest run never skips a test it was meant to run.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

GUEST = os.environ.get("NUMAMOVE_GUEST")

# TCG guests are slow and their file system is read-only: no deadlines, no example database.
settings.register_profile("numamove", deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("numamove")


def _online_nodes() -> tuple[int, bool]:
    base = Path("/sys/devices/system/node")
    nodes = [p for p in base.glob("node[0-9]*")]
    cpuless = any(not (p / "cpulist").read_text().strip() for p in nodes)
    return len(nodes), cpuless


def _requirement(item: pytest.Item) -> tuple[int, bool, str | None] | None:
    mark = item.get_closest_marker("numa")
    if mark is None:
        return None
    return (int(mark.kwargs.get("nodes", 2)), bool(mark.kwargs.get("cpuless", False)),
            mark.kwargs.get("guest"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    have_nodes, have_cpuless = _online_nodes()
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        req = _requirement(item)
        if req is None:
            keep.append(item)
            continue
        nodes, cpuless, guest = req
        # guest="two": a test that needs nothing the other guest adds, and would only cost its
        # time there (or be noisier: the five-node guest has more vCPUs than the host has cores)
        fits = have_nodes >= nodes and (have_cpuless or not cpuless) and (not GUEST or guest in (None, GUEST))
        if fits:
            keep.append(item)
        elif GUEST:
            dropped.append(item)  # meant for the other guest topology
        else:
            what = f"{nodes} NUMA nodes" + (" with a CPU-less one" if cpuless else "")
            item.add_marker(pytest.mark.skip(
                reason=f"needs {what}; this machine has {have_nodes}: runs in the QEMU guests "
                       f"(make test-numa)"))
            keep.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.fixture(scope="session")
def guest_truth() -> dict[str, Any]:
    """The topology the harness configured for this guest (the ground truth)."""
    path = os.environ.get("NUMAMOVE_GUEST_TOPOLOGY")
    if not path:
        pytest.skip("not inside a numamove QEMU guest")
    return dict(json.loads(Path(path).read_text()))


@pytest.fixture(autouse=True)
def no_calibration(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test starts without a calibration (a developer's own file must not steer plans);
    a test that wants one writes it to this path, which NUMAMOVE_CALIBRATION names."""
    path = tmp_path_factory.mktemp("calibration") / "calibration.json"
    monkeypatch.setenv("NUMAMOVE_CALIBRATION", str(path))
    return path


@pytest.fixture
def sleeper() -> Iterator[int]:
    """The PID of a `sleep 60` child: a process of this user's to move or show."""
    p = subprocess.Popen(["sleep", "60"])
    try:
        yield p.pid
    finally:
        p.kill()
        p.wait()
