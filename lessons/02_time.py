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
# # Lesson 2: Time on your device — do operations predict inference time?
#
# **What you will learn**
#
# - to time networks on your own device with the project's measurement code, the same that `python -m measure`
#   runs: latency, throughput, the host's dispatch time per call, and the fraction of the device's peak;
# - whether the number of operations predicts inference time here (the paper's fourth finding), and how well a
#   line fitted to a few small networks predicts a bigger one;
# - why time per image falls with the batch size, and what a fixed cost per call does to small networks;
# - why memory traffic matters: how many operations a network does per byte it moves (its arithmetic
#   intensity) bounds the speed it can reach, layer by layer (the roofline).
#
# Every number below is measured on the machine running this lesson, so yours will differ from a classmate's;
# the shapes of the figures are what to compare. A shared or busy machine adds noise: rerun the lesson if a
# point looks odd.

# %%
import functools
import os
import statistics

from core import runtime

runtime.configure()  # the project's XLA settings for this backend, before anything starts JAX's backend

import jax  # noqa: E402  (after the runtime's settings)
import numpy as np  # noqa: E402

import lessons  # noqa: E402
import models  # noqa: E402
from lessons.checks import latency as check  # noqa: E402
from measure import device as device_lib  # noqa: E402
from measure import cost, figures, points, results, timing  # noqa: E402
from measure.analysis import fitting, plotting, verdicts  # noqa: E402

SMOKE = os.environ.get("LESSONS_SMOKE") == "1"
if SMOKE:  # within the smoke budget (a minute on a 2-core CPU): five tiny variants, two batch sizes, short timings
    VARIANTS = ("resnet18:width=0.125,resolution=32", "resnet18:width=0.25,resolution=64",
                "enet:width=0.5,resolution=64", "vgg16:width=0.125,resolution=64", "alexnet:width=0.5,resolution=128")
    BATCH_SIZES = (1, 4)
    TIMING = timing.TimingOptions(min_time_s=0.05, min_repeats=2, warmup=1)
    WORKED_EXAMPLE, EXERCISE_VARIANT = "resnet34:width=0.25,resolution=64", "resnet18:width=0.5,resolution=96"
    STREAM_ELEMENTS = 2**24
else:  # within five minutes on a 2-core CPU: ten variants over two decades of operations, three batch sizes
    VARIANTS = ("resnet18:width=0.125,resolution=32", "resnet18:width=0.25,resolution=64",
                "resnet18:width=0.5,resolution=112", "resnet18:resolution=112", "enet:resolution=112",
                "bn_nin:resolution=112", "googlenet:resolution=112", "vgg16:width=0.25,resolution=112", "alexnet",
                "resnet50:resolution=112")
    BATCH_SIZES = (1, 4, 16)
    TIMING = timing.TimingOptions(min_time_s=0.3, min_repeats=5, warmup=2)
    WORKED_EXAMPLE, EXERCISE_VARIANT = "resnet34:resolution=112", "resnet50"
    STREAM_ELEMENTS = 2**25
GIGA, MEGA = 1e9, 1e6
FLOAT32_BYTES = np.dtype(np.float32).itemsize

# %% [markdown]
# ## 1. The device and its peak
#
# A measuring `Session` opens the device's power meter where one reads (lesson 6) and runs the peak probe: a
# large matrix multiplication, the fastest arithmetic the device does, in FLOP/s. Every measured point is then
# compared with that peak.

# %%
device = device_lib.default_device()
session = points.Session(points.Settings(timing_options=TIMING), device, device_lib.device_name(device))
print(f"device: {session.device_name}")
print(session.describe())
print(f"each point: {timing.describe(TIMING)}")

# %% [markdown]
# ## 2. Timing a handful of networks
#
# `Session.points(variant, batch_sizes)` measures a network or variant (a network with its knobs set, written
# `resnet18:width=0.5,resolution=112`; lesson 4 turns the knobs) at each batch size, exactly as the main job
# does, and returns one result row per point: its counted costs, its median time per image, throughput,
# dispatch and compile time, the fraction of the peak it reached, and XLA's memory. Small resolutions keep the
# lesson short.

# %%
variants = [models.variant(name) for name in VARIANTS]
counted = {str(variant): session.count(variant) for variant in variants}  # keyed as the rows name them
rows = [row for variant in variants
        for row in session.points(variant, BATCH_SIZES, counted=counted[str(variant)])]
measured = [row for row in rows if row.status == results.OK]
style = figures.styles(rows)
print(f"{'network':<42}{'batch':>6}{'GFLOPs/img':>11}{'ms/img':>9}{'img/s':>9}{'of peak':>9}{'dispatch':>11}")
for row in rows:
    if row.status != results.OK:
        print(f"{row.display_name:<42}{row.batch_size:>6}  {row.status}: {row.error}")
        continue
    print(f"{row.display_name:<42}{row.batch_size:>6}{row.flops_per_image / GIGA:>11.3f}"
          f"{row.time_per_image_s * 1e3:>9.2f}{row.images_per_s:>9.1f}{row.fraction_of_peak:>9.0%}"
          f"{row.dispatch_s * 1e6:>8.0f} µs")

# %% [markdown]
# ## 3. Do operations predict time here?
#
# The paper found that on its Jetson TX1 the operations count was "a reliable estimate of the inference time":
# time grows linearly with operations. Fit a line, time per image against GFLOPs per image at batch 1, with
# the project's fitting code, and look at it on log axes (the networks span two decades of operations):

# %%
batch_one = [row for row in measured if row.batch_size == 1]
gflops = np.array([row.flops_per_image / GIGA for row in batch_one])
milliseconds = np.array([row.time_per_image_s * 1e3 for row in batch_one])
fit = fitting.linear_fit(gflops, milliseconds)
held_out = fitting.held_out(fitting.linear_fit, gflops, milliseconds)

fig, ax = plotting.axes("Inference time against operations at batch 1, on this device",
                        "operations [GFLOPs per image]", "time per image [ms]")
for row, x, y in zip(batch_one, gflops, milliseconds):
    ax.scatter(x, y, color=style[row.model].colour, marker=style[row.model].marker, s=60, zorder=3,
               label=row.display_name)
line_x = np.geomspace(gflops.min(), gflops.max(), 100)
positive = fit.predict(line_x) > 0  # a negative intercept predicts negative times for the smallest networks
line, = ax.plot(line_x[positive], fit.predict(line_x[positive]), color="black", linestyle="--",
                label=plotting.line_label(fit, "time [ms]", "GFLOPs", "points"))
plotting.log_axis(ax.xaxis)
plotting.log_axis(ax.yaxis)
ax.set_ylim(milliseconds.min() / 2, milliseconds.max() * 2)
plotting.legend_outside(ax, inside=[line])
lessons.show(fig)
holds = "hold" if verdicts.line_holds(fit) else "do not hold"
print(f"R² = {fit.r2:.3f}: by the project's criterion (R² ≥ {verdicts.MIN_R2}) operations {holds} as a predictor "
      f"of time here. On networks left out of the fit, the line is off by {held_out.mae:.2f} ms on average "
      f"({held_out.folds}-fold).")

# %% [markdown]
# Read the figure from the right. Least squares on milliseconds listens to the big values, so the line
# follows the large networks, and its intercept (the time it predicts for no operations at all) is set by them:
# on log axes the straight line bends where the intercept takes over (flat when it is positive, down to zero
# when it is negative), and it can miss the small variants by a factor either way. Small networks do not shrink
# in time as fast as in operations (section 5 shows why), and networks of equal operations can differ by a
# factor in time: how they move memory matters (section 6).
# A line fitted to one size range predicts that range.
#
# **A worked example.** Use the line to predict a network it has not seen, within the range of operations it
# was fitted on, then measure it:

# %%
worked = models.variant(WORKED_EXAMPLE)
worked_counted = session.count(worked)
predicted_ms = float(fit.predict(worked_counted.ops("flops") / GIGA))
worked_row = next(session.points(worked, (1,), counted=worked_counted))
if worked_row.status == results.OK:
    print(f"{worked.display_name}: {worked_counted.ops('flops') / GIGA:.2f} GFLOPs; predicted {predicted_ms:.1f} ms "
          f"per image, measured {worked_row.time_per_image_s * 1e3:.1f} ms "
          f"({predicted_ms / (worked_row.time_per_image_s * 1e3) - 1:+.0%})")
else:
    print(f"{worked.display_name}: predicted {predicted_ms:.1f} ms; not measured ({worked_row.status})")

# %% [markdown]
# ### Exercise 1: predict a time
#
# Using `fit` (ms per image against GFLOPs per image, batch 1), predict the time per image of the network
# below. Count its operations first (`session.count(models.variant(...))`, or `measure.cost.count_variant`).
# Is it inside the range of operations the line was fitted on? Would you trust the prediction? You can measure
# it afterwards: `next(session.points(models.variant(EXERCISE_VARIANT), (1,)))`.

# %%
print(EXERCISE_VARIANT)
answer = None  # predicted milliseconds per image at batch 1
check.predicted_time_ms(answer, fit, EXERCISE_VARIANT)

# %% [markdown]
# ## 4. Batch size: time per image falls, by how much depends on the network
#
# The main job's own figure: time per image against batch size, one line per network.

# %%
lessons.show(figures.time_vs_batch(rows))

# %% [markdown]
# A batch shares one call's fixed costs and one reading of the weights among its images, and gives the device
# larger matrices to keep its cores busy. Networks whose weights are large for their operations (AlexNet and
# VGG with their big dense layers) gain the most; on a CPU the gain levels off after a few images, while a
# GPU keeps gaining up to batches of dozens.
#
# ## 5. A fixed cost per call: dispatch and overhead
#
# Plot each call's latency (the whole batch) against the operations it does, for every point measured. The
# dotted line is the time the call would take at the device's peak: no point can be far below it. The dashed
# line is the median time the host spent dispatching a call (Python and JAX handing the work to the device).

# %%
per_call_gflops = np.array([row.flops_per_image * row.batch_size / GIGA for row in measured])
per_call_ms = np.array([row.time_per_image_s * row.batch_size * 1e3 for row in measured])
dispatch_ms = statistics.median(row.dispatch_s for row in measured) * 1e3
fig, ax = plotting.axes("Latency of one call against its operations (all points)",
                        "operations per call [GFLOPs]", "latency per call [ms]")
for row, x, y in zip(measured, per_call_gflops, per_call_ms):
    ax.scatter(x, y, color=style[row.model].colour, marker=style[row.model].marker, s=50, zorder=3,
               label=row.display_name if row.batch_size == BATCH_SIZES[0] else None)
span = np.geomspace(per_call_gflops.min() / 2, per_call_gflops.max() * 2, 100)
ax.plot(span, span * GIGA / session.peak_flops * 1e3, color="grey", linestyle=":",
        label=f"at the peak ({session.peak_flops / GIGA:.0f} GFLOP/s)")
ax.axhline(dispatch_ms, color="grey", linestyle="--", label=f"host dispatch per call, median ({dispatch_ms:.2f} ms)")
plotting.log_axis(ax.xaxis)
plotting.log_axis(ax.yaxis)
ax.xaxis.set_minor_formatter("")  # five decades: the 2x and 5x labels would collide
plotting.legend_outside(ax)
lessons.show(fig)

# %% [markdown]
# Large calls run close to the dotted line: the arithmetic is the cost. Small calls sit far above it: below a
# few million operations a call costs a roughly fixed time, made of dispatch, launching each of XLA's fused
# kernels and synchronising threads, whatever it computes. On a CPU the host's dispatch itself is tens of
# microseconds; on a GPU at batch 1 launch overhead can dominate every network (the project's H200 run found
# that operations do not predict batch-1 time there at all). Batching amortises this cost over the images.
#
# ## 6. Memory traffic: operations per byte
#
# A call must also move its weights and activations through memory. Measure how fast this device reads
# memory, with the project's timing loop around a sum over a large array (each element read once; the sum
# runs in rows, so that every core reads):

# %%
stream = jax.device_put(np.ones(STREAM_ELEMENTS, np.float32), device)
read_once = functools.partial(jax.jit(lambda x: x.reshape(1024, -1).sum(axis=1)).lower(stream).compile(), stream)
timing.warm_up(read_once, TIMING)
bandwidth = stream.nbytes / statistics.median(timing.latencies(read_once, TIMING))
balance = session.peak_flops / bandwidth
print(f"read bandwidth: {bandwidth / GIGA:.1f} GB/s; peak {session.peak_flops / GIGA:.0f} GFLOP/s; "
      f"so below about {balance:.0f} FLOPs per byte moved, memory rather than arithmetic sets the speed")


# %% [markdown]
# That ratio is the device's *balance*. A network's *arithmetic intensity* is the FLOPs it does per byte it
# moves. One call moves at least its weights once, its input once, and each activation (the outputs of
# convolutions, dense layers and pooling, as the cost module counts them) written once and read once. The
# *roofline* is the best speed that allows: the bandwidth times the intensity, up to the peak.

# %%
def bytes_moved(network_cost, batch_size: int) -> float:
    """A lower bound on the bytes one call moves: weights read once; input and activations (float32) per image."""
    per_image = network_cost.input_bytes + 2 * FLOAT32_BYTES * network_cost.total.activations
    return network_cost.param_bytes + network_cost.batch_stats_bytes + batch_size * per_image


intensity = np.array([row.flops_per_image * row.batch_size / bytes_moved(counted[row.model], row.batch_size)
                      for row in measured])
achieved = np.array([row.achieved_flops_per_s / GIGA for row in measured])
fig, ax = plotting.axes("Roofline: speed reached against operations per byte (all points)",
                        "arithmetic intensity [FLOPs per byte moved, lower bound]", "speed reached [GFLOP/s]")
for row, x, y in zip(measured, intensity, achieved):
    ax.scatter(x, y, color=style[row.model].colour, marker=style[row.model].marker, s=50, zorder=3,
               label=row.display_name if row.batch_size == BATCH_SIZES[0] else None)
    ax.annotate(f"b{row.batch_size}", (x, y), fontsize="x-small", xytext=(4, -3), textcoords="offset points")
roof_x = np.geomspace(min(intensity.min(), balance) / 2, max(intensity.max(), balance) * 2, 200)
ax.plot(roof_x, np.minimum(session.peak_flops, bandwidth * roof_x) / GIGA, color="black", linestyle="--",
        label=f"roofline: min(peak, {bandwidth / GIGA:.0f} GB/s × intensity)")
plotting.log_axis(ax.xaxis)
plotting.log_axis(ax.yaxis)
plotting.legend_outside(ax)
lessons.show(fig)

# %% [markdown]
# Points left of the ridge (the roofline's corner) can only go as fast as memory feeds them, and batching
# (labels b1, b4, b16) moves a network to the right, since the weights are read once per call whatever the
# batch. The model is rough: caches hold small networks' weights between calls, so those can beat their roof,
# and fusion keeps some activations out of memory. Still, it explains why two networks with the same
# operations can run at different speeds.
#
# Where does the traffic come from? Per layer, the same bound (weights once, outputs written once) for AlexNet
# at batch 1 and at batch 16:

# %%
fig, ax = plotting.axes("AlexNet: operations per byte, layer by layer", "layer (in the order it runs)",
                        "arithmetic intensity [FLOPs per byte of weights and outputs]")
for offset, batch_size, colour in zip((-0.2, 0.2), (1, 16), plotting.SERIES_COLOURS):
    layers = [layer for layer in cost.count_model("alexnet", batch_size=batch_size).per_layer("flops", depth=1)
              if layer.params]
    ax.bar(np.arange(len(layers)) + offset,
           [layer.ops / (FLOAT32_BYTES * (layer.params + layer.activations)) for layer in layers], width=0.4,
           color=colour, label=f"batch {batch_size}")
names = [layer.path for layer in layers]
ax.set_xticks(np.arange(len(names)), names, rotation=45, ha="right")
ax.axhline(balance, color="black", linestyle="--", label=f"this device's balance ({balance:.0f} FLOPs/byte)")
plotting.log_axis(ax.yaxis)
plotting.legend_outside(ax)
lessons.show(fig)

# %% [markdown]
# At batch 1 AlexNet's convolutions do tens to hundreds of FLOPs per byte, far right of this device's balance: the
# arithmetic bounds them. Its dense layers do half a FLOP per byte, since each 4-byte weight serves one
# multiply-accumulate: they are bound by memory, and at batch 1 they take far more of the time than their
# share of the operations. At batch 16 each weight serves sixteen images and the dense layers move towards the
# balance. This is why the paper, and this lesson, find that time per image falls with batch size most for
# AlexNet and VGG.
#
# ### Exercise 2: what a batch does to a dense layer
#
# How many FLOPs does AlexNet's fc6 perform per byte of its (float32) weights in one call at batch 64? Count it
# with the cost module at that batch size, and compare it with this device's balance.

# %%
answer = None  # FLOPs per byte of fc6's weights, at batch 64
check.dense_layer_flops_per_byte(answer, batch_size=64, network="alexnet", layer="fc6")

# %%
session.close()  # the power meter, where one was open

# %% [markdown]
# ## Summary
#
# - **Operations predict time to the extent this device is busy with arithmetic.** The paper's fourth finding,
#   a linear time-operations relation on the Jetson TX1, is tested above with the project's criterion
#   (R² ≥ 0.8) and with the error on networks left out of the fit. Large networks follow the line; small ones
#   fall off it, held up by a fixed cost per call; networks with large dense layers run slower than their
#   operations suggest, held up by memory traffic. The project's main job (`python -m measure`) makes the same
#   test on the paper's 14 networks.
# - **Batching** amortises the fixed cost per call and reuses each weight for every image: time per image falls,
#   most for AlexNet and VGG, whose dense layers read many bytes per operation, as in the paper's figure of time
#   per image against batch size.
# - **Fraction of peak** tells how much of the device's arithmetic a network uses: small calls and
#   memory-bound layers use little of it. The roofline bounds the speed by the bytes moved: operations alone do
#   not set the time, operations per byte do.
# - On a GPU the same lesson shows a larger gap: its peak is far higher and its launch overhead per
#   call larger, so batch 1 is overhead-bound for every network of the paper (see the teacher's guide).
