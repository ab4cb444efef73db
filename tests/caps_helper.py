"""Run numamove's CLI in-process as user nobody holding only the given capabilities.

    python tests/caps_helper.py sys_nice,sys_ptrace -- proc 1234 --to 1
    python tests/caps_helper.py none --hold-shm /dev/shm/f -- ...   (see test_numa_caps.py)

What a systemd unit with User=... and AmbientCapabilities=... gives numamove, without
needing a login for nobody. The real and effective IDs become nobody's (move_pages checks
the real ones); the file-system ID stays root's only so the interpreter, which lives under
/root (mode 700), can still load its modules.
"""

from __future__ import annotations

import ctypes
import os
import sys

CAPS = {"sys_ptrace": 19, "sys_nice": 23}
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
    os.setresgid(NOBODY, NOBODY, 0)
    os.setresuid(NOBODY, NOBODY, 0)
    mask = 0
    for c in caps:
        mask |= 1 << CAPS[c]
    hdr = _Header(LINUX_CAPABILITY_VERSION_3, 0)
    data = (_Data * 2)(_Data(mask, mask, 0), _Data(0, 0, 0))
    if libc.capset(ctypes.byref(hdr), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")
    libc.setfsuid(0)
    assert os.getuid() == os.geteuid() == NOBODY


def main() -> int:
    caps_arg, rest = sys.argv[1], sys.argv[2:]
    caps = [] if caps_arg == "none" else caps_arg.split(",")
    sep = rest.index("--")
    opts, args = rest[:sep], rest[sep + 1:]
    become_nobody(caps)
    child = 0
    if opts[:1] == ["--hold-shm"]:
        # a process of nobody's own that maps the file too, so its pages are shared: print its PID
        import mmap

        fd = os.open(opts[1], os.O_RDWR)
        mm = mmap.mmap(fd, os.fstat(fd).st_size, mmap.MAP_SHARED)
        sum(mm[i] for i in range(0, len(mm), 4096))  # fault every page into both processes
        r, w = os.pipe()
        child = os.fork()
        if child == 0:
            os.close(w)
            os.read(r, 1)  # until the parent exits
            os._exit(0)
        os.close(r)
        print(f"holder {child}", flush=True)
        args = [a.replace("{holder}", str(child)) for a in args]
    from numamove.cli import main as cli_main

    try:
        return cli_main(args)
    except SystemExit as exc:
        return int(exc.code or 0)


if __name__ == "__main__":
    sys.exit(main())
