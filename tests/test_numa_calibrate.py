"""`numamove calibrate` and policy/threads auto on real multi-node kernels (the QEMU guests).

On the host these are skipped with the reason; `make test-numa` runs them in the
two-node guest and the five-node guest whose node 4 is CPU-less.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from schemas import validate
from test_cli import run
from workload_helper import BusyLoops, Workload

from numamove import _native
from numamove.calibrate import run_calibration
from numamove.calibration import digest, load
from numamove.planner import make_plan
from numamove.topology import read_topology

BUDGET = 15  # every pair of the five-node guest within 15 s: a budget cut short is a tested outcome too


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Any], float, Path]]:
    """One `numamove calibrate --json` of every pair on this guest: (its document, seconds, file)."""
    path = tmp_path_factory.mktemp("cal") / "calibration.json"
    old = os.environ.get("NUMAMOVE_CALIBRATION")
    os.environ["NUMAMOVE_CALIBRATION"] = str(path)
    t0 = time.monotonic()
    code, out, err = run("calibrate", "--budget", str(BUDGET), "--size", "16M", "-q", "--json")
    took = time.monotonic() - t0
    if old is not None:
        os.environ["NUMAMOVE_CALIBRATION"] = old
    assert code == 0, err
    yield json.loads(out), took, path


@pytest.mark.numa(nodes=2)
def test_calibration_runs_within_its_budget_and_measures_every_pair(
        calibrated: tuple[dict[str, Any], float, Path]) -> None:
    doc, took, path = calibrated
    topo = read_topology()
    assert took < BUDGET + 15, f"calibrate took {took:.1f} s on a {BUDGET} s budget"
    assert doc["elapsed_seconds"] <= BUDGET + 10
    mem = topo.memory_nodes()
    assert {(p["src"], p["dst"]) for p in doc["pairs"]} == {(a, b) for a in mem for b in mem if a != b}
    assert json.loads(path.read_text())["fingerprint_digest"] == doc["fingerprint_digest"]
    validate(doc, "calibrate")
    measured = [e for p in doc["pairs"] for e in p["engines"].values() if e["best"]]
    # the budget is shared: the first pairs at least are measured, in both engines
    assert measured and doc["pairs"][0]["engines"]["copy"]["best"] and doc["pairs"][0]["engines"]["move"]["best"]
    # the move engine also measured one unpinned thread (the caller); the copy engine has none
    move = doc["pairs"][0]["engines"]["move"]
    caller = [s for s in move["samples"] if s["direction"] == "caller"]
    assert len(caller) == 1 and caller[0]["seconds"] and caller[0]["cpus"] == "" and caller[0]["cpu_node"] is None
    assert "caller" in move["settings"]
    assert not [s for s in doc["pairs"][0]["engines"]["copy"]["samples"] if s["direction"] == "caller"]
    if doc["complete"]:
        assert len(measured) == 2 * len(doc["pairs"])
    else:
        assert any("budget ran out" in n for n in doc["notes"])


@pytest.mark.numa(nodes=2)
def test_auto_follows_the_calibration(calibrated: tuple[dict[str, Any], float, Path],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The plans of policy/threads auto take each pair's measured direction and thread count."""
    doc, _, path = calibrated
    monkeypatch.setenv("NUMAMOVE_CALIBRATION", str(path))
    topo = read_topology()
    loaded = load(topo)
    assert loaded.calibration is not None, loaded.warning
    checked = 0
    for pair in doc["pairs"]:
        for engine, e in pair["engines"].items():
            if not e["best"]:
                continue
            p = make_plan(topo, pair["src"], pair["dst"], 4096, 4096, None, "auto", 0,
                          frozenset(os.sched_getaffinity(0)), loaded, engine)
            assert p.direction == e["best"] and str(path) in p.reasons["cpus"]
            if e["best"] == "caller":
                assert (p.threads, p.cpus, p.cpu_node) == (1, (), None)
            else:
                assert p.threads == min(e["settings"][e["best"]]["threads"], len(p.cpus))
            checked += 1
    assert checked
    # and a real `numamove proc` (in-process: CLI start-up is slow under TCG) says so and follows it
    move01 = doc["pairs"][0]["engines"]["move"]
    src, dst = doc["pairs"][0]["src"], doc["pairs"][0]["dst"]
    with Workload("--size", "4M", "--huge", "0", "--node", str(src)) as w:
        code, out, err = run("proc", str(w.pid), "--to", str(dst), "--only", "anon", "--json")
        assert code == 0, err
        rep = json.loads(out)
        validate(rep, "proc")
        assert str(path) in rep["calibration"]
        plans = rep["processes"][0]["plans"]
        assert plans and all(p["direction"] == move01["best"] for p in plans if p["src"] == src)
        assert w.check()[0]


@pytest.mark.numa(nodes=2)
def test_a_calibration_that_chose_the_caller_moves_on_one_unpinned_thread(
        calibrated: tuple[dict[str, Any], float, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """This guest's calibration with the move engine's best set to caller (whichever won here): a real
    `numamove proc` follows it on one unpinned thread, every page lands, the bytes are intact; with
    `--threads 2` it runs pinned threads instead."""
    doc = json.loads(calibrated[2].read_text())
    pair = doc["pairs"][0]
    move = pair["engines"]["move"]
    assert "caller" in move["settings"]
    move["best"] = "caller"
    path = tmp_path / "caller.json"
    path.write_text(json.dumps(doc))
    src, dst = pair["src"], pair["dst"]
    monkeypatch.setenv("NUMAMOVE_CALIBRATION", str(path))
    with Workload("--size", "8M", "--huge", "0", "--node", str(src)) as w:
        code, out, err = run("proc", str(w.pid), "--to", str(dst), "--only", "anon", "--json")
        assert code == 0, err
        rep = json.loads(out)
        validate(rep, "proc")
        p = rep["processes"][0]
        assert p["moved"]["pages"] >= 2048 and not p["failed"]
        plans = [pl for pl in p["plans"] if pl["src"] == src]
        assert plans and all((pl["direction"], pl["cpus"], pl["threads"]) == ("caller", [], 1) for pl in plans), plans
        assert "measured one unpinned thread (the caller) fastest" in plans[0]["reasons"]["cpus"]
        assert p["workers"] and not any(wk["pinned"] for wk in p["workers"])
        assert set(_native.page_nodes(*w.anon, 4096, w.pid)) == {dst}
        code, out, err = run("proc", str(w.pid), "--to", str(src), "--only", "anon", "--threads", "2", "--json")
        assert code == 0, err
        p = json.loads(out)["processes"][0]
        back = [pl for pl in p["plans"] if pl["src"] == dst]
        assert back and all(pl["direction"] != "caller" for pl in back)
        assert set(_native.page_nodes(*w.anon, 4096, w.pid)) == {src}
        assert w.check()[0]


@pytest.mark.numa(nodes=2)
def test_calibration_for_another_topology_is_ignored(calibrated: tuple[dict[str, Any], float, Path],
                                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same file with one distance changed (another machine): a warning, then the patch's defaults."""
    doc = json.loads(calibrated[2].read_text())
    doc["fingerprint"]["distances"][0][1] += 1
    doc["fingerprint_digest"] = digest(doc["fingerprint"])
    stale = tmp_path / "stale.json"
    stale.write_text(json.dumps(doc))
    monkeypatch.setenv("NUMAMOVE_CALIBRATION", str(stale))
    code, out, err = run("bench", "--dry-run", "--json", "--policy", "auto", "--threads", "auto",
                         "--size", "16M", "--from", "0", "--to", "1")
    assert code == 0, err
    assert "ignoring calibration" in err and "another topology" in err
    plan = json.loads(out)["plans"][0]
    assert plan["direction"] == "push" and "patch's default" in plan["reasons"]["cpus"]


@pytest.fixture()
def node0_loaded() -> Iterator[None]:
    """A busy loop at nice -10 on each of node 0's CPUs: a thread pinned there gets ~10% of a CPU."""
    with BusyLoops(read_topology().node(0).cpus, -10):
        yield


@pytest.mark.numa(nodes=2, guest="two")
def test_calibrate_notices_a_loaded_node(node0_loaded: None) -> None:
    """With node 0's CPUs busy, 0 -> 1 is faster pulled (node 1's CPUs) and 1 -> 0 pushed: auto picks those.
    For move_pages the unpinned caller may win instead: the scheduler runs it on the idle CPU, as fast as
    the better pinned direction (it wins only within 5% of it)."""
    topo = read_topology()
    # the budget only bounds the run: it stops once all is measured (~20 s), and a slow TCG day once used up
    # 40 s before measuring pull, and the comparison below had nothing to compare
    res = run_calibration(topo, [(0, 1), (1, 0)], budget=90, size=8 << 20, repeats=3)
    for pair, want in ((res.pairs[0], "pull"), (res.pairs[1], "push")):
        for engine, er in pair.engines.items():
            per = er.best_per_direction()
            why = f"{pair.src}->{pair.dst} {engine}: " + ", ".join(f"{d} {s.gbps:.3f} GB/s" for d, s in per.items())
            assert {"push", "pull"} <= set(per), f"the budget ran out before both directions were measured: {why}"
            best = er.best()
            if engine == "move" and best == "caller":
                assert per["caller"].gbps >= 0.95 * per[want].gbps, why
            else:
                assert best == want, why
            slow = "push" if want == "pull" else "pull"
            assert per[want].gbps > 1.5 * per[slow].gbps, why


@pytest.mark.numa(nodes=5, cpuless=True)
def test_cpuless_node_is_measured_on_the_cpus_that_will_copy(guest_truth: dict[str, Any]) -> None:
    """Node 4 has no CPUs: pull to it (and push from it) fall back to node 0's CPUs, measured once; the move
    engine's unpinned caller has no node."""
    cxl = next(n["node"] for n in guest_truth["nodes"] if not n["has_cpu"])
    topo = read_topology()
    res = run_calibration(topo, [(0, cxl), (cxl, 0)], budget=20, size=8 << 20, repeats=1)
    for pair in res.pairs:
        for engine, er in pair.engines.items():
            assert {s.cpu_node for s in er.samples if s.direction != "caller"} == {0}, engine
            callers = [s.cpu_node for s in er.samples if s.direction == "caller"]
            assert callers == ([None] if engine == "move" else []), engine
            twins = [s for s in er.samples if s.same_as is not None]
            assert twins and all(s.seconds for s in er.samples)
            assert any("no usable CPU" in n for n in er.notes)
            per = er.best_per_direction()
            if er.best() == "caller":
                assert engine == "move" and per["caller"].gbps >= 0.95 * per["push"].gbps
            else:
                assert er.best() == "push"  # a tie (the same CPUs) keeps the patch's default


@pytest.mark.numa(nodes=2, guest="two")
def test_multi_node_outputs_match_the_schemas(tmp_path: Path) -> None:
    """Outputs with pages really moved (plans, workers, per-node counts) validate too."""
    shm = "/dev/shm/numamove-schema-guest"
    Path(shm).write_bytes(os.urandom(2 << 20))
    try:
        for to, definition, extra in (("0", "file", []), ("1", "file", []), ("0", "file_copy", ["--copy"])):
            code, out, err = run("file", shm, "--to", to, "-q", "--json", *extra)
            assert code == 0, err
            validate(json.loads(out), definition)
        doc = json.loads(run("file", shm, "--to", "1", "-q", "--json")[1])
        moved = doc["files"][0]
        assert moved["moved"]["pages"] > 0 and moved["workers"]
        assert doc["timings"]["move_seconds"] > 0 and moved["bookkeeping_seconds"] > 0
        validate(doc, "file")
        with Workload("--size", "4M", "--huge", "2M", "--node", "0") as w:
            code, out, err = run("show", str(w.pid), "--json")
            validate(json.loads(out), "show")
        code, out, err = run("nodes", "--json")
        validate(json.loads(out), "nodes")
        code, out, err = run("bench", "--from", "0", "--to", "1", "--size", "8M", "--repeats", "1", "--json")
        assert code == 0, err
        validate(json.loads(out), "bench")
    finally:
        os.unlink(shm)
