"""Training metrics: one record per log or evaluation, to the console, `metrics.jsonl` and TensorBoard.

Top-1 and top-5 are recorded in percent, named so (`top1_pct`, `top5_pct`) in every sink; the
training loop measures fractions (and `fit` returns them so), and `percent` converts them.

On resume the records after the checkpoint's step are dropped (the steps are run again), from
`metrics.jsonl` by rewriting it atomically and from TensorBoard with a purge step. A torn last
line of `metrics.jsonl` (a killed writer) is dropped; a corrupt line before it is refused, naming
the file and the line.

A full disk (or quota) is a one-line UserError naming the file. TensorBoard events are written
here, in the caller's thread, as tensorboardX's protocol buffers through its `RecordWriter`, not
through its `SummaryWriter`: that one writes from a background thread which dies on a write
error with a traceback, after which its bounded queue fills and the next `add_scalar` blocks
forever, and an exit hook flushes the dead writer again. A few scalars per log cost nothing to
write in place, and every error then reaches the loop, at `write`, `sync` or `close`.
"""

import contextlib
import json
import os
import socket
import time
from typing import Optional

from core import files, values
from core.errors import UserError

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
PERCENT_FIELDS = {"top1": "top1_pct", "top5": "top5_pct"}  # fractions the loop measures: recorded in percent
_CONSOLE_NAMES = {"top1_pct": "top-1", "top5_pct": "top-5"}


def percent(fraction: float) -> float:
    """An accuracy the loop measures as a fraction, in percent: the one conversion, for every sink."""
    return 100.0 * float(fraction)


def recorded(metrics: dict) -> dict:
    """Metrics as floats under their recorded names, accuracies in percent."""
    return {PERCENT_FIELDS.get(name, name): percent(value) if name in PERCENT_FIELDS else float(value)
            for name, value in metrics.items()}


def _parse_record(line: str) -> Optional[dict]:
    """The record a line holds, or None unless it is a JSON object with an integer step."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    step = record.get("step") if isinstance(record, dict) else None
    return record if isinstance(step, int) and not isinstance(step, bool) else None


def _kept_lines(path: str, last_step: int) -> list[str]:
    """The lines of `path` up to `last_step`; a torn last line (a killed writer) is dropped, a corrupt one refused."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().split("\n")
    if lines[-1] == "":  # the file ends with a newline (or is empty)
        lines.pop()
    if lines and _parse_record(lines[-1]) is None:  # unterminated or unparsable: a write cut short
        lines.pop()
    kept = []
    for number, line in enumerate(lines, 1):
        record = _parse_record(line)
        if record is None:
            raise UserError(f"{path} line {number} is not a JSON object with an integer step; move the file away "
                            "or delete that line")
        if record["step"] <= last_step:
            kept.append(json.dumps(record) + "\n")
    return kept


@contextlib.contextmanager
def _full_disk_is_the_users(what: str, give_up):
    """Turns a full disk or quota inside the block into a one-line UserError about `what`; calls `give_up` first."""
    try:
        yield
    except OSError as error:
        reason = files.full_disk_reason(error)
        if reason is None:
            raise
        give_up()
        raise files.full_disk_error(f"cannot write {what}", reason, "--workdir") from error


def _close_quietly(handle) -> None:
    """Closes a file whose write failed and was reported; the retry of its buffered data fails again.

    Python's buffered files close the file descriptor even when that last flush fails, so nothing
    is left for the garbage collector to retry (and report).
    """
    try:
        handle.close()
    except OSError:
        pass


class _EventFile:
    """A TensorBoard event file written in the caller's thread (see the module's docstring)."""

    def __init__(self, directory: str, purge_step: Optional[int]):
        # pylint: disable=import-outside-toplevel  # only runs that ask for TensorBoard pay for it
        from tensorboardX.proto import event_pb2, summary_pb2
        from tensorboardX.record_writer import RecordWriter
        self._event_pb2, self._summary_pb2 = event_pb2, summary_pb2
        os.makedirs(directory, exist_ok=True)
        self._records = RecordWriter(_new_event_path(directory))
        self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
        if purge_step is not None:  # as SummaryWriter(purge_step=) does: TensorBoard drops the later steps before it
            self._write(event_pb2.Event(step=purge_step, file_version="brain.Event:2"))
            self._write(event_pb2.Event(step=purge_step, session_log=event_pb2.SessionLog(
                status=event_pb2.SessionLog.START)))

    def _write(self, event) -> None:
        """Appends one event (to the file's buffer)."""
        self._records.write(event.SerializeToString())

    def add(self, step: int, scalars: dict) -> None:
        """Appends one scalar event per tag at `step`."""
        now = time.time()
        for tag, value in scalars.items():
            summary = self._summary_pb2.Summary(value=[self._summary_pb2.Summary.Value(tag=tag, simple_value=value)])
            self._write(self._event_pb2.Event(wall_time=now, step=step, summary=summary))

    def flush(self) -> None:
        """Writes the buffered events and fsyncs them."""
        self._records.flush()

    def close(self) -> None:
        """Flushes and closes the file."""
        self._records.flush()
        self._records.close()

    def abandon(self) -> None:
        """Closes the file without caring that its buffered events cannot be written."""
        _close_quietly(self._records)


def _new_event_path(directory: str) -> str:
    """A fresh event file name, as TensorBoard expects them; never one an earlier run of the same second wrote."""
    base = os.path.join(directory, f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}")
    path, number = base, 0
    while os.path.exists(path):
        number += 1
        path = f"{base}.{number}"
    return path


class MetricsLog:
    """Writes metric records where asked; `workdir=None` keeps them in memory only."""

    def __init__(self, workdir: Optional[str], *, start_step: int, total_steps: int, batch_size: int,
                 console: bool, tensorboard: bool):
        self.records: list[dict] = []
        self.total_steps = total_steps
        self._batch_size = batch_size
        self._console = console
        self._file = None
        self._events = None
        if workdir is None:
            return
        self._path = os.path.join(workdir, METRICS_FILE)
        self._events_dir = os.path.join(workdir, TENSORBOARD_DIR)
        if os.path.exists(self._path):
            files.atomic_write(self._path, "".join(_kept_lines(self._path, start_step)))
        with self._metrics_writes():
            self._file = open(self._path, "a", encoding="utf-8")  # pylint: disable=consider-using-with
        if tensorboard:
            with self._events_writes():
                self._events = _EventFile(self._events_dir, start_step + 1 if start_step else None)

    def _metrics_writes(self):
        """Where metrics.jsonl is written: a full disk is the user's, and the file is then left alone."""
        return _full_disk_is_the_users(self._path, self._abandon_file)

    def _events_writes(self):
        """Where TensorBoard events are written: a full disk is the user's, and they are then left alone."""
        return _full_disk_is_the_users(f"TensorBoard events in {self._events_dir}", self._abandon_events)

    def _abandon_file(self) -> None:
        """Stops writing metrics.jsonl after a reported failure (its torn last line is dropped on resume)."""
        if self._file is not None:
            _close_quietly(self._file)
            self._file = None

    def _abandon_events(self) -> None:
        """Stops writing TensorBoard events after a reported failure."""
        if self._events is not None:
            self._events.abandon()
            self._events = None

    def time_left_s(self, record: dict) -> Optional[float]:
        """The time the remaining steps take at a training record's rate (None without one)."""
        rate = record.get("images_per_s")
        return (self.total_steps - record["step"]) * self._batch_size / rate if rate else None

    def write(self, split: str, step: int, metrics: dict) -> None:
        """Records `metrics` (numbers; top1 and top5 as fractions) of `split` ("train" or "eval") at `step`."""
        values = recorded(metrics)
        record = {"step": step, "split": split, **values}
        self.records.append(record)
        if self._file is not None:
            with self._metrics_writes():
                self._file.write(json.dumps(record) + "\n")
                self._file.flush()
        if self._events is not None:
            with self._events_writes():
                self._events.add(step, {f"{split}/{name}": value for name, value in values.items()})
        if self._console:
            print(self._line(record), flush=True)

    def _line(self, record: dict) -> str:
        """A record as one console line."""
        step = record["step"]
        parts = [f"[{record['split']}] step {step}/{self.total_steps}"]
        if "epoch" in record:
            parts.append(f"epoch {record['epoch']:.2f}")
        parts.append(f"loss {record['loss']:.4f}")
        parts += [f"{label} {record[name]:.2f} %" for name, label in _CONSOLE_NAMES.items() if name in record]
        if "images_per_s" in record:
            parts.append(f"{record['images_per_s']:,.0f} img/s")
        if "learning_rate" in record:
            parts.append(f"lr {record['learning_rate']:.4g}")
        left = self.time_left_s(record)
        if left is not None:
            parts.append(f"left {values.format_duration(left)}")
        return "  ".join(parts)

    def sync(self) -> None:
        """Makes what was written durable (at checkpoints); a write the disk refused is a UserError by here."""
        if self._file is not None:
            with self._metrics_writes():
                self._file.flush()
                os.fsync(self._file.fileno())
        if self._events is not None:
            with self._events_writes():
                self._events.flush()

    def close(self) -> None:
        """Flushes and closes the files, both even when one fails."""
        try:
            if self._file is not None:
                with self._metrics_writes():
                    self._file.flush()
                    os.fsync(self._file.fileno())
                    self._file.close()
                self._file = None
        finally:
            if self._events is not None:
                with self._events_writes():
                    self._events.close()
                self._events = None
