"""cgroup and systemd unit targets, --rate, on the host (one node): parsing, resolution, errors.

Moving a group's pages between nodes, the cpuset hand-over and --rate's accuracy are tested in
the two-node guest (tests/test_numa_cgroup.py). The guest has no systemd: `--unit` resolution is
tested here against a stand-in `systemctl` on PATH that answers `systemctl show` as systemd does.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from schemas import validate
from test_cli import run
from workload_helper import Workload

from numamove import cgroups
from numamove.cgroups import Cgroup, CgroupError, parse_rate, unit_cgroup
from numamove.errors import NumamoveError, UsageError
from numamove.maps import unescape
from numamove.pagemove import Pacer


def test_mountinfo_escapes_are_decoded() -> None:
    """A mount point with a space (\\040 in mountinfo) is read back as the real path."""
    assert unescape(r"/mnt/with\040space") == "/mnt/with space"
    assert unescape("/sys/fs/cgroup") == "/sys/fs/cgroup"


def test_numa_stat_is_parsed_per_kind_and_node(tmp_path: Path) -> None:
    """memory.numa_stat's "kind N0=.. N1=.." lines become kind -> node -> bytes (a directory stands in for
    the group: parsing only)."""
    (tmp_path / "memory.numa_stat").write_text("anon N0=4096 N1=8192\nfile N0=0 N1=12288\nanon_thp N0=0 N1=0\n")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    with Cgroup(fd, "/x", str(tmp_path)) as g:
        assert g.numa_stat() == {"anon": {0: 4096, 1: 8192}, "file": {0: 0, 1: 12288}, "anon_thp": {0: 0, 1: 0}}
        assert g.read("cpuset.mems.effective") is None


@pytest.mark.parametrize("text,want", [("200M", 200 << 20), ("1.5G", 3 << 29), ("200MiB/s", 200 << 20),
                                       ("4096", 4096)])
def test_rate_parses_binary_units(text: str, want: int) -> None:
    """--rate takes sizes per second in binary units, with or without /s."""
    assert parse_rate(text) == want


@pytest.mark.parametrize("text", ["0", "1Q", "", "-5M", "fast"])
def test_bad_rate_is_a_usage_error(text: str) -> None:
    """--rate 0 or 1Q can never work: a usage error."""
    with pytest.raises(UsageError, match="--rate"):
        parse_rate(text)


def test_pacer_never_exceeds_the_rate() -> None:
    """After each round the pacer waits until the bytes handed over, at the rate, would have taken the time
    spent: 5 rounds of 1 MiB at 20 MiB/s take at least 250 ms (sleep never returns early)."""
    p = Pacer(20 << 20)
    t0 = time.perf_counter()
    assert p.round_entries(4096) == int((20 << 20) * Pacer.PERIOD) // 4096
    for _ in range(5):
        p.account(1 << 20)
    assert time.perf_counter() - t0 >= 0.25
    assert p.achieved() <= 20 << 20


def test_pacer_catches_up_after_slow_rounds_but_never_exceeds_the_rate() -> None:
    """Rounds that take longer than their period (each move_pages call's fixed cost on a slow machine left
    a guest run at 60% of --rate 12M) are followed by bigger rounds carrying what is owed, at most CATCH_UP
    periods' worth, so the average reaches the rate; waiting still keeps it at or under the rate."""
    rate = 12 << 20
    p = Pacer(rate)
    period = int(rate * Pacer.PERIOD) // 4096
    assert p.round_entries(4096) == period  # on time: a period's worth
    total = 12 << 20
    while p.bytes < total:
        n = min(p.round_entries(4096) * 4096, total - p.bytes)
        time.sleep(0.06 + n / (48 << 20))  # each round: 60 ms fixed (over the 50 ms period) + the pages at 48 MiB/s
        p.account(n)
    assert 0.9 * rate <= p.achieved() <= rate
    naps = Pacer(rate)  # rounds that cost nothing, but each wait wakes 5 ms late: still the rate, within 5%
    t0 = time.perf_counter()
    while naps.bytes < total:
        naps.account(naps.round_entries(4096) * 4096)
        time.sleep(0.005)
    assert naps.bytes / (time.perf_counter() - t0) >= 0.95 * rate
    from numamove import _native
    from numamove.pagemove import _moved

    status = _native.raw_new("int[]", 6)
    for i, st in enumerate([1, 1, -13, 1, -16, 0]):  # moved, moved, shared (EACCES), moved, busy, elsewhere
        status[i] = st
    assert _moved(status, 0, 6, 1) == 3 and _moved(status, 1, 4, 1) == 2  # only pages now on dst are paced
    late = Pacer(rate)
    late.round_entries(4096)
    late.started = time.perf_counter() - 10.0  # far behind: one round carries CATCH_UP periods at most
    assert late.round_entries(4096) == int(rate * Pacer.PERIOD * Pacer.CATCH_UP) // 4096


# --------------------------------------------------------------------------- systemctl stand-in


@pytest.fixture
def systemctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in `systemctl` first on PATH. It answers `show --property=... -- UNIT` like systemd does:
    for units listed in its table, their properties; for others LoadState=not-found and no group."""
    table = tmp_path / "units"
    table.write_text("")
    script = tmp_path / "bin" / "systemctl"
    script.parent.mkdir()
    script.write_text(f"""#!/bin/sh
[ "$1" = show ] || exit 1
unit=$(eval echo \\${{$#}})
echo "$*" >> {tmp_path}/calls
line=$(grep "^$unit " {table})
if [ -z "$line" ]; then printf 'LoadState=not-found\\nActiveState=inactive\\nControlGroup=\\n'; exit 0; fi
set -- $line
printf 'LoadState=loaded\\nActiveState=%s\\nControlGroup=%s\\n' "$2" "$3"
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{script.parent}:{os.environ['PATH']}")
    return table


def test_unit_resolves_to_its_control_group(systemctl: Path) -> None:
    """`--unit nginx.service` is the ControlGroup systemctl shows for it, asked with `--` before the name."""
    systemctl.write_text("nginx.service active /system.slice/nginx.service\n")
    assert unit_cgroup("nginx.service") == "/system.slice/nginx.service"
    calls = (systemctl.parent / "calls").read_text()
    assert "-- nginx.service" in calls


def test_unknown_unit_is_a_usage_error(systemctl: Path) -> None:
    """A unit systemd does not know: exit 2 (CgroupError is a usage error)."""
    with pytest.raises(CgroupError, match="no such systemd unit: nosuch.service"):
        unit_cgroup("nosuch.service")


def test_stopped_unit_has_no_group(systemctl: Path) -> None:
    """A unit that exists but is not running has no group: a failure (exit 1), not a usage error."""
    systemctl.write_text("idle.service inactive\n")
    with pytest.raises(NumamoveError, match="idle.service is inactive") as exc:
        unit_cgroup("idle.service")
    assert not isinstance(exc.value, UsageError)


@pytest.mark.parametrize("name", ["-x", "a/b", "a b", ""])
def test_malformed_unit_names_never_reach_systemctl(systemctl: Path, name: str) -> None:
    """An option-like or path-like unit name is refused before systemctl runs."""
    with pytest.raises(CgroupError, match="invalid --unit"):
        unit_cgroup(name)
    assert not (systemctl.parent / "calls").exists()


def test_unit_without_systemctl(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No systemctl on PATH: one line saying --cgroup can name the group instead."""
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(CgroupError, match="needs systemctl"):
        unit_cgroup("x.service")


# --------------------------------------------------------------------------- real groups on this host


def _cgroup2() -> str | None:
    try:
        return cgroups.cgroup2_mount()
    except (CgroupError, OSError):
        return None


@pytest.fixture
def group() -> Iterator[tuple[str, str]]:
    """A fresh cgroup v2 group on this host: (its path relative to the mount, its directory)."""
    mount = _cgroup2()
    if mount is None or not os.access(mount, os.W_OK):
        pytest.skip("needs a writable cgroup v2 mount (root); the guest tests cover groups too")
    rel = f"/numamove-test-{uuid.uuid4().hex[:8]}"
    path = mount + rel
    os.mkdir(path)
    try:
        yield rel, path
    finally:
        cgroups.remove_group(path)
        assert not os.path.exists(path), f"{path} left behind"


def test_cgroup_moves_every_process_of_the_subtree(group: tuple[str, str]) -> None:
    """--cgroup takes the processes of the group and of its subgroups; relative and absolute paths agree;
    every one is a target in the JSON (on one node nothing moves: all already there)."""
    rel, path = group
    os.mkdir(path + "/sub")
    with Workload("--size", "4M", cgroup=path) as a, Workload("--size", "4M", cgroup=path + "/sub") as b:
        for spec in (rel, path, rel.lstrip("/")):
            code, out, err = run("proc", "--cgroup", spec, "--to", "0", "--json", "-q")
            assert code == 0, err
            doc = json.loads(out)
            assert {t["pid"] for t in doc["targets"] if t["outcome"] == "moved"} == {a.pid, b.pid}
            assert doc["cgroup"]["path"] == rel and doc["cgroup"]["processes"] == 2


def test_unit_is_moved_through_its_group(group: tuple[str, str], systemctl: Path) -> None:
    """`proc --unit` and `show --unit` act on the group the stand-in systemctl names."""
    rel, path = group
    systemctl.write_text(f"web.service active {rel}\n")
    with Workload("--size", "4M", cgroup=path) as w:
        code, out, err = run("proc", "--unit", "web.service", "--to", "0", "--json", "-q", "--rate", "100M")
        assert code == 0, err
        doc = json.loads(out)
        validate(doc, "proc")
        assert doc["cgroup"]["unit"] == "web.service" and [t["pid"] for t in doc["targets"]] == [w.pid]
        assert doc["cgroup"]["rate"]["limit_bytes_per_second"] == 100 << 20
        code, out, err = run("show", "--unit", "web.service", "--json")
        assert code == 0, err
        shown = json.loads(out)
        validate(shown, "show_group")
        assert shown["pids"] == [w.pid] and shown["cgroup"] == rel
        assert sum(shown["nodes"].values()) >= 4 << 20


def test_empty_group_has_nothing_to_move(group: tuple[str, str]) -> None:
    """A group without processes: one line, exit 1."""
    code, _out, err = run("proc", "--cgroup", group[0], "--to", "0")
    assert code == 1 and err.count("\n") == 1 and "has no processes" in err


def test_bad_group_input_is_one_line_and_exit_2(group: tuple[str, str], systemctl: Path,
                                                tmp_path: Path) -> None:
    """No such cgroup, a path outside cgroup v2, '..', a file, a unknown unit, --rate 0 and --rate 1Q:
    one line on stderr naming the problem, exit 2, no traceback."""
    rel, path = group
    (tmp_path / "f").write_text("")
    cases = [(["--cgroup", rel + "/nosuch"], "no such cgroup"),
             (["--cgroup", str(tmp_path)], "is not a cgroup v2 group"),
             (["--cgroup", rel + "/../.."], "'..' is not allowed"),
             (["--cgroup", rel + "/cgroup.procs"], "is a file"),
             (["--unit", "nosuch.service"], "no such systemd unit"),
             (["--cgroup", rel, "--rate", "0"], "--rate"),
             (["--cgroup", rel, "--rate", "1Q"], "--rate"),
             (["--cgroup", rel, "--unit", "x.service"], "not both"),
             (["--set-mems", "1"], "--set-mems"),
             (["--cgroup", rel, "--to", "cpus"], "name the node")]
    for args, words in cases:
        to = [] if "--to" in args else ["--to", "0"]
        code, _out, err = run("proc", *args, *to)
        assert code == 2 and words in err and err.count("\n") == 1 and "Traceback" not in err, (args, err)


def test_set_mems_without_a_v2_cpuset_says_why(group: tuple[str, str]) -> None:
    """--set-mems where the group has no cpuset controller (here: cpuset is on cgroup v1, or not enabled)
    is one line, exit 1, and nothing moves."""
    rel, path = group
    if os.path.exists(path + "/cpuset.mems"):
        pytest.skip("this host's group has the cpuset controller: the guest tests cover it")
    with Workload("--size", "1M", cgroup=path):
        code, _out, err = run("proc", "--cgroup", rel, "--to", "0", "--set-mems")
    assert code == 1 and "--set-mems: the cpuset controller" in err and err.count("\n") == 1


def test_numamove_inside_the_group_it_moves_leaves_itself_out(group: tuple[str, str]) -> None:
    """numamove run inside the group it moves (a service's ExecStartPost, `--cgroup /`) is no target of its
    own: the JSON names its PID apart, the text line says so, and a group holding only numamove has
    nothing to move (exit 1, one line)."""
    rel, path = group
    # sh joins the group, prints its PID and becomes numamove (exec keeps the PID)
    script = ('echo $$ > "$1/cgroup.procs" && echo $$ >&2 && g=$2 && shift 2 && '
              'exec "$0" -m numamove proc --cgroup "$g" --to 0 "$@"')

    def numamove_in_group(*args: str) -> tuple[int, str, int, str]:
        p = subprocess.run(["sh", "-c", script, sys.executable, path, rel, *args], capture_output=True,
                           text=True, timeout=120)
        first, _, rest = p.stderr.partition("\n")
        return p.returncode, p.stdout, int(first), rest

    with Workload("--size", "4M", cgroup=path) as w:
        code, out, me, err = numamove_in_group("--json", "-q")
        assert code == 0, err
        doc = json.loads(out)
        validate(doc, "proc")
        assert [t["pid"] for t in doc["targets"]] == [w.pid] and doc["cgroup"]["processes"] == 1
        assert doc["cgroup"]["numamove_pid"] == me and me != w.pid
        code, out, me, err = numamove_in_group("-q")
        assert code == 0, err
        assert f"numamove itself (PID {me}) is in the group: not moved" in out
    code, out, me, err = numamove_in_group()
    assert code == 1 and err.count("\n") == 1 and "has no processes but numamove itself" in err, err


def test_root_group_is_named_by_a_slash_and_its_kernel_threads_are_left_alone() -> None:
    """`--cgroup /` names the root group, as /proc/PID/cgroup's "0::/" does (not the file system's root,
    which is no group); the kernel threads it holds have no user memory: counted in `kernel_threads`,
    neither targets nor failures, and no line each on stderr."""
    if _cgroup2() is None:
        pytest.skip("needs a cgroup v2 mount; the guest tests cover groups too")
    code, out, err = run("show", "--cgroup", "/", "--json")
    assert code == 0, err
    assert json.loads(out)["cgroup"] == "/"
    code, out, err = run("proc", "--cgroup", "/", "--to", "0", "--dry-run", "--json", "-q")
    doc = json.loads(out)
    validate(doc, "proc")
    g = doc["cgroup"]
    # 3 (partial) only for a process even root may not read here (the development VM's PID 1)
    assert code == 0 or (code == 3 and g["failed"] >= 1), err
    assert g["path"] == "/" and g["kernel_threads"] > 0
    assert "kernel thread" not in err
    assert all("kernel thread" not in (t.get("error") or "") for t in doc["targets"])
    # every process but this one, which runs numamove (in-process) and is named apart
    assert g["processes"] >= 1 and os.getpid() not in {t["pid"] for t in doc["targets"]}
    assert g["numamove_pid"] == os.getpid()


class _FakeGroup:
    """A group whose listing the test sets: for _add_group_targets alone."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.kernel_threads: set[int] = set()
        self.myself: int | None = None

    def processes(self) -> list[int]:
        return list(self.pids)


def test_a_rescan_reports_each_failed_process_once_and_counts_kernel_threads_once() -> None:
    """A process that could not be a target (not permitted) is one failure, however many rescans list it
    again; a kernel thread is counted once and never a failure; a process that appears is picked up."""
    from numamove.commands import _add_group_targets
    from numamove.proc import AccessError, KernelThreadError, Target

    looked: list[list[int]] = []

    def resolve(pids: list[int]) -> tuple[list[Target], list[tuple[int, Exception]]]:
        looked.append(list(pids))
        bad: list[tuple[int, Exception]] = []
        found = []
        for pid in pids:
            if pid == 2:
                bad.append((pid, KernelThreadError("PID 2 is a kernel thread")))
            elif pid == 7:
                bad.append((pid, AccessError("not allowed to read the memory map of PID 7")))
            else:
                found.append(Target(pid, "w", "w", (pid,), start="1"))
        return found, bad

    group = _FakeGroup([2, 7, 100])
    targets: list[Target] = []
    outcomes: list = []
    _add_group_targets(group, targets, outcomes, resolve)
    assert [t.pid for t in targets] == [100] and [(o.pid, o.outcome) for o in outcomes] == [(7, "failed")]
    assert group.kernel_threads == {2}
    group.pids.append(101)  # a fork during the move: the rescan finds it, and only it
    fresh: list[Target] = []
    _add_group_targets(group, fresh, outcomes, resolve, {(t.pid, t.start) for t in targets})
    assert [t.pid for t in fresh] == [101] and looked[-1] == [100, 101]
    assert [(o.pid, o.outcome) for o in outcomes] == [(7, "failed")] and group.kernel_threads == {2}


def test_workload_reports_its_longest_pause() -> None:
    """The sample workload's `pause` is the longest gap between two reads of its memory since the last
    call: stopped for 400 ms, it reports at least that; the next call starts afresh."""
    import signal

    with Workload("--size", "8M") as w:
        time.sleep(0.3)
        assert 10 <= w.pause_ms() < 400  # its own 10 ms sleep between passes is the floor
        os.kill(w.pid, signal.SIGSTOP)
        time.sleep(0.4)
        os.kill(w.pid, signal.SIGCONT)
        time.sleep(0.1)
        assert w.pause_ms() >= 400
        time.sleep(0.2)
        assert w.pause_ms() < 400
