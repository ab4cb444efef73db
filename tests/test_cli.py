"""The CLI through click's CliRunner (in-process) and once as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from click.testing import CliRunner

from numamove.cli import main


def run(*args: str) -> tuple[int, str, str]:
    """Run numamove's entry point (error mapping included) with CliRunner's isolation."""
    runner = CliRunner()
    with runner.isolation() as (out, err, _):
        try:
            code = main(list(args))
        except SystemExit as exc:
            code = int(exc.code or 0)
        return code, out.getvalue().decode(), err.getvalue().decode()


def test_help_lists_commands_examples_and_exit_codes() -> None:
    """--help explains the commands, shows examples and documents the exit codes."""
    code, out, _ = run("--help")
    assert code == 0
    for word in ("nodes", "bench", "Examples:", "Exit codes:", "partly done"):
        assert word in out


@pytest.mark.parametrize("cmd", ["nodes", "bench"])
def test_command_help(cmd: str) -> None:
    """Every command has --help with examples."""
    code, out, _ = run(cmd, "--help")
    assert code == 0 and "Examples:" in out


def test_version() -> None:
    """--version prints the version."""
    code, out, _ = run("--version")
    assert code == 0 and out.startswith("numamove, version ")


def test_nodes_text_and_json_agree() -> None:
    """`nodes` and `nodes --json` report the same nodes, CPUs and distance matrix."""
    code, out, _ = run("nodes")
    assert code == 0 and "distances:" in out
    code, out_json, _ = run("nodes", "--json")
    doc = json.loads(out_json)
    assert code == 0
    from numamove.topology import read_topology

    t = read_topology()
    assert [n["node"] for n in doc["nodes"]] == t.ids
    assert all(isinstance(n["has_cpu"], bool) and n["cpu_count"] >= 0 for n in doc["nodes"])
    assert doc["distances"][str(t.ids[0])][str(t.ids[0])] == 10


def test_bench_small_json() -> None:
    """bench --json measures the engine and the memcpy baseline in one run and verifies."""
    code, out, err = run("bench", "--size", "8M", "--threads", "1,2", "--policy", "push",
                         "--repeats", "1", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["verified"] is True and doc["size_bytes"] == 8 << 20
    assert doc["baseline"]["gbps"] > 0
    assert [r["limit"] for r in doc["runs"]] == [1, 2]
    assert all(r["ratio_to_baseline"] > 0 for r in doc["runs"])
    assert all(set(r["cpus_seen"]) <= set(r["cpus"]) for r in doc["runs"])


def test_bench_text_mentions_one_node() -> None:
    """On a one-node machine the default pair is node 0 to itself, and bench says so."""
    from numamove.topology import read_topology

    code, out, _ = run("bench", "--size", "4M", "--threads", "2", "--policy", "pull", "--repeats", "1",
                       "--page-size", "4k")
    assert code == 0
    assert "vs memcpy" in out and "verified" in out
    if len(read_topology().memory_nodes()) == 1:
        assert "one memory node" in out


def test_bench_dry_run_copies_nothing_and_shows_reasons() -> None:
    """--dry-run prints each plan with its reasons and does not benchmark."""
    code, out, _ = run("bench", "--dry-run", "--size", "1G", "--threads", "1,4")
    assert code == 0
    assert "plan (policy push, limit 4)" in out and "base pages" in out
    assert "GB/s" not in out
    code, out, _ = run("bench", "--dry-run", "--json", "--size", "64K", "--threads", "4")
    doc = json.loads(out)
    assert doc["dry_run"] is True and doc["plans"][0]["threads"] == 1  # 16 pages <= 32


@pytest.mark.parametrize("args, needle", [
    (["bench", "--from", "99"], "node 99 does not exist"),
    (["bench", "--to", "1-"], "invalid node list '1-'"),
    (["bench", "--from", "-1"], "invalid node list '-1'"),
    (["bench", "--from", "a"], "invalid node list 'a'"),
    (["bench", "--from", "0,1"], "give exactly one"),
    (["bench", "--threads", "0"], "thread count must be an integer from 1 to 32"),
    (["bench", "--threads", "33"], "thread count must be an integer from 1 to 32"),
    (["bench", "--threads", "abc"], "invalid thread count 'abc'"),
    (["bench", "--size", "0"], "invalid size '0'"),
    (["bench", "--size", "-5"], "invalid size '-5'"),
    (["bench", "--size", "1Q"], "invalid size '1Q'"),
    (["bench", "--policy", "sideways"], "unknown policy 'sideways'"),
    (["bench", "--repeats", "0"], "--repeats"),
    (["bench", "--page-size", "1g"], "--page-size"),
    (["frobnicate"], "No such command 'frobnicate'"),
    (["nodes", "--bogus"], "--bogus"),
])
def test_bad_input_is_one_line_and_exit_2(args: list[str], needle: str) -> None:
    """Bad input: exit 2, one line on stderr naming the problem, nothing on stdout, no traceback."""
    code, out, err = run(*args)
    assert code == 2
    assert needle in err
    assert err.count("\n") == 1 and err.startswith("numamove: error: ")
    assert "Traceback" not in err and out == ""


def test_bench_too_large_for_the_node() -> None:
    """A size larger than the node's free memory is refused before mapping anything."""
    code, _, err = run("bench", "--size", "64T", "--repeats", "1")
    assert code == 2 and "free" in err and err.count("\n") == 1


def test_real_process_bad_node_no_traceback() -> None:
    """The installed entry point (python -m numamove) maps errors too."""
    p = subprocess.run([sys.executable, "-m", "numamove", "bench", "--from", "99"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip().startswith("numamove: error: node 99 does not exist")
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize("args, code, needle", [
    (["proc", "--to", "0"], 2, "give at least one PID, --name REGEX, --cgroup PATH or --unit NAME"),
    (["proc", "abc", "--to", "0"], 2, "'abc' is not a PID"),
    (["proc", "1"], 2, "Missing option '--to'"),
    (["proc", "1", "--to", "99"], 2, "node 99 does not exist"),
    (["proc", "1", "--to", "0", "--threads", "0"], 2, "thread count"),
    (["proc", "1", "--to", "0", "--range", "zz"], 2, "invalid range 'zz'"),
    (["proc", "1", "--to", "0", "--only", "dogs"], 2, "invalid --only 'dogs'"),
    (["proc", "1", "--to", "0", "--policy", "up"], 2, "--policy"),
    (["proc", "1", "--to", "0", "--from", "1-"], 2, "invalid node list '1-'"),
    (["proc", "1", "--to", "0", "--name", "("], 2, "invalid --name regex"),
    (["proc", "999999", "--to", "0"], 1, "no process with PID 999999"),
    (["proc", "2", "--to", "0"], 1, "PID 2 is a kernel thread"),
    (["proc", "--name", "no-such-process-xyzzy", "--to", "0"], 1, "no process matches"),
    (["show"], 2, "give at least one PID"),
    (["show", "999999"], 1, "no process with PID 999999"),
])
def test_proc_and_show_bad_input(args: list[str], code: int, needle: str) -> None:
    """proc/show: bad input and impossible targets get one line and their exit code."""
    got, out, err = run(*args)
    assert got == code, err
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err


def test_proc_and_show_on_a_live_process() -> None:
    """On this machine: show a workload, and moving it to the node it is on exits 0 with nothing failed."""
    from workload_helper import Workload

    from numamove.topology import read_topology

    node = read_topology().memory_nodes()[0]
    with Workload("--size", "8M", "--huge", "4M") as w:
        code, out, _ = run("show", str(w.pid), "--json")
        doc = json.loads(out)["processes"][0]
        assert code == 0 and doc["pid"] == w.pid and "anon" in doc["by_kind"]
        code, out, err = run("proc", str(w.pid), "--to", str(node), "--json", "-q")
        assert code == 0, err
        p = json.loads(out)["processes"][0]
        assert p["failed"] == {} and p["already_there"]["pages"] > 0
        assert w.check()[0]


@pytest.mark.parametrize("args, needle", [
    (["file", "/no/such/file", "--to", "0"], "/no/such/file: no such file"),
    (["file", "/dev/shm", "--to", "0"], "is a directory"),
    (["file", "README.md", "--to", "0"], "numamove file moves files on tmpfs"),
    (["file", "/dev/shm/x", "--to", "99"], "node 99 does not exist"),
    (["file", "--to", "0"], "Missing argument"),
])
def test_file_bad_input(args: list[str], needle: str) -> None:
    """file: a missing file, a directory, a file not on tmpfs, a bad node: one line, exit 2."""
    code, out, err = run(*args)
    assert code == 2, err
    assert needle in err and err.count("\n") == 1 and out == ""


def test_file_in_place_on_this_machine() -> None:
    """A /dev/shm file mapped by a workload: moving it to its own node exits 0, bytes intact, holes stay holes."""
    import os

    from workload_helper import Workload

    from numamove.topology import read_topology

    node = read_topology().memory_nodes()[0]
    path = f"/dev/shm/numamove-test-{os.getpid()}"
    try:
        with Workload("--size", "0", "--shm", path, "--shm-size", "4M") as w:
            os.truncate(path, 8 << 20)  # a 4 MiB hole at the end
            code, out, err = run("file", path, "--to", str(node), "--json", "-q")
            assert code == 0, err
            f = json.loads(out)["files"][0]
            assert f["file"] == path and f["failed"] == {}
            assert f["already_there"]["bytes"] + f["moved"]["bytes"] == 4 << 20
            assert os.stat(path).st_blocks * 512 <= (4 << 20) + (64 << 10)
            assert w.check()[0]
    finally:
        os.unlink(path)


def test_file_copy_on_this_machine(tmp_path: Any) -> None:
    """--copy replaces a /dev/shm file with a verified copy (mode kept) and refuses --output off tmpfs."""
    import os

    path = f"/dev/shm/numamove-cli-copy-{os.getpid()}"
    data = os.urandom(1 << 20)
    with open(path, "wb") as fh:
        fh.write(data)
    # neither the copy's own creation mode (0600) nor root's: a kept owner and mode cannot be a default
    os.chown(path, 65534, 65534)
    os.chmod(path, 0o2640)
    try:
        code, out, err = run("file", path, "--to", "0", "--copy", "--json")
        assert code == 0, err
        assert json.loads(out)["copies"][0]["verified"] is True
        with open(path, "rb") as fh:
            assert fh.read() == data
        st = os.stat(path)
        assert st.st_mode & 0o7777 == 0o2640 and (st.st_uid, st.st_gid) == (65534, 65534)
        code, _, err = run("file", path, "--to", "0", "--copy", "--output", str(tmp_path / "x"))
        assert code == 2 and "must be on tmpfs" in err
        code, _, err = run("file", path, "--to", "0", "--output", "/dev/shm/y")
        assert code == 2 and "--output goes with --copy" in err
    finally:
        os.unlink(path)


def test_name_never_matches_numamove_or_what_started_it() -> None:
    """--name skips numamove's ancestors: the shell whose command line holds the pattern is not a target."""
    marker = f"numamove-marker-{os.getpid()}"
    script = (f"{sys.executable} -m numamove proc --name '{marker}' --to 0 --dry-run --json; rc=$?; "
              f"echo {marker} >/dev/null; exit $rc")
    p = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "no process matches" in p.stderr, p.stdout + p.stderr


def test_one_bad_target_never_discards_the_others() -> None:
    """proc GOOD 999999 --json: one JSON document with GOOD moved and 999999 failed, exit 3, one error line."""
    from workload_helper import Workload

    from numamove.topology import read_topology

    node = read_topology().memory_nodes()[0]
    with Workload("--size", "4M") as w:
        code, out, err = run("proc", str(w.pid), "999999", "--to", str(node), "--json", "-q")
    doc = json.loads(out)
    assert code == 3, err
    assert [(t["pid"], t["outcome"]) for t in doc["targets"]] == [(999999, "failed"), (w.pid, "moved")]
    assert "no process with PID 999999" in doc["targets"][0]["reason"] and doc["targets"][0]["exit_code"] == 1
    assert [p["pid"] for p in doc["processes"]] == [w.pid]
    assert err.count("\n") == 1 and "no process with PID 999999" in err


def test_a_reused_pid_is_skipped_never_moved(monkeypatch: pytest.MonkeyPatch) -> None:
    """A target whose PID now belongs to a process with another start time is skipped; nothing done: exit 1."""
    from workload_helper import Workload

    import numamove.proc as proc_mod

    with Workload("--size", "4M") as w:
        real = proc_mod.resolve_targets

        def stale(pids: list[int], name: str | None = None) -> Any:
            targets, bad = real(pids, name)
            for t in targets:
                t.start = "1"  # as if recorded for an earlier process with this PID
            return targets, bad

        monkeypatch.setattr(proc_mod, "resolve_targets", stale)
        code, out, err = run("proc", str(w.pid), "--to", "0", "--json", "-q")
    doc = json.loads(out)
    assert code == 1 and doc["processes"] == []
    assert doc["targets"][0]["outcome"] == "skipped" and "belongs to another process" in doc["targets"][0]["reason"]


def test_a_signal_while_the_report_prints_leaves_it_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGINT while proc writes its report: the JSON is complete, then the run ends with 130; the caller's
    own SIGINT handler is back afterwards."""
    import signal
    import threading

    from workload_helper import Workload

    import numamove.commands as commands

    before = signal.getsignal(signal.SIGINT)
    real = commands.print_reports

    def interrupted_mid_print(*args: Any) -> None:
        # at the main thread, as ^C reaches numamove (one thread while it prints); os.kill would let any
        # other thread of this test process take it
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
        real(*args)

    monkeypatch.setattr(commands, "print_reports", interrupted_mid_print)
    with Workload("--size", "4M") as w:
        code, out, err = run("proc", str(w.pid), "--to", "0", "--json", "-q")
    assert code == 130 and json.loads(out)["processes"][0]["pid"] == w.pid, err
    assert "interrupted by SIGINT" in err and "Traceback" not in err
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.parametrize("args, what, code", [
    (["--size", "1M", "--node", "99"], "node 99 does not exist", 2),  # py-libnuma would segfault on it
    (["--size", "1Q"], "invalid size '1Q'", 2),
    (["--bogus"], "unrecognized arguments: --bogus", 2),
])
def test_the_sample_workload_refuses_bad_input_in_one_line(args: list[str], what: str, code: int) -> None:
    p = subprocess.run([sys.executable, "-m", "numamove.workload", *args], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == code and what in p.stderr and p.stderr.count("\n") == 1, (p.returncode, p.stderr)


def test_the_sample_workload_never_follows_a_link_planted_at_its_shm_file(tmp_path: Any) -> None:
    """--shm usually names a file in /dev/shm, which anyone can write: a link there is refused, never followed
    (the workload would have created, truncated and filled the file it points to), and a FIFO never blocks."""
    victim = tmp_path / "victim"
    link = f"/dev/shm/numamove-wl-link-{os.getpid()}"
    fifo = f"/dev/shm/numamove-wl-fifo-{os.getpid()}"
    os.symlink(victim, link)
    os.mkfifo(fifo)
    try:
        for path, what in ((link, "is a symbolic link"), (fifo, "is not a regular file")):
            p = subprocess.run([sys.executable, "-m", "numamove.workload", "--size", "1M", "--shm", path],
                               stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
            assert p.returncode == 2 and what in p.stderr and p.stderr.count("\n") == 1, p.stderr
        assert not victim.exists()
    finally:
        os.unlink(link)
        os.unlink(fifo)


def test_a_running_numad_is_named_in_a_warning(sleeper: int, tmp_path: Any) -> None:
    """numad moves pages on its own: a run that is not quiet says so when a process named numad runs, and
    only then (the name is the executable's: a copy of sleep called numad stands in for it)."""
    def warnings() -> list[str]:
        p = subprocess.run([sys.executable, "-m", "numamove", "proc", str(sleeper), "--to", "0"],
                           capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        return [line for line in p.stderr.splitlines() if "numad" in line]

    assert warnings() == []
    fake = tmp_path / "numad"
    fake.write_bytes(open("/bin/sleep", "rb").read())
    fake.chmod(0o755)
    numad = subprocess.Popen([str(fake), "60"])
    try:
        assert warnings() == ["numamove: warning: numad is running: it may move pages back"]
    finally:
        numad.kill()
        numad.wait()
