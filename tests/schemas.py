"""Validate numamove's --json documents against docs/schemas/numamove.schema.json."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA = Path(__file__).resolve().parents[1] / "docs" / "schemas" / "numamove.schema.json"


@cache
def _schema() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(doc)
    return doc


def definitions() -> set[str]:
    return set(_schema()["$defs"])


def validate(doc: Any, definition: str) -> None:
    """Raise AssertionError listing every way doc breaks $defs/definition."""
    schema = _schema()
    assert definition in schema["$defs"], f"no schema for {definition}"
    v = jsonschema.Draft202012Validator({**schema, "$ref": f"#/$defs/{definition}"},
                                        format_checker=jsonschema.FormatChecker())
    errors = sorted(v.iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert not errors, f"{definition}: " + "; ".join(
        f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message[:200]}" for e in errors[:5])
