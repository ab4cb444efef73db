"""Text that other users control: process names and command lines, paths, mount points.

Any user can name a process or a file with bytes that are not UTF-8 (`prctl(PR_SET_NAME)`, a
file named b"\\xff") or that hold control characters (a newline, a terminal escape). numamove
reads /proc as root for every process on the machine, so such text must never stop a run
(a strict decode raised UnicodeDecodeError: one such process anywhere ended every
`numamove proc`), and must never reach an operator's terminal or log as anything but one
escaped line.

- open_text: /proc and mountinfo files decoded as the file-system encoding with
  surrogateescape, exactly as os.fsdecode does: nothing raises, and a path read from
  /proc/PID/maps compares equal to the same path from os.readlink or argv.
- printable: a one-line, printable form for reports: an undecodable byte as \\xNN, a control
  character as its escape (\\n, \\x1b).
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing's own constant to mypy; importing typing costs start-up ~4 ms
if TYPE_CHECKING:
    from typing import TextIO

ENCODING = sys.getfilesystemencoding()
ERRORS = sys.getfilesystemencodeerrors()  # surrogateescape on Linux


def open_text(path: str) -> TextIO:
    """path opened for reading text that may hold any bytes (see the module's docstring)."""
    return open(path, encoding=ENCODING, errors=ERRORS)  # noqa: SIM115 - the caller's with closes it


def decode(data: bytes) -> str:
    return data.decode(ENCODING, ERRORS)


def printable(text: str) -> str:
    """text with every undecodable byte as \\xNN and every unprintable character escaped: one line that
    shows what the bytes were and can forge nothing (no newline, no terminal escape)."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        o = ord(ch)
        if 0xDC80 <= o <= 0xDCFF:  # a byte surrogateescape kept
            out.append(f"\\x{o - 0xDC00:02x}")
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)
