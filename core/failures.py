"""Why a point could not be measured: out of memory, a compile error or another error.

Out of memory has many faces. XLA:GPU and XLA:CPU's Eigen path say RESOURCE_EXHAUSTED, but
XLA:CPU's YNNPACK kernels print "allocate of <N> failed." on the process's own stderr and then
raise only "INTERNAL: YNNPACK operation failed". So the native stderr is captured around every
compile and run (and replayed, so nothing the user would see is lost) and read together with
the exception's text.
"""

import contextlib
import os
import sys
import tempfile


# The statuses of a measured point or a sweep's job: the one table. Only "ok" rows carry
# measurements; "crashed": the process died measuring it; "diverged": training's loss went NaN.
OK, OUT_OF_MEMORY, COMPILE_ERROR, ERROR, CRASHED, DIVERGED = (
    "ok", "out_of_memory", "compile_error", "error", "crashed", "diverged")
STATUSES = (OK, OUT_OF_MEMORY, COMPILE_ERROR, ERROR, CRASHED, DIVERGED)

# Lower-case fragments that mean a failed allocation, in exception texts and in native stderr.
OUT_OF_MEMORY_MARKERS = ("resource_exhausted", "out of memory", "cannot allocate memory", "failed to allocate",
                         "bad_alloc")
# Only in native stderr: YNNPACK's "allocate of <40> failed." and allocators' equivalents.
NATIVE_OUT_OF_MEMORY_MARKERS = OUT_OF_MEMORY_MARKERS + ("allocate of",)


class MeasureFailed(Exception):
    """A point that could not be measured, with its results status and the first line of why."""

    def __init__(self, status: str, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


def xla_errors() -> tuple:
    """The exception types XLA raises (older jaxlibs name theirs XlaRuntimeError), and MemoryError."""
    import jax  # pylint: disable=import-outside-toplevel  # the ground floor imports no JAX until asked
    runtime_error = getattr(jax.errors, "JaxRuntimeError", None)
    if runtime_error is None:
        from jax._src.lib import xla_client  # jax < 0.4.36 only
        runtime_error = xla_client.XlaRuntimeError
    return (runtime_error, MemoryError)


def failure_status(error: BaseException, compiling: bool, native_stderr: str = "") -> str:
    """The results status of an error: out of memory wherever it shows, else by the stage."""
    text, native = str(error).lower(), native_stderr.lower()
    if (isinstance(error, MemoryError) or any(m in text for m in OUT_OF_MEMORY_MARKERS)
            or any(m in native for m in NATIVE_OUT_OF_MEMORY_MARKERS)):
        return OUT_OF_MEMORY
    return COMPILE_ERROR if compiling else ERROR


class NativeStderr:
    """Redirects file descriptor 2 to a temporary file for a block, then replays it to the real stderr.

    `text` holds what native code (XLA, its kernels, the allocator) wrote meanwhile.
    """

    def __init__(self):
        self.text = ""

    def __enter__(self) -> "NativeStderr":
        sys.stderr.flush()
        self._capture = tempfile.TemporaryFile()
        self._saved = os.dup(2)
        os.dup2(self._capture.fileno(), 2)
        return self

    def __exit__(self, *exc) -> None:
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._capture.seek(0)
        data = self._capture.read()
        self._capture.close()
        self.text = data.decode("utf-8", "replace")
        if data:
            os.write(2, data)


@contextlib.contextmanager
def classified(compiling: bool):
    """Runs a block, turning XLA errors into MeasureFailed with the right status."""
    native = NativeStderr()
    try:
        with native:
            yield
    except xla_errors() as error:
        status = failure_status(error, compiling, native.text)
        message = str(error).strip() or type(error).__name__
        if status == OUT_OF_MEMORY and not any(m in message.lower() for m in OUT_OF_MEMORY_MARKERS):
            evidence = next((line.strip() for line in native.text.splitlines()
                             if any(m in line.lower() for m in NATIVE_OUT_OF_MEMORY_MARKERS)), "")
            message = f"out of memory: {evidence or type(error).__name__} ({message})"
        raise MeasureFailed(status, message) from error
