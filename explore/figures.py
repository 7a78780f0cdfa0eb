"""The explorer's figures from an Analysis, in the analysis layer's style; `draw_all` writes them all.

Accuracy axes show top-1 measured on the sweep's data set; the paper's ImageNet accuracies never
share an axis with them. The 14 networks appear only where no accuracy is drawn: time against
operations, for context.
"""


import numpy as np
from matplotlib.figure import Figure

from explore import analyse as analyse_lib
from measure import findings
from measure.analysis import fitting, plotting

ACCURACY_LABEL = "top-1 accuracy [%] (trained here)"


def _by_space(ax, variants: list, x, y, analysis) -> None:
    """Scatter of the variants with a colour per space (a variant in several spaces takes its first)."""
    palette = plotting.series_colours(s for v in analysis.variants for s in v.spaces)
    for space, colour in palette.items():
        points = [(x(v), y(v)) for v in variants if v.spaces[0] == space and x(v) is not None and y(v) is not None]
        if points:
            xs, ys = zip(*points)
            ax.scatter(xs, ys, color=colour, alpha=0.75, edgecolors="black", linewidths=0.4, label=space, zorder=3)


def _front(ax, analysis, which: str, x) -> list:
    """The Pareto front as a step line; returns its handle for the inside legend."""
    front = [analysis.variants[i] for i in analysis.pareto.get(which, [])]
    if not front:
        return []
    return ax.step([x(v) for v in front], [v.accuracy for v in front], where="post", color="black",
                   linewidth=1.2, label=f"Pareto front ({len(front)} variants)", zorder=2)


def _curve(ax, fit, held, xs, unit: str, name: str) -> list:
    """The fitted hyperbola over the data's range; returns its handle."""
    if fit is None:
        return []
    xs = np.asarray(xs, dtype=float)
    grid = np.geomspace(max(xs.min() / 1.3, fit.t0 + 1e-3 * np.ptp(xs)), xs.max() * 1.3, 200)
    held_text = f", held-out MAE {held.mae:.2f} pp" if held else ""
    return ax.plot(grid, fit.predict(grid), color="grey", linestyle="--",
                   label=plotting.hyperbola_label(fit, "top-1", name, unit) + held_text)


def accuracy_vs_ops(analysis: analyse_lib.Analysis) -> Figure:
    """Top-1 against GFLOPs per image: the variants by space, the hyperbola and the Pareto front."""
    fig, ax = plotting.axes("Accuracy vs operations", "operations [GFLOPs per image]", ACCURACY_LABEL)
    trained = [v for v in analysis.variants if v.accuracy is not None]
    if not trained:
        plotting.no_data(ax, "no variant was trained")
        return fig
    _by_space(ax, trained, lambda v: v.gflops, lambda v: v.accuracy, analysis)
    inside = _front(ax, analysis, "ops", lambda v: v.gflops)
    inside += _curve(ax, analysis.hyperbola_ops, analysis.hyperbola_ops_held_out, [v.gflops for v in trained],
                     "", "GFLOPs")
    plotting.log_axis(ax.xaxis)
    plotting.legend_outside(ax, inside=inside)
    return fig


def accuracy_vs_time(analysis: analyse_lib.Analysis) -> Figure:
    """Top-1 against time per image, with the hyperbola, the Pareto front and iso-energy lines."""
    batch = analysis.batch
    fig, ax = plotting.axes(f"Accuracy vs inference time (batch {batch})", "time per image [ms]", ACCURACY_LABEL)
    timed = [v for v in analysis.variants if v.accuracy is not None and batch and v.time_ms(batch) is not None]
    if not timed:
        plotting.no_data(ax, "no variant was both trained and timed")
        return fig
    _by_space(ax, timed, lambda v: v.time_ms(batch), lambda v: v.accuracy, analysis)
    inside = _front(ax, analysis, "time", lambda v: v.time_ms(batch))
    inside += _curve(ax, analysis.hyperbola_time, analysis.hyperbola_time_held_out,
                     [v.time_ms(batch) for v in timed], " ms", "t")
    powered = [v.rows[batch] for v in timed if findings.energy_per_image_j(v.rows[batch]) is not None]
    if powered:
        # With power near constant (finding 1), a budget of energy per image bounds time: t = E / P. The
        # budgets span this batch size's energies, so the lines cross the points drawn.
        watts = float(np.mean([r.power_w for r in powered]))
        for budget in fitting.log_budgets([findings.energy_per_image_j(r) for r in powered]):
            plotting.budget_line(ax, budget / watts * 1e3, f"{budget * 1e3:.3g} mJ/img")
        kind = "modelled" if all(r.power_source == "modelled" for r in powered) else "measured"
        ax.plot([], [], color="grey", linestyle=":", label=f"iso-energy at mean {kind} power {watts:.1f} W")
    else:
        plotting.say(ax, "power not measured: no iso-energy lines", y=0.93, size="small")
    plotting.log_axis(ax.xaxis)
    plotting.legend_outside(ax, inside=inside)
    return fig


def time_vs_ops(analysis: analyse_lib.Analysis) -> Figure:
    """Time per image against GFLOPs per image at each batch size, with the fit; the 14 networks for context."""
    fig, ax = plotting.axes("Inference time vs operations (finding 4)", "operations [GFLOPs per image]",
                            "time per image [ms]")
    if not analysis.time_vs_ops and not any(v.time_ms(analysis.batch or 0) for v in analysis.variants):
        plotting.no_data(ax, "no variant was timed")
        return fig
    inside, greys = [], iter(("black", "grey", "#bbbbbb", "#dddddd"))
    batches = sorted({b for v in analysis.variants for b in v.rows})
    for batch, marker in zip(batches, "os^vD"):
        points = [(v.gflops, v.time_ms(batch)) for v in analysis.variants if v.time_ms(batch) is not None]
        if points:
            xs, ys = zip(*points)
            ax.scatter(xs, ys, marker=marker, color="#e7298a", alpha=0.7, label=f"variants, batch {batch}", zorder=3)
        fit = analysis.time_vs_ops.get(batch)
        if fit is not None:
            grid = np.linspace(0, max(xs) * 1.05, 50)
            inside += ax.plot(grid, fit.predict(grid), linestyle="--", color=next(greys),
                              label=f"batch {batch}: " + plotting.line_label(fit, "t [ms]", "GFLOPs", "variants"))
    for row in findings.ok_rows(analysis.network_rows, analysis.batch):
        ax.scatter(row.flops_per_image / 1e9, row.time_per_image_s * 1e3, marker="x", color="#707070", zorder=2)
        ax.annotate(row.display_name, (row.flops_per_image / 1e9, row.time_per_image_s * 1e3), fontsize="x-small",
                    xytext=(3, 3), textcoords="offset points", color="#707070")
    if analysis.network_rows:
        ax.scatter([], [], marker="x", color="#707070", label=f"the paper's networks, batch {analysis.batch}")
    plotting.legend_outside(ax, inside=inside)
    return fig


def error_edf(analysis: analyse_lib.Analysis) -> Figure:
    """The empirical distribution of top-1 error per space, as pycls compares design spaces."""
    fig, ax = plotting.axes("Error EDF per design space", "top-1 error [%] (trained here)",
                            "fraction of variants with error ≤ x")
    if not analysis.edf:
        plotting.no_data(ax, "no variant was trained")
        return fig
    palette = plotting.series_colours(s for v in analysis.variants for s in v.spaces)
    for space, (errors, fractions) in analysis.edf.items():
        ax.step(np.concatenate([[errors[0]], errors]), np.concatenate([[0.0], fractions]), where="post",
                color=palette[space], label=f"{space} ({len(errors)} variants)")
        if space in analysis.edf_normalised:
            errors, fractions = analysis.edf_normalised[space]
            ax.step(np.concatenate([[errors[0]], errors]), np.concatenate([[0.0], fractions]), where="post",
                    color=palette[space], linestyle="--", label=f"{space}, normalised for operations")
    ax.set_ylim(0, 1.02)
    plotting.legend_outside(ax)
    return fig


def energy_frontier(analysis: analyse_lib.Analysis) -> Figure:
    """Top-1 against energy per image, the Pareto front and what each budget allows."""
    fig, ax = plotting.axes("Accuracy vs energy per image: the energy-bounded frontier", "energy per image [mJ]",
                            ACCURACY_LABEL)
    powered = [v for v in analysis.variants if v.accuracy is not None and v.energy_j is not None]
    if not powered:
        plotting.no_data(ax, "power not measured: pass --power_watts to model it where no meter reads")
        return fig
    _by_space(ax, powered, lambda v: v.energy_j * 1e3, lambda v: v.accuracy, analysis)
    inside = _front(ax, analysis, "energy", lambda v: v.energy_j * 1e3)
    for point in analysis.budgets:
        best = "" if point.best is None else f" best {analysis.variants[point.best].accuracy:.1f} %"
        plotting.budget_line(ax, point.budget * 1e3, f"≤ {point.budget * 1e3:.3g} mJ:{best}")
    if any(r.power_source == "modelled" for v in powered for r in v.rows.values()):
        plotting.say(ax, "modelled power (a constant wattage): energy is time × power", y=0.93, size="small")
    plotting.log_axis(ax.xaxis)
    plotting.legend_outside(ax, inside=inside)
    return fig


CURVES_SHOWN = 6


def learning_curves(analysis: analyse_lib.Analysis) -> Figure:
    """Top-1 against training steps for a few variants spread from the least to the most accurate."""
    fig, ax = plotting.axes("Learning curves", "training step", ACCURACY_LABEL)
    curved = sorted((v for v in analysis.variants if any(v.curves)), key=lambda v: v.accuracy)
    if not curved:
        plotting.no_data(ax, "no training job recorded its evaluations")
        return fig
    chosen = [curved[i] for i in sorted({round(j) for j in np.linspace(0, len(curved) - 1, CURVES_SHOWN)})]
    colours = plotting.series_colours(v.variant for v in chosen)
    for v in chosen:
        for seed, curve in enumerate(c for c in v.curves if c):
            steps, top1 = zip(*curve)
            ax.plot(steps, top1, marker="o", markersize=3, color=colours[v.variant],
                    label=f"{v.variant} ({v.gflops:.3g} GFLOPs)" if seed == 0 else None)
    plotting.legend_outside(ax)
    return fig


# File stem: (drawing function, caption).
FIGURES = {
    "accuracy_vs_ops": (accuracy_vs_ops, "Top-1 vs operations per image: the hyperbola fit and the Pareto front."),
    "accuracy_vs_time": (accuracy_vs_time, "Top-1 vs time per image, with iso-energy lines where power is known."),
    "time_vs_ops": (time_vs_ops, "Time per image vs operations, with the linear fit; the paper's networks in grey."),
    "error_edf": (error_edf, "Empirical distribution of top-1 error per design space, plain (solid) and "
                             "weighted so that the spaces share one distribution of operations (dashed)."),
    "energy_frontier": (energy_frontier, "Top-1 vs energy per image: the energy-bounded frontier."),
    "learning_curves": (learning_curves, "Top-1 on the evaluation split against training steps, for variants "
                                         "spread from the least to the most accurate (one line per seed)."),
}


def draw_all(analysis: analyse_lib.Analysis, out_dir: str) -> list[str]:
    """Draws every figure into out_dir (PNG and SVG); returns the file names written."""
    return plotting.draw_all(FIGURES, analysis, out_dir)
