#!/usr/bin/env python3
"""Boot real multi-node NUMA kernels in QEMU and run the multi-node tests inside them.

The host has one NUMA node, so every behaviour that matters to numamove (pages on
another node, threads pinned to another node's CPUs, CPU-less memory nodes) is
tested in a guest.  The guest runs Debian's own kernel under TCG, sees the host's
root read-only over 9p and runs the project's virtual environment from it; results
come back through a second, writable 9p share.

Usage:
    python3 tests/vm/harness.py run [--topology two|five|all] [-k EXPR]
    python3 tests/vm/harness.py shell --topology two     # interactive guest shell
    python3 tests/vm/harness.py prepare                  # fetch and cache only
    python3 tests/vm/harness.py bench|bench-auto|bench-whole|bench-cgroup   # benchmarks (make bench)
    python3 tests/vm/harness.py bench-whole --shape wide --vcpus 8 --accel kvm -- --threads 1,2,4,8

Everything fetched is cached under .cache/vm/ (git-ignored); a second run reuses it.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import lzma
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "vm"
MODULES_WANTED = ["virtio_pci", "9pnet_virtio", "9p"]
BOOT_TIMEOUT_S = int(os.environ.get("NUMAMOVE_VM_TIMEOUT", "900"))
# the guest's init says "numamove-guest: up" about 10 s after QEMU starts; a guest silent for this
# long never booted (seen once: QEMU hung with an empty console) and is killed and booted again
STALL_S = 180


class HarnessError(Exception):
    """A guest could not be prepared or started."""


# --------------------------------------------------------------------------- topologies


@dataclass(frozen=True)
class GuestNode:
    node: int
    cpus: tuple[int, ...]
    mem_mib: int


@dataclass(frozen=True)
class Topology:
    name: str
    nodes: tuple[GuestNode, ...]
    distances: dict[tuple[int, int], int] = field(default_factory=dict)

    @property
    def ncpus(self) -> int:
        return sum(len(n.cpus) for n in self.nodes)

    @property
    def mem_mib(self) -> int:
        return sum(n.mem_mib for n in self.nodes)

    def distance(self, a: int, b: int) -> int:
        if a == b:
            return 10
        return self.distances.get((a, b), self.distances.get((b, a), 20))

    def to_json(self) -> dict[str, object]:
        ids = [n.node for n in self.nodes]
        return {
            "name": self.name,
            "nodes": [
                {"node": n.node, "cpus": list(n.cpus), "mem_mib": n.mem_mib,
                 "has_cpu": bool(n.cpus)}
                for n in self.nodes
            ],
            "distances": [[self.distance(a, b) for b in ids] for a in ids],
        }


def _two() -> Topology:
    return Topology("two", (GuestNode(0, (0,), 512), GuestNode(1, (1,), 512)), {(0, 1): 20})


def _five() -> Topology:
    nodes = tuple(GuestNode(i, (i,), 256) for i in range(4)) + (GuestNode(4, (), 256),)
    dist: dict[tuple[int, int], int] = {}
    for a in range(5):
        for b in range(a + 1, 5):
            dist[(a, b)] = 30 if b == 4 else 20
    return Topology("five", nodes, dist)


TOPOLOGIES = {"two": _two(), "five": _five()}
# for `make bench`: room for a 512 MiB workload on either node, and two CPUs on node 0 so two
# threads can migrate. No more vCPUs than the host's 2 cores: an overcommitted TCG guest stalls
# on lock-holder preemption, which would measure QEMU, not the migration. Node 1 is memory-only
# (a CXL expander's shape), so both directions run on node 0's CPUs, by the CPU-less fallback.
BENCH = Topology("bench", (GuestNode(0, (0, 1), 1536), GuestNode(1, (), 1536)), {(0, 1): 20})
# the CI guest's shape (one CPU a node) with the bench's memory: in 512 MiB nodes a 256 MiB workload moved
# into node 0, which also holds the kernel and every Python process, measured reclaim more than either tool
BENCH_TWO = Topology("two-bench", (GuestNode(0, (0,), 1536), GuestNode(1, (1,), 1536)), {(0, 1): 20})


def wide(vcpus: int, mem_mib: int) -> Topology:
    """Two nodes of vcpus vCPUs and mem_mib each: `bench-whole --shape wide`, for a machine with more cores
    than the development VM (issue #10's item 7: two nodes of 8 vCPUs in a KVM guest)."""
    return Topology(f"wide{vcpus}", (GuestNode(0, tuple(range(vcpus)), mem_mib),
                                     GuestNode(1, tuple(range(vcpus, 2 * vcpus)), mem_mib)), {(0, 1): 20})


KVM_GET_API_VERSION = 0xAE00


def kvm_problem(dev: str = "/dev/kvm", sysfs: str = "/sys") -> str | None:
    """Why QEMU could not use KVM here (None: it can): no device, no access, an API other than 12, or a KVM
    that is kvm-pvm. The development VM (a Firecracker guest, Linux 6.18-fc) has /dev/kvm from the kvm_pvm
    module: PVM runs guest kernels built for it, and Debian's stopped early in boot (2026-12-05, 2 of 2
    tries) with "KVM internal error. Suberror: 1 ... emulation failure" at a cmpxchg16b, then, with -cx16,
    at an xrstor, after 56 s of boot that TCG does in 10."""
    import fcntl

    if os.path.isdir(os.path.join(sysfs, "module", "kvm_pvm")):
        return f"{dev} is kvm-pvm's, which cannot run Debian's kernel: it stops with an emulation failure"
    try:
        fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return f"{dev}: {exc.strerror}"
    try:
        version = fcntl.ioctl(fd, KVM_GET_API_VERSION)
    except OSError as exc:
        return f"{dev}: KVM_GET_API_VERSION: {exc.strerror}"
    finally:
        os.close(fd)
    return None if version == 12 else f"{dev}: KVM API version {version}, not 12"


# --------------------------------------------------------------------------- fetching


def _run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)  # type: ignore[call-overload,no-any-return]
    except FileNotFoundError as exc:
        raise HarnessError(f"{cmd[0]} not found: run 'make deps' (installs Debian's packages)") from exc
    except subprocess.CalledProcessError as exc:
        raise HarnessError(f"{' '.join(cmd)} failed: {exc.stderr.strip()[-500:]}") from exc


def kernel_package() -> str:
    """Name of the kernel package that linux-image-amd64 currently depends on."""
    out = _run(["apt-cache", "depends", "linux-image-amd64"]).stdout
    m = re.search(r"Depends:\s*(linux-image-\S+)", out)
    if not m:
        raise HarnessError("apt-cache depends linux-image-amd64 named no kernel (run apt-get update)")
    return m.group(1)


def fetch_kernel() -> tuple[Path, Path]:
    """Download and unpack Debian's kernel package once; return (vmlinux, modules dir)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    pinned = CACHE / "kernel-package"
    pkg = pinned.read_text().strip() if pinned.exists() else kernel_package()
    kdir = CACHE / pkg
    vmlinux = kdir / "vmlinux"
    if not vmlinux.exists():
        debdir = CACHE / "debs"
        debdir.mkdir(exist_ok=True)
        debs = list(debdir.glob(f"{pkg}_*.deb"))
        if not debs:
            _run(["apt-get", "download", pkg], cwd=debdir)
            debs = list(debdir.glob(f"{pkg}_*.deb"))
        if not debs:
            raise HarnessError(f"apt-get download {pkg} produced no .deb")
        tmp = Path(tempfile.mkdtemp(dir=CACHE))
        _run(["dpkg-deb", "-x", str(debs[0]), str(tmp)])
        vmlinuz = next(tmp.glob("boot/vmlinuz-*"))
        (tmp / "vmlinux").write_bytes(extract_vmlinux(vmlinuz.read_bytes()))
        if kdir.exists():
            shutil.rmtree(kdir)
        tmp.rename(kdir)
    pinned.write_text(pkg + "\n")
    moddir = next((kdir / "lib" / "modules").iterdir())
    return vmlinux, moddir


def extract_vmlinux(bzimage: bytes) -> bytes:
    """The uncompressed ELF kernel inside a bzImage (xz payload): boots faster under TCG."""
    off = bzimage.find(b"\xfd7zXZ\x00")
    while off >= 0:
        dec = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        try:
            data = dec.decompress(bzimage[off:])
            if data[:4] == b"\x7fELF":
                return data
        except lzma.LZMAError:
            pass
        off = bzimage.find(b"\xfd7zXZ\x00", off + 1)
    raise HarnessError("no xz-compressed ELF kernel found in the bzImage")


def _modinfo_depends(data: bytes) -> list[str]:
    m = re.search(rb"(?:^|\x00)depends=([^\x00]*)\x00", data)
    if not m or not m.group(1):
        return []
    return m.group(1).decode().split(",")


def resolve_modules(moddir: Path, wanted: list[str]) -> list[tuple[str, bytes]]:
    """Modules in load order (dependencies first), decompressed."""
    index: dict[str, Path] = {}
    for p in moddir.rglob("*.ko*"):
        name = p.name.split(".ko")[0]
        index[name.replace("-", "_")] = p
    order: list[tuple[str, bytes]] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        key = name.replace("-", "_")
        if key in seen:
            return
        seen.add(key)
        path = index.get(key)
        if path is None:
            raise HarnessError(f"kernel module {name} not in {moddir}")
        raw = path.read_bytes()
        if path.name.endswith(".xz"):
            raw = lzma.decompress(raw)
        elif path.name.endswith(".gz"):
            raw = gzip.decompress(raw)
        elif path.name.endswith(".zst"):
            raw = _run_bytes(["zstd", "-dc", str(path)])
        for dep in _modinfo_depends(raw):
            visit(dep)
        order.append((key, raw))

    for w in wanted:
        visit(w)
    return order


def _run_bytes(cmd: list[str]) -> bytes:
    return subprocess.run(cmd, check=True, capture_output=True).stdout


def find_busybox() -> Path:
    for cand in ("/bin/busybox", "/usr/bin/busybox"):
        p = Path(cand)
        if p.exists():
            out = subprocess.run(["file", "-L", str(p)], capture_output=True, text=True).stdout \
                if shutil.which("file") else "statically"
            if "dynamically" not in out:
                return p
    raise HarnessError("a static busybox is needed: run 'make deps' (apt-get install busybox-static)")


INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules.order); do insmod /lib/modules/$m.ko || echo "numamove-guest: insmod $m failed"; done
mkdir -p /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 hostroot /newroot || { echo "numamove-guest: cannot mount host root"; poweroff -f; }
mount -t proc proc /newroot/proc
mount -t sysfs sys /newroot/sys
mount -t devtmpfs dev /newroot/dev
mount -t tmpfs -o size=60% tmpfs /newroot/tmp
mkdir -p /newroot/dev/shm /newroot/dev/pts /newroot/tmp/results
mount -t tmpfs tmpfs /newroot/dev/shm
mount -t tmpfs -o mode=755 tmpfs /newroot/run
mount -t devpts devpts /newroot/dev/pts
mount -t 9p -o trans=virtio,version=9p2000.L,cache=none,msize=262144 results /newroot/tmp/results
mount -t hugetlbfs none /newroot/dev/hugepages 2>/dev/null
# cgroup v2 with the cpuset and memory controllers for the groups' tests (as systemd mounts it)
mount -t cgroup2 none /newroot/sys/fs/cgroup && echo "+cpuset +memory" > /newroot/sys/fs/cgroup/cgroup.subtree_control || echo "numamove-guest: no cgroup2"
# the project itself, at its own path: visible even where it lives under the guest's fresh /tmp
proj=$(sed -n 's/.*numamove.project=\([^ ]*\).*/\1/p' /proc/cmdline)
mkdir -p "/newroot$proj" 2>/dev/null
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 project "/newroot$proj" || echo "numamove-guest: cannot mount the project"
echo "numamove-guest: up"
if [ -f /newroot/tmp/results/interactive ]; then
  chroot /newroot /bin/bash -l
else
  chroot /newroot /bin/sh /tmp/results/run.sh > /newroot/tmp/results/guest.log 2>&1
  echo $? > /newroot/tmp/results/rc
fi
# the kernel's whole log, every level: the console shows only errors (loglevel=4), and a soft lockup's
# or a warning's backtrace is printed below that level
dmesg > /newroot/tmp/results/dmesg.txt 2>&1
sync
echo "numamove-guest: done"
poweroff -f
"""


def _cpio_newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A newc cpio archive of (name, mode, data); directories have empty data."""
    out = io.BytesIO()
    ino = 1
    for name, mode, data in entries + [("TRAILER!!!", 0, b"")]:
        nb = name.encode() + b"\x00"
        nlink = 2 if stat.S_ISDIR(mode) else 1
        hdr = "070701" + "".join(f"{v:08x}" for v in (
            ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(nb), 0))
        out.write(hdr.encode() + nb)
        out.write(b"\x00" * ((4 - (110 + len(nb)) % 4) % 4))
        out.write(data)
        out.write(b"\x00" * ((4 - len(data) % 4) % 4))
        ino += 1
    return out.getvalue()


def build_initramfs(moddir: Path) -> Path:
    """A busybox initramfs carrying the kernel's own virtio and 9p modules."""
    target = CACHE / f"initramfs-{moddir.name}.cpio"
    mods = resolve_modules(moddir, MODULES_WANTED)
    entries: list[tuple[str, int, bytes]] = []
    for d in ("bin", "proc", "sys", "dev", "newroot", "lib", "lib/modules"):
        entries.append((d, stat.S_IFDIR | 0o755, b""))
    entries.append(("bin/busybox", stat.S_IFREG | 0o755, find_busybox().read_bytes()))
    entries.append(("init", stat.S_IFREG | 0o755, INIT.encode()))
    entries.append(("modules.order", stat.S_IFREG | 0o644, "\n".join(n for n, _ in mods).encode() + b"\n"))
    for name, raw in mods:
        entries.append((f"lib/modules/{name}.ko", stat.S_IFREG | 0o644, raw))
    blob = _cpio_newc(entries)
    if not target.exists() or target.read_bytes() != blob:
        target.write_bytes(blob)
    return target


def prepare() -> tuple[Path, Path]:
    if shutil.which("qemu-system-x86_64") is None:
        raise HarnessError("qemu-system-x86_64 not found: run 'make deps' (apt-get install qemu-system-x86)")
    vmlinux, moddir = fetch_kernel()
    return vmlinux, build_initramfs(moddir)


# --------------------------------------------------------------------------- running


def qemu_command(topo: Topology, vmlinux: Path, initrd: Path, results: Path, kvm: bool = False) -> list[str]:
    """kvm: hardware virtualization (-accel kvm, the host's CPU model), else TCG on every host thread."""
    accel = ["-accel", "kvm", "-cpu", "host"] if kvm else ["-accel", "tcg,thread=multi", "-cpu", "max"]
    cmd = [
        "qemu-system-x86_64", *accel, "-machine", "q35",
        "-m", f"{topo.mem_mib}M", "-smp", str(topo.ncpus),
        "-display", "none", "-no-reboot", "-monitor", "none",
        "-kernel", str(vmlinux), "-initrd", str(initrd),
        # watchdog_thresh=30: a soft lockup is reported after 60 s of one CPU in the kernel, not 20. The
        # detector's default is set for hardware; under TCG the kernel runs ~25x slower, and two clean-clone
        # CI runs on 2026-11-28 failed on "soft lockup - CPU#N stuck for 22s! [python:192]" (pytest's
        # own process, in test_destination_outside_cpuset_needs_set_mems) with every test passed: most
        # likely the stall norandmaps below removes (the same test had it in a later probe), not proven. A
        # lockup of a minute still fails the run, as does every other line of KERNEL_TROUBLE.
        # softlockup_all_cpu_backtrace: a lockup's report (kept in dmesg.txt) shows every CPU, so a CPU
        # spinning on a lock another holds shows both.
        # norandmaps (no address-space randomization in the guest): QEMU keys its translated code by a
        # block's guest virtual address as well as its physical page. With ASLR every process maps
        # libpython and libc somewhere else, so each of the suite's hundreds of Python processes has
        # its own translations of the same page-cache pages, and they pile up (QEMU frees them only
        # when its code buffer fills). A page QEMU holds translations for is write-protected to it:
        # every guest store into it goes through its self-modifying-code check until the last of those
        # translations is invalidated. Tests that move shared pages (--all, and every cpuset
        # migration, which the kernel runs with MPOL_MF_MOVE_ALL) free such text pages; the next
        # process to get them spent ~5 ms zeroing each 4 KiB page, byte by byte through that check
        # (rep stosb): host perf of QEMU in that stall was page_collection_lock, the code-bitmap check
        # and tcg_flush_jmp_cache; the guest's NMI backtraces were all clear_page_erms under a page
        # fault. That was the 20-40 s stall one test of each two-node run had. Without ASLR the
        # processes share one set of translations: in five two-node runs on 2026-11-28 (probe plugin
        # on), three without norandmaps took 253-271 s with one 23-40 s stall each, two with it
        # 197-198 s with none.
        "-append", "console=ttyS0 rdinit=/init numa_balancing=disable panic=-1 loglevel=4 watchdog_thresh=30 "
                   "softlockup_all_cpu_backtrace=1 norandmaps "
                   f"transparent_hugepage=madvise numamove.project={ROOT}",
        "-fsdev", "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap",
        "-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot,vectors=0",
        "-fsdev", f"local,id=project,path={ROOT},security_model=none,readonly=on,multidevs=remap",
        "-device", "virtio-9p-pci,fsdev=project,mount_tag=project,vectors=0",
        "-fsdev", f"local,id=results,path={results},security_model=none",
        "-device", "virtio-9p-pci,fsdev=results,mount_tag=results,vectors=0",
    ]
    for n in topo.nodes:
        # prealloc: the host backs all guest RAM at boot. Without it the first write to each guest page
        # faults on the host, and under TCG a move into pages no one had used since boot (the guest zeroes
        # each page it allocates: init_on_alloc) could spend seconds there: NMI backtraces of 3-5 s
        # move_pages calls all sat in clear_page_erms under alloc_migration_target, in 4 of 6 boots' first
        # move; with prealloc, none in 8 runs of the same probe
        cmd += ["-object", f"memory-backend-ram,id=m{n.node},size={n.mem_mib}M,prealloc=on"]
        spec = f"node,nodeid={n.node},memdev=m{n.node}"
        for c in n.cpus:
            spec += f",cpus={c}"
        cmd += ["-numa", spec]
    ids = [n.node for n in topo.nodes]
    for a in ids:
        for b in ids:
            if a < b:
                cmd += ["-numa", f"dist,src={a},dst={b},val={topo.distance(a, b)}"]
    return cmd


@dataclass
class GuestResult:
    topology: str
    rc: int | None
    tests: int
    failures: int
    errors: int
    skipped: int
    ran: list[str]
    seconds: float
    console: Path
    log: Path


KERNEL_TROUBLE = (b"Kernel panic", b"Oops:", b"BUG:", b"general protection fault", b"WARNING: CPU:",
                  b"kernel BUG at", b"Unable to handle kernel")


def kernel_trouble(console: Path) -> str | None:
    """The first line of the guest's console that says its kernel panicked, oopsed, hit a BUG or warned:
    numamove drives move_pages hard, so such a line fails the run and is never booted past."""
    try:
        data = console.read_bytes()
    except OSError:
        return None
    for line in data.splitlines():
        if any(k in line for k in KERNEL_TROUBLE):
            return line.decode(errors="replace").strip()
    return None


def kernel_report(dmesg: Path, trouble: str, lines: int = 80) -> str:
    """The kernel log from the line that reported trouble on: its backtrace and registers, which the
    console (loglevel=4) leaves out. Empty when the guest saved no log (it never got that far)."""
    try:
        log = dmesg.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    key = trouble.split("] ", 1)[-1][:60]  # the console's line without its timestamp
    for i, line in enumerate(log):
        if key and key in line:
            return "\n".join(log[i:i + lines])
    return ""


def pytest_command(pytest_args: list[str]) -> list[str]:
    """The guest's pytest run: only numa-marked tests, a JUnit report into the results share, and the
    slowest tests named (make test has a 15-minute budget, most of it in the guests)."""
    return ["-m", "pytest", "-p", "no:cacheprovider", "-m", "numa", "--junitxml=/tmp/results/junit.xml",
            "-o", "junit_family=xunit1", "-rs", "--durations=12", *pytest_args]


def run_guest(topo: Topology, pytest_args: list[str], interactive: bool = False,
              keep: Path | None = None, python_args: list[str] | None = None, kvm: bool = False) -> GuestResult:
    """Boot topo and run the project's Python with python_args (default: the numa tests) in it."""
    vmlinux, initrd = prepare()
    out_root = keep or (CACHE / "runs")
    out_root.mkdir(parents=True, exist_ok=True)
    results = Path(tempfile.mkdtemp(prefix=f"{topo.name}-", dir=out_root))
    results.chmod(0o777)
    (results / "topology.json").write_text(json.dumps(topo.to_json(), indent=1))
    py = ROOT / ".venv" / "bin" / "python"
    if not py.exists():
        raise HarnessError(f"{py} missing: run 'make build' first")
    env = {
        "PATH": f"{ROOT / '.venv' / 'bin'}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/tmp",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "NUMAMOVE_GUEST_TOPOLOGY": "/tmp/results/topology.json",
        "NUMAMOVE_GUEST": topo.name,
        "LANG": "C.UTF-8",
    }
    exports = "".join(f"export {k}='{v}'\n" for k, v in env.items())
    args = " ".join(_shq(a) for a in (python_args or pytest_command(pytest_args)))
    script = f"{exports}cd {_shq(str(ROOT))}\nexec {_shq(str(py))} {args}\n"
    (results / "run.sh").write_text(script)
    if interactive:
        (results / "interactive").write_text("1")
        (results / "profile.sh").write_text(exports + f"cd {_shq(str(ROOT))}\n")
    console = results / "console.log"
    cmd = qemu_command(topo, vmlinux, initrd, results, kvm)
    t0 = time.monotonic()
    if interactive:
        cmd = [c for c in cmd if c not in ("-display", "none")]
        i = cmd.index("-monitor")
        del cmd[i:i + 2]
        subprocess.run(cmd + ["-nographic"])
        return GuestResult(topo.name, None, 0, 0, 0, 0, [], time.monotonic() - t0, console, results)
    with open(console, "wb") as con:
        proc = subprocess.Popen(cmd + ["-serial", "stdio"], stdout=con, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            proc.wait(timeout=STALL_S)
        except subprocess.TimeoutExpired:
            if b"numamove-guest: up" not in console.read_bytes():
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                (results / "stalled").write_text(f"no sign of boot after {STALL_S}s: killed\n")
        try:
            proc.wait(timeout=max(1, BOOT_TIMEOUT_S - STALL_S))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            (results / "timeout").write_text(f"killed after {BOOT_TIMEOUT_S}s\n")
    secs = time.monotonic() - t0
    rc_file = results / "rc"
    rc = int(rc_file.read_text().strip()) if rc_file.exists() else None
    tests = failures = errors = skipped = 0
    ran: list[str] = []
    junit = results / "junit.xml"
    if junit.exists():
        tree = ET.parse(junit)
        for suite in tree.iter("testsuite"):
            tests += int(suite.get("tests", 0))
            failures += int(suite.get("failures", 0))
            errors += int(suite.get("errors", 0))
            skipped += int(suite.get("skipped", 0))
        for case in tree.iter("testcase"):
            if case.find("skipped") is None:
                ran.append(f"{case.get('file') or case.get('classname')}::{case.get('name')}")
    return GuestResult(topo.name, rc, tests, failures, errors, skipped, ran, secs, console,
                       results / "guest.log")


def _shq(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


def _tail(path: Path, n: int = 60) -> str:
    if not path.exists():
        return f"({path} missing)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


def numa_test_ids() -> set[str]:
    """Every test marked numa, as the host collects it ("tests/x.py::test[param]")."""
    py = ROOT / ".venv" / "bin" / "python"
    out = subprocess.run([str(py), "-m", "pytest", "--collect-only", "-q", "-m", "numa",
                          "-p", "no:cacheprovider", "tests"], cwd=ROOT, capture_output=True, text=True)
    return {line.strip() for line in out.stdout.splitlines() if "::" in line}


def _junit_id(ran: str) -> str:
    """JUnit's "tests/test_x.py::name" (file) or "tests.test_x::name" (classname) -> pytest's id."""
    where, name = ran.split("::", 1)
    if not where.endswith(".py"):
        where = where.replace(".", "/") + ".py"
    return f"{where}::{name}"


def cmd_run(ns: argparse.Namespace) -> int:
    names = list(TOPOLOGIES) if ns.topology == "all" else [ns.topology]
    ok = True
    ran: set[str] = set()
    for name in names:
        extra = ["-k", ns.k] if ns.k else []
        try:
            res = run_guest(TOPOLOGIES[name], extra + ns.pytest_args)
            stalled = (res.log.parent / "stalled").exists()
            trouble = kernel_trouble(res.console)
            if res.rc is None and not trouble and (stalled or not (res.log.parent / "timeout").exists()):
                # QEMU itself died before the guest reported (seen once: an assertion in its PCI
                # emulation during boot), or never booted (seen once: an empty console for 15
                # minutes). That is the emulator, not numamove: boot once more.
                what = "never booted" if stalled else "exited without a result"
                print(f"numa guest '{name}': QEMU {what}; console tail:\n"
                      f"{_tail(res.console, 5)}\nbooting it once more", file=sys.stderr)
                res = run_guest(TOPOLOGIES[name], extra + ns.pytest_args)
                trouble = kernel_trouble(res.console)
        except HarnessError as exc:
            print(f"numa guest '{name}': cannot start: {exc}", file=sys.stderr)
            if os.environ.get("CI", "").lower() == "true" or not ns.allow_skip:
                return 1
            print(f"numa guest '{name}': SKIPPED (not CI and --allow-skip)", file=sys.stderr)
            continue
        print(_tail(res.log, 400))
        verdict = (res.rc == 0 and res.tests > 0 and res.failures == 0 and res.errors == 0
                   and res.skipped == 0 and trouble is None)
        summary = (f"numa guest '{name}': rc={res.rc} tests={res.tests} failures={res.failures} "
                   f"errors={res.errors} skipped={res.skipped} in {res.seconds:.0f}s")
        print(summary, file=sys.stderr)
        if not verdict:
            ok = False
            why = []
            if res.rc is None:
                why.append("the guest never reported a result (boot failure or timeout)")
            if res.skipped:
                why.append("a multi-node test was skipped inside the guest")
            if res.tests == 0:
                why.append("no test ran")
            if trouble is not None:
                why.append(f"the guest kernel reported: {trouble}")
            print(f"numa guest '{name}': FAILED: {'; '.join(why) or 'test failures'}", file=sys.stderr)
            print(f"--- serial console tail ({res.console}) ---", file=sys.stderr)
            print(_tail(res.console), file=sys.stderr)
            report = kernel_report(res.log.parent / "dmesg.txt", trouble) if trouble is not None else ""
            if report:
                print(f"--- the kernel's report, every level ({res.log.parent / 'dmesg.txt'}) ---",
                      file=sys.stderr)
                print(report, file=sys.stderr)
        else:
            shutil.rmtree(res.log.parent, ignore_errors=True)
        ran.update(_junit_id(r) for r in res.ran)
    if ok and ns.topology == "all" and not ns.k and not ns.pytest_args:
        missing = sorted(numa_test_ids() - ran)
        if missing:
            ok = False
            print(f"numa guests: {len(missing)} multi-node test(s) ran in no guest "
                  f"(their requirements fit neither topology):", file=sys.stderr)
            for m in missing:
                print(f"  {m}", file=sys.stderr)
        else:
            print("numa guests: every multi-node test ran in a guest", file=sys.stderr)
    return 0 if ok else 1


DEMO_ARGS = ["-m", "numamove", "demo", "--size", "96M", "--huge", "64M"]  # fits the guest's 512 MiB nodes


def cmd_demo() -> int:
    """The main job on whatever machine this is: a process move and a cgroup move between two nodes."""
    numamove = str(ROOT / ".venv" / "bin" / "numamove")
    with_memory = 0
    for p in Path("/sys/devices/system/node").glob("node[0-9]*"):
        m = re.search(r"MemTotal:\s+(\d+)", (p / "meminfo").read_text())
        with_memory += bool(m and int(m.group(1)))
    if with_memory >= 2:
        os.execv(numamove, [numamove, "demo"])
    try:
        prepare()
    except HarnessError as exc:
        print(f"make run: this machine has one NUMA node and no two-node guest can start here ({exc}): "
              "running the copy benchmark instead", flush=True)
        os.execv(numamove, [numamove, "demo"])
    print(f"make run: this machine has one NUMA node; booting a two-node QEMU guest (node 0: CPU 0, "
          f"{TOPOLOGIES['two'].nodes[0].mem_mib} MiB; node 1: CPU 1, {TOPOLOGIES['two'].nodes[1].mem_mib} MiB; "
          "TCG, so every time below is ~25x a real machine's) and running the demo inside it", flush=True)
    res = run_guest(TOPOLOGIES["two"], [], python_args=DEMO_ARGS)
    print(_tail(res.log, 400), flush=True)
    trouble = kernel_trouble(res.console)
    if res.rc != 0 or trouble:
        print(f"make run: the demo in the guest failed (rc={res.rc}{'; ' + trouble if trouble else ''}); "
              f"console tail:\n{_tail(res.console)}", file=sys.stderr)
        return 1
    print(f"make run: guest booted, demo run and powered off in {res.seconds:.0f} s", flush=True)
    shutil.rmtree(res.log.parent, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="boot guest(s) and run the multi-node tests")
    r.add_argument("--topology", choices=[*TOPOLOGIES, "all"], default="all")
    r.add_argument("-k", help="pytest -k expression")
    r.add_argument("--allow-skip", action="store_true",
                   help="outside CI, report a guest that cannot start as skipped instead of failed")
    r.add_argument("pytest_args", nargs="*")
    s = sub.add_parser("shell", help="boot one guest with an interactive shell on this terminal")
    s.add_argument("--topology", choices=list(TOPOLOGIES), default="two")
    sub.add_parser("prepare", help="fetch the kernel and build the initramfs (cached)")
    b = sub.add_parser("bench", help="boot a two-node guest (1.5 GiB a node) and run "
                                     "tests/vm/bench_migrate.py: numamove proc vs migratepages")
    b.add_argument("bench_args", nargs="*")
    ba = sub.add_parser("bench-auto", help="boot the two-node guest (a CPU a node) and run "
                                           "tests/vm/bench_auto.py: policy auto vs push vs pull")
    ba.add_argument("bench_args", nargs="*")
    sub.add_parser("demo", help="`make run`: numamove's demo on this machine when it has two memory nodes, else "
                                "inside the two-node guest; the copy benchmark only when no guest can start")
    bc = sub.add_parser("bench-cgroup", help="boot the bench guest (node 0 with two vCPUs, node 1 memory-only) and "
                                             "run tests/vm/bench_cgroup.py: a group of three workloads moved by a "
                                             "cpuset.mems write vs numamove proc --cgroup --set-mems")
    bc.add_argument("bench_args", nargs="*")
    bw = sub.add_parser("bench-whole", help="boot a two-node guest with a CPU a node (1.5 GiB each), then the bench "
                                            "guest (node 0 with two vCPUs, node 1 memory-only), and run "
                                            "tests/vm/bench_whole.py "
                                            "in each: the numamove CLI vs the migratepages CLI, whole processes")
    bw.add_argument("--shape", choices=["two", "bench", "all", "wide"], default="all",
                    help="wide: two nodes of --vcpus vCPUs each (a machine with cores to spare)")
    bw.add_argument("--vcpus", type=int, default=8, help="--shape wide: vCPUs a node (default 8)")
    bw.add_argument("--node-mib", type=int, default=3072, help="--shape wide: memory a node, MiB (default 3072)")
    bw.add_argument("--accel", choices=["tcg", "kvm", "auto"], default="tcg",
                    help="kvm: hardware virtualization (fails with the reason when /dev/kvm cannot be used); "
                         "auto: kvm where it can be used, else tcg (default tcg: the figures of docs/benchmarks.md)")
    bw.add_argument("bench_args", nargs="*")
    ns = ap.parse_args(argv)
    try:
        if ns.cmd == "prepare":
            vmlinux, initrd = prepare()
            print(f"kernel {vmlinux}\ninitramfs {initrd}")
            return 0
        if ns.cmd in ("bench", "bench-auto", "bench-cgroup"):
            topo, script = {"bench": (BENCH, "tests/vm/bench_migrate.py"),
                            "bench-cgroup": (BENCH, "tests/vm/bench_cgroup.py"),
                            "bench-auto": (TOPOLOGIES["two"], "tests/vm/bench_auto.py")}[ns.cmd]
            res = run_guest(topo, [], python_args=[script, *ns.bench_args])
            print(_tail(res.log, 400))
            if res.rc != 0:
                print(f"guest benchmark failed (rc={res.rc}); console tail:\n{_tail(res.console)}", file=sys.stderr)
                return 1
            return 0
        if ns.cmd == "bench-whole":
            rc = 0
            kvm = False
            if ns.accel != "tcg":
                why = kvm_problem()
                if why is not None and ns.accel == "kvm":
                    raise HarnessError(f"--accel kvm: {why}")
                kvm = why is None
                print(f"== accelerator: {'KVM' if kvm else f'TCG ({why})'}", flush=True)
            if ns.shape == "wide" and not 1 <= ns.vcpus <= 128:
                raise HarnessError(f"--vcpus {ns.vcpus}: 1 to 128")
            if ns.shape == "wide" and ns.node_mib < 512:
                raise HarnessError(f"--node-mib {ns.node_mib}: at least 512 (the workloads and the launderer)")
            for shape in (["two", "bench"] if ns.shape == "all" else [ns.shape]):
                topo = {"bench": BENCH, "two": BENCH_TWO}.get(shape) or wide(ns.vcpus, ns.node_mib)
                print(f"== guest shape '{shape}': " + ", ".join(
                    f"node {n.node}: {len(n.cpus)} vCPU(s), {n.mem_mib} MiB" for n in topo.nodes), flush=True)
                res = run_guest(topo, [], python_args=["tests/vm/bench_whole.py", *ns.bench_args], kvm=kvm)
                print(_tail(res.log, 400), flush=True)
                if res.rc != 0:
                    print(f"guest benchmark failed (rc={res.rc}); console tail:\n{_tail(res.console)}", file=sys.stderr)
                    rc = 1
            return rc
        if ns.cmd == "demo":
            return cmd_demo()
        if ns.cmd == "shell":
            run_guest(TOPOLOGIES[ns.topology], [], interactive=True)
            return 0
        return cmd_run(ns)
    except HarnessError as exc:
        print(f"harness: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
