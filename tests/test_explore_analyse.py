"""The explorer's analysis on hand-made variants: fits recover known parameters, frontiers and EDFs are right."""

import dataclasses
import json

import numpy as np
import pytest

from explore import analyse, figures, report
from measure import results


def variant(name, gflops, accuracy=None, time_ms=None, power_w=None, space="a", batch=1, status=results.OK):
    """A VariantResult with just the costs and results the analysis reads."""
    result = analyse.VariantResult(name, (space,), {}, {"flops": int(gflops * 1e9), "macs": 0, "params": 1,
                                                        "activations": 1})
    if accuracy is not None:
        result.top1.append(accuracy)
    if time_ms is not None or status != results.OK:
        timed = status == results.OK
        result.rows[batch] = results.Row(
            model=name, display_name=name, family="resnet", batch_size=batch, resolution=32, precision="float32",
            device="test device", status=status, time_per_image_s=time_ms / 1e3 if timed else None,
            images_per_s=1e3 / time_ms if timed else None, power_w=power_w,
            power_source="modelled" if power_w else "not measured",
            energy_per_image_j=power_w * time_ms / 1e3 if power_w and timed else None)
    return result


def hyperbolic(count=12):
    """Variants whose accuracy is exactly 90 - 2 / (G - 0.05) and whose time is 3 ms/GFLOP + 0.5 ms."""
    gflops = np.geomspace(0.1, 4.0, count)
    return [variant(f"v{i}", g, 90.0 - 2.0 / (g - 0.05), 3.0 * g + 0.5, power_w=10.0, space="ab"[i % 2])
            for i, g in enumerate(gflops)]


def test_the_hyperbola_and_the_time_line_are_recovered_with_zero_held_out_error():
    out = analyse.analyse(hyperbolic())
    fit = out.hyperbola_ops
    assert (fit.a_max, fit.k, fit.t0) == pytest.approx((90.0, 2.0, 0.05), rel=1e-3)
    assert fit.r2 == pytest.approx(1.0) and out.hyperbola_ops_held_out.mae < 0.01
    line = out.time_vs_ops[1]
    assert (line.slope, line.intercept, line.r2) == pytest.approx((3.0, 0.5, 1.0))
    # Time is linear in operations, so accuracy against time is the same hyperbola, shifted.
    assert out.hyperbola_time.t0 == pytest.approx(3.0 * 0.05 + 0.5, rel=1e-3)


def test_fronts_budgets_and_edfs_on_a_hand_made_sweep():
    vs = [variant("cheap", 0.1, 60.0, 1.0, 10.0), variant("dominated", 0.2, 55.0, 2.0, 10.0),
          variant("mid", 0.4, 80.0, 4.0, 10.0, space="b"), variant("dear", 0.8, 85.0, 8.0, 10.0, space="b"),
          variant("untrained", 0.3, None, 3.0, 10.0)]
    out = analyse.analyse(vs, energy_budgets=(0.015, 0.05, 1.0))
    names = lambda idx: [vs[i].variant for i in idx]
    assert names(out.pareto["ops"]) == ["cheap", "mid", "dear"]
    assert names(out.pareto["energy"]) == ["cheap", "mid", "dear"]
    small, middle, large = out.budgets  # energies 10, 20, 40, 80 mJ
    assert names(small.within) == ["cheap"] and vs[small.best].variant == "cheap"
    assert names(middle.within) == ["cheap", "dominated", "mid"] and vs[middle.best].variant == "mid"
    assert vs[large.most_complex].variant == "dear"
    errors, fractions = out.edf["a"]
    np.testing.assert_allclose(errors, [40.0, 45.0])
    np.testing.assert_allclose(fractions, [0.5, 1.0])


def test_too_little_data_is_a_note_never_an_exception(tmp_path):
    vs = [variant("one", 0.1, 50.0), variant("two", 0.2, None, status=results.OUT_OF_MEMORY)]
    out = analyse.analyse(vs)
    assert out.hyperbola_ops is None and out.budgets == [] and out.time_vs_ops == {}
    assert any("not fitted" in note for note in out.notes)
    assert any("no power" in note for note in out.notes)
    plan = {"spaces": ["a"], "sampler": "random", "seed": 0}
    written = report.write(out, plan, {"dataset": "digits", "budget": "2 steps", "seeds": [0]}, str(tmp_path))
    md = (tmp_path / "report.md").read_text()
    assert "report.html" in written and "Not evaluated" in md and "not fitted" in md


def test_the_report_states_the_verdicts_the_numbers_give(tmp_path):
    out = analyse.analyse(hyperbolic())
    plan = {"spaces": ["a", "b"], "sampler": "random", "seed": 0}
    report.write(out, plan, {"dataset": "digits", "budget": "2 steps", "seeds": [0]}, str(tmp_path))
    md = (tmp_path / "report.md").read_text()
    assert "The hyperbola is visible here" in md and "Operations predict time here" in md
    flat = [dataclasses.replace(v, top1=[70.0 + (i % 3)]) for i, v in enumerate(hyperbolic())]
    report.write(analyse.analyse(flat), plan, {"dataset": "digits"}, str(tmp_path))
    assert "The hyperbola is not visible here" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "figures" / "energy_frontier.png").stat().st_size > 10_000


def test_the_papers_networks_are_fitted_beside_the_variants_for_context():
    networks = [results.Row(model=f"n{i}", display_name=f"N{i}", family="resnet", batch_size=1, resolution=224,
                            precision="float32", device="test device", flops_per_image=int(g * 1e9),
                            time_per_image_s=(2.0 * g + 1.0) / 1e3) for i, g in enumerate((1.0, 4.0, 8.0, 20.0))]
    out = analyse.analyse(hyperbolic(), network_rows=networks)
    fit = out.networks_time_vs_ops[1]
    assert (fit.slope, fit.intercept, fit.n) == pytest.approx((2.0, 1.0, 4))
    assert out.hyperbola_ops is not None  # the networks' paper accuracies never enter the variants' fits


def test_normalised_edfs_and_ks_tell_a_cost_effect_from_a_design_effect(tmp_path):
    # One law for both spaces (accuracy from operations alone), but space b samples dearer variants:
    # its plain EDF looks better, its complexity-normalised one matches a's.
    law = {0.1: 60.0, 1.0: 80.0}
    vs = ([variant(f"a{i}", g, law[g], space="a") for i, g in enumerate([0.1, 0.1, 0.1, 1.0])]
          + [variant(f"b{i}", g, law[g], space="b") for i, g in enumerate([0.1, 1.0, 1.0, 1.0])])
    out = analyse.analyse(vs)
    plain, normalised = out.ks[("a", "b")]
    assert plain == pytest.approx(0.5) and normalised == pytest.approx(0.0)
    for space in "ab":
        errors, fractions = out.edf_normalised[space]
        assert fractions[np.searchsorted(errors, 20.0, side="right") - 1] == pytest.approx(0.5)
    report.write(out, {"spaces": ["a", "b"], "sampler": "grid", "seed": 0},
                 {"dataset": "digits", "budget": "steps=1", "seeds": [0]}, str(tmp_path))
    assert "| a vs b | 0.500 | 0.000 |" in (tmp_path / report.NAMES[0]).read_text()
    stored = json.loads((tmp_path / report.JSON_NAME).read_text())["ks_distance"]
    assert stored == [{"spaces": ["a", "b"], "plain": pytest.approx(0.5), "normalised": pytest.approx(0.0)}]


def test_learning_curves_show_variants_spread_over_the_ranking():
    vs = [variant(f"v{i}", 0.1 * (i + 1), 50.0 + i) for i in range(10)]
    for v in vs:
        v.curves.append([(10, v.accuracy - 5.0), (20, v.accuracy)])
    vs[0].curves.append([(10, 44.0), (20, 50.5)])  # a second seed draws a second line of the same colour
    out = analyse.analyse(vs)
    lines = figures.learning_curves(out).axes[0].get_lines()
    labels = [line.get_label() for line in lines if not line.get_label().startswith("_")]
    assert len(labels) == figures.CURVES_SHOWN and labels[0].startswith("v0 ") and labels[-1].startswith("v9 ")
    assert len(lines) == figures.CURVES_SHOWN + 1


def test_seed_noise_is_reported_next_to_the_spread_between_variants(tmp_path):
    vs = [variant(f"v{i}", 0.1 * (i + 1), 50.0 + 10 * i) for i in range(4)]
    vs[0].top1.append(52.0)  # seeds 50 and 52
    vs[1].top1.append(59.0)  # seeds 60 and 59
    out = analyse.analyse(vs)
    noise = out.seed_noise
    assert noise.variants == 2 and noise.largest_gap == pytest.approx(2.0)
    assert noise.seed_std == pytest.approx(np.sqrt((2.0 + 0.5) / 2))
    assert noise.design_std == pytest.approx(np.std([51.0, 59.5, 70.0, 80.0], ddof=1))
    report.write(out, {"spaces": ["a"], "sampler": "grid", "seed": 0},
                 {"dataset": "digits", "budget": "steps=1", "seeds": [0, 1]}, str(tmp_path))
    assert "are design effects" in (tmp_path / report.NAMES[0]).read_text()
    assert analyse.analyse([variant("alone", 0.1, 50.0)]).seed_noise is None


def test_recheck_picks_a_spread_of_the_ranking_and_measures_its_agreement():
    from explore import run as run_lib
    vs = [variant(f"v{i}", 0.1 * (i + 1), 50.0 + i) for i in range(12)]
    assert run_lib.recheck_variants(vs) == ["v0", "v6", "v11"]  # a quarter, at least 3, least accurate first
    assert run_lib.recheck_variants(vs[:2]) == ["v0", "v1"]
    for v, later in zip([vs[0], vs[6], vs[11]], [70.0, 65.0, 80.0]):  # v6 and v0 swap places
        v.recheck_top1.append(later)
    check = analyse.analyse(vs).recheck
    assert check.variants == ("v0", "v6", "v11") and check.recheck_top1 == (70.0, 65.0, 80.0)
    assert check.kendall_tau == pytest.approx(1 / 3)  # 2 concordant pairs, 1 discordant
    assert vs[0].accuracy == 50.0  # the recheck never mixes into the sweep's own top-1


def networks(gflops):
    """The paper's networks as main-job rows at batch 1, one per GFLOPs given, timed at 17 ms/GFLOP + 3 ms."""
    return [results.Row(model=f"n{i}", display_name=f"N{i}", family="resnet", batch_size=1, resolution=224,
                        precision="float32", device="test device", flops_per_image=int(g * 1e9),
                        time_per_image_s=(17.0 * g + 3.0) / 1e3) for i, g in enumerate(gflops)]


def spread(ax, collection) -> tuple[float, float]:
    """The fractions of the axes' width and height a scatter's points span; asserts they all lie within the limits."""
    if ax.figure.stale:  # limits and layout are settled by a draw; one per figure will do
        ax.figure.canvas.draw()
    points = np.asarray(collection.get_offsets(), dtype=float)
    (x0, x1), (y0, y1) = sorted(ax.get_xlim()), sorted(ax.get_ylim())
    assert len(points) and np.all((x0 <= points[:, 0]) & (points[:, 0] <= x1))
    assert np.all((y0 <= points[:, 1]) & (points[:, 1] <= y1))
    display, box = ax.transData.transform(points), ax.get_window_extent()
    return np.ptp(display[:, 0]) / box.width, np.ptp(display[:, 1]) / box.height


def labelled(artists, start: str) -> list:
    """The artists whose label starts so."""
    return [a for a in artists if a.get_label().startswith(start)]


def assert_log_spaced(line) -> None:
    """A fitted curve evaluated on a log-spaced grid of positive x, all its y drawable."""
    x, y = np.asarray(line.get_xdata(), dtype=float), np.asarray(line.get_ydata(), dtype=float)
    assert np.all(x > 0) and np.allclose(np.diff(np.log(x)), np.log(x[1] / x[0]))
    assert np.all(np.isfinite(y))


def test_scale_to_data_goes_log_only_where_positive_finite_values_span_over_a_decade():
    cases = {"linear": ([1.0, 10.0], [0.0, 5.0], [], [3.0, None, float("nan")], [-100.0, 2.0, 4.0]),
             "log": ([1.0, 10.5], [0.01, 40.0], [0.0, -1.0, None, float("nan"), 5.0, 100.0])}
    for scale, value_lists in cases.items():
        for values in value_lists:
            fig = figures.Figure()
            ax = fig.add_subplot()
            assert figures.scale_to_data(ax.xaxis, values) == (scale == "log")
            assert (ax.get_xscale(), ax.get_yscale()) == (scale, "linear"), values


def test_time_vs_ops_spreads_demo_variants_decades_below_the_papers_networks():
    # The demo: 16 variants at 0.01-0.1 GFLOPs and under 1 ms, the paper's networks at 1-40 GFLOPs and 20-680 ms.
    vs = [variant(f"v{i}", g, time_ms=0.2 + 5.0 * g) for i, g in enumerate(np.geomspace(0.01, 0.1, 16))]
    ax = figures.time_vs_ops(analyse.analyse(vs, network_rows=networks(np.geomspace(1.0, 40.0, 14)))).axes[0]
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
    [points] = labelled(ax.collections, "variants, batch 1")
    width, height = spread(ax, points)
    assert width > 0.1 and height > 0.05
    paper = [c for c in ax.collections if c.get_label().startswith("_") and len(c.get_offsets())]
    assert len(paper) == 14 and all(spread(ax, c) for c in paper)
    [line] = labelled(ax.get_lines(), "batch 1: ")
    assert_log_spaced(line)
    assert line.get_xdata()[0] < 0.01 < 0.1 < line.get_xdata()[-1] < 0.2  # over the variants it was fitted to
    # Without the networks the variants span under a decade on both axes: linear, and they fill the width.
    ax = figures.time_vs_ops(analyse.analyse(vs[3:])).axes[0]
    assert (ax.get_xscale(), ax.get_yscale()) == ("linear", "linear")
    assert spread(ax, labelled(ax.collections, "variants, batch 1")[0])[0] > 0.5
    assert labelled(ax.get_lines(), "batch 1: ")[0].get_xdata()[0] == 0.0  # on linear axes from 0: the intercept


def test_cost_axes_go_log_where_costs_span_decades_and_accuracy_stays_linear():
    # 0.01-1 GFLOPs, 0.3-20 ms and 3-200 mJ: two decades each; accuracy between 55 and 80 %.
    gflops = np.geomspace(0.01, 1.0, 12)
    vs = [variant(f"v{i}", g, 80.0 - 0.5 / (g + 0.01), 0.1 + 20.0 * g, power_w=10.0, space="ab"[i % 2])
          for i, g in enumerate(gflops)]
    out = analyse.analyse(vs)
    for draw in (figures.accuracy_vs_ops, figures.accuracy_vs_time, figures.energy_frontier):
        ax = draw(out).axes[0]
        assert (ax.get_xscale(), ax.get_yscale()) == ("log", "linear"), draw.__name__
        for space in "ab":
            assert spread(ax, labelled(ax.collections, space)[0])[0] > 0.5, draw.__name__
    for draw in (figures.accuracy_vs_ops, figures.accuracy_vs_time):
        [hyperbola] = labelled(draw(out).axes[0].get_lines(), "top-1 = ")
        assert_log_spaced(hyperbola)
    # A tenth of the range (under a decade of each cost): every axis linear.
    narrow = analyse.analyse(vs[7:])
    for draw in (figures.accuracy_vs_ops, figures.accuracy_vs_time, figures.energy_frontier):
        ax = draw(narrow).axes[0]
        assert (ax.get_xscale(), ax.get_yscale()) == ("linear", "linear"), draw.__name__
        assert spread(ax, labelled(ax.collections, "a")[0])[0] > 0.25, draw.__name__  # 2 of the 5, mid-range


def test_learning_curves_put_steps_on_log_axes_only_across_decades():
    vs = [variant(f"v{i}", 0.1, 50.0 + i) for i in range(3)]
    for v in vs:
        v.curves.append([(25, 40.0), (50, 45.0), (100, v.accuracy)])
    assert figures.learning_curves(analyse.analyse(vs)).axes[0].get_xscale() == "linear"
    for v in vs:
        v.curves[0] = [(1, 20.0), (30, 40.0), (1000, v.accuracy)]
    ax = figures.learning_curves(analyse.analyse(vs)).axes[0]
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "linear")


def test_points_a_log_axis_cannot_show_are_left_off_with_a_note():
    # A log "ok" beside a time of NaN or zero (hand-edited) counts as untimed: the fits skip it.
    broken = variant("nan", 0.05, 50.0, float("nan"), power_w=10.0)
    zero = variant("zero", 0.05, 50.0, 1.0, power_w=10.0)
    zero.rows[1] = dataclasses.replace(zero.rows[1], time_per_image_s=0.0)
    out = analyse.analyse([variant(f"v{i}", g, 50.0 + i, time_ms=0.2 + 5.0 * g, power_w=10.0)
                           for i, g in enumerate(np.geomspace(0.01, 0.1, 5))] + [broken, zero])
    assert broken.time_ms(1) is None and zero.time_ms(1) is None and out.time_vs_ops[1].r2 > 0.99
    out.network_rows = networks([0.0, 1.0, 40.0])  # one whose operations were never counted: 0 GFLOPs
    fig = figures.time_vs_ops(out)
    fig.canvas.draw()
    ax = fig.axes[0]
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
    assert np.all(np.asarray(labelled(ax.collections, "variants, batch 1")[0].get_offsets()) > 0)
    assert fig.get_supxlabel().startswith("1 point not drawn")  # the network at 0 GFLOPs
    fig = figures.accuracy_vs_time(out)
    fig.canvas.draw()
    assert fig.axes[0].get_xscale() == "linear" and not fig.get_supxlabel()


def test_the_hyperbola_is_not_drawn_where_it_dives_far_below_the_data():
    # Accuracy 90 - 0.2 / (G - 0.05) over 0.06-0.4 GFLOPs (70-89 %): the axis reaches just above the asymptote
    # G = 0.05, where the curve reads -500 %; drawn there it would squash the points into a line at the top.
    gflops = np.geomspace(0.06, 0.4, 8)
    out = analyse.analyse([variant(f"v{i}", g, 90.0 - 0.2 / (g - 0.05), 3.0 * g + 0.5) for i, g in enumerate(gflops)])
    accuracies = [v.accuracy for v in out.variants]
    for draw in (figures.accuracy_vs_ops, figures.accuracy_vs_time):
        ax = draw(out).axes[0]
        [hyperbola] = labelled(ax.get_lines(), "top-1 = ")
        assert min(hyperbola.get_ydata()) >= min(accuracies) - np.ptp(accuracies) - 1e-9, draw.__name__
        assert ax.get_ylim()[0] > 0, draw.__name__
