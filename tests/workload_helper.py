"""Start and talk to numamove.workload processes in tests."""

from __future__ import annotations

import subprocess
import sys
from types import TracebackType


class Workload:
    """A running numamove.workload child; `check()` asks it to verify its own bytes."""

    def __init__(self, *args: str, cgroup: str | None = None) -> None:
        cmd = [sys.executable, "-m", "numamove.workload", *args]
        if cgroup is not None:
            # join the group before the interpreter starts, so every page it allocates is charged there
            cmd = ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroup, *cmd]
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.p.stdout is not None
        line = self.p.stdout.readline().split()
        assert line and line[0] == "ready", f"workload did not start: {line}"
        self.pid = int(line[1])
        self.anon = (int(line[2], 16), int(line[3], 16))
        self.huge = (int(line[4], 16), int(line[5], 16))

    def check(self) -> tuple[bool, int]:
        """(data intact, how many read passes it has made so far)."""
        assert self.p.stdin is not None and self.p.stdout is not None
        self.p.stdin.write("check\n")
        self.p.stdin.flush()
        word, _crc, reads = self.p.stdout.readline().split()
        return word == "ok", int(reads)

    def pause_ms(self) -> float:
        """The longest gap between two of its reads since the last call (or its start), in ms."""
        assert self.p.stdin is not None and self.p.stdout is not None
        self.p.stdin.write("pause\n")
        self.p.stdin.flush()
        word, ms = self.p.stdout.readline().split()
        assert word == "pause"
        return float(ms)

    def close(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()

    def __enter__(self) -> Workload:
        return self

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class BusyLoops:
    """A Python busy loop pinned to each CPU given, at a nice value (below 0 needs root): a thread
    pinned to one of those CPUs then gets only a share of it. Killed on exit."""

    def __init__(self, cpus: tuple[int, ...], nice: int) -> None:
        code = (f"import os,sys; os.sched_setaffinity(0, {{int(sys.argv[1])}}); os.nice({nice}); "
                "sys.stdout.write('x\\n'); sys.stdout.flush()\nwhile True: pass")
        self.procs = [subprocess.Popen([sys.executable, "-c", code, str(c)], stdout=subprocess.PIPE)
                      for c in cpus]
        for p in self.procs:
            assert p.stdout is not None and p.stdout.readline() == b"x\n", "busy loop did not start"

    def close(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()

    def __enter__(self) -> BusyLoops:
        return self

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def died_starting(returncode: int, stderr: str) -> bool:
    """A signal stopped the interpreter while it started or imported numamove, before numamove's main()
    could handle it: CPython's own KeyboardInterrupt (exit 1 with "Fatal Python error" during site, or
    killed by SIGINT during imports). Nothing was done then. One through numamove's main is not this."""
    return (returncode in (1, -2) and stderr.rstrip().endswith("KeyboardInterrupt")
            and "numamove/entry.py" not in stderr)


# For the guest benchmarks (tests/vm/bench_whole.py, bench_migrate.py): between two timed moves, untimed,
# each node touches then frees this much memory. Under TCG, QEMU keeps the code it translated for a page
# until the guest writes into it, and each store into such a page then goes through its
# self-modifying-code check (tests/vm/harness.py, norandmaps). migratepages as root moves the
# workload's shared library text too (MPOL_MF_MOVE_ALL), freeing executed pages; the next move into
# that node got them and spent ~1 s zeroing or copying into them. In ABBA order that was always
# numamove's move into node 0, right after migratepages left it. Hardware has no such cost, so each
# node's recently freed pages are used once between moves, whichever tool freed them.
LAUNDER = 96 << 20
_LAUNDER_CODE = ("import mmap, sys\n"
                 "for _ in sys.stdin:\n"
                 f"    m = mmap.mmap(-1, {LAUNDER}, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)\n"
                 f"    for off in range(0, {LAUNDER}, 4096):\n"
                 "        m[off] = 1\n"
                 "    m.close()\n"
                 "    print('done', flush=True)\n")


class Launderer:
    """What the guest benchmarks do between two timed moves, untimed: one process per memory node, bound
    there, touches and frees LAUNDER bytes, then each tool runs once doing nothing (warm_up; numamove: how
    to start it)."""

    def __init__(self, nodes: list[int], numamove: list[str]) -> None:
        self.numamove = numamove
        self.procs = [subprocess.Popen(["numactl", f"--membind={n}", sys.executable, "-c", _LAUNDER_CODE],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for n in nodes]

    def __call__(self) -> None:
        for p in self.procs:
            assert p.stdin is not None and p.stdout is not None
            p.stdin.write("go\n")
            p.stdin.flush()
            if p.stdout.readline().strip() != "done":
                raise SystemExit("the launderer died")
        warm_up(self.numamove)

    def close(self) -> None:
        for p in self.procs:
            if p.stdin is not None:
                p.stdin.close()
            p.wait()

    def __enter__(self) -> Launderer:
        return self

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


# Also between two timed moves, untimed: each tool runs once, doing nothing. migratepages as root moves the
# workload's executable text as well: the python binary (libpython is linked into Debian's) and libc, the
# very pages every later Python process executes. QEMU keys the code it translated by guest physical
# page, so the first process to run code from the moved pages translates it all again. In ABBA order
# that was always numamove's move right after migratepages': ~0.25 s more of its wall (outside its move,
# which was as fast both ways), a cost hardware does not have. Tools that ran once are warm on hardware.
def warm_up(numamove: list[str]) -> None:
    """Run numamove (`numamove`: how to start it) and migratepages once each on PID 1, moving nothing."""
    for cmd in ([*numamove, "proc", "1", "--to", "0", "--dry-run", "-q"], ["migratepages", "1", "0", "0"]):
        subprocess.run(cmd, check=True, capture_output=True)
