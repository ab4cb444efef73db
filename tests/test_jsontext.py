"""numamove.jsontext writes what json.dumps writes and reads what json.loads reads, without importing json."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numamove.jsontext import dumps, loads

scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
           | st.text())  # text() includes lone surrogates: paths from os.fsdecode carry them
keys = st.text() | st.integers() | st.booleans() | st.none() | st.floats(allow_nan=False)
docs = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5) | st.tuples(inner, inner)
                    | st.dictionaries(keys, inner, max_size=5), max_leaves=40)


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a) == json.dumps(b)  # NaN != NaN, so compare their text


@settings(max_examples=400, deadline=None)
@given(docs, st.sampled_from([None, 0, 2, 4]))
def test_dumps_writes_what_json_writes(doc: Any, indent: int | None) -> None:
    assert dumps(doc, indent=indent) == json.dumps(doc, indent=indent)


@settings(max_examples=200, deadline=None)
@given(st.recursive(scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
                    max_leaves=40))
def test_sorted_keys_and_reading_back(doc: Any) -> None:
    assert dumps(doc, sort_keys=True) == json.dumps(doc, sort_keys=True)
    for indent in (None, 2):
        text = json.dumps(doc, indent=indent)
        assert _same(loads(text), json.loads(text))
        assert _same(loads(" \n" + text + "\t\r\n"), doc)


@pytest.mark.parametrize("text", ["", "   ", "{", "[1,]", "{\"a\" 1}", "nul", "1 2", "[] x", "\"\\x\"",
                                  "{\"a\":1}}", "\ufeff{}", "[1e]", "\"a\nb\""])
def test_bad_text_is_the_value_error_json_raises(text: str) -> None:
    with pytest.raises(ValueError) as ours:
        loads(text)
    with pytest.raises(ValueError) as theirs:
        json.loads(text)
    assert isinstance(ours.value, json.JSONDecodeError)
    assert type(theirs.value) is type(ours.value) or isinstance(theirs.value, ValueError)


def test_constants_and_big_numbers() -> None:
    doc = loads('[NaN, Infinity, -Infinity, 123456789012345678901234567890, 1.5e300, -0.0]')
    assert math.isnan(doc[0]) and doc[1:3] == [math.inf, -math.inf]
    assert doc[3] == 123456789012345678901234567890 and doc[4] == 1.5e300 and str(doc[5]) == "-0.0"


def test_what_json_cannot_write_is_a_type_error() -> None:
    for bad in ({1, 2}, {"a": object()}, {(1, 2): 3}, b"bytes"):
        with pytest.raises(TypeError):
            dumps(bad)
        with pytest.raises(TypeError):
            json.dumps(bad)


def test_no_json_package_on_the_proc_path_with_json_output() -> None:
    """The point of the module: `proc --json` and a calibration file's read leave json (and re) unimported."""
    code = ("import sys; from numamove.jsontext import dumps, loads; from numamove.calibration import digest;"
            "loads(dumps({'a': [1, 2.5, None, 'x\\udcff']}, indent=2)); digest({'nodes': []});"
            "print(sorted(m for m in ('json', 're', 'hashlib', 'enum') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_calibration_digest_is_unchanged() -> None:
    """Calibration files written before jsontext carry hashlib's digest of json.dumps: it must still match."""
    import hashlib

    from numamove.calibration import digest

    fp = {"nodes": [{"node": 0, "cpus": "0-3", "has_memory": True}, {"node": 1, "cpus": "", "has_memory": True}],
          "distances": [[10, 21], [21, 10]]}
    assert digest(fp) == hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]
