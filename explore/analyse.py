"""The analyse step: a sweep's results joined per variant, and the fits and frontiers the explorer reports.

It reads the plan and every result line there is (the merged log and any shard files, so partial
results analyse too) and never measures. Per variant: its costs, its time and energy per image at
each batch size, and its top-1 over seeds. Then, through the analysis layer: the hyperbola of
accuracy against operations and against time (with the error on variants held out of the fit),
time against operations (finding 4), the Pareto fronts, the energy-bounded frontier, and each
space's EDF of error, plain and normalised for complexity, with the Kolmogorov-Smirnov distance
between spaces. Accuracies here are measured on the sweep's data set, never the paper's.
"""

import dataclasses
import math
import os
from typing import Optional

import numpy as np

from core import joblog
from explore import jobs
from explore import plan as plan_lib
from measure import findings, results
from measure.analysis import fitting
from measure.predict import model as predict_model

HELD_OUT_FOLDS = 5
LOG_NAME = "results.jsonl"
RECHECK_NAME = "recheck.jsonl"  # the same variants trained at a larger budget: never mixed into top1


def positive(value) -> bool:
    """Whether a value is a finite number above zero (a time, an energy or a cost that can be used)."""
    return value is not None and math.isfinite(value) and value > 0


@dataclasses.dataclass
class VariantResult:
    """Everything a sweep knows about one variant."""

    variant: str
    spaces: tuple[str, ...]
    config: dict
    costs: dict  # flops, macs, params, activations at batch 1
    rows: dict = dataclasses.field(default_factory=dict)  # batch size -> results.Row (every status)
    top1: list = dataclasses.field(default_factory=list)  # top-1 in %, one per seed trained
    curves: list = dataclasses.field(default_factory=list)  # per seed trained: [(step, top-1 in %)] of its evaluations
    recheck_top1: list = dataclasses.field(default_factory=list)  # top-1 in % at the recheck's larger budget
    failures: list = dataclasses.field(default_factory=list)  # what did not finish, in words

    @property
    def gflops(self) -> float:
        """GFLOPs per image (2 per multiply-accumulate + 1 per elementwise step, as XLA counts)."""
        return self.costs["flops"] / 1e9

    @property
    def accuracy(self) -> Optional[float]:
        """Mean top-1 [%] over the seeds trained, None if none was."""
        return float(np.mean(self.top1)) if self.top1 else None

    def time_ms(self, batch: int) -> Optional[float]:
        """Latency per image [ms] at a batch size, None if not measured there (or not a positive, finite time)."""
        row = self.rows.get(batch)
        # A hand-edited log can say "ok" beside a time no timing gives: it counts as untimed, not as a fit's NaN.
        ok = row is not None and row.status == results.OK and positive(row.time_per_image_s)
        return row.time_per_image_s * 1e3 if ok else None

    @property
    def energy_j(self) -> Optional[float]:
        """The least energy per image over the batch sizes measured, None without power."""
        energies = [e for e in map(findings.energy_per_image_j, self.rows.values()) if positive(e)]  # as time_ms
        return min(energies) if energies else None


@dataclasses.dataclass(frozen=True)
class SeedNoise:
    """How much top-1 moves between seeds of one variant, next to how much it moves between variants."""

    variants: int  # variants trained with two seeds or more
    seed_std: float  # root-mean-square over those variants of the standard deviation across their seeds [%]
    largest_gap: float  # the largest difference between two seeds of one variant [%]
    design_std: float  # standard deviation of the mean top-1 across every trained variant [%]


@dataclasses.dataclass(frozen=True)
class Recheck:
    """Whether the ranking by top-1 holds when a spread of the variants trains longer."""

    variants: tuple[str, ...]  # rechecked, least accurate at the sweep's budget first
    budget_top1: tuple[float, ...]  # their mean top-1 [%] at the sweep's budget
    recheck_top1: tuple[float, ...]  # and at the recheck's
    kendall_tau: float  # between the two rankings: 1 the same order, 0 unrelated, -1 reversed


@dataclasses.dataclass(frozen=True)
class PredictionCheck:
    """How the predictor's latencies at batch 1 compare with the times measured for the same variants."""

    variants: int
    within_10pct: float  # share predicted within +-10 % of measured
    median_abs_error_pct: float
    inside_interval: float  # share whose measured time lies inside the predicted interval


@dataclasses.dataclass
class Analysis:
    """The fits and frontiers of a sweep, each None (or empty) where the data do not allow it."""

    variants: list
    batch: Optional[int]  # the batch size time is read at: the smallest measured
    device: Optional[str]
    hyperbola_ops: Optional[fitting.HyperbolaFit] = None
    hyperbola_ops_held_out: Optional[fitting.HeldOut] = None
    hyperbola_time: Optional[fitting.HyperbolaFit] = None
    hyperbola_time_held_out: Optional[fitting.HeldOut] = None
    time_vs_ops: dict = dataclasses.field(default_factory=dict)  # batch -> LinearFit over the variants
    networks_time_vs_ops: dict = dataclasses.field(default_factory=dict)  # batch -> LinearFit, the 14 networks
    network_rows: list = dataclasses.field(default_factory=list)  # the main job's rows, for context
    pareto: dict = dataclasses.field(default_factory=dict)  # "ops"/"time"/"energy" -> [variant indices]
    budgets: list = dataclasses.field(default_factory=list)  # of fitting.BudgetPoint, indices into `variants`
    edf: dict = dataclasses.field(default_factory=dict)  # space -> (sorted errors %, fractions)
    edf_normalised: dict = dataclasses.field(default_factory=dict)  # space -> the same, complexity-weighted
    ks: dict = dataclasses.field(default_factory=dict)  # (space, space) -> (plain, normalised) KS distance
    seed_noise: Optional["SeedNoise"] = None  # None until some variant is trained with two seeds or more
    recheck: Optional["Recheck"] = None  # None until the recheck step has trained three variants or more
    prediction_check: Optional["PredictionCheck"] = None  # None unless a predictor's variants were timed at batch 1
    notes: list = dataclasses.field(default_factory=list)  # why something was not fitted


def load(out_dir: str) -> tuple[dict, list[VariantResult]]:
    """The plan's settings and every variant joined with whatever results the log and shards hold."""
    settings, planned = plan_lib.read(out_dir)
    by_variant = {p.variant: VariantResult(p.variant, p.spaces, p.config, p.costs) for p in planned}
    for name, recheck in ((LOG_NAME, False), (RECHECK_NAME, True)):
        log_path = os.path.join(out_dir, name)
        seen = set()
        for path in ([log_path] if os.path.exists(log_path) else []) + joblog.shard_files(log_path):
            for line in joblog.ResultLog(path, repair=False).contents.rows:
                if line["key"] in seen or line.get("variant") not in by_variant:
                    continue  # a job merged twice, or another plan's: the first of each key counts
                seen.add(line["key"])
                if not recheck:
                    _add(by_variant[line["variant"]], line, path)
                elif line.get("kind") == jobs.TRAIN and line.get("status") == results.OK:
                    by_variant[line["variant"]].recheck_top1.append(100.0 * float(line["top1"]))
    return settings, list(by_variant.values())


def _add(result: VariantResult, line: dict, path: str) -> None:
    """Adds one result line to its variant."""
    if line.get("kind") == jobs.MEASURE:
        for i, data in enumerate(line.get("rows", [])):
            row = results.row_from_json(data, f"{path}: {line['key']} row {i}")
            result.rows[row.batch_size] = row
            if row.status != results.OK:
                result.failures.append(f"batch {row.batch_size}: {row.status}")
    elif line.get("kind") == jobs.TRAIN:
        if line.get("status") == results.OK:
            result.top1.append(100.0 * float(line["top1"]))
            result.curves.append([(int(step), 100.0 * float(top1)) for step, top1 in line.get("curve", [])])
        else:
            result.failures.append(f"seed {line.get('seed')}: {line.get('status')}")


def analyse(variants: list[VariantResult], energy_budgets=(), network_rows=()) -> Analysis:
    """Every fit and frontier the variants allow; `network_rows` are the main job's, for finding 4's context."""
    batches = sorted({b for v in variants for b, r in v.rows.items() if r.status == results.OK})
    batch = batches[0] if batches else None
    devices = sorted({r.device for v in variants for r in v.rows.values()})
    out = Analysis(variants, batch, ", ".join(devices) or None, network_rows=list(network_rows))
    trained = [v for v in variants if v.accuracy is not None]
    out.hyperbola_ops, out.hyperbola_ops_held_out = _hyperbola(
        out, "accuracy vs operations", [v.gflops for v in trained], [v.accuracy for v in trained])
    timed = [v for v in trained if batch is not None and v.time_ms(batch) is not None]
    out.hyperbola_time, out.hyperbola_time_held_out = _hyperbola(
        out, "accuracy vs time", [v.time_ms(batch) for v in timed], [v.accuracy for v in timed])
    for b in batches:
        points = [v for v in variants if v.time_ms(b) is not None]
        _linear(out.time_vs_ops, b, [v.gflops for v in points], [v.time_ms(b) for v in points], out.notes,
                f"time vs operations of the variants at batch {b}")
        networks = findings.ok_rows(network_rows, b)
        _linear(out.networks_time_vs_ops, b, [r.flops_per_image / 1e9 for r in networks],
                [r.time_per_image_s * 1e3 for r in networks], out.notes, f"time vs operations of the networks at batch {b}")
    # Fronts and budgets are found over subsets and reported as indices into `variants`.
    position = {id(v): i for i, v in enumerate(variants)}
    at = lambda subset, j: None if j is None else position[id(subset[j])]
    out.pareto["ops"] = [at(trained, j) for j in _front([v.gflops for v in trained], trained)]
    out.pareto["time"] = [at(timed, j) for j in _front([v.time_ms(batch) for v in timed], timed)]
    powered = [v for v in trained if v.energy_j is not None]
    out.pareto["energy"] = [at(powered, j) for j in _front([v.energy_j for v in powered], powered)]
    if powered:
        budgets = list(energy_budgets) or fitting.log_budgets([v.energy_j for v in powered])
        out.budgets = [dataclasses.replace(b, within=tuple(at(powered, j) for j in b.within),
                                           most_complex=at(powered, b.most_complex), best=at(powered, b.best))
                       for b in fitting.budget_frontier([v.energy_j for v in powered], [v.accuracy for v in powered],
                                                        [v.gflops for v in powered], budgets)]
    elif trained:
        out.notes.append("energy-bounded frontier: no power was measured or modelled (pass --power_watts to "
                         "model it where no meter reads)")
    _compare_spaces(out, trained)
    out.seed_noise = seed_noise(trained)
    out.recheck = recheck(trained, out.notes)
    out.prediction_check = prediction_check(variants)
    return out


def prediction_check(variants: list[VariantResult]) -> Optional[PredictionCheck]:
    """Predicted against measured latency at batch 1, over the variants that have both (None without any)."""
    pairs = [(v.costs["predicted_latency_ms_b1"], v.time_ms(1), v.costs["predicted_latency_low_ms_b1"],
              v.costs["predicted_latency_high_ms_b1"])
             for v in variants if "predicted_latency_ms_b1" in v.costs and v.time_ms(1) is not None]
    if not pairs:
        return None
    predicted, measured = np.array([p for p, _, _, _ in pairs]), np.array([m for _, m, _, _ in pairs])
    inside = np.mean([low <= m <= high for _, m, low, high in pairs])
    return PredictionCheck(len(pairs), predict_model.share_within(predicted, measured),
                           float(100 * np.median(np.abs(predicted / measured - 1))), float(inside))


def recheck(trained: list[VariantResult], notes: list) -> Optional[Recheck]:
    """Kendall's tau between the ranking at the sweep's budget and at the recheck's; None under 3 variants."""
    both = sorted((v for v in trained if v.recheck_top1), key=lambda v: (v.accuracy, v.variant))
    if len(both) < 3:
        return None
    later = [float(np.mean(v.recheck_top1)) for v in both]
    try:
        tau = fitting.kendall_tau([v.accuracy for v in both], later)
    except ValueError as error:
        notes.append(f"recheck: no rank correlation ({error})")
        return None
    return Recheck(tuple(v.variant for v in both), tuple(v.accuracy for v in both), tuple(later), tau)


def seed_noise(trained: list[VariantResult]) -> Optional[SeedNoise]:
    """The spread between seeds (variants with two or more) against the spread between variants; None without."""
    seeded = [v for v in trained if len(v.top1) >= 2]
    if not seeded:
        return None
    return SeedNoise(len(seeded), float(np.sqrt(np.mean([np.var(v.top1, ddof=1) for v in seeded]))),
                     float(max(np.ptp(v.top1) for v in seeded)),
                     float(np.std([v.accuracy for v in trained], ddof=1)) if len(trained) > 1 else 0.0)


def _compare_spaces(out: Analysis, trained: list[VariantResult]) -> None:
    """Each space's error EDF, plain and weighted to one distribution of operations, and the KS distances."""
    members = {space: [v for v in trained if space in v.spaces]
               for space in dict.fromkeys(s for v in out.variants for s in v.spaces)}
    members = {space: vs for space, vs in members.items() if vs}
    errors = {space: [100.0 - v.accuracy for v in vs] for space, vs in members.items()}
    for space in members:
        out.edf[space] = fitting.edf(errors[space])
    if len(members) < 2:
        return
    entries = [(space, v) for space, vs in members.items() for v in vs]
    try:
        weights = fitting.complexity_weights([v.gflops for _, v in entries], [space for space, _ in entries])
    except ValueError as error:
        out.notes.append(f"complexity-normalised EDFs: not computed ({error})")
        weights = None
    per_space = {space: weights[[i for i, (s, _) in enumerate(entries) if s == space]] for space in members} \
        if weights is not None else {}
    for space, w in per_space.items():
        out.edf_normalised[space] = fitting.edf(errors[space], w)
    names = list(members)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            normalised = (fitting.ks_distance(errors[a], errors[b], per_space[a], per_space[b])
                          if per_space else None)
            out.ks[(a, b)] = (fitting.ks_distance(errors[a], errors[b]), normalised)


def _front(cost: list, subset: list) -> list[int]:
    """The Pareto front of accuracy against a cost, as indices into `subset`."""
    return fitting.pareto_front(cost, [v.accuracy for v in subset]) if subset else []


def _hyperbola(out: Analysis, what: str, x: list, y: list):
    """The hyperbola through the points and its held-out error, or (None, None) with a note saying why."""
    try:
        fit = fitting.hyperbola_fit(x, y)
    except ValueError as error:
        out.notes.append(f"{what}: not fitted ({error}; {len(x)} variants)")
        return None, None
    try:
        held = fitting.held_out(fitting.hyperbola_fit, x, y, folds=HELD_OUT_FOLDS)
    except ValueError as error:
        out.notes.append(f"{what}: no held-out error ({error})")
        held = None
    return fit, held


def _linear(into: dict, batch: int, x: list, y: list, notes: list, what: str) -> None:
    """The line through the points into `into[batch]`, or a note saying why not."""
    if not x:
        return
    try:
        into[batch] = fitting.linear_fit(x, y)
    except ValueError as error:
        notes.append(f"{what}: not fitted ({error})")
