"""Running numamove as a non-root user with capabilities, as docs/operators.md tells operators to.

Each case runs the CLI as user nobody holding only the named capabilities
(tests/caps_helper.py), in the two-node guest (the five-node one would add nothing but time:
each case starts Python, which takes seconds under TCG).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli import run
from workload_helper import Workload

HELPER = Path(__file__).with_name("caps_helper.py")
SHM = "/dev/shm/numamove-caps-test"


def as_nobody(caps: str, *args: str, hold: str | None = None) -> subprocess.CompletedProcess[str]:
    opts = ["--hold-shm", hold] if hold else []
    return subprocess.run([sys.executable, str(HELPER), caps, *opts, "--", *args], capture_output=True,
                          text=True, timeout=600,
                          env={**os.environ, "NUMAMOVE_CALIBRATION": "/nonexistent"})


@pytest.fixture()
def nobodys_file() -> Iterator[str]:
    """A 2 MiB tmpfs file owned by nobody, its pages on node 0."""
    Path(SHM).write_bytes(os.urandom(2 << 20))
    os.chown(SHM, 65534, 65534)
    code, _, err = run("file", SHM, "--to", "0", "-q")
    assert code == 0, err
    yield SHM
    os.unlink(SHM)


def _json(p: subprocess.CompletedProcess[str]) -> dict[str, object]:
    out = p.stdout[p.stdout.index("{"):]
    doc: dict[str, object] = json.loads(out)
    return doc


@pytest.mark.numa(nodes=2, guest="two")
def test_cap_sys_nice_lets_a_user_move_its_shared_pages(nobodys_file: str) -> None:
    """--all (MPOL_MF_MOVE_ALL) on a process of one's own: refused without CAP_SYS_NICE, done with it."""
    args = ("proc", "{holder}", "--to", "1", "--all", "--only", "shm", "-q")
    p = as_nobody("none", *args, hold=nobodys_file)
    assert p.returncode == 1 and "--all needs CAP_SYS_NICE" in p.stderr and "Traceback" not in p.stderr
    p = as_nobody("sys_nice", *args, "--json", hold=nobodys_file)
    assert p.returncode == 0, p.stderr
    rep = _json(p)["processes"][0]  # type: ignore[index]
    assert rep["moved"]["pages"] == 512 and rep["failed"] == {}


@pytest.mark.numa(nodes=2, guest="two")
def test_cap_sys_nice_lets_a_user_move_a_shared_file_in_place(nobodys_file: str) -> None:
    """Without it the pages other processes map are skipped (with the hint); with it they move."""
    args = ("file", nobodys_file, "--to", "1", "-q", "--json")
    p = as_nobody("none", *args, hold=nobodys_file)
    assert p.returncode == 0, p.stderr
    rep = _json(p)["files"][0]  # type: ignore[index]
    assert rep["moved"]["pages"] == 0 and sum(v["pages"] for v in rep["skipped"].values()) == 512
    p = as_nobody("sys_nice", *args, hold=nobodys_file)
    assert p.returncode == 0, p.stderr
    rep = _json(p)["files"][0]  # type: ignore[index]
    assert rep["moved"]["pages"] == 512 and rep["skipped"] == {}


@pytest.mark.numa(nodes=2, guest="two")
def test_another_users_process_needs_cap_sys_ptrace_and_cap_dac_read_search() -> None:
    """Another user's process: move_pages and its smaps are ptrace-style accesses (CAP_SYS_PTRACE), and
    its /proc/PID/pagemap is readable by its owner only (CAP_DAC_READ_SEARCH); either alone is refused."""
    with Workload("--size", "4M", "--huge", "0", "--node", "0") as w:  # root's
        for caps in ("sys_nice", "sys_nice,sys_ptrace", "sys_nice,dac_read_search"):
            p = as_nobody(caps, "proc", str(w.pid), "--to", "1", "--only", "anon", "-q")
            assert p.returncode == 1 and "not allowed" in p.stderr and p.stderr.count("\n") == 1, caps
            assert "CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH" in p.stderr
        p = as_nobody("sys_nice,sys_ptrace,dac_read_search", "proc", str(w.pid), "--to", "1", "--only", "anon",
                      "-q", "--json")
        assert p.returncode == 0, p.stderr
        assert _json(p)["processes"][0]["moved"]["pages"] > 0  # type: ignore[index]
        assert w.check()[0]
