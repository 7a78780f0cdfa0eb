"""Wall-clock time of a Flax module's jitted eval forward pass on one device, compile excluded."""

import dataclasses
import functools
import statistics
import time
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import models
from measure import results
from models.errors import UserError

PRECISIONS = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}

# Square matmul sizes of the peak probe: big enough to saturate the backend, small enough to be quick.
_PROBE_SIZES = {"cpu": 1024}
_DEFAULT_PROBE_SIZE = 8192  # GPUs and TPUs

# How XLA words an allocation failure, on CPU ("RESOURCE_EXHAUSTED: Out of memory allocating...")
# and on GPU ("RESOURCE_EXHAUSTED: Out of memory while trying to allocate...").
_OUT_OF_MEMORY_MARKERS = ("resource_exhausted", "out of memory")


@dataclasses.dataclass(frozen=True)
class TimingOptions:
    """How long to time: until both min_time_s and min_repeats are reached, after `warmup` calls."""

    min_time_s: float = 1.0
    min_repeats: int = 10
    warmup: int = 3

    def __post_init__(self):
        if self.min_time_s < 0 or self.min_repeats < 1 or self.warmup < 0:
            raise UserError(f"timing options must have min_time_s >= 0, min_repeats >= 1 and "
                             f"warmup >= 0; got {self}")


class MeasureFailed(Exception):
    """A point that could not be measured, with a results status (out of memory or compile error)."""

    def __init__(self, status: str, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


@dataclasses.dataclass
class Timing:
    """Seconds per batch (median and quartiles over the timed calls) and what produced them."""

    batch_size: int
    median_s: float
    p25_s: float
    p75_s: float
    mean_s: float
    timed_calls: int
    compile_s: float  # tracing, lowering and XLA compilation
    compiled: Any = dataclasses.field(repr=False)  # jax.stages.Compiled, for its memory analysis
    run_batch: Callable[[], Any] = dataclasses.field(repr=False)  # one batch, run to completion

    @property
    def median_per_image_s(self) -> float:
        """Median seconds per image."""
        return self.median_s / self.batch_size

    @property
    def p25_per_image_s(self) -> float:
        """25th percentile of seconds per image."""
        return self.p25_s / self.batch_size

    @property
    def p75_per_image_s(self) -> float:
        """75th percentile of seconds per image."""
        return self.p75_s / self.batch_size

    @property
    def images_per_s(self) -> float:
        """Throughput at the median batch time."""
        return self.batch_size / self.median_s

    def row_fields(self, flops_per_image: Optional[int] = None,
                   peak_flops_per_s: Optional[float] = None) -> dict:
        """The timing fields of a results.Row; achieved FLOP/s only when the FLOPs are given."""
        fields = {"time_per_image_s": self.median_per_image_s, "time_per_image_p25_s": self.p25_per_image_s,
                  "time_per_image_p75_s": self.p75_per_image_s, "images_per_s": self.images_per_s,
                  "compile_s": self.compile_s, "timed_batches": self.timed_calls}
        if flops_per_image is not None:
            achieved = flops_per_image / self.median_per_image_s
            fields["achieved_flops_per_s"] = achieved
            if peak_flops_per_s:
                fields["fraction_of_peak"] = achieved / peak_flops_per_s
        return fields


def failure_status(error: BaseException, compiling: bool) -> str:
    """The results status of an XLA error: out of memory wherever it happens, else by the stage."""
    text = str(error).lower()
    if isinstance(error, MemoryError) or any(marker in text for marker in _OUT_OF_MEMORY_MARKERS):
        return results.OUT_OF_MEMORY
    return results.COMPILE_ERROR if compiling else results.ERROR


def _xla_errors() -> tuple:
    """The exception types XLA raises; older jaxlibs name theirs XlaRuntimeError."""
    runtime_error = getattr(jax.errors, "JaxRuntimeError", None)
    if runtime_error is None:
        from jax._src.lib import xla_client  # jax < 0.4.36 only
        runtime_error = xla_client.XlaRuntimeError
    return (runtime_error, MemoryError)


def _time_calls(run: Callable[[], Any], options: TimingOptions) -> list[float]:
    """Seconds of each timed call; warm-up calls run first and are not recorded."""
    for _ in range(options.warmup):
        jax.block_until_ready(run())
    perf_counter, block = time.perf_counter, jax.block_until_ready
    times: list[float] = []
    start = perf_counter()
    # Nothing but the call, its completion and the clock inside the loop: the harness must be
    # invisible next to a millisecond forward pass.
    while True:
        begin = perf_counter()
        block(run())
        end = perf_counter()
        times.append(end - begin)
        if len(times) >= options.min_repeats and end - start >= options.min_time_s:
            return times


def _quartiles(times: list[float]) -> tuple[float, float, float]:
    """25th percentile, median and 75th percentile."""
    p25, p75 = np.percentile(times, [25, 75])
    return float(p25), statistics.median(times), float(p75)


def device_variables(module: nn.Module, shape: tuple[int, ...], precision: str = "float32", seed: int = 0,
                     device: Optional[jax.Device] = None):
    """Weights for timing `module` on inputs of `shape`, cast to `precision` and put on the device.

    Kernels are He-scaled normal draws, norms and statistics neutral (scale and variance 1, the
    rest 0), so activations keep a realistic range. They are drawn with NumPy from the abstract
    shapes: compiling the module's own initialisers costs seconds per network and buys nothing
    for timing. They do not depend on the batch size: make them once for every batch size.
    """
    dtype, device = _dtype(precision), device or jax.devices()[0]
    abstract = models.abstract_variables(module, (1, *shape[1:]))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = getattr(path[-1], "key", "")
        if len(leaf.shape) >= 2:
            fan_in = int(np.prod(leaf.shape[:-1]))
            value = rng.standard_normal(leaf.shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        else:
            value = np.full(leaf.shape, 1.0 if name in ("scale", "var") else 0.0, np.float32)
        return value.astype(dtype) if jnp.issubdtype(leaf.dtype, jnp.floating) else value.astype(leaf.dtype)

    try:
        return jax.device_put(jax.tree_util.tree_map_with_path(draw, abstract), device)
    except _xla_errors() as error:
        raise MeasureFailed(failure_status(error, compiling=False), str(error)) from error


def _dtype(precision: str):
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    return PRECISIONS[precision]


def time_forward(module: nn.Module, shape: tuple[int, ...], precision: str = "float32",
                 options: TimingOptions = TimingOptions(), seed: int = 0,
                 device: Optional[jax.Device] = None, variables=None) -> Timing:
    """Times `module.apply(..., train=False)` on a random NHWC batch; MeasureFailed on OOM or compile errors.

    `variables` (from device_variables) are made here when not given. Errors raised while tracing
    (a bad knob, a too-small resolution) are not XLA's and propagate.
    """
    dtype, device = _dtype(precision), device or jax.devices()[0]
    xla_errors = _xla_errors()
    if variables is None:
        variables = device_variables(module, shape, precision, seed, device)
    try:  # drawn with NumPy, like the weights: no random-number program to compile per point
        batch = jax.device_put(np.random.default_rng(seed + 1).standard_normal(shape, np.float32).astype(dtype),
                               device)
    except xla_errors as error:
        raise MeasureFailed(failure_status(error, compiling=False), str(error)) from error

    start = time.perf_counter()
    lowered = jax.jit(functools.partial(module.apply, train=False)).lower(variables, batch)
    try:
        compiled = lowered.compile()
    except xla_errors as error:
        raise MeasureFailed(failure_status(error, compiling=True), str(error)) from error
    compile_s = time.perf_counter() - start

    def run_batch():
        """Runs one batch to completion."""
        return jax.block_until_ready(compiled(variables, batch))

    try:
        times = _time_calls(functools.partial(compiled, variables, batch), options)
    except xla_errors as error:
        raise MeasureFailed(failure_status(error, compiling=False), str(error)) from error
    p25, median, p75 = _quartiles(times)
    return Timing(batch_size=shape[0], median_s=median, p25_s=p25, p75_s=p75, mean_s=statistics.mean(times),
                  timed_calls=len(times),
                  compile_s=compile_s, compiled=compiled, run_batch=run_batch)


def probe_size(platform: Optional[str] = None) -> int:
    """The square matmul size of the peak probe on a backend ("cpu", "gpu", "tpu")."""
    return _PROBE_SIZES.get(platform or jax.default_backend(), _DEFAULT_PROBE_SIZE)


def peak_flops_per_s(precision: str = "float32", size: Optional[int] = None, min_time_s: float = 0.5,
                     min_repeats: int = 5, device: Optional[jax.Device] = None) -> float:
    """Achievable FLOP/s of the device: 2 n^3 over the median time of an n x n matmul."""
    dtype, device = _dtype(precision), device or jax.devices()[0]
    n = size or probe_size(device.platform)
    a_key, b_key = jax.random.split(jax.random.key(0))
    with jax.default_device(device):
        a = jax.device_put(jax.random.normal(a_key, (n, n), dtype), device)
        b = jax.device_put(jax.random.normal(b_key, (n, n), dtype), device)
    matmul = jax.jit(jnp.matmul).lower(a, b).compile()
    times = _time_calls(functools.partial(matmul, a, b),
                        TimingOptions(min_time_s=min_time_s, min_repeats=min_repeats, warmup=2))
    return 2 * n**3 / statistics.median(times)
