"""Flags of `python -m explore`: the spaces and sampler, what to run per variant, shards and budgets.

With no flags it runs the offline demo: two small ResNet spaces (the narrowest widths the rounding
allows to 0.5, 1 to 3 blocks a stage, 32 and 64 px) on the synthetic task, sampled, timed on this
device, trained briefly, analysed and reported (BUILD.md gives its wall time on two CPU cores).
"""

import dataclasses
import os

from absl import flags

from core import cli, joblog, runtime, values
from core.errors import UserError
from explore import jobs as jobs_lib
from explore import plan as plan_lib
from explore import run as run_lib
from explore import sample
from measure import device, main_job

DEMO_SPACES = ["resnet_basic", "resnet_bottleneck"]
DEMO_RANGES = ["width=0.125:0.5", "depth_1=1:3", "depth_2=1:3", "depth_3=1:3", "depth_4=1:3", "resolution=32:64"]

FLAGS = flags.FlagValues()  # this program's own: programs can share a process (tests)
SAFE_STOPS = True  # long work: a signal is a request, honoured at the next safe point (core.cli)
_OUT = flags.DEFINE_string("out", os.path.join("results", "explore"), "Sweep directory; a rerun resumes there.",
                           flag_values=FLAGS)
_STEPS = flags.DEFINE_list("steps", None, f"Steps to run, of {','.join(run_lib.STEPS)} (default: all but recheck; "
                           "with --num_shards > 1, sample,run).", flag_values=FLAGS)
_RECHECK = flags.DEFINE_bool("recheck", False, "Add the recheck step: train a quarter of the variants, spread across "
                             "the ranking, at 3x the budget and report Kendall's tau.", flag_values=FLAGS)
_SPACES = flags.DEFINE_list("spaces", DEMO_SPACES, "Design spaces (resnet_basic, resnet_bottleneck, vgg, enet) "
                            "or scaling series base/rule (rule: width, depth, resolution, compound).",
                            flag_values=FLAGS)
_RANGES = flags.DEFINE_list("ranges", DEMO_RANGES, "knob=low:high items narrowing every space with that knob "
                            "(width, depth_<stage>, resolution; default: the demo's, only with its spaces).",
                            flag_values=FLAGS)
_CONSTRAINTS = flags.DEFINE_list("constraints", [], "metric=low:high items (metrics: flops, macs, params, "
                                 "activations at batch 1, and with --predictor latency_ms and energy_mj as predicted; "
                                 "either end may be empty), e.g. flops=:1e9.",
                                 flag_values=FLAGS)
# The other settings of the plan and of the run step have a flag per field, made from the field
# (core.cli.define_flags) and named as it is but where renamed here; the plan fields above parse
# lists of items and default to the demo's, so their flags are declared by hand.
PLAN_FIELDS_BY_HAND = ("spaces", "ranges", "constraints")
PLAN_FLAG_NAMES = {"seed": "sample_seed"}
RUN_FLAG_NAMES = {"min_time_s": "min_time"}
cli.define_flags(plan_lib.PlanSettings, FLAGS, skip=PLAN_FIELDS_BY_HAND, rename=PLAN_FLAG_NAMES)
cli.define_flags(jobs_lib.RunSettings, FLAGS, rename=RUN_FLAG_NAMES)
# Lists read beyond their items' type: batch sizes positive, distinct and ascending; seeds each once.
_RUN_PARSERS = {"batch_sizes": values.positive_integers,
                "seeds": lambda flag, items: tuple(dict.fromkeys(values.numbers(flag, items, int)))}
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
cli.require_finite(_POWER_BUDGET, _FPS)


def settings_from_flags() -> run_lib.Settings:
    """The sweep's settings from the flags; UserError on any bad one."""
    ranges = [values.bounds("ranges", item) for item in _RANGES.value]
    if FLAGS["spaces"].present and not FLAGS["ranges"].present:
        ranges = []  # the default ranges are the demo's, for the demo's spaces: chosen spaces keep their own
    if any(low is None or high is None for _, low, high in ranges):
        raise UserError("--ranges items need both ends, e.g. width=0.25:1")
    constraints = tuple(values.bounds("constraints", item, example="flops=:1e9") for item in _CONSTRAINTS.value)
    for metric, _, _ in constraints:
        if metric not in sample.CONSTRAINABLE:
            raise UserError(f"--constraints: unknown metric {metric!r}; choose from: {', '.join(sample.CONSTRAINABLE)}")
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
    shard_index, num_shards = joblog.shard_from_env(_SHARD_INDEX.value, _NUM_SHARDS.value)
    steps = tuple(_STEPS.value) if _STEPS.value is not None else (
        (run_lib.STEPS if _RECHECK.value else run_lib.DEFAULT_STEPS) if num_shards == 1 else ("sample", "run"))
    settings = run_lib.Settings(
        out_dir=_OUT.value, steps=steps, shard_index=shard_index, num_shards=num_shards,
        plan=plan_lib.PlanSettings(spaces=tuple(_SPACES.value), ranges=tuple(ranges), constraints=constraints,
                                   **cli.config_kwargs(plan_lib.PlanSettings, FLAGS, skip=PLAN_FIELDS_BY_HAND,
                                                       rename=PLAN_FLAG_NAMES)),
        run=jobs_lib.RunSettings(**cli.config_kwargs(jobs_lib.RunSettings, FLAGS, rename=RUN_FLAG_NAMES,
                                                     parsers=_RUN_PARSERS)),
        energy_budgets_j=budgets, networks_dir=_NETWORKS.value, overwrite=_OVERWRITE.value)
    run_lib.check(settings)  # every input, before the default below starts a JAX backend to name the device
    if settings.networks_dir is None and "analyse" in steps:
        default = main_job.default_out_dir(device.default_device())
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
