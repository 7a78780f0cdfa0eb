"""Files the project writes: atomic replacement, the output directory's checks and its lock.

Every file a user keeps (results, figures, reports) is written through `atomic_write`: a
temporary file in the same directory, fsync, rename. A reader, or a crash at any instant,
sees either the old file or the new one, never half of one. Temporary files left by a killed
process carry `TEMP_PREFIX` and are swept by the next writer that holds the directory's lock.
"""

import errno
import fcntl
import glob
import json
import os
import stat
import tempfile
from typing import Any, Optional, Union

from core.errors import UserError

FULL_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
MAX_JSON_BYTES = 256 * 2**20  # far beyond any file this project writes; a bigger one is not ours
TEMP_PREFIX = ".tmp-"
LOCK_NAME = ".lock"
FILE_MODE = 0o644  # mkstemp creates 0600; results and figures are meant to be read by others


def atomic_write(path: str, data: Union[str, bytes]) -> None:
    """Replaces `path` with `data` (text as UTF-8) so that no one ever sees a partial file."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=TEMP_PREFIX)
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror}; free space or write elsewhere") from error
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException as error:
        os.unlink(tmp)
        if isinstance(error, OSError):  # a full disk, a quota: the old file stays, the message says why
            raise UserError(f"cannot write {path}: {error.strerror or error}; free space or write elsewhere") from error
        raise
    _fsync_directory(directory)  # the rename itself survives a power cut only once the directory is synced


def full_disk_reason(error: BaseException) -> Optional[str]:
    """The strerror of a full disk or quota when the exception, or one in its chain, is one; else None."""
    # orbax wraps tensorstore's errors in ValueErrors that keep only the text. RESOURCE_EXHAUSTED
    # alone is not enough: XLA says it of device memory too.
    reasons = {number: os.strerror(number) for number in FULL_DISK_ERRNOS}
    pending, seen = [error], set()
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        number = getattr(current, "errno", None)
        if number in reasons:
            return reasons[number]
        text = str(current)
        for reason in reasons.values():
            if reason in text:
                return reason
        pending += [current.__cause__, current.__context__]
        if isinstance(current, BaseExceptionGroup):
            pending += current.exceptions
    return None


def full_disk_error(what: str, reason: str, flag: str, note: str = "") -> UserError:
    """The one-line error of a write that found no space: what failed, why, and the fix (`flag` elsewhere)."""
    return UserError(f"{what}: {reason}; free space there or use another {flag}{note}")


class Malformed(ValueError):
    """What is wrong with a JSON file's contents, for its one-line message."""


def _refuse_constant(name: str):
    raise Malformed(f"{name} is not a number strict JSON allows")


def read_json(path: str, what: str, fix: str, check=None) -> Any:
    """The strict JSON in `path`, passed through `check` (which raises Malformed), or a one-line UserError.

    The message reads "<path> is not <what> (<why>); <fix>". A missing file raises
    FileNotFoundError for the caller to decide on. A FIFO or a device is never opened (that blocks
    or reads forever), nor a file too large to be ours.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise
    except OSError as error:
        raise UserError(f"cannot read {path}: {error.strerror}; fix its permissions or move it away") from None
    if not stat.S_ISREG(info.st_mode):
        raise UserError(f"{path} is not a regular file; move it away")
    if info.st_size > MAX_JSON_BYTES:
        raise UserError(f"{path} is {info.st_size / 2**20:.0f} MiB, too large to be {what}; {fix}")
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read().decode("utf-8"), parse_constant=_refuse_constant)
        return check(data) if check else data
    except OSError as error:
        raise UserError(f"cannot read {path}: {error.strerror}; fix its permissions or move it away") from None
    except (ValueError, KeyError, TypeError, RecursionError) as error:  # bad UTF-8, JSON, shape or huge ints
        reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise UserError(f"{path} is not {what} ({reason}); {fix}") from None


def _fsync_directory(directory: str) -> None:
    """Flushes a directory entry to disk; some file systems cannot, which costs only durability."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def sweep_temporaries(directory: str) -> list[str]:
    """Deletes the temporary files killed writers left in `directory`; call it holding the lock."""
    swept = []
    for path in glob.glob(os.path.join(glob.escape(directory), TEMP_PREFIX + "*")):
        try:
            os.unlink(path)
            swept.append(os.path.basename(path))
        except FileNotFoundError:
            pass
    return swept


def prepare_out_dir(path: str, flag: str = "--out") -> str:
    """Creates `path` if needed and checks it is a writable directory; UserError names the problem."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{flag}={path} exists and is not a directory; choose a directory")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create {flag}={path}: {error.strerror}; choose a writable location") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"{flag}={path} is not writable; choose a directory you can write to")
    return path


def check_replaceable(directory: str, names) -> None:
    """UserError unless each of `names` in `directory` is absent or a regular file that a rename can replace."""
    for name in names:
        path = os.path.join(directory, name)
        if os.path.lexists(path) and not os.path.isfile(path):
            raise UserError(f"{path} is in the way: it is not a regular file; move it away or choose another --out")


class DirectoryLock:
    """An exclusive lock on an output directory, held by one process at a time; released on exit.

    A `flock` on DIR/.lock: the kernel drops it when the holder dies, even by SIGKILL, so a
    killed run never leaves the directory locked. The holder's pid is written into the file
    for the message a second process gets.
    """

    def __init__(self, directory: str, what: str = "run", flag: str = "--out"):
        self.path = os.path.join(directory, LOCK_NAME)
        self.what = what
        self.flag = flag
        self._fd = None

    def __enter__(self) -> "DirectoryLock":
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        except OSError as error:
            raise UserError(f"cannot create the lock {self.path}: {error.strerror}; choose another {self.flag}") \
                from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise UserError(f"another {self.what} (pid {holder}) is writing to {os.path.dirname(self.path)}; "
                                f"wait for it to finish or choose another {self.flag}") from None
            raise
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode("ascii"))  # for the message a second process gets
        except OSError as error:
            os.close(fd)
            reason = full_disk_reason(error)
            if reason is None:
                raise
            raise full_disk_error(f"cannot write the lock {self.path}", reason, self.flag) from None
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing the last descriptor releases the flock
        self._fd = None
