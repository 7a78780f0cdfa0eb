"""The absl entry point every `python -m` front end shares: one-line errors, exit code 2.

It lives in `models` because every other package already depends on it.
"""

import math
import signal
import sys

from absl import app, flags, logging

from models.errors import UserError


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


def positive_integers(flag: str, values: list[str]) -> tuple[int, ...]:
    """A list flag's values as distinct positive integers, ascending; UserError names the flag."""
    try:
        numbers = tuple(int(v) for v in values)
    except ValueError:
        numbers = ()
    if not numbers or min(numbers) < 1:
        raise UserError(f"--{flag} takes positive integers; got {','.join(values)}")
    return tuple(sorted(set(numbers)))


def _interrupt(signum, frame):
    """SIGTERM (a scheduler's stop) ends the run as Ctrl-C does: cleanly, keeping what was done."""
    del signum, frame
    raise KeyboardInterrupt


def _fail(message: str):
    sys.stderr.write(f"error: {message}\n")
    sys.exit(2)


def run(main) -> None:
    """Runs an absl `main`, turning flag errors and UserErrors (bad input) into one line on stderr, exit 2."""

    def guarded(argv):
        if len(argv) > 1:
            _fail(f"unexpected arguments {' '.join(argv[1:])!r} (flags take the form --name=value)")
        try:
            return main(argv)
        except UserError as error:
            _fail(str(error))

    signal.signal(signal.SIGTERM, _interrupt)
    app.run(guarded, flags_parser=_parse_flags)
