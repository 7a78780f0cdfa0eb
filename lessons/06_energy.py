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
# # Lesson 6: Energy budgets — power, energy per image and the energy-bounded frontier
#
# **What you will learn**
#
# - where a power reading comes from: a hardware energy counter (RAPL on Intel and AMD CPUs, NVML on NVIDIA
#   GPUs) where one can be read, and otherwise a **modelled** constant wattage you give; and how to tell the two
#   apart in the project's results (the `power_source` of every row, the `power_meter` of the environment);
# - the paper's first finding, that power barely depends on batch size and architecture, and what it buys:
#   with power about constant, **energy per image is power × time per image**, so batching and fast networks
#   save energy exactly as they save time;
# - the paper's third finding, that an **energy budget per image bounds** the accuracy and the complexity you
#   can reach: the energy-bounded frontier, drawn for networks measured on this device.
#
# The paper measured power on an NVIDIA Jetson TX1 board while running each network. This lesson runs the
# project's main job (`python -m measure`) in this process on a few of the paper's networks.

# %%
import json
import os
import tempfile

import numpy as np

import lessons
from core import runtime
from lessons.checks import energy as check
from measure import device, figures, findings, main_job, points, power, results, timing
from measure.analysis import fitting, plotting

runtime.configure()  # the project's XLA settings for this backend, before JAX starts it
SMOKE = os.environ.get("LESSONS_SMOKE") == "1"
# Networks of the paper that run in seconds on a laptop CPU, from the least to the most accurate.
NETWORKS = ("bn_alexnet", "enet", "resnet18") if SMOKE else ("alexnet", "bn_nin", "enet", "googlenet", "resnet18",
                                                             "resnet50")
BATCH_SIZES = (1, 2) if SMOKE else (1, 4, 16)
TIMING = timing.TimingOptions(min_time_s=0.02 if SMOKE else 0.1, min_repeats=3, warmup=1)
# The power assumed where no meter reads: a laptop CPU package's order of magnitude. Where a meter reads, the
# main job ignores it and measures.
MODELLED_WATTS = 15.0
WORK_DIR = tempfile.TemporaryDirectory(prefix="lesson06-")  # the main job's results; removed at the end

# %% [markdown]
# ## 1. Is there a power meter here?
#
# The project reads power from cumulative energy counters: on a CPU, the Linux powercap interface to RAPL
# (`/sys/class/powercap/intel-rapl:*`, readable by root only since Linux 5.10, or after `chmod a+r` on its
# `energy_uj` files); on an NVIDIA GPU, NVML's energy counter (the `cuda` extra installs it). Power is the
# energy spent over a window of repeated batches divided by the window's length. `measure.power.open_meter`
# opens the meter of a JAX device, or says why there is none:

# %%
jax_device = device.default_device()
meter, why_not = power.open_meter(jax_device)
print(f"device: {device.device_name(jax_device)}")
print(f"power meter: {meter.name}" if meter else f"no power meter: {why_not}")
if meter is not None:
    meter.close()

# %% [markdown]
# Without a meter, power can only be **modelled**: the main job's `--power_watts` (here `power_watts` of its
# settings) assumes a constant wattage, and every energy is that wattage times the time measured. It is used
# only where no meter reads, and every row says which it is.
#
# ## 2. Measuring a few networks with the main job
#
# `measure.main_job.run` is what `python -m measure` runs: each network at each batch size, timed (median of
# several calls after warm-up), with power from the meter or the model, written to a results directory (a
# temporary one here) with the paper's figures and a report.

# %%
config = main_job.Config(models=NETWORKS, batch_sizes=BATCH_SIZES, out_dir=WORK_DIR.name,
                         measure=points.Settings(timing_options=TIMING, power_watts=MODELLED_WATTS))
measured = main_job.run(config, log=print)
rows = findings.ok_rows(measured.rows)
print(f"\n{'network':<12}{'batch':>6}{'ms/image':>10}{'power [W]':>11}  {'source':<10}{'mJ/image':>10}")
for row in rows:
    print(f"{row.display_name:<12}{row.batch_size:>6}{row.time_per_image_s * 1e3:>10.2f}{row.power_w:>11.1f}  "
          f"{row.power_source:<10}{findings.energy_per_image_j(row) * 1e3:>10.1f}")

# %% [markdown]
# ## 3. Measured or modelled? Read the results
#
# Every row of `results.json` carries `power_source`: a meter's name (`rapl`, `nvml`), `modelled`, or
# `not measured`. The environment of the directory says which meter was opened, why none was, and the wattage
# modelled. The report states finding 1 with a verdict that refuses to judge modelled power.

# %%
with open(os.path.join(WORK_DIR.name, results.JSON_NAME)) as f:
    environment = json.load(f)["environment"]
for key in ("power_meter", "power_note", "power_watts_modelled", "idle_power_w"):
    print(f"{key}: {environment.get(key)!r}")
print("row power sources:", sorted({row.power_source for row in rows}))

# %% [markdown]
# ### Exercise 1: measured or modelled?
#
# Was the power of the rows above measured by a meter or modelled? Answer `"measured"` or `"modelled"`.

# %%
answer = None  # "measured" or "modelled"
check.power_source(answer, rows)

# %% [markdown]
# ## 4. Power against batch size and network (finding 1)
#
# The paper found "power consumption is independent of batch size and architecture" on its Jetson TX1 (its
# figure's watts are not available to the project, only the claim). The project's power figure, drawn from
# the rows above, says in its title whether the watts were measured:

# %%
lessons.show(figures.power_vs_batch(rows))

# %%
spread = findings.power_spread(rows)
print(f"{spread.n} points of {spread.networks} networks, source {', '.join(spread.sources)}: "
      f"mean {spread.mean_w:.1f} W, min {spread.min_w:.1f} W, max {spread.max_w:.1f} W, "
      f"(max - min) / mean = {spread.range_fraction:.0%}")

# %% [markdown]
# With modelled power the lines are flat **by construction**: the figure shows the assumption, not the device,
# and says so. With a meter they show the device. A measured counterexample is in the project's notes
# (BUILD.md): on an NVIDIA H200, NVML read from 134 to 495 W across the 14 networks and batch sizes, a spread
# of 164 % of the mean, so finding 1 does not hold on that GPU: a large GPU at batch 1 idles between kernel
# launches, and fills up with the batch. On the TX1, a small board whose GPU stayed busy, power hardly moved.
# Which holds on your device is a measurement, not an assumption.
#
# ## 5. Energy per image = power × time per image
#
# Whatever the source, the energy one image costs is the power drawn while the device works on it times the
# time it takes: J = W × s. The main job records it per row (`energy_per_image_j`).
#
# ### Exercise 2: the energy of one image
#
# From the first row of the table (its `power_w` and `time_per_image_s`), how many **millijoules** did one
# image cost?

# %%
first = rows[0]
print(f"{first.display_name} at batch {first.batch_size}: power {first.power_w:.1f} W, "
      f"time per image {first.time_per_image_s:.5f} s")
answer = None  # millijoules per image
check.energy_per_image_mj(answer, first)

# %% [markdown]
# Batching spreads a call's fixed costs (reading the weights, starting each layer) over more images. Where
# that makes time per image fall (on GPUs markedly; on CPUs most for networks with large dense layers, such as
# AlexNet, whose weights are read once per batch), energy per image falls with it at a power that stays about
# the same:

# %%
style = figures.styles(rows)
fig, ax = plotting.axes("Energy per image against batch size", "batch size", "energy per image [mJ]")
for model in dict.fromkeys(row.model for row in rows):
    mine = [row for row in rows if row.model == model]
    ax.plot([row.batch_size for row in mine], [findings.energy_per_image_j(row) * 1e3 for row in mine],
            marker=style[model].marker, color=style[model].colour, label=mine[0].display_name)
ax.set_xscale("log", base=2)
ax.set_xticks(BATCH_SIZES, [str(b) for b in BATCH_SIZES])
plotting.log_axis(ax.yaxis)
plotting.say(ax, f"power: {', '.join(spread.sources)}", y=0.95, size="small")
plotting.legend_outside(ax)
lessons.show(fig)

# %% [markdown]
# Energy per image also follows the network's operations (the paper's fourth finding, operations predict
# time, times a power that barely changes). Each network is taken at its most frugal batch size:

# %%
frugal = {model: row for model, (_, row) in findings.least_energy(rows, None).items()}  # each at its least energy
fig, ax = plotting.axes("Energy per image against operations (each network at its most frugal batch size)",
                        "operations [G-Ops per image, paper convention]", "energy per image [mJ]")
for model, row in frugal.items():
    ax.scatter(findings.gops_per_image(row), findings.energy_per_image_j(row) * 1e3, color=style[model].colour,
               marker=style[model].marker, s=60, zorder=3, label=f"{row.display_name} (batch {row.batch_size})")
plotting.log_axis(ax.xaxis)
plotting.log_axis(ax.yaxis)
plotting.legend_outside(ax)
lessons.show(fig)
order = findings.energy_order(rows)
print(f"Spearman rank correlation of energy per image with operations over {order.n} networks: {order.rho_gops:.2f}")

# %% [markdown]
# ## 6. The energy-bounded frontier (finding 3)
#
# Give the device a budget of energy per image: a battery that must last a day, or a power budget at a frame
# rate (a 5 W budget at 30 images per second leaves 5 / 30 J = 167 mJ per image; the explorer takes it as
# `--power_budget_w` and `--fps`). Only the networks within the budget are candidates, and the best accuracy
# among them is the most the budget allows. `measure.findings.energy_bound` answers one budget; swept over
# budgets, it draws the frontier. Accuracies are the paper's ImageNet top-1 (`models/paper_models.csv`), which
# belong to the networks, not to this device; the energies are this device's.

# %%
energies = [findings.energy_per_image_j(row) for row in frugal.values()]
budgets_j = np.geomspace(min(energies) / 1.5, max(energies) * 1.5, 200)
bounds = [findings.energy_bound(rows, budget) for budget in budgets_j]
fig, ax = plotting.axes("The energy-bounded frontier: the best accuracy an energy budget allows",
                        "energy budget [mJ per image]", "best reachable top-1 [%] (the paper's ImageNet accuracy)")
ax.step(budgets_j * 1e3, [np.nan if b.best_top1_percent is None else b.best_top1_percent for b in bounds],
        where="post", color="black", label="best top-1 within the budget")
front = fitting.pareto_front(energies, [row.top1_percent_paper for row in frugal.values()])
for i, (model, row) in enumerate(frugal.items()):
    ax.scatter(energies[i] * 1e3, row.top1_percent_paper, color=style[model].colour, marker=style[model].marker,
               s=60, zorder=3, edgecolors="black" if i in front else "none",
               label=f"{row.display_name}{' (Pareto front)' if i in front else ''}")
plotting.log_axis(ax.xaxis)
plotting.legend_outside(ax)
lessons.show(fig)

# %% [markdown]
# Below the most frugal network's energy nothing runs; each step up the staircase is a budget that lets a more
# accurate network in. Networks off the Pareto front (unringed) are beaten by one that is both cheaper and more
# accurate: no budget ever makes them the best choice. Energy is an upper bound on the accuracy you can reach,
# and, since energy follows operations, on the complexity of the network you can run.
#
# The paper drew the same bound on its accuracy-against-throughput figure, where a budget of energy at constant
# power is a vertical line of images per second. The project redraws that figure from the rows (at batch 16
# where measured, else the nearest):

# %%
lessons.show(figures.top1_vs_speed(measured.rows))

# %% [markdown]
# ### Exercise 3: what a budget allows
#
# With the budget printed below, which networks fit (each at its most frugal batch size), and what is the best
# top-1 [%] among them? Give the top-1.

# %%
budget_mj = float(f"{np.median(energies) * 1e3:.2g}")
print(f"budget: {budget_mj} mJ per image")
answer = None  # the best top-1 in % within the budget
check.best_top1_within(answer, rows, budget_mj=budget_mj)

# %% [markdown]
# ## Summary
#
# - **Know where a watt comes from.** A meter (RAPL, NVML) measures; without one the project models a constant
#   wattage you give, labels every row `modelled`, and its report refuses to judge finding 1 on it. Check
#   `power_source` before you trust a power figure.
# - **Finding 1** ("power consumption is independent of batch size and architecture") held on the paper's
#   Jetson TX1 but is a property of a device, not a law: the project measured power varying by more than the
#   mean on an H200. Where it holds, energy per image is power × time per image.
# - **Energy per image follows time per image**: it falls with the batch size where time per image does, and
#   rises with operations, so the fastest configuration is also the most frugal one when power is about
#   constant.
# - **Finding 3**: an energy budget per image is an upper bound on the accuracy and the model complexity you
#   can reach; the frontier is a staircase over the networks on the Pareto front of accuracy against energy.
#   The explorer draws the same frontier for your own variants (`python -m explore --power_watts=...`, figure
#   `energy_frontier`).

# %%
WORK_DIR.cleanup()
