"""A process's address space: /proc/PID/maps (or smaps) parsed into mappings, their kinds, and their pages.

Which pages numamove hands to move_pages, and how:

* only mappings that can migrate: [vdso], [vvar], [vsyscall] and VM_IO/VM_PFNMAP
  mappings (VmFlags ``io``/``pf``) are skipped, and so are mappings with no resident pages;
* only present pages (/proc/PID/pagemap bit 63): a reserved but untouched range costs nothing;
* one address per huge page: hugetlb mappings step by their KernelPageSize, and a
  2 MiB block of an anonymous mapping that /proc/kpageflags shows as a THP head is
  passed once (a 4 KiB address inside a THP breaks the kernel's batching). Reading
  PFNs and kpageflags needs root; without it THPs are passed as 4 KiB pages, which
  still moves them, less efficiently. The pagemap scan itself is numamove.scan's, in C.
"""

from __future__ import annotations

from .errors import UsageError
from .text import open_text

TYPE_CHECKING = False  # typing's own constant to mypy; collections.abc builds collections (~2 ms)
if TYPE_CHECKING:
    from collections.abc import Iterable

BASE = 4096
HUGE = 2 << 20
_SIZES = frozenset(("KernelPageSize", "Rss", "AnonHugePages", "Shared_Hugetlb", "Private_Hugetlb"))
KINDS = ("anon", "heap", "stack", "file", "shm")
SPECIAL = ("[vdso]", "[vvar]", "[vsyscall]", "[vvar_vclock]", "[uprobes]")


class Mapping:
    """One VMA as smaps shows it."""

    __slots__ = ("start", "end", "perms", "path", "kernel_page_size", "rss", "anon_huge", "vmflags")

    def __init__(self, start: int, end: int, perms: str, path: str, kernel_page_size: int = BASE,
                 rss: int | None = 0, anon_huge: int = 0, vmflags: frozenset[str] = frozenset()) -> None:
        self.start = start
        self.end = end
        self.perms = perms
        self.path = path
        self.kernel_page_size = kernel_page_size
        self.rss = rss  # bytes; None when read from maps (not known)
        self.anon_huge = anon_huge
        self.vmflags = vmflags

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
        """anon, heap, stack, file, shm or special (collect() asks once per mapping: a process may have
        tens of thousands, so the common cases, an anonymous or a file mapping, are decided first)."""
        p = self.path
        if not p:
            return "anon"
        if p[0] == "/":
            if p.startswith(("/dev/shm/", "/SYSV", "/memfd:", "/dev/hugepages/")) or (
                    self.shared and ("(deleted)" in p or self.hugetlb)):
                return "shm"  # hugetlbfs files mapped shared are shared memory wherever they are mounted
            return "anon" if p.startswith("/anon_hugepage") else "file"
        if p == "[heap]":
            return "heap"
        if p.startswith("[stack"):
            return "stack"
        if p.startswith("[anon"):
            return "anon"
        return "special"

    def skip_reason(self, kind: str | None = None) -> str | None:
        """Why this mapping is not migrated, or None (kind: self.kind, when the caller has it)."""
        if (kind or self.kind) == "special" or self.path in SPECIAL:
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
    with open_text(f"{proc}/{pid}/smaps") as fh:
        for line in fh:
            key, sep, rest = line.partition(":")
            if sep and " " not in key:  # "Rss:   12 kB"; a header's first word holds no colon
                if cur is None:
                    continue
                if key == "VmFlags":
                    cur.vmflags = frozenset(rest.split())
                elif key in _SIZES:
                    kb = int(rest.split()[0]) * 1024
                    if key == "KernelPageSize":
                        cur.kernel_page_size = kb
                    elif key == "AnonHugePages":
                        cur.anon_huge = kb
                    else:  # Rss; hugetlb pages are not in Rss: they have their own two lines
                        cur.rss = (cur.rss or 0) + kb
                continue
            cur = _header(line.split(None, 5))
            maps.append(cur)
    return maps


def _header(parts: list[str], rss: int | None = 0) -> Mapping:
    """A Mapping from the fields of a maps/smaps header line, "start-end perms offset dev inode [path]"
    split at most 5 times (the path may hold spaces)."""
    start, _, end = parts[0].partition("-")
    return Mapping(int(start, 16), int(end, 16), parts[1], parts[5].strip() if len(parts) > 5 else "", rss=rss)


# File systems whose files are never hugetlb and whose mappings the kernel never marks VM_IO (device
# nodes under /dev are sent to smaps by their path, wherever /dev is mounted).
PLAIN_FS = frozenset(("ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "9p", "nfs", "nfs4", "f2fs", "zfs",
                      "squashfs", "erofs", "vfat", "exfat", "ntfs3", "ceph", "ramfs", "overlay", "virtiofs"))


def mounts(path: str = "/proc/self/mountinfo") -> list[tuple[str, str, str, str]]:
    """(device as "8:1", root within the file system, mount point, file system type) of every mount
    in a mountinfo file, paths unescaped. Raises OSError when it cannot be read."""
    out = []
    with open_text(path) as fh:
        for line in fh:
            left, _, right = line.partition(" - ")
            f = left.split()
            if len(f) >= 5 and right:
                out.append((f[2], unescape(f[3]), unescape(f[4]), right.split()[0]))
    return out


def unescape(s: str) -> str:
    """mountinfo's octal escapes (\\040 for a space)."""
    if "\\" not in s:
        return s
    import re

    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def _mount_types(path: str, into: dict[str, str]) -> None:
    """Add to into each mount's device ("8:1", as mountinfo writes it) and file system type."""
    try:
        for dev, _root, _mp, fstype in mounts(path):
            into.setdefault(dev, fstype)
    except OSError:
        pass


def read_maps(pid: int, proc: str = "/proc") -> list[Mapping] | None:
    """The mappings from /proc/PID/maps (Rss unknown: None), or None where only smaps can tell them.

    smaps costs the kernel a walk of every page table of the process (12.5 ms per GiB of 4 KiB pages
    on the development host; maps 0.08 ms for the same process). What collect() needs beyond maps is
    which mappings are hugetlb (and their page size) and which are VM_IO/VM_PFNMAP (VM_PFNMAP ranges
    read as holes in pagemap anyway). Anonymous mappings (inode 0) are neither; a file mapping is
    neither when its file lives on a PLAIN_FS mount, found by device number in the target's
    mountinfo or numamove's own, and is not a device node under /dev. Anything else (hugetlbfs, the
    kernel's internal shmem and hugetlb mounts of memfd, SysV and shared anonymous memory, device
    files, an unknown device): None, and the caller reads smaps.

    Raises:
        ProcessLookupError/FileNotFoundError: the process does not exist (or exited).
        PermissionError: not allowed to read its maps.
    """
    with open_text(f"{proc}/{pid}/maps") as fh:
        text = fh.read()
    types: dict[str, str] | None = None
    plain: set[str] = set()  # devices as maps writes them ("08:01") found on a PLAIN_FS mount
    maps: list[Mapping] = []
    for line in text.splitlines():  # one line a mapping, and a process may have tens of thousands
        parts = line.split(None, 5)
        m = _header(parts, rss=None)
        if parts[4] != "0":  # the inode: a file mapping
            if m.path.startswith("/dev/") and not m.path.startswith("/dev/shm/"):
                return None  # a device node (VM_IO?) wherever /dev is mounted (a container's tmpfs /dev)
            dev = parts[3]
            if dev not in plain:
                if types is None:
                    types = {}
                    _mount_types(f"{proc}/{pid}/mountinfo", types)
                    _mount_types(f"{proc}/self/mountinfo", types)
                major, _, minor = dev.partition(":")
                if types.get(f"{int(major, 16)}:{int(minor, 16)}") not in PLAIN_FS:
                    return None
                plain.add(dev)
        maps.append(m)
    return maps


def parse_range(text: str) -> tuple[int, int]:
    """--range START-END in hex (0x optional), END exclusive."""
    import re

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
