"""cffi build script: the header's marked block is the cdef, the .c files the source.

Used by setup.py (cffi_modules) and runnable on its own for an in-place build.
"""

from __future__ import annotations

import re
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
HEADER = HERE / "numamove.h"
SOURCES = ["numamove.c"]
CFLAGS = ["-O2", "-std=gnu11", "-Wall", "-Wextra", "-pthread"]


def cdef_text(header: str) -> str:
    """The declarations between the cffi markers, with comments removed."""
    m = re.search(r"/\* cffi-begin \*/(.*)/\* cffi-end \*/", header, re.S)
    if m is None:
        raise SystemExit(f"{HEADER}: cffi markers missing")
    body = re.sub(r"/\*.*?\*/", "", m.group(1), flags=re.S)
    return body


ffibuilder = FFI()
ffibuilder.cdef(cdef_text(HEADER.read_text()))
ffibuilder.set_source(
    "numamove._native_lib",
    '#include "numamove.h"',
    sources=[str((HERE / s).relative_to(HERE.parent)) for s in SOURCES],
    include_dirs=[str(HERE.relative_to(HERE.parent))],
    extra_compile_args=CFLAGS,
    libraries=["pthread"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=False)
