"""numamove's exceptions: one base, narrow subclasses, and the exit codes they map to.

Each subclass also inherits the matching built-in where there is one, so callers
that catch ``ValueError`` or ``OSError`` keep working.
"""

from __future__ import annotations

# Exit codes, documented in the README.
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3


class NumamoveError(Exception):
    """Base of every numamove error; never raised directly."""

    exit_code = EXIT_FAILURE


class UsageError(NumamoveError, ValueError):
    """Input that can never work (a malformed option, an argument out of range)."""

    exit_code = EXIT_USAGE


class InvalidNodeError(UsageError):
    """A node that is not online on this machine, or has no memory or CPUs where needed."""


class NodeListError(UsageError):
    """A node or CPU list that does not parse ("1-", "a", "-1")."""


class SizeError(UsageError):
    """A size that does not parse or is not positive."""


class NodeUnavailableError(NumamoveError):
    """A valid node that cannot take these pages now: outside the target's cpuset, or too little free memory."""


class TopologyError(NumamoveError, OSError):
    """The machine's NUMA topology could not be read."""


class NativeError(NumamoveError, OSError):
    """A call into the C core failed; carries errno and the function's name."""

    def __init__(self, errno_: int, func: str, detail: str = "") -> None:
        import os

        msg = f"{os.strerror(errno_)} (originated from {func})"
        if detail:
            msg = f"{detail}: {msg}"
        super().__init__(errno_, msg)
        self.func = func
        self.detail = detail

    def __str__(self) -> str:
        return str(self.args[1])


class PinningError(NumamoveError, OSError):
    """A worker could not be pinned to the CPU its plan gave it."""


class OutputError(NumamoveError, OSError):
    """A file numamove was asked to write could not be written."""


class VerificationError(NumamoveError):
    """Copied bytes differ from their source."""


class Interrupted(NumamoveError):
    """SIGINT, SIGTERM or SIGHUP arrived: numamove stopped within one batch (exit 128 + the signal).

    report: what had moved when it stopped (proc, file in place), or None.
    """

    def __init__(self, signum: int, report: object = None) -> None:
        import signal

        self.signum = signum
        self.report = report
        self.exit_code = 128 + signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
