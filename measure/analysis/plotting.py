"""The one figure style of the project: axes on the Agg canvas, notes, legends, log axes, colours, saving.

Figures are built on matplotlib's Agg canvas directly (no pyplot): nothing global is touched and
nothing is ever shown. Every figure is saved as PNG and SVG, each written atomically.
"""

import colorsys
import contextlib
import functools
import io
import os
from collections.abc import Sequence

import numpy as np
from matplotlib import colors as mcolors
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from core import files
from measure.analysis import fitting

# A hue per family, as in the paper (ResNets pink); each family's colormap runs through shades of it.
FAMILY_COLOURS = {
    "alexnet": "#1f5fbf", "nin": "#e07b00", "enet": "#2ca02c", "googlenet": "#7b3fbf",
    "vgg": "#b8860b", "resnet": "#e7298a", "inception": "#139fb0"}
# A marker per family, so families stay apart where colours do not (print, colour blindness).
FAMILY_MARKERS = {"alexnet": "o", "nin": "v", "enet": "D", "googlenet": "P", "vgg": "s", "resnet": "^",
                  "inception": "X"}
OTHER_COLOUR, OTHER_MARKER = "#707070", "h"
# Lightness (CIE L*) at the two ends of a family's colormap: dark enough, and light enough to read on white.
FAMILY_LIGHTNESS = (78.0, 28.0)
# Hues for series that are not families (design spaces, scaling rules), in order of appearance.
SERIES_COLOURS = ("#e7298a", "#1f5fbf", "#2ca02c", "#e07b00", "#7b3fbf", "#b8860b", "#139fb0", "#a00000")


def lightness(colour) -> float:
    """CIE L* (0 black to 100 white) of a colour: the lightness the eye sees, unlike HLS's."""
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in mcolors.to_rgb(colour)]
    y = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    return 116 * y ** (1 / 3) - 16 if y > 216 / 24389 else 24389 / 27 * y


def _at_lightness(hue: float, saturation: float, target: float) -> str:
    """The colour of this HLS hue and saturation whose L* is the target (bisection: L* rises with HLS lightness)."""
    low, high = 0.0, 1.0
    for _ in range(30):
        middle = (low + high) / 2
        darker = lightness(colorsys.hls_to_rgb(hue, middle, saturation)) < target
        low, high = (middle, high) if darker else (low, middle)
    return mcolors.to_hex(colorsys.hls_to_rgb(hue, (low + high) / 2, saturation))


@functools.cache
def family_colormap(family: str) -> mcolors.Colormap:
    """A family's colours, light to dark in its hue, evenly spaced in L* (grey for a family not listed)."""
    hue, _, saturation = colorsys.rgb_to_hls(*mcolors.to_rgb(FAMILY_COLOURS.get(family, OTHER_COLOUR)))
    ramp = [_at_lightness(hue, saturation, target) for target in np.linspace(*FAMILY_LIGHTNESS, 32)]
    return mcolors.LinearSegmentedColormap.from_list(family, ramp)


def member_position(index: int, count: int) -> float:
    """Where the index-th of `count` members of a family sits on its colormap: spread end to end."""
    return 0.5 if count <= 1 else index / (count - 1)


def member_colour(family: str, index: int, count: int) -> str:
    """The index-th of `count` members of a family: its colormap at the member's position."""
    return mcolors.to_hex(family_colormap(family)(member_position(index, count)))


def series_colours(names) -> dict[str, str]:
    """A distinct hue per series name, in the order given (cycling past the palette)."""
    return {name: SERIES_COLOURS[i % len(SERIES_COLOURS)] for i, name in enumerate(dict.fromkeys(names))}


def axes(title: str, xlabel: str = "", ylabel: str = ""):
    """A new figure on the Agg canvas and its axes."""
    fig = Figure(figsize=(9, 5.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(True, alpha=0.3)
    return fig, ax


def say(ax, message: str, y: float = 0.5, size: str = "large") -> None:
    """Writes a message across the axes (why something is missing)."""
    ax.text(0.5, y, message, transform=ax.transAxes, ha="center", va="center", fontsize=size,
            color="#a00000", wrap=True, bbox={"facecolor": "white", "edgecolor": "#a00000", "alpha": 0.9})


def no_data(ax, what: str) -> None:
    """Marks an empty figure as such."""
    ax.set(xticks=[], yticks=[])
    say(ax, f"no data: {what}")


def footnote(fig, text: str) -> None:
    """A figure-level note under the axes (constrained layout makes room for it)."""
    fig.supxlabel(text, fontsize="x-small", color="#a00000", ha="left", x=0.01)


def legend_outside(ax, inside=()):
    """Series in a legend right of the axes; `inside` handles (fit lines) lower right, where rising data is not."""
    handles, labels = ax.get_legend_handles_labels()
    outside = [(h, l) for h, l in zip(handles, labels) if h not in inside]
    if inside:
        ax.add_artist(ax.legend(handles=list(inside), loc="lower right", fontsize="small"))
    if outside:
        # The last legend is the axes' own, the one constrained layout makes room for.
        ax.legend(*zip(*outside), loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")


def log_axis(axis) -> None:
    """A log10 axis (ax.xaxis or ax.yaxis) labelled with plain numbers instead of powers of ten."""
    axis.axes.set(**{f"{axis.axis_name}scale": "log"})
    axis.set_major_formatter("{x:g}")
    # Label only the 2x and 5x minor ticks: all of them collide within a decade.
    axis.set_minor_formatter(lambda x, _: f"{x:g}" if f"{x:.0e}"[0] in "25" else "")


def budget_line(ax, x: float, label: str) -> None:
    """A dotted vertical line at x with its label written up it: a budget, or an iso-energy line."""
    ax.axvline(x, color="grey", linestyle=":", zorder=1)
    ax.text(x, 0.02, f" {label}", transform=ax.get_xaxis_transform(), rotation=90, fontsize="x-small", color="grey",
            va="bottom")


def line_label(fit: fitting.LinearFit, y: str, x: str, points: str = "networks") -> str:
    """The equation and R² of a line, for a legend."""
    sign = "+" if fit.intercept >= 0 else "−"
    return f"{y} = {fit.slope:.4g} × {x} {sign} {abs(fit.intercept):.4g}, R² = {fit.r2:.3f} ({fit.n} {points})"


def hyperbola_label(fit: fitting.HyperbolaFit, y: str, x: str, unit: str = "") -> str:
    """The equation and R² of a hyperbola, for a legend."""
    return f"{y} = {fit.a_max:.3g} − {fit.k:.3g} / ({shifted(x, fit.t0, unit)}), R² = {fit.r2:.3f}"


def shifted(x: str, x0: float, unit: str = "", fmt: str = "{:.3g}") -> str:
    """"x − x0" written with the sign of x0 ("t + 1.2 ms" for x0 = −1.2)."""
    return f"{x} {'−' if x0 >= 0 else '+'} {fmt.format(abs(x0))}{unit}"


FORMATS = ("png", "svg")


def draw_all(figures: dict, data, out_dir: str, left_out: Sequence[str] = ()) -> list[str]:
    """Draws each figure of `figures` (stem: (draw(data), caption)) into out_dir; returns the names written.

    A stem in `left_out` is not drawn, and a file of it an earlier run left is removed: it would
    show what these data do not have.
    """
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for stem, (draw, _) in figures.items():
        if stem in left_out:
            for ext in FORMATS:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(out_dir, f"{stem}.{ext}"))
            continue
        written += save(draw(data), out_dir, stem)
    return written


def save(fig: Figure, out_dir: str, stem: str) -> list[str]:
    """Saves a figure as stem.png and stem.svg, each written atomically; returns the names."""
    names = []
    for ext in FORMATS:
        data = io.BytesIO()
        # No date in the SVG, so redrawing the same points gives the same file.
        fig.savefig(data, format=ext, dpi=110, metadata={"Date": None} if ext == "svg" else None)
        files.atomic_write(os.path.join(out_dir, f"{stem}.{ext}"), data.getvalue())
        names.append(f"{stem}.{ext}")
    return names
