"""file --copy where others can write: links, holders, openers during the copy, signals, metadata."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import seccomp_helper
from test_cli import run
from workload_helper import died_starting

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="leases on others' files and chown need root")
SHM = "/dev/shm"


@pytest.fixture
def shm_file() -> Iterator[str]:
    path = f"{SHM}/numamove-fc-{os.getpid()}"
    with open(path, "wb") as fh:
        fh.write(os.urandom(4 << 20))
    yield path
    for name in os.listdir(SHM):
        if name.startswith(f"numamove-fc-{os.getpid()}") or name.startswith(f".numamove-fc-{os.getpid()}"):
            os.unlink(os.path.join(SHM, name))


def leftovers(path: str) -> list[str]:
    base = os.path.basename(path)
    return [n for n in os.listdir(os.path.dirname(path)) if n.startswith(f".{base}.numamove-")]


def test_a_symlink_is_refused_and_both_stay_as_they_were(shm_file: str) -> None:
    """--copy on a link would replace the link with a copy and split it from its file: one line, exit 2."""
    link = shm_file + "-link"
    os.symlink(shm_file, link)
    before = os.stat(shm_file)
    code, out, err = run("file", link, "--to", "0", "--copy")
    assert code == 2 and "symbolic link" in err and err.count("\n") == 1
    assert os.path.islink(link) and os.readlink(link) == shm_file
    assert os.stat(shm_file).st_ino == before.st_ino


def test_in_place_a_symlink_is_refused_and_its_file_not_touched(shm_file: str) -> None:
    """In place too, numamove acts on the file it opened, never through a link in a shared directory."""
    link = shm_file + "-link"
    os.symlink(shm_file, link)
    code, out, err = run("file", link, "--to", "0", "--json")
    assert code == 2 and "symbolic link" in err and shm_file in err and err.count("\n") == 1
    doc = json.loads(out)  # the one file's outcome, as for proc's targets
    assert doc["files"] == [] and [t["outcome"] for t in doc["targets"]] == ["failed"]
    assert doc["targets"][0]["exit_code"] == 2 and "symbolic link" in doc["targets"][0]["reason"]
    assert os.path.islink(link)


@pytest.mark.parametrize("copy", [False, True])
def test_one_bad_file_among_several_never_hides_what_was_done_to_the_others(shm_file: str, copy: bool) -> None:
    """`numamove file /dev/shm/*` where one name is a planted link: the files before and after it are still
    moved (or copied), the report shows each, the link is one line on stderr, and the exit code is 3 (partly
    done). numamove stopped at the link with exit 2, after moving, or replacing with a copy, the files
    before it, and said nothing of them."""
    from schemas import validate

    first, last = shm_file + "-a", shm_file + "-c"
    link = shm_file + "-b"
    data = {p: os.urandom(1 << 20) for p in (first, last)}
    for p, d in data.items():
        with open(p, "wb") as fh:
            fh.write(d)
    os.symlink(shm_file, link)
    before = {p: os.stat(p).st_ino for p in (first, last, shm_file)}
    extra = ["--copy"] if copy else []
    code, out, err = run("file", first, link, last, "--to", "0", "--json", *extra)
    assert code == 3, err
    assert err.count("\n") == 1 and "symbolic link" in err
    doc = json.loads(out)
    validate(doc, "file_copy" if copy else "file")
    assert [(t["file"], t["outcome"]) for t in doc["targets"]] == [
        (first, "copied" if copy else "moved"), (link, "failed"), (last, "copied" if copy else "moved")]
    done = [c["source"] for c in doc["copies"]] if copy else [f["file"] for f in doc["files"]]
    assert done == [first, last]
    for p, d in data.items():
        with open(p, "rb") as fh:
            assert fh.read() == d
        assert (os.stat(p).st_ino != before[p]) is copy  # a copy replaced it; in place it stayed
    assert os.stat(shm_file).st_ino == before[shm_file] and os.path.islink(link)
    code, out, err = run("file", first, link, last, "--to", "0", *extra)  # the text report names both files
    assert code == 3 and out.count(first) >= 1 and out.count(last) >= 1 and link not in out


def test_a_fifo_swapped_in_never_blocks_the_open(shm_file: str) -> None:
    """A FIFO planted under the name between a check and the open must not hang a root cron job:
    the open does not block, and the descriptor's type refuses it."""
    from numamove.errors import UsageError
    from numamove.files import check_file, open_file

    fifo = shm_file + "-fifo"
    os.mkfifo(fifo)
    fd = open_file(fifo, "test")  # would block forever without O_NONBLOCK (no writer)
    try:
        with pytest.raises(UsageError, match="not a regular file"):
            check_file(fd, fifo)
    finally:
        os.close(fd)
    code, _, err = run("file", fifo, "--to", "0")
    assert code == 2 and "not a regular file" in err


def test_in_place_a_file_under_someone_elses_lease_is_refused_without_waiting(shm_file: str) -> None:
    """The open never blocks: a file another process leases (another numamove's --copy) is one line, exit 1,
    at once, not a wait of the lease-break time that would also break that copy."""
    import fcntl

    old = signal.signal(signal.SIGIO, signal.SIG_IGN)
    fd = os.open(shm_file, os.O_RDONLY)
    try:
        fcntl.fcntl(fd, 1024, fcntl.F_WRLCK)  # F_SETLEASE
        t = time.monotonic()
        p = subprocess.run([sys.executable, "-m", "numamove", "file", shm_file, "--to", "0"], capture_output=True,
                           text=True, timeout=30)
        assert time.monotonic() - t < 10
        assert p.returncode == 1 and "leased by another process" in p.stderr and p.stderr.count("\n") == 1
    finally:
        os.close(fd)
        signal.signal(signal.SIGIO, old)


def test_a_file_someone_holds_open_is_refused(shm_file: str) -> None:
    """The write lease cannot be had while another process has the file open: exit 1, naming it."""
    holder = subprocess.Popen([sys.executable, "-c", f"f = open({shm_file!r}); import sys; sys.stdin.read()"],
                              stdin=subprocess.PIPE)
    try:
        time.sleep(0.3)
        code, _, err = run("file", shm_file, "--to", "0", "--copy")
        assert code == 1 and "open or mapped by" in err and f"PID {holder.pid}" in err
    finally:
        holder.kill()
        holder.wait()
    assert not leftovers(shm_file)


def test_a_process_mapping_the_file_under_another_name_is_named(shm_file: str) -> None:
    """The refusal names a process that mapped the file through a hard link and closed it: the file is
    known by its inode, not by the path given (a path in a shared directory proves nothing)."""
    alias = shm_file + ".alias"
    os.link(shm_file, alias)
    # libc's mmap: Python's mmap module would keep a descriptor of its own open
    holder = subprocess.Popen([sys.executable, "-c", "import ctypes, os, sys; libc = ctypes.CDLL(None); "
                               "libc.mmap.restype = ctypes.c_void_p; "
                               f"fd = os.open({alias!r}, os.O_RDONLY); assert libc.mmap(None, 4096, 1, 1, fd, 0) != "
                               "ctypes.c_void_p(-1).value; os.close(fd); print(flush=True); sys.stdin.read()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"\n"
        code, _, err = run("file", shm_file, "--to", "0", "--copy")
        assert code == 1 and "open or mapped by" in err and f"PID {holder.pid}" in err, err
    finally:
        holder.kill()
        holder.wait()
        os.unlink(alias)
    assert not leftovers(shm_file)


def test_an_open_during_the_copy_aborts_it_and_loses_nothing(shm_file: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process that opens the file mid-copy breaks the lease: the copy is discarded, the original (and
    that process's view of it) untouched, nothing left behind."""
    import numamove.filecopy as filecopy

    real = filecopy.copy_into_mapping
    opener: list[subprocess.Popen[bytes]] = []

    def copy_while_someone_opens(*args: Any, **kw: Any) -> Any:
        opener.append(subprocess.Popen([sys.executable, "-c", f"open({shm_file!r}, 'r+b').write(b'W')"]))
        time.sleep(0.5)  # the open is now waiting on numamove's lease
        return real(*args, **kw)

    monkeypatch.setattr(filecopy, "copy_into_mapping", copy_while_someone_opens)
    ino = os.stat(shm_file).st_ino
    code, _, err = run("file", shm_file, "--to", "0", "--copy")
    assert code == 1 and "opened by another process" in err, err
    assert opener[0].wait(timeout=60) == 0
    assert os.stat(shm_file).st_ino == ino  # the writer wrote to the file that is still there
    with open(shm_file, "rb") as fh:
        assert fh.read(1) == b"W"
    assert not leftovers(shm_file)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_copy_leaves_nothing_behind(sig: int) -> None:
    """The copy is an unnamed file until it is complete: killed at any point, no temporary name remains
    and the original is intact."""
    path = f"{SHM}/numamove-fc-sig-{os.getpid()}"
    subprocess.run(["dd", "if=/dev/urandom", f"of={path}", "bs=1M", "count=256", "status=none"], check=True)
    digest = subprocess.run(["md5sum", path], capture_output=True, text=True, check=True).stdout.split()[0]
    try:
        p = subprocess.Popen([sys.executable, "-m", "numamove", "file", path, "--to", "0", "--copy", "-q"],
                             stderr=subprocess.PIPE)
        time.sleep(1.0)  # start-up and well into the copy
        p.send_signal(sig)
        p.wait(timeout=60)
        assert not leftovers(path)
        assert subprocess.run(["md5sum", path], capture_output=True, text=True).stdout.split()[0] == digest
    finally:
        os.unlink(path)


def test_metadata_that_cannot_be_kept_is_reported(shm_file: str) -> None:
    """An extended attribute is carried over; the report lists what was not (here: nothing)."""
    try:
        os.setxattr(shm_file, "user.numamove", b"kept")
    except OSError:
        pytest.skip("this tmpfs keeps no user extended attributes")
    code, out, err = run("file", shm_file, "--to", "0", "--copy", "--json")
    assert code == 0, err
    assert json.loads(out)["copies"][0]["notes"] == []
    assert os.getxattr(shm_file, "user.numamove") == b"kept"


def test_fault_suite_kills_file_copy_at_random_points() -> None:
    """file --copy killed with SIGKILL, SIGINT or SIGTERM at random moments: the original keeps every byte,
    no temporary file remains, and a copy that finished is the original's bytes."""
    import hashlib
    import random

    rng = random.Random(99)
    path = f"{SHM}/numamove-fc-fault-{os.getpid()}"
    data = os.urandom(64 << 20)
    digest = hashlib.sha256(data).hexdigest()
    faults = verified = 0
    try:
        with open(path, "wb") as fh:
            fh.write(data)
        for _ in range(12):
            sig = rng.choice([signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
            p = subprocess.Popen([sys.executable, "-m", "numamove", "file", path, "--to", "0", "--copy", "-q"],
                                 stderr=subprocess.PIPE, text=True)
            time.sleep(rng.uniform(0.0, 0.4))
            p.send_signal(sig)
            _, err = p.communicate(timeout=60)
            faults += 1
            assert p.returncode in (0, -9, 128 + sig, -sig) or died_starting(p.returncode, err), (p.returncode, err)
            with open(path, "rb") as fh:
                assert hashlib.sha256(fh.read()).hexdigest() == digest
            verified += len(data)
            assert not leftovers(path)
        print(f"fault suite (file --copy, host): {faults} faults injected, {verified} bytes verified, 0 bytes lost")
    finally:
        os.unlink(path)


def test_a_source_truncated_during_an_output_copy_is_an_error_not_a_sigbus(
        shm_file: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The source is read, never mapped: truncated mid-copy it ends the copy with one line, exit 1, nothing
    published (a mapped source would have killed numamove with SIGBUS)."""
    import numamove.filecopy as filecopy

    real = filecopy.copy_into_mapping
    out = shm_file + "-out"

    def copy_while_someone_truncates(*args: Any, **kw: Any) -> Any:
        os.truncate(shm_file, 1 << 20)
        return real(*args, **kw)

    monkeypatch.setattr(filecopy, "copy_into_mapping", copy_while_someone_truncates)
    code, _, err = run("file", shm_file, "--to", "0", "--copy", "--output", out)
    assert code == 1 and "changed during the copy (the source ended at byte 1048576 of" in err, err
    assert err.count("\n") == 1 and not os.path.exists(out) and not leftovers(out)


def test_a_source_written_during_an_output_copy_is_caught(shm_file: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """--output takes no lease (the source stays): a write to it mid-copy is caught, nothing is published."""
    import numamove.filecopy as filecopy

    real = filecopy.copy_into_mapping
    out = shm_file + "-out"

    def copy_while_someone_writes(*args: Any, **kw: Any) -> Any:
        res = real(*args, **kw)
        fd = os.open(shm_file, os.O_WRONLY)
        os.pwrite(fd, b"changed", 0)
        os.close(fd)
        return res

    monkeypatch.setattr(filecopy, "copy_into_mapping", copy_while_someone_writes)
    code, _, err = run("file", shm_file, "--to", "0", "--copy", "--output", out)
    assert code == 1 and "changed during the copy" in err, err
    assert not os.path.exists(out) and not leftovers(out)


def test_metadata_that_cannot_be_set_is_reported_not_raised(shm_file: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An extended attribute the copy cannot take (EPERM, ENOTSUP): the copy is made, the report names what was
    not kept, exit 0, no traceback."""
    import errno

    try:
        os.setxattr(shm_file, "user.numamove", b"v")
    except OSError:
        pytest.skip("this tmpfs keeps no user extended attributes")

    def refuse(*args: Any, **kw: Any) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "setxattr", refuse)
    code, out, err = run("file", shm_file, "--to", "0", "--copy", "--json")
    assert code == 0 and "Traceback" not in err
    notes = json.loads(out)["copies"][0]["notes"]
    assert notes == ["extended attribute user.numamove not kept (Operation not permitted)"]


@pytest.mark.parametrize("size", [1, 4095, 4097])
def test_a_file_smaller_than_its_last_page_moves_in_place_and_by_copy(size: int) -> None:
    """A file whose size is not a whole number of pages (a 1-byte file): in place and --copy both succeed
    and keep its bytes (mapping it rounded up to the page raised a traceback)."""
    path = f"/dev/shm/numamove-small-{os.getpid()}"
    data = os.urandom(size)
    with open(path, "wb") as f:
        f.write(data)
    try:
        code, out, err = run("file", path, "--to", "0", "--json", "-q")
        assert code == 0 and "Traceback" not in err, err
        code, out, err = run("file", path, "--to", "0", "--copy", "--json", "-q")
        assert code == 0, err
        with open(path, "rb") as f:
            assert f.read() == data
    finally:
        os.unlink(path)


def _copy_json(cmd_prefix: list[str], src: str, out: str) -> tuple[dict[str, Any], str]:
    p = subprocess.run(cmd_prefix + [sys.executable, "-m", "numamove", "file", src, "--to", "0", "--copy",
                                     "--output", out, "--json"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)["copies"][0], p.stderr


def test_a_copy_allocates_each_page_holding_its_bytes(shm_file: str) -> None:
    """On a tmpfs without huge pages the copy's pages come from UFFDIO_COPY (no zeroing pass), and the
    report says so; the bytes are the source's."""
    out = shm_file + "-out"
    copy, _ = _copy_json([], shm_file, out)
    assert copy["fill"] == {"method": "userfaultfd", "why": None}, copy["fill"]
    with open(shm_file, "rb") as a, open(out, "rb") as b:
        assert a.read() == b.read()
    code, text, err = run("file", shm_file, "--to", "0", "--copy", "--output", out + "2")
    assert code == 0 and "pages: allocated on the node holding their bytes (userfaultfd" in text, err


@pytest.mark.skipif(not seccomp_helper.supported(), reason="the seccomp filter is written for x86-64")
def test_userfaultfd_refused_by_seccomp_falls_back_to_populating(shm_file: str) -> None:
    """A container runtime's seccomp profile refuses userfaultfd: the copy is still made and verified, its
    pages populated, and the report names the refusal."""
    out = shm_file + "-out"
    copy, err = _copy_json([sys.executable, seccomp_helper.__file__, "--"], shm_file, out)
    assert copy["fill"] == {"method": "populate", "why": "userfaultfd(): Operation not permitted"}, copy["fill"]
    assert copy["verified"] and err == ""
    with open(shm_file, "rb") as a, open(out, "rb") as b:
        assert a.read() == b.read()


def _shmem_huge_kib() -> int:
    with open("/proc/meminfo") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("ShmemHugePages:"))


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_huge_page_tmpfs_keeps_its_huge_pages(shm_file: str, tmp_path: Any) -> None:
    """UFFDIO_COPY installs base pages only: into a tmpfs mounted huge=always the copy is populated
    instead, so its pages are huge as the mount asks, and the report says why."""
    mnt = str(tmp_path)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,huge=always", "none", mnt], check=True)
    try:
        out = os.path.join(mnt, "out")
        before = _shmem_huge_kib()
        copy, _ = _copy_json([], shm_file, out)
        assert copy["fill"] == {"method": "populate", "why": "its mount has huge=always"}, copy["fill"]
        assert _shmem_huge_kib() - before >= 4096  # the copy's 4 MiB are in huge pages
        with open(shm_file, "rb") as a, open(out, "rb") as b:
            assert a.read() == b.read()
    finally:
        subprocess.run(["umount", mnt], check=True)


def test_huge_tmpfs_reads_the_mount_options_and_shmem_enabled(tmp_path: Any) -> None:
    """huge_tmpfs: the mount holding the descriptor (by device) with huge= other than never, or
    shmem_enabled's force; anything else, no reason."""
    from numamove.filecopy import huge_tmpfs

    fd = os.open(str(tmp_path), os.O_RDONLY)
    st = os.fstat(fd)
    dev = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    other = f"{os.major(st.st_dev) + 1}:{os.minor(st.st_dev)}"
    mi, se = tmp_path / "mountinfo", tmp_path / "shmem_enabled"
    line = "42 27 {dev} / /mnt\\040x rw,relatime shared:1 - tmpfs none rw,size=65536k{opt}\n"
    se.write_text("always within_size advise [never] deny force\n")
    try:
        for opts, want in [(",huge=always", "its mount has huge=always"), (",huge=within_size,nr_inodes=9",
                           "its mount has huge=within_size"), (",huge=never", None), ("", None)]:
            mi.write_text(line.format(dev=other, opt=",huge=always") + line.format(dev=dev, opt=opts))
            assert huge_tmpfs(fd, str(mi), str(se)) == want, opts
        se.write_text("always within_size advise never deny [force]\n")
        assert huge_tmpfs(fd, str(mi), str(se)) == "shmem_enabled is force"
        assert huge_tmpfs(fd, str(tmp_path / "absent"), str(tmp_path / "absent")) == \
            "its mount options could not be read"
    finally:
        os.close(fd)


def _sparse(path: str, size: int, data_at: list[tuple[int, int]]) -> None:
    """A file of size bytes holding random bytes at data_at [(offset, length)], holes elsewhere."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, size)
        for off, n in data_at:
            os.pwrite(fd, os.urandom(n), off)
    finally:
        os.close(fd)


@pytest.mark.parametrize("fill", ["userfaultfd", "populate"])
def test_a_sparse_file_is_copied_with_its_holes(shm_file: str, fill: str) -> None:
    """A sparse source (64 MiB long, 1 MiB + 3 pages + 5 bytes of data, then a 123-byte hole): the copy is
    byte-exact and keeps the holes, as cp does (st_blocks equal), and the report tells the size from the data
    copied; an all-hole file copies to an all-hole file. Before, every hole was filled with zeros, and a
    sparse file larger than the node's free memory was refused."""
    src, out = shm_file + "-sparse", shm_file + "-sparse-out"
    _sparse(src, (64 << 20) + 123, [(8 << 20, 1 << 20), (40 << 20, 3 * 4096), (64 << 20, 5)])
    with open(src, "rb") as fh:
        want = fh.read()
    prefix = [] if fill == "userfaultfd" else [sys.executable, seccomp_helper.__file__, "--"]
    if fill == "populate" and not seccomp_helper.supported():
        pytest.skip("the seccomp filter is written for x86-64")
    copy, _ = _copy_json(prefix, src, out)
    assert copy["fill"]["method"] == fill, copy["fill"]
    with open(out, "rb") as fh:
        assert fh.read() == want
    blocks = (1 << 20) + 4 * 4096  # the 5 bytes take a page
    assert os.stat(out).st_blocks * 512 == os.stat(src).st_blocks * 512 == blocks
    data = (1 << 20) + 3 * 4096 + 123  # the last data runs to the end of the file
    assert (copy["bytes"], copy["data_bytes"], copy["pages_on_node"]) == ((64 << 20) + 123, data, {"0": blocks // 4096})
    code, text, err = run("file", src, "--to", "0", "--copy")  # in place of the original
    assert code == 0 and "(1.01 MiB of data, the rest holes)" in text, text
    with open(src, "rb") as fh:
        assert fh.read() == want
    assert os.stat(src).st_blocks * 512 == blocks
    holes = shm_file + "-holes"
    _sparse(holes, 1 << 30, [])
    copy, _ = _copy_json(prefix, holes, holes + "-out")
    assert (copy["bytes"], copy["data_bytes"], copy["fill"]["method"]) == (1 << 30, 0, "none")
    assert os.stat(holes + "-out").st_size == 1 << 30 and os.stat(holes + "-out").st_blocks == 0


def test_data_extents_are_the_files_data_page_aligned_and_merged(shm_file: str) -> None:
    """files.data_extents: SEEK_DATA/SEEK_HOLE ranges, widened to pages, merged when they touch, the last one
    clipped to the size; none for an all-hole file."""
    from numamove.files import data_extents

    path = shm_file + "-ext"
    _sparse(path, (10 << 20) + 100, [(4096 + 10, 20), (3 * 4096, 4096), (5 << 20, 8192), (10 << 20, 50)])
    fd = os.open(path, os.O_RDONLY)
    try:
        assert data_extents(fd, os.fstat(fd).st_size) == [
            (4096, 2 * 4096), (3 * 4096, 4 * 4096), (5 << 20, (5 << 20) + 8192), (10 << 20, (10 << 20) + 100)]
        assert data_extents(fd, 2 * 4096) == [(4096, 2 * 4096)]
    finally:
        os.close(fd)
    _sparse(path, 1 << 20, [])
    fd = os.open(path, os.O_RDONLY)
    try:
        assert data_extents(fd, 1 << 20) == []
    finally:
        os.close(fd)
    # many small holes: the exact walk lists every page; the in-place scan's walk stops after its budget
    # (64 extents and one a MiB walked) and takes the rest whole, holes and all
    _sparse(path, 8 << 20, [(off, 4096) for off in range(0, 8 << 20, 16384)])
    fd = os.open(path, os.O_RDONLY)
    try:
        exact = data_extents(fd, 8 << 20)
        assert exact == [(off, off + 4096) for off in range(0, 8 << 20, 16384)]
        rough = data_extents(fd, 8 << 20, exact=False)
        assert len(rough) == 66 and rough[:65] == exact[:65] and rough[-1] == (65 * 16384, 8 << 20)
        assert data_extents(fd, 8 << 20, gap=12288) == [(0, (8 << 20) - 12288)]  # it ends with a hole
    finally:
        os.close(fd)
    # at least half allocated: taken whole when not exact (no walk); all allocated: whole either way
    _sparse(path, 8 << 20, [(off, 4096) for off in range(0, 8 << 20, 8192)])
    fd = os.open(path, os.O_RDONLY)
    try:
        assert data_extents(fd, 8 << 20, exact=False) == [(0, 8 << 20)]
        assert len(data_extents(fd, 8 << 20)) == 1024
    finally:
        os.close(fd)
    _sparse(path, (8 << 20) + 5, [(0, (8 << 20) + 5)])
    fd = os.open(path, os.O_RDONLY)
    try:
        assert data_extents(fd, (8 << 20) + 5) == [(0, (8 << 20) + 5)]
    finally:
        os.close(fd)


def test_in_place_a_sparse_files_size_costs_nothing(shm_file: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`file` in place looks for resident pages in the file's data only, a window at a time: a 1 TiB sparse file
    holding two pages is read as two pages (before, mincore's vector and the page list were sized by the
    file's length: 256 MiB and 3 GiB for this one)."""
    from numamove import _native, files
    from numamove.pagemove import MoveOptions
    from numamove.topology import current_node, read_topology

    path = shm_file + "-tera"
    _sparse(path, 1 << 40, [(0, 4096), (700 << 30, 10)])
    looked: list[int] = []
    real = _native.resident_pages

    def spy(out: Any, addr: int, length: int, page_size: int) -> int:
        looked.append(length)
        return real(out, addr, length, page_size)

    monkeypatch.setattr(_native, "resident_pages", spy)
    topo = read_topology()
    node = topo.memory_nodes()[0]
    rep = files.move_file(path, topo, MoveOptions(node), current_node(topo), frozenset(os.sched_getaffinity(0)))
    assert sorted(looked) == [4096, 4096]
    assert rep.already[0] == 2 and not rep.failed


def test_coarse_merges_extents_parted_by_short_holes() -> None:
    """files.coarse: the ranges a scan of holes should cover: extents parted by at most gap bytes merged."""
    from numamove.files import coarse

    ext = [(0, 4096), (8192, 12288), (1 << 30, (1 << 30) + 4096)]
    assert coarse(ext) == [(0, 12288), (1 << 30, (1 << 30) + 4096)]
    assert coarse(ext, gap=4095) == ext
    assert coarse([]) == []
