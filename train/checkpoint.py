"""Orbax checkpoints of the train state with a JSON record of the run, and resuming from them.

The record names what the state belongs to (model, data set, batch size, optimizer, seed) and
where the data stood, so a rerun resumes exactly or refuses clearly. Every field of a record is
checked before it is used: a damaged or crafted one is refused in one line naming the checkpoint
and the field. An unreadable newest checkpoint is skipped for the one before it, and the user is
told.

Saves are synchronous. An asynchronous save fails in orbax's background threads, which log each
failure with its traceback and hand the error to whichever later call happens to wait on them
(the next save, a close, or an interpreter already shutting down, where the event loops they
need are gone). A synchronous save raises in the caller, at `save()`, while the partial
checkpoint can still be removed and the previous one is untouched (orbax deletes old steps only
after a save finished). The training loop waits for the write; a checkpoint is written every
`checkpoint_every` steps, so that wait is a small share of a run. Since every failure now reaches
the caller as an exception, orbax's own error logs only repeat it (with tracebacks, above the
one-line message): they are dropped while a `Checkpoints` is open, and so are the echoes of the
writes a failed save leaves in flight (see `_closed_loop_echo`).
"""

import glob
import json
import logging as std_logging
import math
import os
import shutil
import sys
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp
from absl import logging

from core import files
from core.errors import UserError
from models.registry import MAX_RESOLUTION

FORMAT = 1
# How orbax names a step's directory while it is being written (not exported by orbax); newer
# versions may append more to it.
_TMP_SUFFIX = ".orbax-checkpoint-tmp"
_ORBAX_DIR = os.path.dirname(os.path.abspath(ocp.__file__))
# The fields of Batches.position(), each with its least value.
POSITION_MINIMUMS = {"epoch": 0, "batch": 0, "batch_size": 1, "process_count": 1}


class _DropOrbaxErrors(std_logging.Filter):
    """Drops orbax's error logs: each failure they describe reaches the caller as an exception."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        """False for an error record logged from orbax's own code."""
        return not (record.levelno >= std_logging.ERROR and record.pathname.startswith(_ORBAX_DIR))


def _closed_loop_echo(unraisable) -> bool:
    """Whether an unraisable exception is a write of a failed save finishing after orbax closed its event loop.

    A save that fails raises at its first failed write while tensorstore still runs the others;
    each of those, finishing, finds the loop it reports to closed, and tensorstore can only print
    that, as an unraisable exception without an object.
    """
    error = unraisable.exc_value
    return unraisable.object is None and isinstance(error, RuntimeError) and str(error) == "Event loop is closed"


class _Quiet:
    """While checkpoints are open: orbax's error logs and the echoes of a failed save are not printed."""

    def __init__(self):
        self._filter = _DropOrbaxErrors()
        self._previous_hook = None

    def start(self) -> None:
        """Installs the log filter and the unraisable-exception hook."""
        logging.get_absl_logger().addFilter(self._filter)
        self._previous_hook = sys.unraisablehook
        sys.unraisablehook = self._unraisable

    def _unraisable(self, unraisable) -> None:
        """Passes every unraisable exception but a failed save's echoes on to the hook before."""
        if not _closed_loop_echo(unraisable):
            self._previous_hook(unraisable)

    def stop(self) -> None:
        """Removes both (the hook only if no one replaced it since)."""
        logging.get_absl_logger().removeFilter(self._filter)
        if sys.unraisablehook == self._unraisable:  # pylint: disable=comparison-with-callable
            sys.unraisablehook = self._previous_hook


class Checkpoints:
    """The checkpoints of one work directory, newest `keep` kept; each save is on disk when it returns.

    `read_only` ones (an evaluation's) restore only: they create, clean up and save nothing, so a
    save in progress there keeps its temporary files. (Not orbax's own read_only, which logs
    warnings about the options it overrides on every open.)
    """

    def __init__(self, directory: str, keep: int, *, read_only: bool = False):
        self.directory = directory  # as the user gave it: messages name it so
        self._path = os.path.abspath(directory)  # orbax refuses relative paths
        self._read_only = read_only
        self._quiet = _Quiet()
        self._quiet.start()
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only,
                                               cleanup_tmp_directories=not read_only,
                                               enable_async_checkpointing=False)
        try:
            self._manager = ocp.CheckpointManager(self._path, options=options, item_names=("state", "record"))
        except Exception as error:
            self._quiet.stop()
            reason = files.full_disk_reason(error)
            if reason:
                raise files.full_disk_error(f"cannot create the checkpoints in {directory}", reason, "--workdir") from error
            raise

    def steps(self) -> list[int]:
        """The steps with a finished checkpoint, oldest first (a save cut short leaves none)."""
        return sorted(self._manager.all_steps())

    def save(self, state, record: dict) -> None:
        """Saves `state` (at its step) with `record`, unless that step is saved already.

        A full disk is a UserError naming the directory; the partial checkpoint is removed and the
        ones before it are kept.
        """
        if self._read_only:
            raise RuntimeError(f"{self.directory} was opened read-only: no checkpoint is saved there")
        step = int(jax.device_get(state.step))
        if step in self._manager.all_steps():
            return
        args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                                  record=ocp.args.JsonSave({**record, "format": FORMAT}))
        try:
            self._manager.save(step, args=args, force=True)
        except Exception as error:
            self._remove_partial(step)
            reason = files.full_disk_reason(error)
            if reason:
                raise files.full_disk_error(f"cannot save the checkpoint of step {step} in {self.directory}",
                                            reason, "--workdir", self._kept_note()) from error
            raise

    def _kept_note(self) -> str:
        """Which checkpoint a failed save leaves as the newest, for its message."""
        steps = self.steps()
        return f"; the checkpoint of step {steps[-1]} is kept" if steps else ""

    def _remove_partial(self, step: int) -> None:
        """Deletes what a failed save of `step` wrote (one process deletes, for all)."""
        if jax.process_index() != 0:
            return
        for path in glob.glob(os.path.join(glob.escape(self._path), f"{step}{_TMP_SUFFIX}*")):
            shutil.rmtree(path, ignore_errors=True)

    def wait(self) -> None:
        """Returns at once: saves are synchronous (kept for callers written for background saves)."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Releases the manager (and stops quieting orbax)."""
        try:
            self._manager.close()
        finally:
            self._quiet.stop()

    def _record(self, step: int) -> Any:
        """The JSON record saved with `step`, unchecked."""
        return self._manager.restore(step, args=ocp.args.Composite(record=ocp.args.JsonRestore()))["record"]

    def restore(self, abstract_state, expected: dict) -> Optional[tuple[Any, dict]]:
        """The newest readable checkpoint as (state, record), None when there is none.

        A checkpoint whose record disagrees with `expected` (another model, data set...) is a
        UserError naming both values, one whose record is damaged a UserError naming the field;
        an unreadable one is skipped for the one before it.
        """
        steps = self.steps()
        failures = []
        for step in reversed(steps):
            try:
                record = self._record(step)
            except Exception as error:  # pylint: disable=broad-except  # orbax raises many kinds on bad files
                failures.append((step, error))
                continue
            _RecordCheck(self.directory, step, record).check(expected)
            try:
                restored = self._manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state)))["state"]
            except Exception as error:  # pylint: disable=broad-except
                failures.append((step, error))
                continue
            for bad_step, error in failures:
                logging.warning("checkpoint at step %d in %s is unreadable (%s); resuming from step %d instead",
                                bad_step, self.directory, _first_line(error), step)
            return restored, record
        if failures:
            step, error = failures[0]
            raise UserError(f"no readable checkpoint in {self.directory}: the newest (step {step}) fails with "
                            f"{_first_line(error)}; move that directory away to start afresh")
        return None


def _first_line(error: Exception) -> str:
    """An exception's first line of text, short enough for a one-line message."""
    text = str(error).strip()
    return (text.splitlines()[0][:200] if text else type(error).__name__)


def _json_kind(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages."""
    kinds = ((bool, "boolean"), (str, "string"), ((int, float), "number"), (list, "array"), (dict, "object"))
    return next((name for kind, name in kinds if isinstance(value, kind)), "null")


def _is_int(value: Any) -> bool:
    """An integer as JSON gives one (not a boolean, not 4.0)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _kind_name(like: Any) -> str:
    """What a setting like `like` must be, for messages."""
    return "an integer" if _is_int(like) else f"a {_json_kind(like)}"


def _same_kind(value: Any, like: Any) -> bool:
    """Whether a record's value has the JSON type this run's setting has (an integer for an integer)."""
    if _is_int(like):
        return _is_int(value)
    if isinstance(like, float):
        return _json_kind(value) == "number" and math.isfinite(value)
    return _json_kind(value) == _json_kind(like)


def _short(value: Any) -> str:
    """A record's value as its JSON, cut to fit a one-line message."""
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _RecordCheck:
    """The checks of one checkpoint's record; each failure is one UserError naming the checkpoint and field."""

    def __init__(self, directory: str, step: int, record: Any):
        self.where = f"the checkpoint of step {step} in {directory}"
        self.fix = (f"move {os.path.join(directory, str(step))} away to resume from the one before, "
                    "or use another --workdir")
        self.step = step
        self.record = record

    def check(self, expected: dict) -> None:
        """Refuses a damaged record, one of another format, or one of another run (naming every difference)."""
        if not isinstance(self.record, dict):
            raise UserError(f"{self.where} is damaged: its record is a JSON {_json_kind(self.record)}, not an "
                            f"object; {self.fix}")
        fmt = self._present(self.record, "format", "format")
        if fmt != FORMAT:
            raise UserError(f"{self.where} has format {_short(fmt)}, not {FORMAT}; use another --workdir")
        self._settings(expected)
        self._integer(self.record, "resolution", "resolution", 1, MAX_RESOLUTION)
        self._integer(self.record, "num_classes", "num_classes", 1)
        self._position(expected.get("batch_size"))

    def _damaged(self, name: str, value: Any, wanted: str) -> UserError:
        """The error of a field whose value is not what a record holds there."""
        return UserError(f"{self.where} is damaged: its record's {name} is {_short(value)}, not {wanted}; {self.fix}")

    def _present(self, holder: dict, key: str, name: str) -> Any:
        """`holder[key]`, or the error of a record without it."""
        if key not in holder:
            raise UserError(f"{self.where} is damaged: its record has no {name}; {self.fix}")
        return holder[key]

    def _integer(self, holder: dict, key: str, name: str, low: int, high: Optional[int] = None) -> int:
        """`holder[key]`, refused unless an integer in low..high."""
        value = self._present(holder, key, name)
        if not _is_int(value) or value < low or (high is not None and value > high):
            wanted = f"an integer in {low}..{high}" if high is not None else f"an integer >= {low}"
            raise self._damaged(name, value, wanted)
        return value

    def _settings(self, expected: dict) -> None:
        """Each setting this run shares with its checkpoint: present, of its type, and equal (else another run)."""
        differences = []
        for key, value in expected.items():
            saved = self._present(self.record, key, key)
            if not _same_kind(saved, value):
                raise self._damaged(key, saved, _kind_name(value))
            if saved != value:
                differences.append(f"{key} {saved!r} (this run: {value!r})")
        if differences:
            raise UserError(f"{self.where} is of another run: {'; '.join(differences)}; "
                            "use another --workdir, or the checkpoint's settings to resume it")

    def _position(self, batch_size: Optional[int]) -> None:
        """Where the data stood: Batches.position()'s fields, in range and consistent with the step."""
        position = self._present(self.record, "position", "position")
        if not isinstance(position, dict):
            raise self._damaged("position", position, "an object")
        fields = {key: self._integer(position, key, f"position.{key}", low) for key, low in POSITION_MINIMUMS.items()}
        # Each step reads one batch and an epoch has at least one: a position past that is not real.
        if fields["epoch"] + fields["batch"] > self.step:
            raise UserError(f"{self.where} is damaged: its record's position (epoch {fields['epoch']}, batch "
                            f"{fields['batch']}) lies beyond the {self.step} batches its steps read; {self.fix}")
        # Each process reads its share of the global batch.
        if batch_size is not None and fields["batch_size"] * fields["process_count"] != batch_size:
            raise UserError(f"{self.where} is damaged: its record's position.batch_size {fields['batch_size']} on "
                            f"{fields['process_count']} process(es) does not make its batch_size {batch_size}; "
                            f"{self.fix}")
