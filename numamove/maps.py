"""A process's address space: /proc/PID/smaps parsed into mappings, their kinds, and their pages.

Which pages numamove hands to move_pages, and how:

* only mappings that can migrate: [vdso], [vvar], [vsyscall] and VM_IO/VM_PFNMAP
  mappings (VmFlags ``io``/``pf``) are skipped, and so are mappings with no resident pages;
* only present pages (/proc/PID/pagemap bit 63): a reserved but untouched range costs nothing;
* one address per huge page: hugetlb mappings step by their KernelPageSize, and a
  2 MiB block of an anonymous mapping that /proc/kpageflags shows as a THP head is
  passed once (a 4 KiB address inside a THP breaks the kernel's batching). Reading
  PFNs and kpageflags needs root; without it THPs are passed as 4 KiB pages, which
  still moves them, less efficiently.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from .errors import UsageError

BASE = 4096
HUGE = 2 << 20
KINDS = ("anon", "heap", "stack", "file", "shm")
SPECIAL = ("[vdso]", "[vvar]", "[vsyscall]", "[vvar_vclock]", "[uprobes]")
KPF_COMPOUND_HEAD = 15
KPF_THP = 22

_HEADER = re.compile(
    r"^([0-9a-f]+)-([0-9a-f]+)\s+(\S{4})\s+([0-9a-f]+)\s+(\S+)\s+(\d+)\s*(.*)$")


@dataclass
class Mapping:
    """One VMA as smaps shows it."""

    start: int
    end: int
    perms: str
    path: str
    kernel_page_size: int = BASE
    rss: int = 0
    anon_huge: int = 0
    vmflags: frozenset[str] = field(default_factory=frozenset)

    @property
    def length(self) -> int:
        return self.end - self.start

    @property
    def hugetlb(self) -> bool:
        return "ht" in self.vmflags

    @property
    def shared(self) -> bool:
        return "sh" in self.vmflags or self.perms[3] == "s"

    @property
    def kind(self) -> str:
        p = self.path
        if p == "[heap]":
            return "heap"
        if p.startswith("[stack"):
            return "stack"
        if p.startswith(("/dev/shm/", "/SYSV", "/memfd:", "/dev/hugepages/")) or (
                self.shared and p.startswith("/") and ("(deleted)" in p or self.hugetlb)):
            return "shm"  # hugetlbfs files mapped shared are shared memory wherever they are mounted
        if p == "" or p.startswith("[anon") or p.startswith("/anon_hugepage"):
            return "anon"
        if p.startswith("/"):
            return "file"
        return "special"

    def skip_reason(self) -> str | None:
        """Why this mapping is not migrated, or None."""
        if self.path in SPECIAL or self.kind == "special":
            return f"special mapping {self.path or '?'}"
        if "io" in self.vmflags or "pf" in self.vmflags:
            return "VM_IO/VM_PFNMAP mapping"
        if self.rss == 0:
            return "no resident pages"
        return None


def read_smaps(pid: int, proc: str = "/proc") -> list[Mapping]:
    """Parse /proc/PID/smaps.

    Raises:
        ProcessLookupError: the process does not exist (or exited).
        PermissionError: not allowed to read its smaps.
    """
    maps: list[Mapping] = []
    cur: Mapping | None = None
    with open(f"{proc}/{pid}/smaps") as fh:
        for line in fh:
            m = _HEADER.match(line)
            if m:
                cur = Mapping(int(m.group(1), 16), int(m.group(2), 16), m.group(3), m.group(7).strip())
                maps.append(cur)
                continue
            if cur is None:
                continue
            key, _, rest = line.partition(":")
            if key == "VmFlags":
                cur.vmflags = frozenset(rest.split())
            elif key in ("KernelPageSize", "Rss", "AnonHugePages", "Shared_Hugetlb", "Private_Hugetlb"):
                kb = int(rest.split()[0]) * 1024
                if key == "KernelPageSize":
                    cur.kernel_page_size = kb
                elif key == "AnonHugePages":
                    cur.anon_huge = kb
                else:  # hugetlb pages are not in Rss: they have their own two lines
                    cur.rss += kb
    return maps


def parse_range(text: str) -> tuple[int, int]:
    """--range START-END in hex (0x optional), END exclusive."""
    m = re.match(r"^(?:0x)?([0-9a-fA-F]+)-(?:0x)?([0-9a-fA-F]+)$", text.strip())
    if not m:
        raise UsageError(f"invalid range '{text}': use START-END in hex, e.g. 7f0000000000-7f0040000000")
    a, b = int(m.group(1), 16), int(m.group(2), 16)
    if b <= a:
        raise UsageError(f"invalid range '{text}': END must be above START")
    return a, b


def parse_only(text: str) -> frozenset[str]:
    kinds = frozenset(k.strip() for k in text.split(",") if k.strip())
    bad = sorted(kinds - set(KINDS))
    if bad or not kinds:
        raise UsageError(f"invalid --only '{text}': choose from {', '.join(KINDS)}")
    return kinds


@dataclass(frozen=True)
class Segment:
    """A piece of a mapping passed to move_pages with one page size."""

    start: int
    length: int
    page_size: int
    kind: str
    shared: bool
    thp: bool = False  # a THP block found via kpageflags: known present, one entry per 2 MiB

    @property
    def huge(self) -> bool:
        return self.page_size > BASE


def clip(m: Mapping, ranges: Iterable[tuple[int, int]] | None) -> list[tuple[int, int]]:
    """The parts of a mapping inside the --range list (all of it without one), page-aligned."""
    if not ranges:
        return [(m.start, m.end)]
    out = []
    ps = m.kernel_page_size
    for a, b in ranges:
        lo, hi = max(a, m.start), min(b, m.end)
        lo = lo - (lo - m.start) % ps
        hi = hi + (-(hi - m.start)) % ps
        if lo < hi:
            out.append((lo, min(hi, m.end)))
    return out


class PageFlags:
    """Reads /proc/PID/pagemap and /proc/kpageflags (the latter root only)."""

    def __init__(self, pid: int, proc: str = "/proc") -> None:
        self.pagemap = os.open(f"{proc}/{pid}/pagemap", os.O_RDONLY)
        try:
            self.kpageflags: int | None = os.open(f"{proc}/kpageflags", os.O_RDONLY)
        except OSError:
            self.kpageflags = None

    def entries(self, start: int, length: int) -> bytes:
        """Raw pagemap entries (8 bytes per 4 KiB page) of the range."""
        n = length // BASE
        return os.pread(self.pagemap, n * 8, (start // BASE) * 8)

    def is_thp_head(self, entry: int) -> bool:
        pfn = entry & ((1 << 55) - 1)
        if self.kpageflags is None or not (entry >> 63) or pfn == 0:
            return False
        raw = os.pread(self.kpageflags, 8, pfn * 8)
        if len(raw) < 8:
            return False
        flags = int.from_bytes(raw, "little")
        return bool(flags >> KPF_THP & 1) and bool(flags >> KPF_COMPOUND_HEAD & 1)

    def close(self) -> None:
        os.close(self.pagemap)
        if self.kpageflags is not None:
            os.close(self.kpageflags)


def segments_of(m: Mapping, lo: int, hi: int, pf: PageFlags | None) -> list[Segment]:
    """Split [lo, hi) of a mapping into 4 KiB and huge-page segments."""
    kind, shared = m.kind, m.shared
    if m.hugetlb:
        return [Segment(lo, hi - lo, m.kernel_page_size, kind, shared)]
    if m.anon_huge == 0 or pf is None or pf.kpageflags is None:
        return [Segment(lo, hi - lo, BASE, kind, shared)]
    segs: list[Segment] = []
    cur = lo
    block = lo + (-lo) % HUGE
    while block + HUGE <= hi:
        raw = pf.entries(block, BASE)
        if len(raw) == 8 and pf.is_thp_head(int.from_bytes(raw, "little")):
            if block > cur:
                segs.append(Segment(cur, block - cur, BASE, kind, shared))
            segs.append(Segment(block, HUGE, HUGE, kind, shared, thp=True))
            cur = block + HUGE
        block += HUGE
    if cur < hi:
        segs.append(Segment(cur, hi - cur, BASE, kind, shared))
    return _merge(segs)


def _merge(segs: list[Segment]) -> list[Segment]:
    out: list[Segment] = []
    for s in segs:
        if out and (out[-1].page_size, out[-1].thp) == (s.page_size, s.thp) and \
                out[-1].start + out[-1].length == s.start:
            p = out.pop()
            s = Segment(p.start, p.length + s.length, s.page_size, s.kind, s.shared, s.thp)
        out.append(s)
    return out
