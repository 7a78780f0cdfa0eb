"""The paper's findings read off the main job's rows: which rows count, and the per-row quantities.

The fits themselves (lines, hyperbolas, rank correlation, budgets) are the analysis layer's
(`measure.analysis.fitting`); this module picks the rows and quantities they are fitted to.
- `energy_bound`: which networks fit an energy budget per image, and the most operations and
  best (paper) accuracy reachable within it.
- `energy_order`: whether energy per image orders the networks as their operations do, and
  whether the smallest budget leaves out the most accurate network (finding 3's test).
- `power_spread`: how much power varies across networks and batch sizes.
Degenerate input (too few points, zero variance, nothing measured) raises ValueError.
"""

import dataclasses
from typing import Optional, Sequence

import numpy as np

from measure import results
from measure.analysis import fitting

# Batch sizes the paper reports its fits at.
HEADLINE_BATCHES = (1, 16)


@dataclasses.dataclass(frozen=True)
class EnergyBound:
    """What an energy budget per image allows: the networks within it and the best they reach."""

    budget_j: float
    networks: tuple[str, ...]  # display names within the budget, least energy first
    max_gops: Optional[float]  # None when nothing fits
    max_gops_network: Optional[str]
    best_top1_percent: Optional[float]  # the paper's accuracy, never measured here
    best_network: Optional[str]
    measured_networks: int  # networks that have an energy per image at all


@dataclasses.dataclass(frozen=True)
class EnergyOrder:
    """How energy per image (each network at its most frugal batch size) orders the networks."""

    n: int
    rho_gops: float  # Spearman rank correlation of energy per image with operations per image
    frugal_network: str  # the network with the least energy per image, of those with the paper's accuracy
    frugal_top1_percent: float
    best_network: str  # the most accurate network measured (by the paper's accuracy)
    best_top1_percent: float


@dataclasses.dataclass(frozen=True)
class PowerSpread:
    """Spread of power over the measured points: coefficient of variation and range."""

    n: int
    networks: int
    mean_w: float
    std_w: float
    min_w: float
    max_w: float
    sources: tuple[str, ...]

    @property
    def cv(self) -> float:
        """Coefficient of variation, std / mean."""
        return self.std_w / self.mean_w

    @property
    def range_fraction(self) -> float:
        """(max - min) / mean: the spread the paper's 'independent of batch size' claim is about."""
        return (self.max_w - self.min_w) / self.mean_w


def ok_rows(rows: Sequence[results.Row], batch_size: Optional[int] = None) -> list[results.Row]:
    """The rows that carry timings, optionally only those at one batch size."""
    return [r for r in rows if r.status == results.OK and r.time_per_image_s is not None
            and (batch_size is None or r.batch_size == batch_size)]


def batch_sizes(rows: Sequence[results.Row]) -> list[int]:
    """The batch sizes with at least one measured (ok) row, ascending."""
    return sorted({r.batch_size for r in ok_rows(rows)})


def headline_batches(rows: Sequence[results.Row]) -> list[int]:
    """Batch sizes to report fits at: the paper's 1 and 16 where measured, else the smallest."""
    present = batch_sizes(rows)
    return [b for b in HEADLINE_BATCHES if b in present] or present[:1]


def gops_per_image(row: results.Row) -> float:
    """G-Ops per image in the paper's convention: counted here, else the paper's own number."""
    return row.paper_ops_per_image / 1e9 if row.paper_ops_per_image else row.gops_paper


def params_m(row: results.Row) -> float:
    """Millions of parameters: counted here, else the paper's own number."""
    return row.params / 1e6 if row.params else row.params_m_paper


def has_paper_accuracy(row: results.Row) -> bool:
    """Whether the row has the paper's accuracy: a variant of a network (models.variant) has none (0.0)."""
    return row.top1_percent_paper > 0


def rated(rows: Sequence[results.Row]) -> list[results.Row]:
    """The rows with the paper's accuracy."""
    return [r for r in rows if has_paper_accuracy(r)]


def has_power(row: results.Row) -> bool:
    """Whether the row has a power reading, measured or modelled."""
    return row.power_w is not None and row.power_source != "not measured"


def energy_per_image_j(row: results.Row) -> Optional[float]:
    """Joules per image: the row's own, else power / images per second; None without power."""
    if row.status != results.OK:
        return None
    if row.energy_per_image_j is not None:
        return row.energy_per_image_j
    if has_power(row) and row.images_per_s:
        return row.power_w / row.images_per_s
    return None


def least_energy(rows: Sequence[results.Row], batch_size: Optional[int]) -> dict[str, tuple[float, results.Row]]:
    """Per network, its lowest energy per image over batch sizes, and the row achieving it."""
    best = {}
    for row in ok_rows(rows, batch_size):
        energy = energy_per_image_j(row)
        if energy is not None and (row.model not in best or energy < best[row.model][0]):
            best[row.model] = (energy, row)
    if not best:
        where = "" if batch_size is None else f" at batch {batch_size}"
        raise ValueError(f"no energy per image measured{where}: power was not measured")
    return best


def energy_bound(rows: Sequence[results.Row], energy_per_image_j: float,
                 batch_size: Optional[int] = None) -> EnergyBound:
    """Networks whose energy per image (at their most frugal batch size) fits the budget, and the best."""
    if not energy_per_image_j > 0:
        raise ValueError(f"the energy budget must be positive, got {energy_per_image_j}")
    energies, least = zip(*least_energy(rows, batch_size).values())
    # Networks without the paper's accuracy (0.0) can fit the budget but are never the best of it.
    (point,) = fitting.budget_frontier(energies,
                                       [r.top1_percent_paper for r in least], [gops_per_image(r) for r in least],
                                       [energy_per_image_j])
    most_ops = None if point.most_complex is None else least[point.most_complex]
    best = None if point.best is None else least[point.best]
    best = best if best is not None and has_paper_accuracy(best) else None
    return EnergyBound(
        budget_j=float(energy_per_image_j),
        networks=tuple(least[i].display_name for i in point.within),
        max_gops=gops_per_image(most_ops) if most_ops else None,
        max_gops_network=most_ops.display_name if most_ops else None,
        best_top1_percent=best.top1_percent_paper if best else None,
        best_network=best.display_name if best else None,
        measured_networks=len(least))


def energy_order(rows: Sequence[results.Row]) -> EnergyOrder:
    """Finding 3's numbers: energy's rank correlation with operations, and the most frugal network's accuracy."""
    least = least_energy(rows, None)
    energies = [e for e, _ in least.values()]
    networks = [r for _, r in least.values()]
    rho = fitting.rank_correlation(energies, [gops_per_image(r) for r in networks])
    with_accuracy = [(energy, row) for energy, row in least.values() if has_paper_accuracy(row)]
    if not with_accuracy:
        raise ValueError("no network measured has the paper's accuracy")
    frugal = min(with_accuracy, key=lambda v: v[0])[1]
    best = max(rated(networks), key=lambda r: r.top1_percent_paper)
    return EnergyOrder(len(networks), rho, frugal.display_name, frugal.top1_percent_paper, best.display_name,
                       best.top1_percent_paper)


def energy_budgets(rows: Sequence[results.Row], count: int = 4) -> list[float]:
    """`count` budgets (J per image), log-spaced from the most to the least frugal network."""
    return fitting.log_budgets([e for e, _ in least_energy(rows, None).values()], count)


def power_spread(rows: Sequence[results.Row]) -> PowerSpread:
    """Spread of power over every measured (ok) point; ValueError when no power was read."""
    points = [r for r in ok_rows(rows) if has_power(r)]
    if not points:
        raise ValueError("power was not measured on this device")
    watts = np.array([r.power_w for r in points], dtype=float)
    if watts.mean() <= 0:
        raise ValueError("power readings are not positive")
    return PowerSpread(n=len(points), networks=len({r.model for r in points}), mean_w=float(watts.mean()),
                       std_w=float(watts.std()), min_w=float(watts.min()), max_w=float(watts.max()),
                       sources=tuple(sorted({r.power_source for r in points})))
