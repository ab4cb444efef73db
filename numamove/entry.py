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

import errno
import os
import sys

from .errors import EXIT_FAILURE, NumamoveError

TYPE_CHECKING = False  # typing's own constant to mypy; importing typing costs start-up ~4 ms
if TYPE_CHECKING:  # collections.abc too: importing it builds collections, ~2 ms of a 20 ms run
    from collections.abc import Callable
    from typing import NoReturn


def fail(msg: str, code: int) -> NoReturn:
    say(f"numamove: error: {msg}")
    sys.exit(code)


def say(line: str) -> None:
    """One line on stderr, if stderr can still take it: printable, whatever names and paths it quotes."""
    if not line.isprintable():
        from .text import printable

        line = printable(line)
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, AttributeError):  # full, or closed (None): nowhere left to say it
        pass


def guarded(run: Callable[[], None]) -> int:
    """Run a command, mapping numamove's errors, ^C and a standard output that cannot be written
    to one line and an exit code."""
    try:
        try:
            run()
        except NumamoveError as exc:
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except OSError as exc:
            if not isinstance(exc, BrokenPipeError) and not _in_click_echo(exc):
                # a system error no step expected (too many open files, no memory for the kernel, an I/O
                # error): what it was, in one line
                where = f" ({exc.filename})" if exc.filename else ""
                fail(f"{exc.strerror or exc}{where}", EXIT_FAILURE)
            # a write to stdout that did not go through commands.echo: click's --help
            from .commands import Stdout, discard_stdout

            Stdout.lost = Stdout.lost or exc
            discard_stdout()
        except MemoryError:
            fail("out of memory", EXIT_FAILURE)
    except SystemExit as exc:  # the commands' own exit statuses (3: partly done, 128+N: a signal)
        return output_lost(exc.code if isinstance(exc.code, int) else EXIT_FAILURE)
    return output_lost(0)


def _in_click_echo(exc: BaseException) -> bool:
    """Whether exc came out of click.echo: in numamove only click's own --help and --version use it
    (its errors come back as exceptions, and numamove writes through commands.echo)."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "echo" and tb.tb_frame.f_globals.get("__name__") == "click.utils":
            return True
        tb = tb.tb_next
    return False


def output_lost(code: int) -> int:
    """The exit status once standard output failed (if it did; see commands.Stdout): after a move,
    still the move's, with the lost report named on stderr; otherwise 1. A closed pipe (the reader
    has what it wanted, as with `| head`) is not named."""
    if "numamove.commands" not in sys.modules:
        return code
    from .commands import Stdout

    lost = Stdout.lost
    if lost is None:
        return code
    quiet = lost.errno == errno.EPIPE
    if Stdout.after_move:
        if not quiet:
            say(f"numamove: warning: cannot write the report to standard output: {lost.strerror}; the move is "
                f"done, and the exit status ({code}) says how it went")
        return code
    if not quiet:
        say(f"numamove: error: cannot write to standard output: {lost.strerror}")
    return code or EXIT_FAILURE


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the command and turn every error into one line and an exit code."""
    if sys.stdout is None or sys.stderr is None:
        _hold_closed_descriptors()
    try:
        return _dispatch(sys.argv[1:] if argv is None else list(argv))
    except KeyboardInterrupt:  # ^C while a command's modules are still being imported
        fail("interrupted", 130)


def run() -> NoReturn:
    """The command's launchers (bin/numamove, python -m numamove): main, then leave at once.

    By the time main returns, every report line was written and flushed (commands.echo), every lock
    and temporary file released by its own `with` or `finally`, and the C engine's threads joined.
    What the interpreter would still do is tear down its modules and free every object one by one:
    4-6.5 ms of a 27-70 ms `proc` run on the development VM (medians of 30, small and 1 GiB processes
    alike), and ~25x that under TCG. numamove registers no atexit handler and starts no Python thread, so
    os._exit skips only that.

    The cyclic garbage collector runs every 100,000 net allocations of container objects instead of
    every 700: reading a process with 8,000 mappings makes ~50,000 (a Mapping, a list and a tuple or two
    each), and the collections they set off cost 1-2.7 ms of a 40 ms run (whole processes, medians of
    21, development VM). numamove makes few reference cycles (a caught exception's traceback), so a long
    run over thousands of processes still collects them, at most every 100,000 allocations.
    """
    import gc

    gc.set_threshold(100_000)
    try:
        code = main()
    except SystemExit as exc:  # fail() below main, or click's own exit
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else _message(exc.code))
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):  # already named by commands.echo, or closed
            pass
    os._exit(code & 0xFF)


def _message(text: object) -> int:
    say(str(text))
    return EXIT_FAILURE


def _hold_closed_descriptors() -> None:
    """Started with descriptor 1 or 2 closed (`>&-`): hold each on /dev/null, so that no file numamove
    opens later (a tmpfs file, a calibration) gets that number and something meant for a terminal is
    written into it. Output to a closed stdout is then a write error (commands.echo); to a closed
    stderr, dropped."""
    for fd in (1, 2):
        try:
            os.fstat(fd)
        except OSError:
            try:
                got = os.open(os.devnull, os.O_WRONLY)
            except OSError:
                return
            if got != fd:
                os.dup2(got, fd)
                os.close(got)
    if sys.stderr is None:  # warnings then go nowhere, instead of failing every write to stderr
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115 - the interpreter's own stream, kept open


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
