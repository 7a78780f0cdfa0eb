"""The fits recover known parameters, report R² = 1 on perfect data and refuse degenerate input."""

import numpy as np
import pytest

from measure import findings, results
from measure.analysis import fitting


def row(model, batch, time_ms=None, power_w=None, energy_mj=None, gops=1.0, top1=70.0, status=results.OK,
        source="nvml"):
    """A measured row with just what the fits read."""
    timed = status == results.OK and time_ms is not None
    return results.Row(
        model=model, display_name=model.upper(), family="resnet", batch_size=batch, resolution=224,
        precision="float32", device="test", status=status, paper_ops_per_image=int(gops * 1e9),
        time_per_image_s=time_ms / 1e3 if timed else None, images_per_s=1e3 / time_ms if timed else None,
        power_source=source if power_w is not None else "not measured", power_w=power_w,
        energy_per_image_j=energy_mj / 1e3 if energy_mj is not None else None, top1_percent_paper=top1)


def test_linear_fit_recovers_a_line_exactly():
    x = np.array([1.5e9, 3.2e9, 8.0e9, 31.0e9])  # operations: large x must not hurt conditioning
    fit = fitting.linear_fit(x, 2.5e-10 * x + 0.7)
    assert fit.slope == pytest.approx(2.5e-10, rel=1e-12)
    assert fit.intercept == pytest.approx(0.7, rel=1e-9)
    assert fit.r2 == pytest.approx(1.0, abs=1e-12)
    assert fit.n == 4
    np.testing.assert_allclose(fit.predict([2e9]), [1.2])


def test_linear_fit_matches_numpy_on_noisy_data():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 10, 50)
    y = 3 * x - 2 + rng.normal(0, 2, 50)
    fit = fitting.linear_fit(x, y)
    slope, intercept = np.polyfit(x, y, 1)
    assert (fit.slope, fit.intercept) == pytest.approx((slope, intercept))
    assert fit.r2 == pytest.approx(np.corrcoef(x, y)[0, 1] ** 2)
    assert 0 < fit.r2 < 1


@pytest.mark.parametrize("x, y, message", [
    ([], [], "at least 2"),
    ([1.0], [2.0], "at least 2"),
    ([2.0, 2.0, 2.0], [1.0, 2.0, 3.0], "x has zero variance"),
    ([1.0, 2.0, 3.0], [5.0, 5.0, 5.0], "y has zero variance"),
    ([1.0, 2.0], [1.0, 2.0, 3.0], "differ in length"),
    ([1.0, np.nan, 3.0], [1.0, 2.0, 3.0], "finite"),
])
def test_linear_fit_refuses_degenerate_input(x, y, message):
    with pytest.raises(ValueError, match=message):
        fitting.linear_fit(x, y)


def test_hyperbola_recovers_known_parameters():
    t = np.array([3.0, 4.0, 6.0, 9.0, 15.0, 25.0, 40.0])
    fit = fitting.hyperbola_fit(t, 80.0 - 50.0 / (t - 2.0))
    assert fit.a_max == pytest.approx(80.0, rel=1e-5)
    assert fit.k == pytest.approx(50.0, rel=1e-4)
    assert fit.t0 == pytest.approx(2.0, rel=1e-4)
    assert fit.r2 == pytest.approx(1.0, abs=1e-9)
    assert not fit.t0_at_limit
    np.testing.assert_allclose(fit.predict(t), 80.0 - 50.0 / (t - 2.0), atol=1e-4)


def test_hyperbola_with_negative_t0_and_noise():
    rng = np.random.default_rng(1)
    t = np.geomspace(0.5, 30.0, 40)
    y = 78.0 - 12.0 / (t + 0.4) + rng.normal(0, 0.05, t.size)
    fit = fitting.hyperbola_fit(t, y)
    assert fit.a_max == pytest.approx(78.0, abs=0.1)
    assert fit.k == pytest.approx(12.0, rel=0.05)
    assert fit.t0 == pytest.approx(-0.4, abs=0.05)
    assert 0.99 < fit.r2 < 1.0


def test_hyperbola_on_a_line_says_t0_hit_the_limit():
    t = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    fit = fitting.hyperbola_fit(t, 60.0 + 2.0 * t)  # no curvature: the best hyperbola is a line
    assert fit.t0_at_limit
    assert fit.r2 == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("t, y, message", [
    ([1.0, 2.0], [60.0, 70.0], "at least 3"),
    ([2.0, 2.0, 2.0], [60.0, 65.0, 70.0], "x has zero variance"),
    ([1.0, 2.0, 3.0], [70.0, 70.0, 70.0], "y has zero variance"),
])
def test_hyperbola_refuses_degenerate_input(t, y, message):
    with pytest.raises(ValueError, match=message):
        fitting.hyperbola_fit(t, y)


def energy_rows():
    """Three networks at two batch sizes (energy falls with batch size) and one failed point."""
    return [
        row("small", 1, 1.0, 10.0, energy_mj=10.0, gops=1.0, top1=60.0),
        row("small", 8, 0.5, 10.0, energy_mj=5.0, gops=1.0, top1=60.0),
        row("mid", 1, 2.0, 10.0, energy_mj=20.0, gops=4.0, top1=70.0),
        row("mid", 8, 1.2, 10.0, energy_mj=12.0, gops=4.0, top1=70.0),
        row("big", 1, 8.0, 10.0, energy_mj=80.0, gops=30.0, top1=68.0),
        row("big", 8, 4.0, 10.0, energy_mj=40.0, gops=30.0, top1=68.0),
        row("big", 64, status=results.OUT_OF_MEMORY, gops=30.0, top1=68.0),
    ]


def test_energy_bound_uses_each_networks_most_frugal_batch():
    bound = findings.energy_bound(energy_rows(), 0.015)
    assert bound.networks == ("SMALL", "MID")
    assert (bound.max_gops, bound.max_gops_network) == (4.0, "MID")
    assert (bound.best_top1_percent, bound.best_network) == (70.0, "MID")
    assert bound.measured_networks == 3
    everything = findings.energy_bound(energy_rows(), 1.0)
    assert everything.networks == ("SMALL", "MID", "BIG")
    assert (everything.max_gops_network, everything.best_network) == ("BIG", "MID")  # complexity ≠ accuracy


def test_energy_bound_at_one_batch_size_and_when_nothing_fits():
    assert findings.energy_bound(energy_rows(), 0.015, batch_size=1).networks == ("SMALL",)
    empty = findings.energy_bound(energy_rows(), 0.001)
    assert empty.networks == () and empty.max_gops is None and empty.best_top1_percent is None


def test_energy_falls_back_to_power_over_rate():
    rows = [row("a", 1, time_ms=4.0, power_w=5.0), row("b", 1, time_ms=1.0, power_w=5.0)]
    assert findings.energy_per_image_j(rows[0]) == pytest.approx(0.02)
    assert findings.energy_bound(rows, 0.01).networks == ("B",)


def test_energy_bound_refuses_missing_power_and_bad_budgets():
    unpowered = [row("a", 1, 1.0), row("b", 1, 2.0)]
    with pytest.raises(ValueError, match="power was not measured"):
        findings.energy_bound(unpowered, 1.0)
    with pytest.raises(ValueError, match="positive"):
        findings.energy_bound(energy_rows(), 0.0)


def test_energy_budgets_span_the_networks():
    budgets = findings.energy_budgets(energy_rows(), count=4)
    assert budgets == sorted(budgets) and len(budgets) == 4
    assert findings.energy_bound(energy_rows(), budgets[0]).networks == ("SMALL",)
    assert len(findings.energy_bound(energy_rows(), budgets[-1]).networks) == 3


def test_power_spread():
    rows = [row("a", 1, 1.0, 9.0), row("a", 8, 1.0, 11.0), row("b", 1, 1.0, 10.0),
            row("b", 8, status=results.OUT_OF_MEMORY), row("c", 1, 1.0)]
    spread = findings.power_spread(rows)
    assert (spread.n, spread.networks, spread.sources) == (3, 2, ("nvml",))
    assert spread.mean_w == pytest.approx(10.0)
    assert spread.range_fraction == pytest.approx(0.2)
    assert spread.cv == pytest.approx(np.std([9.0, 11.0, 10.0]) / 10.0)
    with pytest.raises(ValueError, match="not measured"):
        findings.power_spread([row("c", 1, 1.0)])


def test_headline_batches_prefer_1_and_16():
    assert findings.headline_batches([row("a", b, 1.0) for b in (1, 4, 16, 64)]) == [1, 16]
    assert findings.headline_batches([row("a", b, 1.0) for b in (2, 4)]) == [2]
    assert findings.headline_batches([row("a", 1, status=results.ERROR)]) == []


def test_rank_correlation_is_spearmans():
    assert fitting.rank_correlation([1, 2, 3, 4], [1, 4, 9, 16]) == pytest.approx(1.0)  # monotone, not linear
    assert fitting.rank_correlation([1, 2, 3, 4], [8, 6, 4, 2]) == pytest.approx(-1.0)
    assert fitting.rank_correlation([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(np.corrcoef([0, 1.5, 1.5, 3],
                                                                                            [0, 1, 2, 3])[0, 1])
    with pytest.raises(ValueError, match="at least 3"):
        fitting.rank_correlation([1, 2], [3, 4])


def test_energy_order_reads_each_networks_most_frugal_batch():
    order = findings.energy_order(energy_rows())
    assert order.n == 3 and order.rho_gops == pytest.approx(1.0)  # 5 < 12 < 40 mJ as 1 < 4 < 30 G-Ops
    assert (order.frugal_network, order.frugal_top1_percent) == ("SMALL", 60.0)
    assert (order.best_network, order.best_top1_percent) == ("MID", 70.0)
