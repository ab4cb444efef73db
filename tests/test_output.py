"""Standard output and standard error that cannot be written: a full disk, a closed descriptor, a reader
that went away. Whole processes, since what is under test is what happens to descriptors 1 and 2.

Each case gets one line on stderr naming the problem (none for a closed pipe) and a documented exit
status, never a traceback or the interpreter's "Exception ignored". After a move, the exit status is
still the move's: the pages moved whether or not the report could be written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

NUMAMOVE = [sys.executable, "-m", "numamove"]


def numamove(args: list[str], stdout: str, stderr: str = "pipe", data: bytes = b"") -> tuple[int, str]:
    """Run numamove with stdout "full" (/dev/full), "closed" (descriptor 1 closed), "gone" (a pipe whose
    reader has closed it) or "pipe"; stderr "pipe" or "closed". (exit status, stderr text)."""
    keep: list[int] = []
    kw: dict[str, Any] = {"stdin": subprocess.DEVNULL}
    if stdout == "full":
        kw["stdout"] = open("/dev/full", "wb")  # noqa: SIM115 - closed below
    elif stdout == "gone":
        r, w = os.pipe()
        os.close(r)
        kw["stdout"] = w
        keep.append(w)
    elif stdout == "pipe":
        kw["stdout"] = subprocess.PIPE
    closed = [fd for fd, how in ((1, stdout), (2, stderr)) if how == "closed"]
    if closed:
        kw["preexec_fn"] = lambda: [os.close(fd) for fd in closed]
    err_path = f"/dev/shm/numamove-test-err-{os.getpid()}"
    with open(err_path, "w+b") as err:
        if stderr == "pipe":
            kw["stderr"] = err
        try:
            p = subprocess.run(NUMAMOVE + args, timeout=60, **kw)
        finally:
            if stdout == "full":
                kw["stdout"].close()
            for fd in keep:
                os.close(fd)
            os.unlink(err_path)
        err.seek(0)
        return p.returncode, err.read().decode()


def one_line(err: str) -> str:
    assert "Traceback" not in err and "Exception ignored" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("args", [["nodes"], ["nodes", "--json"], ["--help"], ["proc", "--help"], ["--version"]])
def test_a_full_stdout_is_one_line_and_exit_1(args: list[str]) -> None:
    """Output that cannot be written (stdout on a full disk) is an error: one line, exit 1."""
    code, err = numamove(args, "full")
    assert code == 1
    assert one_line(err) == "numamove: error: cannot write to standard output: No space left on device"


@pytest.mark.parametrize("args", [["nodes"], ["nodes", "--json"], ["--help"], ["proc", "--help"], ["file", "--help"],
                                  ["--version"]])
def test_a_closed_stdout_is_one_line_and_exit_1(args: list[str]) -> None:
    code, err = numamove(args, "closed")
    assert code == 1
    assert one_line(err) == "numamove: error: cannot write to standard output: Bad file descriptor"


@pytest.mark.parametrize("args", [["nodes"], ["nodes", "--json"], ["--help"]])
def test_a_reader_that_went_away_is_quiet_and_exit_1(args: list[str]) -> None:
    """As with `numamove nodes | head -1`: the reader has what it wanted, so nothing on stderr."""
    code, err = numamove(args, "gone")
    assert (code, err) == (1, "")


@pytest.mark.parametrize("json_out", [False, True])
@pytest.mark.parametrize("how", ["full", "closed"])
def test_a_move_whose_report_cannot_be_written_keeps_its_exit_status(sleeper: int, how: str,
                                                                       json_out: bool) -> None:
    """The move happened: exit 0 as the move says, and the lost report named on stderr as a warning."""
    code, err = numamove(["proc", str(sleeper), "--to", "0", "-q"] + (["--json"] if json_out else []), how)
    assert code == 0
    line = one_line(err)
    assert line.startswith("numamove: warning: cannot write the report to standard output: ")
    assert "the move is done, and the exit status (0) says how it went" in line


def test_a_dry_run_whose_report_cannot_be_written_is_an_error(sleeper: int) -> None:
    """A dry run's report is all it does: losing it is exit 1, as for any other command."""
    code, err = numamove(["proc", str(sleeper), "--to", "0", "--dry-run"], "full")
    assert code == 1
    assert one_line(err) == "numamove: error: cannot write to standard output: No space left on device"


def test_a_move_piped_into_a_reader_that_went_away_exits_as_the_move(sleeper: int) -> None:
    code, err = numamove(["proc", str(sleeper), "--to", "0", "--json"], "gone")
    assert (code, err) == (0, "")


@pytest.mark.parametrize("json_out", [False, True])
def test_a_closed_stderr_never_stops_a_move(sleeper: int, json_out: bool) -> None:
    """Started with stderr closed (a script's `2>&-`), proc still moves and reports on stdout. The text
    report's progress bar asked the closed stderr whether it is a terminal, and failed (exit 1)."""
    p = subprocess.run(NUMAMOVE + ["proc", str(sleeper), "--to", "0"] + (["--json"] if json_out else []),
                       stdout=subprocess.PIPE, preexec_fn=lambda: os.close(2), timeout=60, text=True)
    assert p.returncode == 0
    if json_out:
        assert json.loads(p.stdout)["processes"][0]["pid"] == sleeper
    else:
        assert f"PID {sleeper}" in p.stdout


def test_descriptors_started_closed_are_held_on_dev_null() -> None:
    """With descriptor 1 or 2 closed at start, the next file numamove opens (a tmpfs file, a calibration)
    would get that number, and anything meant for the terminal would go into it: both are held on /dev/null."""
    code = ("import os, sys, stat\n"
            "from numamove import entry\n"
            "entry._hold_closed_descriptors()\n"
            "fd = os.open('/dev/shm', os.O_RDONLY)\n"
            "null = os.stat('/dev/null')\n"
            "held = all((os.fstat(n).st_rdev, os.fstat(n).st_ino) == (null.st_rdev, null.st_ino) for n in (1, 2))\n"
            "os.write(int(sys.argv[1]), f'{fd} {held}'.encode())\n")
    r, w = os.pipe()
    try:
        p = subprocess.run([sys.executable, "-c", code, str(w)], pass_fds=(w,), timeout=60,
                           preexec_fn=lambda: (os.close(1), os.close(2)))
        os.close(w)
        w = -1
        got = os.read(r, 100).decode()
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    assert p.returncode == 0
    fd, held = got.split()
    assert int(fd) > 2 and held == "True"


def test_a_closed_stderr_and_a_full_stdout_still_exit_by_the_rules(sleeper: int) -> None:
    assert numamove(["proc", str(sleeper), "--to", "0"], "full", "closed")[0] == 0
    assert numamove(["nodes"], "full", "closed")[0] == 1


def test_a_copy_with_stdout_closed_is_made_and_says_its_report_was_lost() -> None:
    """`file --copy` with descriptor 1 closed: the copy holds the source's bytes, exit 0, and one warning."""
    src = f"/dev/shm/numamove-test-out-src-{os.getpid()}"
    dst = f"/dev/shm/numamove-test-out-dst-{os.getpid()}"
    data = os.urandom(1 << 20)
    with open(src, "wb") as fh:
        fh.write(data)
    try:
        code, err = numamove(["file", src, "--to", "0", "--copy", "--output", dst], "closed")
        assert code == 0
        assert "cannot write the report to standard output: Bad file descriptor" in one_line(err)
        with open(dst, "rb") as fh:
            assert fh.read() == data
    finally:
        for path in (src, dst):
            if os.path.exists(path):
                os.unlink(path)


@pytest.mark.parametrize("args", [["file", "{src}", "--to", "0", "--copy"], ["proc", "{pid}", "--to", "0"],
                                  ["show", "{pid}"]])
def test_too_few_descriptors_is_one_line_never_a_traceback(sleeper: int, args: list[str]) -> None:
    """A cron or service environment with a tiny RLIMIT_NOFILE: whichever open runs out first, one line
    naming the error (and the file), exit 1, or the command simply works. With 8 descriptors `file --copy`
    ended in a traceback from reading its own /proc maps."""
    import resource

    src = f"/dev/shm/numamove-test-nofile-{os.getpid()}"
    with open(src, "wb") as fh:
        fh.write(os.urandom(1 << 20))
    try:
        for limit in range(4, 14):
            def low(n: int = limit) -> None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))

            if subprocess.run([sys.executable, "-c", "import numamove.entry"], preexec_fn=low,
                              capture_output=True).returncode:
                continue  # too few for the interpreter itself to start (its site, its imports): not numamove's
            p = subprocess.run(NUMAMOVE + [a.format(src=src, pid=sleeper) for a in args], capture_output=True,
                               text=True, preexec_fn=low, timeout=60)
            assert "Traceback" not in p.stderr, (limit, p.stderr)
            assert p.returncode in (0, 1), (limit, p.returncode, p.stderr)
            if p.returncode:
                assert len(p.stderr.splitlines()) == 1 and p.stderr.startswith("numamove: error: "), (limit, p.stderr)
        assert not [n for n in os.listdir("/dev/shm") if n.startswith(".numamove-test-nofile")]
    finally:
        os.unlink(src)


@pytest.mark.parametrize(("outcome", "code", "said"), [
    ("return 0", 0, ""), ("return 3", 3, ""), ("raise SystemExit(2)", 2, ""), ("raise SystemExit(None)", 0, ""),
    ("raise SystemExit('numamove: error: x')", 1, "numamove: error: x\n"),
])
def test_the_launcher_leaves_with_mains_status_and_flushed_output(outcome: str, code: int, said: str) -> None:
    """entry.run (bin/numamove, python -m numamove) skips the interpreter's teardown with os._exit: what
    main printed without a flush still arrives, and the status is main's, whichever way main ended."""
    prog = ("import sys, numamove.entry as e\n"
            "def main():\n"
            "    sys.stdout.write('report\\n'); sys.stderr.write('note')\n"
            f"    {outcome}\n"
            "e.main = main\n"
            "e.run()\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # buffered, as for a user
    r = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, env=env)
    assert (r.returncode, r.stdout, r.stderr) == (code, "report\n", "note" + said)
