"""Every --json output validates against the documented schema (docs/schemas/numamove.schema.json).

Real outputs of real commands on this machine; the multi-node outputs (pages moved,
workers, calibrations of node pairs) are validated in the guests too
(tests/test_numa_calibrate.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from schemas import definitions, validate
from test_cli import run
from workload_helper import Workload

from numamove.cli import cli

# command line -> the schema definition its --json output follows
CASES: dict[str, tuple[list[str], str]] = {
    "nodes": (["nodes"], "nodes"),
    "bench": (["bench", "--size", "8M", "--repeats", "1", "--threads", "1,auto"], "bench"),
    "bench-dry-run": (["bench", "--dry-run"], "bench_dry_run"),
    "bench-buffer": (["bench", "--buffer", "--size", "8M", "--repeats", "1", "--threads", "1"], "bench_buffer"),
    "bench-buffer-dry-run": (["bench", "--buffer", "--dry-run"], "bench_buffer_dry_run"),
    "calibrate": (["calibrate", "--budget", "3", "--size", "8M", "-q"], "calibrate"),
    "calibrate-dry-run": (["calibrate", "--dry-run"], "calibrate_dry_run"),
    "calibrate-show": (["calibrate", "--show"], "calibrate_show"),
    "show": (["show", "{pid}"], "show"),
    "proc": (["proc", "{pid}", "--to", "0", "-q"], "proc"),
    "proc-dry-run": (["proc", "{pid}", "--to", "0", "--dry-run"], "proc"),
    "file": (["file", "{shm}", "--to", "0", "-q"], "file"),
    "file-copy": (["file", "{shm}", "--to", "0", "--copy", "-q"], "file_copy"),
    "file-copy-dry-run": (["file", "{shm}", "--to", "0", "--copy", "--dry-run"], "file_copy"),
}


@pytest.fixture(scope="module")
def targets() -> Iterator[dict[str, str]]:
    shm = f"/dev/shm/numamove-schema-{os.getpid()}"
    with open(shm, "wb") as f:
        f.write(os.urandom(1 << 20))
    with Workload("--size", "2M", "--huge", "2M") as w:
        yield {"pid": str(w.pid), "shm": shm}
    os.unlink(shm)


@pytest.mark.parametrize("case", sorted(CASES))
def test_json_output_matches_its_schema(case: str, targets: dict[str, str]) -> None:
    args, definition = CASES[case]
    code, out, err = run(*[a.format(**targets) for a in args], "--json")
    assert code == 0, err
    validate(json.loads(out), definition)


def test_every_json_option_has_a_schema_and_a_case() -> None:
    """A new --json output cannot land without its schema and this test exercising it."""
    with_json = {name for name, cmd in cli.commands.items()
                 if any(isinstance(p, click.Option) and "--json" in p.opts for p in cmd.params)}
    exercised = {args[0] for args, _ in CASES.values()}
    assert with_json <= exercised, f"--json without a schema test: {with_json - exercised}"
    assert {d for _, d in CASES.values()} <= definitions()


def test_the_schema_rejects_what_it_should() -> None:
    """The schema is strict: an unknown field or a wrong type fails (so a drifting output fails the test)."""
    code, out, _ = run("nodes", "--json")
    doc: dict[str, Any] = json.loads(out)
    validate(doc, "nodes")
    with pytest.raises(AssertionError, match="Additional properties"):
        validate({**doc, "surprise": 1}, "nodes")
    bad = json.loads(out)
    bad["nodes"][0]["cpu_count"] = "two"
    with pytest.raises(AssertionError, match="not of type 'integer'"):
        validate(bad, "nodes")


def test_the_calibration_file_itself_matches_the_schema(no_calibration: Path) -> None:
    code, out, err = run("calibrate", "--budget", "2", "--size", "8M", "-q")
    assert code == 0, err
    validate(json.loads(no_calibration.read_text()), "calibrate")
