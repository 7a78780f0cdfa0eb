"""The entry point every `python -m` program shares: absl flags of its own, one-line errors (exit 2),
signals as stop requests, and the same run in-process (`call`) as from the command line (`run`).

A long program (`run(main, safe_stops=True)`) never has an exception raised into it
by a signal: an exception raised from a signal handler can land inside a callback (a garbage
collector's, XLA's), where Python prints "Exception ignored" and carries on, so the stop is
lost. Instead SIGINT and SIGTERM set a request that its loops honour at safe points
(`stop_requested`, `check_stop`); a second signal stops at once. The run then ends with one
`interrupted: ...` line and the conventional exit status 128 + the signal's number.
"""

import contextlib
import math
import os
import signal
import sys
import threading
from typing import Optional

from absl import flags, logging

from core.errors import UserError

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A stop the user asked for, raised at a safe point (or at once on a second signal); names the signal."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Stopped(Exception):
    """Raised by a program's main after an interruption: `run` prints `interrupted: <message>`, exits 128 + signal."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = signum

    @classmethod
    def after(cls, interrupt: KeyboardInterrupt, message: str) -> "Stopped":
        """The stop of a caught interruption (a plain KeyboardInterrupt is Ctrl-C's)."""
        return cls(message, getattr(interrupt, "signum", signal.SIGINT))


class _Requests:
    """The process's pending stop request: the first signal's number, None while none came."""

    signum: Optional[int] = None
    depth = 0  # nesting of stop_at_safe_points blocks
    previous: dict = {}


def stop_requested() -> Optional[int]:
    """The signal that asked this process to stop at its next safe point, or None."""
    return _Requests.signum


def check_stop() -> None:
    """A safe point: raises Interrupted when a stop was asked for."""
    if _Requests.signum is not None:
        raise Interrupted(_Requests.signum)


def _request(signum, frame):
    """First signal: a request for the loops; a second one stops at once, as Ctrl-C does by default."""
    del frame
    if _Requests.signum is not None:
        raise Interrupted(signum)
    _Requests.signum = signum
    sys.stderr.write(f"\n{signal.Signals(signum).name}: stopping at the next safe point (again to stop at once)\n")
    sys.stderr.flush()


@contextlib.contextmanager
def stop_at_safe_points():
    """Within the block SIGINT and SIGTERM request a stop instead of raising (main thread only; nests)."""
    install = threading.current_thread() is threading.main_thread() and _Requests.depth == 0
    if install:
        _Requests.signum = None
        _Requests.previous = {signum: signal.signal(signum, _request) for signum in _STOP_SIGNALS}
    _Requests.depth += 1
    try:
        yield
    finally:
        _Requests.depth -= 1
        if install:
            for signum, handler in _Requests.previous.items():
                signal.signal(signum, handler)
            _Requests.previous = {}


def require_finite(*holders) -> None:
    """Makes absl float flags refuse NaN and infinity, which absl's bounds let through."""
    for holder in holders:
        flags.register_validator(holder, lambda value: value is None or math.isfinite(value),
                                 message=f"--{holder.name} must be a finite number")


def _interrupt(signum, frame):
    """SIGTERM (a scheduler's stop) ends a short program as Ctrl-C does."""
    del frame
    raise Interrupted(signum)


HELP_ARGUMENTS = ("--help", "-help", "-h", "--helpshort", "--helpfull", "-?")


def _usage(main, flag_values: flags.FlagValues) -> str:
    """What --help prints: the program's docstring, then every flag it defines with its one-line help."""
    module = sys.modules.get(main.__module__)
    about = (module.__doc__ or "").strip() if module else ""
    return f"{about}\n\n{flag_values.get_help()}\n" if about else f"{flag_values.get_help()}\n"


def _say(line: str) -> None:
    sys.stderr.write(f"{line}\n")
    sys.stderr.flush()


def call(main, flag_values: flags.FlagValues, argv, *, safe_stops: bool = False) -> int:
    """Runs a program in this process: parses `argv` (argv[0] its name) into `flag_values`, calls
    `main(argv)`, and returns the exit status the program ends with.

    Flag errors and UserErrors are one `error: ...` line on stderr (2); a Stopped is one
    `interrupted: ...` line (128 + the signal); --help prints the flags (0). Any other exception
    propagates with its traceback. Flags start from their defaults on every call. With
    `safe_stops` signals are stop requests for the whole run (see the module's docstring); else
    SIGTERM acts as Ctrl-C.
    """
    argv = list(argv)
    if any(arg in HELP_ARGUMENTS for arg in argv[1:]):
        sys.stdout.write(_usage(main, flag_values))
        return 0
    if not flags.FLAGS.is_parsed():  # absl's logging waits for the global flags; this program has its own
        flags.FLAGS.mark_as_parsed()
    logging.set_verbosity(logging.WARNING)  # JAX's INFO lines (backends it did not find) are noise here
    flag_values.unparse_flags()
    try:
        rest = flag_values(argv)
    except flags.Error as error:
        _say(f"error: {error} (see --help)")
        return 2
    if len(rest) > 1:
        _say(f"error: unexpected arguments {' '.join(rest[1:])!r} (flags take the form --name=value)")
        return 2
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread and not safe_stops else None
    try:
        with stop_at_safe_points() if safe_stops else contextlib.nullcontext():
            main(rest)
    except UserError as error:
        _say(f"error: {error}")
        return 2
    except Stopped as stopped:
        _say(f"interrupted: {stopped}")
        return 128 + stopped.signum
    except KeyboardInterrupt as interrupt:  # a short program, or a second signal outside every loop
        _say("interrupted")
        return 128 + getattr(interrupt, "signum", signal.SIGINT)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def run(main, flag_values: flags.FlagValues, *, safe_stops: bool = False) -> None:
    """A `python -m` program's entry: `call` with the command line, then the process ends with its status.

    A program that failed or was interrupted ends with `os._exit` once its streams are flushed:
    by then every `finally` has run, so what was measured is on disk, and the interpreter's
    finalisation could hang on a library's threads (TensorFlow's, after a data set check) or
    crash tearing the runtime down under work abandoned on XLA's threads (a compile the main
    thread stopped waiting for: a segmentation fault).
    """
    status = call(main, flag_values, sys.argv, safe_stops=safe_stops)
    if status:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(status)  # pylint: disable=protected-access
    sys.exit(0)
