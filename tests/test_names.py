"""Names other users choose: processes and files whose names are not UTF-8 or hold control characters.

Any user can run a program named b"sl\\xffp\\n\\x1b[31mX" (the kernel takes the process name from the
file it executes) or leave such a file in /dev/shm. numamove reads /proc as root for every process:
one such process anywhere on the machine ended every `numamove proc` in a UnicodeDecodeError, and a
`file --copy` of such a file left its temporary name behind. Whole processes, in the user's locale.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from numamove.text import printable

NUMAMOVE = [sys.executable, "-m", "numamove"]
NAME = b"sl\xffp\n\x1b[31mX"  # not UTF-8, a newline, a terminal escape: 10 bytes, within comm's 15
SHOWN = "sl\\xffp\\n\\x1b[31mX"


def numamove(*args: str | bytes, locale: str = "C.UTF-8") -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, LANG=locale, LC_ALL=locale)
    return subprocess.run(NUMAMOVE + list(args), capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture
def odd_process(tmp_path: Path) -> Iterator[int]:
    """A sleep whose process name (and the file it runs from, mapped in its maps) is NAME."""
    exe = os.path.join(os.fsencode(tmp_path), NAME)
    shutil.copy(b"/bin/sleep", exe)
    p = subprocess.Popen([exe, b"60"])
    try:
        for _ in range(200):  # until the exec is done and the name is the new one
            with open(f"/proc/{p.pid}/comm", "rb") as fh:
                if fh.read() == NAME + b"\n":
                    break
            subprocess.run(["sleep", "0.01"])
        yield p.pid
    finally:
        p.kill()
        p.wait()


def clean(p: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in p.stderr and "\x1b" not in p.stdout + p.stderr, p.stderr


@pytest.mark.parametrize("locale", ["C.UTF-8", "C"])
def test_a_process_named_with_any_bytes_elsewhere_never_stops_a_move(odd_process: int, sleeper: int,
                                                                      locale: str) -> None:
    """The process is not even the target: numamove's scan for numad reads every process's name."""
    p = numamove("proc", str(sleeper), "--to", "0", "--json", locale=locale)
    clean(p)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["processes"][0]["pid"] == sleeper


@pytest.mark.parametrize("locale", ["C.UTF-8", "C"])
def test_such_a_process_is_moved_and_shown_by_a_printable_name(odd_process: int, locale: str) -> None:
    p = numamove("proc", str(odd_process), "--to", "0", locale=locale)
    clean(p)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[0].startswith(f"PID {odd_process} ({SHOWN}) -> node 0: ")
    doc = json.loads(numamove("proc", str(odd_process), "--to", "0", "--json", locale=locale).stdout)
    assert doc["processes"][0]["name"] == SHOWN
    show = numamove("show", str(odd_process), locale=locale)
    clean(show)
    assert show.returncode == 0 and f"PID {odd_process} ({SHOWN})" in show.stdout


def test_such_a_process_is_found_by_name(odd_process: int) -> None:
    """Found, and shown by its printable name (another run of this suite on the machine has one too)."""
    p = numamove("proc", "--name", "^sl.p", "--to", "0", "--dry-run", "--json")
    clean(p)
    assert p.returncode == 0, p.stderr
    targets = json.loads(p.stdout)["targets"]
    assert odd_process in [t["pid"] for t in targets]
    assert {t["name"] for t in targets} == {SHOWN}


def test_a_file_named_with_any_bytes_is_moved_copied_and_reported_on_one_line() -> None:
    """In place and --copy (which links its copy under a temporary name before the exchange): exit 0,
    each report's first line printable, the bytes intact, no temporary name left in /dev/shm."""
    path = b"/dev/shm/numamove-test-" + NAME + str(os.getpid()).encode()
    data = os.urandom(1 << 20)
    with open(path, "wb") as fh:
        fh.write(data)
    shown = printable(os.fsdecode(path))
    try:
        before = set(os.listdir(b"/dev/shm"))
        for args in ((), ("--copy",)):
            p = numamove("file", os.fsdecode(path), "--to", "0", *args)
            clean(p)
            assert p.returncode == 0, p.stderr
            assert p.stdout.splitlines()[0].startswith(("file " if not args else "copied ") + shown)
        # a temporary name holds the file's own (.NAME.numamove-XXXX): none left (nor any other new entry
        # naming it; other entries may come and go with other users of /dev/shm)
        assert [e for e in set(os.listdir(b"/dev/shm")) - before if os.path.basename(path) in e] == []
        with open(path, "rb") as fh:
            assert fh.read() == data
    finally:
        os.unlink(path)


def test_a_message_quoting_such_a_name_stays_one_line(tmp_path: Path) -> None:
    link = b"/dev/shm/numamove-test-link-" + NAME + str(os.getpid()).encode()
    os.symlink(b"/etc/hostname", link)
    try:
        p = numamove("file", os.fsdecode(link), "--to", "0")
        clean(p)
        assert p.returncode == 2 and len(p.stderr.splitlines()) == 1 and SHOWN in p.stderr
    finally:
        os.unlink(link)


@pytest.mark.parametrize(("raw", "shown"), [
    ("plain name", "plain name"),
    ("é and 中", "é and 中"),
    (os.fsdecode(b"a\xffb"), "a\\xffb"),
    ("two\nlines", "two\\nlines"),
    ("\x1b[2Jclear", "\\x1b[2Jclear"),
    ("tab\there", "tab\\there"),
    ("\u202eright-to-left", "\\u202eright-to-left"),
])
def test_printable(raw: str, shown: str) -> None:
    assert printable(raw) == shown
