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
# # Lesson 3: Memory — parameters, activations and batch size
#
# **What you will learn**
#
# - what takes memory when a network runs: its weights, the input batch, and the activations alive at the same
#   moment, and why at batch 1 inference memory is mostly weights;
# - how memory grows with the batch size (linearly: the weights are the intercept, each image's activations the
#   slope), counted by the cost module and measured by XLA's analysis of the compiled program on this device;
# - the paper's relation between memory and parameters;
# - what limits the batch on a device, and why training reaches that limit at far smaller batches than inference.
#
# The paper measured memory on a Jetson TX1, whose 4 GB are shared by its CPU and GPU (its figures of memory
# against batch size and against parameters).
# Here the cost module estimates memory from the traced program without allocating it, and XLA reports the
# buffers of the program it compiled for this device.

# %%
import dataclasses
import functools
import os

from core import runtime

runtime.configure()  # the project's XLA settings for this backend, before anything starts JAX's backend

import jax  # noqa: E402  (after the runtime's settings)
import numpy as np  # noqa: E402

import lessons  # noqa: E402
import models  # noqa: E402
from lessons.checks import memory as check  # noqa: E402
from measure import cost, device_memory, figures, points  # noqa: E402
from measure import device as device_lib  # noqa: E402
from measure.analysis import fitting, plotting  # noqa: E402

SMOKE = os.environ.get("LESSONS_SMOKE") == "1"
if SMOKE:  # within the smoke budget (a minute on a 2-core CPU): fewer networks compiled, two batch sizes
    PAPER_NETWORKS = ("alexnet", "bn_nin", "vgg16", "resnet18", "resnet34")
    BATCH_NETWORKS, BATCH_SIZES = ("alexnet", "resnet18"), (1, 8)
    LIMIT_NETWORK, LIMIT_BATCHES = "resnet18", (1, 16, 256)
else:  # within five minutes on a 2-core CPU: the 14 networks compiled at batch 1, four at four batch sizes
    PAPER_NETWORKS = tuple(models.names())
    BATCH_NETWORKS, BATCH_SIZES = ("alexnet", "enet", "vgg16", "resnet50"), (1, 4, 16, 64)
    LIMIT_NETWORK, LIMIT_BATCHES = "resnet50", (1, 4, 16, 64, 256, 1024)
MB, MEGA, GIB = 1e6, 1e6, 2**30
JETSON_TX1_BYTES = 4 * GIB  # the paper's device: 4 GB shared by its CPU and GPU

# %% [markdown]
# ## 1. At batch 1, memory is the weights
#
# A `Cost` holds the bytes of the parameters (`param_bytes`) and of BatchNorm's running statistics
# (`batch_stats_bytes`), of the input (`input_bytes`), and the peak bytes of activations alive at the same
# moment (`peak_activation_bytes`): a liveness analysis of the traced program, where each value dies after its
# last use, as a forward pass frees each feature map once the next layers have read it.

# %%
counted = {name: cost.count_model(name) for name in PAPER_NETWORKS}
kinds = {  # label: bytes of a network counted at batch 1
    "weights (parameters and statistics)": lambda c: c.param_bytes + c.batch_stats_bytes,
    "input image": lambda c: c.input_bytes,
    "activations alive at once (peak)": lambda c: c.peak_activation_bytes,
}
fig, ax = plotting.axes("Memory at batch 1 by kind (counted, float32)", "", "memory [MB]")
positions = np.arange(len(PAPER_NETWORKS))
for i, ((label, size), colour) in enumerate(zip(kinds.items(), plotting.SERIES_COLOURS)):
    ax.bar(positions + (i - 1) * 0.27, [size(counted[name]) / MB for name in PAPER_NETWORKS], width=0.27,
           color=colour, label=label)
ax.set_xticks(positions, [models.spec(name).display_name for name in PAPER_NETWORKS], rotation=45, ha="right")
plotting.log_axis(ax.yaxis)
plotting.legend_outside(ax)
lessons.show(fig)

# %% [markdown]
# Weights are the largest part for every network at batch 1: several times the live activations for the networks
# with small weights (ENet, GoogLeNet, the ResNets), tens of times for AlexNet and VGG, whose dense layers hold
# hundreds of megabytes. Training cannot free the activations: it keeps them for the backward pass (section 4).
#
# ### Exercise 1: when do activations outweigh the weights?
#
# Each image in a batch adds its input and its live activations; the weights stay. At what batch size do
# VGG-16's input and live activations first take more bytes than its weights? Use `cost.count_model("vgg16")`.

# %%
answer = None  # the smallest such batch size
check.crossover_batch(answer, network="vgg16")

# %% [markdown]
# ## 2. Memory grows linearly with the batch: counted and measured
#
# To measure, compile each network's forward pass for this device at each batch size and read XLA's memory
# analysis of the compiled program (`measure.device_memory.compiled_memory`, what the main job records for
# every point): its arguments (weights and input), outputs and temporary buffers. Compiling allocates
# nothing, so even a batch that would not fit is measured, and nothing has to run. Each row is the main job's
# row of that point, with the cost module's estimate in `memory_analytical_bytes`.

# %%
device = device_lib.default_device()
device_name = device_lib.device_name(device)


def xla_memory_row(name: str, batch_size: int):
    """The main job's row for a network at a batch size, with XLA's memory analysis of its compiled forward pass."""
    variant = models.variant(name)
    module, shape = variant.module(), variant.input_shape(batch_size)
    row = points.base_row(variant, batch_size, points.Settings(), device_name, cost.count_variant(variant))
    compiled = jax.jit(functools.partial(module.apply, train=False)).lower(
        models.abstract_variables(module, shape), jax.ShapeDtypeStruct(shape, np.float32)).compile()
    return dataclasses.replace(row, **device_memory.compiled_memory(compiled).row_fields())


batch_rows = [xla_memory_row(name, batch_size) for name in BATCH_NETWORKS for batch_size in BATCH_SIZES]
style = figures.styles(batch_rows)
print(f"{'network':<12}{'batch':>6}{'XLA total [MB]':>16}{'counted [MB]':>14}{'counted / XLA':>15}")
for row in batch_rows:
    print(f"{row.display_name:<12}{row.batch_size:>6}{row.memory_xla_total_bytes / MB:>16.1f}"
          f"{row.memory_analytical_bytes / MB:>14.1f}{row.memory_analytical_bytes / row.memory_xla_total_bytes:>15.2f}")

fig, ax = plotting.axes("Memory against batch size: XLA's buffers (solid) and the count (dashed)", "batch size",
                        "memory [MB]")
for name in BATCH_NETWORKS:
    network_rows = [row for row in batch_rows if row.model == name]
    batches = [row.batch_size for row in network_rows]
    ax.plot(batches, [row.memory_xla_total_bytes / MB for row in network_rows], color=style[name].colour,
            marker=style[name].marker, label=network_rows[0].display_name)
    ax.plot(batches, [row.memory_analytical_bytes / MB for row in network_rows], color=style[name].colour,
            marker=style[name].marker, fillstyle="none", linestyle="--")
ax.set_xscale("log", base=2)
ax.xaxis.set_major_formatter("{x:g}")
plotting.log_axis(ax.yaxis)
plotting.legend_outside(ax)
lessons.show(fig)

# %% [markdown]
# Both axes are logarithmic, so a line rising at 45 degrees is memory growing in proportion to the batch. Each
# line starts flat, where the weights dominate, and bends up once the images' activations outgrow them: soon
# for networks with small weights (ENet, the ResNets), late for AlexNet and VGG-16. The count (dashed) follows
# XLA's buffers (solid) where the program is a chain of large layers; where they part, XLA fused layers and
# kept fewer activations, or kept workspace and rearranged copies of activations that the count leaves out.
# On GPUs the main job also reads the allocator's peak bytes while each point runs
# (`measure.device_memory.device_peak_bytes`, the `memory_device_peak_bytes` column); a CPU reports none.

# ## 3. Memory against parameters
#
# The paper found memory at batch 1 to be close to a line in the parameters, plus a fixed offset (the runtime's
# own memory on its Jetson). With each network's XLA total at batch 1 and the project's line fit:

# %%
paper_rows = [xla_memory_row(name, 1) for name in PAPER_NETWORKS]
paper_style = figures.styles(paper_rows)
params_m = np.array([row.params / MEGA for row in paper_rows])
memory_mb = np.array([row.memory_xla_total_bytes / MB for row in paper_rows])
fit = fitting.linear_fit(params_m, memory_mb)
fig, ax = plotting.axes("Memory against parameters at batch 1 (XLA's buffers on this device)",
                        "parameters [millions]", "memory [MB]")
for row, x, y in zip(paper_rows, params_m, memory_mb):
    ax.scatter(x, y, color=paper_style[row.model].colour, marker=paper_style[row.model].marker, s=60, zorder=3,
               label=row.display_name)
line_x = np.linspace(0, params_m.max() * 1.05, 50)
line, = ax.plot(line_x, fit.predict(line_x), color="black", linestyle="--",
                label=plotting.line_label(fit, "memory [MB]", "M-params"))
plotting.legend_outside(ax, inside=[line])
lessons.show(fig)

# %% [markdown]
# The slope is close to 4 MB per million parameters: each float32 weight takes 4 bytes, and little else grows with
# the weights. XLA's totals count only the program's own buffers, so the intercept here is small; a device's
# runtime (CUDA's context, cuDNN's workspace, the framework's pools) adds its own fixed share on top, which is
# the paper's offset. Halving the bytes per weight (`python -m measure --precision=bfloat16`) halves the slope.
#
# ## 4. What limits the batch
#
# A batch fits while weights plus the batch's activations fit in the device's memory. Training a network needs
# more per image: the training step keeps the activations for the backward pass and holds a gradient for every
# weight (the cost module counts a training step with `train=True`; an optimizer's state would add one or two
# more copies of the weights). Counted for one network, against this device's memory and the paper's Jetson:

# %%
stats = device.memory_stats() or {}  # GPUs and TPUs report their allocator's limit; a CPU reports none
capacity = stats.get("bytes_limit") or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
fig, ax = plotting.axes(f"{models.spec(LIMIT_NETWORK).display_name}: memory against batch size (counted)",
                        "batch size", "memory [MB]")
for train, colour, label in ((False, plotting.SERIES_COLOURS[1], "inference"),
                             (True, plotting.SERIES_COLOURS[0], "training step")):
    used = [cost.count_model(LIMIT_NETWORK, batch_size=b, train=train).memory_bytes / MB for b in LIMIT_BATCHES]
    ax.plot(LIMIT_BATCHES, used, marker="o", color=colour, label=label)
for budget, label in ((capacity, f"this device's memory ({'allocator limit' if stats else 'host RAM'})"),
                      (JETSON_TX1_BYTES, "the paper's Jetson TX1 (4 GB, shared)")):
    ax.axhline(budget / MB, linestyle=":", color="grey")
    ax.text(LIMIT_BATCHES[0], budget / MB, f" {label}", va="bottom", fontsize="small", color="grey")
ax.set_xscale("log", base=2)
ax.xaxis.set_major_formatter("{x:g}")
plotting.log_axis(ax.yaxis)
plotting.legend_outside(ax)
lessons.show(fig)

# %% [markdown]
# Where a line crosses a budget is the largest batch that fits: the training step crosses it at a batch many
# times smaller than inference does, since each image keeps all its activations and their gradients. That is
# why training batches are set by memory and inference batches by latency. (The counts are estimates; the
# main job skips larger batches once one runs out of memory on the device.)
#
# ### Exercise 2: the largest batch in 1 GiB
#
# What is the largest batch of ResNet-50 (224 px, float32) whose inference memory, as the cost module estimates
# it (`memory_bytes`), fits in 1 GiB (2**30 bytes)?

# %%
answer = None  # a whole number of images
check.largest_batch(answer, network="resnet50", budget_gib=1.0, train=False)

# %% [markdown]
# ### Exercise 3: and for training
#
# What is the largest batch of ResNet-50 whose training step (`train=True`) fits in the Jetson TX1's 4 GiB, by
# the same estimate? (Counting a training step takes a second or two; a few counts find it.)

# %%
answer = None  # a whole number of images
check.largest_batch(answer, network="resnet50", budget_gib=4.0, train=True)

# %% [markdown]
# ## Summary
#
# - **At batch 1 memory is the weights**, 4 bytes per parameter in float32, plus the activations alive at one
#   moment, which are a small fraction of all activations. Hence the paper's near-linear relation of memory to
#   parameters at batch 1, with an offset that is the runtime's own memory on a real device.
# - **Memory grows linearly with the batch**, as in the paper: the weights are the intercept, each image's live
#   activations the slope. Networks with few weights and large feature maps (ENet, ResNets) become
#   activation-bound at small batches; AlexNet and VGG stay weight-bound for longer. The cost module's estimate
#   follows XLA's compiled buffers; fusion, workspace and layout copies make the difference.
# - **The device's memory limits the batch**: largest batch = (memory − weights) / bytes per image. A training
#   step keeps every activation and a gradient per weight, so its largest batch is many times smaller. Lesson 2
#   showed that a larger batch runs faster per image; this lesson shows how far the batch can grow. Lesson 6
#   puts the two together with power into an energy budget.
