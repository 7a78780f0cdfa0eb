"""Benchmarks of the timing setup: `python -m measure.bench` prints the runtime and harness figures.

1. XLA's defaults against the runtime this project chooses (core/runtime.py), for ResNet-18,
   ResNet-50, VGG-16 and Inception-v3 at batch 1 and 16: time per image, their ratio, and the
   CPU seconds per wall second (cores in use). XLA reads its flags once per process, so each
   configuration is a worker process that compiles every point once; the parent then alternates
   between them point by point, round after round, so that a shared machine's drift hits both.
2. bfloat16 against float32 in the chosen runtime, the same way.
3. The harness's own overhead: a bare jitted loop against timing.time_forward, alternated.
4. With --results, the fraction of peak FLOP/s each network reached in a results directory.
"""

import functools
import json
import os
import statistics
import subprocess
import sys
import time

import jax
import numpy as np
from absl import flags

import models
from core import cli, runtime, values
from core.errors import UserError
from measure import findings, results, timing

FLAGS = flags.FlagValues()  # this program's own: programs can share a process (tests)
_NETWORKS = flags.DEFINE_list("networks", ["resnet18", "resnet50", "vgg16", "inception_v3"],
                              "Networks of the runtime comparison.", flag_values=FLAGS)
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1", "16"], "Batch sizes of the runtime comparison.",
                                 flag_values=FLAGS)
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Alternating rounds per comparison.", lower_bound=1, flag_values=FLAGS)
_SECONDS = flags.DEFINE_float("seconds", 2.0, "Seconds of timed calls per point and round.", lower_bound=0.1,
                              flag_values=FLAGS)
_PARTS = flags.DEFINE_list("parts", ["runtime", "bfloat16", "harness"], "Which benchmarks to run: runtime, "
                           "bfloat16, harness.", flag_values=FLAGS)
_HARNESS_MODEL = flags.DEFINE_string("harness_model", "resnet50", "Network of the harness overhead benchmark.",
                                     flag_values=FLAGS)
_RESULTS = flags.DEFINE_string("results", None, "A results directory of `python -m measure`: also print the "
                               "fraction of peak FLOP/s each network reaches at its best batch size.",
                               flag_values=FLAGS)
cli.require_finite(_SECONDS)


def serve() -> None:
    """A worker: reads JSON requests on stdin, answers each on stdout (see Worker)."""
    compiled = {}
    for line in sys.stdin:
        request = json.loads(line)
        key = (request["model"], request["batch_size"], request["precision"])
        if key not in compiled:
            module = models.get(request["model"])
            shape = models.input_shape(request["model"], request["batch_size"])
            variables = timing.device_variables(module, shape, request["precision"])
            batch = timing.to_device(np.random.default_rng(1).standard_normal(shape, np.float32), request["precision"])
            program = jax.jit(functools.partial(module.apply, train=False)).lower(variables, batch).compile()
            compiled[key] = functools.partial(program, variables, batch)
            timing.warm_up(compiled[key], timing.TimingOptions(min_time_s=0.5))
        options = timing.TimingOptions(min_time_s=request["seconds"], min_repeats=3, warmup=1)
        cpu, wall = time.process_time(), time.perf_counter()
        times = timing.latencies(compiled[key], options)
        cores = (time.process_time() - cpu) / (time.perf_counter() - wall)
        print(json.dumps({"per_image_s": statistics.median(times) / request["batch_size"], "cores": cores}),
              flush=True)


class Worker:
    """A child process with its own environment (XLA flags), timing points on request."""

    def __init__(self, env: dict):
        self.process = subprocess.Popen([sys.executable, "-c", "from measure import bench; bench.serve()"], env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def time(self, model: str, batch_size: int, precision: str, seconds: float) -> dict:
        """Median seconds per image and cores in use over `seconds` of calls (compiling the first time)."""
        self.process.stdin.write(json.dumps({"model": model, "batch_size": batch_size, "precision": precision,
                                             "seconds": seconds}) + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        if not answer:
            raise RuntimeError(f"a benchmark worker died timing {model} at batch {batch_size}")
        return json.loads(answer)

    def close(self) -> None:
        """Ends the worker."""
        self.process.stdin.close()
        self.process.wait()


def compare(sides, points, rounds: int, seconds: float) -> None:
    """Times each (network, batch) point on both sides, alternating, and prints medians, ratio and cores.

    A side is (label, environment, precision) and gets a worker process of its own; the ratio is
    the first side's time over the second's.
    """
    (label_a, env_a, precision_a), (label_b, env_b, precision_b) = sides
    worker_a, worker_b = Worker(env_a), Worker(env_b)
    try:
        print(f"  {'network':<14}{'batch':>6}{label_a:>16}{label_b:>16}{'ratio':>8}{'cores':>12}")
        for model, batch in points:  # the first call compiles and warms up, untimed
            worker_a.time(model, batch, precision_a, 0.0)
            worker_b.time(model, batch, precision_b, 0.0)
        for model, batch in points:
            a, b = [], []
            for _ in range(rounds):
                a.append(worker_a.time(model, batch, precision_a, seconds))
                b.append(worker_b.time(model, batch, precision_b, seconds))
            ms_a = statistics.median(x["per_image_s"] for x in a) * 1e3
            ms_b = statistics.median(x["per_image_s"] for x in b) * 1e3
            cores = f"{statistics.median(x['cores'] for x in a):.2f}/{statistics.median(x['cores'] for x in b):.2f}"
            print(f"  {model:<14}{batch:>6}{ms_a:>13.2f} ms{ms_b:>13.2f} ms{ms_a / ms_b:>7.2f}x{cores:>12}",
                  flush=True)
    finally:
        worker_a.close()
        worker_b.close()


def _environments() -> tuple[dict, dict]:
    """XLA's defaults (no XLA_FLAGS) and the chosen runtime, each as a child environment."""
    base = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    chosen = dict(base)
    flags_chosen = [f for fs in runtime.CHOSEN_XLA_FLAGS.values() for f in fs if runtime.xla_accepts(f)]
    if flags_chosen:
        chosen["XLA_FLAGS"] = " ".join(flags_chosen)
    return base, chosen


def runtime_comparison(points, rounds: int, seconds: float) -> None:
    """Part 1: XLA's defaults against the chosen runtime, float32."""
    default_env, chosen_env = _environments()
    print(f"XLA defaults vs the chosen runtime (XLA_FLAGS={chosen_env.get('XLA_FLAGS', '')!r}), float32, "
          f"median ms per image over {rounds} alternating rounds of {seconds:g} s; cores: CPU s per wall s")
    compare([("XLA defaults", default_env, "float32"), ("chosen", chosen_env, "float32")], points, rounds, seconds)


def bfloat16_comparison(points, rounds: int, seconds: float) -> None:
    """Part 2: float32 against bfloat16, both in the chosen runtime (two workers, alternated)."""
    _, chosen_env = _environments()
    print("float32 vs bfloat16 in the chosen runtime, median ms per image (ratio > 1: bfloat16 is faster)")
    compare([("float32", chosen_env, "float32"), ("bfloat16", chosen_env, "bfloat16")], points, rounds, seconds)


def bare_loop_s(compiled, variables, batch, seconds: float) -> float:
    """Seconds per call of the plainest jitted loop: call and block, nothing else timed per call."""
    jax.block_until_ready(compiled(variables, batch))
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        jax.block_until_ready(compiled(variables, batch))
        calls += 1
    return (time.perf_counter() - start) / calls


def harness_overhead(name: str, rounds: int, seconds: float) -> None:
    """Part 3: alternates the bare loop and the harness on one network; prints medians and their ratio."""
    module, shape = models.get(name), models.input_shape(name, 1)
    variables = timing.device_variables(module, shape)
    options = timing.TimingOptions(min_time_s=seconds, min_repeats=3, warmup=1)
    batch = jax.random.normal(jax.random.key(1), shape)
    compiled = jax.jit(functools.partial(module.apply, train=False)).lower(variables, batch).compile()
    bare, harness, medians = [], [], []
    for _ in range(rounds):  # interleaved, so that drift of a shared machine hits both alike
        bare.append(bare_loop_s(compiled, variables, batch, seconds))
        measured = timing.time_forward(module, shape, options=options, variables=variables)
        harness.append(statistics.mean(measured.latencies_s))  # a mean, as the bare loop's total / calls is
        medians.append(measured.median_s)
    bare_s, harness_s = statistics.median(bare), statistics.median(harness)
    noise = (max(bare) - min(bare)) / bare_s
    print(f"harness: {name} batch 1: bare jitted loop {bare_s * 1e3:.3f} ms/call, harness {harness_s * 1e3:.3f} "
          f"ms/call (medians of {rounds} rounds of means): harness adds {100 * (harness_s / bare_s - 1):+.2f} % "
          f"(the bare loop itself varies {100 * noise:.2f} % between rounds)")
    typical = statistics.median(medians)
    worst = max(abs(m - typical) for m in medians) / typical
    print(f"  {rounds} harness runs: medians {', '.join(f'{m * 1e3:.2f}' for m in medians)} ms; "
          f"each within {100 * worst:.2f} % of the median run")


def fraction_of_peak(out_dir: str) -> None:
    """Part 4: per network and precision, the batch size with the most images/s and its share of peak."""
    contents = results.read(out_dir)
    if not contents.rows:
        raise UserError(f"no results in {out_dir}; run `python -m measure --out={out_dir}` first")
    peaks = contents.environment["peak_flops_per_s"]
    print(f"peak (matmul probe) on {contents.environment['device']}: "
          + ", ".join(f"{p}: {v / 1e9:.1f} GFLOP/s" for p, v in peaks.items()))
    print(f"  {'network':<14}{'precision':>10}{'res':>5}{'batch':>6}{'images/s':>10}{'GFLOP/s':>10}{'of peak':>9}")
    best = {}
    for row in findings.ok_rows(contents.rows):
        key = (row.model, row.precision, row.resolution)
        if key not in best or row.images_per_s > best[key].images_per_s:
            best[key] = row
    for (name, precision, resolution), row in best.items():
        print(f"  {name:<14}{precision:>10}{resolution:>5}{row.batch_size:>6}{row.images_per_s:>10.1f}"
              f"{row.achieved_flops_per_s / 1e9:>10.1f}{100 * row.fraction_of_peak:>8.1f}%")


def main(argv):
    """Prints the figures of the parts asked for."""
    del argv
    unknown = set(_PARTS.value) - {"runtime", "bfloat16", "harness"}
    if unknown:
        raise UserError(f"--parts takes runtime, bfloat16 and harness; got {', '.join(sorted(unknown))}")
    for name in _NETWORKS.value + [_HARNESS_MODEL.value]:
        models.spec(name)
    points = [(n, b) for n in _NETWORKS.value for b in values.positive_integers("batch_sizes", _BATCH_SIZES.value)]
    if "runtime" in _PARTS.value:
        runtime_comparison(points, _ROUNDS.value, _SECONDS.value)
    if "bfloat16" in _PARTS.value:
        bfloat16_comparison(points, _ROUNDS.value, _SECONDS.value)
    if "harness" in _PARTS.value:
        runtime.configure()
        harness_overhead(_HARNESS_MODEL.value, _ROUNDS.value, _SECONDS.value)
    if _RESULTS.value:
        fraction_of_peak(_RESULTS.value)


if __name__ == "__main__":
    cli.run(main, FLAGS)
