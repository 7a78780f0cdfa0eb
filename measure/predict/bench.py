"""Benchmark of the latency predictor: `python -m measure.predict.bench` prints how often it lands within +-10 %.

It times (resumably, one line per target in --out/bench.jsonl) random ResNet variants of both
block types, the paper's 14 networks, and VGG and ENet variants, plus the predictor's calibration
kernels for --calibration_s. It fits the predictor on the kernels and a share of the ResNet
variants, then prints, at each batch size, the share of held-out points predicted within +-10 %
of measured (nn-Meter's metric): held-out ResNet variants (a seen space) and the families it never
saw; beside it, a FLOPs-only linear baseline fitted on the same points. Last, the rate at which
the predictor ranks variants, counting included (from a cold cost memo, then warm). Every test
network is timed twice, apart, and measured is the lower of the two: on a shared machine another
job's burst of memory traffic can slow one timing without the pace noticing (see
measure.predict.calibrate). And two ceilings: how often the second timing of the held-out ResNets
lands within +-10 % of the first (no predictor does better on this machine), and how well some of
them are predicted from their own layers, each timed alone (no predictor that adds up per-layer
times, as nn-Meter does, does better). Times are set against the machine's pace. It writes
bench.json and predicted_vs_measured (PNG and SVG).
"""

import dataclasses
import json
import os
import time
from typing import Optional

import numpy as np
from absl import flags

import models
from core import cli, files, runtime, values
from core.errors import UserError
from explore import sample
from measure import device as device_lib
from measure import points, predict, results, timing
from measure.analysis import plotting
from measure.cost import memo as cost_memo
from measure.predict import calibrate, features, kernels
from measure.predict import model as model_lib

RESNETS = ("resnet18", "resnet50")  # basic and bottleneck blocks: the explorer's two ResNet spaces
UNSEEN = ("vgg16:width=0.25,resolution=64", "vgg16:width=0.5,resolution=96", "vgg19:width=0.25,resolution=128",
          "vgg19:width=0.5,resolution=64", "enet:resolution=128", "enet:resolution=256",
          "enet:resolution=192", "googlenet:resolution=128", "bn_nin:resolution=128", "alexnet:resolution=127")

FLAGS = flags.FlagValues()  # this program's own: programs can share a process (tests)
SAFE_STOPS = True  # long work: a signal is a request, honoured between targets (core.cli)
_OUT = flags.DEFINE_string("out", os.path.join("results", "predictor_bench"), "Directory of the timings and "
                           "results; a rerun resumes.", flag_values=FLAGS)
_FIT = flags.DEFINE_integer("fit_variants", 40, "Random ResNet variants the predictor is fitted on.", lower_bound=0,
                            flag_values=FLAGS)
_TEST = flags.DEFINE_integer("test_variants", 30, "Random ResNet variants held out to test it.", lower_bound=1,
                             flag_values=FLAGS)
_PAPER = flags.DEFINE_bool("paper_networks", True, "Test on the paper's 14 networks at their own resolution too.",
                           flag_values=FLAGS)
_CALIBRATION_S = flags.DEFINE_float("calibration_s", 180.0, "Seconds of calibration kernels to time, over all runs.",
                                    lower_bound=0, flag_values=FLAGS)
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1", "16"], "Batch sizes to time and predict at.", flag_values=FLAGS)
_SPACE_LAYERS = flags.DEFINE_bool("space_layers", True, "Time every distinct layer of the ResNet space alone (as "
                                  "python -m measure.predict --layers_of=...), so its variants are their layers "
                                  "added up.", flag_values=FLAGS)
_COMPOSITION = flags.DEFINE_integer("composition_variants", 12, "Held-out ResNet variants whose layers are each "
                                    "timed alone, to test how well layer times add up to a network's.", lower_bound=0,
                                    flag_values=FLAGS)
_RANK = flags.DEFINE_integer("rank_variants", 3000, "Random ResNet variants ranked for the rate.", lower_bound=1,
                             flag_values=FLAGS)
_MIN_TIME = flags.DEFINE_float("min_time", 0.2, "Fewest seconds of timed calls per point.", lower_bound=0,
                               flag_values=FLAGS)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the variants and kernels.", lower_bound=0, flag_values=FLAGS)
cli.require_finite(_CALIBRATION_S, _MIN_TIME)


# The ResNet space's knobs: blocks a stage (4 stages), widths and sides, for both block types.
DEPTHS, WIDTHS, SIDES = (1, 2, 3), tuple(i / 8 for i in range(1, 9)), tuple(range(32, 129, 16))
DISTINCT_RESNETS = len(RESNETS) * len(DEPTHS) ** 4 * len(WIDTHS) * len(SIDES)


def random_resnets(count: int, seed: int) -> list[str]:
    """`count` distinct ResNet variants: 1-3 blocks a stage, widths 0.125-1, 32-128 px, both block types.

    UserError when the space has fewer than `count` (the draws would never end).
    """
    if count > DISTINCT_RESNETS:
        raise UserError(f"the bench's ResNet space has {DISTINCT_RESNETS:,} distinct variants, fewer than the "
                        f"{count:,} asked for; ask for at most that many")
    rng, drawn = np.random.default_rng(seed), {}
    while len(drawn) < count:
        variant = models.from_knobs(str(rng.choice(RESNETS)), SIDES[rng.integers(len(SIDES))],
                                    depths=tuple(DEPTHS[i] for i in rng.integers(len(DEPTHS), size=4)),
                                    width=WIDTHS[rng.integers(len(WIDTHS))])
        drawn.setdefault(str(variant), None)
    return list(drawn)


def space_layer_variants() -> list[str]:
    """Variants that hold every distinct layer of the space between them: each block type, width and side at
    two blocks a stage (a stage's first block and the ones after it differ; a third repeats the second)."""
    return [str(models.from_knobs(block, side, depths=(2, 2, 2, 2), width=width))
            for block in RESNETS for width in WIDTHS for side in SIDES]


def share_within(points: list, predicted: np.ndarray, batch_size: int) -> tuple[float, int]:
    """(share of the points at this batch size predicted within +-10 %, how many points)."""
    chosen = [i for i, p in enumerate(points) if p.batch_size == batch_size]
    return model_lib.share_within([predicted[i] for i in chosen], [points[i].latency_s for i in chosen]), len(chosen)


def flops_baseline(fit_points: list) -> np.ndarray:
    """Coefficients of latency = a * FLOPs + b fitted (log error, non-negative) on the same points."""
    vectors = np.array([[_flops(p), 1.0] for p in fit_points])
    return model_lib.solve(vectors, np.array([p.latency_s for p in fit_points]))


def least_disturbed(first: list, again: list) -> list:
    """The points of `first`, each at the lower of its latency and that of the same network and batch size in
    `again` (a second timing), where there is one."""
    lowest = {}
    for p in again:
        key = (p.name, p.batch_size)
        lowest[key] = min(p.latency_s, lowest.get(key, p.latency_s))
    return [dataclasses.replace(p, latency_s=min(p.latency_s, lowest.get((p.name, p.batch_size), p.latency_s)))
            for p in first]


def repeatability(first_log: str, repeat_log: str, read: list, batch_sizes: tuple, names: set) -> dict:
    """Per batch size: the share of these re-timed targets within +-10 % of their first timing, raw and paced (a
    log may hold earlier runs' held-out targets too)."""
    def raw(log):
        return {(row.model, row.batch_size): row.time_per_image_p25_s for row, _, _ in calibrate.timed_rows(log)
                if row.status == results.OK and row.time_per_image_p25_s}

    def paced(log):
        return {(p.name, p.batch_size): p.latency_s for p in read if p.source == log}

    agreed = {}
    for batch_size in batch_sizes:
        shares = {}
        for label, timed in (("raw", raw), ("paced", paced)):
            first, again = timed(first_log), timed(repeat_log)
            keys = [key for key in again if key in first and key[0] in names and key[1] == batch_size]
            shares[label] = model_lib.share_within([again[k] for k in keys], [first[k] for k in keys])
        agreed[batch_size] = shares
    return agreed


def composition(layers: dict, read: list, network_log: str, layer_log: str, batch_sizes: tuple,
                cache_bytes: Optional[float], alone_bytes: Optional[float]) -> dict:
    """Per batch size: the share of networks within +-10 % of a*(sum of their layers timed alone) + b*layers + c
    + d*(their weight bytes beyond `cache_bytes`, the predictor's own) + e*(their kernels' bytes XLA copies) + f*(their
    elementwise operations): the predictor's model.TERMS, without a floor.

    a to f are fitted on these networks themselves (b may be negative: each layer timed alone paid a
    call of its own), so the share is a ceiling for any predictor that adds up per-layer times.
    """
    timed = {(p.name, p.batch_size): p.latency_s for p in read if p.source in (network_log, layer_log)}
    counted = {p.name: p.layers for p in read if p.source == network_log}
    memory = model_lib.Memory(cache_bytes, alone_bytes)
    agreed = {}
    for batch_size in batch_sizes:
        known = [name for name, ks in layers.items()
                 if name in counted and all((k, batch_size) in timed for k in [name, *ks])]
        if len(known) < 5:
            continue
        design = np.array([model_lib.terms_row([timed[k, batch_size] for k in layers[n]], counted[n], batch_size,
                                               {}, memory) for n in known])
        measured = np.array([timed[n, batch_size] for n in known])
        coefficients = np.linalg.lstsq(design / measured[:, None], np.ones(len(known)), rcond=None)[0]
        agreed[batch_size] = model_lib.share_within(design @ coefficients, measured)
    return agreed


def ranking_rate(names: list[str], predictor: model_lib.Predictor) -> tuple[float, float]:
    """Variants per minute the explorer samples with the predictor (counts, predictions and realised
    configuration, explore.sample.sample_of): from a cold cost memo, then again warm."""
    rates = []
    cost_memo.SHARED.clear()
    drawn = [models.variant(name) for name in names]
    for _ in range(2):
        start = time.perf_counter()
        for variant in drawn:
            sample.sample_of(variant, predictor=predictor)
        rates.append(len(names) / (time.perf_counter() - start) * 60)
    return rates[0], rates[1]


def _figure(groups: dict, batch_size: int):
    """Predicted against measured latency per image at one batch size (log-log), one colour per group."""
    fig, ax = plotting.axes(f"predicted against measured latency, batch {batch_size}",
                            "measured latency per image [ms]", "predicted latency per image [ms]")
    low, high = np.inf, 0.0
    for label, (pts, predicted) in groups.items():
        chosen = [i for i, p in enumerate(pts) if p.batch_size == batch_size]
        measured = [pts[i].latency_s / batch_size * 1e3 for i in chosen]
        guessed = [predicted[i] / batch_size * 1e3 for i in chosen]
        if measured:
            ax.scatter(measured, guessed, s=14, label=label)
            low, high = min(low, *measured, *guessed), max(high, *measured, *guessed)
    if high > 0:
        line = np.array([low, high])
        ax.plot(line, line, color="black", linewidth=0.8, label="exact")
        ax.fill_between(line, line * (1 - model_lib.WITHIN), line * (1 + model_lib.WITHIN), color="grey", alpha=0.2,
                        label="+-10 %")
    plotting.log_axis(ax.xaxis)
    plotting.log_axis(ax.yaxis)
    ax.legend(fontsize="x-small")
    return fig


def main(argv):
    """Times what is missing, fits, and prints the predictor's accuracy against the FLOPs baseline and its rate."""
    del argv
    batch_sizes = values.positive_integers("batch_sizes", _BATCH_SIZES.value)
    runtime.configure()
    device = device_lib.default_device()
    name, here = device_lib.device_name(device), predict.environment_here(device)
    resnets = random_resnets(_FIT.value + _TEST.value, _SEED.value)
    ranked = random_resnets(_RANK.value, _SEED.value + 1)  # drawn first: too many asked is refused before timing
    out = _OUT.value
    files.prepare_out_dir(out)
    fit_names, test_names = set(resnets[:_FIT.value]), set(resnets[_FIT.value:])
    paper = models.names() if _PAPER.value else []
    settings = points.Settings(timing_options=timing.TimingOptions(min_time_s=_MIN_TIME.value, min_repeats=3))
    timer = calibrate.Timer(settings, batch_sizes, device, name, here)
    kernel_log, network_log = os.path.join(out, "kernels.jsonl"), os.path.join(out, "bench.jsonl")
    layer_log = os.path.join(out, "layers.jsonl")
    repeat_log, composition_log = os.path.join(out, "repeat.jsonl"), os.path.join(out, "composition.jsonl")
    try:
        start = time.perf_counter()
        calibrate.calibrate([str(k) for k in kernels.draw(1000, _SEED.value)], kernel_log, timer, _CALIBRATION_S.value)
        calibration_s = time.perf_counter() - start
        start = time.perf_counter()
        if _SPACE_LAYERS.value:
            calibrate.calibrate(calibrate.layers_to_time(space_layer_variants()), layer_log, timer, float("inf"))
        layers_s = time.perf_counter() - start
        calibrate.calibrate(resnets + list(UNSEEN) + paper, network_log, timer, float("inf"))
        # Every test network once more, last: how far two timings of one network differ on this machine, and
        # the lower of the two as its time, the one the machine's other jobs disturbed least.
        calibrate.calibrate(resnets[_FIT.value:] + list(UNSEEN) + paper, repeat_log, timer, float("inf"))
        composed = [models.variant(name) for name in resnets[_FIT.value:][:_COMPOSITION.value]]
        layers = {str(v): [str(k) for k in kernels.of_network(v.module(), v.input_shape(1))] for v in composed}
        calibrate.calibrate(list(dict.fromkeys(k for ks in layers.values() for k in ks)), composition_log, timer,
                            float("inf"))
    except KeyboardInterrupt as interrupt:
        raise cli.Stopped.after(interrupt, f"every timed target is in {out}; run the same command again to "
                                "resume") from None
    finally:
        timer.close()
    read = calibrate.read_points([kernel_log, layer_log, network_log, repeat_log, composition_log], name,
                                 settings.precision, here)
    kernel_points = [p for p in read if p.source in (kernel_log, layer_log)]
    network_points = [p for p in read if p.source == network_log]
    fit_points = kernel_points + [p for p in network_points if p.name in fit_names]
    tested = least_disturbed([p for p in network_points if p.name not in fit_names],
                             [p for p in read if p.source == repeat_log])
    predictor = predict.fit(fit_points, here, settings.precision, [kernel_log, layer_log, network_log])
    groups = {"held-out ResNet variants (seen space)": [p for p in tested if p.name in test_names],
              "VGG, ENet, GoogLeNet, NIN, AlexNet variants (unseen)": [p for p in tested if p.name in UNSEEN],
              "the paper's 14 networks": [p for p in tested if p.name in paper]}
    baseline = flops_baseline(fit_points)
    summary = {"device": name, "calibration_kernels": len({p.name for p in kernel_points if p.source == kernel_log}),
               "calibration_s_this_run": calibration_s,
               "calibration_s_total": calibrate.logged_seconds(kernel_log),
               "layers_timed_alone": len({p.name for p in kernel_points if p.source == layer_log}),
               "layers_s_this_run": layers_s,
               "layers_s_total": calibrate.logged_seconds(layer_log), "fit_points": len(fit_points), "rows": []}
    print(f"{name}: fitted on {len(fit_points)} points ({summary['calibration_kernels']} kernels, "
          f"{summary['layers_timed_alone']} layers of the ResNet space, {len(fit_names)} "
          f"ResNet variants); calibration took {summary['calibration_s_total']:.0f} s of timing, the layers "
          f"{summary['layers_s_total']:.0f} s")
    print(f"{'test set':<55}{'batch':>6}{'points':>7}{'composed':>9}{'predictor':>11}{'FLOPs':>8}")
    predicted = {}
    for label, pts in groups.items():
        predicted[label] = (pts, np.array([predictor.predict(p.layers, p.batch_size).latency_s * p.batch_size
                                           for p in pts]))
        flops_predicted = np.array([_flops(p) * baseline[0] + baseline[1] for p in pts])
        for batch_size in batch_sizes:
            ours, count = share_within(pts, predicted[label][1], batch_size)
            theirs, _ = share_within(pts, flops_predicted, batch_size)
            composed = sum(1 for p in pts if p.batch_size == batch_size and predictor.composes(p.keys))
            summary["rows"].append({"test_set": label, "batch_size": batch_size, "points": count,
                                    "composed": composed, "predictor_within_10pct": ours,
                                    "flops_within_10pct": theirs, "worst": _worst(pts, predicted[label][1], batch_size)})
            print(f"{label:<55}{batch_size:>6}{count:>7}{composed:>9}{100 * ours:>10.0f}%{100 * theirs:>7.0f}%")
    for label, pts in groups.items():
        for row in summary["rows"]:
            if row["test_set"] == label and row["worst"]:
                print(f"  worst at batch {row['batch_size']} ({label[:24]}...): " +
                      ", ".join(f"{w['name']} {w['error_pct']:+.0f} %" for w in row["worst"]))
    cold, warm = ranking_rate(ranked, predictor)
    summary.update(rank_variants=len(ranked), rank_per_min_cold=cold, rank_per_min_warm=warm,
                   predictor=predictor.as_json())
    summary["repeatability"] = repeatability(network_log, repeat_log, read, batch_sizes, test_names)
    for batch_size, agreed in summary["repeatability"].items():
        print(f"re-timed held-out ResNets at batch {batch_size} within +-10 % of their first timing: "
              f"{100 * agreed['raw']:.0f} % as timed, {100 * agreed['paced']:.0f} % set against the pace")
    fitted = predictor.composition
    cache_bytes, alone_bytes = (predictor.cache_bytes, None) if fitted is None else (fitted.cache_bytes,
                                                                                     fitted.alone_cache_bytes)
    summary["composition"] = composition(layers, read, network_log, composition_log, batch_sizes, cache_bytes,
                                         alone_bytes)
    for batch_size, agreed in summary["composition"].items():
        print(f"{len(layers)} held-out ResNets at batch {batch_size} from their layers each timed alone (plus a "
              "per-layer, a per-call, a spilled and a copied weight byte's and an elementwise operation's time fitted "
              f"on them): {100 * agreed:.0f} % within +-10 %")
    print(f"the explorer ranks {len(ranked)} random ResNet variants (counted exactly, predicted, configuration "
          f"realised): {cold:,.0f} per minute "
          f"from a cold cost memo, {warm:,.0f} per minute warm")
    files.atomic_write(os.path.join(out, "bench.json"), json.dumps(summary, indent=1) + "\n")
    for batch_size in batch_sizes:
        plotting.save(_figure(predicted, batch_size), out, f"predicted_vs_measured_b{batch_size}")
    print(f"wrote {out}/bench.json and predicted_vs_measured_b*.png/.svg")


def _flops(point: model_lib.Point) -> float:
    """A point's FLOPs per call: MACs at every knot (twice) and the elementwise work, from its features."""
    vector = dict(zip(features.NAMES, point.features))
    macs = sum(vector[n] for n in features.NAMES if n.startswith("macs_k")) + vector["grouped_macs"]
    return 2 * macs + vector["elementwise"]


def _worst(pts: list, predicted: np.ndarray, batch_size: int, count: int = 3) -> list[dict]:
    """The points of a batch size predicted worst, with their signed error in percent."""
    chosen = sorted((i for i, p in enumerate(pts) if p.batch_size == batch_size),
                    key=lambda i: -abs(predicted[i] / pts[i].latency_s - 1))
    return [{"name": pts[i].name, "error_pct": 100 * (predicted[i] / pts[i].latency_s - 1)} for i in chosen[:count]]


if __name__ == "__main__":
    cli.run(main, FLAGS, safe_stops=SAFE_STOPS)
