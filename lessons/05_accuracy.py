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
# # Lesson 5: Accuracy against cost — the hyperbola, seeds and design spaces
#
# **What you will learn**
#
# - to run a small design-space sweep with the project's explorer: sample variants of two design spaces,
#   time each on this device, train each briefly on an offline task, and analyse the results;
# - the paper's second finding, that accuracy and cost are in a *hyperbolic* relationship (each extra point of
#   accuracy costs more than the last), fitted to your variants, and how to judge such a fit by its error on
#   variants **held out** of it rather than by its R²;
# - to tell a **design effect** from **seed noise**: the same variant trained twice does not score the same;
# - to compare whole **design spaces** by the distribution of their variants' errors (EDFs, as pycls does),
#   and to read the Kolmogorov-Smirnov distance between two of them.
#
# The paper plotted the published ImageNet accuracies of 14 networks against their inference time. Training
# ImageNet networks takes days; this lesson trains tiny ResNets for a minute or so on the project's
# **synthetic task** (`train/synthetic.py`): textured shapes among clutter, drawn on the fly, ten classes,
# offline. Design matters on it: at 200 training steps a linear classifier on the pixels reaches about 21 %
# while small ResNets reach 44 to 74 % (`python -m explore.task_bench`, BUILD.md).
#
# **What a budget this small can and cannot show.** Every variant here trains for a few dozen steps, so
# accuracies are far below what the same networks reach with more training, and a variant that learns fast
# may not be the one that learns best. What the sweep *can* show is the shape of the trade-off at this budget,
# how large seed noise is next to design effects, and how the explorer's analysis works; the closing section
# says how to check whether a ranking holds at a larger budget.

# %%
import os
import tempfile

import numpy as np

import lessons
from core import runtime
from explore import figures as explore_figures
from explore import jobs, plan, table
from explore import run as explore_run
from lessons.checks import accuracy as check
from measure.analysis import fitting, plotting, verdicts

runtime.configure()  # the project's XLA settings for this backend, before JAX starts it
SMOKE = os.environ.get("LESSONS_SMOKE") == "1"
SPACES = ("resnet_basic", "resnet_bottleneck")  # ResNet-18's basic blocks and ResNet-50's bottleneck blocks
# Each space narrowed to what trains in seconds on a CPU: the narrowest widths the rounding allows up to half,
# one or two blocks a stage (one in smoke mode: fewer layers compile faster), 32 px images.
DEPTHS = (1, 1) if SMOKE else (1, 2)
RANGES = (("width", 0.125, 0.5), *((f"depth_{stage}", *DEPTHS) for stage in range(1, 5)), ("resolution", 32, 32))
SAMPLES = 2 if SMOKE else 3  # variants drawn per space
TRAIN_STEPS = 5 if SMOKE else 60  # batches of 32 images per training run
SEEDS, SEED_SUBSET = ((0,), 0) if SMOKE else ((0, 1), 2)  # the second seed on SEED_SUBSET variants only
# Smoke mode: compiling each variant's steps dominates at that size, so fewer runs and compiles (one seed, no
# timing, no BatchNorm re-estimation, one evaluation) and a smaller test split.
DATASET = "synthetic:test_examples=500" if SMOKE else "synthetic"
CURVE_POINTS = 1 if SMOKE else 3
PRECISE_BN_IMAGES = 0 if SMOKE else jobs.RunSettings.precise_bn_images
TIME_ON_DEVICE = not SMOKE
WORK_DIR = tempfile.TemporaryDirectory(prefix="lesson05-")  # the sweep's files; removed at the end

# %% [markdown]
# ## 1. A sweep in one call
#
# The explorer (`python -m explore` on the command line) runs in steps: **sample** draws variants from each
# design space and counts their costs (`plan.json`); **run** times each variant on this device at batch 1 and
# trains it for the budget, once per seed (`results.jsonl`, one line per finished job, so a killed sweep
# resumes); **collect** merges; **analyse** fits and draws (`report.md`, `variants.csv`, `figures/`). Here the
# same steps run in this process through `explore.run.run`, which returns the analysis.

# %%
settings = explore_run.Settings(
    out_dir=WORK_DIR.name,
    plan=plan.PlanSettings(spaces=SPACES, ranges=RANGES, samples=SAMPLES, seed=0),
    run=jobs.RunSettings(measure=TIME_ON_DEVICE, batch_sizes=(1,), min_time_s=0.05, dataset=DATASET,
                         train_steps=TRAIN_STEPS, seeds=SEEDS, seed_subset=SEED_SUBSET, curve_points=CURVE_POINTS,
                         precise_bn_images=PRECISE_BN_IMAGES))
analysis = explore_run.run(settings, log=print)

# %% [markdown]
# `explore.table` turns the sweep into one record per variant, units in the column names (the same table as
# `variants.csv`):

# %%
records = table.load(WORK_DIR.name)
print(f"{'variant':<52}{'space':<19}{'GFLOPs':>8}{'ms/image':>10}{'top-1 [%]':>11}{'seeds':>7}")
for r in sorted(records, key=lambda r: r["gflops"]):
    latency = f"{r['latency_ms_b1']:.2f}" if r.get("latency_ms_b1") is not None else "—"
    top1 = f"{r['top1_pct']:.1f}" if r["top1_pct"] is not None else "—"
    print(f"{r['variant']:<52}{r['spaces']:<19}{r['gflops']:>8.4f}{latency:>10}{top1:>11}{r['seeds']:>7}")

# %% [markdown]
# ## 2. Accuracy against operations: the hyperbola
#
# The paper found accuracy and inference time in a hyperbolic relationship: top-1 = a<sub>max</sub> − k / (t −
# t<sub>0</sub>). Accuracy approaches a ceiling a<sub>max</sub>, and each step towards it costs more than the
# last. The explorer fits the same curve to the variants' top-1 against their operations (least squares, exact
# in a<sub>max</sub> and k for each t<sub>0</sub>, `measure.analysis.fitting.hyperbola_fit`) and draws it with
# the Pareto front: the variants no cheaper variant beats.

# %%
lessons.show(explore_figures.accuracy_vs_ops(analysis))

# %% [markdown]
# A curve with three parameters passes through any three points, and its R² on the points it was fitted to
# always flatters it. The honest test is to predict variants the fit did not see: the explorer deals the
# variants into five folds, fits on four and predicts the fifth, in turn (`fitting.held_out`). A fit worth
# using predicts a new variant better than the spread of accuracies between variants does.

# %%
fit, held = analysis.hyperbola_ops, analysis.hyperbola_ops_held_out
trained = [v for v in analysis.variants if v.accuracy is not None]
spread = float(np.std([v.accuracy for v in trained], ddof=1))
if fit is None:
    print("no hyperbola fitted:", "; ".join(analysis.notes))
else:
    print(f"top-1 = {fit.a_max:.1f} - {fit.k:.3g} / ({plotting.shifted('GFLOPs', fit.t0)}), R² = {fit.r2:.2f} on "
          f"the {fit.n} variants it was fitted to")
    if held is not None:
        print(f"held out ({held.folds} folds): mean absolute error {held.mae:.1f} points of top-1, against a spread "
              f"of {spread:.1f} points (standard deviation) between variants")
    if not verdicts.hyperbola_judged(fit):
        verdict = "too few variants to judge"
    elif verdicts.hyperbola_holds(fit):
        verdict = "the hyperbola holds"
    else:
        verdict = f"not shown by these variants ({verdicts.hyperbola_failure(fit, 'operations')})"
    print(f"verdict (the project's criterion: accuracy rises with cost and R² >= {verdicts.MIN_R2}): {verdict}")

# %% [markdown]
# When the hyperbola fails here, look at the figure before blaming the curve: if one space's points lie below
# the other's at every cost, the two spaces differ in how much accuracy they buy per operation at this budget,
# and no single curve of operations describes both. Within one space, does top-1 rise with operations? The
# rank correlation (1: every costlier variant is more accurate) answers without assuming a curve:

# %%
for space in SPACES:
    members = [v for v in trained if space in v.spaces]
    try:
        rho = fitting.rank_correlation([v.gflops for v in members], [v.accuracy for v in members])
        print(f"{space}: Spearman rank correlation of top-1 with GFLOPs over {len(members)} variants: {rho:+.2f}")
    except ValueError as error:
        print(f"{space}: no rank correlation ({error})")

# %% [markdown]
# ### Exercise 1: predict a variant you did not train
#
# With the fitted curve, what top-1 [%] do you expect of a variant of this sweep's spaces doing the number of
# GFLOPs per image printed below? (Use `analysis.hyperbola_ops`: its fields `a_max`, `k` and `t0`, or its
# `predict` method.)

# %%
query_gflops = float(f"{np.exp(np.mean(np.log([v.gflops for v in trained]))):.2g}")
print(f"GFLOPs per image to predict at: {query_gflops}")
answer = None  # the top-1 in % the hyperbola predicts at query_gflops
check.hyperbola_prediction(answer, analysis, gflops=query_gflops)

# %% [markdown]
# The paper's own axis was time, not operations. Each variant was also timed on this device at batch 1
# (in smoke mode it is not, and the figure says so): the same curve against measured time.

# %%
lessons.show(explore_figures.accuracy_vs_time(analysis))

# %% [markdown]
# Time per image at batch 1 on a CPU follows operations (lesson 4), so the picture is much the same, with
# the noise of timing added; on a GPU at batch 1 tiny variants all take about the same time, and the curve
# against time flattens into a wall.
#
# ## 3. Seeds against design
#
# Train the same variant twice with another seed (other initial weights, another order of examples) and its
# top-1 moves. Before reading a difference between two variants as a design effect, compare it with that
# noise. The sweep trained a second seed on a few variants spread over the plan (`seed_subset`); below, each
# training run is a point, and the runs of one variant are joined.

# %%
palette = plotting.series_colours(SPACES)
fig, ax = plotting.axes("Seeds against design: top-1 of every training run", "operations [GFLOPs per image]",
                        "top-1 accuracy [%] (trained here)")
for space in SPACES:
    ax.scatter([], [], color=palette[space], label=space)
for v in trained:
    ax.plot([v.gflops] * len(v.top1), v.top1, color=palette[v.spaces[0]], marker="o", alpha=0.8)
ax.plot([], [], color="grey", marker="o", label="runs of one variant (seeds), joined")
plotting.log_axis(ax.xaxis)
plotting.legend_outside(ax)
lessons.show(fig)

# %%
noise = analysis.seed_noise
if noise is None:
    print("no variant was trained with two seeds")
else:
    print(f"between seeds of one variant: {noise.seed_std:.2f} points (standard deviation over {noise.variants} "
          f"variants; largest gap {noise.largest_gap:.2f})")
    print(f"between variants:             {noise.design_std:.2f} points (standard deviation of their mean top-1)")

# %% [markdown]
# When the spread between variants is several times the spread between seeds, most of it is design; a
# difference of a point or two between two variants is not evidence of anything until more seeds say so.
# Two seeds on a couple of variants give only a rough estimate of seed noise: `--seeds=0,1,2` with a larger
# `--seed_subset` gives a better one, at the cost of more training.
#
# ### Exercise 2: the best variant under a budget
#
# A device can afford at most the GFLOPs per image printed below. Which variant of the sweep is the most
# accurate within that budget? Give its variant string (the `variant` column of the table above).

# %%
budget_gflops = float(f"{np.median([v.gflops for v in trained]):.2g}")
print(f"budget: {budget_gflops} GFLOPs per image")
answer = None  # a variant string, e.g. "resnet18:depths=1-1-1-1,width=0.25,resolution=32"
check.best_within(answer, records, max_gflops=budget_gflops)

# %% [markdown]
# ## 4. What the budget hides: learning curves
#
# Each training run evaluated its variant a few times on the way (`curve_points`). If the curves still
# climb at the last step, the ranking at this budget is a ranking of how fast variants learn, not of how well.

# %%
lessons.show(explore_figures.learning_curves(analysis))

# %% [markdown]
# ## 5. Comparing design spaces by their EDFs
#
# Radosavovic et al. (pycls, "On Network Design Spaces for Visual Recognition", 2019) compare design spaces
# rather than single networks: sample variants from each, train them all the same way, and plot each space's
# **empirical distribution function** (EDF) of error: the fraction of its variants with error at most x. A
# space whose EDF lies further left holds more good networks for the same sampling effort. A space of cheaper
# variants looks worse for that alone, so the explorer also draws each EDF *normalised for complexity*
# (dashed): its variants weighted so that both spaces have one distribution of operations. It can do so only
# where the two spaces' operations overlap: with a few variants each, often they do not, and the dashed lines
# are left out.

# %%
lessons.show(explore_figures.error_edf(analysis))

# %%
for (first, second), (plain, normalised) in analysis.ks.items():
    sizes = [len(analysis.edf[space][0]) for space in (first, second)]
    noise_level = 1.36 * np.sqrt(1 / sizes[0] + 1 / sizes[1])  # the two-sample KS test at the 5 % level
    normalised_text = "not computed" if normalised is None else f"{normalised:.2f}"
    print(f"{first} against {second}: KS distance {plain:.2f} (normalised for operations: {normalised_text}); "
          f"with {sizes[0]} and {sizes[1]} variants, gaps up to {noise_level:.2f} are within sampling noise")

# %% [markdown]
# The **Kolmogorov-Smirnov distance** is the largest vertical gap between two EDFs: 0 when the distributions
# are the same, 1 when every variant of one space beats every variant of the other. With a handful of variants
# per space, even a large gap can be chance: the two-sample test's 5 % threshold, 1.36 × sqrt(1/n + 1/m), is
# printed above. Comparing spaces for real takes dozens of variants each (pycls sampled hundreds).
#
# ### Exercise 3: read the gap
#
# What is the (plain, not normalised) KS distance between the two spaces' error EDFs? Read it off the figure,
# or compute it: `measure.analysis.fitting.ks_distance(errors_a, errors_b)` with each space's errors in %
# (100 − top-1 of its variants, or `analysis.edf[space][0]`).

# %%
answer = None  # the KS distance, between 0 and 1
check.ks_distance(answer, analysis)

# %% [markdown]
# ## Summary
#
# - **Accuracy rises with cost and flattens**: the paper's second finding ("accuracy and inference time are in
#   a hyperbolic relationship") is a statement about diminishing returns, and the same curve can be fitted to
#   variants of your own design spaces, against operations or against time on your device.
# - **Judge a fit by its held-out error.** R² on the points fitted flatters a three-parameter curve; the error
#   on variants left out of the fit says how well it predicts a variant you have not trained.
# - **Seed noise first, design effects second.** Only differences well above the spread between seeds of one
#   variant are the design's.
# - **Compare design spaces, not single networks**, by their error EDFs, normalised for complexity, with the
#   KS distance and its noise level in mind.
# - **At a budget this small** the numbers describe how fast the variants learn. To check that a ranking
#   holds, `python -m explore --recheck` trains a spread of the variants again at three times the budget and
#   reports Kendall's tau between the two rankings; `python -m explore` with no flags runs the project's
#   larger demo (BUILD.md gives its wall time).

# %%
WORK_DIR.cleanup()
