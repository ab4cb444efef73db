"""json.dumps and json.loads for numamove's documents, without importing the json package.

`import json` costs 12-14 ms on the development VM (json.decoder and json.encoder import re, which
imports enum, functools and collections): more than a third of a small `numamove proc` run, and
every `--json` run and every run that reads a calibration paid it. CPython's own C accelerator,
_json, holds the parts that matter (the string escaper and the scanner) and imports nothing; this
module puts json's thin Python layer around them again. The text is the same as json.dumps' for every
document numamove writes (tests/test_jsontext.py compares them on generated documents), and loads
returns what json.loads returns, raising a ValueError (json.JSONDecodeError) for bad text.
Without _json (another Python implementation) both fall back to the json package.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

_c: Any
try:
    import _json as _c
except ImportError:  # pragma: no cover - CPython always has it
    _c = None
_quote: Callable[[str], str] | None = _c.encode_basestring_ascii if _c is not None else None

_INF = float("inf")
_CONSTANTS = {"-Infinity": -_INF, "Infinity": _INF, "NaN": float("nan")}


def _float(o: float) -> str:
    if o != o:
        return "NaN"
    if o == _INF:
        return "Infinity"
    if o == -_INF:
        return "-Infinity"
    return float.__repr__(o)


def _key(k: Any) -> str:
    if isinstance(k, str):
        return k
    if k is True:
        return "true"
    if k is False:
        return "false"
    if k is None:
        return "null"
    if isinstance(k, int):
        return int.__repr__(k)
    if isinstance(k, float):
        return _float(k)
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(k).__name__}")


def dumps(obj: Any, indent: int | None = None, sort_keys: bool = False) -> str:
    """json.dumps(obj, indent=indent, sort_keys=sort_keys), ensure_ascii and NaN as json writes them."""
    if _quote is None:  # pragma: no cover
        import json

        return json.dumps(obj, indent=indent, sort_keys=sort_keys)
    out: list[str] = []
    item_sep = "," if indent is not None else ", "
    pad = " " * indent if indent is not None else None

    def enc(o: Any, level: int) -> None:
        if isinstance(o, str):
            out.append(_quote(o))
        elif o is None:
            out.append("null")
        elif o is True:
            out.append("true")
        elif o is False:
            out.append("false")
        elif isinstance(o, int):
            out.append(int.__repr__(o))
        elif isinstance(o, float):
            out.append(_float(o))
        elif isinstance(o, (list, tuple)):
            if not o:
                out.append("[]")
                return
            nl = "" if pad is None else "\n" + pad * (level + 1)
            out.append("[" + nl)
            for i, v in enumerate(o):
                if i:
                    out.append(item_sep + nl)
                enc(v, level + 1)
            out.append("]" if pad is None else "\n" + pad * level + "]")
        elif isinstance(o, dict):
            if not o:
                out.append("{}")
                return
            nl = "" if pad is None else "\n" + pad * (level + 1)
            out.append("{" + nl)
            items = sorted(o.items()) if sort_keys else o.items()
            for i, (k, v) in enumerate(items):
                if i:
                    out.append(item_sep + nl)
                out.append(_quote(_key(k)) + ": ")
                enc(v, level + 1)
            out.append("}" if pad is None else "\n" + pad * level + "}")
        else:
            raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")

    enc(obj, 0)
    return "".join(out)


class _Context:
    """What _json's scanner reads from json.JSONDecoder: its defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = _CONSTANTS.__getitem__


_scan: Callable[[str, int], tuple[Any, int]] | None = _c.make_scanner(_Context()) if _c is not None else None
_SPACE = " \t\n\r"


def loads(text: str) -> Any:
    """json.loads(text) for a str; a ValueError (json.JSONDecodeError, as json raises it) for bad text."""
    if _scan is None:  # pragma: no cover
        import json

        return json.loads(text)
    n = len(text)
    i = 0
    while i < n and text[i] in _SPACE:
        i += 1
    try:
        obj, end = _scan(text, i)
    except StopIteration as exc:
        raise _error("Expecting value", text, exc.value) from None
    j = end
    while j < n and text[j] in _SPACE:
        j += 1
    if j != n:
        raise _error("Extra data", text, end)
    return obj


def _error(msg: str, text: str, pos: int) -> ValueError:
    from json import JSONDecodeError  # only for bad text

    return JSONDecodeError(msg, text, pos)
