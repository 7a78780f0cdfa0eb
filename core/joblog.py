"""A job log's storage and scheduling (pycls setup/launch/collect style), independent of what a job computes.

Results go to an append-only JSONL `ResultLog`, one line per finished job keyed by its `key`. A line
is written by one `os.write` on an O_APPEND file and fsynced, so a kill at any instant leaves at most
a torn last line, which the next reader drops. `run_jobs` runs one shard of a job list into its own
file `<stem>.shard-<i>-of-<n>.jsonl`, held by one process through an flock, skipping the jobs already
recorded; a rerun after a crash resumes. `collect` merges the shard files into the log itself.
"""

import contextlib
import dataclasses
import errno
import fcntl
import glob
import json
import os
import re
import time
from typing import Callable, Iterator, Optional

from core import cli, files, values
from core.errors import UserError

SHARD_NAME = re.compile(r"\.shard-(\d+)-of-(\d+)\.jsonl$")


@dataclasses.dataclass
class LogContents:
    """What reading a log found: its rows (first of each key), the keys repeated, bytes of a torn tail dropped."""

    rows: list
    duplicate_keys: list
    dropped_bytes: int


def _parse_line(line: bytes) -> Optional[dict]:
    """The row a line holds, or None unless it is a JSON object with a string `key`."""
    try:
        row = json.loads(line)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are both ValueErrors
        return None
    return row if isinstance(row, dict) and isinstance(row.get("key"), str) else None


class ResultLog:
    """An append-only JSONL file of results, one object per line keyed by `key`; opening it repairs a torn tail."""

    def __init__(self, path: str, repair: bool = True):
        self.path = path
        self._fd = None
        self.contents = self.read(repair)
        self._keys = {row["key"] for row in self.contents.rows}

    def read(self, repair: bool = True) -> LogContents:
        """The log's rows; a torn last line is dropped (cut from the file if `repair`), a corrupt one before it refused.

        Readers that do not hold the shard's lock (analysis of a running sweep) must not repair: the
        "torn" line may be an append in progress.
        """
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return LogContents([], [], 0)
        lines = data.split(b"\n")
        tail = lines.pop()  # b"" when the file ends with a newline, else the unterminated last line
        good_bytes = len(data) - len(tail)
        if not tail and lines and _parse_line(lines[-1]) is None:
            tail = lines.pop() + b"\n"  # a terminated but unparsable last line is torn all the same
            good_bytes -= len(tail)
        rows, seen, duplicates = [], set(), []
        for number, line in enumerate(lines, 1):
            row = _parse_line(line)
            if row is None:
                raise UserError(f"{self.path} line {number} is not a JSON object with a string key; "
                                f"move the file away or delete that line")
            if row["key"] in seen:
                duplicates.append(row["key"])
            else:
                seen.add(row["key"])
                rows.append(row)
        if tail and repair:
            # Only a killed writer leaves an unterminated line, and only at the end: cut it so the next
            # append starts on a fresh line instead of gluing itself onto the torn one.
            os.truncate(self.path, good_bytes)
        return LogContents(rows, duplicates, len(tail))

    def done_keys(self) -> set:
        """The keys the log holds."""
        return set(self._keys)

    def append(self, key: str, result: dict) -> None:
        """Appends `{"key": key, **result}` as one line, fsynced; ValueError if the key is already there."""
        if key in self._keys:
            raise ValueError(f"{key!r} is already in {self.path}")
        if "key" in result:
            raise ValueError(f"result for {key!r} has its own 'key' field")
        line = (json.dumps({"key": key, **result}) + "\n").encode("utf-8")
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, files.FILE_MODE)
        written = os.write(self._fd, line)
        while written < len(line):  # a short write (a signal, a full disk) must not leave half a line mid-file
            written += os.write(self._fd, line[written:])
        os.fsync(self._fd)
        self._keys.add(key)

    def close(self) -> None:
        """Closes the file appends go to."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _lock_holder(path: str) -> str:
    """The pid holding an flock on `path` according to /proc/locks (Linux), or "unknown"."""
    try:
        inode = os.stat(path).st_ino
        with open("/proc/locks") as f:
            for entry in f:
                fields = entry.split()  # "1: FLOCK ADVISORY WRITE <pid> <maj>:<min>:<inode> 0 EOF"
                if len(fields) > 5 and fields[1] == "FLOCK" and fields[5].rsplit(":", 1)[-1] == str(inode):
                    return fields[4]
    except (OSError, IndexError):
        pass
    return "unknown"


@contextlib.contextmanager
def shard_lock(path: str) -> Iterator[None]:
    """Holds a non-blocking flock on `path` (created if absent); UserError naming the holder if taken."""
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, files.FILE_MODE)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            raise UserError(f"another process (pid {_lock_holder(path)}) is writing {path}; "
                            f"wait for it to finish or run another shard") from None
        yield  # the kernel drops the flock when the holder dies, even by SIGKILL
    finally:
        os.close(fd)


def shard(items: list, shard_index: int, num_shards: int) -> list:
    """The items of one shard: items[i] belongs to shard i % num_shards."""
    _check_shard(shard_index, num_shards)
    return list(items[shard_index::num_shards])


def _check_shard(shard_index, num_shards) -> None:
    """UserError unless 0 <= shard_index < num_shards."""
    if not isinstance(num_shards, int) or num_shards < 1:
        raise UserError(f"--num_shards must be a positive integer; got {num_shards!r}")
    if not isinstance(shard_index, int) or not 0 <= shard_index < num_shards:
        raise UserError(f"--shard_index must be in 0..{num_shards - 1} for {num_shards} shards; got {shard_index!r}")


def _env_int(env, name: str, default: Optional[int] = None) -> int:
    """An integer environment variable; UserError if it is not one."""
    value = env.get(name)
    if value is None and default is not None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise UserError(f"{name}={value!r} is not an integer; fix the job's environment or pass "
                        f"--shard_index and --num_shards") from None


def shard_from_env(shard_index: Optional[int] = None, num_shards: Optional[int] = None, env=None) -> tuple:
    """(shard_index, num_shards): the flags' values, else a SLURM job array's, else (0, 1); UserError if bad."""
    env = os.environ if env is None else env
    if shard_index is not None or num_shards is not None:
        if shard_index is None or num_shards is None:
            raise UserError("--shard_index and --num_shards go together; pass both or neither")
    elif "SLURM_ARRAY_TASK_ID" in env:
        # Array ids run MIN..MAX by STEP (`--array=4-12:4`), so the shard is the id's position in that run.
        offset = _env_int(env, "SLURM_ARRAY_TASK_ID") - _env_int(env, "SLURM_ARRAY_TASK_MIN", 0)
        shard_index = offset // max(_env_int(env, "SLURM_ARRAY_TASK_STEP", 1), 1)
        num_shards = _env_int(env, "SLURM_ARRAY_TASK_COUNT")
    else:
        shard_index, num_shards = 0, 1
    _check_shard(shard_index, num_shards)
    return shard_index, num_shards


def shard_path(log_path: str, shard_index: int, num_shards: int) -> str:
    """The file shard `shard_index` of `num_shards` writes: `<stem>.shard-<i>-of-<n>.jsonl` beside the log."""
    return f"{os.path.splitext(log_path)[0]}.shard-{shard_index}-of-{num_shards}.jsonl"


def shard_files(log_path: str) -> list:
    """The existing shard files of a log, by shard index; UserError if they mix shard counts."""
    stem = os.path.splitext(log_path)[0]
    found = {}
    for path in glob.glob(glob.escape(stem) + ".shard-*-of-*.jsonl"):
        match = SHARD_NAME.fullmatch(path[len(stem):])
        if match:  # a glob `*` may swallow dots, so only names that parse exactly are shards of this stem
            found[path] = (int(match.group(1)), int(match.group(2)))
    counts = sorted({n for _, n in found.values()})
    if len(counts) > 1:
        raise UserError(f"{stem}.shard-*.jsonl mixes shard counts {counts}; collect or move away one sweep's "
                        f"shard files before running with another --num_shards")
    return sorted(found, key=found.get)


def run_jobs(jobs: list, log_path: str, compute: Callable[[object], dict], shard_index: int = 0,
             num_shards: int = 1, progress: Callable[[str], None] = print,
             unit: Optional[Callable[[object], str]] = None, describe: Optional[Callable[[dict], str]] = None,
             budget_s: Optional[float] = None) -> list:
    """Runs compute(payload) for this shard's (key, payload) jobs not yet logged, appending each; returns keys run.

    With `budget_s`, no job starts once that many seconds have passed: the rest wait for a rerun.

    With `unit` (payload -> a name, e.g. the variant), whole units are dealt to shards, so the jobs of
    one unit (a variant's timing and its training seeds) run in one process. `describe` (result ->
    text) says what each finished job found in its progress line.
    """
    keys = [key for key, _ in jobs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"job list repeats keys: {sorted({k for k in keys if keys.count(k) > 1})}")
    _check_shard(shard_index, num_shards)
    files.prepare_out_dir(os.path.dirname(os.path.abspath(log_path)))
    path = shard_path(log_path, shard_index, num_shards)
    with shard_lock(path):
        shard_files(log_path)  # refuse now, not at collect time, to mix this shard count with another
        log = ResultLog(path)
        if log.contents.dropped_bytes:
            progress(f"{path}: dropped a torn last line ({log.contents.dropped_bytes} bytes)")
        # Jobs merged into the log by an earlier `collect` are done too, whichever shard ran them.
        done = log.done_keys() | (ResultLog(log_path).done_keys() if os.path.exists(log_path) else set())
        if unit is None:
            mine = shard(jobs, shard_index, num_shards)
        else:
            units = set(shard(list(dict.fromkeys(unit(payload) for _, payload in jobs)), shard_index, num_shards))
            mine = [(key, payload) for key, payload in jobs if unit(payload) in units]
        todo = [(key, payload) for key, payload in mine if key not in done]
        start, ran = time.monotonic(), []
        try:
            for count, (key, payload) in enumerate(todo, 1):
                cli.check_stop()  # between jobs: every finished job is in the log
                if budget_s is not None and time.monotonic() - start >= budget_s:
                    break
                result = compute(payload)
                log.append(key, result)
                ran.append(key)
                elapsed = time.monotonic() - start
                left = elapsed / count * (len(todo) - count)
                if budget_s is not None:
                    left = min(left, max(budget_s - elapsed, 0.0))
                said = f": {describe(result)}" if describe else " ..."
                progress(f"[{count}/{len(todo)}] {key}{said} (left: {values.format_duration(left)})")
        finally:
            log.close()
    return ran


def collect(log_path: str) -> list:
    """Merges the log and its shard files (first of each key wins) into `log_path`, atomically; returns the rows."""
    paths = shard_files(log_path)
    if not paths and not os.path.exists(log_path):
        raise UserError(f"no results to collect: neither {log_path} nor its shard files exist; check the path")
    rows, seen = [], set()
    for path in ([log_path] if os.path.exists(log_path) else []) + paths:
        # A running shard may be mid-append; its lock makes collect wait for the sweep rather than race it.
        with shard_lock(path) if path != log_path else contextlib.nullcontext():
            for row in ResultLog(path).contents.rows:
                if row["key"] not in seen:
                    seen.add(row["key"])
                    rows.append(row)
    files.atomic_write(log_path, "".join(json.dumps(row) + "\n" for row in rows))
    return rows
