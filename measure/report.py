"""report.md and a self-contained report.html: the paper's four findings next to this device's numbers.

The report has one section per setting (precision and resolution) the directory was measured
at: fits, verdicts, tables and figures never mix rows of two settings. Each finding states the
criterion of its verdict, and every verdict can come out either way. The report is built as a
list of blocks that the analysis layer's `document` renders to Markdown and HTML.
"""

import json
import os
from typing import Sequence

import numpy as np

from measure import figures, findings, results, timing
from measure.analysis import document, fitting, verdicts
from measure.analysis.verdicts import MIN_R2

# Where this device is said to disagree with the paper.
MAX_POWER_SPREAD = 0.20
MIN_ENERGY_RHO = 0.7  # rank correlation of energy per image with operations
PAPER = "Canziani, Paszke and Culurciello 2017 (arXiv 1605.07678)"
NAMES = ("report.md", "report.html")
POWER_HINT = ("Power vs batch size is not drawn: no power meter read on this device. Rerun with --power_watts=W "
              "to model energy at a constant W watts (labelled modelled); points already measured keep their rows, "
              "so measure them again with --overwrite or into a new --out.")
# Readable labels of the environment keys measure.main_job records (others show under their own name).
_ENVIRONMENT_LABELS = {"device": "device", "jax": "JAX", "jaxlib": "jaxlib", "xla_flags": "XLA flags in force",
                       "xla_flags_chosen": "XLA flags chosen by this project", "host": "host",
                       "peak_flops_per_s": "peak (matmul probe)", "idle_power_w": "idle power [W]"}


def _n(value, fmt: str = "{:.3g}") -> str:
    """A number for a table, or an em dash when missing."""
    return "—" if value is None else fmt.format(value)


def _environment(environment: dict) -> list:
    """The environment as a key/value table."""
    table = [[_ENVIRONMENT_LABELS.get(k, k), _value(k, v)] for k, v in environment.items()]
    return [("h", 2, "Environment"), ("table", ["", "value"], table)]


def _value(key: str, value) -> str:
    """An environment value as one line of text."""
    if value == "" or value is None:
        return "(none)"
    if key == "peak_flops_per_s":
        return ", ".join(f"{precision}: {peak / 1e9:.1f} GFLOP/s" for precision, peak in value.items()) or "(none)"
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _finding1(rows: Sequence[results.Row]) -> list:
    """Power across batch sizes and networks."""
    blocks = [("h", 3, "Finding 1: power is independent of batch size and architecture"),
              ("p", "Paper (on a Jetson TX1): power consumption is independent of batch size and architecture "
                    "(its figure's watts are not available here, only the claim). Criterion: this device agrees when "
                    f"power varies by at most {MAX_POWER_SPREAD:.0%} ((max − min) / mean) over every measured point.")]
    try:
        spread = findings.power_spread(rows)
    except ValueError as error:
        return blocks + [("p", f"Here: not measured ({error}). This finding cannot be checked on this device.")]
    text = (f"Here: {spread.n} points ({spread.networks} networks, source: {', '.join(spread.sources)}): "
            f"mean {spread.mean_w:.1f} W, min–max {spread.min_w:.1f}–{spread.max_w:.1f} W, "
            f"spread (max − min) / mean = {spread.range_fraction:.1%}, coefficient of variation = {spread.cv:.1%}.")
    if spread.sources == ("modelled",):
        verdict = ("Not a measurement: power is modelled (a constant wattage given by the user), so it is "
                   "constant by construction and says nothing about this device.")
    elif spread.range_fraction > MAX_POWER_SPREAD:
        verdict = (f"This device disagrees with the paper: power varies by {spread.range_fraction:.1%} "
                   f"(more than {MAX_POWER_SPREAD:.0%}) across batch sizes and networks.")
    else:
        verdict = f"This device agrees with the paper: power varies by less than {MAX_POWER_SPREAD:.0%}."
    return blocks + [("p", text), ("verdict", verdict)]


def _finding2(rows: Sequence[results.Row]) -> list:
    """The hyperbola of accuracy against inference time."""
    blocks = [("h", 3, "Finding 2: accuracy and inference time are in a hyperbolic relationship"),
              ("p", "Paper: accuracy and inference time are in a hyperbolic relationship. Fitted here: "
                    "top-1 = a_max − k / (t − t0), t the time per image in ms measured here, top-1 the paper's "
                    "reference accuracy; (a_max, k) by least squares for each t0, t0 by a grid search. Criterion: this "
                    f"device agrees when, at batch 1 and 16, the fit over at least four networks has R² ≥ {MIN_R2} "
                    "and k > 0 (accuracy rises with time).")]
    items, worst, judged = [], None, False
    for batch in findings.headline_batches(rows):
        points = [r for r in findings.ok_rows(rows, batch) if r.top1_percent_paper > 0]
        try:
            fit = fitting.hyperbola_fit([r.time_per_image_s * 1e3 for r in points], [r.top1_percent_paper for r in points])
        except ValueError as error:
            items.append(f"batch {batch}: not fitted ({error}; {len(points)} networks).")
            continue
        note = " t0 reached the search limit: no curvature, the data are a line." if fit.t0_at_limit else ""
        note += " Only three networks: three parameters pass through any three points." if fit.n == 3 else ""
        items.append(f"batch {batch}: a_max = {fit.a_max:.4g} %, k = {fit.k:.4g} %·ms, t0 = {fit.t0:.4g} ms, "
                     f"R² = {fit.r2:.3f} ({fit.n} networks).{note}")
        judged |= verdicts.hyperbola_judged(fit)
        if verdicts.hyperbola_judged(fit) and not verdicts.hyperbola_holds(fit):
            worst = fit if worst is None or fit.r2 < worst.r2 else worst
    if not items:
        return blocks + [("p", "Here: not fitted: no network was timed successfully.")]
    blocks.append(("ul", items))
    if worst is not None:
        why = verdicts.hyperbola_failure(worst, "time")
        blocks.append(("verdict", f"This device disagrees with the paper: the hyperbola fits poorly ({why})."))
    elif judged:
        blocks.append(("verdict", f"This device agrees with the paper: the hyperbola fits with R² ≥ {MIN_R2}."))
    else:
        blocks.append(("verdict", "Too few networks to judge: fit at least four."))
    return blocks


def _finding3(rows: Sequence[results.Row]) -> list:
    """What a few energy budgets per image allow, and whether energy orders the networks as complexity does."""
    blocks = [("h", 3, "Finding 3: an energy budget is an upper bound on accuracy and model complexity"),
              ("p", "Paper: an energy constraint is an upper bound on the maximum achievable accuracy and model "
                    "complexity. Here, for a few budgets of energy per image (each network at its most frugal "
                    "batch size), the networks within the budget and the best they reach. Criterion: the budget "
                    "bounds complexity and accuracy when energy per image rises with operations (Spearman rank "
                    f"correlation ρ ≥ {MIN_ENERGY_RHO}) and the most frugal network is not the most accurate one, "
                    "so that the smallest budget leaves the best accuracy out of reach.")]
    try:
        bounds = [findings.energy_bound(rows, budget) for budget in findings.energy_budgets(rows)]
    except ValueError as error:
        return blocks + [("p", f"Here: not measured ({error}). This finding cannot be checked on this device.")]
    table = [[f"{b.budget_j * 1e3:.3g}", f"{len(b.networks)} of {b.measured_networks}",
              f"{_n(b.max_gops, '{:.2f}')} ({b.max_gops_network or '—'})",
              f"{_n(b.best_top1_percent, '{:.2f}')} ({b.best_network or '—'})"] for b in bounds]
    blocks.append(("table", ["budget [mJ/image]", "networks within", "most G-Ops", "best top-1 [%]"], table))
    # The names listed apart: with all 14 networks within a budget they would widen the table past a screen.
    blocks.append(("ul", [f"{b.budget_j * 1e3:.3g} mJ/image: {', '.join(b.networks) or 'none'}" for b in bounds]))
    if any(r.power_source == "modelled" for r in findings.ok_rows(rows) if findings.has_power(r)):
        blocks.append(("p", "Energies use modelled power (a constant wattage given by the user): energy is then "
                            "time × power, and this finding restates findings 2 and 4."))
    try:
        order = findings.energy_order(rows)
    except ValueError as error:
        return blocks + [("verdict", f"Too few networks to judge ({error}): measure at least three.")]
    blocks.append(("p", f"Here: ρ(energy per image, G-Ops) = {order.rho_gops:.2f} over {order.n} networks; the most "
                        f"frugal network, {order.frugal_network}, reaches {order.frugal_top1_percent:.2f} % top-1, the "
                        f"most accurate, {order.best_network}, {order.best_top1_percent:.2f} %."))
    if order.rho_gops < MIN_ENERGY_RHO:
        blocks.append(("verdict", f"This device disagrees with the paper: energy per image does not follow "
                                  f"operations (ρ = {order.rho_gops:.2f} < {MIN_ENERGY_RHO}), so a budget does not "
                                  "bound model complexity."))
    elif order.frugal_top1_percent >= order.best_top1_percent:
        blocks.append(("verdict", f"This device disagrees with the paper: the most frugal network, "
                                  f"{order.frugal_network}, is also the most accurate, so no budget bounds accuracy."))
    else:
        blocks.append(("verdict", f"This device agrees with the paper: energy rises with operations "
                                  f"(ρ = {order.rho_gops:.2f} ≥ {MIN_ENERGY_RHO}) and the smallest budget caps top-1 "
                                  f"at {order.frugal_top1_percent:.2f} % against {order.best_top1_percent:.2f} %."))
    return blocks


def _finding4(rows: Sequence[results.Row]) -> list:
    """The linear fit of time per image to operations."""
    blocks = [("h", 3, "Finding 4: the number of operations is a reliable estimate of the inference time"),
              ("p", "Paper: operations count predicts inference time linearly. Fitted here: time per image [ms] "
                    "= a × G-Ops (paper convention) + b, by least squares. Criterion: this device agrees when, at "
                    f"batch 1 and 16, the fit over at least three networks has R² ≥ {MIN_R2}.")]
    items, poor, judged = [], [], False
    for batch in findings.headline_batches(rows):
        points = findings.ok_rows(rows, batch)
        try:
            fit = fitting.linear_fit([findings.gops_per_image(r) for r in points], [r.time_per_image_s * 1e3 for r in points])
        except ValueError as error:
            items.append(f"batch {batch}: not fitted ({error}; {len(points)} networks).")
            continue
        note = " Only two networks: any line through two points has R² = 1." if fit.n == 2 else ""
        items.append(f"batch {batch}: time = {fit.slope:.4g} ms/G-Op × G-Ops + {fit.intercept:.4g} ms, "
                     f"R² = {fit.r2:.3f} ({fit.n} networks).{note}")
        judged |= verdicts.line_judged(fit)
        if verdicts.line_judged(fit) and not verdicts.line_holds(fit):
            poor.append(f"batch {batch}: R² = {fit.r2:.3f}")
    if not items:
        return blocks + [("p", "Here: not fitted: no network was timed successfully.")]
    blocks.append(("ul", items))
    if poor:
        blocks.append(("verdict", f"This device disagrees with the paper: operations predict time poorly "
                                  f"({'; '.join(poor)} < {MIN_R2})."))
    elif judged:
        blocks.append(("verdict", f"This device agrees with the paper: R² ≥ {MIN_R2}."))
    else:
        blocks.append(("verdict", "Too few networks to judge: fit at least three."))
    return blocks


def _batch_table(rows: Sequence[results.Row]) -> list:
    """Every network at batch 1 (else the smallest batch size) in three tables narrow enough for a laptop screen.

    The networks' counts, their times, and their memory and power each have a table; a point not
    measured has em dashes there and its status and error in the list below (results.csv has every column).
    """
    sizes = sorted({r.batch_size for r in rows})
    if not sizes:
        return [("h", 3, "Results"), ("p", "No results.")]
    batch = 1 if 1 in sizes else sizes[0]
    at_batch = [r for r in rows if r.batch_size == batch]
    mb = lambda v: _n(v / 1e6 if v else None, "{:.1f}")
    ms = lambda v: _n(v and v * 1e3, "{:.3f}")
    top1 = lambda r: r.top1_percent_paper or None  # a variant has no paper accuracy: an em dash
    counts = [[r.display_name, r.family, f"{findings.params_m(r):.2f}", f"{findings.gops_per_image(r):.2f}",
               _n(top1(r), "{:.2f}"),
               _n(top1(r) / findings.params_m(r) if top1(r) and findings.params_m(r) else None, "{:.2f}")] for r in at_batch]
    quartiles = lambda r: f"{ms(r.time_per_image_p25_s)}–{ms(r.time_per_image_p75_s)}" if r.status == results.OK \
        else ms(None)
    times = [[r.display_name, ms(r.time_per_image_s), quartiles(r), ms(r.throughput_time_per_image_s),
              _n(r.images_per_s, "{:.1f}"), ms(r.dispatch_s)] for r in at_batch]
    memory_power = [[r.display_name, mb(r.memory_xla_total_bytes), mb(r.memory_analytical_bytes),
                     _n(r.power_w, "{:.1f}") + (" (modelled)" if r.power_source == "modelled" and r.power_w else ""),
                     _n(r.energy_per_image_j and r.energy_per_image_j * 1e3, "{:.3g}")] for r in at_batch]
    here = [f"{r.display_name}: {r.status}" + (f" ({r.error})" if r.error else "") for r in at_batch
            if r.status != results.OK]
    elsewhere = [f"{r.display_name} at batch {r.batch_size}: {r.status}" for r in rows
                 if r.status != results.OK and r.batch_size != batch]
    blocks = [("h", 3, f"Results at batch {batch}"),
              ("p", "Networks: parameters, operations per image (paper convention) and the paper's top-1 accuracy."),
              ("table", ["network", "family", "params [M]", "G-Ops", "top-1 [%] (paper)", "top-1 / M-params"],
               counts),
              ("p", "Time per image. Latency: each batch dispatched and waited for, median and quartiles over "
                    "calls. Throughput: batches dispatched back to back and waited for once. Dispatch: the host's "
                    "time for a call to return."),
              ("table", ["network", "latency [ms]", "p25–p75 [ms]", "throughput [ms]", "images/s",
                         "dispatch [ms/call]"], times),
              ("p", "Memory: XLA's total (measured) and the analytical estimate; power and energy per image."),
              ("table", ["network", "memory XLA [MB]", "memory analytical [MB]", "power [W]", "energy/image [mJ]"],
               memory_power)]
    if here:
        blocks.append(("p", f"Not measured at batch {batch}: " + "; ".join(here) + "."))
    return blocks + ([("p", "Not measured at other batch sizes: " + "; ".join(elsewhere) + ".")] if elsewhere else [])


def _section(setting: results.Setting, rows: Sequence[results.Row], figure_files: Sequence[str]) -> list:
    """One setting's findings, table and figures."""
    ok = findings.ok_rows(rows)
    blocks = [("h", 2, setting.title),
              ("p", f"{len({r.model for r in rows})} networks, batch sizes "
                    f"{', '.join(str(b) for b in sorted({r.batch_size for r in rows})) or 'none'}; {len(ok)} of "
                    f"{len(rows)} points measured.")]
    blocks += _finding1(rows) + _finding2(rows) + _finding3(rows) + _finding4(rows)
    blocks += _batch_table(rows)
    return blocks + _figures(rows, figure_files)


def _figures(rows: Sequence[results.Row], figure_files: Sequence[str]) -> list:
    """The setting's figures in the paper's order; where no point has power, how to model it instead of its figure."""
    stem = lambda f: os.path.splitext(os.path.basename(f))[0]
    order = list(figures.FIGURES)
    place = lambda name: order.index(name) if name in order else len(order)
    shown = [(place(stem(f)), ("fig", f, figures.FIGURES.get(stem(f), (None, stem(f)))[1]))
             for f in figure_files if f.endswith(".png")]
    if not figures.powered(rows):
        shown.append((place(figures.POWER_FIGURE), ("p", POWER_HINT)))
    shown.sort(key=lambda placed: placed[0])
    return [("h", 3, "Figures")] + [block for _, block in shown] if shown else []


def _precisions(contents: results.Results) -> list:
    """Reduced precisions against float32 at the same points: is the lower precision faster on this device?"""
    blocks = []
    device = contents.environment.get("device", "this device")
    peaks = contents.environment.get("peak_flops_per_s") or {}
    for setting in contents.settings:
        reference = results.Setting("float32", setting.resolution)
        if setting.precision == "float32" or reference not in contents.settings:
            continue
        base = {(r.model, r.batch_size): r for r in findings.ok_rows(contents.rows_of(reference))}
        # Speed-up over float32 at each point measured in both: float32's time over this precision's.
        speedups = sorted(((base[(r.model, r.batch_size)].time_per_image_s / r.time_per_image_s, r)
                           for r in findings.ok_rows(contents.rows_of(setting)) if (r.model, r.batch_size) in base),
                          key=lambda placed: placed[0])
        if not speedups:
            continue
        median = float(np.median([speedup for speedup, _ in speedups]))
        point = lambda placed: f"{placed[0]:.2f}x ({placed[1].display_name} at batch {placed[1].batch_size})"
        text = (f"{setting.title} against {reference.title}: over {len(speedups)} points measured in both, "
                f"{setting.precision} takes {1 / median:.2f}x the latency of float32 (median; from "
                f"{point(speedups[0])} to {point(speedups[-1])} as fast). On {device}, {setting.precision} is "
                f"{'faster' if median > 1.0 else 'not faster'} than float32 in the median.")
        if peaks.get(setting.precision) and peaks.get("float32"):
            text += (f" The matmul probe reached {peaks[setting.precision] / 1e9:.1f} GFLOP/s in {setting.precision} "
                     f"against {peaks['float32'] / 1e9:.1f} GFLOP/s in float32 "
                     f"({peaks[setting.precision] / peaks['float32']:.2f}x).")
        blocks.append(("p", text))
    return [("h", 2, "Precisions compared")] + blocks if blocks else []


def _how_timed(contents: results.Results) -> list:
    """How the points were timed: the options of the last run and the calls the points took."""
    options = contents.environment.get("timing")
    measured = [r for r in contents.rows if r.status == results.OK]
    if not options or not measured:
        return []
    calls = sorted(r.latency_calls for r in measured)
    batches = ", ".join(map(str, sorted({r.batch_size for r in measured})))
    described = timing.describe(timing.TimingOptions(**options))
    return [("p", f"How it was timed: batch sizes {batches}; each point {described}. The latencies here are "
                  f"medians of {calls[0]} to {calls[-1]} timed calls per point; the tables give their quartiles.")]


def _blocks(contents: results.Results, figure_files: Sequence[str]) -> list:
    """The whole report as blocks: title, environment, then a section per setting."""
    environment = contents.environment
    device = environment.get("device", "an unknown device")
    blocks = [("h", 1, f"Canziani et al. 2017, redone on {device}"),
              ("p", f"A reproduction of {PAPER}, measured there on an NVIDIA Jetson TX1 and here on {device}. "
                    "Accuracies are the paper's reference numbers, never measured here; times, memory and power "
                    "are measured on this device. One section per setting (precision and resolution): no fit, "
                    "figure or table mixes two.")]
    blocks += _how_timed(contents)
    blocks += _environment(environment)
    for setting in contents.settings:
        in_setting = [f for f in figure_files if f.split(os.sep)[-2:-1] == [setting.slug]]
        blocks += _section(setting, contents.rows_of(setting), in_setting)
    return blocks + _precisions(contents)


def write_report(contents: results.Results, out_dir: str, figure_files: Sequence[str]) -> list[str]:
    """Writes report.md and report.html into out_dir; figure_files are relative to it. Returns the names."""
    return document.write(_blocks(contents, figure_files), out_dir, NAMES)
