"""The absl entry point every `python -m` front end shares: one-line errors (exit 2) and signals as stop requests.

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

from absl import app, flags, logging

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


def _parse_flags(argv):
    try:
        argv = flags.FLAGS(argv)
    except flags.Error as error:
        _fail(f"{error} (see --help)")
    if not flags.FLAGS["verbosity"].present:  # JAX's INFO lines (backends it did not find) are noise here
        logging.set_verbosity(logging.WARNING)
    return argv


def require_finite(*holders) -> None:
    """Makes absl float flags refuse NaN and infinity, which absl's bounds let through."""
    for holder in holders:
        flags.register_validator(holder, lambda value: value is None or math.isfinite(value),
                                 message=f"--{holder.name} must be a finite number")


def _interrupt(signum, frame):
    """SIGTERM (a scheduler's stop) ends a short program as Ctrl-C does."""
    del frame
    raise Interrupted(signum)


def _exit_interrupted(line: str, signum: int) -> None:
    """Says `line` and ends the process with 128 + signum, skipping the interpreter's finalisation.

    By now every `finally` has run, so what was measured is on disk. Finalisation is skipped
    because an interruption can abandon work on XLA's threads (a compile the main thread stopped
    waiting for), and tearing down the runtime under it crashes the process (a segmentation fault).
    """
    sys.stderr.write(f"{line}\n")
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(128 + signum)  # pylint: disable=protected-access


def _fail(message: str):
    """Says `error: message` and exits 2 at once: nothing was half-done, and the finalisation of
    libraries a check imported (TensorFlow's threads, for a data set) could keep the process alive."""
    sys.stderr.write(f"error: {message}\n")
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(2)  # pylint: disable=protected-access


def run(main, *, safe_stops: bool = False) -> None:
    """Runs an absl `main`: flag errors and UserErrors become one line on stderr and exit 2; Stopped
    becomes `interrupted: ...` and exit 128 + the signal. With `safe_stops` signals are stop requests
    for the whole run (see the module's docstring); else SIGTERM acts as Ctrl-C."""

    def guarded(argv):
        if len(argv) > 1:
            _fail(f"unexpected arguments {' '.join(argv[1:])!r} (flags take the form --name=value)")
        try:
            with stop_at_safe_points() if safe_stops else contextlib.nullcontext():
                return main(argv)
        except UserError as error:
            _fail(str(error))
        except Stopped as stopped:
            _exit_interrupted(f"interrupted: {stopped}", stopped.signum)
        except KeyboardInterrupt as interrupt:  # a short program, or a second signal outside every loop
            _exit_interrupted("interrupted", getattr(interrupt, "signum", signal.SIGINT))

    signal.signal(signal.SIGTERM, _interrupt)
    app.run(guarded, flags_parser=_parse_flags)
