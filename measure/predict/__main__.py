"""Fits this device's latency predictor: `python -m measure.predict` times calibration kernels, then fits.

It times any --networks, then each distinct layer of the --layers_of variants alone, then a seeded
spread of single layers, at each batch size: the first targets a fit needs however long they take,
then more until the log holds --calibration_s seconds of timing (a rerun after a kill finishes the
budget, a larger one adds targets). Each target is one line appended to the calibration log (a
rerun times nothing twice). It reads the log and any --results directories of this device, fits the
predictor and writes it as JSON to --out with its cross-validated accuracy.

A space's own layers timed alone make the predictor add them up for any network built only of
them (see model.py), once ten or more such networks are measured (--networks or --results): e.g.
--layers_of with variants drawn from the space, and --results with an explorer sweep of it. Then
other networks are their layers added up too, each layer never timed predicted from those timed.
"""

import os

from absl import flags

import models
from core import cli, files, runtime, values
from core.errors import UserError
from measure import device as device_lib
from measure import points, timing
from measure import predict
from measure.predict import calibrate, kernels, model

FLAGS = flags.FlagValues()  # this program's own: programs can share a process (tests)
SAFE_STOPS = True  # long work: a signal is a request, honoured between targets (core.cli)
DEFAULT_OUT = os.path.join("results", "predictor", "predictor.json")
_OUT = flags.DEFINE_string("out", DEFAULT_OUT, "Predictor file to write (JSON); its calibration log goes beside it.",
                           flag_values=FLAGS)
_RESULTS = flags.DEFINE_list("results", [], "Results directories (python -m measure or python -m explore) or "
                             "calibration logs of this device to learn from too.", flag_values=FLAGS)
_CALIBRATION_S = flags.DEFINE_float("calibration_s", 180.0, "Seconds of calibration timing the log may hold, over "
                                    "all runs, once the targets a fit needs are timed (0: fit on what is measured).",
                                    lower_bound=0, flag_values=FLAGS)
_KERNELS = flags.DEFINE_integer("kernels", 400, "Calibration kernels in the seeded list (timed in order, as the "
                                "budget allows).", lower_bound=0, flag_values=FLAGS)
_NETWORKS = flags.DEFINE_list("networks", [], "Networks or variants to time in the calibration too, before the "
                              "kernels.", flag_values=FLAGS)
_LAYERS_OF = flags.DEFINE_list("layers_of", [], "Networks or variants whose distinct layers are each timed alone, "
                               "after --networks and before the kernels.", flag_values=FLAGS)
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1", "16"], "Batch sizes to time each target at.",
                                 flag_values=FLAGS)
_PRECISION = flags.DEFINE_enum("precision", "float32", list(timing.PRECISIONS), "Precision the predictor is for.",
                               flag_values=FLAGS)
_MIN_TIME = flags.DEFINE_float("min_time", 0.2, "Fewest seconds of timed calls per calibration point.",
                               lower_bound=0, flag_values=FLAGS)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the calibration kernels.", lower_bound=0, flag_values=FLAGS)
cli.require_finite(_CALIBRATION_S, _MIN_TIME)


def log_path(out: str) -> str:
    """The calibration log beside a predictor file."""
    return os.path.splitext(out)[0] + ".calibration.jsonl"


def main(argv):
    """Calibrates within the budget (resuming), fits, writes the predictor and says how good it is."""
    del argv
    batch_sizes = values.positive_integers("batch_sizes", _BATCH_SIZES.value)
    networks = [str(v) for v in models.variant_list(_NETWORKS.value)]
    layers_of = [str(v) for v in models.variant_list(_LAYERS_OF.value)]
    if os.path.isdir(_OUT.value):
        raise UserError(f"--out {_OUT.value} is a directory; give the predictor's file name, e.g. {DEFAULT_OUT}")
    files.prepare_out_dir(os.path.dirname(os.path.abspath(_OUT.value)))  # one line if it cannot be made
    runtime.configure()
    device = device_lib.default_device()
    name, here = device_lib.device_name(device), predict.environment_here(device)
    log = log_path(_OUT.value)
    sources = [log] if _CALIBRATION_S.value > 0 or os.path.exists(log) else []
    if _CALIBRATION_S.value > 0:
        targets = list(dict.fromkeys(networks + calibrate.layers_to_time(layers_of) +
                                     [str(k) for k in kernels.draw(_KERNELS.value, _SEED.value)]))
        settings = points.Settings(precision=_PRECISION.value,
                                   timing_options=timing.TimingOptions(min_time_s=_MIN_TIME.value, min_repeats=3))
        timer = calibrate.Timer(settings, batch_sizes, device, name, here)
        print(f"calibration: the first {min(len(targets), model.FEWEST_TARGETS)} targets, then up to "
              f"{_CALIBRATION_S.value:g} s in all, of {len(targets)} on {name}, in {log}")
        try:
            calibrate.calibrate(targets, log, timer, _CALIBRATION_S.value)
        except KeyboardInterrupt as interrupt:
            raise cli.Stopped.after(interrupt, f"every timed target is in {log}; run the same command again to "
                                    "resume") from None
        finally:
            timer.close()
    found = calibrate.read_points(sources + list(_RESULTS.value), name, _PRECISION.value, here)
    fitted = predict.fit(found, here, _PRECISION.value, sources + list(_RESULTS.value))
    predict.save(fitted, _OUT.value)
    on = fitted.fitted_on
    print(f"fitted on {on['points']} points of {on['networks_and_kernels']} kernels and networks; cross-validated: "
          f"{100 * on['cross_validated_within_10pct']:.0f} % within +-10 %, median error "
          f"{100 * on['cross_validated_median_abs_error']:.1f} %; 90 % interval x{fitted.interval[0]:.2f} to "
          f"x{fitted.interval[1]:.2f}")
    if fitted.composition is not None:
        composition = fitted.composition
        low, high = composition.interval
        print(f"networks made of the {on['layers_timed_alone']} layers timed alone are their layers added up, at "
              f"batch {', '.join(map(str, on['composed_batch_sizes']))}: 90 % interval x{low:.2f} to x{high:.2f}")
        if composition.cache_bytes is not None:
            read = "" if composition.bandwidth is None else \
                f", read from memory at {composition.bandwidth / 1e9:.3g} GB/s"
            print(f"their weights beyond a {composition.cache_bytes / 2 ** 20:g} MiB cache spill{read}")
        low, high = composition.predicted_interval
        print(f"other networks' layers are predicted from those by trees of layer times; 90 % interval, every layer "
              f"predicted: x{low:.2f} to x{high:.2f}")
    print(f"wrote {_OUT.value}")


if __name__ == "__main__":
    cli.run(main, FLAGS, safe_stops=SAFE_STOPS)
