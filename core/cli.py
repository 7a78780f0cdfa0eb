"""The entry point every `python -m` program shares: absl flags of its own, one-line errors (exit 2),
signals as stop requests, and the same run in-process (`call`) as from the command line (`run`).

A long program (`run(main, safe_stops=True)`) never has an exception raised into it
by a signal: an exception raised from a signal handler can land inside a callback (a garbage
collector's, XLA's), where Python prints "Exception ignored" and carries on, so the stop is
lost. Instead SIGINT and SIGTERM set a request that its loops honour at safe points
(`stop_requested`, `check_stop`); a second signal stops at once. The run then ends with one
`interrupted: ...` line and the conventional exit status 128 + the signal's number.

A setting a program takes from a dataclass gets its flag from the field (`define_flags`): name,
type, default, and one-line help, bounds and choices in its metadata; `config_kwargs` reads the
parsed flags back as the dataclass's keyword arguments. Nothing about a field is written twice.
"""

import contextlib
import dataclasses
import math
import os
import signal
import sys
import threading
import types
import typing
from typing import Optional

from absl import flags, logging

from core import values
from core.errors import UserError

# The flags define_flags defines belong to the module calling it, where --help lists them.
flags.disclaim_key_flags()

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


_SCALAR_FLAGS = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float,
                 str: flags.DEFINE_string}
_LIST_ITEMS = (int, float, str)  # tuple[<one of these>, ...] fields take a comma-separated list flag


def _fields(config_type, only, skip) -> list[dataclasses.Field]:
    """The fields of dataclass `config_type` named in `only` (default: all) less those in `skip`, in order."""
    fields = dataclasses.fields(config_type)
    unknown = (set(only or ()) | set(skip)) - {field.name for field in fields}
    if unknown:
        raise TypeError(f"{config_type.__name__} has no field {', '.join(sorted(unknown))}")
    return [field for field in fields if (only is None or field.name in only) and field.name not in skip]


def _flag_type(config_type, field: dataclasses.Field) -> tuple[type, Optional[type]]:
    """(bool, int, float, str or tuple, the item type of a tuple) of a field's annotation, Optional left out."""
    annotation = typing.get_type_hints(config_type)[field.name]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kept = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        annotation = kept[0] if len(kept) == 1 else annotation
    items = typing.get_args(annotation)
    if typing.get_origin(annotation) is tuple and len(items) == 2 and items[1] is ... and items[0] in _LIST_ITEMS:
        return tuple, items[0]
    if annotation in _SCALAR_FLAGS:
        return annotation, None
    raise TypeError(f"{config_type.__name__}.{field.name}: no flag type for {annotation}; declare its flag by hand")


def _item_text(item) -> str:
    """A list flag's default item as a user writes it: 30.0 as 30, yet never a digit lost."""
    return f"{item:g}" if isinstance(item, float) and float(f"{item:g}") == item else str(item)


def define_flags(config_type, flag_values: flags.FlagValues, *, only=None, skip=(),
                 rename: Optional[dict] = None) -> dict:
    """Defines a flag per field of dataclass `config_type`; returns their FlagHolders by field name.

    The fields are those named in `only` (default: all) less those in `skip`. A flag is named as
    its field or by `rename` ({field: flag}), typed by the field's annotation (bool, int, float,
    str, Optional of those, or a tuple of int, float or str items as a list flag), defaults to the
    field's default, and takes from the field's metadata its one-line `help`, its `choices` (an
    enum) and its `lower_bound` and `upper_bound` (numbers). Float flags refuse NaN and infinity.
    A field no flag can be made from (no help, no default, another type) is a TypeError: a bug.
    """
    holders = {}
    for field in _fields(config_type, only, skip):
        name = (rename or {}).get(field.name, field.name)
        kind, item = _flag_type(config_type, field)
        if "help" not in field.metadata or field.default is dataclasses.MISSING:
            raise TypeError(f"{config_type.__name__}.{field.name} needs a default and a metadata help for --{name}")
        default, help_text = field.default, field.metadata["help"]
        bounds = {key: field.metadata[key] for key in ("lower_bound", "upper_bound") if key in field.metadata}
        if "choices" in field.metadata:
            holder = flags.DEFINE_enum(name, default, list(field.metadata["choices"]), help_text,
                                       flag_values=flag_values)
        elif kind is tuple:
            holder = flags.DEFINE_list(name, None if default is None else [_item_text(x) for x in default],
                                       help_text, flag_values=flag_values)
        else:
            holder = _SCALAR_FLAGS[kind](name, default, help_text, flag_values=flag_values, **bounds)
        if kind is float:
            require_finite(holder)
        holders[field.name] = holder
    return holders


def config_kwargs(config_type, flag_values: flags.FlagValues, *, only=None, skip=(),
                  rename: Optional[dict] = None, parsers: Optional[dict] = None) -> dict:
    """The parsed values of the flags `define_flags` defined (same `only`, `skip` and `rename`), by field name.

    A list flag's items become a tuple of the field's item type (a one-line UserError naming the
    flag on anything else, by core.values), or whatever `parsers[field](flag name, items)` makes.
    """
    kwargs = {}
    for field in _fields(config_type, only, skip):
        name = (rename or {}).get(field.name, field.name)
        value = flag_values[name].value
        item = _flag_type(config_type, field)[1]
        if field.name in (parsers or {}):
            value = parsers[field.name](name, value)
        elif item is not None and value is not None:
            value = tuple(value) if item is str else values.numbers(name, value, item)
        kwargs[field.name] = value
    return kwargs


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
