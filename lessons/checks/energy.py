"""Checkers of lesson 6 (energy budgets): each answer is read again from the main job's result rows."""

from lessons.checks import close, verdict
from measure import findings, results

MODELLED = "modelled"


def power_source(answer, rows: list[results.Row]) -> bool:
    """Whether the power of the measured rows was "measured" (a meter read it) or "modelled" (a constant given)."""
    sources = {row.power_source for row in findings.ok_rows(rows) if findings.has_power(row)}
    if not sources:
        return verdict(False, "these rows carry no power at all (power_source 'not measured'): measure with "
                              "power_watts to model it")
    expected = MODELLED if sources == {MODELLED} else "measured"
    return verdict(isinstance(answer, str) and answer.strip().lower() == expected,
                   "look at the rows' power_source field (a meter's name such as rapl or nvml, or 'modelled'), or "
                   "at power_meter in the results' environment; answer 'measured' or 'modelled'")


def energy_per_image_mj(answer, row: results.Row) -> bool:
    """The energy one image took in the row, in millijoules."""
    expected = findings.energy_per_image_j(row)
    if expected is None:
        return verdict(False, "this row has no energy: its power was neither measured nor modelled")
    # Modelled energy is exactly power x latency per image; a meter's energy is read over a run of batches
    # dispatched back to back, which power x latency only approximates.
    tolerance = 0.02 if row.power_source == MODELLED else 0.3
    for unit, scale in (("joules", 1.0), ("microjoules", 1e6)):
        if close(answer, expected * scale, rel=tolerance):
            return verdict(False, f"that is in {unit}: give millijoules")
    return verdict(close(answer, expected * 1e3, rel=tolerance),
                   "energy per image = power [W] x time per image [s]; in the row: power_w x time_per_image_s, "
                   "times 1000 for millijoules")


def best_top1_within(answer, rows: list[results.Row], budget_mj: float) -> bool:
    """The best (paper) top-1 [%] among the networks whose energy per image fits a budget of `budget_mj` mJ."""
    bound = findings.energy_bound(rows, budget_mj / 1e3)
    if bound.best_top1_percent is None:
        return verdict(False, f"no network measured here fits {budget_mj:g} mJ per image: no accuracy is reachable")
    return verdict(close(answer, bound.best_top1_percent, rel=0.001),
                   "take each network at its most frugal batch size (least energy per image), keep those within the "
                   "budget, and give the highest top1_percent_paper among them (measure.findings.energy_bound)")
