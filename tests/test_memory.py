"""Memory measured on the device: XLA's analysis of known functions, and the allocator's peak."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from measure import device_memory, results, timing

FLOAT32_BYTES = 4


def _compiled(fn, *args):
    """`fn` jitted and compiled for `args`."""
    return jax.jit(fn).lower(*args).compile()


def test_matmul_arguments_and_output_are_counted():
    a, b = jnp.ones((64, 32)), jnp.ones((32, 16))
    analysis = device_memory.compiled_memory(_compiled(lambda a, b: a @ b, a, b))
    assert analysis.argument_bytes >= (64 * 32 + 32 * 16) * FLOAT32_BYTES
    assert analysis.output_bytes >= 64 * 16 * FLOAT32_BYTES
    assert analysis.temp_bytes >= 0
    parts = analysis.argument_bytes + analysis.output_bytes + analysis.temp_bytes
    assert analysis.total_bytes == parts + (analysis.generated_code_bytes or 0) - (analysis.alias_bytes or 0)


def test_temporaries_grow_with_intermediate_size():
    x = jnp.ones((256, 256))
    # A sort forces a materialised intermediate between two reductions XLA cannot fuse through.
    small = device_memory.compiled_memory(_compiled(lambda x: jnp.sort(x[:8] * 2.0, axis=0).sum(), x))
    large = device_memory.compiled_memory(_compiled(lambda x: jnp.sort(x * 2.0, axis=0).sum(), x))
    assert large.temp_bytes > small.temp_bytes
    assert large.argument_bytes == small.argument_bytes == 256 * 256 * FLOAT32_BYTES


def test_row_fields_match_the_schema():
    analysis = device_memory.compiled_memory(_compiled(lambda x: x + 1, jnp.ones(8)))
    fields = analysis.row_fields()
    assert set(fields) <= set(results.FIELDS)
    assert fields["memory_xla_total_bytes"] == analysis.total_bytes


class Dense(nn.Module):
    """One dense layer taking the registry's `train` flag."""

    features: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(self.features)(x)


def test_timed_module_reports_its_weights_and_batch():
    options = timing.TimingOptions(min_time_s=0.0, min_repeats=1, warmup=0)
    result = timing.time_forward(Dense(10), (2, 1, 1, 5), options=options)
    analysis = device_memory.compiled_memory(result.compiled)
    weights_and_batch = (5 * 10 + 10 + 2 * 5) * FLOAT32_BYTES
    assert analysis.argument_bytes >= weights_and_batch
    assert analysis.output_bytes >= 2 * 10 * FLOAT32_BYTES


def test_backends_without_analysis_give_none():
    class NoAnalysis:
        def memory_analysis(self):
            return None

    class Unsupported:
        def memory_analysis(self):
            raise NotImplementedError

    for compiled in (NoAnalysis(), Unsupported()):
        analysis = device_memory.compiled_memory(compiled)
        assert analysis == device_memory.CompiledMemory()
        assert analysis.total_bytes is None


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="CPU keeps no allocator statistics")
def test_cpu_has_no_device_peak():
    assert device_memory.device_peak_bytes() is None
    assert device_memory.device_bytes_in_use() is None


@pytest.mark.skipif(jax.default_backend() == "cpu", reason="needs a GPU or TPU allocator")
def test_accelerator_peak_covers_a_live_array():
    x = jnp.ones((1024, 1024))
    x.block_until_ready()
    assert device_memory.device_bytes_in_use() >= x.nbytes
    assert device_memory.device_peak_bytes() >= device_memory.device_bytes_in_use()
