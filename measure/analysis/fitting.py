"""Fits and frontiers over plain arrays of points, in numpy; the main job and the explorer both use them.

- `linear_fit`: y = slope * x + intercept by least squares (time vs operations, memory vs params).
- `hyperbola_fit`: y = a_max - k / (x - x0). For a fixed x0 the model is linear in (a_max, k), so
  it is solved exactly by least squares on u = 1 / (x - x0); x0 itself is found by a zooming grid
  search over the gap x_min - x0 on a log scale. No initial guess, no scipy.
- `held_out`: the error of a fit on points left out of it (k-fold cross-validation).
- `rank_correlation`, `kendall_tau`: Spearman's rho, and Kendall's tau (whether a ranking holds).
- `pareto_front`, `budget_frontier`: the points nothing beats, and what a budget on one cost allows.
- `edf`, `complexity_weights`, `ks_distance`: the empirical distribution functions pycls compares
  design spaces by, optionally weighted so that spaces share one distribution of complexity, and
  the Kolmogorov-Smirnov distance between two of them.
Degenerate input (too few points, zero variance, non-finite values) raises ValueError.
"""

import dataclasses
from typing import Callable, Optional, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class LinearFit:
    """y = slope * x + intercept, with its coefficient of determination over n points."""

    slope: float
    intercept: float
    r2: float
    n: int

    def predict(self, x):
        """The fitted y at x."""
        return self.slope * np.asarray(x, dtype=float) + self.intercept


@dataclasses.dataclass(frozen=True)
class HyperbolaFit:
    """y = a_max - k / (t - t0): a_max the asymptote, t0 the vertical asymptote (t > t0)."""

    a_max: float
    k: float
    t0: float
    r2: float
    n: int
    t0_at_limit: bool  # t0 hit the far end of the search: the data show no curvature, only a line

    def predict(self, t):
        """The fitted y at t (only meaningful for t > t0)."""
        return self.a_max - self.k / (np.asarray(t, dtype=float) - self.t0)


@dataclasses.dataclass(frozen=True)
class HeldOut:
    """Error of a fit's predictions on points left out of it: mean absolute and root mean square."""

    mae: float
    rmse: float
    folds: int
    n: int  # points predicted (each once, by the fit that did not see it)


@dataclasses.dataclass(frozen=True)
class BudgetPoint:
    """What a budget on a cost allows: the points within it, the most complexity and the best value."""

    budget: float
    within: tuple[int, ...]  # indices of the points within the budget, cheapest first
    most_complex: Optional[int]  # index of the point with the most complexity within it (None: none fits)
    best: Optional[int]  # index of the best point within it


def as_points(x, y, minimum: int) -> tuple[np.ndarray, np.ndarray]:
    """Float arrays of equal length with at least `minimum` finite points; ValueError otherwise."""
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y differ in length ({x.size} vs {y.size})")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("x and y must be finite")
    if x.size < minimum:
        raise ValueError(f"needs at least {minimum} points, got {x.size}")
    if np.ptp(x) == 0:
        raise ValueError("x has zero variance: every point has the same x")
    if np.ptp(y) == 0:
        raise ValueError("y has zero variance: R² is undefined")
    return x, y


def _r2(y: np.ndarray, sse: float) -> float:
    """1 - SSE / SST."""
    return float(1.0 - sse / np.sum((y - y.mean()) ** 2))


def linear_fit(x, y) -> LinearFit:
    """Least-squares line through (x, y); ValueError under 2 points or with zero variance."""
    x, y = as_points(x, y, minimum=2)
    # Centring keeps the normal equations well conditioned for large x (operations ~ 1e10).
    dx, dy = x - x.mean(), y - y.mean()
    slope = float(np.sum(dx * dy) / np.sum(dx * dx))
    intercept = float(y.mean() - slope * x.mean())
    sse = float(np.sum((y - (slope * x + intercept)) ** 2))
    return LinearFit(slope, intercept, _r2(y, sse), x.size)


def _fit_given_gaps(t: np.ndarray, y: np.ndarray, gaps: np.ndarray):
    """For each gap (t0 = t_min - gap), the exact least-squares a_max, k and their SSE."""
    u = 1.0 / (t[None, :] - (t.min() - gaps[:, None]))  # (gaps, points)
    du = u - u.mean(axis=1, keepdims=True)
    dy = y - y.mean()
    slope = np.sum(du * dy, axis=1) / np.sum(du * du, axis=1)  # slope of y on u is -k
    a_max = y.mean() - slope * u.mean(axis=1)
    sse = np.sum((y[None, :] - (a_max[:, None] + slope[:, None] * u)) ** 2, axis=1)
    return a_max, -slope, sse


def hyperbola_fit(t, y, zoom_rounds: int = 4, points: int = 81) -> HyperbolaFit:
    """y = a_max - k / (t - t0) by least squares; needs 3 points (3 parameters)."""
    t, y = as_points(t, y, minimum=3)
    span = float(np.ptp(t))
    # t0 must lie below every t; gaps t_min - t0 from 1e-4 to 1e4 spans reach from a near-vertical
    # asymptote at the smallest t to a hyperbola flat enough to be a line over the data.
    low, high = np.log(1e-4 * span), np.log(1e4 * span)
    first_step = (high - low) / (points - 1)
    log_gaps = np.linspace(low, high, points)
    for _ in range(zoom_rounds):
        sse = _fit_given_gaps(t, y, np.exp(log_gaps))[2]
        best_log_gap = log_gaps[int(np.argmin(sse))]
        # Zoom onto the cells either side of the best gap: SSE is smooth in log(gap).
        step = log_gaps[1] - log_gaps[0]
        log_gaps = np.linspace(max(low, best_log_gap - step), min(high, best_log_gap + step), points)
    gap = float(np.exp(best_log_gap))
    a_max, k, sse = _fit_given_gaps(t, y, np.array([gap]))
    at_limit = bool(best_log_gap >= high - first_step)
    return HyperbolaFit(float(a_max[0]), float(k[0]), float(t.min() - gap), _r2(y, float(sse[0])), t.size, at_limit)


def held_out(fit: Callable, x, y, folds: int = 5, minimum: int = 3) -> HeldOut:
    """k-fold cross-validated error of `fit(x, y).predict`: each point predicted by a fit without it.

    Points are dealt to folds in order of x (point i of the sorted order to fold i % folds), so
    every fold spans the whole range and the split is the same on every run. ValueError when a
    fold's complement has fewer than `minimum` points or the fit refuses it.
    """
    x, y = as_points(x, y, minimum=minimum + 1)
    folds = min(folds, x.size)
    order = np.argsort(x, kind="stable")
    fold_of = np.empty(x.size, dtype=int)
    fold_of[order] = np.arange(x.size) % folds
    errors = np.empty(x.size)
    for fold in range(folds):
        test = fold_of == fold
        if np.count_nonzero(~test) < minimum:
            raise ValueError(f"needs at least {minimum} points outside each of {folds} folds")
        errors[test] = fit(x[~test], y[~test]).predict(x[test]) - y[test]
    if not np.all(np.isfinite(errors)):
        raise ValueError("a held-out prediction is not finite (a point below the fit's asymptote)")
    return HeldOut(float(np.mean(np.abs(errors))), float(np.sqrt(np.mean(errors**2))), folds, x.size)


def rank_correlation(x, y) -> float:
    """Spearman's rank correlation (ties get their mean rank); ValueError under 3 points or constant input."""
    x, y = as_points(x, y, minimum=3)
    return float(np.corrcoef(_ranks(x), _ranks(y))[0, 1])


def kendall_tau(x, y) -> float:
    """Kendall's tau-b between two rankings of the same items (scipy's); ValueError under 3 points or constant input."""
    from scipy import stats  # pylint: disable=import-outside-toplevel  # JAX's own dependency; loaded when asked

    x, y = as_points(x, y, minimum=3)
    return float(stats.kendalltau(x, y).statistic)


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 0, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(values.size)
    ranks[order] = np.arange(values.size)
    _, groups = np.unique(values, return_inverse=True)
    return np.bincount(groups, ranks)[groups] / np.bincount(groups)[groups]


def _finite_pairs(cost: Sequence[float], value: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Cost and value as float arrays of one length; ValueError on a length mismatch or a NaN."""
    cost, value = np.asarray(cost, dtype=float).ravel(), np.asarray(value, dtype=float).ravel()
    if cost.shape != value.shape:
        raise ValueError(f"costs and values differ in length ({cost.size} vs {value.size})")
    if np.any(np.isnan(cost)) or np.any(np.isnan(value)):
        raise ValueError("costs and values must not be NaN")
    return cost, value


def pareto_front(cost: Sequence[float], value: Sequence[float]) -> list[int]:
    """Indices of the points no other point beats (no more cost and at least as much value, one strictly).

    Ordered by cost ascending; of points equal in both, the first is kept. The front's values rise
    strictly with cost: each point on it buys more value than every cheaper one.
    """
    cost, value = _finite_pairs(cost, value)
    front, best = [], -np.inf
    for i in np.lexsort((-value, cost)):  # by cost, the most valuable first among equal costs
        if value[i] > best:
            front.append(int(i))
            best = value[i]
    return front


def budget_frontier(cost: Sequence[float], value: Sequence[float], complexity: Sequence[float],
                    budgets: Sequence[float]) -> list[BudgetPoint]:
    """For each budget on `cost` (energy per image, say): the points within it, the most complex, the best."""
    cost, value = _finite_pairs(cost, value)
    complexity = np.asarray(complexity, dtype=float).ravel()
    if complexity.shape != cost.shape:
        raise ValueError(f"complexity and costs differ in length ({complexity.size} vs {cost.size})")
    frontier = []
    for budget in budgets:
        if not budget > 0:
            raise ValueError(f"a budget must be positive, got {budget}")
        within = [int(i) for i in np.argsort(cost, kind="stable") if cost[i] <= budget]
        frontier.append(BudgetPoint(float(budget), tuple(within),
                                    max(within, key=lambda i: complexity[i], default=None),
                                    max(within, key=lambda i: value[i], default=None)))
    return frontier


def log_budgets(costs: Sequence[float], count: int = 4) -> list[float]:
    """`count` budgets log-spaced from the least to the most cost, rounded up to 2 significant digits."""
    costs = np.asarray(costs, dtype=float)
    if costs.size == 0 or not np.all(costs > 0) or not np.all(np.isfinite(costs)):
        raise ValueError("budgets need positive, finite costs")
    lowest, highest = float(costs.min()), float(costs.max())
    if lowest == highest:
        return [lowest]
    raw = np.geomspace(lowest, highest, count)
    # Rounded up, so the smallest budget still admits the cheapest point.
    scale = 10.0 ** (np.floor(np.log10(raw)) - 1)
    return sorted({float(v) for v in np.ceil(raw / scale - 1e-9) * scale})


def edf(values: Sequence[float], weights: Optional[Sequence[float]] = None) -> tuple[np.ndarray, np.ndarray]:
    """The empirical distribution function: sorted values and the (weighted) fraction at or below each."""
    values = np.asarray(values, dtype=float).ravel()
    weights = np.ones_like(values) if weights is None else np.asarray(weights, dtype=float).ravel()
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise ValueError("an EDF needs at least one finite value")
    if weights.shape != values.shape or not np.all(weights >= 0) or not weights.sum() > 0:
        raise ValueError("EDF weights must be one non-negative weight per value, not all zero")
    order = np.argsort(values, kind="stable")
    return values[order], np.cumsum(weights[order]) / weights.sum()


def complexity_weights(complexity: Sequence[float], groups: Sequence, bins: int = 8) -> np.ndarray:
    """Weights that give every group (design space) one shared distribution of complexity (operations).

    As "On Network Design Spaces for Visual Recognition" (Radosavovic et al. 2019) normalises error
    EDFs: complexity is binned on a log scale over the range every group covers, and each point
    weighs 1 / (its group's points in its bin), so each group puts equal weight on each shared bin.
    Points outside the shared bins weigh 0. ValueError when the groups share no bin.
    """
    complexity, labels = np.asarray(complexity, dtype=float).ravel(), list(groups)
    if complexity.size != len(labels) or not np.all(complexity > 0) or not np.all(np.isfinite(complexity)):
        raise ValueError("complexity must be one positive, finite value per point")
    member = {g: np.array([label == g for label in labels]) for g in dict.fromkeys(labels)}
    low = max(complexity[m].min() for m in member.values())
    high = min(complexity[m].max() for m in member.values())
    if not low <= high:
        raise ValueError("the groups' complexities do not overlap: there is no shared distribution to weight to")
    edges = np.geomspace(low, high, bins + 1) if high > low else np.array([low, high])
    which = np.clip(np.searchsorted(edges, complexity, side="right") - 1, 0, len(edges) - 2)
    inside = (complexity >= low) & (complexity <= high)
    counts = {(g, b): int(np.sum(inside & m & (which == b))) for g, m in member.items() for b in range(len(edges) - 1)}
    shared = {b for b in range(len(edges) - 1) if all(counts[(g, b)] for g in member)}
    if not shared:
        raise ValueError("no complexity bin holds points of every group: use fewer bins")
    return np.array([1.0 / counts[(label, b)] if ok and b in shared else 0.0
                     for label, b, ok in zip(labels, which, inside)])


def ks_distance(a: Sequence[float], b: Sequence[float], weights_a: Optional[Sequence[float]] = None,
                weights_b: Optional[Sequence[float]] = None) -> float:
    """The Kolmogorov-Smirnov statistic between two (weighted) EDFs: the largest gap between them."""
    (values_a, cdf_a), (values_b, cdf_b) = edf(a, weights_a), edf(b, weights_b)
    grid = np.union1d(values_a, values_b)

    def at(values, cdf):
        """The EDF's value at each point of the grid (right-continuous)."""
        index = np.searchsorted(values, grid, side="right") - 1
        return np.where(index >= 0, cdf[np.maximum(index, 0)], 0.0)

    return float(np.max(np.abs(at(values_a, cdf_a) - at(values_b, cdf_b))))
