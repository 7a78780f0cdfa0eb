"""Checkers of lesson 5 (accuracy against cost): each answer is read again from the explorer's own analysis."""

from explore import analyse, table
from lessons.checks import close, verdict


def hyperbola_prediction(answer, analysis: analyse.Analysis, gflops: float) -> bool:
    """The top-1 [%] the sweep's hyperbola of accuracy against operations predicts at `gflops` GFLOPs per image."""
    fit = analysis.hyperbola_ops
    if fit is None:
        return verdict(False, "this sweep fitted no hyperbola (analysis.notes says why): train more variants")
    return verdict(close(answer, float(fit.predict(gflops)), rel=0.01),
                   "put the GFLOPs into the fitted curve: top-1 = a_max - k / (GFLOPs - t0), with a_max, k and t0 "
                   "from analysis.hyperbola_ops (or call its predict)")


def best_within(answer, records: list[dict], max_gflops: float) -> bool:
    """The variant string of the most accurate variant whose GFLOPs per image are at most `max_gflops`."""
    best = table.best(records, "top1_pct", gflops=(None, max_gflops))
    if best is None:
        return verdict(False, f"no trained variant does {max_gflops:g} GFLOPs or fewer: no variant is right")
    if answer != best["variant"] and answer == table.best(records, "top1_pct")["variant"]:
        return verdict(False, "that is the most accurate variant overall, but it is over the budget")
    return verdict(answer == best["variant"],
                   "among the rows whose gflops is within the budget, take the one with the largest top1_pct "
                   "(explore.table.best does this in one call) and give its variant string")


def ks_distance(answer, analysis: analyse.Analysis) -> bool:
    """The Kolmogorov-Smirnov distance between the error EDFs of the sweep's two spaces (not normalised)."""
    if not analysis.ks:
        return verdict(False, "this sweep has no two trained design spaces to compare")
    plain, _ = next(iter(analysis.ks.values()))  # (plain, normalised) of the first pair of spaces
    return verdict(close(answer, plain, rel=0.01),
                   "the KS distance is the largest vertical gap between the two step curves of the EDF figure: "
                   "measure.analysis.fitting.ks_distance(errors_a, errors_b), errors in % (100 - top-1)")
