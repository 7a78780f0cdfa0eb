"""Time of a Flax module's jitted eval forward pass on one device: latency, throughput and dispatch.

- Warm-up: at least `warmup` calls, then more until two consecutive calls agree within
  `settle` (caches, allocator pools and clocks have settled), up to `max_warmup` calls or
  `min_time_s` of warm-up.
- Latency: each call dispatched and waited for, at least `min_repeats` calls and `min_time_s`
  seconds; the median and quartiles per call are reported.
- Throughput: `min_time_s` worth of calls at the median latency (at least `min_repeats`),
  dispatched back to back and waited for once: what a pipeline that never waits between
  batches gets.
  The host's dispatch time per call (until the call returns, before the device finishes) is
  timed in the same run: on a GPU at batch 1 it tells launch overhead from compute.
Compilation is timed apart and never counted in either.
"""

import dataclasses
import functools
import math
import statistics
import time
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import models
from core import cli, failures, precisions
from core.errors import UserError
from core.failures import MeasureFailed  # re-exported: callers catch it from here

PRECISIONS = {name: jnp.dtype(name) for name in precisions.NAMES}

# Square matmul sizes of the peak probe: big enough to saturate the backend, small enough to be quick.
_PROBE_SIZES = {"cpu": 1024}
_DEFAULT_PROBE_SIZE = 8192  # GPUs and TPUs
# Pixels of the random images whose batch statistics become the timing weights' running statistics:
# two 224x224 images, or as many smaller ones (up to 64), so that even a network's last, smallest
# feature maps give each channel enough values for a stable variance.
CALIBRATION_PIXELS = 2 * 224 * 224
MAX_CALIBRATION_BATCH = 64

__all__ = ["PRECISIONS", "MeasureFailed", "Timing", "TimingOptions", "device_variables", "latencies",
           "peak_flops_per_s", "precision_dtype", "probe_size", "time_forward", "timing_weights", "to_device",
           "warm_up"]


@dataclasses.dataclass(frozen=True)
class TimingOptions:
    """How long to time (see the module docstring); the defaults are a careful benchmark's."""

    min_time_s: float = 1.0
    min_repeats: int = 5
    warmup: int = 2
    max_warmup: int = 20
    settle: float = 0.1

    def __post_init__(self):
        if not (math.isfinite(self.min_time_s) and self.min_time_s >= 0 and self.min_repeats >= 1
                and 0 <= self.warmup <= self.max_warmup and math.isfinite(self.settle) and self.settle >= 0):
            raise UserError(f"timing options need a finite min_time_s >= 0, min_repeats >= 1, "
                            f"0 <= warmup <= max_warmup and a finite settle >= 0; got {self}")


@dataclasses.dataclass
class Timing:
    """Latency per call (median and quartiles), throughput, dispatch time, and what produced them."""

    batch_size: int
    latencies_s: list = dataclasses.field(repr=False)
    throughput_s: float  # wall seconds per call, calls dispatched back to back
    throughput_calls: int
    dispatch_s: float  # median seconds for a call to return to Python
    warmup_calls: int
    compile_s: float  # tracing, lowering and XLA compilation
    compiled: Any = dataclasses.field(repr=False)  # jax.stages.Compiled, for its memory analysis
    run_batch: Callable[[], Any] = dataclasses.field(repr=False)  # one batch, run to completion

    @property
    def median_s(self) -> float:
        """Median latency of one call (one batch)."""
        return statistics.median(self.latencies_s)

    @property
    def median_per_image_s(self) -> float:
        """Median latency per image."""
        return self.median_s / self.batch_size

    @property
    def images_per_s(self) -> float:
        """Throughput in images per second."""
        return self.batch_size / self.throughput_s

    def row_fields(self, flops_per_image: Optional[int] = None, peak_flops_per_s: Optional[float] = None) -> dict:
        """The timing fields of a results.Row; achieved FLOP/s only when the FLOPs are given."""
        p25, p75 = (float(v) / self.batch_size for v in np.percentile(self.latencies_s, [25, 75]))
        fields = {"time_per_image_s": self.median_per_image_s, "time_per_image_p25_s": p25,
                  "time_per_image_p75_s": p75, "latency_calls": len(self.latencies_s),
                  "warmup_calls": self.warmup_calls, "throughput_time_per_image_s": self.throughput_s / self.batch_size,
                  "images_per_s": self.images_per_s, "throughput_calls": self.throughput_calls,
                  "dispatch_s": self.dispatch_s, "compile_s": self.compile_s}
        if flops_per_image is not None:
            achieved = flops_per_image / self.median_per_image_s
            fields["achieved_flops_per_s"] = achieved
            if peak_flops_per_s:
                fields["fraction_of_peak"] = achieved / peak_flops_per_s
        return fields


def describe(options: TimingOptions) -> str:
    """What a point's timing consists of under `options`, in one sentence for logs and reports."""
    calls = lambda n: f"{n} call{'s' if n != 1 else ''}"  # noqa: E731
    return (f"at least {calls(options.warmup)} of warm-up, more until two agree within {options.settle:.0%} "
            f"(at most {options.max_warmup} or {options.min_time_s:g} s); latency: the median and quartiles of at "
            f"least {calls(options.min_repeats)} and {options.min_time_s:g} s, each waited for; throughput: as many "
            "calls dispatched back to back")


def warm_up(run: Callable[[], Any], options: TimingOptions) -> int:
    """Runs untimed calls until the time per call settles (see the module docstring); returns how many."""
    if options.warmup == 0:
        return 0
    perf_counter, block = time.perf_counter, jax.block_until_ready
    times: list[float] = []
    start = perf_counter()
    while len(times) < options.max_warmup:
        begin = perf_counter()
        block(run())
        times.append(perf_counter() - begin)
        cli.check_stop()  # between calls, so that a stop asked for never waits for a whole point
        settled = len(times) >= 2 and abs(times[-1] - times[-2]) <= options.settle * min(times[-2:])
        if len(times) >= options.warmup and (settled or perf_counter() - start >= options.min_time_s):
            break
    return len(times)


def latencies(run: Callable[[], Any], options: TimingOptions) -> list[float]:
    """Seconds of each call, dispatched and waited for, until min_repeats and min_time_s are both reached."""
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
        cli.check_stop()
        if len(times) >= options.min_repeats and end - start >= options.min_time_s:
            return times


def _throughput(run: Callable[[], Any], calls: int) -> tuple[float, float]:
    """Seconds per call with `calls` calls dispatched back to back, and the median dispatch time."""
    perf_counter = time.perf_counter
    outputs, dispatch = [], []
    start = perf_counter()
    for _ in range(calls):
        begin = perf_counter()
        outputs.append(run())
        dispatch.append(perf_counter() - begin)
    jax.block_until_ready(outputs)
    return (perf_counter() - start) / calls, statistics.median(dispatch)


def precision_dtype(precision: str):
    """The dtype of a precision's name; UserError names the choices."""
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    return PRECISIONS[precision]


def _draw_weights(abstract, seed: int):
    """He-normal kernels (fan-in), neutral norms (scale and variance 1, the rest 0), drawn with NumPy.

    Drawn from the abstract shapes: compiling the module's own initialisers costs seconds per
    network and buys nothing for timing.
    """
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = getattr(path[-1], "key", "")
        if not jnp.issubdtype(leaf.dtype, jnp.floating):  # counters and the like keep their type, at zero
            return np.zeros(leaf.shape, leaf.dtype)
        if len(leaf.shape) >= 2:
            fan_in = int(np.prod(leaf.shape[:-1]))
            return rng.standard_normal(leaf.shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        return np.full(leaf.shape, 1.0 if name in ("scale", "var") else 0.0, np.float32)

    return jax.tree_util.tree_map_with_path(draw, abstract)


def _calibrate_statistics(module: nn.Module, variables, shape: tuple[int, ...], seed: int):
    """BatchNorm running statistics set to the batch statistics of a train-mode pass on random images.

    With neutral statistics BatchNorm normalises nothing, and every residual block doubles the
    variance: ResNet-152's logits reach about 1e9, NaN in float16. Trained networks' statistics
    keep activations near unit scale; calibrated ones do the same for timing, in every precision.
    """
    momenta = {}  # module path -> its momentum, to invert the running-average update

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.BatchNorm) and context.method_name == "__call__":
            momenta[tuple(context.module.path)] = context.module.momentum
        return next_fun(*args, **kwargs)

    def updated_statistics(variables, x):
        with nn.intercept_methods(record):
            _, state = module.apply(variables, x, train=True, mutable=["batch_stats"],
                                    rngs={"dropout": jax.random.key(seed)})
        return state["batch_stats"]

    batch = min(MAX_CALIBRATION_BATCH, max(2, math.ceil(CALIBRATION_PIXELS / (shape[1] * shape[2]))))
    x = np.random.default_rng(seed + 2).standard_normal((batch, *shape[1:]), np.float32)
    updated = jax.device_get(jax.jit(updated_statistics)(variables, x))
    old = variables["batch_stats"]

    def batch_value(path, new):
        keys = tuple(k.key for k in path)
        old_value = functools.reduce(lambda tree, key: tree[key], keys, old)
        momentum = momenta.get(keys[:-1])
        if momentum is None:  # statistics of a module that is not a BatchNorm: left as drawn
            return old_value
        # new = momentum * old + (1 - momentum) * batch, as Flax's BatchNorm updates it.
        value = ((new - momentum * old_value) / (1.0 - momentum)).astype(np.float32)
        return np.maximum(value, 0.0) if keys[-1] == "var" else value  # rounding never makes a variance negative

    return {**variables, "batch_stats": jax.tree_util.tree_map_with_path(batch_value, updated)}


def timing_weights(module: nn.Module, shape: tuple[int, ...], seed: int = 0, abstract=None):
    """Float32 NumPy weights for timing `module` on inputs of `shape`, BatchNorm statistics calibrated.

    He-normal kernels, and BatchNorm statistics calibrated on random images at this resolution
    (see _calibrate_statistics), so activations stay in range in every precision. They do not
    depend on the batch size: make them once for every batch size. `abstract`: the variables'
    shapes where a trace already made them (a cost count's), else traced here.
    """
    if abstract is None:
        abstract = models.abstract_variables(module, (1, *shape[1:]))
    variables = _draw_weights(abstract, seed)
    if "batch_stats" in variables:
        with failures.classified(compiling=False):
            variables = _calibrate_statistics(module, variables, shape, seed)
    return variables


def to_device(weights, precision: str, device: Optional[jax.Device] = None):
    """Timing weights cast to `precision` (floating leaves only) and put on the device."""
    dtype, device = precision_dtype(precision), device or jax.devices()[0]
    cast = jax.tree.map(lambda v: v.astype(dtype) if np.issubdtype(v.dtype, np.floating) else v, weights)
    with failures.classified(compiling=False):
        return jax.device_put(cast, device)


def device_variables(module: nn.Module, shape: tuple[int, ...], precision: str = "float32", seed: int = 0,
                     device: Optional[jax.Device] = None, abstract=None):
    """Weights for timing `module` on inputs of `shape` (see timing_weights), in `precision` on the device."""
    device = device or jax.devices()[0]
    precision_dtype(precision)
    with jax.default_device(device):
        return to_device(timing_weights(module, shape, seed, abstract), precision, device)


def time_forward(module: nn.Module, shape: tuple[int, ...], precision: str = "float32",
                 options: TimingOptions = TimingOptions(), seed: int = 0,
                 device: Optional[jax.Device] = None, variables=None) -> Timing:
    """Times `module.apply(..., train=False)` on a random NHWC batch; MeasureFailed on OOM or XLA errors.

    `variables` (from device_variables) are made here when not given. Errors raised while tracing
    (a bad knob, a too-small resolution) are not XLA's and propagate.
    """
    dtype, device = precision_dtype(precision), device or jax.devices()[0]
    if variables is None:
        variables = device_variables(module, shape, precision, seed, device)
    with failures.classified(compiling=False):  # drawn with NumPy, like the weights: no RNG program to compile
        batch = jax.device_put(np.random.default_rng(seed + 1).standard_normal(shape, np.float32).astype(dtype),
                               device)

    start = time.perf_counter()
    lowered = jax.jit(functools.partial(module.apply, train=False)).lower(variables, batch)
    with failures.classified(compiling=True):
        compiled = lowered.compile()
    compile_s = time.perf_counter() - start
    run = functools.partial(compiled, variables, batch)

    with failures.classified(compiling=False):
        warmup_calls = warm_up(run, options)
        times = latencies(run, options)
        calls = max(options.min_repeats, round(options.min_time_s / statistics.median(times)))
        throughput_s, dispatch_s = _throughput(run, calls)
    return Timing(batch_size=shape[0], latencies_s=times, throughput_s=throughput_s, throughput_calls=calls,
                  dispatch_s=dispatch_s, warmup_calls=warmup_calls, compile_s=compile_s, compiled=compiled,
                  run_batch=lambda: jax.block_until_ready(run()))


def probe_size(platform: Optional[str] = None) -> int:
    """The square matmul size of the peak probe on a backend ("cpu", "gpu", "tpu")."""
    return _PROBE_SIZES.get(platform or jax.default_backend(), _DEFAULT_PROBE_SIZE)


def peak_flops_per_s(precision: str = "float32", size: Optional[int] = None, min_time_s: float = 0.5,
                     min_repeats: int = 5, device: Optional[jax.Device] = None) -> float:
    """Achievable FLOP/s of the device in a precision: 2 n^3 over the median time of an n x n matmul."""
    dtype, device = precision_dtype(precision), device or jax.devices()[0]
    n = size or probe_size(device.platform)
    rng = np.random.default_rng(0)
    a, b = (jax.device_put(rng.standard_normal((n, n), np.float32).astype(dtype), device) for _ in range(2))
    matmul = jax.jit(jnp.matmul).lower(a, b).compile()
    options = TimingOptions(min_time_s=min_time_s, min_repeats=min_repeats, warmup=2)
    run = functools.partial(matmul, a, b)
    warm_up(run, options)
    return 2 * n**3 / statistics.median(latencies(run, options))
