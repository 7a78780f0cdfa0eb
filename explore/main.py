"""Flags of `python -m explore`: the spaces and sampler, what to run per variant, shards and budgets.

With no flags it runs the offline demo: two small ResNet spaces on the digits, sampled, timed on
this device, trained briefly, analysed and reported (BUILD.md gives its wall time on two CPU cores).
"""

import dataclasses
import os

from absl import flags

from core import cli, runtime, values
from core.errors import UserError
from explore import jobs as jobs_lib
from explore import plan as plan_lib
from explore import run as run_lib
from explore import sample, sweep
from measure import device, job, timing

_RUN = jobs_lib.RunSettings()
DEMO_SPACES = ["resnet_basic", "resnet_bottleneck"]
DEMO_RANGES = ["width=0.25:0.5", "depth_1=1:2", "depth_2=1:2", "depth_3=1:2", "depth_4=1:2", "resolution=32:64"]

FLAGS = flags.FlagValues()  # this program's own: programs can share a process (tests)
_OUT = flags.DEFINE_string("out", os.path.join("results", "explore"), "Sweep directory; a rerun resumes there.",
                           flag_values=FLAGS)
_STEPS = flags.DEFINE_list("steps", None, f"Steps to run, of {','.join(run_lib.STEPS)} (default: all; with "
                           "--num_shards > 1, sample,run).", flag_values=FLAGS)
_SPACES = flags.DEFINE_list("spaces", DEMO_SPACES, "Design spaces (resnet_basic, resnet_bottleneck, vgg, enet) "
                            "or scaling series base/rule (rule: width, depth, resolution, compound).",
                            flag_values=FLAGS)
_RANGES = flags.DEFINE_list("ranges", DEMO_RANGES, "knob=low:high items narrowing every space with that knob "
                            "(width, depth_<stage>, resolution; default: the demo's, only with its spaces).",
                            flag_values=FLAGS)
_SAMPLER = flags.DEFINE_enum("sampler", "random", list(plan_lib.SAMPLERS), "random (seeded draws) or grid.",
                             flag_values=FLAGS)
_SAMPLES = flags.DEFINE_integer("samples", 8, "Variants drawn per space by the random sampler.", lower_bound=1,
                                flag_values=FLAGS)
_GRID_POINTS = flags.DEFINE_integer("grid_points", 2, "Values per knob of the grid sampler (at most the knob's own "
                                    "count).", lower_bound=1, flag_values=FLAGS)
_SAMPLE_SEED = flags.DEFINE_integer("sample_seed", 0, "Seed of the random sampler.", lower_bound=0, flag_values=FLAGS)
_MAX_VARIANTS = flags.DEFINE_integer("max_variants", plan_lib.MAX_VARIANTS, "Most variants the sample step may cost "
                                     "(the grid's size, or --samples times the spaces); raise it for larger plans.",
                                     lower_bound=1, flag_values=FLAGS)
_CONSTRAINTS = flags.DEFINE_list("constraints", [], "metric=low:high items (metrics: flops, macs, params, "
                                 "activations at batch 1; either end may be empty), e.g. flops=:1e9.",
                                 flag_values=FLAGS)
_MEASURE = flags.DEFINE_bool("measure", True, "Time each variant on the device (memory and energy too).",
                             flag_values=FLAGS)
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", [str(b) for b in _RUN.batch_sizes], "Batch sizes to time at.",
                                 flag_values=FLAGS)
_PRECISION = flags.DEFINE_enum("precision", _RUN.precision, list(timing.PRECISIONS), "Precision of the timing.",
                               flag_values=FLAGS)
_MIN_TIME = flags.DEFINE_float("min_time", _RUN.min_time_s, "Fewest seconds of timed calls per batch size.",
                               lower_bound=0, flag_values=FLAGS)
_POWER_WATTS = flags.DEFINE_float("power_watts", None, "Model energy with this constant power where no meter "
                                  "reads (labelled modelled).", lower_bound=0, flag_values=FLAGS)
_TRAIN = flags.DEFINE_bool("train", True, "Train each variant for the budget and record its top-1.", flag_values=FLAGS)
_DATASET = flags.DEFINE_string("dataset", _RUN.dataset, "digits (offline) or any data set python -m train reads.",
                               flag_values=FLAGS)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tensorflow-datasets data directory (default: tfds's own).",
                                flag_values=FLAGS)
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", _RUN.train_steps, "Training budget per variant, in steps.",
                                    lower_bound=1, flag_values=FLAGS)
_TRAIN_BATCH_SIZE = flags.DEFINE_integer("train_batch_size", _RUN.train_batch_size, "Training batch size.",
                                         lower_bound=1, flag_values=FLAGS)
_LEARNING_RATE = flags.DEFINE_float("learning_rate", _RUN.learning_rate, "Peak learning rate (SGD, cosine).",
                                    lower_bound=0, flag_values=FLAGS)
_SEEDS = flags.DEFINE_list("seeds", [str(s) for s in _RUN.seeds], "Training seeds; accuracy is their mean.",
                           flag_values=FLAGS)
_ENERGY_BUDGETS = flags.DEFINE_list("energy_budgets_mj", [], "Energy budgets per image in mJ for the frontier "
                                    "(default: log-spaced over the variants).", flag_values=FLAGS)
_POWER_BUDGET = flags.DEFINE_float("power_budget_w", None, "With --fps: the budget is this power at that frame "
                                   "rate (energy per image = W / fps).", lower_bound=0, flag_values=FLAGS)
_FPS = flags.DEFINE_float("fps", None, "Frame rate for --power_budget_w.", lower_bound=0, flag_values=FLAGS)
_NETWORKS = flags.DEFINE_string("networks_results", None, "A python -m measure results directory whose networks "
                                "are shown for context (default: results/<device>/ when it exists).", flag_values=FLAGS)
_SHARD_INDEX = flags.DEFINE_integer("shard_index", None, "This process's shard (default: SLURM's array task, else 0).",
                                    lower_bound=0, flag_values=FLAGS)
_NUM_SHARDS = flags.DEFINE_integer("num_shards", None, "Shards the variants are split into (default: SLURM's, else 1).",
                                   lower_bound=1, flag_values=FLAGS)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Discard the sweep in --out instead of resuming it.",
                               flag_values=FLAGS)
cli.require_finite(_MIN_TIME, _POWER_WATTS, _LEARNING_RATE, _POWER_BUDGET, _FPS)


def settings_from_flags() -> run_lib.Settings:
    """The sweep's settings from the flags; UserError on any bad one."""
    ranges = [values.bounds("ranges", item) for item in _RANGES.value]
    if FLAGS["spaces"].present and not FLAGS["ranges"].present:
        ranges = []  # the default ranges are the demo's, for the demo's spaces: chosen spaces keep their own
    if any(low is None or high is None for _, low, high in ranges):
        raise UserError("--ranges items need both ends, e.g. width=0.25:1")
    constraints = tuple(values.bounds("constraints", item, example="flops=:1e9") for item in _CONSTRAINTS.value)
    for metric, _, _ in constraints:
        if metric not in sample.METRICS:
            raise UserError(f"--constraints: unknown metric {metric!r}; choose from: {', '.join(sample.METRICS)}")
    budgets = tuple(mj / 1e3 for mj in values.numbers("energy_budgets_mj", _ENERGY_BUDGETS.value))
    if not all(b > 0 for b in budgets):
        raise UserError(f"--energy_budgets_mj takes positive energies per image in mJ; got "
                        f"{','.join(_ENERGY_BUDGETS.value)}")
    if (_POWER_BUDGET.value is None) != (_FPS.value is None):
        raise UserError("--power_budget_w and --fps go together; pass both or neither")
    if _POWER_BUDGET.value is not None:
        if not _FPS.value > 0:
            raise UserError("--fps must be more than 0")
        if not _POWER_BUDGET.value > 0:
            raise UserError("--power_budget_w must be more than 0")
        budgets += (_POWER_BUDGET.value / _FPS.value,)
    shard_index, num_shards = sweep.shard_from_env(_SHARD_INDEX.value, _NUM_SHARDS.value)
    steps = tuple(_STEPS.value) if _STEPS.value is not None else (run_lib.STEPS if num_shards == 1 else ("sample", "run"))
    settings = run_lib.Settings(
        out_dir=_OUT.value, steps=steps, shard_index=shard_index, num_shards=num_shards,
        plan=plan_lib.PlanSettings(spaces=tuple(_SPACES.value), ranges=tuple(ranges), sampler=_SAMPLER.value,
                                   samples=_SAMPLES.value, grid_points=_GRID_POINTS.value, seed=_SAMPLE_SEED.value,
                                   constraints=constraints, max_variants=_MAX_VARIANTS.value),
        run=jobs_lib.RunSettings(
            measure=_MEASURE.value, batch_sizes=values.positive_integers("batch_sizes", _BATCH_SIZES.value),
            precision=_PRECISION.value, min_time_s=_MIN_TIME.value, power_watts=_POWER_WATTS.value,
            train=_TRAIN.value, dataset=_DATASET.value, data_dir=_DATA_DIR.value, train_steps=_TRAIN_STEPS.value,
            train_batch_size=_TRAIN_BATCH_SIZE.value, learning_rate=_LEARNING_RATE.value,
            seeds=tuple(dict.fromkeys(values.numbers("seeds", _SEEDS.value, int)))),
        energy_budgets_j=budgets, networks_dir=_NETWORKS.value, overwrite=_OVERWRITE.value)
    run_lib.check(settings)  # every input, before the default below starts a JAX backend to name the device
    if settings.networks_dir is None and "analyse" in steps:
        default = job.default_out_dir(device.default_device())
        if os.path.exists(os.path.join(default, "results.json")):
            settings = dataclasses.replace(settings, networks_dir=default)
    return settings


def main(argv):
    """Runs the sweep's steps; Ctrl-C keeps every finished job."""
    del argv
    runtime.configure()  # before anything starts a JAX backend
    settings = settings_from_flags()
    try:
        run_lib.run(settings)
    except KeyboardInterrupt as interrupt:
        raise cli.Stopped.after(interrupt, f"every finished job is in {settings.out_dir}; run the same command "
                                "again to resume") from None
