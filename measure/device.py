"""The device JAX measures on, and its readable name (what every row and results directory is keyed by)."""

import os
import platform
from typing import Optional

import jax

from core.errors import UserError


def _cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what the platform module knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """The cores this process may run on: its affinity (taskset, a container's cpuset), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on this OS: the machine's count
        return os.cpu_count() or 1


def device_name(device: Optional[jax.Device] = None) -> str:
    """A readable name of the device: the GPU's kind, or the CPU's model with the cores this process may use.

    The cores are part of the name: timings on one core and on two must never share a results
    directory or a predictor.
    """
    device = device or jax.devices()[0]
    if device.platform == "cpu":
        cores = usable_cores()
        return f"cpu: {_cpu_model()}, {cores} {'core' if cores == 1 else 'cores'}"
    return device.device_kind


def default_device() -> jax.Device:
    """JAX's default device; a backend that cannot start is the user's to fix (UserError)."""
    try:
        return jax.devices()[0]
    except Exception as error:  # pylint: disable=broad-except  # JAX raises RuntimeError or a bare AssertionError
        first = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        platforms = os.environ.get("JAX_PLATFORMS", "")
        raise UserError(f"JAX cannot start its backend{f' (JAX_PLATFORMS={platforms})' if platforms else ''}: "
                        f"{first}; check JAX_PLATFORMS and the installed jaxlib (pip install -e '.[cuda]' for "
                        "NVIDIA GPUs)") from None
