"""Benchmark of the timing harness: `python -m measure.bench` prints its overhead and repeatability."""

import functools
import statistics
import time

import jax
from absl import flags

import models
from measure import fits, results, timing
from models import cli
from models.errors import UserError

_MODEL = flags.DEFINE_string("model", "resnet50", "Network to time (batch 1).")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Alternating rounds of bare loop and harness.", lower_bound=1)
_SECONDS = flags.DEFINE_float("seconds", 4.0, "Seconds of calls in each round.", lower_bound=0.1)
_RESULTS = flags.DEFINE_string("results", None, "A results directory of `python -m measure`: also print the "
                               "fraction of peak FLOP/s each network reaches at its best batch size.")


def bare_loop_s(compiled, variables, batch, seconds: float) -> float:
    """Seconds per call of the plainest jitted loop: call and block, nothing else timed per call."""
    jax.block_until_ready(compiled(variables, batch))
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        jax.block_until_ready(compiled(variables, batch))
        calls += 1
    return (time.perf_counter() - start) / calls


def harness_overhead(name: str, rounds: int, seconds: float) -> None:
    """Alternates the bare loop and the harness on one network; prints medians and their ratio."""
    module, shape = models.get(name), models.input_shape(name, 1)
    variables = timing.device_variables(module, shape)
    options = timing.TimingOptions(min_time_s=seconds, min_repeats=3, warmup=1)
    batch = jax.random.normal(jax.random.key(1), shape)
    compiled = jax.jit(functools.partial(module.apply, train=False)).lower(variables, batch).compile()
    bare, harness, medians = [], [], []
    for _ in range(rounds):  # interleaved, so that drift of a shared machine hits both alike
        bare.append(bare_loop_s(compiled, variables, batch, seconds))
        measured = timing.time_forward(module, shape, options=options, variables=variables)
        harness.append(measured.mean_s)  # a mean, as the bare loop's total / calls is
        medians.append(measured.median_s)
    bare_s, harness_s = statistics.median(bare), statistics.median(harness)
    noise = (max(bare) - min(bare)) / bare_s
    print(f"{name} batch 1: bare jitted loop {bare_s * 1e3:.3f} ms/call, harness {harness_s * 1e3:.3f} ms/call "
          f"(medians of {rounds} rounds of means): harness adds {100 * (harness_s / bare_s - 1):+.2f} % "
          f"(the bare loop itself varies {100 * noise:.2f} % between rounds)")
    typical = statistics.median(medians)
    worst = max(abs(m - typical) for m in medians) / typical
    print(f"  {rounds} harness runs: medians {', '.join(f'{m * 1e3:.2f}' for m in medians)} ms; "
          f"each within {100 * worst:.2f} % of the median run")


def fraction_of_peak(out_dir: str) -> None:
    """For each network, the batch size with the most images/s and the share of peak FLOP/s it reaches."""
    rows, environment = results.read(out_dir)
    if not rows:
        raise UserError(f"no results in {out_dir}; run `python -m measure --out={out_dir}` first")
    print(f"peak (matmul probe): {environment['peak_flops_per_s'] / 1e9:.1f} GFLOP/s on {environment['device']}")
    print(f"  {'network':<14}{'batch':>6}{'images/s':>10}{'GFLOP/s':>10}{'of peak':>9}")
    best = {}
    for row in fits.ok_rows(rows):
        if row.model not in best or row.images_per_s > best[row.model].images_per_s:
            best[row.model] = row
    for name, row in best.items():
        print(f"  {name:<14}{row.batch_size:>6}{row.images_per_s:>10.1f}{row.achieved_flops_per_s / 1e9:>10.1f}"
              f"{100 * row.fraction_of_peak:>8.1f}%")


def main(argv):
    """Prints the harness figures, and the fraction of peak when given a results directory."""
    del argv
    harness_overhead(_MODEL.value, _ROUNDS.value, _SECONDS.value)
    if _RESULTS.value:
        fraction_of_peak(_RESULTS.value)


if __name__ == "__main__":
    cli.run(main)
