"""The runtime configuration every timing runs with: the fastest honest one per backend, recorded.

XLA:CPU gives convolutions to YNNPACK fusions by default; XLA's Eigen path was measured faster on
the CPUs this project was developed on, and kept more of their cores busy, so
`--xla_cpu_experimental_ynn_fusion_type=` (empty: no YNNPACK fusions) is the CPU default here
(`python -m measure.bench` prints the comparison on the user's machine; BUILD.md has the
developers' figures). XLA:CPU's default pipeline also fuses a deep residual network badly: in a chain of
residual blocks, the fusion that makes a block's output recomputes the whole residual stream before it
from every earlier block's convolution output, so a block's time grows with the blocks before it and
ResNet-152 took 1.6 times as long as with `--xla_cpu_opt_preset=CPU_OPT_PRESET_FAST_COMPILE`, which
leaves that fusion out (the other networks within a few per cent either way, compiles faster); that
preset is chosen too. Both only touch the CPU backend; GPUs run XLA's defaults. No XLA setting
tried (oneDNN, XNNPACK or YNNPACK fusions) makes XLA:CPU compute bfloat16 convolutions in bfloat16:
it converts them to float32, so bfloat16 is no faster than float32 on CPUs.

The allocator is left as the user has it, and recorded: huge pages
(`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`) cut YNNPACK's page faults but bought nothing measurable
with YNNPACK off, and glibc reads them only at process start, which would mean re-executing every
timing process.

Rules: flags a user set in XLA_FLAGS win over ours; XLA aborts the process on a flag it does
not know, so each of ours is first tried in a subprocess and left out, with a note, where this
jaxlib refuses it; XLA reads XLA_FLAGS once, when the first backend starts, so `configure`
must run before anything touches a device. Whatever is in force goes into the results'
environment and the report. Nothing here imports JAX: a program configures before it starts one.
"""

import functools
import os
import subprocess
import sys
from importlib import metadata

# Flags chosen per backend; XLA_FLAGS is one string for the process, so all go in, each
# touching only its own backend.
CHOSEN_XLA_FLAGS = {"cpu": ("--xla_cpu_experimental_ynn_fusion_type=",
                            "--xla_cpu_opt_preset=CPU_OPT_PRESET_FAST_COMPILE")}
# Environment variables that change how the process computes or allocates, recorded as found.
RECORDED_VARIABLES = ("MALLOC_ARENA_MAX", "OMP_NUM_THREADS", "TF_CPP_MIN_LOG_LEVEL",
                      "XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_MEM_FRACTION",
                      "XLA_PYTHON_CLIENT_ALLOCATOR", "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "JAX_PLATFORMS")

_configured: dict = {}


def backends_started() -> bool:
    """Whether JAX has started a backend, after which XLA_FLAGS no longer has any effect."""
    from jax._src import xla_bridge  # pylint: disable=import-outside-toplevel
    started = getattr(xla_bridge, "backends_are_initialized", None)
    return started() if started is not None else bool(getattr(xla_bridge, "_backends", {}))


@functools.cache
def xla_accepts(flag: str) -> bool:
    """Whether this jaxlib's XLA knows `flag`: a child process starts the CPU backend with it alone."""
    env = {**os.environ, "XLA_FLAGS": flag, "JAX_PLATFORMS": "cpu"}
    child = subprocess.run([sys.executable, "-c", "import jax; jax.devices('cpu')"], env=env,
                           capture_output=True, timeout=120, check=False)
    return child.returncode == 0


def _flag_name(flag: str) -> str:
    return flag.split("=", 1)[0].strip()


def configure() -> dict:
    """Adds the chosen XLA flags to XLA_FLAGS before any backend starts; returns what is in force.

    Idempotent: a second call changes nothing and returns the same record.
    """
    if _configured:
        return in_force()
    user_flags = os.environ.get("XLA_FLAGS", "").split()
    added, notes = [], []
    if backends_started():
        notes.append("JAX's backends had started before the runtime was configured: XLA flags left as they were")
    else:
        for flag in (f for flags in CHOSEN_XLA_FLAGS.values() for f in flags):
            if any(_flag_name(f) == _flag_name(flag) for f in user_flags):
                notes.append(f"{_flag_name(flag)} set by the user in XLA_FLAGS: the user's value is used")
            elif xla_accepts(flag):
                added.append(flag)
            else:
                notes.append(f"{flag} left out: jaxlib {metadata.version('jaxlib')} does not know it")
        if added:
            os.environ["XLA_FLAGS"] = " ".join(user_flags + added)
    _configured.update(chosen=" ".join(added), notes="; ".join(notes))
    return in_force()


def in_force() -> dict:
    """The runtime configuration as the results' environment records it."""
    record = {"xla_flags": os.environ.get("XLA_FLAGS", ""), "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
              "xla_flags_chosen": _configured.get("chosen", "(runtime not configured: XLA flags as found)"),
              "runtime_notes": _configured.get("notes", "")}
    record.update({name.lower(): os.environ[name] for name in RECORDED_VARIABLES if name in os.environ})
    return record
