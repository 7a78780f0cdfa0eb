"""The analysis layer: held-out error, Pareto and budget frontiers, EDFs and budgets on hand-made points."""

import types

import numpy as np
import pytest

from measure.analysis import document, fitting, verdicts


def test_held_out_error_is_zero_on_an_exact_hyperbola_and_names_its_folds():
    t = np.array([3.0, 4.0, 6.0, 9.0, 15.0, 25.0, 40.0, 60.0, 90.0, 130.0])
    held = fitting.held_out(fitting.hyperbola_fit, t, 80.0 - 50.0 / (t - 2.0), folds=5)
    assert held.folds == 5 and held.n == 10
    assert held.mae < 1e-3 and held.rmse < 1e-3


def test_held_out_error_measures_noise_a_fit_cannot_see():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 10, 200)
    y = 2 * x + 1 + rng.normal(0, 0.5, 200)
    held = fitting.held_out(fitting.linear_fit, x, y, folds=5, minimum=2)
    # The noise's own scale: mean |N(0, 0.5)| = 0.5 * sqrt(2 / pi) = 0.40, RMS 0.5.
    assert held.mae == pytest.approx(0.5 * np.sqrt(2 / np.pi), rel=0.15)
    assert held.rmse == pytest.approx(0.5, rel=0.15)
    assert held.rmse >= held.mae


def test_held_out_error_exceeds_the_in_sample_error_of_an_overfit():
    x = np.arange(8.0)
    y = np.array([0.0, 3.0, 0.0, 3.0, 0.0, 3.0, 0.0, 3.0])  # no line explains a zigzag
    held = fitting.held_out(fitting.linear_fit, x, y, folds=4, minimum=2)
    fit = fitting.linear_fit(x, y)
    in_sample = np.mean(np.abs(fit.predict(x) - y))
    assert held.mae > in_sample


def test_held_out_error_refuses_too_few_points():
    with pytest.raises(ValueError, match="at least 4"):
        fitting.held_out(fitting.hyperbola_fit, [1.0, 2.0, 3.0], [1.0, 2.0, 2.5])


def test_pareto_front_on_a_hand_made_example():
    # cost, value: C is dominated by B (cheaper, better); E ties D's cost with less value; F ties B exactly.
    cost = [1.0, 2.0, 3.0, 4.0, 4.0, 2.0, 5.0]
    value = [10.0, 30.0, 20.0, 40.0, 35.0, 30.0, 40.0]
    assert fitting.pareto_front(cost, value) == [0, 1, 3]


def test_pareto_front_of_one_point_and_of_equal_points():
    assert fitting.pareto_front([3.0], [1.0]) == [0]
    assert fitting.pareto_front([1.0, 1.0], [2.0, 2.0]) == [0]
    with pytest.raises(ValueError, match="NaN"):
        fitting.pareto_front([1.0, np.nan], [1.0, 2.0])


def test_budget_frontier_takes_the_most_complex_and_the_best_within_each_budget():
    energy = [1.0, 2.0, 4.0, 8.0]
    accuracy = [50.0, 70.0, 65.0, 90.0]
    ops = [1e8, 3e8, 9e8, 2e9]
    low, mid, high, none = fitting.budget_frontier(energy, accuracy, ops, [1.5, 5.0, 100.0, 0.5])
    assert (low.within, low.most_complex, low.best) == ((0,), 0, 0)
    assert (mid.within, mid.most_complex, mid.best) == ((0, 1, 2), 2, 1)  # most ops is not the best
    assert (high.most_complex, high.best) == (3, 3)
    assert (none.within, none.most_complex, none.best) == ((), None, None)
    with pytest.raises(ValueError, match="positive"):
        fitting.budget_frontier(energy, accuracy, ops, [0.0])


def test_log_budgets_admit_the_cheapest_and_span_to_the_dearest():
    budgets = fitting.log_budgets([0.0123, 0.05, 0.9], count=3)
    assert budgets[0] >= 0.0123 and budgets[0] == pytest.approx(0.013)
    assert budgets[-1] == pytest.approx(0.9)
    assert fitting.log_budgets([2.0, 2.0]) == [2.0]
    with pytest.raises(ValueError):
        fitting.log_budgets([0.0, 1.0])


def test_edf_counts_fractions_at_or_below():
    values, fractions = fitting.edf([3.0, 1.0, 2.0, 2.0])
    np.testing.assert_array_equal(values, [1.0, 2.0, 2.0, 3.0])
    np.testing.assert_array_equal(fractions, [0.25, 0.5, 0.75, 1.0])
    with pytest.raises(ValueError):
        fitting.edf([])


def test_document_renders_one_set_of_blocks_to_markdown_and_html(tmp_path):
    blocks = [("h", 1, "Title <x>"), ("p", "a | b"), ("verdict", "yes"), ("ul", ["one", "two"]),
              ("table", ["k", "v"], [["a|b", "1"]]), ("fig", "missing.png", "a caption")]
    assert document.write(blocks, str(tmp_path), ("r.md", "r.html")) == ["r.md", "r.html"]
    md, page = (tmp_path / "r.md").read_text(), (tmp_path / "r.html").read_text()
    assert md.startswith("# Title <x>\n") and "**yes**" in md and "| a\\|b | 1 |" in md and "- two" in md
    assert "<title>Title &lt;x&gt;</title>" in page and "figure missing: missing.png" in page


def test_verdict_criteria_shared_by_both_reports():
    fit = lambda n, k, r2: types.SimpleNamespace(n=n, k=k, r2=r2)  # noqa: E731
    assert not verdicts.hyperbola_judged(fit(3, 1.0, 0.99)) and verdicts.hyperbola_judged(fit(4, 1.0, 0.99))
    assert verdicts.hyperbola_holds(fit(5, 1.0, 0.8)) and not verdicts.hyperbola_holds(fit(5, 1.0, 0.79))
    assert not verdicts.hyperbola_holds(fit(5, -1.0, 0.99))
    assert verdicts.hyperbola_failure(fit(5, -1.0, 0.99), "time") == "accuracy does not rise with time"
    assert verdicts.hyperbola_failure(fit(5, 1.0, 0.5), "time") == "R² = 0.500 < 0.8"
    assert not verdicts.line_judged(fit(2, None, 1.0)) and verdicts.line_judged(fit(3, None, 0.1))
    assert verdicts.line_holds(fit(3, None, 0.8)) and not verdicts.line_holds(fit(3, None, 0.79))


def test_weighted_edf_and_ks_distance_on_hand_made_data():
    values, fractions = fitting.edf([1.0, 2.0, 3.0], weights=[2.0, 1.0, 1.0])
    assert values.tolist() == [1.0, 2.0, 3.0] and fractions.tolist() == [0.5, 0.75, 1.0]
    assert fitting.ks_distance([1, 2, 3], [1, 2, 3]) == 0.0
    assert fitting.ks_distance([1, 2], [3, 4]) == 1.0
    assert fitting.ks_distance([1, 2, 3, 4], [3, 4, 5, 6]) == pytest.approx(0.5)
    # Weighting the first set onto the values it shares with the second closes the gap.
    assert fitting.ks_distance([1, 2, 3, 4], [3, 4]) == pytest.approx(0.5)
    assert fitting.ks_distance([1, 2, 3, 4], [3, 4], weights_a=[0, 0, 1, 1]) == 0.0
    assert fitting.ks_distance([1, 2, 3, 4], [3, 4], weights_a=[0, 0, 1, 3]) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="weights"):
        fitting.edf([1.0, 2.0], weights=[0.0, 0.0])


def test_complexity_weights_give_both_groups_one_distribution():
    # Space a has most variants cheap, space b most variants expensive: unweighted, b looks worse
    # only because its variants cost more; weighted, each shared bin counts the same in both.
    flops = [1, 1, 1, 10, 1, 10, 10, 10]
    groups = ["a", "a", "a", "a", "b", "b", "b", "b"]
    weights = fitting.complexity_weights(flops, groups, bins=2)
    assert weights.tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 1.0, 1.0, 1 / 3, 1 / 3, 1 / 3])
    for group in "ab":
        mine = [w for w, g, f in zip(weights, groups, flops) if g == group and f == 1]
        assert sum(mine) == pytest.approx(1.0)
    outside = fitting.complexity_weights([1, 2, 100, 2, 3], ["a", "a", "a", "b", "b"], bins=1)
    assert outside[0] == 0 and outside[2] == 0 and outside[1] > 0  # outside b's range [2, 3]
    with pytest.raises(ValueError, match="do not overlap"):
        fitting.complexity_weights([1, 2, 10, 20], ["a", "a", "b", "b"])


def test_kendall_tau_on_known_rankings():
    assert fitting.kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert fitting.kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert fitting.kendall_tau([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(4 / 6)  # one discordant pair of 6
    with pytest.raises(ValueError, match="zero variance"):
        fitting.kendall_tau([1, 2, 3], [5, 5, 5])
