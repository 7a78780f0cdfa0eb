"""Checkers of lesson 7 (design under a latency budget): each answer is computed again from the lesson's own data."""

from lessons.checks import close, verdict
from measure.predict import model as predict_model


def most_flops_under(answer, planned: list, budget_ms: float) -> bool:
    """The variant string with the most FLOPs among the planned variants predicted within `budget_ms` at batch 1."""
    within = [p for p in planned if p.costs["predicted_latency_ms_b1"] <= budget_ms]
    if not within:
        return verdict(False, f"no variant is predicted within {budget_ms:g} ms: no variant is right")
    best = max(within, key=lambda p: p.costs["flops"])
    fastest = min(planned, key=lambda p: p.costs["predicted_latency_ms_b1"])
    if answer == fastest.variant and answer != best.variant:
        return verdict(False, "that is the fastest variant; the budget allows more work: among those predicted "
                              "within it, take the one with the most FLOPs")
    return verdict(answer == best.variant,
                   "keep the variants whose costs['predicted_latency_ms_b1'] is within the budget, then take the one "
                   "with the largest costs['flops'], and give its .variant string")


def share_within_10pct(answer, predicted_ms: list, measured_ms: list) -> bool:
    """The share (0 to 1) of the checked variants whose predicted latency was within +-10 % of the measured."""
    expected = predict_model.share_within(predicted_ms, measured_ms)
    if expected > 0 and close(answer, 100 * expected, rel=0.01):
        return verdict(False, "give a share between 0 and 1, not a percentage")
    return verdict(close(answer, expected, rel=0.01),
                   "for each checked variant compute |predicted / measured - 1|; count those at most 0.10 and "
                   "divide by how many were checked")
