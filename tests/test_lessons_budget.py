"""Lesson 7's exercise checkers: a right answer passes, a wrong one fails with its hint."""

from explore import plan
from lessons.checks import budget


def _planned(latency_ms: float, flops: int, name: str) -> plan.PlannedVariant:
    return plan.PlannedVariant(name, ("resnet_basic",), {}, {"flops": flops, "predicted_latency_ms_b1": latency_ms})


PLANNED = [_planned(0.5, 10, "fast"), _planned(1.0, 40, "middle"), _planned(1.5, 30, "slower"),
           _planned(3.0, 90, "over")]


def test_most_flops_under_the_budget(capsys):
    assert budget.most_flops_under("middle", PLANNED, budget_ms=2.0)
    assert not budget.most_flops_under("over", PLANNED, budget_ms=2.0)
    assert "Hint" in capsys.readouterr().out
    assert not budget.most_flops_under("fast", PLANNED, budget_ms=2.0)
    assert "that is the fastest variant" in capsys.readouterr().out
    assert not budget.most_flops_under(None, PLANNED, budget_ms=2.0)


def test_share_within_ten_percent(capsys):
    predicted, measured = [1.0, 2.0, 3.0, 4.0], [1.05, 2.5, 3.0, 8.0]  # two of four within +-10 %
    assert budget.share_within_10pct(0.5, predicted, measured)
    assert not budget.share_within_10pct(50, predicted, measured)
    assert "not a percentage" in capsys.readouterr().out
    assert not budget.share_within_10pct(0.75, predicted, measured)
    assert not budget.share_within_10pct(None, predicted, measured)
    assert "Hint" in capsys.readouterr().out
