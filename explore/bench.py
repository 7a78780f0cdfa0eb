"""Benchmark of the design-space explorer: `python -m explore.bench` prints its speed figures.

One section per figure, each its own function called from `main`: the rate at which the explorer
samples random ResNet variants (costs and realised configuration) through the cost memo (from a
cold cache), the uncached rate for the ratio, a check that the memoised counts equal the uncached
ones, and the wall time of the default demo (`python -m explore` with no flags) with what its
analysis found.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import flags

from core import cli
from explore import sample
from explore import space as space_lib
from measure import cost
from measure.cost import count as count_lib
from measure.cost import memo as memo_lib
from models import variants

SPACES = ("resnet_basic", "resnet_bottleneck")  # both block types: 1-8 blocks a stage, widths 0.125-2, 32-320 px

FLAGS = flags.FlagValues()  # this program's own: programs can share a process (tests)
_VARIANTS = flags.DEFINE_integer("variants", 2000, "Random ResNet variants to count through the memo for the rate.",
                                 lower_bound=1, flag_values=FLAGS)
_UNCACHED = flags.DEFINE_integer("uncached", 100, "How many of them to count without the memo too, for the ratio.",
                                 lower_bound=0, flag_values=FLAGS)
_VERIFY = flags.DEFINE_integer("verify", 100, "How many of them to check, count for count, against uncached counts.",
                               lower_bound=0, flag_values=FLAGS)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the random variants.", flag_values=FLAGS)
_DEMO = flags.DEFINE_bool("demo", True, "Also time the default demo (python -m explore with no flags) end to end.",
                          flag_values=FLAGS)


def draw_variants(count: int, seed: int) -> list[variants.Variant]:
    """`count` distinct seeded random ResNet variants, each drawn from one of the two block types' spaces."""
    rng, drawn = np.random.default_rng(seed), {}
    while len(drawn) < count:
        space = space_lib.SPACES[SPACES[rng.integers(len(SPACES))]]
        variant = space.variant({knob.name: knob.draw(rng) for knob in space.knobs})
        drawn.setdefault(str(variant), variant)
    return list(drawn.values())


def per_minute(seconds: float, variants_counted: int) -> str:
    """A rate in variants per minute, with the time each took."""
    return (f"{variants_counted / seconds * 60:.0f} variants per minute "
            f"({seconds / variants_counted * 1e3:.1f} ms each)")


def memoised_rate(drawn: list[variants.Variant]) -> float:
    """Prints the rate of the explorer's work per variant (explore.sample.sample_of: costs and realised
    configuration, through the shared memo emptied first); seconds taken."""
    memo = memo_lib.SHARED
    memo.clear()
    start = time.perf_counter()
    for variant in drawn:
        sample.sample_of(variant)
    seconds = time.perf_counter() - start
    print(f"memoised, from a cold cache: {per_minute(seconds, len(drawn))}")
    print(f"  memo: {len(memo)} calls stored ({memo.weight} of {memo.capacity} cells), "
          f"{memo.hits} hits, {memo.misses} misses")
    return seconds / len(drawn)


def uncached_rate(drawn: list[variants.Variant], memoised_seconds: float) -> None:
    """Prints the rate of counting the same variants without the memo, and the memo's speed-up."""
    start = time.perf_counter()
    for variant in drawn:
        counted = cost.count_variant(variant)
        counted.ops("flops"), counted.ops("macs"), counted.params, counted.total.activations
    seconds = (time.perf_counter() - start) / len(drawn)
    print(f"uncached, the first {len(drawn)}: {per_minute(seconds * len(drawn), len(drawn))}: "
          f"the memo is {seconds / memoised_seconds:.1f}x faster")


def verification(drawn: list[variants.Variant]) -> None:
    """Prints how many variants, counted through a fresh memo, equal their uncached count in every count."""
    memo = memo_lib.Memo()
    equal = sum(count_lib.every_count(cost.count_variant(v, memo=memo)) == count_lib.every_count(cost.count_variant(v))
                for v in drawn)
    print(f"{equal} of {len(drawn)} variants equal in every count (every convention, option, table and byte)")


def demo_wall_time() -> None:
    """Prints the wall time of `python -m explore` with no flags (the offline demo) in a fresh directory."""
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "explore"], cwd=scratch, capture_output=True, text=True,
                              check=False)
        seconds = time.perf_counter() - start
        if done.returncode:
            raise RuntimeError(f"the demo failed ({done.returncode}): {done.stderr[-2000:]}")
        out = os.path.join(scratch, "results", "explore")
        with open(os.path.join(out, "analysis.json"), encoding="utf-8") as f:
            analysis = json.load(f)
    trained = [v for v in analysis["variants"] if v["top1_pct"] is not None]
    print(f"demo (python -m explore, no flags): {seconds / 60:.1f} min wall for {len(analysis['variants'])} variants, "
          f"{len(trained)} trained; top-1 {min(v['top1_pct'] for v in trained):.1f} to "
          f"{max(v['top1_pct'] for v in trained):.1f} %")
    for name in ("hyperbola_ops", "hyperbola_time"):
        fit, held = analysis[name], analysis[f"{name}_held_out"]
        print(f"  {name}: " + ("not fitted" if fit is None else f"R² {fit['r2']:.3f}, k {fit['k']:.3g}"
                                + (f", held-out MAE {held['mae']:.2f} points" if held else "")))
    for batch, fit in analysis["time_vs_ops"].items():
        print(f"  time vs GFLOPs at batch {batch}: {fit['slope']:.4g} ms/GFLOP + {fit['intercept']:.4g} ms, "
              f"R² {fit['r2']:.3f}")


def main(argv):
    """Prints each section's figures in turn."""
    del argv
    drawn = draw_variants(_VARIANTS.value, _SEED.value)
    cost.count_model("resnet18")  # JAX's own one-time start-up is not the explorer's
    print(f"{len(drawn)} random ResNet variants (basic and bottleneck blocks, 1-8 blocks per stage, "
          f"widths 0.125-2, 32-320 px), costs at batch 1:")
    seconds = memoised_rate(drawn)
    if _UNCACHED.value:
        uncached_rate(drawn[:_UNCACHED.value], seconds)
    if _VERIFY.value:
        verification(drawn[:_VERIFY.value])
    if _DEMO.value:
        demo_wall_time()


if __name__ == "__main__":
    cli.run(main, FLAGS)
