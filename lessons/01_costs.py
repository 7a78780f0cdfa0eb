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
# # Lesson 1: What a network costs — parameters, MACs, FLOPs and the paper's operations
#
# **What you will learn**
#
# - to count a network's parameters and operations without running it, with the project's cost module
#   (`measure.cost`), which reads them off the traced program: nothing is allocated, so it takes seconds
#   on any laptop;
# - why "FLOPs" quoted for one network differ by a factor of two between tools: multiply-accumulates
#   (MACs), FLOPs as XLA counts them, and the operations of the paper's 2016 counter are three named
#   conventions, and you will know which one a number is in;
# - to read the per-layer table, and to see that AlexNet's and VGG-16's parameters live in their fully
#   connected layers while their operations live in their convolutions.
#
# The paper (Canziani et al. 2017) compares 14 ImageNet networks by accuracy, parameters and operations
# (its Figure 2 plots accuracy against operations, blob size ∝ parameters). This lesson counts those costs.

# %%
import functools
import os

import jax
import numpy as np

import lessons
import models
from lessons.checks import costs as check
from measure import cost, figures, points
from measure.analysis import plotting

SMOKE = os.environ.get("LESSONS_SMOKE") == "1"
# Counting never runs a network, so the full lesson counts all 14; smoke mode one per family.
NETWORKS = ["alexnet", "bn_nin", "enet", "googlenet", "vgg16", "resnet18", "inception_v3"] if SMOKE else models.names()
XLA_NETWORK = "resnet18" if SMOKE else "resnet50"  # the network whose count is compared with XLA's own
GIGA, MEGA = 1e9, 1e6

# %% [markdown]
# ## 1. Parameters and operations are two different costs
#
# `cost.count_model(name)` traces a network's forward pass at batch 1 and its own input size (227 px for
# AlexNet, 299 for the Inceptions, 224 for the rest) and returns a `Cost`: parameters, operations in
# each convention, activations and a memory estimate.

# %%
counted = {name: cost.count_model(name) for name in NETWORKS}
# The project's result rows carry each network's display name and its one style (family hue, marker).
rows = [points.base_row(models.variant(name), 1, points.Settings(), "counted, not measured", counted[name])
        for name in NETWORKS]
style = figures.styles(rows)
print(f"{'network':<14}{'side':>6}{'params [M]':>12}{'GMACs':>9}{'GFLOPs':>9}{'paper G-Ops':>13}")
for row, name in zip(rows, NETWORKS):
    c = counted[name]
    print(f"{row.display_name:<14}{row.resolution:>6}{c.params / MEGA:>12.2f}{c.ops('macs') / GIGA:>9.2f}"
          f"{c.ops('flops') / GIGA:>9.2f}{c.ops('paper', dense_groups=True) / GIGA:>13.2f}")

# %%
fig, ax = plotting.axes("Parameters and operations of the paper's networks (each counted at its own input size)",
                        "operations per image [GMACs]", "parameters [millions]")
for i, (row, name) in enumerate(zip(rows, NETWORKS)):
    ax.scatter(counted[name].ops("macs") / GIGA, counted[name].params / MEGA, color=style[name].colour,
               marker=style[name].marker, s=60, zorder=3)
    # Neighbours in the paper's order are often twins (AlexNet and BN-AlexNet): one label above, one below.
    ax.annotate(row.display_name, (counted[name].ops("macs") / GIGA, counted[name].params / MEGA),
                fontsize="small", xytext=(5, 4 if i % 2 else -11), textcoords="offset points")
plotting.log_axis(ax.xaxis)
plotting.log_axis(ax.yaxis)
ax.margins(0.15)
lessons.show(fig)

# %% [markdown]
# Both axes are logarithmic: the networks span about a decade and a half of parameters and of operations,
# and the two are not tied together. AlexNet has nearly nine times GoogLeNet's parameters for about half its
# operations; VGG-16 and VGG-19 are the most expensive on both; ENet and GoogLeNet do many operations per
# parameter. A convolution's weights are reused at every position of its input, so its operations grow
# with the image while its parameters do not; a fully connected layer uses each weight once per image.
#
# ## 2. MACs, FLOPs, operations: why tools disagree
#
# Every tool counts "FLOPs" its own way. The cost module names its conventions
# (`measure/cost/rules.py` defines each, in one place):
#
# - **macs**: multiply-accumulates of convolutions and dense layers, taps on zero padding included. This is
#   what torchvision, fvcore and pycls call "GFLOPS".
# - **flops**: 2 per multiply-accumulate plus 1 per elementwise or reduction step (ReLU, additions, pooling,
#   BatchNorm's arithmetic), as XLA counts; with `real_taps=True` only the kernel taps on real input count,
#   as XLA's own cost analysis (and so Flax's `tabulate`) does.
# - **paper**: the paper's 2016 Torch counter: 2 per multiply-add, ReLU and additions 1 per element,
#   pooling the window per output, BatchNorm free; with `dense_groups=True` grouped convolutions count as
#   if they were dense, as that counter did.
#
# The figure below divides each convention's count by the MACs of the same network.

# %%
conventions = {  # label: (convention, options), each divided by the same network's MACs
    "FLOPs (padded taps)": ("flops", {}),
    "FLOPs on real taps (XLA, Flax tabulate)": ("flops", {"real_taps": True}),
    "paper ops": ("paper", {}),
    "paper ops, groups dense (the paper's counter)": ("paper", {"dense_groups": True}),
}
fig, ax = plotting.axes("Each convention's count divided by the network's MACs", "",
                        "operations / MACs [ratio, same network]")
x = np.arange(len(NETWORKS))
for i, ((label, (convention, options)), colour, marker) in enumerate(
        zip(conventions.items(), plotting.SERIES_COLOURS, ("o", "s", "^", "D"))):
    ratios = [counted[name].ops(convention, **options) / counted[name].ops("macs") for name in NETWORKS]
    ax.scatter(x + (i - 1.5) * 0.12, ratios, color=colour, marker=marker, label=label, zorder=3)
ax.axhline(1, color="grey", linestyle=":", label="MACs (torchvision's 'GFLOPS')")
ax.set_xticks(x, [row.display_name for row in rows], rotation=45, ha="right")
plotting.legend_outside(ax)
lessons.show(fig)

# %% [markdown]
# ResNet-50 is "4.1 GFLOPs" in torchvision and "8.2 G-Ops" in the paper: one counts multiply-accumulates,
# the other counts the multiplication and the addition apart. Beyond that factor of two, FLOPs add the
# elementwise work (a few percent), XLA leaves out the taps that fall on zero padding (a few percent less),
# and the paper's counter charged AlexNet's two-group convolutions as if each group saw every input channel:
# its AlexNet stands at about three times its MACs, the others at two. **Always say which convention a number
# is in**; every number this project prints names its unit.
#
# Our count is not a second opinion: for the forward pass it equals what XLA itself counts on the lowered
# program. Lower the network with `jax.jit(...).lower(...)` and ask XLA:

# %%
variant = models.variant(XLA_NETWORK)
module, shape = variant.module(), variant.input_shape(1)
lowered = jax.jit(functools.partial(module.apply, train=False)).lower(
    models.abstract_variables(module, shape), jax.ShapeDtypeStruct(shape, np.float32))
xla_flops = lowered.cost_analysis()["flops"]
ours = cost.count_model(XLA_NETWORK).ops("flops", real_taps=True)
print(f"{variant.display_name}: XLA's cost analysis {xla_flops / GIGA:.4f} GFLOPs, the cost module (flops, real taps) "
      f"{ours / GIGA:.4f} GFLOPs: {abs(xla_flops - ours) / ours:.4%} apart")

# %% [markdown]
# (The last thousandths of a percent are BatchNorm's per-channel arithmetic on its parameters, which
# inference folds away and the cost module skips, and XLA's adding up in 32-bit floats.)
#
# And the paper's own numbers? Counting with the paper's rules (grouped convolutions dense) reproduces the
# G-Ops it reports:

# %%
paper_gops = {name: models.spec(name).paper.gops_paper for name in NETWORKS}
fig, ax = plotting.axes("Our count with the paper's rules against the paper's reported operations",
                        "the paper's reported operations [G-Ops per image]",
                        "counted with the paper's rules [G-Ops per image]")
for row, name in zip(rows, NETWORKS):
    ours_gops = counted[name].ops("paper", dense_groups=True) / GIGA
    ax.scatter(paper_gops[name], ours_gops, color=style[name].colour, marker=style[name].marker, s=60, zorder=3,
               label=f"{row.display_name} ({ours_gops / paper_gops[name] - 1:+.1%})")
span = np.array([min(paper_gops.values()) / 1.3, max(paper_gops.values()) * 1.3])
ax.plot(span, span, color="grey", linestyle=":", label="equal")
plotting.log_axis(ax.xaxis)
plotting.log_axis(ax.yaxis)
plotting.legend_outside(ax)
lessons.show(fig)

# %% [markdown]
# Every network lands on the diagonal within about 1 %, except two whose definitions differ: the paper's
# GoogLeNet was its first author's Torch model (the project's `stem="factorised"` variant counts its 3.02),
# and its Inception-v4 has 31.6 M parameters where the published network has 42.7 M (which model the authors
# used is unknown). An operation count is only as comparable as the network definitions behind it.
#
# ### Exercise 1: count a convolution by hand
#
# A 3 x 3 convolution with 64 input and 128 output channels, stride 1 and 'SAME' padding, on a 56 x 56 input
# (ResNet's first stage size). How many multiply-accumulates (the macs convention) does it take for one image?
# Replace `None` with your number and run the cell.

# %%
answer = None  # your count of multiply-accumulates
check.conv_macs(answer, side=56, in_channels=64, out_channels=128, kernel=3)

# %% [markdown]
# ## 3. The per-layer table
#
# `Cost.per_layer(convention, depth)` breaks the counts down by module path, `depth` levels deep, in the
# order the network runs them: operations in the named convention, parameters, and activations (the output
# elements of convolutions, dense layers and pooling, as pycls counts them). Work done outside any
# submodule (AlexNet's pooling and flattening, written in its top-level module) is the row `(top level)`.

# %%
alexnet = cost.count_model("alexnet")
table = alexnet.per_layer("macs", depth=1)
print(f"{'module':<14}{'MACs':>15}{'share':>8}{'params':>13}{'share':>8}{'activations':>13}")
for layer in table:
    print(f"{layer.path:<14}{layer.ops:>15,}{layer.ops / alexnet.ops('macs'):>8.1%}{layer.params:>13,}"
          f"{layer.params / alexnet.params:>8.1%}{layer.activations:>13,}")


# %% [markdown]
# ## 4. Parameters live in the dense layers, operations in the convolutions
#
# Drawn per layer as shares of the whole network, the table shows where each cost lives. One function draws
# it for any network, so that AlexNet and VGG-16 can be compared:


# %%
def per_layer_figure(name: str, depth: int):
    """Bars of each layer's share of the network's parameters and of its MACs, layers in the order they run."""
    counted_network = cost.count_model(name)
    layers = [layer for layer in counted_network.per_layer("macs", depth=depth) if layer.ops or layer.params]
    fig, ax = plotting.axes(f"{models.spec(name).display_name}: where the parameters and the operations are",
                            "layer (in the order it runs)", "share of the whole network [%]")
    positions = np.arange(len(layers))
    ax.bar(positions - 0.2, [100 * layer.params / counted_network.params for layer in layers], width=0.4,
           color=plotting.SERIES_COLOURS[1], label="parameters")
    ax.bar(positions + 0.2, [100 * layer.ops / counted_network.ops("macs") for layer in layers], width=0.4,
           color=plotting.SERIES_COLOURS[0], label="operations (MACs)")
    ax.set_xticks(positions, [layer.path for layer in layers], rotation=45, ha="right")
    plotting.legend_outside(ax)
    return fig


lessons.show(per_layer_figure("alexnet", depth=1))

# %% [markdown]
# AlexNet's three fully connected layers fc6, fc7 and fc8 hold almost all its 61 M parameters (fc6 alone,
# 9216 x 4096 weights, has 38 M) and do a small part of its operations: each of their weights is used once
# per image. Its five convolutions hold a few percent of the parameters and do most of the work, since each
# of their weights is used at every position of the feature map. VGG-16 shows the same split at a larger
# scale (its convolutions, two levels deep):

# %%
lessons.show(per_layer_figure("vgg16", depth=2))

# %% [markdown]
# The consequence is the paper's: parameters are a memory cost (lesson 3) and operations a time cost
# (lesson 2), and the two point at different layers. Later networks (GoogLeNet, ResNets, ENet) average their
# last feature map away and keep one small dense layer, which is how GoogLeNet does more operations than
# AlexNet with a ninth of its parameters.
#
# ### Exercise 2: where do VGG-16's parameters live?
#
# What fraction (between 0 and 1) of VGG-16's parameters are in its fully connected layers fc6, fc7 and fc8?
# Use the per-layer table (`cost.count_model("vgg16").per_layer("macs", depth=1)`).

# %%
answer = None  # a fraction between 0 and 1
check.dense_parameter_share(answer, network="vgg16")

# %% [markdown]
# ### Exercise 3: the number Flax's tabulate would print
#
# A colleague profiles ResNet-50 at 224 px with Flax's `tabulate(compute_flops=True)`, which reads XLA's
# cost analysis. How many GFLOPs per image will the table show? Compute it with the cost module and the
# right convention (in billions).

# %%
answer = None  # GFLOPs per image, as XLA counts them
check.xla_gflops(answer, network="resnet50")

# %% [markdown]
# ## Summary
#
# - **Parameters and operations are different costs.** Across the paper's 14 networks they span more than a
#   decade each, independently: AlexNet and VGG carry most of their parameters in fully connected layers that
#   do little of the work, while convolutions reuse few weights many times. This is why the paper plots
#   accuracy against operations with blob size for parameters (its Figure 2), and why ENet reaches the best
#   accuracy per parameter (its Figure 10): it has no large dense layer.
# - **Say which convention a count is in.** MACs (torchvision, fvcore, pycls), FLOPs (XLA: twice the MACs
#   plus elementwise work, without padding taps in its own analysis) and the paper's operations (its 2016
#   counter, grouped convolutions counted dense) differ by about a factor of two, and by three for AlexNet.
#   With the paper's rules the project reproduces its G-Ops within about 1 % where the definitions agree.
# - **The per-layer table** tells which layers to shrink for which cost: the dense layers for parameters
#   (memory), the early convolutions on large feature maps for operations (time, if operations predict time:
#   the paper's fourth finding, which lesson 2 tests on your device).
