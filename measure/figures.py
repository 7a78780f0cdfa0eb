"""The paper's figures from result rows, each saved as PNG and SVG; `draw_all` writes them all.

The style (canvas, notes, legends, colours, saving) is the analysis layer's `plotting`; `styles`
is the one colour and marker of each network in every figure. A figure without data is still
written, saying so in its axes, except the power figure where no point has power: the report
says how to model it instead.
"""

from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np
from matplotlib.figure import Figure

import models
from measure import findings, results
from measure.analysis import fitting, plotting

SIZE_LEGEND_M = (5, 35, 65, 95, 125, 155)  # the paper's blob legend, millions of parameters
POINTS2_PER_M = 10.0  # blob area in points² per million parameters
MB = 1e6


class Style(NamedTuple):
    """How every figure draws one network."""

    colour: str
    marker: str


def styles(rows: Sequence[results.Row]) -> dict[str, Style]:
    """A fixed style per network: a shade of its family's colormap, spread over the members, and the family's marker."""
    networks = _first_rows(rows)
    result = {}
    for family, marker in plotting.FAMILY_MARKERS.items():
        # The registry's networks first, in the paper's order, so each keeps its shade whoever else is drawn.
        members = [m for m in models.names() if models.spec(m).family == family]
        members += [m for m, r in networks.items() if r.family == family and m not in members]
        result.update({m: Style(plotting.member_colour(family, i, len(members)), marker)
                       for i, m in enumerate(members)})
    return {m: result.get(m, Style(plotting.OTHER_COLOUR, plotting.OTHER_MARKER)) for m in networks}


def _by_model(rows: Sequence[results.Row]) -> dict[str, list[results.Row]]:
    """Rows grouped by network in order of appearance, each group sorted by batch size."""
    groups = {}
    for row in rows:
        groups.setdefault(row.model, []).append(row)
    return {m: sorted(g, key=lambda r: r.batch_size) for m, g in groups.items()}


def _first_rows(rows: Sequence[results.Row]) -> dict[str, results.Row]:
    """Per network one row, for its names and counts."""
    return {m: group[0] for m, group in _by_model(rows).items()}


def _pick_batch(rows: Sequence[results.Row], preferred: int) -> Optional[int]:
    """The preferred batch size if measured, else the nearest measured one (None if none)."""
    present = findings.batch_sizes(rows)
    return min(present, key=lambda b: (abs(np.log2(b / preferred)), b)) if present else None


def _failures_note(fig, rows: Sequence[results.Row]) -> None:
    """A footnote naming the points that were not measured, so gaps in lines are explained."""
    failed = [f"{r.display_name} @{r.batch_size} ({r.status})" for r in rows if r.status != results.OK]
    if failed:
        text = "not measured: " + ", ".join(failed[:8]) + (f" and {len(failed) - 8} more" if len(failed) > 8 else "")
        plotting.footnote(fig, text)


def _bars(ax, rows: Sequence[results.Row], values: Sequence[float], fmt: str) -> None:
    """One coloured bar per network with its value on top."""
    palette = styles(rows)
    x = np.arange(len(rows))
    bars = ax.bar(x, values, color=[palette[r.model].colour for r in rows])
    ax.bar_label(bars, labels=[fmt.format(v) for v in values], fontsize="small")
    ax.set_xticks(x, [r.display_name for r in rows], rotation=45, ha="right")


def top1(rows: Sequence[results.Row]) -> Figure:
    """(a) The paper's top-1 accuracy per network."""
    fig, ax = plotting.axes("Top-1 accuracy per network (paper's reference accuracy)", "",
                    "top-1 accuracy [%] (paper's reference accuracy)")
    nets = [r for r in _first_rows(rows).values() if r.top1_percent_paper > 0]
    if not nets:
        plotting.no_data(ax, "no network has a reference accuracy")
        return fig
    _bars(ax, nets, [r.top1_percent_paper for r in nets], "{:.1f}")
    ax.set_ylim(0, 100)
    return fig


def top1_vs_ops(rows: Sequence[results.Row]) -> Figure:
    """(b) Top-1 vs G-Ops per image (paper convention); blob area proportional to parameters."""
    fig, ax = plotting.axes("Top-1 accuracy vs operations (blob area ∝ parameters)",
                    "operations [G-Ops per image, paper convention]", "top-1 accuracy [%] (paper's reference)")
    nets = [r for r in _first_rows(rows).values() if r.top1_percent_paper > 0 and findings.gops_per_image(r) > 0]
    if not nets:
        plotting.no_data(ax, "no network has both operations and a reference accuracy")
        return fig
    palette = styles(rows)
    for r in nets:
        ax.scatter(findings.gops_per_image(r), r.top1_percent_paper, s=findings.params_m(r) * POINTS2_PER_M,
                   color=palette[r.model].colour, marker=palette[r.model].marker, alpha=0.6, edgecolors="black",
                   linewidths=0.5)
        ax.annotate(r.display_name, (findings.gops_per_image(r), r.top1_percent_paper), fontsize="small",
                    xytext=(4, 4), textcoords="offset points")
    ax.margins(0.15)
    handles = [ax.scatter([], [], s=m * POINTS2_PER_M, color="#bbbbbb", edgecolors="black", label=f"{m}M")
               for m in SIZE_LEGEND_M]
    ax.legend(handles=handles, title="parameters", loc="lower right", labelspacing=2.0, borderpad=1.2,
              fontsize="small", frameon=True)
    return fig


def _per_batch_lines(ax, rows, value: Callable[[results.Row], Optional[float]], label_suffix=lambda r: "",
                     **style) -> int:
    """One line per network of value(row) against batch size; returns how many lines were drawn."""
    palette, drawn = styles(rows), 0
    for model, group in _by_model(rows).items():
        points = [(r.batch_size, value(r)) for r in group if value(r) is not None]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker=palette[model].marker, color=palette[model].colour,
                    label=group[0].display_name + label_suffix(group[0]), **style)
            drawn += 1
    return drawn


def _finish_batch_figure(fig, ax, rows: Sequence[results.Row]) -> None:
    """Batch sizes on a log2 axis with plain labels, the legend, and a note of the failed points."""
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter("{x:g}")
    plotting.legend_outside(ax)
    _failures_note(fig, rows)


def time_vs_batch(rows: Sequence[results.Row]) -> Figure:
    """(c) Inference time per image vs batch size, log y."""
    fig, ax = plotting.axes("Inference time per image vs batch size", "batch size", "time per image [ms]")
    ok = findings.ok_rows(rows)
    if not _per_batch_lines(ax, ok, lambda r: r.time_per_image_s * 1e3):
        plotting.no_data(ax, "no network was timed successfully")
        return fig
    plotting.log_axis(ax.yaxis)
    _finish_batch_figure(fig, ax, rows)
    return fig


def power_vs_batch(rows: Sequence[results.Row]) -> Figure:
    """(d) Power vs batch size; says so when power was not measured, labels modelled power."""
    fig, ax = plotting.axes("Power vs batch size", "batch size", "power [W]")
    powered = [r for r in findings.ok_rows(rows) if findings.has_power(r)]
    if not powered:
        plotting.no_data(ax, "power not measured on this device")
        return fig
    modelled = lambda r: " (modelled)" if r.power_source == "modelled" else ""
    _per_batch_lines(ax, powered, lambda r: r.power_w, label_suffix=modelled)
    sources = sorted({r.power_source for r in powered})
    ax.set_title("Power vs batch size — modelled (a constant wattage given by the user), not measured"
                 if sources == ["modelled"] else f"Power vs batch size (source: {', '.join(sources)})")
    idle = [r.idle_power_w for r in powered if r.idle_power_w is not None]
    if idle:
        ax.axhline(float(np.mean(idle)), color="grey", linestyle=":", label=f"idle ({np.mean(idle):.1f} W)")
    ax.set_ylim(bottom=0)
    _finish_batch_figure(fig, ax, rows)
    return fig


def memory_vs_batch(rows: Sequence[results.Row]) -> Figure:
    """(e) Memory vs batch size: XLA's measured total (solid) and the analytical estimate (dashed)."""
    fig, ax = plotting.axes("Memory vs batch size (solid: XLA total, measured; dashed: analytical)", "batch size",
                    "memory [MB]")
    measured = _per_batch_lines(ax, findings.ok_rows(rows), lambda r: r.memory_xla_total_bytes / MB
                                if r.memory_xla_total_bytes else None)
    analytical = [r for r in rows if r.memory_analytical_bytes > 0]
    palette = styles(rows)
    for model, group in _by_model(analytical).items():
        ax.plot([r.batch_size for r in group], [r.memory_analytical_bytes / MB for r in group], linestyle="--",
                marker=palette[model].marker, fillstyle="none", color=palette[model].colour,
                label=None if measured else group[0].display_name + " (analytical)")
    if not (measured or analytical):
        plotting.no_data(ax, "no memory measured or counted")
        return fig
    if not measured:
        plotting.say(ax, "XLA memory not measured: analytical estimate only", y=0.93, size="small")
    elif analytical:
        ax.plot([], [], color="black", label="XLA total (measured)")
        ax.plot([], [], color="black", linestyle="--", label="analytical")
    plotting.log_axis(ax.yaxis)
    _finish_batch_figure(fig, ax, rows)
    return fig


def memory_vs_params(rows: Sequence[results.Row]) -> Figure:
    """(f) Memory vs parameters at batch 1 (else the smallest batch), with a linear fit."""
    batch = _pick_batch(rows, 1) or 1
    points = [r for r in findings.ok_rows(rows, batch) if r.memory_xla_total_bytes]
    source = "XLA total, measured"
    if not points:
        points, source = [r for r in rows if r.batch_size == batch and r.memory_analytical_bytes > 0], "analytical"
    fig, ax = plotting.axes(f"Memory vs parameters at batch {batch} ({source})", "parameters [M]", "memory [MB]")
    if not points:
        plotting.no_data(ax, "no memory measured or counted")
        return fig
    memory = lambda r: (r.memory_xla_total_bytes if source != "analytical" else r.memory_analytical_bytes) / MB
    palette = styles(rows)
    for r in points:
        ax.scatter(findings.params_m(r), memory(r), color=palette[r.model].colour, marker=palette[r.model].marker,
                   label=r.display_name, zorder=3)
    try:
        fit = fitting.linear_fit([findings.params_m(r) for r in points], [memory(r) for r in points])
        x = np.linspace(0, max(findings.params_m(r) for r in points) * 1.05, 50)
        line, = ax.plot(x, fit.predict(x), color="black", linestyle="--",
                        label=plotting.line_label(fit, "memory [MB]", "M-params"))
        plotting.legend_outside(ax, inside=[line])
    except ValueError as error:
        plotting.say(ax, f"no linear fit: {error}", y=0.9, size="small")
        plotting.legend_outside(ax)
    return fig


def ops_vs_time(rows: Sequence[results.Row]) -> Figure:
    """(g) Operations vs inference time, with the linear fit time = a·ops + b at batch 1 and 16."""
    fig, ax = plotting.axes("Operations vs inference time per image", "time per image [ms]",
                    "operations [G-Ops per image, paper convention]")
    batches = findings.headline_batches(rows)
    if not batches:
        plotting.no_data(ax, "no network was timed successfully")
        return fig
    palette, lines = styles(rows), []
    # The marker is the family's: the first batch size is drawn filled, the second hollow.
    for batch, filled in zip(batches, ("filled", "hollow")):
        points = findings.ok_rows(rows, batch)
        for r in points:
            colour = palette[r.model].colour
            ax.scatter(r.time_per_image_s * 1e3, findings.gops_per_image(r), marker=palette[r.model].marker,
                       facecolors=colour if filled == "filled" else "none", edgecolors=colour,
                       label=r.display_name if batch == batches[0] else None, zorder=3)
        try:
            fit = fitting.linear_fit([findings.gops_per_image(r) for r in points], [r.time_per_image_s * 1e3 for r in points])
        except ValueError as error:
            lines += ax.plot([], [], " ", label=f"batch {batch} ({filled}): no fit, {error}")
            continue
        gops = np.linspace(0, max(findings.gops_per_image(r) for r in points) * 1.05, 50)
        lines += ax.plot(fit.predict(gops), gops, linestyle="--", color="black" if batch == batches[0] else "grey",
                         label=f"batch {batch} ({filled}): " + plotting.line_label(fit, "time [ms]", "G-Ops"))
    plotting.legend_outside(ax, inside=lines)
    return fig


def top1_vs_speed(rows: Sequence[results.Row]) -> Figure:
    """(h) Top-1 vs images per second at batch 16 (else nearest), with iso-energy lines when powered."""
    batch = _pick_batch(rows, 16)
    fig, ax = plotting.axes(f"Top-1 accuracy vs images per second (batch {batch})", "images per second",
                    "top-1 accuracy [%] (paper's reference)")
    points = [r for r in findings.ok_rows(rows, batch) if r.images_per_s and r.top1_percent_paper > 0]
    if not points:
        plotting.no_data(ax, "no network was timed successfully")
        return fig
    palette = styles(rows)
    for r in points:
        ax.scatter(r.images_per_s, r.top1_percent_paper, color=palette[r.model].colour, marker=palette[r.model].marker,
                   label=r.display_name, zorder=3)
    plotting.log_axis(ax.xaxis)
    _hyperbola(ax, points)
    powered, xs = [r for r in points if findings.has_power(r)], [r.images_per_s for r in points]
    if powered:
        # With power about constant (finding 1), energy per image = P / rate: a budget is a vertical line.
        watts = float(np.mean([r.power_w for r in powered]))
        kind = "modelled" if all(r.power_source == "modelled" for r in powered) else "measured"
        for budget in findings.energy_budgets(powered):
            xs.append(watts / budget)
            plotting.budget_line(ax, watts / budget, f"{budget * 1e3:.3g} mJ/img")
        ax.plot([], [], color="grey", linestyle=":", label=f"iso-energy at mean {kind} power {watts:.1f} W")
    else:
        plotting.say(ax, "power not measured: no iso-energy lines", y=0.93, size="small")
    # Explicit limits: a lone point on its own iso-energy line leaves autoscaling a zero-width log axis.
    ax.set_xlim(min(xs) / 1.5, max(xs) * 1.5)
    plotting.legend_outside(ax)
    return fig


def _hyperbola(ax, points: Sequence[results.Row]) -> None:
    """Draws the fitted accuracy = a_max - k / (t - t0) against images per second, when it findings."""
    times = np.array([r.time_per_image_s for r in points]) * 1e3
    try:
        fit = fitting.hyperbola_fit(times, [r.top1_percent_paper for r in points])
    except ValueError:
        return  # the report says why; an unfitted curve is simply not drawn
    t = np.geomspace(max(times.min() / 1.5, fit.t0 + 1e-3 * np.ptp(times)), times.max() * 1.5, 200)
    ax.plot(1e3 / t, fit.predict(t), color="black", alpha=0.5, linewidth=1,
            label=plotting.hyperbola_label(fit, "top-1", "t", " ms"))
    ax.set_ylim(min(r.top1_percent_paper for r in points) - 5, max(r.top1_percent_paper for r in points) + 5)


def accuracy_per_param(rows: Sequence[results.Row]) -> Figure:
    """(i) Accuracy density: top-1 % per million parameters."""
    fig, ax = plotting.axes("Accuracy per parameter", "", "top-1 accuracy per parameter [% / M-params]")
    nets = [r for r in _first_rows(rows).values() if r.top1_percent_paper > 0 and findings.params_m(r) > 0]
    if not nets:
        plotting.no_data(ax, "no network has both parameters and a reference accuracy")
        return fig
    _bars(ax, nets, [r.top1_percent_paper / findings.params_m(r) for r in nets], "{:.2f}")
    return fig


# File stem: (drawing function, caption), in the paper's order.
FIGURES = {
    "fig_a_top1": (top1, "Top-1 accuracy per network (the paper's reference accuracy)."),
    "fig_b_top1_vs_ops": (top1_vs_ops, "Top-1 accuracy vs operations per image; blob area ∝ parameters."),
    "fig_c_time_vs_batch": (time_vs_batch, "Inference time per image vs batch size."),
    "fig_d_power_vs_batch": (power_vs_batch, "Power vs batch size."),
    "fig_e_memory_vs_batch": (memory_vs_batch, "Memory vs batch size: XLA's total (measured) and analytical."),
    "fig_f_memory_vs_params": (memory_vs_params, "Memory vs parameters, with a linear fit."),
    "fig_g_ops_vs_time": (ops_vs_time, "Operations vs inference time, with linear fits at batch 1 and 16."),
    "fig_h_top1_vs_images_per_s": (top1_vs_speed, "Top-1 accuracy vs images per second, with iso-energy lines."),
    "fig_i_accuracy_per_param": (accuracy_per_param, "Accuracy per parameter (accuracy density)."),
}


POWER_FIGURE = "fig_d_power_vs_batch"


def powered(rows: Sequence[results.Row]) -> bool:
    """Whether any measured point has power, read by a meter or modelled."""
    return any(findings.has_power(r) for r in findings.ok_rows(rows))


def _left_out(rows: Sequence[results.Row]) -> tuple[str, ...]:
    """The figures these rows do not draw: power where no point has it."""
    return () if powered(rows) else (POWER_FIGURE,)


def file_names(rows: Sequence[results.Row]) -> list[str]:
    """The files draw_all writes for these rows, in its order."""
    left_out = _left_out(rows)
    return [f"{stem}.{ext}" for stem in FIGURES if stem not in left_out for ext in plotting.FORMATS]


def draw_all(rows: Sequence[results.Row], out_dir: str) -> list[str]:
    """Draws every figure into out_dir (PNG and SVG), power only where a point has it; returns the names written."""
    return plotting.draw_all(FIGURES, rows, out_dir, left_out=_left_out(rows))
