"""The QEMU NUMA harness's pure parts: topologies to QEMU options, modules, initramfs, ids."""

from __future__ import annotations

import lzma
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "vm"))
import harness  # noqa: E402


def test_two_node_topology_options() -> None:
    """Two nodes, one CPU each, distance 20, backends adding up to -m."""
    t = harness.TOPOLOGIES["two"]
    cmd = harness.qemu_command(t, Path("/k"), Path("/i"), Path("/r"))
    numa = [cmd[i + 1] for i, a in enumerate(cmd) if a == "-numa"]
    assert numa == ["node,nodeid=0,memdev=m0,cpus=0", "node,nodeid=1,memdev=m1,cpus=1",
                    "dist,src=0,dst=1,val=20"]
    assert cmd[cmd.index("-m") + 1] == "1024M" and cmd[cmd.index("-smp") + 1] == "2"
    assert "numa_balancing=disable" in cmd[cmd.index("-append") + 1]


def test_five_node_topology_has_a_cpuless_node_at_30() -> None:
    """Node 4 gets memory and no cpus=, at distance 30 from every other node."""
    t = harness.TOPOLOGIES["five"]
    cmd = harness.qemu_command(t, Path("/k"), Path("/i"), Path("/r"))
    numa = [cmd[i + 1] for i, a in enumerate(cmd) if a == "-numa"]
    assert "node,nodeid=4,memdev=m4" in numa
    assert [d for d in numa if d.endswith("val=30")] == [f"dist,src={a},dst=4,val=30" for a in range(4)]
    assert cmd[cmd.index("-smp") + 1] == "4"
    truth = t.to_json()
    assert truth["distances"][4] == [30, 30, 30, 30, 10]
    assert [n["has_cpu"] for n in truth["nodes"]] == [True] * 4 + [False]  # type: ignore[index]


def test_modules_resolve_dependencies_first(tmp_path: Path) -> None:
    """Dependencies named in .modinfo load before the modules that need them; .xz is unpacked."""
    d = tmp_path / "kernel"
    d.mkdir()
    (d / "a.ko").write_bytes(b"\x7fELF...\x00depends=b,c\x00name=a\x00")
    (d / "b.ko.xz").write_bytes(lzma.compress(b"\x7fELF\x00depends=c\x00name=b\x00"))
    (d / "c.ko").write_bytes(b"\x7fELF\x00depends=\x00name=c\x00")
    order = harness.resolve_modules(tmp_path, ["a"])
    assert [n for n, _ in order] == ["c", "b", "a"]
    assert order[1][1].startswith(b"\x7fELF")
    with pytest.raises(harness.HarnessError, match="kernel module nope"):
        harness.resolve_modules(tmp_path, ["nope"])


def test_cpio_is_readable_by_cpio(tmp_path: Path) -> None:
    """The initramfs archive is valid newc: GNU cpio lists what was put in."""
    import shutil
    import stat

    if shutil.which("cpio") is None:
        pytest.skip("GNU cpio not installed")
    blob = harness._cpio_newc([("bin", stat.S_IFDIR | 0o755, b""),
                               ("bin/x", stat.S_IFREG | 0o755, b"hello")])
    out = subprocess.run(["cpio", "-t"], input=blob, capture_output=True, check=True).stdout.decode()
    assert out.split() == ["bin", "bin/x"]


def test_extract_vmlinux_finds_the_elf_payload() -> None:
    """The xz stream holding an ELF is found even after a decoy stream."""
    decoy = lzma.compress(b"not a kernel", format=lzma.FORMAT_XZ)
    elf = b"\x7fELF" + b"k" * 100
    blob = b"MZ" + b"\0" * 50 + decoy + b"pad" + lzma.compress(elf, format=lzma.FORMAT_XZ) + b"trailer"
    assert harness.extract_vmlinux(blob) == elf
    with pytest.raises(harness.HarnessError):
        harness.extract_vmlinux(b"nothing here")


@pytest.mark.parametrize("ran, want", [
    ("tests/test_x.py::test_a[1-2]", "tests/test_x.py::test_a[1-2]"),
    ("tests.test_x::test_a", "tests/test_x.py::test_a"),
])
def test_junit_ids_match_pytest_ids(ran: str, want: str) -> None:
    """Ids from the guests' JUnit files compare equal to the host's collected ids."""
    assert harness._junit_id(ran) == want


def test_a_kernel_panic_or_oops_fails_the_run_and_is_not_booted_past(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A guest whose console shows an Oops (or panic, BUG) fails the run, even when the tests passed,
    and a guest that died with one is not booted again as if QEMU had failed."""
    import argparse

    console = tmp_path / "console.log"
    console.write_bytes(b"numamove-guest: up\n[ 12.3] BUG: unable to handle page fault for address: 0\n")
    (tmp_path / "log").write_text("")
    calls: list[int] = []

    def fake_run(topo: object, args: list[str]) -> harness.GuestResult:
        calls.append(1)
        return harness.GuestResult("two", None, 0, 0, 0, 0, [], 1.0, console, tmp_path / "log")

    monkeypatch.setattr(harness, "run_guest", fake_run)
    ns = argparse.Namespace(topology="two", k=None, pytest_args=[], allow_skip=False)
    assert harness.cmd_run(ns) == 1 and calls == [1]
    assert harness.kernel_trouble(console) == "[ 12.3] BUG: unable to handle page fault for address: 0"
    console.write_bytes(b"numamove-guest: up\nnumamove-guest: done\n")
    assert harness.kernel_trouble(console) is None

    def passing(topo: object, args: list[str]) -> harness.GuestResult:
        console.write_bytes(b"Oops: 0000 [#1] SMP\n")
        return harness.GuestResult("two", 0, 3, 0, 0, 0, [], 1.0, console, tmp_path / "log")

    monkeypatch.setattr(harness, "run_guest", passing)
    assert harness.cmd_run(ns) == 1


def test_a_kernel_reports_backtrace_is_printed_from_the_guests_whole_log(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """The console shows only the lockup's first line (loglevel=4); the failed run prints the lines that
    follow it in the log the guest saved (dmesg.txt, every level): its backtrace."""
    import argparse

    console = tmp_path / "console.log"
    console.write_bytes(b"numamove-guest: up\n[  812.5] watchdog: BUG: soft lockup - CPU#1 stuck for 22s! "
                        b"[python:192]\n")
    (tmp_path / "log").write_text("")
    (tmp_path / "dmesg.txt").write_text(
        "[  800.0] unrelated line\n"
        "[  812.5] watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [python:192]\n"
        "[  812.5] RIP: 0010:update_tasks_nodemask+0x5c/0x1a0\n"
        "[  812.5] Call Trace:\n")

    def locked(topo: object, args: list[str]) -> harness.GuestResult:
        return harness.GuestResult("two", 0, 3, 0, 0, 0, [], 1.0, console, tmp_path / "log")

    monkeypatch.setattr(harness, "run_guest", locked)
    ns = argparse.Namespace(topology="two", k=None, pytest_args=[], allow_skip=False)
    assert harness.cmd_run(ns) == 1
    err = capsys.readouterr().err
    assert "RIP: 0010:update_tasks_nodemask+0x5c/0x1a0" in err and "Call Trace:" in err
    assert "unrelated line" not in err
    # no log saved (the guest never got that far): the console's tail only, no report section
    (tmp_path / "dmesg.txt").unlink()
    assert harness.cmd_run(ns) == 1
    assert "the kernel's report" not in capsys.readouterr().err


def test_the_guest_saves_its_kernel_log_and_reports_every_cpu_on_a_lockup() -> None:
    """The init script saves dmesg into the results share after the run, and the kernel is asked for every
    CPU's backtrace on a soft lockup."""
    assert "dmesg > /newroot/tmp/results/dmesg.txt" in harness.INIT
    topo = harness.TOPOLOGIES["two"]
    cmd = harness.qemu_command(topo, Path("/k"), Path("/i"), Path("/r"))
    assert "softlockup_all_cpu_backtrace=1" in cmd[cmd.index("-append") + 1]


def test_the_guest_kernel_boots_without_address_space_randomization() -> None:
    """norandmaps on the guest's command line (the guest test checks the kernel took it)."""
    for topo in harness.TOPOLOGIES.values():
        cmd = harness.qemu_command(topo, Path("/k"), Path("/i"), Path("/r"))
        assert "norandmaps" in cmd[cmd.index("-append") + 1].split()


def test_wide_shape_is_two_nodes_of_n_vcpus_and_kvm_asks_for_the_host_cpu() -> None:
    """bench-whole --shape wide: two nodes of N vCPUs each (item 7's KVM guest); kvm=True swaps TCG for KVM."""
    t = harness.wide(8, 3072)
    cmd = harness.qemu_command(t, Path("/k"), Path("/i"), Path("/r"), kvm=True)
    numa = [cmd[i + 1] for i, a in enumerate(cmd) if a == "-numa"]
    assert numa[0] == "node,nodeid=0,memdev=m0," + ",".join(f"cpus={c}" for c in range(8))
    assert numa[1] == "node,nodeid=1,memdev=m1," + ",".join(f"cpus={c}" for c in range(8, 16))
    assert cmd[cmd.index("-smp") + 1] == "16" and cmd[cmd.index("-m") + 1] == "6144M"
    assert cmd[cmd.index("-accel") + 1] == "kvm" and cmd[cmd.index("-cpu") + 1] == "host"
    tcg = harness.qemu_command(t, Path("/k"), Path("/i"), Path("/r"))
    assert tcg[tcg.index("-accel") + 1] == "tcg,thread=multi" and tcg[tcg.index("-cpu") + 1] == "max"


def test_kvm_problem_names_why_kvm_cannot_be_used(tmp_path: Path) -> None:
    """No device, a device that is not KVM's, or PVM's KVM (the development VM's) is a reason in words; never
    an exception."""
    sysfs = tmp_path / "sys"
    (sysfs / "module" / "kvm").mkdir(parents=True)
    assert harness.kvm_problem(str(tmp_path / "kvm"), str(sysfs)) == f"{tmp_path / 'kvm'}: No such file or directory"
    why = harness.kvm_problem("/dev/null", str(sysfs))
    assert why is not None and why.startswith("/dev/null: KVM_GET_API_VERSION: ")
    (sysfs / "module" / "kvm_pvm").mkdir()
    assert "kvm-pvm" in (harness.kvm_problem("/dev/null", str(sysfs)) or "")


def test_bench_whole_arms_come_at_every_place_and_both_ways() -> None:
    """bench_whole's order: two arms ABBA; five arms each at every place, and each moving each way equally
    often over ten rounds (moves alternate direction)."""
    import bench_whole

    assert [bench_whole.arm_order(["mp", "nm"], r) for r in range(4)] == [["mp", "nm"], ["nm", "mp"]] * 2
    arms = ["mp", "nm1", "nm2", "nm4", "nm8"]
    places: dict[str, set[int]] = {a: set() for a in arms}
    ways: dict[str, list[int]] = {a: [0, 0] for a in arms}
    move = 0
    for r in range(10):
        order = bench_whole.arm_order(arms, r)
        assert sorted(order) == sorted(arms)
        for i, a in enumerate(order):
            places[a].add(i)
            ways[a][move % 2] += 1
            move += 1
    assert all(p == set(range(5)) for p in places.values())
    assert all(w == [5, 5] for w in ways.values()), ways


def test_device_check_reports_the_machine_the_engine_and_why_no_kvm_guest(tmp_path: Path) -> None:
    """tests/vm/device_check.sh (issue #10's item 7, for a machine with cores to spare): it names the CPUs and
    nodes, builds and runs nmbench on 1 and 2 threads at least, and says what the KVM guest run lacks here
    (this machine has 2 CPUs, so at least the 16 CPUs)."""
    import os

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, NMBENCH_MIB="16")
    p = subprocess.run(["bash", str(root / "tests" / "vm" / "device_check.sh"), str(tmp_path)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    log = (tmp_path / "device.txt").read_text()
    assert log == p.stdout
    assert f"online CPUs: {os.cpu_count()}" in log and "NUMA nodes: " in log and "/dev/kvm: " in log
    assert "nmbench: 16 MiB" in log and "engine  1 threads:" in log
    if (os.cpu_count() or 1) >= 2:
        assert "engine  2 threads:" in log
    if (os.cpu_count() or 1) < 16:
        assert "not run: missing" in log and "16-CPUs" in log
    assert log.rstrip().endswith("== done")
