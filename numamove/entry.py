"""The `numamove` command's entry point: the fast path for `proc` and `file`, click for everything else.

`numamove proc PID... --to N` and `numamove file PATH... --to N` with the common options are
parsed by numamove.fastargs and run by numamove.commands without importing click (~30 ms,
half of a small run's wall time).
Anything else (help, another command, an option or value the fast parser does not accept)
goes to the click CLI, which gives the same result for everything the fast path takes
(tests/test_fastargs.py checks that on generated command lines) and the usage errors.
Either way every error is one line on stderr and a documented exit code.
"""

from __future__ import annotations

import os
import sys

from .errors import EXIT_FAILURE, NumamoveError

TYPE_CHECKING = False  # typing's own constant to mypy; importing typing costs start-up ~4 ms
if TYPE_CHECKING:  # collections.abc too: importing it builds collections, ~2 ms of a 20 ms run
    from collections.abc import Callable
    from typing import NoReturn


def fail(msg: str, code: int) -> NoReturn:
    sys.stderr.write(f"numamove: error: {msg}\n")
    sys.stderr.flush()
    sys.exit(code)


def guarded(run: Callable[[], None]) -> int:
    """Run a command, mapping numamove's errors, ^C and a closed pipe to one line and an exit code."""
    try:
        run()
    except NumamoveError as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except BrokenPipeError:
        return EXIT_FAILURE
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the command and turn every error into one line and an exit code."""
    try:
        return _dispatch(sys.argv[1:] if argv is None else list(argv))
    except KeyboardInterrupt:  # ^C while a command's modules are still being imported
        fail("interrupted", 130)


def _dispatch(args: list[str]) -> int:
    if args[:1] == ["proc"] and not os.environ.get("_NUMAMOVE_COMPLETE"):
        from .fastargs import proc_params

        params = proc_params(args[1:])
        if params is not None:
            from .commands import proc_run

            return guarded(lambda: proc_run(**params))
    if args[:1] == ["file"] and not os.environ.get("_NUMAMOVE_COMPLETE"):
        from .fastargs import file_params

        fparams = file_params(args[1:])
        if fparams is not None:
            from .commands import file_run

            return guarded(lambda: file_run(**fparams))
    from .cli import click_main

    return click_main(args)
