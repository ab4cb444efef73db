"""`numamove file --copy`: a node-local copy of a file, made safely where other users can write.

numamove runs as root in directories others control (/dev/shm and its subdirectories), so the
copy acts on descriptors, never on a name twice:

* the source is opened once, without following a symbolic link in its last component (a link
  is refused with one line: replacing it would split it from the file it points to); its type,
  file system and metadata come from that descriptor;
* in place, a write lease (F_SETLEASE F_WRLCK) is taken on it first: the kernel grants it only
  while nobody else has the file open or mapped, and breaks it when anyone opens it later, so
  no writer can lose a write to the copy; numamove checks the lease before publishing and aborts
  if it was broken. Without the lease (another user's file, without CAP_LEASE) it refuses;
* the copy is an unnamed O_TMPFILE in the destination directory: until it is complete, verified
  and published there is no name to leave behind, whatever signal arrives (SIGKILL included);
* owner, then mode (chown clears set-user-ID bits), then extended attributes are set on the
  descriptor; what could not be kept is reported, never dropped silently;
* in place, the new file gets a random temporary name and is exchanged with the original
  (renameat2 RENAME_EXCHANGE), with SIGINT, SIGTERM and SIGHUP held back; if the file that came
  out is not the one copied (the name was swapped meanwhile), the exchange is undone and the copy
  discarded. The old file is then unlinked.
"""

from __future__ import annotations

# the builtin under the signal module: the same calls without building its Signals enum (start-up)
import _signal  # type: ignore[import-not-found]  # noqa: I001 - no stub: the same calls as signal's
import errno
import fcntl
import mmap
import os
import stat
import time

from . import _native
from .errors import Interrupted, NativeError, NodeUnavailableError, NumamoveError, UsageError, VerificationError
from .files import CopyReport, coarse, data_extents, open_file, users_of

TYPE_CHECKING = False  # typing's own constant to mypy; importing typing costs start-up ~4 ms
if TYPE_CHECKING:
    from .calibration import Loaded
    from .planner import Plan
    from .topology import Topology

F_SETLEASE = getattr(fcntl, "F_SETLEASE", 1024)
F_GETLEASE = getattr(fcntl, "F_GETLEASE", 1025)


def _open_dir(path: str) -> int:
    try:
        return os.open(path or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such directory") from None
    except NotADirectoryError:
        raise UsageError(f"{path}: not a directory") from None
    except PermissionError:
        raise UsageError(f"{path}: permission denied") from None


def _open_source(path: str) -> tuple[int, int, str]:
    """(directory fd, file fd, name): the file opened once, its last component never followed."""
    parent, name = os.path.split(os.path.abspath(path))
    dfd = _open_dir(parent)
    try:
        fd = open_file(path, "--copy would split it from its file", dfd, name)
    except BaseException:
        os.close(dfd)
        raise
    return dfd, fd, name


def _take_lease(fd: int, path: str) -> None:
    """A write lease: nobody else has the file open or mapped now, and a later open breaks it.

    A break is announced with SIGIO, whose default action would end numamove: it is ignored
    while numamove holds leases, and the lease's state is asked instead (_lease_held).
    """
    _signal.signal(_signal.SIGIO, _signal.SIG_IGN)
    try:
        fcntl.fcntl(fd, F_SETLEASE, fcntl.F_WRLCK)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EBUSY):
            busy = users_of(fd)
            who = ", ".join(f"PID {p} ({n})" for p, n in busy[:5]) or \
                "a process numamove cannot see (another user's; run as root to see which)"
            raise NumamoveError(f"{path} is open or mapped by {who}: --copy would detach them; "
                                "move it in place instead (without --copy)") from None
        if exc.errno == errno.EACCES:
            raise NumamoveError(f"{path}: only its owner or CAP_LEASE can make sure nobody writes it during "
                                "the copy (a write lease); not copied") from None
        raise NumamoveError(f"{path}: cannot take a write lease: {exc.strerror}") from None


def _lease_held(fd: int) -> bool:
    return bool(fcntl.fcntl(fd, F_GETLEASE) == fcntl.F_WRLCK)


def _keep_metadata(src: int, dst: int, st: os.stat_result, replace: bool) -> list[str]:
    """Owner, then mode (chown clears set-user-ID bits), then xattrs, on the descriptor; what failed."""
    lost: list[str] = []
    if replace or os.geteuid() == 0:
        try:
            os.fchown(dst, st.st_uid, st.st_gid)
        except OSError as exc:
            lost.append(f"owner {st.st_uid}:{st.st_gid} not kept ({exc.strerror})")
    os.fchmod(dst, stat.S_IMODE(st.st_mode))
    try:
        names = os.listxattr(src)
    except OSError as exc:
        return lost + [f"extended attributes not read ({exc.strerror})"]
    for name in names:
        try:
            os.setxattr(dst, name, os.getxattr(src, name))
        except OSError as exc:
            lost.append(f"extended attribute {name} not kept ({exc.strerror})")
    return lost


def copy_file(path: str, output: str | None, node: int, topo: Topology, limit: int | None, policy: str,
              here: int, allowed: frozenset[int], dry_run: bool = False,
              calibration: Loaded | None = None) -> CopyReport:
    """Copy a file into a new tmpfs file whose pages are on node, verify it, and publish it.

    Without output, the copy replaces path atomically (owner, mode and extended attributes kept);
    path must then be on tmpfs and nobody may have it open or mapped during the copy. With
    output, path may be on any file system (staging a data set into node-local shared memory);
    output must be on tmpfs.

    Raises:
        UsageError: bad paths, a symbolic link, the wrong file systems. NumamoveError: in use or
        opened during the copy, changed during the copy, no room on the node, not permitted
        (nothing is left behind in each case).
    """
    from .planner import BASE_PAGE, HUGE_PAGE, make_plan

    replace = output is None
    sdir, sfd, sname = _open_source(path)
    ddir = -1
    try:
        st = os.fstat(sfd)
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"{path} is a directory: name the files" if stat.S_ISDIR(st.st_mode)
                             else f"{path} is not a regular file")
        if replace:
            if _native.fs_type(sfd) != _native.TMPFS_MAGIC:
                raise UsageError(f"{path}: --copy replaces files on tmpfs only (use --output to stage a file "
                                 "from another file system)")
            ddir, dname = os.dup(sdir), sname
        else:
            assert output is not None
            parent, dname = os.path.split(os.path.abspath(output))
            ddir = _open_dir(parent)
            if _native.fs_type(ddir) != _native.TMPFS_MAGIC:
                raise UsageError(f"--output {output} must be on tmpfs ({parent} is not)")
        size = st.st_size
        # the source's data: its holes stay holes in the copy, as cp keeps them (a sparse file's size is
        # neither copied nor asked of the node)
        extents = data_extents(sfd, size)
        data = sum(hi - lo for lo, hi in extents)
        free = topo.node(node).mem_free
        if free and data > free:
            from .nodelist import format_bytes

            raise NodeUnavailableError(f"node {node} has {format_bytes(free)} free, {path} needs {format_bytes(data)}")
        dest = path if replace else str(output)
        plan = make_plan(topo, here, node, max(1, -(-data // HUGE_PAGE)), -(-data // BASE_PAGE), limit, policy,
                         here, allowed, calibration) if data else None
        if replace:
            _take_lease(sfd, path)
        if dry_run:
            return CopyReport(path, dest, node, size, 0.0, plan, False, True, {}, data_bytes=data)
        t0 = time.perf_counter()
        try:
            dfd = os.open(".", os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600, dir_fd=ddir)
        except OSError as exc:
            raise NumamoveError(f"cannot create the copy in {os.path.dirname(os.path.abspath(dest))}: "
                                f"{exc.strerror}") from None
        fill: dict[str, str | None] = {"method": "none",
                                       "why": "the file is all holes" if size else "the file is empty"}
        notes: list[str] = []
        try:
            if plan is not None:
                on_node = _fill(dfd, sfd, size, extents, st, node, plan, path, fill, notes)
            else:
                os.ftruncate(dfd, size)  # all holes (or empty): the copy is as long, and as empty
                on_node = {}
            notes += _keep_metadata(sfd, dfd, st, replace)
            if replace and not _lease_held(sfd):
                raise NumamoveError(f"{path} was opened by another process during the copy: copy discarded, "
                                    "original untouched")
            _publish(dfd, ddir, dname, sfd if replace else -1, st, dest)
        finally:
            os.close(dfd)
        rep = CopyReport(path, dest, node, size, time.perf_counter() - t0, plan, True, False, on_node,
                         data_bytes=data)
        rep.notes, rep.fill = notes, fill
        return rep
    finally:
        if replace:
            try:
                fcntl.fcntl(sfd, F_SETLEASE, fcntl.F_UNLCK)
            except OSError:
                pass
            _signal.signal(_signal.SIGIO, _signal.SIG_DFL)
        os.close(sfd)
        os.close(sdir)
        if ddir >= 0:
            os.close(ddir)


FILE_CHUNK = 256 << 10  # pieces: long enough to amortise the allocating call; its two buffers stay in L2
SHMEM_ENABLED = "/sys/kernel/mm/transparent_hugepage/shmem_enabled"


def huge_tmpfs(fd: int, mountinfo: str = "/proc/self/mountinfo", shmem_enabled: str = SHMEM_ENABLED) -> str | None:
    """Why the tmpfs holding fd may give a new file huge pages (its mount's huge= option, or
    shmem_enabled's force), else None. UFFDIO_COPY installs base pages only, so such a copy is
    populated instead: the copy keeps the page size the mount asks for."""
    try:
        with open(shmem_enabled, "rb") as fh:
            if b"[force]" in fh.read():
                return "shmem_enabled is force"
    except OSError:
        pass
    st = os.fstat(fd)
    dev = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}".encode()
    try:
        with open(mountinfo, "rb") as fh:
            text = fh.read()
    except OSError:
        return "its mount options could not be read"
    for line in text.splitlines():
        left, _, right = line.partition(b" - ")
        fields, sb = left.split(), right.split()
        if len(fields) < 5 or len(sb) < 3 or fields[2] != dev:
            continue
        for opt in sb[2].split(b","):
            if opt.startswith(b"huge=") and opt != b"huge=never":
                return f"its mount has {opt.decode('ascii', 'replace')}"
    return None


def copy_into_mapping(plan: Plan, dst: int, src_fd: int, length: int, uffd: bool = True,
                      extents: list[tuple[int, int]] | None = None) -> tuple[_native.FillReport, str | None]:
    """Fill the shared file mapping dst with the file src_fd[0..length) (only extents, when given), verified,
    on the plan's threads (see _native.copy_into_map); when no worker can be created, retry on one thread,
    as engine.run_plan does."""
    try:
        return _native.copy_into_map(dst, src_fd, length, FILE_CHUNK, plan.cpus, plan.threads, uffd, extents), None
    except NativeError as exc:
        if exc.func != "pthread_create" or plan.threads == 1:
            raise
        why = f"could not start {plan.threads} threads ({os.strerror(exc.errno or 0)}): retried on one thread"
        return _native.copy_into_map(dst, src_fd, length, FILE_CHUNK, plan.cpus[:1], 1, uffd, extents), why


def _fill(dfd: int, sfd: int, size: int, extents: list[tuple[int, int]], st: os.stat_result, node: int,
          plan: Plan, path: str, fill: dict[str, str | None], notes: list[str]) -> dict[int, int]:
    """Copy sfd's extents (its data) into dfd with their pages on node, verified, the rest left holes;
    where the new pages are. fill gets how the pages were allocated ("method") and, where userfaultfd
    was not used, why ("why"); notes gets what else the copy had to give up (its threads)."""
    from .scan import collect

    data = sum(hi - lo for lo, hi in extents)
    os.ftruncate(dfd, size)
    room = os.fstatvfs(dfd)
    if room.f_bavail * room.f_frsize < data:
        raise NumamoveError(f"no space for {data} bytes on this tmpfs ({room.f_bavail * room.f_frsize} bytes free)")
    dst = mmap.mmap(dfd, size, mmap.MAP_SHARED)
    kd, daddr, _ = _native.buffer_address(dst, writable=True, what="the copy")
    try:
        _native.bind_node(daddr, size, node)  # the new file's shared policy: every page on node
        # one pass over memory: each thread populates a piece (its pages allocated on node; a full
        # node is an error here, never a SIGBUS), has the kernel read the source into it, and reads
        # it again to compare while it is in cache. The source is never mapped: one that shrinks
        # is a short read, never a SIGBUS
        # Each page is allocated holding its bytes (userfaultfd), unless the mount gives huge pages
        # (which UFFDIO_COPY would not) or userfaultfd is refused (a seccomp filter): then populated.
        huge = huge_tmpfs(dfd)
        _native.stop_install()  # a signal stops the copy within one piece; the unnamed copy vanishes
        try:
            rep, why = copy_into_mapping(plan, daddr, sfd, size, uffd=huge is None, extents=extents)
            fill["method"], fill["why"] = rep.fill, huge or rep.fill_why
            if why:
                notes.append(why)
        except NativeError as exc:
            if exc.errno == errno.EILSEQ:
                raise VerificationError(f"{exc}; {path} was written to during the copy: copy discarded, "
                                        "original untouched") from None
            if exc.func == "pread" and exc.errno == errno.ENODATA:
                raise NumamoveError(f"{path} changed during the copy ({exc.detail}): copy discarded, "
                                    "original untouched") from None
            if exc.func == "pread":
                raise NumamoveError(f"cannot read {path}: {exc.strerror}; copy discarded") from None
            if exc.func == "madvise" and exc.errno == errno.EINVAL:
                raise NumamoveError("file --copy needs Linux 5.14 or later (MADV_POPULATE_WRITE)") from None
            if exc.func in ("madvise", "UFFDIO_COPY"):
                raise NumamoveError(f"no room for {data} bytes on node {node}: {exc.strerror}") from None
            raise
        finally:
            _native.stop_restore()
        if _native.stop_signal():
            raise Interrupted(_native.stop_signal())
        after = os.fstat(sfd)
        if (after.st_mtime_ns, after.st_size) != (st.st_mtime_ns, st.st_size):
            raise NumamoveError(f"{path} changed during the copy: copy discarded, original untouched")
        on_node: dict[int, int] = {}  # where the new file's pages are, from their PFNs (no query as root)
        ranges = [(daddr + lo, daddr + hi) for lo, hi in coarse(extents)]
        for (where, _kind, _huge), (pages, _bytes) in collect(os.getpid(), ranges).tally().items():
            on_node[where] = on_node.get(where, 0) + pages
        return on_node
    finally:
        del kd
        dst.close()


def _publish(dfd: int, ddir: int, dname: str, leased: int, st: os.stat_result, dest: str) -> None:
    """Give the unnamed copy its name: over output, or (leased >= 0: the original's descriptor,
    holding its write lease) exchanged with the original."""
    tmp = f".{dname}.numamove-{os.urandom(6).hex()}"  # secrets.token_hex's bytes, without its imports
    with _native.StopSignalsHeld():
        try:
            os.link(f"/proc/self/fd/{dfd}", tmp, dst_dir_fd=ddir, follow_symlinks=True)
        except OSError as exc:
            raise NumamoveError(f"cannot link the copy into {os.path.dirname(os.path.abspath(dest))}: "
                                f"{exc.strerror}") from None
        try:
            if leased < 0:
                os.rename(tmp, dname, src_dir_fd=ddir, dst_dir_fd=ddir)
                return
            _native.renameat2(ddir, tmp, ddir, dname, _native.RENAME_EXCHANGE)
        except BaseException as exc:  # whatever it is, the name linked above never stays behind
            os.unlink(tmp, dir_fd=ddir)
            if isinstance(exc, OSError):
                raise NumamoveError(f"cannot put the copy in place of {dest}: {exc.strerror}") from None
            raise
        out = os.stat(tmp, dir_fd=ddir, follow_symlinks=False)
        swapped = (out.st_dev, out.st_ino) != (st.st_dev, st.st_ino)
        # An opener of the old file that came before the exchange is held by the kernel until the
        # lease is released, and has broken it: it would write to a file about to be unlinked.
        # One that comes after finds the copy under the name. So look now, and undo if broken.
        if swapped or not _lease_held(leased):
            _native.renameat2(ddir, tmp, ddir, dname, _native.RENAME_EXCHANGE)
            os.unlink(tmp, dir_fd=ddir)
            why = "was replaced by another file" if swapped else "was opened by another process"
            raise NumamoveError(f"{dest} {why} during the copy: copy discarded, nothing changed")
        os.unlink(tmp, dir_fd=ddir)
