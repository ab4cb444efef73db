"""Parsing of numactl-syntax lists ("0-2,4", "all") and human sizes ("1G").

One parser for every node and CPU list in numamove, so the CLI, the API and the
sysfs reader agree on the syntax.
"""

from __future__ import annotations

from .errors import NodeListError, SizeError

TYPE_CHECKING = False  # typing's own constant to mypy; collections.abc builds collections (~2 ms)
if TYPE_CHECKING:
    from collections.abc import Iterable


def _digits(s: str) -> bool:
    return s.isascii() and s.isdigit()


def parse_list(text: str, universe: Iterable[int] | None = None, what: str = "node") -> list[int]:
    """Parse a numactl-style list into sorted unique integers.

    Args:
        text: "0-2,4", "3", or "all" (needs ``universe``). Sysfs' empty cpulist is "".
        universe: every valid value; "all" expands to it and values outside it are
            rejected. ``None`` checks syntax only.
        what: the noun used in error messages ("node", "CPU").

    Returns:
        The sorted values.

    Raises:
        NodeListError: malformed text, a reversed range, or a value outside universe.
    """
    s = text.strip()
    allowed = None if universe is None else sorted(set(universe))
    if s == "all":
        if allowed is None:
            raise NodeListError(f"'all' needs a known set of {what}s")
        return allowed
    if s == "":
        return []
    out: set[int] = set()
    for part in s.split(","):
        # by hand, not with re: importing re costs every command's start-up ~6 ms
        first, dash, last = part.strip().partition("-")
        if not (_digits(first) and (not dash or _digits(last))):
            raise NodeListError(f"invalid {what} list '{text}': '{part}' is not N or N-M")
        lo = int(first)
        hi = int(last) if dash else lo
        if hi < lo:
            raise NodeListError(f"invalid {what} list '{text}': range {lo}-{hi} is reversed")
        out.update(range(lo, hi + 1))
    if allowed is not None:
        bad = sorted(out - set(allowed))
        if bad:
            have = format_list(allowed) or "none"
            raise NodeListError(f"{what} {bad[0]} does not exist (this machine has {what}s {have})")
    return sorted(out)


def format_list(values: Iterable[int]) -> str:
    """The compact numactl form of values: [0,1,2,4] -> "0-2,4"."""
    vals = sorted(set(values))
    parts: list[str] = []
    i = 0
    while i < len(vals):
        j = i
        while j + 1 < len(vals) and vals[j + 1] == vals[j] + 1:
            j += 1
        parts.append(str(vals[i]) if i == j else f"{vals[i]}-{vals[j]}")
        i = j + 1
    return ",".join(parts)


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """Parse "1G", "512M", "4096", "1.5GiB" into bytes (binary units).

    Raises:
        SizeError: not a size, or not positive.
    """
    import re

    m = re.match(r"^(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B?)?$", text.strip(), re.I)
    if not m:
        raise SizeError(f"invalid size '{text}': use a number with an optional K, M, G or T suffix")
    n = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if n <= 0:
        raise SizeError(f"invalid size '{text}': must be greater than zero")
    return n


def format_bytes(n: float) -> str:
    """Human form with binary units: 1073741824 -> "1.00 GiB"."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
