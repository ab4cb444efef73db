"""numamove(8) and shell completion: generated from the CLI, installed with the package."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import click
import pytest

from numamove.cli import cli
from numamove.manpage import render

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "man" / "numamove.8"


def test_committed_man_page_is_current() -> None:
    """man/numamove.8 is what the CLI's help generates now: `make man` after changing the CLI."""
    assert PAGE.read_text() == render(), "man/numamove.8 is stale: run `make man`"


def test_man_page_documents_every_command_and_option() -> None:
    text = PAGE.read_text()
    ctx = click.Context(cli, info_name="numamove")
    for name in cli.list_commands(ctx):
        cmd = cli.get_command(ctx, name)
        assert cmd is not None
        assert f'.SS "numamove {name} ' in text
        for p in cmd.params:
            if isinstance(p, click.Option) and not p.hidden:
                assert p.opts[-1].replace("-", "\\-") in text, f"{name} {p.opts}"
    for section in ("NAME", "SYNOPSIS", "COMMANDS", "EXIT STATUS", "FILES", "ENVIRONMENT", "SEE ALSO"):
        assert f".SH {section}" in text
    assert "/var/lib/numamove/calibration.json" in text and "_NUMAMOVE_COMPLETE" in text


def test_man_page_renders_without_warnings() -> None:
    groff = shutil.which("groff")
    if groff is None:
        pytest.skip("groff is not installed (make deps installs groff-base)")
    p = subprocess.run([groff, "-man", "-Tutf8", "-ww", "-z", str(PAGE)], capture_output=True, text=True)
    assert p.returncode == 0 and p.stderr == ""
    out = subprocess.run([groff, "-man", "-Tutf8", "-P", "-cbou", str(PAGE)], capture_output=True, text=True).stdout
    assert "numamove calibrate" in out and "EXIT STATUS" in out


def test_wheel_installs_the_man_page(tmp_path: Path) -> None:
    """pip installs share/man/man8/numamove.8 with the package (setup.py data_files)."""
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    wheel = next(tmp_path.glob("numamove-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.endswith(".data/data/share/man/man8/numamove.8") for n in names), names


@pytest.mark.parametrize("shell, marker", [("bash", "complete -o nosort -F"), ("zsh", "#compdef numamove"),
                                           ("fish", "complete --no-files --command numamove")])
def test_shell_completion_scripts(shell: str, marker: str) -> None:
    """click's completion, as documented: _NUMAMOVE_COMPLETE={shell}_source numamove."""
    env = dict(os.environ, _NUMAMOVE_COMPLETE=f"{shell}_source")
    p = subprocess.run([sys.executable, "-m", "numamove"], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0 and marker in p.stdout


def test_bash_completion_completes_commands_and_options() -> None:
    env = dict(os.environ, _NUMAMOVE_COMPLETE="bash_complete", COMP_WORDS="numamove cal", COMP_CWORD="1")
    p = subprocess.run([sys.executable, "-m", "numamove"], capture_output=True, text=True, env=env, timeout=60)
    assert "plain,calibrate" in p.stdout.split()
    env.update(COMP_WORDS="numamove calibrate --bu", COMP_CWORD="2")
    p = subprocess.run([sys.executable, "-m", "numamove"], capture_output=True, text=True, env=env, timeout=60)
    assert "plain,--budget" in p.stdout.split()
