"""The main job: `python -m measure` redoes the paper's measurements and report on this device."""

from absl import flags

import models
from core import cli, runtime, values
from measure import device, main_job, points, timing
from models import registry

FLAGS = flags.FlagValues()  # this program's own: programs can share a process (tests)
SAFE_STOPS = True  # long work: a signal is a request, honoured at the next safe point (core.cli)
_MODELS = flags.DEFINE_list("models", models.names(), "Networks or variants to measure, e.g. "
                            "resnet50,resnet18:width=0.5,resolution=128 (default: the paper's 14).", flag_values=FLAGS)
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1", "2", "4", "8", "16", "32", "64"],
                                 "Batch sizes to measure at.", flag_values=FLAGS)
_OUT = flags.DEFINE_string("out", None, "Output directory (default: results/<device>/); reruns resume in it.",
                           flag_values=FLAGS)
_RESOLUTION = flags.DEFINE_integer("resolution", None, "Input side in pixels (default: each variant's own).",
                                   lower_bound=1, upper_bound=registry.MAX_RESOLUTION, flag_values=FLAGS)
_REPEATS = flags.DEFINE_integer("repeats", 5, "Fewest timed calls per point, for latency and for throughput.",
                                lower_bound=1, flag_values=FLAGS)
_WARMUP = flags.DEFINE_integer("warmup", 2, "Fewest warm-up calls per point (more until the time settles).",
                               lower_bound=0, upper_bound=timing.TimingOptions.max_warmup, flag_values=FLAGS)
_MIN_TIME = flags.DEFINE_float("min_time", 1.0, "Fewest seconds of timed calls per point, for latency and "
                               "for throughput.", lower_bound=0, flag_values=FLAGS)
_PRECISION = flags.DEFINE_enum("precision", "float32", list(timing.PRECISIONS), "Precision of weights and inputs.",
                               flag_values=FLAGS)
_POWER_WATTS = flags.DEFINE_float("power_watts", None, "Model energy with this constant power where no "
                                  "meter reads (labelled modelled).", lower_bound=0, flag_values=FLAGS)
_QUICK = flags.DEFINE_bool("quick", False, "Small preset: batch sizes 1 and 4, at least 3 timed calls and 0.1 s "
                           "per point, 1 warm-up call or more (flags set explicitly win).", flag_values=FLAGS)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Discard results already in --out instead of resuming.",
                               flag_values=FLAGS)
_RETRY_FAILED = flags.DEFINE_bool("retry_failed", False, "Measure again the points that failed or crashed.",
                                  flag_values=FLAGS)
cli.require_finite(_MIN_TIME, _POWER_WATTS)

# A first look in about two minutes on a 2-core CPU (BUILD.md): two batch sizes, and each point's
# median of at least 3 timed calls, after one warm-up call or more until two agree.
QUICK = {"batch_sizes": ["1", "4"], "min_time": 0.1, "repeats": 3, "warmup": 1}


def main(argv):
    """Builds the configuration from the flags (the --quick preset fills flags left unset) and runs."""
    del argv
    value = {name: FLAGS[name].value for name in QUICK}
    if _QUICK.value:
        value.update({k: v for k, v in QUICK.items() if not FLAGS[k].present})
    options = timing.TimingOptions(min_time_s=value["min_time"], min_repeats=value["repeats"], warmup=value["warmup"])
    variants = tuple(models.variant_list(_MODELS.value))  # knob=value items rejoined
    batch_sizes = values.positive_integers("batch_sizes", value["batch_sizes"])
    runtime.configure()  # after the checks of the flags, before anything starts a JAX backend
    config = main_job.Config(
        models=variants, batch_sizes=batch_sizes,
        out_dir=_OUT.value or main_job.default_out_dir(device.default_device()),
        measure=points.Settings(precision=_PRECISION.value, resolution=_RESOLUTION.value, timing_options=options,
                                power_watts=_POWER_WATTS.value),
        overwrite=_OVERWRITE.value, retry_failed=_RETRY_FAILED.value)
    try:
        main_job.run(config)
    except KeyboardInterrupt as interrupt:
        raise cli.Stopped.after(interrupt, f"every point measured so far is in {config.out_dir}; "
                                "run the same command again to resume") from None


if __name__ == "__main__":
    cli.run(main, FLAGS, safe_stops=SAFE_STOPS)
