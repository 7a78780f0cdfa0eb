"""Memory footprint measured on the device: XLA's buffer analysis and the allocator's peak.

XLA's analysis of a compiled forward pass is exact for its buffers: arguments (weights, statistics,
the input batch), outputs and temporaries (activations and workspace), plus the generated code.

The allocator's peak (`peak_bytes_in_use`) is reported by GPU and TPU backends only, and is the
high-water mark of the whole process, with no way to reset it. It means what it says only when the
process allocates on demand: on GPUs run with XLA_PYTHON_CLIENT_PREALLOCATE=false, otherwise JAX
reserves most of the GPU's memory at start-up and the counter reflects JAX's pool, not the network.
Even so it includes everything the process has ever held at once, so per-network peaks need one
process per network (or networks measured in increasing order of footprint).
"""

import dataclasses
from typing import Any, Optional

import jax


@dataclasses.dataclass(frozen=True)
class CompiledMemory:
    """XLA's memory analysis of a compiled function, in bytes; None where the backend says nothing."""

    argument_bytes: Optional[int] = None
    output_bytes: Optional[int] = None
    temp_bytes: Optional[int] = None
    generated_code_bytes: Optional[int] = None
    alias_bytes: Optional[int] = None  # outputs that reuse argument buffers (donation)
    peak_bytes: Optional[int] = None  # XLA's own peak estimate, where this jaxlib reports it

    @property
    def total_bytes(self) -> Optional[int]:
        """Arguments + outputs + temporaries + generated code, aliased outputs counted once."""
        parts = (self.argument_bytes, self.output_bytes, self.temp_bytes)
        if any(part is None for part in parts):
            return None
        return sum(parts) + (self.generated_code_bytes or 0) - (self.alias_bytes or 0)

    def row_fields(self) -> dict:
        """The XLA memory fields of a results.Row."""
        return {"memory_xla_argument_bytes": self.argument_bytes, "memory_xla_output_bytes": self.output_bytes,
                "memory_xla_temp_bytes": self.temp_bytes, "memory_xla_total_bytes": self.total_bytes}


def _size(stats: Any, name: str) -> Optional[int]:
    """One size of a CompiledMemoryStats, None when absent or negative (unknown)."""
    value = getattr(stats, name, None)
    return int(value) if value is not None and value >= 0 else None


def compiled_memory(compiled: Any) -> CompiledMemory:
    """XLA's memory analysis of a jax.stages.Compiled; every field None when the backend has none."""
    try:
        stats = compiled.memory_analysis()
    except (NotImplementedError, RuntimeError):
        return CompiledMemory()
    if isinstance(stats, (list, tuple)):  # older jaxlibs give one entry per executable
        stats = stats[0] if stats else None
    if stats is None:
        return CompiledMemory()
    return CompiledMemory(argument_bytes=_size(stats, "argument_size_in_bytes"),
                          output_bytes=_size(stats, "output_size_in_bytes"),
                          temp_bytes=_size(stats, "temp_size_in_bytes"),
                          generated_code_bytes=_size(stats, "generated_code_size_in_bytes"),
                          alias_bytes=_size(stats, "alias_size_in_bytes"),
                          peak_bytes=_size(stats, "peak_memory_in_bytes"))


def _allocator_stat(name: str, device: Optional[jax.Device]) -> Optional[int]:
    """One statistic of the device's allocator, None where the backend keeps none (CPU)."""
    device = device or jax.devices()[0]
    try:
        stats = device.memory_stats()
    except (NotImplementedError, RuntimeError):
        return None
    value = (stats or {}).get(name)
    return None if value is None else int(value)


def device_peak_bytes(device: Optional[jax.Device] = None) -> Optional[int]:
    """The allocator's high-water mark for this process (see the module docstring); None on CPU."""
    return _allocator_stat("peak_bytes_in_use", device)


def device_bytes_in_use(device: Optional[jax.Device] = None) -> Optional[int]:
    """Bytes the allocator holds right now; None on CPU."""
    return _allocator_stat("bytes_in_use", device)
