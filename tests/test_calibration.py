"""The calibration file and what auto does with it, on made-up machines; calibrate on this one.

Parsing and planning rules are pure and tested here; the measurements that matter
(push vs pull on two nodes, a loaded node, a CPU-less node) run in the QEMU guests
(tests/test_numa_calibrate.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fakes import topo
from test_cli import run

from numamove.calibrate import default_pairs, parse_pairs, placements, thread_counts
from numamove.calibration import SCHEMA, digest, fingerprint, load
from numamove.errors import InvalidNodeError, UsageError
from numamove.planner import make_plan
from numamove.topology import l3_domains

MACHINE = topo({0: [0, 1, 2, 3], 1: [4, 5, 6, 7]})


def _setting(threads: int, cpus: str, node: int, gbps: float, placement: str = "packed") -> dict[str, Any]:
    return {"threads": threads, "placement": placement, "cpus": cpus, "cpu_node": node, "gbps": gbps}


def calibration_doc(t: Any = MACHINE, best: str = "pull", engine: str = "copy") -> dict[str, Any]:
    """A calibration of node 0 -> 1 that found pull (node 1's CPUs 5,7 spread) fastest."""
    fp = fingerprint(t)
    return {
        "schema": SCHEMA, "created": "2026-11-27T00:00:00+00:00", "fingerprint": fp,
        "fingerprint_digest": digest(fp), "complete": True,
        "pairs": [{"src": 0, "dst": 1, "distance": 20, "engines": {engine: {
            "best": best,
            "settings": {"push": _setting(1, "0", 0, 3.0), "pull": _setting(2, "5,7", 1, 9.0, "spread")},
            "samples": [], "notes": []}}}],
    }


def write(path: Path, doc: Any) -> Path:
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def test_fingerprint_changes_with_cpus_memory_and_distances() -> None:
    """The fingerprint covers nodes, CPUs, memory and distances, and nothing that changes at run time."""
    base = digest(fingerprint(MACHINE))
    assert digest(fingerprint(topo({0: [0, 1, 2, 3], 1: [4, 5, 6, 7]}))) == base
    assert digest(fingerprint(topo({0: [0, 1, 2], 1: [4, 5, 6, 7]}))) != base
    assert digest(fingerprint(topo({0: [0, 1, 2, 3], 1: [4, 5, 6, 7]}, {(0, 1): 30}))) != base
    assert digest(fingerprint(topo({0: [0, 1, 2, 3], 1: [4, 5, 6, 7], 2: []}))) != base


def test_missing_file_means_the_patch_defaults_without_warning(tmp_path: Path) -> None:
    loaded = load(MACHINE, tmp_path / "none.json")
    assert loaded.calibration is None and loaded.warning is None
    assert "no calibration" in loaded.why
    p = make_plan(MACHINE, 0, 1, 512, 512 * 512, None, "auto", 0, None, loaded)
    assert p.direction == "push" and p.threads == 4 and "patch's default" in p.reasons["cpus"]


@pytest.mark.parametrize("content, why", [
    ("{not json", "corrupt"),
    ({"schema": "something-else"}, "corrupt"),
    ({"schema": SCHEMA, "created": "x", "fingerprint_digest": "x", "fingerprint": {}}, "corrupt"),
])
def test_corrupt_file_is_ignored_with_a_warning(tmp_path: Path, content: Any, why: str) -> None:
    loaded = load(MACHINE, write(tmp_path / "c.json", content))
    assert loaded.calibration is None
    assert loaded.warning and why in loaded.warning and "numamove calibrate" in loaded.warning


def test_bad_setting_inside_a_valid_document_is_corrupt(tmp_path: Path) -> None:
    doc = calibration_doc()
    doc["pairs"][0]["engines"]["copy"]["settings"]["pull"]["threads"] = 99
    loaded = load(MACHINE, write(tmp_path / "c.json", doc))
    assert loaded.calibration is None and loaded.warning and "corrupt" in loaded.warning


def test_calibration_for_another_topology_is_ignored(tmp_path: Path) -> None:
    """Stale: made on a machine with other CPUs; auto falls back to push and says why."""
    other = topo({0: [0, 1], 1: [2, 3]})
    path = write(tmp_path / "c.json", calibration_doc(other))
    loaded = load(MACHINE, path)
    assert loaded.calibration is None
    assert loaded.warning and "another topology" in loaded.warning
    assert load(other, path).calibration is not None


def test_auto_follows_a_matching_calibration(tmp_path: Path) -> None:
    """policy auto takes the faster direction, threads auto its thread count, in its CPU order."""
    loaded = load(MACHINE, write(tmp_path / "c.json", calibration_doc()))
    assert loaded.calibration is not None and loaded.warning is None
    p = make_plan(MACHINE, 0, 1, 512, 512 * 512, None, "auto", 0, None, loaded)
    assert (p.direction, p.cpu_node, p.cpus) == ("pull", 1, (5, 7))
    assert str(tmp_path / "c.json") in p.reasons["cpus"] and "measured pull fastest" in p.reasons["cpus"]
    assert "from the calibration" in p.reasons["threads"]
    # a forced direction still takes that direction's calibrated threads
    push = make_plan(MACHINE, 0, 1, 512, 512 * 512, None, "push", 0, None, loaded)
    assert (push.direction, push.cpus) == ("push", (0,))
    # an explicit limit wins over the calibration's thread count, the CPU order stays
    four = make_plan(MACHINE, 0, 1, 512, 512 * 512, 4, "auto", 0, None, loaded)
    assert four.cpus == (5, 7, 4, 6)
    # the threshold still applies: 32 pages or fewer is one thread
    small = make_plan(MACHINE, 0, 1, 8, 8, None, "auto", 0, None, loaded)
    assert small.threads == 1


def test_auto_without_a_measurement_for_the_pair_or_engine(tmp_path: Path) -> None:
    loaded = load(MACHINE, write(tmp_path / "c.json", calibration_doc()))
    back = make_plan(MACHINE, 1, 0, 512, 512 * 512, None, "auto", 0, None, loaded)
    assert back.direction == "push" and back.threads == 4 and "has no copy measurement" in back.reasons["cpus"]
    move = make_plan(MACHINE, 0, 1, 512, 512 * 512, None, "auto", 0, None, loaded, engine="move")
    assert move.direction == "push" and "has no move measurement" in move.reasons["cpus"]


def test_calibrated_cpus_not_allowed_fall_back_to_the_allowed_ones(tmp_path: Path) -> None:
    loaded = load(MACHINE, write(tmp_path / "c.json", calibration_doc()))
    p = make_plan(MACHINE, 0, 1, 512, 512 * 512, None, "auto", 0, frozenset({0, 4, 6}), loaded)
    assert p.direction == "pull" and p.cpus == (4, 6)


def test_thread_counts_double_up_to_the_node_cpus() -> None:
    assert thread_counts(1) == [1]
    assert thread_counts(6) == [1, 2, 4, 6]
    assert thread_counts(8) == [1, 2, 4, 8]
    assert thread_counts(64) == [1, 2, 4, 8, 16, 32]


def test_placements_pack_one_l3_domain_first_or_spread_across_them() -> None:
    domains = {0: "0-3", 1: "0-3", 2: "0-3", 3: "0-3", 4: "4-7", 5: "4-7", 6: "4-7", 7: "4-7"}
    p = placements(list(range(8)), domains)
    assert p["packed"] == [0, 1, 2, 3, 4, 5, 6, 7]
    assert p["spread"] == [0, 4, 1, 5, 2, 6, 3, 7]
    assert placements([0, 1, 2], {0: "0-2", 1: "0-2", 2: "0-2"}) == {"packed": [0, 1, 2]}


def test_l3_domains_from_sysfs(tmp_path: Path) -> None:
    for cpu, shared in ((0, "0-1"), (1, "0-1"), (2, "2-3")):
        for idx, level, lst in ((0, 1, str(cpu)), (2, 2, str(cpu)), (3, 3, shared)):
            d = tmp_path / f"sys/devices/system/cpu/cpu{cpu}/cache/index{idx}"
            d.mkdir(parents=True)
            (d / "level").write_text(f"{level}\n")
            (d / "shared_cpu_list").write_text(lst + "\n")
    assert l3_domains([0, 1, 2, 3], tmp_path) == {0: "0-1", 1: "0-1", 2: "2-3", 3: "unknown"}


def test_pairs_parse_and_default() -> None:
    t = topo({0: [0], 1: [1], 2: []})
    assert parse_pairs("0:1, 1:0,0:1", t) == [(0, 1), (1, 0)]
    assert default_pairs(t)[0] == [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]
    one, notes = default_pairs(topo({0: [0, 1]}))
    assert one == [(0, 0)] and "one memory node" in notes[0]
    with pytest.raises(UsageError, match="SRC:DST"):
        parse_pairs("0-1", t)
    with pytest.raises(InvalidNodeError, match="node 7 does not exist"):
        parse_pairs("0:7", t)


def test_calibrate_cli_writes_a_file_that_auto_then_uses(no_calibration: Path) -> None:
    """On this machine: calibrate within its budget, then bench's auto plan names the calibration."""
    t0 = time.monotonic()
    code, out, err = run("calibrate", "--budget", "5", "--size", "16M", "--json")
    assert code == 0, err
    assert time.monotonic() - t0 < 5 + 3
    doc = json.loads(out)
    assert doc["path"] == str(no_calibration) and no_calibration.exists()
    copy = doc["pairs"][0]["engines"]["copy"]
    assert copy["best"] in ("push", "pull") and all(s["seconds"] for s in copy["samples"])
    code, out, err = run("bench", "--dry-run", "--json", "--policy", "auto", "--threads", "auto", "--size", "16M")
    assert code == 0, err
    plan = json.loads(out)["plans"][0]
    assert str(no_calibration) in plan["reasons"]["cpus"]
    assert plan["threads"] == copy["settings"][copy["best"]]["threads"]


def test_corrupt_calibration_warns_and_the_command_still_runs(no_calibration: Path) -> None:
    no_calibration.write_text("{half a file")
    code, out, err = run("bench", "--dry-run", "--policy", "auto", "--size", "16M")
    assert code == 0
    assert "warning: ignoring calibration" in err and "corrupt" in err
    assert "push, the patch's default" in out


def test_calibrate_rejects_bad_options() -> None:
    for args, what in ((["--pairs", "0:9"], "node 9 does not exist"), (["--engines", "copy,dma"], "dma"),
                       (["--budget", "0"], "--budget"), (["--pairs", "x"], "SRC:DST"),
                       (["--size", "1Q"], "1Q"), (["--repeats", "0"], "--repeats")):
        code, _, err = run("calibrate", *args)
        assert code == 2 and what in err and "Traceback" not in err


def test_calibrate_output_that_cannot_be_written(tmp_path: Path) -> None:
    """Refused before measuring (a 60 s budget would otherwise be spent first): one line, exit 1."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = run("calibrate", "--budget", "60", "--size", "8M", "--output", str(blocker / "x.json"))
    assert code == 1 and "cannot write the calibration" in err
    assert err.count("\n") == 1 and "measured" not in err  # no progress line: nothing was measured


def test_calibration_written_where_others_can_write_follows_no_planted_link(tmp_path: Path) -> None:
    """`--output /tmp/...` as root: no predictable temporary name, no link followed, nothing left behind."""
    from numamove.calibrate import check_output, write

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    planted = [f".cal.json.{os.getpid()}.tmp", f".cal.json.{os.getpid()}.probe"]  # the names it once used
    for name in planted:
        (shared / name).symlink_to(victim)

    class Run:
        path = ""

        def to_json(self) -> dict[str, int]:
            return {"pairs": 1}

    out = shared / "cal.json"
    check_output(out)
    assert write(Run(), out) == out  # type: ignore[arg-type]
    assert victim.read_text() == "precious"
    assert json.loads(out.read_text()) == {"pairs": 1} and out.stat().st_mode & 0o777 == 0o644
    assert sorted(os.listdir(shared)) == sorted(planted + ["cal.json"])


def test_calibrate_plot_draws_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib is in the test extra; pip install -e '.[test]'")
    png = tmp_path / "cal.png"
    code, out, err = run("calibrate", "--budget", "3", "--size", "8M", "-q", "--plot", str(png))
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"plot: {png}" in out


def test_calibrate_plot_and_output_through_planted_links_write_no_victim(tmp_path: Path) -> None:
    """Both files go where named, replacing a link planted under the name, never through it."""
    pytest.importorskip("matplotlib", reason="matplotlib is in the test extra; pip install -e '.[test]'")
    victim = tmp_path / "victim"
    victim.write_text("precious")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    png, cal = shared / "cal.png", shared / "cal.json"
    png.symlink_to(victim)
    cal.symlink_to(victim)
    code, out, err = run("calibrate", "--budget", "2", "--size", "8M", "-q", "--plot", str(png), "--output", str(cal))
    assert code == 0, err
    assert victim.read_text() == "precious" and not png.is_symlink() and not cal.is_symlink()
    assert png.read_bytes()[:4] == b"\x89PNG" and json.loads(cal.read_text())["path"] == str(cal)
    assert sorted(os.listdir(shared)) == ["cal.json", "cal.png"]
    code, _, err = run("calibrate", "--budget", "2", "--plot", str(tmp_path / "x.jpgx"))
    assert code == 2 and ".jpgx" in err and err.count("\n") == 1


def test_calibrate_plot_without_matplotlib_says_how_to_get_it(tmp_path: Path) -> None:
    """A real subprocess where matplotlib cannot be imported: one line, exit 2, nothing measured."""
    fake = tmp_path / "nompl" / "matplotlib"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('matplotlib is hidden by this test')\n")
    env = dict(os.environ, PYTHONPATH=f"{fake.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    p = subprocess.run([sys.executable, "-m", "numamove", "calibrate", "--plot", str(tmp_path / "x.png")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and "pip install 'numamove[plot]'" in p.stderr
    assert not Path(os.environ["NUMAMOVE_CALIBRATION"]).exists()


def test_where_the_calibration_lives(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Root writes the system file; others their cache; $NUMAMOVE_CALIBRATION overrides both."""
    from numamove import calibration

    monkeypatch.delenv("NUMAMOVE_CALIBRATION")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert calibration.default_output() == calibration.SYSTEM_PATH
    assert calibration.search_paths() == [calibration.SYSTEM_PATH]
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    mine = str(tmp_path / "numamove" / "calibration.json")
    assert calibration.default_output() == mine
    assert calibration.search_paths() == [mine, calibration.SYSTEM_PATH]
    monkeypatch.setenv("NUMAMOVE_CALIBRATION", "/x/y.json")
    assert calibration.default_output() == "/x/y.json" and calibration.search_paths() == ["/x/y.json"]


def test_proc_dry_run_says_what_auto_follows() -> None:
    """--dry-run (and -v) name the calibration auto follows, or why it uses the patch's defaults."""
    code, out, err = run("proc", str(os.getpid()), "--to", "0", "--dry-run")
    assert code == 0, err
    assert "auto: no calibration" in out and "the patch's defaults" in out


def test_library_warns_once_about_a_stale_calibration(no_calibration: Path) -> None:
    """numamove.plan() with a file made for another machine: a CalibrationWarning, then the defaults."""
    import numamove
    from numamove.calibration import CalibrationWarning

    write(no_calibration, calibration_doc(topo({0: [0], 1: [1], 2: [2]})))
    with pytest.warns(CalibrationWarning, match="another topology"):
        p = numamove.plan(0, 0, 1 << 30)
    assert p.direction == "push" and "patch's default" in p.reasons["cpus"]


def test_numamove_plan_stays_the_function() -> None:
    """The module holding the heuristics is numamove.planner, so importing it (which every call
    does) can no longer replace the public numamove.plan() function with a module."""
    import numamove

    first = numamove.plan(0, 0, 1 << 20)
    again = numamove.plan(0, 0, 1 << 20)
    assert callable(numamove.plan) and first.threads == again.threads


def test_calibrate_shows_progress_and_prints_a_table(tmp_path: Path) -> None:
    out_file = tmp_path / "cal.json"
    code, out, err = run("calibrate", "--budget", "3", "--size", "8M", "--output", str(out_file))
    assert code == 0, err
    assert "calibrate: " in err and " measured; node 0 -> node 0 copy" in err  # progress, on stderr
    assert "auto uses" in out and "0 -> 0" in out and f"written to {out_file}" in out
    assert json.loads(out_file.read_text())["path"] == str(out_file)


def test_file_dry_run_says_what_auto_follows(no_calibration: Path, tmp_path: Path) -> None:
    shm = Path(f"/dev/shm/numamove-auto-{os.getpid()}")
    shm.write_bytes(os.urandom(1 << 20))
    try:
        code, out, err = run("file", str(shm), "--to", "0", "--dry-run")
        assert code == 0 and "auto: no calibration" in out, err
        assert run("calibrate", "--budget", "2", "--size", "8M", "-q")[0] == 0
        code, out, err = run("file", str(shm), "--to", "0", "--dry-run", "--copy")
        assert code == 0 and f"auto: calibration {no_calibration}" in out, err
        assert "from the calibration" in out
    finally:
        shm.unlink()


def test_calibrate_show_says_which_calibration_applies(no_calibration: Path) -> None:
    """`calibrate --show --json` measures nothing: no file, not in use and why; after a calibration, that
    file, in use, with its choices (what the Ansible facts module gathers)."""
    code, out, err = run("calibrate", "--show", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["in_use"] is False and "absent" in doc["why"] and not no_calibration.exists()
    code, _out, err = run("calibrate", "--budget", "3", "--size", "8M", "-q")
    assert code == 0, err
    code, out, err = run("calibrate", "--show", "--json")
    doc = json.loads(out)
    assert doc["in_use"] is True and doc["path"] == str(no_calibration) and doc["choices"]


def test_a_calibrated_single_move_thread_stays_pinned_where_measured(tmp_path: Path) -> None:
    """Without a calibration one move_pages thread under auto is the caller's, not pinned; a calibration that
    measured the pair's move engine with one pinned push thread best (the caller slower) is followed, and a
    pair it did not measure keeps the caller."""
    loaded = load(MACHINE, write(tmp_path / "c.json", calibration_doc(best="push", engine="move")))
    p = make_plan(MACHINE, 0, 1, 512, 512 * 512, None, "auto", 0, None, loaded, engine="move")
    assert (p.direction, p.cpus, p.pinned) == ("push", (0,), True)
    back = make_plan(MACHINE, 1, 0, 512, 512 * 512, 1, "auto", 0, None, loaded, engine="move")
    assert (back.direction, back.cpus, back.pinned) == ("caller", (), False)


def _caller_doc(best: str = "caller", caller_gbps: float = 8.9) -> dict[str, Any]:
    doc = calibration_doc(best=best, engine="move")
    doc["pairs"][0]["engines"]["move"]["settings"]["caller"] = {
        "threads": 1, "placement": "unpinned", "cpus": "", "cpu_node": None, "gbps": caller_gbps}
    return doc


def test_a_calibration_that_measured_the_caller_fastest_runs_one_unpinned_thread(tmp_path: Path) -> None:
    """best: caller in the move engine's entry: auto runs one thread, nobody's CPUs, and says why; an
    explicit thread count above one takes the faster pinned direction instead (pull here), and an
    explicit policy is obeyed as before."""
    loaded = load(MACHINE, write(tmp_path / "c.json", _caller_doc()))
    assert loaded.warning is None and loaded.calibration is not None
    p = make_plan(MACHINE, 0, 1, 512, 512 * 512, None, "auto", 0, None, loaded, engine="move")
    assert (p.direction, p.cpus, p.cpu_node, p.threads, p.pinned) == ("caller", (), None, 1, False)
    assert "measured one unpinned thread (the caller) fastest" in p.reasons["cpus"]
    assert str(tmp_path / "c.json") in p.reasons["cpus"]
    one = make_plan(MACHINE, 0, 1, 512, 512 * 512, 1, "auto", 0, None, loaded, engine="move")
    assert one.direction == "caller"
    four = make_plan(MACHINE, 0, 1, 512, 512 * 512, 4, "auto", 0, None, loaded, engine="move")
    assert (four.direction, four.cpu_node, four.threads) == ("pull", 1, 4)
    assert "more threads may run: pull" in four.reasons["cpus"]
    push = make_plan(MACHINE, 0, 1, 512, 512 * 512, None, "push", 0, None, loaded, engine="move")
    assert (push.direction, push.cpus) == ("push", (0,))
    # the copy engine has no caller: its plan for the pair is the patch's default
    copy = make_plan(MACHINE, 0, 1, 512, 512 * 512, None, "auto", 0, None, loaded, engine="copy")
    assert copy.direction == "push" and copy.pinned


@pytest.mark.parametrize("change", [
    {"cpus": "0"}, {"cpu_node": 0}, {"threads": 2}, {"placement": "packed"}])
def test_a_caller_setting_that_is_not_one_unpinned_thread_is_corrupt(tmp_path: Path, change: dict[str, Any]) -> None:
    doc = _caller_doc()
    doc["pairs"][0]["engines"]["move"]["settings"]["caller"].update(change)
    loaded = load(MACHINE, write(tmp_path / "c.json", doc))
    assert loaded.calibration is None and loaded.warning
    assert "the caller setting is one unpinned thread" in loaded.warning


def test_the_copy_engine_has_no_caller(tmp_path: Path) -> None:
    doc = calibration_doc(best="caller", engine="copy")
    loaded = load(MACHINE, write(tmp_path / "c.json", doc))
    assert loaded.calibration is None and loaded.warning
    assert "unknown direction 'caller' for the copy engine" in loaded.warning


def _result(push: float, pull: float, caller: float | None) -> Any:
    from numamove.calibrate import EngineResult, Sample

    samples = [Sample("push", "packed", 2, (0, 1), 0, 1 << 20, [(1 << 20) / (push * 1e9)]),
               Sample("pull", "packed", 2, (4, 5), 1, 1 << 20, [(1 << 20) / (pull * 1e9)])]
    if caller is not None:
        samples.insert(0, Sample("caller", "unpinned", 1, (), None, 1 << 20, [(1 << 20) / (caller * 1e9)]))
    return EngineResult("move", samples)


def test_the_caller_wins_within_five_percent_of_the_fastest_pinned_setting() -> None:
    assert _result(1.0, 2.0, 3.0).best() == "caller"
    assert _result(1.0, 2.0, 1.95).best() == "caller"  # 2.5% slower: one unpinned thread is the simpler choice
    assert _result(1.0, 2.0, 1.8).best() == "pull"
    assert _result(2.0, 1.0, None).best() == "push"
    doc = _result(1.0, 2.0, 3.0).to_json()
    assert doc["settings"]["caller"] == {"threads": 1, "placement": "unpinned", "cpus": "", "cpu_node": None,
                                         "gbps": 3.0}


def test_calibrate_measures_the_caller_for_the_move_engine_only() -> None:
    from numamove.calibrate import configurations

    t = MACHINE
    move, _ = configurations(t, 0, 1, 0, frozenset(range(8)), {}, "move")
    copy, _ = configurations(t, 0, 1, 0, frozenset(range(8)), {}, "copy")
    assert [(s.direction, s.cpus, s.cpu_node) for s in move if s.direction == "caller"] == [("caller", (), None)]
    assert not [s for s in copy if s.direction == "caller"]
    assert len(move) == len(copy) + 1
