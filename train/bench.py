"""Benchmark of training: `python -m train.bench` prints step, input and harness speed figures.

Four figures: training images/s of ENet and ResNet-50 at 224 and 64 px, each as a fraction of
the measured peak FLOP/s (the step's operations counted by the cost module); the input
pipeline alone on JPEGs of ImageNet's size and on digits, against the training rate; the
training loop's overhead against a bare loop of the same jitted step; and the time digits take
to reach 95 % top-1.
"""

import statistics
import tempfile
import time

import jax
import numpy as np
from absl import flags

import models
from core import cli, runtime, values
from measure import cost, timing
from train import config as config_lib
from train import distributed, input_pipeline, optim, tfds_input, trainer

FLAGS = flags.FlagValues()  # this program's own: programs can share a process (tests)
_NETWORKS = flags.DEFINE_list("networks", ["enet", "resnet50"], "Networks whose training step is timed.",
                              flag_values=FLAGS)
_RESOLUTIONS = flags.DEFINE_list("resolutions", ["224", "64"], "Input sides the training step is timed at.",
                                 flag_values=FLAGS)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Global batch of the timed training steps.", lower_bound=1,
                                   flag_values=FLAGS)
_PRECISION = flags.DEFINE_enum("precision", "float32", list(config_lib.PRECISIONS),
                               "Compute precision of the timed steps (bfloat16 for accelerators).", flag_values=FLAGS)
_MIN_TIME = flags.DEFINE_float("min_time", 3.0, "Fewest seconds of timed steps per figure.", lower_bound=0,
                               flag_values=FLAGS)
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Alternating rounds of the harness and the bare loop.", lower_bound=1,
                               flag_values=FLAGS)
_JPEGS = flags.DEFINE_integer("jpegs", 512, "Synthetic ImageNet-sized JPEGs the input pipeline reads.",
                              lower_bound=64, flag_values=FLAGS)
cli.require_finite(_MIN_TIME)

HARNESS_MODEL = "resnet18:width=0.25,resolution=32"  # small, so per-step host work would show
HARNESS_BATCH = 64


def _timed_steps(step, state, batch, min_time_s: float) -> tuple[float, object]:
    """Seconds per step of `step` over at least `min_time_s` (after one compiling call), and the state.

    Steps are dispatched back to back, as training runs them, but each waits for the one before
    the last: without that bound, dispatching for `min_time_s` could queue minutes of work.
    """
    state, metrics = jax.block_until_ready(step(state, batch))
    calls, start = 0, time.perf_counter()
    while True:
        previous = metrics
        state, metrics = step(state, batch)
        jax.block_until_ready(previous)
        calls += 1
        if calls >= 3 and time.perf_counter() - start >= min_time_s:
            jax.block_until_ready(state)
            return (time.perf_counter() - start) / calls, state


def _step_and_state(variant: str, batch_size: int, precision: str):
    """The jitted train step as `fit` builds it, a fresh state, and a random batch on the devices."""
    module = models.variant(variant).module(num_classes=1000)
    shape = models.variant(variant).input_shape(batch_size)
    config = config_lib.TrainConfig(model=variant, batch_size=batch_size, precision=precision)
    tx = optim.optimizer(config, steps_per_epoch=1000)
    mesh = distributed.data_mesh()
    jitted = trainer.jitted_steps(module, tx, config, mesh, shape[1])
    step, init = jitted.train, jitted.init
    rng = np.random.default_rng(0)
    batch = distributed.global_batch({"image": rng.integers(0, 256, shape, np.uint8),
                                      "label": rng.integers(0, 1000, shape[:1]).astype(np.int32)},
                                     distributed.batch_sharded(mesh))
    return step, init(), batch, module, shape


def training_rates(peak: float) -> dict:
    """Prints and returns training images/s per (network, resolution)."""
    rates = {}
    print(f"\ntraining step, global batch {_BATCH_SIZE.value}, {_PRECISION.value} "
          f"({len(jax.devices())} {jax.devices()[0].platform} device(s)):")
    print(f"{'network':<12}{'px':>5}{'GFLOP/image':>13}{'ms/step':>10}{'images/s':>10}{'of peak':>9}")
    for name in _NETWORKS.value:
        for resolution in values.positive_integers("resolutions", _RESOLUTIONS.value)[::-1]:
            variant = str(models.variant(f"{name}:resolution={resolution}"))
            step, state, batch, module, shape = _step_and_state(variant, _BATCH_SIZE.value, _PRECISION.value)
            flops = cost.count_module(module, shape, train=True).ops("flops")
            seconds, _ = _timed_steps(step, state, batch, _MIN_TIME.value)
            rates[(name, resolution)] = shape[0] / seconds
            print(f"{name:<12}{resolution:>5}{flops / shape[0] / 1e9:>13.2f}{seconds * 1e3:>10.1f}"
                  f"{shape[0] / seconds:>10.1f}{flops / seconds / peak:>9.1%}", flush=True)
    return rates


def _pipeline_rate(batches, batch_size: int, min_time_s: float) -> float:
    """Images per second a batch iterator delivers, after its first batch (start-up) is out."""
    next(batches)
    count, start = 0, time.perf_counter()
    while count < 3 or time.perf_counter() - start < min_time_s:
        next(batches)
        count += 1
    return count * batch_size / (time.perf_counter() - start)


def _synthetic_jpegs(data_dir: str, count: int) -> str:
    """Prepares a tfds data set of `count` smooth random JPEGs of ImageNet's typical 500x375 size."""
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel  # the digits path needs none

    tfds_input.tfds_module()  # keeps TensorFlow off any GPU, as training does
    tfds.disable_progress_bar()

    class SyntheticJpegs(tfds.core.GeneratorBasedBuilder):
        """Random low-frequency colour images, JPEG-encoded at 500x375, 1000 classes."""

        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            """JPEG images and 1000 classes."""
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                "label": tfds.features.ClassLabel(num_classes=1000)}))

        def _split_generators(self, dl_manager):
            """A training and a test split."""
            return {"train": self._generate_examples(count, 0), "test": self._generate_examples(64, 1)}

        def _generate_examples(self, n, seed):
            """Upsampled 25x19 noise: JPEG sizes like photographs', not like white noise's."""
            rng = np.random.default_rng(seed)
            for index in range(n):
                small = rng.integers(0, 256, (19, 25, 3), np.uint8)
                yield index, {"image": np.repeat(np.repeat(small, 20, 0), 20, 1)[:375, :500],
                              "label": index % 1000}

    SyntheticJpegs(data_dir=data_dir).download_and_prepare()
    return "synthetic_jpegs"


def input_rates(training: dict) -> None:
    """Prints the input pipeline's images/s on JPEGs at 224 and on digits, against the training rates."""
    print("\ninput pipeline alone (one host, 2 x the fastest training rate needed):")
    with tempfile.TemporaryDirectory() as data_dir:
        name = _synthetic_jpegs(data_dir, _JPEGS.value)
        for resolution in (224, 64):
            batches = input_pipeline.train_batches(name, data_dir, batch_size=_BATCH_SIZE.value,
                                                   resolution=resolution, seed=0)
            rate = _pipeline_rate(batches, _BATCH_SIZE.value, _MIN_TIME.value)
            need = max((r for (_, px), r in training.items() if px == resolution), default=float("nan"))
            print(f"  tf.data, 500x375 JPEGs -> {resolution} px: {rate:>9,.0f} images/s "
                  f"({rate / need:.1f}x the fastest training step at {resolution} px)")
    for resolution in (224, 32):
        batches = input_pipeline.train_batches("digits", batch_size=_BATCH_SIZE.value, resolution=resolution, seed=0)
        rate = _pipeline_rate(batches, _BATCH_SIZE.value, _MIN_TIME.value)
        print(f"  digits -> {resolution} px: {rate:>9,.0f} images/s")


def harness_overhead() -> None:
    """Prints `fit`'s images/s against a bare loop of the same jitted step on one resident batch."""
    step, state, batch, _, _ = _step_and_state(HARNESS_MODEL, HARNESS_BATCH, "float32")
    steps_per_round = 200
    config = config_lib.TrainConfig(model=HARNESS_MODEL, dataset="digits", batch_size=HARNESS_BATCH,
                                    steps=steps_per_round, log_every=steps_per_round, eval_every=10**9)
    bare, harness = [], []
    for _ in range(_ROUNDS.value):  # alternating, so drifts of this shared machine hit both
        seconds, state = _timed_steps(step, state, batch, _MIN_TIME.value)
        bare.append(HARNESS_BATCH / seconds)
        result = trainer.fit(config)
        harness.append(next(r["images_per_s"] for r in result["history"] if "images_per_s" in r))
    best_bare, best_harness = max(bare), max(harness)
    print(f"\nharness: {HARNESS_MODEL}, batch {HARNESS_BATCH}, digits from the pipeline: "
          f"{best_harness:,.0f} images/s against a bare jitted loop's {best_bare:,.0f} "
          f"(overhead {1 - best_harness / best_bare:.1%}; medians {statistics.median(harness):,.0f} and "
          f"{statistics.median(bare):,.0f})")


def time_to_95_percent() -> None:
    """Prints how long a small ResNet takes to reach 95 % top-1 on digits, compile included."""
    config = config_lib.TrainConfig(model=HARNESS_MODEL, dataset="digits", batch_size=64, epochs=8,
                                    learning_rate=0.1, schedule="cosine", log_every=10**9)
    start = time.perf_counter()
    result = trainer.fit(config)
    total = time.perf_counter() - start
    reached = next((r for r in result["history"] if r["split"] == "eval" and r["top1_pct"] >= 95), None)
    when = f"{reached['elapsed_s']:.1f} s (epoch {reached['step'] / (result['step'] / 8):.0f})" if reached else "never"
    print(f"\ndigits to 95 % top-1 ({HARNESS_MODEL}, batch 64, cosine SGD 0.1): {when}; "
          f"8 epochs end at {result['eval_top1']:.2%} in {total:.1f} s")


def main(argv):
    """Prints the four figures of the training speed goals."""
    del argv
    runtime.configure()
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}); runtime: "
          f"{runtime.in_force().get('xla_flags') or 'XLA defaults'}")
    peak = timing.peak_flops_per_s("float32" if _PRECISION.value == "float32" else "bfloat16")
    print(f"peak: {peak / 1e9:.1f} GFLOP/s ({_PRECISION.value} matmul probe)")
    rates = training_rates(peak)
    input_rates(rates)
    harness_overhead()
    time_to_95_percent()


if __name__ == "__main__":
    cli.run(main, FLAGS)
