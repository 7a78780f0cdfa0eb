"""The timing harness on a tiny module: warm-up, repeats, quartiles, precision and failure statuses."""

import functools
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models

from core import failures
from measure import results, timing

QUICK = timing.TimingOptions(min_time_s=0.0, min_repeats=5, warmup=2)


class Tiny(nn.Module):
    """A convolution and a dense layer: compiles and runs in milliseconds."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Conv(4, (3, 3), name="conv")(x))
        return nn.Dense(3, name="fc")(x.reshape(x.shape[0], -1))


class Recording(nn.Module):
    """A dense layer reporting each forward pass it runs, and the dtypes it is traced with (not init's)."""

    on_call: object = lambda: None
    on_trace: object = lambda **dtypes: None

    @nn.compact
    def __call__(self, x, train: bool = False):
        dense = nn.Dense(3, name="fc")
        y = dense(x.reshape(x.shape[0], -1))
        if not self.is_initializing():
            self.on_trace(input=x.dtype, kernel=dense.variables["params"]["kernel"].dtype, output=y.dtype)
            jax.debug.callback(self.on_call)
        return y


def test_warmup_latency_and_throughput_calls_are_counted():
    calls = []
    module = Recording(on_call=lambda: calls.append(1))
    result = timing.time_forward(module, (2, 4, 4, 3), options=QUICK)
    jax.effects_barrier()
    assert len(result.latencies_s) == QUICK.min_repeats  # min_time_s=0: exactly the minimum
    assert result.throughput_calls == QUICK.min_repeats
    assert QUICK.warmup <= result.warmup_calls <= QUICK.max_warmup
    assert len(calls) == result.warmup_calls + len(result.latencies_s) + result.throughput_calls
    result.run_batch()
    jax.effects_barrier()
    assert len(calls) == result.warmup_calls + len(result.latencies_s) + result.throughput_calls + 1


def test_defaults_are_a_careful_benchmarks():
    options = timing.TimingOptions()
    assert options.warmup >= 2 and options.min_repeats >= 5 and options.min_time_s >= 1.0


class FakeClock:
    """A perf_counter that moves only when a fake call takes its time: timing logic without the scheduler's noise."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_warm_up_goes_on_until_the_time_settles(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(timing.time, "perf_counter", clock)
    # Calls take 80, 60, 40, 20, 20 ms...: the time settles from the fifth call.
    durations = iter([0.08, 0.06, 0.04, 0.02] + [0.02] * 30)
    ran = []

    def run():
        ran.append(1)
        clock.now += next(durations)

    options = timing.TimingOptions(min_time_s=10.0, min_repeats=1, warmup=2, settle=0.3)
    assert timing.warm_up(run, options) == 5
    # Never settling, it stops at max_warmup; with warm-up off it makes no call.
    def slower():
        ran.append(1)
        clock.now += 0.001 * len(ran) ** 2

    assert timing.warm_up(slower, timing.TimingOptions(min_time_s=10.0, warmup=2, max_warmup=4, settle=0.0)) == 4
    assert timing.warm_up(run, timing.TimingOptions(warmup=0)) == 0


def test_min_time_keeps_timing_past_min_repeats():
    # Each call sleeps 10 ms on the host, so reaching 60 ms takes at most six calls.
    options = timing.TimingOptions(min_time_s=0.06, min_repeats=1, warmup=0)
    result = timing.time_forward(Recording(on_call=lambda: time.sleep(0.01)), (1, 4, 4, 3), options=options)
    assert len(result.latencies_s) <= 6
    assert result.median_s >= 0.01
    # One call is enough only if that call alone outlasted min_time_s.
    assert len(result.latencies_s) >= 2 or result.median_s >= options.min_time_s
    # The throughput run is as long: min_time_s worth of calls at the median latency.
    assert result.throughput_calls == max(1, round(0.06 / result.median_s))


class Wide(nn.Module):
    """Two 1024-wide dense layers: milliseconds of compute per call, microseconds to dispatch."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape(x.shape[0], -1)
        return nn.Dense(1024, name="fc2")(nn.relu(nn.Dense(1024, name="fc1")(x)))


def test_latency_throughput_and_dispatch_are_told_apart():
    options = timing.TimingOptions(min_time_s=0.0, min_repeats=5, warmup=1)
    result = timing.time_forward(Wide(), (256, 32, 32, 1), options=options)
    # Dispatch returns long before the call completes; throughput waits for all calls, once.
    assert result.dispatch_s < 0.5 * result.median_s
    assert result.throughput_s > 0.5 * result.median_s


def test_quartiles_per_image_and_compile_time():
    result = timing.time_forward(Tiny(), (4, 6, 6, 3), options=QUICK)
    fields = result.row_fields(flops_per_image=1000, peak_flops_per_s=1e9)
    assert set(fields) <= set(results.FIELDS)
    assert 0 < fields["time_per_image_p25_s"] <= fields["time_per_image_s"] <= fields["time_per_image_p75_s"]
    assert fields["time_per_image_s"] == pytest.approx(result.median_s / 4)
    assert fields["images_per_s"] == pytest.approx(4 / result.throughput_s)
    assert fields["throughput_time_per_image_s"] == pytest.approx(result.throughput_s / 4)
    assert fields["latency_calls"] == len(result.latencies_s) and fields["warmup_calls"] == result.warmup_calls
    assert fields["compile_s"] == result.compile_s > 0 and fields["dispatch_s"] > 0
    assert result.compiled.memory_analysis() is not None
    assert result.run_batch().shape == (4, 3)
    assert fields["achieved_flops_per_s"] == pytest.approx(1000 / result.median_per_image_s)
    assert fields["fraction_of_peak"] == pytest.approx(fields["achieved_flops_per_s"] / 1e9)


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_reduced_precision_casts_params_and_input(precision):
    traced = []
    module = Recording(on_trace=lambda **dtypes: traced.append(dtypes))
    result = timing.time_forward(module, (1, 2, 2, 3), precision=precision, options=QUICK)
    dtype = jnp.dtype(precision)
    assert traced == [{"input": dtype, "kernel": dtype, "output": dtype}]
    assert result.run_batch().dtype == dtype


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision"):
        timing.time_forward(Tiny(), (1, 4, 4, 3), precision="int8", options=QUICK)


def test_out_of_memory_while_running(monkeypatch):
    def exhausted(self, *args):
        raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 1 bytes.")

    monkeypatch.setattr(jax.stages.Compiled, "__call__", exhausted)
    with pytest.raises(timing.MeasureFailed) as failure:
        timing.time_forward(Tiny(), (1, 4, 4, 3), options=QUICK)
    assert failure.value.status == results.OUT_OF_MEMORY


def test_out_of_memory_reported_only_on_native_stderr(monkeypatch):
    # XLA:CPU's YNNPACK kernels print the failed allocation and raise a generic INTERNAL error.
    def ynnpack(self, *args):
        os.write(2, b"allocate of <40> failed.\n")
        raise jax.errors.JaxRuntimeError("INTERNAL: YNNPACK operation failed: error")

    monkeypatch.setattr(jax.stages.Compiled, "__call__", ynnpack)
    with pytest.raises(timing.MeasureFailed) as failure:
        timing.time_forward(Tiny(), (1, 4, 4, 3), options=QUICK)
    assert failure.value.status == results.OUT_OF_MEMORY
    assert failure.value.message == "out of memory: allocate of <40> failed. (INTERNAL: YNNPACK operation failed: error)"


def test_native_stderr_is_captured_and_replayed(capfd):
    with failures.NativeStderr() as native:
        os.write(2, b"from native code\n")
    assert native.text == "from native code\n"
    assert capfd.readouterr().err == "from native code\n"  # the user still sees it


def test_out_of_memory_for_real_when_the_batch_cannot_be_allocated():
    # 256 TiB of input is more than a 47-bit address space holds, so the allocation fails even
    # where the kernel overcommits memory.
    with pytest.raises(timing.MeasureFailed) as failure:
        timing.time_forward(Tiny(), (2**42, 4, 4, 1), options=QUICK)
    assert failure.value.status == results.OUT_OF_MEMORY


def test_compile_error_is_not_out_of_memory(monkeypatch):
    def broken(self, *args, **kwargs):
        raise jax.errors.JaxRuntimeError("INTERNAL: ptxas exited with non-zero error code")

    monkeypatch.setattr(jax.stages.Lowered, "compile", broken)
    with pytest.raises(timing.MeasureFailed) as failure:
        timing.time_forward(Tiny(), (1, 4, 4, 3), options=QUICK)
    assert failure.value.status == results.COMPILE_ERROR


def test_failure_status_reads_the_xla_message_and_native_stderr():
    oom = jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 8 bytes.")
    assert failures.failure_status(oom, compiling=True) == results.OUT_OF_MEMORY
    assert failures.failure_status(oom, compiling=False) == results.OUT_OF_MEMORY
    other = jax.errors.JaxRuntimeError("INVALID_ARGUMENT: bad")
    assert failures.failure_status(other, compiling=True) == results.COMPILE_ERROR
    assert failures.failure_status(other, compiling=False) == results.ERROR
    ynnpack = jax.errors.JaxRuntimeError("INTERNAL: YNNPACK operation failed: error")
    assert failures.failure_status(ynnpack, False) == results.ERROR
    assert failures.failure_status(ynnpack, False, "allocate of <40> failed.\n") == results.OUT_OF_MEMORY
    assert failures.failure_status(MemoryError(), False) == results.OUT_OF_MEMORY


def test_peak_probe_is_two_n_cubed_over_the_median_matmul_time(monkeypatch):
    assert timing.probe_size("cpu") == 1024 and timing.probe_size("gpu") == 8192
    flops = timing.peak_flops_per_s("float32", size=64, min_time_s=0.01, min_repeats=3)
    assert np.isfinite(flops) and flops > 0
    monkeypatch.setattr(timing, "latencies", lambda run, options: [0.004, 0.001, 0.002])
    assert timing.peak_flops_per_s("float32", size=64, min_time_s=0.01, min_repeats=3) == 2 * 64**3 / 0.002


@pytest.mark.networks("resnet34")  # neutral statistics blow up from ResNet-34 on (ResNet-18 stays in range)
def test_timing_weights_keep_every_network_finite_in_every_precision(network):
    name = network
    # Neutral BatchNorm statistics let ResNet-152's float32 logits reach about 1e9 (NaN in float16).
    shape = models.input_shape(name, 2, max(64, models.spec(name).min_resolution))
    module = models.get(name)
    weights = timing.timing_weights(module, shape)
    x = np.random.default_rng(1).standard_normal(shape, np.float32)
    apply = jax.jit(functools.partial(module.apply, train=False))
    for precision, dtype in timing.PRECISIONS.items():
        logits = np.asarray(apply(timing.to_device(weights, precision), x.astype(dtype)), np.float32)
        assert np.all(np.isfinite(logits)), precision
        assert 1e-2 < np.abs(logits).max() < 1e3, (precision, np.abs(logits).max())
