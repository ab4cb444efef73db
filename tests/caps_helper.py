"""Run numamove's CLI in-process as user nobody holding only the given capabilities.

    python tests/caps_helper.py sys_nice,sys_ptrace -- proc 1234 --to 1
    python tests/caps_helper.py none --hold-shm /dev/shm/f -- ...   (see test_numa_caps.py)

What a systemd unit with User=... and AmbientCapabilities=... gives numamove, without
needing a login for nobody. Every ID becomes nobody's: move_pages checks the real ones and
/proc/PID/smaps the file-system one. The interpreter lives under /root (mode 700), so every
module numamove will need is imported first, as root. The process is marked dumpable again,
as one started by systemd as that user would be (changing IDs clears it, and the kernel
refuses ptrace-style access to a non-dumpable process without CAP_SYS_PTRACE).
"""

from __future__ import annotations

import ctypes
import os
import sys

CAPS = {"dac_read_search": 2, "sys_ptrace": 19, "sys_nice": 23}
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
LINUX_CAPABILITY_VERSION_3 = 0x20080522
NOBODY = 65534


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def become_nobody(caps: list[str]) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_KEEPCAPS)")
    os.setgroups([])
    os.setresgid(NOBODY, NOBODY, NOBODY)
    os.setresuid(NOBODY, NOBODY, NOBODY)
    mask = 0
    for c in caps:
        mask |= 1 << CAPS[c]
    hdr = _Header(LINUX_CAPABILITY_VERSION_3, 0)
    data = (_Data * 2)(_Data(mask, mask, 0), _Data(0, 0, 0))
    if libc.capset(ctypes.byref(hdr), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")
    libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
    assert os.getresuid() == (NOBODY, NOBODY, NOBODY)


def main() -> int:
    caps_arg, rest = sys.argv[1], sys.argv[2:]
    caps = [] if caps_arg == "none" else caps_arg.split(",")
    sep = rest.index("--")
    opts, args = rest[:sep], rest[sep + 1:]
    # everything the commands import lazily, while the interpreter's files are still readable
    import importlib

    for mod in ("numamove.cli", "numamove.pagemove", "numamove.proc", "numamove.files", "numamove.maps",
                "numamove.report", "numamove.topology", "numamove.calibration", "numamove.nodelist",
                "numamove.planner", "numamove.engine", "numamove._native", "numamove.scan", "psutil", "numa",
                "json", "mmap", "fcntl", "errno", "difflib", "tempfile", "subprocess"):
        importlib.import_module(mod)
    from numamove.topology import read_topology

    read_topology()  # loads libnuma's shared object
    become_nobody(caps)
    # the lock directory a systemd unit's RuntimeDirectory= would give this user
    import tempfile

    os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="numamove-caps-")
    child = 0
    if opts[:1] == ["--hold-shm"]:
        # a process of nobody's own that maps the file too, so its pages are shared: print its PID
        import mmap

        fd = os.open(opts[1], os.O_RDWR)
        mm = mmap.mmap(fd, os.fstat(fd).st_size, mmap.MAP_SHARED)
        sum(mm[i] for i in range(0, len(mm), 4096))  # fault every page in here...
        r, w = os.pipe()
        ready_r, ready_w = os.pipe()
        child = os.fork()
        if child == 0:
            os.close(w)
            sum(mm[i] for i in range(0, len(mm), 4096))  # ...and in the holder (fork copies no PTEs)
            os.write(ready_w, b"r")
            os.read(r, 1)  # until the parent exits
            os._exit(0)
        os.close(r)
        os.read(ready_r, 1)
        print(f"holder {child}", flush=True)
        args = [a.replace("{holder}", str(child)) for a in args]
    from numamove.cli import main as cli_main

    try:
        return cli_main(args)
    except SystemExit as exc:
        return int(exc.code or 0)


if __name__ == "__main__":
    sys.exit(main())
