# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lesson 4: Width, depth and resolution — how a network's cost grows with each knob
#
# **What you will learn**
#
# - what the three knobs of a convolutional network do: **width** multiplies the channels of every layer,
#   **depth** the blocks of every stage, **resolution** the side of the input image;
# - how each knob grows each cost, counted with the project's cost module: operations grow with the
#   *square* of width and of resolution but only *linearly* with depth; parameters ignore resolution;
#   activations (memory traffic) grow with the square of resolution;
# - whether the time measured on your device follows the counted operations whichever knob made them,
#   and how well each knob uses the device;
# - EfficientNet's **compound scaling** (Tan and Le 2019): one exponent phi turns all three knobs at once, so
#   that each step of phi about doubles the operations.
#
# The paper (Canziani et al. 2017) compared 14 fixed networks. Later work made their sizes a design choice:
# this lesson scales one of them, ResNet-34, along each knob and counts what it costs.

# %%
import os

import numpy as np
from matplotlib import ticker

import lessons
import models
from core import runtime
from explore import sample, space
from lessons.checks import scaling as check
from measure import device, points, timing
from measure.analysis import fitting, plotting

runtime.configure()  # the project's XLA settings for this backend, before JAX starts it
SMOKE = os.environ.get("LESSONS_SMOKE") == "1"
BASE = "resnet34"  # stage depths 3-4-6-3: every depth multiplier gives a distinct network
KNOBS = ("width", "depth", "resolution")
# Counting allocates nothing and takes seconds, so both settings count every series; timing compiles and runs
# each variant, so smoke mode times fewer of them, for less time each.
TIMED_STEPS = (0.5, 1.0) if SMOKE else (0.5, 1.0, 1.5)
TIMED_PHIS = () if SMOKE else (-1, 1)
TIMING = timing.TimingOptions(min_time_s=0.02 if SMOKE else 0.2, min_repeats=3, warmup=1)
GIGA, MEGA = 1e9, 1e6
COLOURS = plotting.series_colours(space.RULES)

# %% [markdown]
# ## 1. Three knobs, three series
#
# `explore.space.scaling(base, rule)` gives a network's scaling series: the base network with one knob
# multiplied by 0.5, 0.75, 1, 1.25, 1.5 and 2. Each step is a *variant*, written as one string
# (`resnet34:width=0.5`). The knobs are rounded the way real networks are: channels to multiples of 8, stage
# depths up to whole blocks, the input side to a multiple of 8 pixels. `explore.sample.series` adds what each
# variant costs per image at batch 1, counted by `measure.cost` from the traced program without running it.

# %%
series = {knob: sample.series(BASE, knob) for knob in KNOBS}
print(f"{'knob':<11}{'x':>6}  {'variant':<34}{'GFLOPs':>8}{'params [M]':>12}{'activations [M]':>17}")
for knob, steps in series.items():
    for step, s in steps.items():
        print(f"{knob:<11}{step:>6g}  {s.variant:<34}{s.costs['flops'] / GIGA:>8.2f}{s.costs['params'] / MEGA:>12.2f}"
              f"{s.costs['activations'] / MEGA:>17.2f}")

# %% [markdown]
# ### Exercise 1: predict before you look
#
# Before the figures: when ResNet-34's width doubles (every layer gets twice the channels), by how many times
# do its FLOPs per image grow? Think about one convolution: its multiply-accumulates are (output positions) x
# (kernel taps) x (input channels) x (output channels). Replace `None` with your ratio and run the cell.

# %%
answer = None  # FLOPs of resnet34:width=2.0 divided by FLOPs of resnet34
check.width_flops_ratio(answer, base=BASE, factor=2.0)


# %% [markdown]
# ## 2. Each knob grows each cost at its own rate
#
# One function draws any of the three costs against the knob's multiplier, one line per knob. Both axes are
# logarithmic, so a cost growing as multiplier<sup>p</sup> is a straight line of slope p; the grey guides
# have slopes 1 and 2 and pass through the base network.

# %%
def cost_figure(metric: str, scale: float, unit: str, title: str):
    """One cost of every series against its knob's multiplier (log-log), with guides of slope 1 and 2."""
    fig, ax = plotting.axes(f"{models.spec(BASE).display_name}: {title}", "knob multiplier (× the base network's)",
                            unit)
    for knob, steps in series.items():
        ax.plot(list(steps), [s.costs[metric] / scale for s in steps.values()], marker="o", color=COLOURS[knob],
                label=knob)
    base = series["width"][1.0].costs[metric] / scale
    multipliers = np.array(space.MULTIPLIERS)
    for power, style in ((1, ":"), (2, "--")):
        ax.plot(multipliers, base * multipliers**power, color="grey", linestyle=style,
                label=f"∝ multiplier{'²' if power == 2 else ''} (guide)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(multipliers, [f"{m:g}" for m in multipliers])
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    plotting.log_axis(ax.yaxis)
    plotting.legend_outside(ax)
    return fig


lessons.show(cost_figure("flops", GIGA, "operations per image [GFLOPs]", "operations against each knob"))

# %% [markdown]
# **Operations grow with the square of width and of resolution, and about linearly with depth.** Doubling the
# width doubles both the input and the output channels of nearly every convolution: four times the work.
# Doubling the input side gives four times the output positions in every layer. Doubling the depth doubles
# the blocks of each stage but not the stem or the classifier, so the line of depth is flatter than the slope-1
# guide; below 1 it also lies above the guide, because stage depths round *up* to whole blocks (half of
# ResNet-34's 3-4-6-3 is 2-2-3-2, not 1.5-2-3-1.5).

# %%
lessons.show(cost_figure("params", MEGA, "parameters [millions]", "parameters against each knob"))

# %% [markdown]
# **Parameters grow with the square of width, about linearly with depth, and not at all with resolution.** A
# convolution's weights do not depend on the size of the image they slide over, and ResNets average their last
# feature map to one value per channel before the classifier, so a larger input brings no new weight. More
# resolution costs operations and memory traffic, never model size.

# %%
lessons.show(cost_figure("activations", MEGA, "activations per image [millions of values]",
                         "activations (values written by the layers) against each knob"))

# %% [markdown]
# **Activations grow with the square of resolution but only linearly with width.** Every layer writes one
# value per output position and channel: resolution multiplies the positions (squared), width the channels
# (once). Depth grows them least: the stem's large early feature maps do not scale with it. Activations are
# the values that travel to and from memory between layers, so at equal operations a
# resolution-scaled network moves more data than a width-scaled one (lesson 2 showed why memory traffic
# matters for time).
#
# The slope of each line, fitted on the log-log points, is the exponent of each knob:

# %%
print(f"{'cost':<13}" + "".join(f"{knob:>12}" for knob in KNOBS))
for metric in ("flops", "params", "activations"):
    slopes = [np.polyfit(np.log(list(steps)), np.log([s.costs[metric] for s in steps.values()]), 1)[0]
              for steps in series.values()]
    print(f"{metric:<13}" + "".join(f"{round(slope, 2) + 0.0:>12.2f}" for slope in slopes))  # no "-0.00"

# %% [markdown]
# ### Exercise 2: two knobs at once
#
# Take ResNet-34 at twice its width and half its input side (112 px instead of 224). By how many times do its
# FLOPs per image change, compared with ResNet-34? (A ratio below 1 means fewer.)

# %%
answer = None  # FLOPs of resnet34 at width 2 and 112 px, divided by FLOPs of resnet34
check.width_and_resolution_flops_ratio(answer, base=BASE, width_factor=2.0, resolution_factor=0.5)

# %% [markdown]
# ## 3. Counted, then measured: does time follow the operations?
#
# Counting is free; time is what a user waits for. The project's measurement code (`measure.points`, the one
# the main job and the explorer use) times a few variants of each series at batch 1 on this device: each
# point is the median of several calls after warm-up, with the variant's weights on the device and its
# compilation timed apart. It also reports each point's *fraction of peak*: the FLOP/s it achieved over what a
# large matrix multiplication reaches on this device.

# %%
timed_variants = {}  # variant string -> the knob (or "compound") it was scaled by; the base once, as "base"
for knob in KNOBS:
    for step, variant in space.scaling(BASE, knob, steps=TIMED_STEPS).items():
        timed_variants.setdefault(str(variant), "base" if step == 1.0 else knob)
if TIMED_PHIS:
    for variant in space.scaling(BASE, "compound", steps=TIMED_PHIS).values():
        timed_variants.setdefault(str(variant), "compound")

jax_device = device.default_device()
measured = {}
with points.Session(points.Settings(timing_options=TIMING), jax_device, device.device_name(jax_device)) as session:
    print(session.describe())
    for name in timed_variants:
        (measured[name],) = session.points(models.variant(name), (1,))
print(f"{'variant':<52}{'GFLOPs':>8}{'ms/image':>10}{'of peak':>9}")
for name, row in measured.items():
    print(f"{name:<52}{row.flops_per_image / GIGA:>8.2f}{row.time_per_image_s * 1e3:>10.2f}"
          f"{row.fraction_of_peak:>9.0%}")


# %%
def measured_figure(value, label: str, title: str, proportional: bool):
    """A measured value of each timed variant against its counted GFLOPs (log x), one colour per knob."""
    fig, ax = plotting.axes(title, "operations per image [GFLOPs] (counted)", label)
    palette = {**COLOURS, "base": "black"}
    for knob in dict.fromkeys(timed_variants.values()):
        rows = [measured[name] for name, k in timed_variants.items() if k == knob]
        ax.scatter([r.flops_per_image / GIGA for r in rows], [value(r) for r in rows], color=palette[knob], s=50,
                   zorder=3, label=BASE if knob == "base" else f"scaled by {knob}")
    base = measured[BASE]
    if proportional:
        gflops = np.geomspace(min(r.flops_per_image for r in measured.values()) / GIGA / 1.3,
                              max(r.flops_per_image for r in measured.values()) / GIGA * 1.3, 50)
        ax.plot(gflops, value(base) * gflops / (base.flops_per_image / GIGA), color="grey", linestyle="--",
                label=f"∝ GFLOPs, through {BASE}")
        plotting.log_axis(ax.yaxis)
    plotting.log_axis(ax.xaxis)
    plotting.legend_outside(ax)
    return fig


lessons.show(measured_figure(lambda r: r.time_per_image_s * 1e3, "time per image [ms], batch 1 (measured)",
                             "Measured time per image against counted operations", proportional=True))

# %% [markdown]
# Both axes are logarithmic, and the dashed line is "time proportional to operations" through the base
# network. On a CPU the points stay near it across a decade of operations: **time follows the counted
# operations, whichever knob produced them** (the paper's fourth finding, here on variants of one network).
# Points off the line ran more (below) or less (above) efficiently than the base. Two cautions: on a machine
# shared with other jobs, their load moves single timings by tens of percent (compare points of one run only,
# as here); and on a GPU at batch 1 small variants take about the same time whatever their operations,
# because launching kernels, not arithmetic, sets the pace there. The next figure measures the efficiency
# directly.

# %%
lessons.show(measured_figure(lambda r: 100 * r.fraction_of_peak,
                             "achieved FLOP/s [% of this device's matmul peak] (measured)",
                             "How well each variant uses the device", proportional=False))

# %%
rho = fitting.rank_correlation([r.flops_per_image for r in measured.values()],
                               [r.fraction_of_peak for r in measured.values()])
print(f"rank correlation of fraction of peak with operations over the {len(measured)} variants: {rho:+.2f}")
for knob in KNOBS:
    rows = [measured[name] for name, k in timed_variants.items() if k == knob]
    points_text = (f"{r.fraction_of_peak:.0%} of peak at {r.flops_per_image / GIGA:.1f} GFLOPs" for r in rows)
    print(f"scaled by {knob:<11}" + ", ".join(points_text))

# %% [markdown]
# A layer with few channels or a small feature map gives the device's vector units little work per call,
# while each layer's fixed costs (reading its weights, starting the operation) stay the same, so smaller
# variants tend to reach a smaller fraction of the peak, and a positive rank correlation above says so. Which
# knob keeps the device busiest differs between devices and backends: resolution makes large feature maps
# that stream through memory, width makes larger matrix products. This is what the counted operations alone
# cannot tell you, and why the project measures.
#
# ## 4. Compound scaling: all three knobs at once
#
# EfficientNet scales depth by α<sup>φ</sup>, width by β<sup>φ</sup> and resolution by γ<sup>φ</sup> with one
# exponent φ. Its authors chose α = 1.2, β = 1.1 and γ = 1.15 (`explore.space.COMPOUND`) by a small search so
# that each step of φ about doubles the operations while keeping the network's proportions. The project's
# compound series applies the same rule to any network with a depth and a width knob:

# %%
compound = sample.series(BASE, "compound")
base_gflops = compound[0].costs["flops"] / GIGA
for phi, s in compound.items():
    print(f"phi {phi:+d}: {s.variant:<52} depths {'-'.join(map(str, s.config['depths']))}, "
          f"{s.costs['flops'] / GIGA:6.2f} GFLOPs ({s.costs['flops'] / GIGA / base_gflops:.2f} x the base)")

# %% [markdown]
# ### Exercise 3: the rule's growth per step
#
# By EfficientNet's rule, by what factor do the FLOPs grow for each step of φ? (Use α, β and γ above, and what
# section 2 showed about how FLOPs grow with each knob.)

# %%
answer = None  # the factor FLOPs grow by per step of phi, by the rule
check.compound_flops_per_phi(answer)

# %% [markdown]
# The figure compares the counted series with the rule's promise, the base network's FLOPs times the growth
# per step to the power φ (the growth computed from `explore.space.COMPOUND`, as your answer above):

# %%
growth = space.compound_growth()
fig, ax = plotting.axes(f"{models.spec(BASE).display_name}: compound scaling", "φ (compound exponent)",
                        "operations per image [GFLOPs]")
phis = np.array(list(compound))
ax.plot(phis, base_gflops * growth**phis, color="grey", linestyle="--",
        label=f"the rule: base × {growth:.2f}^φ")
ax.scatter(phis, [s.costs["flops"] / GIGA for s in compound.values()], color=COLOURS["compound"], s=50, zorder=3,
           label="counted (depths rounded up, side to 8 px, channels to 8)")
ax.set_xticks(phis)
plotting.log_axis(ax.yaxis)
ax.legend(loc="upper left", fontsize="small")
lessons.show(fig)

# %% [markdown]
# The counted networks follow the rule's doubling only roughly: stage depths are whole blocks, so ResNet-34's
# stages of 3, 4, 6 and 3 blocks grow by one block at once where the rule asks for a fifth more, and the
# steps are uneven. Compound scaling is a recipe for *where* to spend a budget of operations, not an exact
# cost model: count the network you actually build.
#
# ## Summary
#
# - **Width and resolution are quadratic knobs, depth a linear one.** Doubling width or input side
#   quadruples the operations; doubling the depth about doubles them. Parameters grow with width squared and
#   with depth, never with resolution; activations, the values moved between layers, grow with resolution
#   squared but only linearly with width.
# - **Counted operations predict measured time across knobs on a CPU**, the paper's fourth finding ("the
#   number of operations is a reliable estimate of the inference time") seen within one family of variants;
#   how well each variant uses the device (its fraction of peak) is what the count leaves out, and it tends
#   to be larger for larger variants.
# - **Compound scaling** turns the three knobs together so that each step of φ about doubles the operations;
#   rounding makes the real steps uneven. The paper's second and third findings say what such a budget buys:
#   accuracy rises with operations along a hyperbola (lesson 5) and energy bounds how far you can go
#   (lesson 6).
