"""The explorer's figures from an Analysis, in the analysis layer's style; `draw_all` writes them all.

Accuracy axes show top-1 measured on the sweep's data set; the paper's ImageNet accuracies never
share an axis with them. The 14 networks appear only where no accuracy is drawn: time against
operations, for context.

Each cost axis (operations, time, energy, training steps) is scaled to what the figure draws on
it (`scale_to_data`): log where the values span more than a decade, linear otherwise. Accuracy and
error stay linear: they are percentages read in points, bounded by 0 and 100.
"""

import dataclasses

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from explore import analyse as analyse_lib
from measure import findings
from measure.analysis import fitting, plotting

ACCURACY_LABEL = "top-1 accuracy [%] (trained here)"
# Wider than this ratio (largest / smallest positive value), data get a log axis: on a linear one
# everything under a tenth of the largest value crowds into the first tenth of the axis.
DECADE = 10.0


def _values(values) -> np.ndarray:
    """The values as floats, a missing one (None) as NaN."""
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def scale_to_data(axis, values) -> bool:
    """Makes `axis` log10 where its finite positive values span over a decade, else leaves it linear; returns which."""
    values = _values(values)
    positive = values[np.isfinite(values) & (values > 0)]
    log = positive.size >= 2 and positive.max() / positive.min() > DECADE
    if log:
        plotting.log_axis(axis)
    return bool(log)


@dataclasses.dataclass
class Scales:
    """A figure's axes with the scale of each decided once from all it draws, and the points they cannot show."""

    ax: Axes
    x_log: bool = False
    y_log: bool = False
    left_off: int = 0

    @classmethod
    def of(cls, ax: Axes, xs=(), ys=()) -> "Scales":
        """Scales x to xs and y to ys (see scale_to_data); an axis given no values stays linear."""
        return cls(ax, scale_to_data(ax.xaxis, xs), scale_to_data(ax.yaxis, ys))

    def shows(self, x, y=1.0) -> bool:
        """Whether a point can be drawn: finite, and positive on a log axis."""
        return all(analyse_lib.positive(v) if log else v is not None and bool(np.isfinite(v))
                   for v, log in ((x, self.x_log), (y, self.y_log)))

    def keep(self, points: list) -> list:
        """The points (x, y, ...) both axes can show; the others are counted for the footnote."""
        kept = [p for p in points if self.shows(p[0], p[1])]
        self.left_off += len(points) - len(kept)
        return kept

    def grid(self, low: float, high: float, count: int = 200) -> np.ndarray:
        """x values for a fitted curve from low to high: log-spaced where positive, so it reads as a curve on log x."""
        if not high > 0 and self.x_log:
            return np.array([])
        if low > 0:
            return np.geomspace(low, high, count)
        # A log axis cannot show the part at or below zero; a linear one draws it evenly spaced.
        return np.geomspace(high / 1e3, high, count) if self.x_log else np.linspace(low, high, count)

    def curve(self, xs, ys, **style) -> list:
        """A fitted curve, broken where y cannot be shown (not finite, or not positive on a log axis)."""
        ys = _values(np.ravel(ys))
        hidden = ~np.isfinite(ys) | ((ys <= 0) if self.y_log else False)
        return self.ax.plot(xs, np.where(hidden, np.nan, ys), **style)

    def footnote(self, fig: Figure) -> None:
        """Says how many points were left off, so a missing point is explained."""
        if self.left_off:
            plotting.footnote(fig, f"{self.left_off} point{'s' * (self.left_off > 1)} not drawn: a value missing, "
                                   "or zero or negative on a log axis")


def _by_space(scales: Scales, variants: list, x, y, analysis) -> None:
    """Scatter of the variants with a colour per space (a variant in several spaces takes its first)."""
    palette = plotting.series_colours(s for v in analysis.variants for s in v.spaces)
    for space, colour in palette.items():
        points = scales.keep([(x(v), y(v)) for v in variants if v.spaces[0] == space])
        if points:
            xs, ys = zip(*points)
            scales.ax.scatter(xs, ys, color=colour, alpha=0.75, edgecolors="black", linewidths=0.4, label=space,
                              zorder=3)


def _front(scales: Scales, analysis, which: str, x) -> list:
    """The Pareto front as a step line; returns its handle for the inside legend."""
    # Its points are among the scattered ones, which counted any left off already.
    front = [analysis.variants[i] for i in analysis.pareto.get(which, [])
             if scales.shows(x(analysis.variants[i]), analysis.variants[i].accuracy)]
    if not front:
        return []
    return scales.ax.step([x(v) for v in front], [v.accuracy for v in front], where="post", color="black",
                          linewidth=1.2, label=f"Pareto front ({len(front)} variants)", zorder=2)


def _curve(scales: Scales, fit, held, xs, ys, unit: str, name: str) -> list:
    """The fitted hyperbola over the data's range (where x > x0), cut where it falls a span below the data."""
    xs, ys = _values(xs), _values(ys)
    xs = xs[[scales.shows(x) for x in xs]]
    if fit is None or not xs.size:
        return []
    low, high = max(xs.min() / 1.3, fit.t0 + 1e-3 * np.ptp(xs)), xs.max() * 1.3
    if not low < high:
        return []
    held_text = f", held-out MAE {held.mae:.2f} pp" if held else ""
    grid = scales.grid(low, high)
    predicted = fit.predict(grid)
    # Near its asymptote x0 the curve dives towards minus infinity: drawn there it would squash the data.
    floor = max(0.0, ys.min() - max(np.ptp(ys), 1.0))
    kept = predicted >= floor
    if kept.sum() < 2:
        return []
    return scales.curve(grid[kept], predicted[kept], color="grey", linestyle="--",
                        label=plotting.hyperbola_label(fit, "top-1", name, unit) + held_text)


def accuracy_vs_ops(analysis: analyse_lib.Analysis) -> Figure:
    """Top-1 against GFLOPs per image: the variants by space, the hyperbola and the Pareto front."""
    fig, ax = plotting.axes("Accuracy vs operations", "operations [GFLOPs per image]", ACCURACY_LABEL)
    trained = [v for v in analysis.variants if v.accuracy is not None]
    if not trained:
        plotting.no_data(ax, "no variant was trained")
        return fig
    scales = Scales.of(ax, xs=[v.gflops for v in trained])
    _by_space(scales, trained, lambda v: v.gflops, lambda v: v.accuracy, analysis)
    inside = _front(scales, analysis, "ops", lambda v: v.gflops)
    inside += _curve(scales, analysis.hyperbola_ops, analysis.hyperbola_ops_held_out, [v.gflops for v in trained],
                     [v.accuracy for v in trained], "", "GFLOPs")
    scales.footnote(fig)
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
    # log_budgets needs positive, finite energies; a row without one draws no iso-energy line.
    powered = [v.rows[batch] for v in timed if analyse_lib.positive(findings.energy_per_image_j(v.rows[batch]))]
    lines = []
    if powered:
        # With power near constant (finding 1), a budget of energy per image bounds time: t = E / P. The
        # budgets span this batch size's energies, so the lines cross the points drawn.
        watts = float(np.mean([r.power_w for r in powered]))
        lines = [(budget / watts * 1e3, f"{budget * 1e3:.3g} mJ/img")
                 for budget in fitting.log_budgets([findings.energy_per_image_j(r) for r in powered])]
    scales = Scales.of(ax, xs=[v.time_ms(batch) for v in timed] + [x for x, _ in lines])
    _by_space(scales, timed, lambda v: v.time_ms(batch), lambda v: v.accuracy, analysis)
    inside = _front(scales, analysis, "time", lambda v: v.time_ms(batch))
    inside += _curve(scales, analysis.hyperbola_time, analysis.hyperbola_time_held_out,
                     [v.time_ms(batch) for v in timed], [v.accuracy for v in timed], " ms", "t")
    if powered:
        for x, label in lines:
            if scales.shows(x):
                plotting.budget_line(ax, x, label)
        kind = "modelled" if all(r.power_source == "modelled" for r in powered) else "measured"
        ax.plot([], [], color="grey", linestyle=":", label=f"iso-energy at mean {kind} power {watts:.1f} W")
    else:
        plotting.say(ax, "power not measured: no iso-energy lines", y=0.93, size="small")
    scales.footnote(fig)
    plotting.legend_outside(ax, inside=inside)
    return fig


def time_vs_ops(analysis: analyse_lib.Analysis) -> Figure:
    """Time per image against GFLOPs per image at each batch size, with the fit; the 14 networks for context."""
    fig, ax = plotting.axes("Inference time vs operations (finding 4)", "operations [GFLOPs per image]",
                            "time per image [ms]")
    if not analysis.time_vs_ops and not any(v.time_ms(analysis.batch or 0) for v in analysis.variants):
        plotting.no_data(ax, "no variant was timed")
        return fig
    batches = sorted({b for v in analysis.variants for b in v.rows})
    variants = {b: [(v.gflops, v.time_ms(b)) for v in analysis.variants if v.time_ms(b) is not None] for b in batches}
    networks = [(r.flops_per_image / 1e9, r.time_per_image_s * 1e3, r.display_name)
                for r in findings.ok_rows(analysis.network_rows, analysis.batch)]
    # One scale for variants and networks: the demo's variants can sit decades below the paper's networks.
    every = [p for points in variants.values() for p in points] + networks
    scales = Scales.of(ax, xs=[p[0] for p in every], ys=[p[1] for p in every])
    inside, greys = [], iter(("black", "grey", "#bbbbbb", "#dddddd"))
    for batch, marker in zip(batches, "os^vD"):
        points = scales.keep(variants[batch])
        if points:
            xs, ys = zip(*points)
            ax.scatter(xs, ys, marker=marker, color="#e7298a", alpha=0.7, label=f"variants, batch {batch}", zorder=3)
        fit = analysis.time_vs_ops.get(batch)
        if fit is not None and points:
            # Over the variants the line was fitted to; on a linear axis from 0, where its intercept shows.
            grid = scales.grid(min(xs) / 1.05 if scales.x_log else 0.0, max(xs) * 1.05)
            inside += scales.curve(grid, fit.predict(grid), linestyle="--", color=next(greys, "#dddddd"),
                                   label=f"batch {batch}: " + plotting.line_label(fit, "t [ms]", "GFLOPs", "variants"))
    for x, y, name in scales.keep(networks):
        ax.scatter(x, y, marker="x", color="#707070", zorder=2)
        ax.annotate(name, (x, y), fontsize="x-small", xytext=(3, 3), textcoords="offset points", color="#707070")
    if analysis.network_rows:
        ax.scatter([], [], marker="x", color="#707070", label=f"the paper's networks, batch {analysis.batch}")
    scales.footnote(fig)
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
    # The budgets may be the user's, far from the data: the scale spans them too, so their lines show.
    scales = Scales.of(ax, xs=[v.energy_j * 1e3 for v in powered] + [p.budget * 1e3 for p in analysis.budgets])
    _by_space(scales, powered, lambda v: v.energy_j * 1e3, lambda v: v.accuracy, analysis)
    inside = _front(scales, analysis, "energy", lambda v: v.energy_j * 1e3)
    for point in analysis.budgets:
        best = "" if point.best is None else f" best {analysis.variants[point.best].accuracy:.1f} %"
        plotting.budget_line(ax, point.budget * 1e3, f"≤ {point.budget * 1e3:.3g} mJ:{best}")
    if any(r.power_source == "modelled" for v in powered for r in v.rows.values()):
        plotting.say(ax, "modelled power (a constant wattage): energy is time × power", y=0.93, size="small")
    scales.footnote(fig)
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
    scales = Scales.of(ax, xs=[step for v in chosen for c in v.curves for step, _ in c])
    for v in chosen:
        for seed, curve in enumerate(c for c in v.curves if c):
            points = scales.keep(curve)
            if points:
                steps, top1 = zip(*points)
                ax.plot(steps, top1, marker="o", markersize=3, color=colours[v.variant],
                        label=f"{v.variant} ({v.gflops:.3g} GFLOPs)" if seed == 0 else None)
    scales.footnote(fig)
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
