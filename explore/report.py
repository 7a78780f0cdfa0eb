"""The explorer's report.md / report.html, its variants.csv and analysis.json, from an Analysis.

The report says what the sweep covered and, for findings 2, 3 and 4 of the paper, what the variants
show, each with the criterion of its verdict (the main job's: R² ≥ 0.8 and accuracy rising with
cost). Accuracies are measured on the sweep's data set, so they are never compared with the
paper's ImageNet numbers.
"""

import csv
import dataclasses
import io
import json
import os

from core import files
from explore import analyse as analyse_lib
from explore import figures, table
from measure.analysis import document, plotting, verdicts

NAMES = ("report.md", "report.html")
CSV_NAME, JSON_NAME = "variants.csv", "analysis.json"


def _hyperbola_blocks(name: str, fit, held, x: str, unit: str) -> list:
    """One hyperbola's parameters, fit, held-out error and verdict."""
    if fit is None:
        return [("p", f"{name}: not fitted (see the notes below).")]
    held_text = (f"; on variants held out of the fit ({held.folds}-fold), mean absolute error {held.mae:.2f} "
                 f"points, RMS {held.rmse:.2f}" if held else "; no held-out error (too few variants)")
    text = (f"{name}: top-1 = {fit.a_max:.4g} − {fit.k:.4g} / ({plotting.shifted(x, fit.t0, unit, '{:.4g}')}), "
            f"R² = {fit.r2:.3f} over "
            f"{fit.n} variants{held_text}." + (" x0 reached the search limit: the data show no curvature."
                                                if fit.t0_at_limit else ""))
    if not verdicts.hyperbola_judged(fit):
        verdict = "Too few variants to judge: three parameters pass through any three points."
    elif verdicts.hyperbola_holds(fit):
        verdict = f"The hyperbola is visible here: accuracy rises with {x} and R² ≥ {verdicts.MIN_R2}."
    else:
        verdict = f"The hyperbola is not visible here ({verdicts.hyperbola_failure(fit, x)})."
    return [("p", text), ("verdict", verdict)]


def _finding4(analysis: analyse_lib.Analysis) -> list:
    """Time against operations over the variants, next to the 14 networks' fit."""
    blocks = [("h", 2, "Finding 4 on variants: operations predict inference time"),
              ("p", f"Fitted: time per image [ms] = a × GFLOPs per image + b over every timed variant, at each batch "
                    f"size; criterion: R² ≥ {verdicts.MIN_R2}. The paper's networks, where the main job measured "
                    "them on this device, are fitted the same way for comparison.")]
    items = []
    for batch, fit in analysis.time_vs_ops.items():
        networks = analysis.networks_time_vs_ops.get(batch)
        context = (f"; the paper's networks: a = {networks.slope:.4g}, b = {networks.intercept:.4g}, R² = "
                   f"{networks.r2:.3f} ({networks.n} networks)" if networks else "")
        items.append(f"batch {batch}: a = {fit.slope:.4g} ms/GFLOP, b = {fit.intercept:.4g} ms, R² = {fit.r2:.3f} "
                     f"({fit.n} variants){context}.")
    if not items:
        return blocks + [("p", "Not fitted: no variant was timed (or too few).")]
    worst = min(analysis.time_vs_ops.values(), key=lambda f: f.r2)
    verdict = ("Operations predict time here" if verdicts.line_holds(worst) else
               f"Operations predict time poorly here (R² = {worst.r2:.3f} < {verdicts.MIN_R2})")
    return blocks + [("ul", items), ("verdict", verdict + ".")]


def _prediction(analysis: analyse_lib.Analysis) -> list:
    """The predictor's latencies at batch 1 checked against the measured ones, where the sweep had both."""
    check = analysis.prediction_check
    if check is None:
        return []
    return [("h", 2, "The predictor, checked"),
            ("p", f"Over the {check.variants} variants timed at batch 1, the predicted latency (measure.predict; "
                  f"column predicted_latency_ms_b1) was within ±10 % of the measured for "
                  f"{100 * check.within_10pct:.0f} %, with a median error of {check.median_abs_error_pct:.1f} %; "
                  f"{100 * check.inside_interval:.0f} % of the measured times fell inside the predicted interval.")]


def _finding3(analysis: analyse_lib.Analysis) -> list:
    """The energy-bounded frontier: per budget, the most operations allowed and the best accuracy reached."""
    blocks = [("h", 2, "Finding 3 on variants: the energy-bounded frontier"),
              ("p", "For each budget of energy per image (each variant at its most frugal batch size): the variants "
                    "within it, the most operations any of them performs and the best top-1 any reaches.")]
    if not analysis.budgets:
        return blocks + [("p", "Not evaluated: no variant has both an accuracy and an energy per image.")]
    v = analysis.variants
    table = [[f"{b.budget * 1e3:.3g}", str(len(b.within)),
              "—" if b.most_complex is None else f"{v[b.most_complex].gflops:.3g} ({v[b.most_complex].variant})",
              "—" if b.best is None else f"{v[b.best].accuracy:.2f} ({v[b.best].variant})"] for b in analysis.budgets]
    blocks.append(("table", ["budget [mJ/image]", "variants within", "most GFLOPs", "best top-1 [%]"], table))
    front = [v[i] for i in analysis.pareto["energy"]]
    blocks.append(("p", "On the Pareto front of accuracy against energy: " +
                   ", ".join(f"{p.variant} ({p.energy_j * 1e3:.3g} mJ, {p.accuracy:.2f} %)" for p in front) + "."))
    return blocks


def _edf(analysis: analyse_lib.Analysis) -> list:
    """Each space's error distribution in numbers."""
    rows = [[space, str(len(errors)), f"{errors[0]:.2f}", f"{errors[len(errors) // 2]:.2f}", f"{errors[-1]:.2f}"]
            for space, (errors, _) in analysis.edf.items()]
    blocks = [("h", 2, "Design spaces compared (EDF of error)"),
              ("p", "As pycls compares design spaces: the distribution of top-1 error over each space's variants. "
                    "A space whose EDF lies to the left holds more good networks for the same sampling effort. "
                    "A space of cheaper variants looks worse for that alone, so each EDF is also given "
                    "normalised for complexity: its variants weighted so that every space has one distribution "
                    "of operations (Radosavovic et al. 2019)."),
              ("table", ["space", "variants", "best error [%]", "median error [%]", "worst error [%]"], rows)
              if rows else ("p", "No variant was trained.")]
    noise = analysis.seed_noise
    blocks.append(("p", "Seeds against design: no variant was trained with two seeds or more (add seeds with "
                        "--seeds=0,1; the sweep's other results are kept), so a difference between variants "
                        "cannot be told from seed noise here." if noise is None else
                        f"Seeds against design: over the {noise.variants} variants trained with two seeds or more, "
                        f"top-1 moves by {noise.seed_std:.2f} points between seeds (standard deviation; at most "
                        f"{noise.largest_gap:.2f}), against {noise.design_std:.2f} points between variants: "
                        + ("differences between variants well above the seeds' are design effects."
                           if noise.design_std > 2 * noise.seed_std else
                           "the variants differ little more than seeds do; read small differences as noise.")))
    check = analysis.recheck
    if check is not None:
        blocks.append(("p", f"Does the ranking hold at a larger budget? {len(check.variants)} variants spread across "
                            f"the ranking were trained again at three times the budget: Kendall's tau between the two "
                            f"rankings is {check.kendall_tau:.2f} (1: the same order, 0: unrelated)."))
        blocks.append(("table", ["variant", "top-1 at the budget [%]", "top-1 at 3x the budget [%]"],
                       [[v, f"{a:.2f}", f"{b:.2f}"] for v, a, b in zip(check.variants, check.budget_top1,
                                                                       check.recheck_top1)]))
    if analysis.ks:
        blocks.append(("table", ["spaces", "KS distance", "KS distance, normalised"],
                       [[f"{a} vs {b}", f"{plain:.3f}", "—" if normalised is None else f"{normalised:.3f}"]
                        for (a, b), (plain, normalised) in analysis.ks.items()]))
        blocks.append(("p", "The Kolmogorov-Smirnov distance is the largest gap between two EDFs (0: the same "
                            "distribution, 1: no overlap); with a few variants per space, a gap of about "
                            "1.36 × sqrt(1/n + 1/m) or less is within sampling noise at the 5 % level."))
    return blocks


def csv_text(records: list[dict]) -> str:
    """Records as CSV, the union of their keys as columns."""
    text = io.StringIO()
    writer = csv.DictWriter(text, list(dict.fromkeys(k for r in records for k in r)))
    writer.writeheader()
    writer.writerows(records)
    return text.getvalue()


def _json(analysis: analyse_lib.Analysis, settings: dict, run_settings: dict) -> str:
    """The fits and frontiers as strict JSON."""
    fit = lambda f: dataclasses.asdict(f) if f is not None else None
    data = {"plan": settings, "device": analysis.device, "time_batch": analysis.batch,
            "hyperbola_ops": fit(analysis.hyperbola_ops), "hyperbola_ops_held_out": fit(analysis.hyperbola_ops_held_out),
            "hyperbola_time": fit(analysis.hyperbola_time),
            "hyperbola_time_held_out": fit(analysis.hyperbola_time_held_out),
            "time_vs_ops": {str(b): fit(f) for b, f in analysis.time_vs_ops.items()},
            "networks_time_vs_ops": {str(b): fit(f) for b, f in analysis.networks_time_vs_ops.items()},
            "pareto": {k: [analysis.variants[i].variant for i in idx] for k, idx in analysis.pareto.items()},
            "energy_budgets": [{"budget_j": b.budget, "within": [analysis.variants[i].variant for i in b.within],
                                "most_complex": None if b.most_complex is None else analysis.variants[b.most_complex].variant,
                                "best": None if b.best is None else analysis.variants[b.best].variant}
                               for b in analysis.budgets],
            "recheck": None if analysis.recheck is None else dataclasses.asdict(analysis.recheck),
            "seed_noise": None if analysis.seed_noise is None else dataclasses.asdict(analysis.seed_noise),
            "prediction_check": None if analysis.prediction_check is None
            else dataclasses.asdict(analysis.prediction_check),
            "ks_distance": [{"spaces": [a, b], "plain": plain, "normalised": normalised}
                            for (a, b), (plain, normalised) in analysis.ks.items()],
            "notes": analysis.notes, "variants": table.records(analysis, run_settings)}
    return json.dumps(data, indent=1, allow_nan=False) + "\n"


def write(analysis: analyse_lib.Analysis, settings: dict, run_settings: dict, out_dir: str) -> list[str]:
    """Figures, report.md/html, variants.csv and analysis.json into out_dir; returns the names written."""
    figure_dir = os.path.join(out_dir, "figures")
    written = [os.path.join("figures", f) for f in figures.draw_all(analysis, figure_dir)]
    trained = [v for v in analysis.variants if v.accuracy is not None]
    timed = [v for v in analysis.variants if any(r.status == "ok" for r in v.rows.values())]
    blocks = [("h", 1, f"Design-space exploration on {analysis.device or 'this device'}"),
              ("p", f"{len(analysis.variants)} variants planned from {', '.join(settings['spaces'])} "
                    f"({settings['sampler']} sampler, seed {settings['seed']}); {len(timed)} timed, {len(trained)} "
                    f"trained. Accuracies are top-1 on the evaluation split of {run_settings.get('dataset', 'the data set')} "
                    f"after {run_settings.get('budget', 'the budget')}, mean over seeds {run_settings.get('seeds')}; "
                    "the paper's ImageNet accuracies are never mixed with them."),
              ("h", 2, "Finding 2 on variants: accuracy against operations and time"),
              ("p", f"Fitted: top-1 = a_max − k / (x − x0), as the main job fits the paper's networks; criterion: "
                    f"k > 0 and R² ≥ {verdicts.MIN_R2} over at least four variants.")]
    blocks += _hyperbola_blocks("Against operations", analysis.hyperbola_ops, analysis.hyperbola_ops_held_out,
                                "GFLOPs", "")
    blocks += _hyperbola_blocks(f"Against time per image at batch {analysis.batch}", analysis.hyperbola_time,
                                analysis.hyperbola_time_held_out, "t", " ms")
    blocks += _finding4(analysis) + _prediction(analysis) + _finding3(analysis) + _edf(analysis)
    if analysis.notes:
        blocks += [("h", 2, "Notes"), ("ul", list(analysis.notes))]
    blocks.append(("h", 2, "Figures"))
    blocks += [("fig", f, figures.FIGURES[os.path.splitext(os.path.basename(f))[0]][1]) for f in written
               if f.endswith(".png")]
    files.atomic_write(os.path.join(out_dir, CSV_NAME), csv_text(table.records(analysis, run_settings)))
    files.atomic_write(os.path.join(out_dir, JSON_NAME), _json(analysis, settings, run_settings))
    return written + [CSV_NAME, JSON_NAME] + document.write(blocks, out_dir, NAMES)
