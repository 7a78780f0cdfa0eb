"""Benchmark of the cost module: `python -m measure.cost.bench` prints its speed and memory figures."""

import functools
import resource
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

import models
from core import cli
from measure import cost

FLAGS = flags.FlagValues()  # this program's own: programs can share a process (tests)
_VARIANTS = flags.DEFINE_integer("variants", 200, "ResNet-18 width variants to count for the rate.", lower_bound=1,
                                 flag_values=FLAGS)
_COMPILE = flags.DEFINE_bool("compile", True, "Also time lower + compile + cost analysis, for the ratio.",
                             flag_values=FLAGS)

_PEAK_RSS_SCRIPT = """
import resource
from measure import cost
cost.count_model("vgg19", batch_size=64)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def count_everything(name: str) -> None:
    """Every convention with its per-layer and per-primitive breakdown: what the CLI can print."""
    result = cost.count_model(name)
    for convention in cost.CONVENTIONS:
        result.per_layer(convention, depth=3)
        result.per_primitive(convention)
    result.as_dict()


def xla_flops(name: str) -> float:
    """Flops the slow way: lower, compile, and read XLA's cost analysis of the compiled program."""
    module, shape = models.get(name), models.input_shape(name)
    variables = models.abstract_variables(module, shape)
    compiled = jax.jit(functools.partial(module.apply, train=False)).lower(
        variables, jax.ShapeDtypeStruct(shape, jnp.float32)).compile()
    return compiled.cost_analysis()["flops"]


def timed(fn, *args) -> float:
    """Wall seconds of one call."""
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main(argv):
    """Prints the four figures of the cost module's speed goals."""
    del argv
    count_everything("resnet18")  # JAX's own one-time start-up is not the cost module's
    ours = {name: timed(count_everything, name) for name in models.names()}
    print(f"all 14 networks, every convention with per-layer breakdown, batch 1: {sum(ours.values()):.2f} s")
    for name, seconds in ours.items():
        print(f"  {name:<14}{seconds * 1e3:8.0f} ms")

    if _COMPILE.value:
        xla = {name: timed(xla_flops, name) for name in models.names()}
        flops_only = {name: timed(lambda n: cost.count_model(n).ops("flops", real_taps=True), name)
                      for name in models.names()}
        print(f"lower + compile + cost analysis: {sum(xla.values()):.1f} s; cost module, flops only: "
              f"{sum(flops_only.values()):.2f} s: {sum(xla.values()) / sum(flops_only.values()):.0f}x faster")

    peak = int(subprocess.run([sys.executable, "-c", _PEAK_RSS_SCRIPT], capture_output=True, text=True,
                              check=True).stdout.split()[-1])
    print(f"counting VGG-19 at batch 64: peak memory of the whole process {peak / 2**20:.0f} MiB")

    widths = np.linspace(0.25, 1.0, _VARIANTS.value)
    start = time.perf_counter()
    for width in widths:
        cost.count_model("resnet18", width=float(width)).ops("flops")
    elapsed = time.perf_counter() - start
    print(f"ResNet-18 variants at widths 0.25..1: {len(widths) / elapsed * 60:.0f} per minute "
          f"({elapsed / len(widths) * 1e3:.0f} ms each)")
    print(f"(this process peaked at {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB)")


if __name__ == "__main__":
    cli.run(main, FLAGS)
