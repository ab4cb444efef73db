"""The calibration file: what `numamove calibrate` measured, and whether it fits this machine.

The seed patch leaves push versus pull to a knob ("a boot time benchmark might be
needed to decide"); numamove decides by measuring.  ``numamove calibrate`` writes,
for each ordered pair of memory nodes and each engine (``copy``: the pinned memcpy
engine; ``move``: move_pages batches), the best thread count and CPU placement for
push and for pull, and which direction won.  ``--policy auto`` and ``--threads auto``
read it back here.

A calibration is used only when its topology fingerprint (nodes, their CPUs and
memory, the distance matrix) equals this machine's.  A missing file means the
patch's defaults; a corrupt or stale one is ignored with a warning, never fatal.

Where it lives: ``$NUMAMOVE_CALIBRATION`` when set; otherwise root writes
/var/lib/numamove/calibration.json and other users ``$XDG_CACHE_HOME/numamove/``
(``~/.cache/numamove/``); readers try their own file first, then the system one.
Nothing here measures or touches the machine beyond reading these files, so
every rule is tested on made-up topologies.
"""

from __future__ import annotations

import os

from .nodelist import format_list, parse_list

TYPE_CHECKING = False  # typing's own constant to mypy; importing typing costs start-up ~4 ms
if TYPE_CHECKING:
    from typing import Any

    from .topology import Topology

SCHEMA = "numamove-calibration/1"
SYSTEM_PATH = "/var/lib/numamove/calibration.json"
ENV = "NUMAMOVE_CALIBRATION"
ENGINES = ("copy", "move")
DIRECTIONS = ("push", "pull")
CALLER = "caller"  # the move engine's one unpinned thread: a direction of its own in the file
PLACEMENTS = ("packed", "spread")
UNPINNED = "unpinned"  # the caller's placement


def user_path() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "numamove", "calibration.json")


def default_output() -> str:
    """Where `numamove calibrate` writes without --output."""
    env = os.environ.get(ENV)
    if env:
        return env
    return SYSTEM_PATH if os.geteuid() == 0 else user_path()


def search_paths() -> list[str]:
    """Where readers look, first hit wins."""
    env = os.environ.get(ENV)
    if env:
        return [env]
    return ([] if os.geteuid() == 0 else [user_path()]) + [SYSTEM_PATH]


def fingerprint(topo: Topology) -> dict[str, Any]:
    """What a calibration depends on: nodes, their CPUs and memory, and the distances."""
    return {
        "nodes": [{"node": n, "cpus": format_list(topo.nodes[n].cpus),
                   "has_memory": topo.nodes[n].has_memory} for n in topo.ids],
        "distances": [[topo.distance(a, b) for b in topo.ids] for a in topo.ids],
    }


def digest(fp: dict[str, Any]) -> str:
    from .jsontext import dumps

    return _sha256_hex(dumps(fp, sort_keys=True).encode())[:16]


def _sha256_hex(data: bytes) -> str:
    """hashlib.sha256's hex digest, from CPython's built-in module where it has one: hashlib loads
    OpenSSL (~5 ms of every run that reads a calibration); the digest is the same."""
    mod: Any
    try:
        import _sha256 as mod  # type: ignore[import-not-found,no-redef]  # Python 3.11 (3.12: _sha2)
    except ImportError:
        try:
            import _sha2 as mod  # type: ignore[import-not-found,no-redef]
        except ImportError:
            import hashlib as mod
    return str(mod.sha256(data).hexdigest())


class Setting:
    """The best measured way to run one direction: threads and their CPUs."""

    __slots__ = ("threads", "placement", "cpus", "cpu_node", "gbps")

    def __init__(self, threads: int, placement: str, cpus: tuple[int, ...], cpu_node: int | None,
                 gbps: float) -> None:
        self.threads = threads
        self.placement = placement  # packed or spread (the same CPUs where there is one L3 domain), or unpinned
        self.cpus = cpus  # empty when unpinned
        self.cpu_node = cpu_node  # None when unpinned
        self.gbps = gbps

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Setting) and all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    def __repr__(self) -> str:
        return "Setting(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__) + ")"

    def to_json(self) -> dict[str, Any]:
        return {"threads": self.threads, "placement": self.placement, "cpus": format_list(self.cpus),
                "cpu_node": self.cpu_node, "gbps": round(self.gbps, 4)}

    @classmethod
    def from_json(cls, doc: dict[str, Any], direction: str = "push") -> Setting:
        placement = str(doc["placement"])
        if direction == CALLER:
            if placement != UNPINNED or doc["cpus"] != "" or doc["cpu_node"] is not None or doc["threads"] != 1:
                raise ValueError("the caller setting is one unpinned thread (no CPUs, no node)")
            return cls(1, UNPINNED, (), None, float(doc["gbps"]))
        if placement not in PLACEMENTS:
            raise ValueError(f"unknown placement {placement!r}")
        cpus = tuple(parse_list(str(doc["cpus"]), None, "CPU"))
        threads = int(doc["threads"])
        if not 1 <= threads <= 32 or len(cpus) < threads:
            raise ValueError(f"bad thread count {threads} for CPUs {doc['cpus']}")
        return cls(threads, placement, cpus, int(doc["cpu_node"]), float(doc["gbps"]))


class Choice:
    """For one (source, destination, engine): the best setting per direction, and the winner."""

    __slots__ = ("src", "dst", "engine", "best", "settings")

    def __init__(self, src: int, dst: int, engine: str, best: str, settings: dict[str, Setting]) -> None:
        self.src = src
        self.dst = dst
        self.engine = engine
        self.best = best  # push, pull, or caller (move engine only)
        self.settings = settings

    def best_pinned(self) -> str | None:
        """The faster of push and pull (push on a tie), for when pinned threads are asked for."""
        pinned = [d for d in DIRECTIONS if d in self.settings]
        return max(pinned, key=lambda d: (self.settings[d].gbps, d == "push")) if pinned else None

    def describe(self) -> str:
        parts = [f"{d} {s.gbps:.2f} GB/s ({s.threads} thread(s), {s.placement})"
                 for d, s in sorted(self.settings.items())]
        return f"node {self.src} -> node {self.dst} ({self.engine}): {', '.join(parts)}"


class Calibration:
    """A calibration file that fits this machine: the choice per (source, destination, engine)."""

    __slots__ = ("path", "created", "digest", "choices")

    def __init__(self, path: str, created: str, digest: str,
                 choices: dict[tuple[int, int, str], Choice] | None = None) -> None:
        self.path = path
        self.created = created
        self.digest = digest
        self.choices = choices if choices is not None else {}

    def choice(self, src: int, dst: int, engine: str) -> Choice | None:
        return self.choices.get((src, dst, engine))

    @property
    def label(self) -> str:
        return f"calibration {self.path} ({self.created})"


class Loaded:
    """The outcome of looking for a calibration: the one to use (or None), and why."""

    __slots__ = ("calibration", "why", "warning")

    def __init__(self, calibration: Calibration | None, why: str, warning: str | None = None) -> None:
        self.calibration = calibration
        self.why = why
        self.warning = warning


def parse(doc: Any, path: str) -> Calibration:
    """A Calibration from the file's JSON; ValueError/KeyError/TypeError when malformed."""
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise ValueError(f"not a {SCHEMA} document")
    choices: dict[tuple[int, int, str], Choice] = {}
    for pair in doc["pairs"]:
        src, dst = int(pair["src"]), int(pair["dst"])
        for engine, entry in pair["engines"].items():
            if engine not in ENGINES:
                raise ValueError(f"unknown engine {engine!r}")
            best = entry.get("best")
            if best is None:  # the budget ran out before this engine was measured
                continue
            known = DIRECTIONS + (CALLER,) if engine == "move" else DIRECTIONS
            if best not in known:
                raise ValueError(f"unknown direction {best!r} for the {engine} engine")
            settings = {d: Setting.from_json(s, d) for d, s in entry["settings"].items() if d in known}
            if best not in settings:
                raise ValueError(f"best direction {best} has no setting")
            choices[(src, dst, engine)] = Choice(src, dst, engine, best, settings)
    return Calibration(path, str(doc["created"]), str(doc["fingerprint_digest"]), choices)


def load(topo: Topology, path: str | os.PathLike[str] | None = None) -> Loaded:
    """The calibration that fits this machine, if any; never raises for a bad file."""
    paths = [os.fspath(path)] if path is not None else search_paths()
    for p in paths:
        try:
            with open(p) as fh:
                text = fh.read()
        except FileNotFoundError:
            continue
        except OSError as exc:
            return Loaded(None, "the patch's defaults", f"ignoring calibration {p}: {exc.strerror}")
        from .jsontext import loads

        try:
            doc = loads(text)
            cal = parse(doc, p)
            theirs = digest(doc["fingerprint"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return Loaded(None, "the patch's defaults",
                          f"ignoring calibration {p}: corrupt ({type(exc).__name__}: {exc}); "
                          "run 'numamove calibrate' again")
        here = digest(fingerprint(topo))
        if theirs != here or cal.digest != theirs:
            return Loaded(None, "the patch's defaults",
                          f"ignoring calibration {p}: it was made for another topology "
                          f"(fingerprint {theirs}, this machine {here}); run 'numamove calibrate' again")
        return Loaded(cal, f"{cal.label}")
    where = " or ".join(str(p) for p in paths)
    return Loaded(None, f"no calibration ({where} absent): the patch's defaults")


class CalibrationWarning(UserWarning):
    """A calibration file was found but ignored (corrupt, or made for another topology)."""


_cache: dict[tuple[str, float, str], Loaded] = {}
_warned: set[str] = set()


def load_cached(topo: Topology) -> Loaded:
    """load() for library calls made many times: re-read only when the file changes."""
    paths = search_paths()
    stamp = 0.0
    for p in paths:
        try:
            stamp = os.stat(p).st_mtime
            break
        except OSError:
            continue
    key = (":".join(paths), stamp, repr(fingerprint(topo)))
    if key not in _cache:
        _cache.clear()
        _cache[key] = load(topo)
    return _cache[key]


def for_library(topo: Topology) -> Loaded:
    """load_cached() for the Python API: a stale or corrupt file warns once (CalibrationWarning)."""
    loaded = load_cached(topo)
    if loaded.warning and loaded.warning not in _warned:
        _warned.add(loaded.warning)
        import warnings

        warnings.warn(loaded.warning, CalibrationWarning, stacklevel=3)
    return loaded
