"""Benchmark of a data set for design studies: `python -m explore.task_bench` trains a ladder of capacity.

On a task where network design matters, a linear classifier on the pixels and the smallest networks
stay far below the larger ones at one training budget, and accuracy keeps rising over decades of
operations before it flattens. This trains that ladder (a multinomial logistic regression on the
pixels of as many training examples as a network's budget reads, fitted to convergence, and ResNets
from the smallest the rounding allows to about a hundred times its operations), all on one data set
(default: the synthetic task) for one budget, and prints top-1 against GFLOPs with the span of
operations over which accuracy rose. It writes task_bench.csv and .json and two figures (top-1
against training steps, and against GFLOPs; PNG and SVG) to --out; each finished training is one line of
task_bench.jsonl, so a rerun resumes.
"""

import json
import math
import os
import time

import numpy as np
from absl import flags

import models
from core import cli, files, joblog, runtime
from explore import jobs as jobs_lib
from explore import report, sample
from measure import device as device_lib
from measure.analysis import plotting
from train import config as train_config_lib  # plain settings: no TensorFlow, JAX or data

LINEAR = "linear"  # the job kind of the logistic regression on pixels
LADDER = ["resnet18:depths=1-1-1-1,width=0.125,resolution=32", "resnet18:depths=1-1-1-1,width=0.125,resolution=64",
          "resnet18:depths=1-1-1-1,width=0.25,resolution=64", "resnet18:depths=1-1-1-1,width=0.5,resolution=64",
          "resnet18:depths=2-2-2-2,width=0.5,resolution=64"]
RISE_PCT = 1.0  # a step up the ladder "rises" when it gains more than this many points of top-1

FLAGS = flags.FlagValues()  # this program's own: programs can share a process (tests)
SAFE_STOPS = True  # long work: a signal is a request, honoured between trainings (core.cli)
_OUT = flags.DEFINE_string("out", os.path.join("results", "task_bench"), "Directory of the results; a rerun resumes.",
                           flag_values=FLAGS)
_DATASET = flags.DEFINE_string("dataset", "synthetic", "Data set (synthetic[:settings], digits or a tfds name).",
                               flag_values=FLAGS)
_NETWORKS = flags.DEFINE_list("networks", LADDER, "Variants trained, from small to large.", flag_values=FLAGS)
_STEPS = flags.DEFINE_integer("steps", 200, "Training budget of every network, in steps.", lower_bound=1,
                              flag_values=FLAGS)
_BATCH = flags.DEFINE_integer("batch_size", 32, "Training batch size.", lower_bound=1, flag_values=FLAGS)
_OPTIMIZER = flags.DEFINE_enum("optimizer", jobs_lib.RunSettings.optimizer, list(train_config_lib.OPTIMIZERS),
                               "Optimizer (cosine schedule), as the explorer trains.", flag_values=FLAGS)
_LR = flags.DEFINE_float("learning_rate", jobs_lib.RunSettings.learning_rate, "Peak learning rate.", lower_bound=0,
                         flag_values=FLAGS)
_WD = flags.DEFINE_float("weight_decay", jobs_lib.RunSettings.weight_decay, "Weight decay.", lower_bound=0,
                         flag_values=FLAGS)
_CURVE = flags.DEFINE_integer("curve_points", 8, "Evaluations per training (its learning curve).", lower_bound=1,
                              flag_values=FLAGS)
_LINEAR_RES = flags.DEFINE_integer("linear_resolution", 32, "Image side the linear classifier reads.", lower_bound=8,
                                   flag_values=FLAGS)
cli.require_finite(_LR, _WD)


def linear_top1(dataset: str, examples: int, resolution: int, seed: int = 0) -> dict:
    """Top-1 of a logistic regression on the pixels of `examples` training images, fitted to convergence."""
    from sklearn import linear_model, pipeline, preprocessing  # the train extra
    from train import input_pipeline
    start = time.perf_counter()
    batch = min(examples, 256)
    batches = iter(input_pipeline.train_batches(dataset, batch_size=batch, resolution=resolution, seed=seed))
    drawn = [next(batches) for _ in range(math.ceil(examples / batch))]
    images = np.concatenate([b["image"] for b in drawn])[:examples].reshape(examples, -1) / 255.0
    labels = np.concatenate([b["label"] for b in drawn])[:examples]
    classifier = pipeline.make_pipeline(preprocessing.StandardScaler(),
                                        linear_model.LogisticRegression(C=0.01, max_iter=500))
    classifier.fit(images, labels)
    correct = total = 0
    for b in input_pipeline.eval_batches(dataset, batch_size=256, resolution=resolution):
        kept = b["mask"]
        predicted = classifier.predict(b["image"][kept].reshape(int(kept.sum()), -1) / 255.0)
        correct += int((predicted == b["label"][kept]).sum())
        total += int(kept.sum())
    return {"kind": LINEAR, "status": "ok", "top1": correct / total, "examples": examples,
            "resolution": resolution, "train_s": time.perf_counter() - start}


def job_list(settings: jobs_lib.RunSettings, networks: list[str], linear_resolution: int,
             device: str) -> list[tuple[str, dict]]:
    """(key, payload) of the linear classifier and of each network's training, each key naming all it depends on."""
    examples = settings.train_steps * settings.train_batch_size
    linear = (f"{LINEAR} on {settings.dataset} examples={examples} resolution={linear_resolution}",
              {"kind": LINEAR, "examples": examples, "resolution": linear_resolution})
    return [linear, *((f"{jobs_lib.TRAIN} {v} on {settings.dataset} {settings.budget()} seed=0 on {device}",
                       {"kind": jobs_lib.TRAIN, "variant": v, "seed": 0}) for v in networks)]


def table(results: list[dict]) -> list[dict]:
    """One row per result: what was trained, its GFLOPs per image, top-1 [%] and training seconds."""
    rows = []
    for r in results:
        gflops = (sample.count_shared(models.variant(r["variant"])).ops("flops") / 1e9 if r["kind"] == jobs_lib.TRAIN
                  else None)
        rows.append({"model": r.get("variant", f"{LINEAR} on pixels ({r.get('resolution')} px)"),
                     "gflops": gflops, "top1_pct": 100 * r["top1"] if r["status"] == "ok" else None,
                     "train_s": r.get("train_s"), "status": r["status"]})
    return rows


def rising_span(rows: list[dict]) -> tuple[float, float, float]:
    """(decades, from GFLOPs, to GFLOPs): the networks' operations over which top-1 kept rising.

    The span runs from the smallest network to the last one whose top-1 beat every smaller
    network's by more than RISE_PCT points; past it accuracy had flattened (or the ladder ended).
    """
    networks = sorted((r for r in rows if r["gflops"] is not None and r["top1_pct"] is not None),
                      key=lambda r: r["gflops"])
    if not networks:
        return 0.0, math.nan, math.nan
    best, top = networks[0]["top1_pct"], networks[0]
    for r in networks[1:]:
        if r["top1_pct"] > best + RISE_PCT:
            top = r
        best = max(best, r["top1_pct"])
    return math.log10(top["gflops"] / networks[0]["gflops"]), networks[0]["gflops"], top["gflops"]


def write(out: str, rows: list[dict], results: list[dict], summary: dict) -> None:
    """task_bench.csv, task_bench.json and the two figures (PNG and SVG), each written whole."""
    files.atomic_write(os.path.join(out, "task_bench.csv"), report.csv_text(rows))
    files.atomic_write(os.path.join(out, "task_bench.json"),
                       json.dumps({"summary": summary, "rows": rows, "results": results}, indent=1) + "\n")
    linear = next((r["top1_pct"] for r in rows if r["gflops"] is None and r["top1_pct"] is not None), None)
    plotting.save(_accuracy_vs_steps(results, linear, summary), out, "accuracy_vs_steps")
    plotting.save(_accuracy_vs_gflops(rows, linear, summary), out, "accuracy_vs_gflops")


def _accuracy_vs_steps(results: list[dict], linear, summary: dict):
    """The networks' learning curves, with the linear classifier's top-1 as a line."""
    fig, ax = plotting.axes(f"{summary['dataset']}: top-1 against training steps", "training step",
                            "top-1 on the test split [%]")
    for r in results:
        if r["kind"] == jobs_lib.TRAIN and r["status"] == "ok":
            steps, top1 = zip(*r["curve"])
            ax.plot(steps, [100 * t for t in top1], marker="o", label=r["variant"])
    _linear_line(ax, linear)
    return fig


def _accuracy_vs_gflops(rows: list[dict], linear, summary: dict):
    """Each network's top-1 against its GFLOPs (log), with the linear classifier's top-1 as a line."""
    fig, ax = plotting.axes(f"{summary['dataset']}: top-1 after {summary['budget']}", "GFLOPs per image (log)",
                            "top-1 on the test split [%]")
    networks = [r for r in rows if r["gflops"] is not None and r["top1_pct"] is not None]
    ax.plot([r["gflops"] for r in networks], [r["top1_pct"] for r in networks], marker="o", label="networks")
    plotting.log_axis(ax.xaxis)
    _linear_line(ax, linear)
    return fig


def _linear_line(ax, linear) -> None:
    """The linear classifier's top-1 across the axes, and the legend."""
    if linear is not None:
        ax.axhline(linear, color="black", linestyle="--", label="linear on pixels, converged")
    ax.legend(fontsize="x-small")


def main(argv):
    """Trains the ladder (resuming), then prints and writes what it shows."""
    del argv
    runtime.configure()
    train_config_lib.check_dataset(_DATASET.value, None)  # before JAX starts
    settings = jobs_lib.RunSettings(measure=False, dataset=_DATASET.value, train_steps=_STEPS.value,
                                    train_batch_size=_BATCH.value, optimizer=_OPTIMIZER.value,
                                    learning_rate=_LR.value, weight_decay=_WD.value, seeds=(0,),
                                    curve_points=_CURVE.value)
    networks = [str(v) for v in models.variant_list(_NETWORKS.value)]  # knob=value items rejoined, checked
    device = device_lib.default_device()
    jobs = job_list(settings, networks, _LINEAR_RES.value, device_lib.device_name(device))
    runner = jobs_lib.Runner(settings, device)
    log = os.path.join(_OUT.value, "task_bench.jsonl")

    def compute(payload: dict) -> dict:
        """One training: the linear classifier's or a network's."""
        if payload["kind"] == LINEAR:
            return linear_top1(settings.dataset, payload["examples"], payload["resolution"])
        return runner(payload)

    try:
        joblog.run_jobs(jobs, log, compute, describe=lambda r: f"top-1 {100 * r['top1']:.1f} % in {r['train_s']:.0f} s"
                       if r["status"] == "ok" else r["status"])
    except KeyboardInterrupt as interrupt:
        raise cli.Stopped.after(interrupt, f"every finished training is in {log}; run the same command again to "
                                "resume") from None
    done = {row["key"]: row for row in joblog.collect(log)}
    results = [done[key] for key, _ in jobs]
    rows = table(results)
    decades, low, high = rising_span(rows)
    summary = {"dataset": settings.dataset, "budget": f"{settings.train_steps} steps of {settings.train_batch_size}",
               "device": device_lib.device_name(device), "rising_decades": decades, "rising_from_gflops": low,
               "rising_to_gflops": high}
    print(f"{settings.dataset}, {summary['budget']} images on {summary['device']}:")
    for r in rows:
        flops = f"{r['gflops']:9.4f}" if r["gflops"] is not None else " " * 9
        top1 = f"{r['top1_pct']:5.1f} %" if r["top1_pct"] is not None else r["status"]
        print(f"  {flops} GFLOPs  top-1 {top1}  {r['model']}")
    print(f"top-1 rose over {decades:.2f} decades of operations ({low:.4g} to {high:.4g} GFLOPs)")
    write(_OUT.value, rows, results, summary)
    print(f"wrote {_OUT.value}/task_bench.csv, .json, accuracy_vs_steps and accuracy_vs_gflops (.png, .svg)")


if __name__ == "__main__":
    cli.run(main, FLAGS, safe_stops=SAFE_STOPS)
