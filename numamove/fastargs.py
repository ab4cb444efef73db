"""The common forms of `numamove proc` and `numamove file` parsed without click.

A strict subset of what click accepts for each: PIDs or paths, the options below as `--opt VALUE`
or `--opt=VALUE`, and the flags on their own. Anything else (--help, `--`, a combined
`-qv`, an unknown option, a value that starts with '-', a number click would have to
convert in a way this parser does not, an option whose value is missing) gives None, and
the click CLI parses the command line instead, with its usage errors. For every command
line this parser accepts, it returns exactly the parameters click would pass to `proc` or
`file` (tests/test_fastargs.py checks that on generated command lines).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing's own constant to mypy; importing typing costs start-up ~4 ms
if TYPE_CHECKING:
    from typing import Any


FLAG, TEXT, MULTI = "flag", "text", "multi"
POLICIES = ("push", "pull", "auto")

# option -> (parameter, kind): kind is FLAG, TEXT, MULTI, a tuple of choices, or (type, low, high).
# The options proc and file share, with their defaults: one spec for both commands.
COMMON_OPTIONS: dict[str, tuple[str, Any]] = {
    "--to": ("to_text", TEXT),
    "--from": ("from_text", TEXT),
    "--threads": ("threads_text", TEXT),
    "--policy": ("policy", POLICIES),
    "--dry-run": ("dry_run", FLAG),
    "-q": ("quiet", FLAG),
    "--quiet": ("quiet", FLAG),
    "--json": ("as_json", FLAG),
}
COMMON_DEFAULTS: dict[str, Any] = {
    "to_text": None, "from_text": None, "threads_text": "auto", "policy": "auto", "dry_run": False,
    "quiet": False, "as_json": False,
}

PROC_OPTIONS: dict[str, tuple[str, Any]] = {
    **COMMON_OPTIONS,
    "--name": ("name", TEXT),
    "--range": ("ranges", MULTI),
    "--only": ("only", TEXT),
    "--all": ("move_all", FLAG),
    "--batch": ("batch", (int, 1, 1 << 24)),
    "--max-pause": ("max_pause", (float, 0.1, 60000.0)),
    "--rate": ("rate", TEXT),
    "--cgroup": ("cgroup", TEXT),
    "--unit": ("unit", TEXT),
    "--set-mems": ("set_mems", FLAG),
    "--wait": ("wait", FLAG),
    "-v": ("verbose", FLAG),
    "--verbose": ("verbose", FLAG),
}
PROC_DEFAULTS: dict[str, Any] = {
    **COMMON_DEFAULTS, "pids": (), "name": None, "ranges": (), "only": None, "move_all": False, "batch": None,
    "max_pause": None, "rate": None, "cgroup": None, "unit": None, "set_mems": False, "wait": False,
    "verbose": False,
}

FILE_OPTIONS: dict[str, tuple[str, Any]] = {
    **COMMON_OPTIONS,
    "--copy": ("do_copy", FLAG),
    "--output": ("output", TEXT),
}
FILE_DEFAULTS: dict[str, Any] = {**COMMON_DEFAULTS, "paths": (), "do_copy": False, "output": None}


def _number(text: str, kind: tuple[type, float, float]) -> float | int | None:
    typ, low, high = kind
    digits = text.replace(".", "", 1) if typ is float else text
    if not digits.isascii() or not digits.isdigit():
        return None  # signs, spaces, exponents, underscores: click's conversion decides
    value = typ(text)
    return value if low <= value <= high else None


def proc_params(argv: list[str]) -> dict[str, Any] | None:
    """The parameters of `proc` for argv (what follows `proc`), or None to leave it to click."""
    params = _parse(argv, PROC_OPTIONS, PROC_DEFAULTS)
    if params is None:
        return None
    params["pids"] = params.pop("_positional")
    params["ranges"] = params.pop("_multi")
    return params


def file_params(argv: list[str]) -> dict[str, Any] | None:
    """The parameters of `file` for argv (what follows `file`), or None to leave it to click."""
    params = _parse(argv, FILE_OPTIONS, FILE_DEFAULTS)
    if params is None or not params["_positional"]:
        return None  # PATH... is required: click says so
    params["paths"] = params.pop("_positional")
    del params["_multi"]
    return params


def _parse(argv: list[str], options: dict[str, tuple[str, Any]], defaults: dict[str, Any]) -> dict[str, Any] | None:
    params = dict(defaults)
    positional: list[str] = []
    multi: list[str] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        i += 1
        if not tok.startswith("-"):
            positional.append(tok)
            continue
        name, eq, value = tok.partition("=") if tok.startswith("--") else (tok, "", "")
        spec = options.get(name)
        if spec is None:
            return None
        param, kind = spec
        if kind == FLAG:
            if eq:
                return None
            params[param] = True
            continue
        if not eq:
            if i >= len(argv) or argv[i].startswith("-"):
                return None
            value = argv[i]
            i += 1
        if kind == MULTI:
            multi.append(value)
        elif kind == TEXT:
            params[param] = value
        elif kind == POLICIES:
            if value not in POLICIES:
                return None
            params[param] = value
        else:
            number = _number(value, kind)
            if number is None:
                return None
            params[param] = number
    if params["to_text"] is None:
        return None  # --to is required: click says so
    params["_positional"] = tuple(positional)
    params["_multi"] = tuple(multi)
    return params
