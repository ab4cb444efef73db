"""The click-free parser of `numamove proc` and `file`: whatever it accepts, click would parse the same way."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import click
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numamove.cli import cli
from numamove.fastargs import FILE_DEFAULTS, FILE_OPTIONS, PROC_DEFAULTS, PROC_OPTIONS, file_params, proc_params

TOKENS = [*PROC_OPTIONS, "--help", "-h", "--", "-", "-qv", "--bogus", "--to=1", "--to=", "--batch=0", "--batch=5",
          "--max-pause=0.05", "--max-pause=20", "--policy=pull", "--json=1", "123", "4567", "abc", "", "0", "1",
          "-1", "+3", " 7", "1_0", "1.5", "1e3", "0x10", "push", "pull", "up", "auto", "0-1", "7f00-7f10",
          "anon,heap", "cpus", "16777217", "60001", "0.1", "٣", "200M", "--rate=1Q", "/system.slice/x.service",
          "--cgroup=/a", "nginx.service"]


FILE_TOKENS = [*FILE_OPTIONS, "--help", "-h", "--", "-", "-qj", "--bogus", "--to=1", "--to=", "--policy=pull",
               "--json=1", "--copy=1", "--output=/dev/shm/o", "/dev/shm/a", "/dev/shm/b c", "", "0", "1", "-1",
               "push", "up", "auto", "2", "cpus", "0,1", "/data/x.bin", "٣"]


def click_params(argv: list[str], command: str = "proc") -> dict[str, Any] | None:
    """What click passes to the command for argv, or None where click refuses it."""
    try:
        with cli.commands[command].make_context(command, list(argv)) as ctx:
            return dict(ctx.params)
    except click.exceptions.ClickException:
        return None
    except click.exceptions.Exit:  # --help
        return None


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=8))
def test_fast_parse_equals_clicks_wherever_it_parses(argv: list[str]) -> None:
    """On generated command lines the fast parser gives click's parameters, or leaves the line to click."""
    fast = proc_params(argv)
    if fast is not None:
        assert fast == click_params(argv), argv


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(FILE_TOKENS), max_size=8))
def test_fast_file_parse_equals_clicks_wherever_it_parses(argv: list[str]) -> None:
    """The same for `file`."""
    fast = file_params(argv)
    if fast is not None:
        assert fast == click_params(argv, "file"), argv


@pytest.mark.parametrize("argv", [
    ["/dev/shm/feature-store", "--to", "1"], ["/dev/hugepages/buf", "--to=2", "--json"],
    ["/dev/shm/a", "/dev/shm/b", "--to", "1", "--from", "0", "--threads", "2", "--policy", "pull", "-q"],
    ["/dev/shm/idle-table", "--to", "1", "--copy", "--dry-run"],
    ["/data/embeddings.bin", "--copy", "--output", "/dev/shm/embeddings.bin", "--to", "1"],
])
def test_common_file_command_lines_take_the_fast_path(argv: list[str]) -> None:
    """`file`'s help examples and their like never need click, and match it."""
    fast = file_params(argv)
    assert fast is not None and fast == click_params(argv, "file")


def test_every_file_option_is_known_to_the_fast_parser_or_left_to_click() -> None:
    cmd = cli.commands["file"]
    names = {o for p in cmd.params if isinstance(p, click.Option) for o in p.opts}
    assert set(FILE_OPTIONS) <= names
    assert set(FILE_DEFAULTS) == {p.name for p in cmd.params}
    assert file_params(["--to", "0"]) is None and click_params(["--to", "0"], "file") is None  # PATH... required


@pytest.mark.parametrize("argv", [
    ["123", "--to", "1"], ["--to=1", "123", "456", "-q", "--json"], ["1", "--to", "0", "--range", "a-b", "--range=c-d"],
    ["1", "--to", "1", "--batch", "64", "--max-pause", "20", "--policy", "pull", "--threads", "2", "-v"],
    ["--name", "postgres", "--to", "cpus", "--from", "0,2", "--only", "anon", "--all", "--wait", "--dry-run"],
    ["--cgroup", "/system.slice/docker-1.scope", "--to", "1", "--set-mems", "--max-pause", "20", "--json"],
    ["--unit", "nginx.service", "--to", "1", "--rate", "200M"],
])
def test_common_command_lines_take_the_fast_path(argv: list[str]) -> None:
    """The forms operators type every day never need click, and match it."""
    fast = proc_params(argv)
    assert fast is not None and fast == click_params(argv)


def test_every_proc_option_is_known_to_the_fast_parser_or_left_to_click() -> None:
    """An option added to proc without the fast parser knowing it is left to click, never misparsed."""
    cmd = cli.commands["proc"]
    names = {o for p in cmd.params if isinstance(p, click.Option) for o in p.opts}
    assert set(PROC_OPTIONS) <= names
    assert set(PROC_DEFAULTS) == {p.name for p in cmd.params}
    assert click_params(["--to", "0"]) == {**PROC_DEFAULTS, "to_text": "0"}


HEAVY = ("click", "typing", "re", "enum", "collections", "json", "dataclasses", "psutil", "numa", "pathlib",
         "hashlib", "tempfile", "subprocess")


def heavy_loaded(argv_expr: str, also: tuple[str, ...] = ()) -> str:
    """Run main(argv_expr) in a fresh interpreter; the last line it prints: "[heavy modules loaded] exit code"."""
    code = ("import os, sys; from numamove.entry import main\n"
            f"try:\n    rc = main({argv_expr})\n"
            "except SystemExit as exc:\n    rc = exc.code\n"
            f"print(sorted(m for m in {(*HEAVY, 'secrets', *also)!r} if m in sys.modules), rc)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    return out.stdout.splitlines()[-1] if out.stdout else out.stderr


@pytest.mark.parametrize("dry", [True, False])
def test_the_fast_path_imports_nothing_heavy(dry: bool) -> None:
    """`numamove proc PID --to N` runs without importing click (half a small run once) nor any other module
    that costs start-up: typing, re, enum, collections (each 1-4 ms), json, py-libnuma (a subprocess)...
    nor fcntl (0.1 ms: the lock's flock comes from numamove's C extension, which the move loads anyway)."""
    extra = ", '--dry-run'" if dry else ""
    assert heavy_loaded(f"['proc', str(os.getpid()), '--to', '0', '-q'{extra}]", ("fcntl",)) == "[] 0"


def test_ctrl_c_while_a_command_imports_its_modules_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGINT while main() imports the click CLI (or anything else) ends with one line and exit 130, no traceback."""
    import builtins

    from test_cli import run

    real = builtins.__import__

    def interrupted_import(name: str, *args: Any, **kw: Any) -> Any:
        if name in ("cli", "numamove.cli") or (name == "" and args and "cli" in (args[2] or ())):
            raise KeyboardInterrupt
        return real(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", interrupted_import)
    code, out, err = run("nodes")
    assert code == 130 and err == "numamove: error: interrupted\n", err


@pytest.mark.parametrize("args", [["--dry-run"], [], ["--copy", "--dry-run"], ["--copy", "--output", "{out}"]])
def test_the_file_fast_path_imports_nothing_heavy(args: list[str], tmp_path: Any) -> None:
    """`numamove file PATH --to N`, in place or --copy, dry or real, imports none of the costly modules either
    (dataclasses alone, with inspect and re, cost ~18 ms of a ~30 ms run), nor secrets (hashlib)."""
    import os

    path = f"/dev/shm/numamove-fast-{os.getpid()}"
    with open(path, "wb") as fh:
        fh.write(os.urandom(1 << 20))
    try:
        argv = ["file", path, "--to", "0", "-q", *(a.format(out=path + "-out") for a in args)]
        assert heavy_loaded(repr(argv)) == "[] 0"
    finally:
        for p in (path, path + "-out"):
            if os.path.exists(p):
                os.unlink(p)


def test_the_command_collects_cycles_rarely() -> None:
    """The command (entry.run, behind both launchers) sets the cyclic collector's first threshold to
    100,000 allocations before it runs anything: reading a process's thousands of mappings then sets
    off no collection (1-2.7 ms of a 40 ms run for 8,000 mappings). The library keeps Python's default."""
    code = ("import gc, sys, numamove.entry as e\n"
            "before = gc.get_threshold()[0]\n"
            "def main():\n"
            "    print(before, gc.get_threshold()[0], flush=True)\n"
            "    return 0\n"
            "e.main = main\n"
            "e.run()\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["700", "100000"]
