"""The timing harness on a tiny module: warm-up, repeats, quartiles, precision and failure statuses."""

import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

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


def test_warmup_is_excluded_and_repeats_respected():
    calls = []
    module = Recording(on_call=lambda: calls.append(1))
    result = timing.time_forward(module, (2, 4, 4, 3), options=QUICK)
    jax.effects_barrier()
    assert result.timed_calls == QUICK.min_repeats  # min_time_s=0: exactly the minimum
    assert len(calls) == QUICK.warmup + result.timed_calls
    result.run_batch()
    jax.effects_barrier()
    assert len(calls) == QUICK.warmup + result.timed_calls + 1


def test_min_time_keeps_timing_past_min_repeats():
    # Each call sleeps 10 ms on the host, so reaching 60 ms takes at most six calls.
    options = timing.TimingOptions(min_time_s=0.06, min_repeats=1, warmup=0)
    result = timing.time_forward(Recording(on_call=lambda: time.sleep(0.01)), (1, 4, 4, 3), options=options)
    assert result.timed_calls <= 6
    assert result.median_s >= 0.01
    # One call is enough only if that call alone outlasted min_time_s.
    assert result.timed_calls >= 2 or result.median_s >= options.min_time_s


def test_quartiles_per_image_and_compile_time():
    result = timing.time_forward(Tiny(), (4, 6, 6, 3), options=QUICK)
    assert 0 < result.p25_s <= result.median_s <= result.p75_s
    assert result.median_per_image_s == pytest.approx(result.median_s / 4)
    assert result.p25_per_image_s <= result.median_per_image_s <= result.p75_per_image_s
    assert result.images_per_s == pytest.approx(4 / result.median_s)
    assert result.compile_s > 0
    assert result.compiled.memory_analysis() is not None
    assert result.run_batch().shape == (4, 3)
    fields = result.row_fields(flops_per_image=1000, peak_flops_per_s=1e9)
    assert set(fields) <= {f for f in results.FIELDS}
    assert fields["timed_batches"] == result.timed_calls
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


def test_failure_status_reads_the_xla_message():
    oom = jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 8 bytes.")
    assert timing.failure_status(oom, compiling=True) == results.OUT_OF_MEMORY
    assert timing.failure_status(oom, compiling=False) == results.OUT_OF_MEMORY
    other = jax.errors.JaxRuntimeError("INVALID_ARGUMENT: bad")
    assert timing.failure_status(other, compiling=True) == results.COMPILE_ERROR
    assert timing.failure_status(other, compiling=False) == results.ERROR


def test_peak_probe_is_positive():
    assert timing.probe_size("cpu") == 1024 and timing.probe_size("gpu") == 8192
    flops = timing.peak_flops_per_s("float32", size=64, min_time_s=0.01, min_repeats=3)
    assert 1e6 < flops < 1e15
