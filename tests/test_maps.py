"""Parsing /proc/PID/smaps and selecting pages, on text and on this process."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import pytest

from numamove.errors import UsageError
from numamove.maps import Mapping, clip, parse_only, parse_range, read_smaps

SMAPS = """\
55d0c0000000-55d0c0021000 rw-p 00000000 00:00 0                          [heap]
Rss:                 132 kB
KernelPageSize:        4 kB
AnonHugePages:         0 kB
VmFlags: rd wr mr mw me ac
7f0000000000-7f0000400000 rw-p 00000000 00:00 0
Rss:                4096 kB
KernelPageSize:        4 kB
AnonHugePages:      4096 kB
VmFlags: rd wr mr mw me ac hg
7f1000000000-7f1000200000 rw-s 00000000 00:05 123                        /dev/shm/feature-store
Rss:                2048 kB
KernelPageSize:        4 kB
AnonHugePages:         0 kB
VmFlags: rd wr sh mr mw me ms
7f2000000000-7f2000400000 rw-s 00000000 00:0f 9                          /anon_hugepage (deleted)
Rss:                   0 kB
KernelPageSize:     2048 kB
Shared_Hugetlb:        0 kB
Private_Hugetlb:    4096 kB
AnonHugePages:         0 kB
VmFlags: rd wr sh mr mw me ms de ht
7f3000000000-7f3000021000 r-xp 00000000 08:01 777                        /usr/lib/libc.so.6
Rss:                 100 kB
KernelPageSize:        4 kB
AnonHugePages:         0 kB
VmFlags: rd ex mr mw me
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
Rss:                  16 kB
KernelPageSize:        4 kB
AnonHugePages:         0 kB
VmFlags: rd wr mr mw me gd ac
7ffd10000000-7ffd10002000 r--p 00000000 00:00 0                          [vvar]
Rss:                   0 kB
KernelPageSize:        4 kB
AnonHugePages:         0 kB
VmFlags: rd mr pf io de dd
7ffd20000000-7ffd20010000 rw-s 00000000 00:06 5                          /dev/mem
Rss:                  64 kB
KernelPageSize:        4 kB
AnonHugePages:         0 kB
VmFlags: rd wr sh io pf
"""


@pytest.fixture()
def fake_proc(tmp_path: Path) -> str:
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "smaps").write_text(SMAPS)
    return str(tmp_path)


def test_kinds_sizes_and_skips(fake_proc: str) -> None:
    """Each mapping gets its kind, page size, THP bytes, and a skip reason where it cannot move."""
    maps = read_smaps(42, fake_proc)
    assert [m.kind for m in maps] == ["heap", "anon", "shm", "shm", "file", "stack", "special", "file"]
    assert maps[1].anon_huge == 4 << 20 and not maps[1].shared
    assert maps[2].shared and maps[3].hugetlb and maps[3].kernel_page_size == 2 << 20
    assert maps[3].rss == 4 << 20  # hugetlb pages count from their own lines, not Rss
    assert [m.skip_reason() for m in maps][:6] == [None] * 6
    assert "special mapping" in (maps[6].skip_reason() or "")
    assert maps[7].skip_reason() == "VM_IO/VM_PFNMAP mapping"


def test_clip_to_ranges_is_page_aligned() -> None:
    """--range clips a mapping and widens to whole pages of the mapping's page size."""
    m = Mapping(0x10000, 0x20000, "rw-p", "")
    assert clip(m, None) == [(0x10000, 0x20000)]
    assert clip(m, [(0x10800, 0x12001)]) == [(0x10000, 0x13000)]
    assert clip(m, [(0x0, 0x1000)]) == []
    h = Mapping(0x200000, 0x800000, "rw-s", "/anon_hugepage (deleted)", kernel_page_size=0x200000)
    assert clip(h, [(0x300000, 0x300001)]) == [(0x200000, 0x400000)]


@pytest.mark.parametrize("text, want", [("7f00-7f10", (0x7F00, 0x7F10)), ("0x1000-0x2000", (0x1000, 0x2000))])
def test_parse_range(text: str, want: tuple[int, int]) -> None:
    """--range takes hex START-END."""
    assert parse_range(text) == want


@pytest.mark.parametrize("text", ["", "1000", "2000-1000", "zz-10", "1000-1000"])
def test_parse_range_rejects(text: str) -> None:
    """Malformed or empty ranges are usage errors."""
    with pytest.raises(UsageError):
        parse_range(text)


def test_parse_only() -> None:
    """--only takes known kinds only."""
    assert parse_only("anon,heap") == frozenset({"anon", "heap"})
    with pytest.raises(UsageError, match="choose from"):
        parse_only("anon,dogs")


def test_this_process_pages_are_collected_and_located() -> None:
    """collect() finds a private mapping's present pages only, each placed on a node."""
    from numamove.scan import collect

    m = mmap.mmap(-1, 64 * 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for i in range(0, 64 * 4096, 2 * 4096):  # touch every other page
        m[i] = 1
    import ctypes

    addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
    ps = collect(os.getpid(), [(addr, addr + 64 * 4096)], frozenset({"anon"}))
    assert ps.count == 32
    counts = ps.tally()
    assert all(node >= 0 for node, _, _ in counts)
    assert sum(p for p, _ in counts.values()) == 32
    m.close()


@pytest.mark.parametrize("path, perms, flags, kind", [
    ("", "rw-p", "", "anon"),
    ("[heap]", "rw-p", "", "heap"),
    ("[stack]", "rw-p", "", "stack"),
    ("[stack:1234]", "rw-p", "", "stack"),  # a thread's stack, as kernels before 4.5 named it
    ("[anon:jemalloc]", "rw-p", "", "anon"),  # named with PR_SET_VMA_ANON_NAME
    ("[anon_shmem:cache]", "rw-s", "sh", "anon"),
    ("[vdso]", "r-xp", "", "special"),
    ("[vvar]", "r--p", "pf io", "special"),
    ("anon_inode:[perf_event]", "r--s", "sh", "special"),
    ("/anon_hugepage", "rw-p", "ht", "anon"),  # private MAP_HUGETLB
    ("/anon_hugepage (deleted)", "rw-s", "sh ht", "shm"),  # shared MAP_HUGETLB
    ("/dev/shm/buf", "rw-s", "sh", "shm"),
    ("/dev/shm/buf", "r--p", "", "shm"),
    ("/SYSV0000abcd (deleted)", "rw-s", "sh", "shm"),
    ("/memfd:pool (deleted)", "rw-s", "sh", "shm"),
    ("/dev/hugepages/f", "rw-s", "sh ht", "shm"),
    ("/usr/lib/x86_64-linux-gnu/libc.so.6", "r-xp", "", "file"),
    ("/srv/data/file with spaces", "rw-s", "sh", "file"),
    ("/tmp/gone (deleted)", "rw-s", "sh", "shm"),  # a shared mapping of an unlinked file: shared memory
    ("/tmp/gone (deleted)", "r--p", "", "file"),
    ("/mnt/huge/f", "rw-s", "sh ht", "shm"),  # hugetlbfs mounted anywhere, mapped shared
    ("/mnt/huge/f", "rw-p", "ht", "file"),
])
def test_every_kind_of_mapping_path(path: str, perms: str, flags: str, kind: str) -> None:
    """Mapping.kind for each form of path the kernel writes in maps (collect() asks it once a mapping, and
    --only, the report's kinds and which mappings may hold THPs follow it)."""
    m = Mapping(0x1000, 0x2000, perms, path, rss=None, vmflags=frozenset(flags.split()))
    assert m.kind == kind
    assert (m.skip_reason(kind) is not None) == (kind == "special") == (m.skip_reason() is not None)
