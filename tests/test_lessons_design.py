"""The exercise checkers of lessons 4-6 (scaling, accuracy, energy): a right answer passes, a wrong one gets a hint."""

import pytest

from explore import analyse, table
from lessons.checks import accuracy, energy, scaling
from measure import results

CORRECT = "Correct."
NOT_YET = "Not yet. Hint:"


def _said(capsys, start: str) -> str:
    """What the checker printed, asserted to start with `start` (its verdict)."""
    out = capsys.readouterr().out
    assert out.startswith(start), out
    return out


# Lesson 4: width, depth and resolution. ResNet-18 instead of the lesson's ResNet-34: the same rules, counted faster.

def test_width_flops_ratio(capsys):
    """Doubling the width about quadruples the FLOPs: 4 passes, 2 (linear thinking) gets the hint."""
    assert scaling.width_flops_ratio(4.0, base="resnet18") is True
    _said(capsys, CORRECT)
    assert scaling.width_flops_ratio(2.0, base="resnet18") is False
    assert "output channels" in _said(capsys, NOT_YET)


def test_width_and_resolution_flops_ratio(capsys):
    """Twice the width at half the side: the two squares cancel, so 1 passes and 4 (width alone) does not."""
    assert scaling.width_and_resolution_flops_ratio(1.0, base="resnet18") is True
    _said(capsys, CORRECT)
    assert scaling.width_and_resolution_flops_ratio(4.0, base="resnet18") is False
    assert "multiply" in _said(capsys, NOT_YET)


def test_compound_flops_per_phi(capsys):
    """1.2 x 1.1^2 x 1.15^2 passes; the three factors multiplied once each get their own hint; None is wrong."""
    assert scaling.compound_flops_per_phi(1.2 * 1.1**2 * 1.15**2) is True
    _said(capsys, CORRECT)
    assert scaling.compound_flops_per_phi(1.2 * 1.1 * 1.15) is False
    assert "once each" in _said(capsys, NOT_YET)
    assert scaling.compound_flops_per_phi(None) is False
    _said(capsys, NOT_YET)


# Lesson 5: accuracy against cost, on a hand-made sweep: two spaces of four variants, no training needed.

@pytest.fixture
def sweep():
    """An analysis of eight trained variants in two spaces, and its table."""
    def variant(name, space, gflops, top1):
        """A variant of one space with its operations and each seed's top-1."""
        return analyse.VariantResult(name, (space,), {}, {"flops": gflops * 1e9, "macs": gflops * 5e8, "params": 1,
                                                          "activations": 1}, top1=list(top1))
    variants = [variant("a1", "basic", 0.002, [20.0, 21.0]), variant("a2", "basic", 0.004, [35.0]),
                variant("a3", "basic", 0.008, [40.0]), variant("a4", "basic", 0.016, [42.0]),
                variant("b1", "bottleneck", 0.003, [18.0]), variant("b2", "bottleneck", 0.006, [28.0]),
                variant("b3", "bottleneck", 0.012, [33.0]), variant("b4", "bottleneck", 0.024, [36.0, 34.0])]
    analysis = analyse.analyse(variants)
    return analysis, table.records(analysis, {"seeds": [0, 1]})


def test_hyperbola_prediction(capsys, sweep):
    """The fitted curve's value at the asked GFLOPs passes; a value 5 points off gets the formula as a hint."""
    analysis, _ = sweep
    expected = float(analysis.hyperbola_ops.predict(0.01))
    assert accuracy.hyperbola_prediction(expected, analysis, gflops=0.01) is True
    _said(capsys, CORRECT)
    assert accuracy.hyperbola_prediction(expected + 5, analysis, gflops=0.01) is False
    assert "a_max - k / (GFLOPs - t0)" in _said(capsys, NOT_YET)


def test_hyperbola_prediction_without_a_fit(capsys):
    """A sweep too small to fit says so instead of failing."""
    assert accuracy.hyperbola_prediction(30.0, analyse.analyse([]), gflops=0.01) is False
    assert "no hyperbola" in _said(capsys, NOT_YET)


def test_best_within(capsys, sweep):
    """Within 0.01 GFLOPs the best is a3 (40 %); a4 is the best overall but over the budget, and says so."""
    _, records = sweep
    assert accuracy.best_within("a3", records, max_gflops=0.01) is True
    _said(capsys, CORRECT)
    assert accuracy.best_within("a4", records, max_gflops=0.01) is False
    assert "over the budget" in _said(capsys, NOT_YET)
    assert accuracy.best_within("b2", records, max_gflops=0.01) is False
    assert "largest top1_pct" in _said(capsys, NOT_YET)


def test_ks_distance(capsys, sweep):
    """The errors' EDFs are furthest apart between 60 and 67 % error (half the variants of one space, none or a
    quarter of the other's): 0.5 passes, 0.25 does not."""
    analysis, _ = sweep
    assert accuracy.ks_distance(0.5, analysis) is True
    _said(capsys, CORRECT)
    assert accuracy.ks_distance(0.25, analysis) is False
    assert "largest vertical gap" in _said(capsys, NOT_YET)


# Lesson 6: energy budgets, on hand-made result rows.

def _row(model: str, batch: int, seconds: float, top1: float, gops: float, source: str = "modelled",
         watts: float = 15.0) -> results.Row:
    """A measured row: time per image, power from `source`, energy as the main job records it, the paper's numbers."""
    return results.Row(model=model, display_name=model, family="resnet", batch_size=batch, resolution=224,
                       precision="float32", device="test", time_per_image_s=seconds, images_per_s=1 / seconds,
                       power_source=source, power_w=watts, energy_per_image_j=watts * seconds,
                       top1_percent_paper=top1, paper_ops_per_image=int(gops * 1e9))


@pytest.fixture
def rows():
    """Three networks at batch 1 and 4 with modelled power: energies 0.3 to 1.2 J per image."""
    return [_row("small", 1, 0.02, 60.0, 1.0), _row("small", 4, 0.03, 60.0, 1.0),
            _row("medium", 1, 0.04, 68.0, 2.0), _row("medium", 4, 0.035, 68.0, 2.0),
            _row("large", 1, 0.08, 76.0, 8.0), _row("large", 4, 0.07, 76.0, 8.0)]


def test_power_source(capsys, rows):
    """Modelled rows are "modelled" (any case and spacing); a meter's rows are "measured"."""
    assert energy.power_source(" Modelled", rows) is True
    _said(capsys, CORRECT)
    assert energy.power_source("measured", rows) is False
    assert "power_source" in _said(capsys, NOT_YET)
    metered = [_row("small", 1, 0.02, 60.0, 1.0, source="rapl", watts=30.0)]
    assert energy.power_source("measured", metered) is True
    _said(capsys, CORRECT)


def test_energy_per_image_mj(capsys, rows):
    """15 W for 20 ms is 300 mJ; the same in joules gets the unit as its hint, a wrong number the formula."""
    assert energy.energy_per_image_mj(300.0, rows[0]) is True
    _said(capsys, CORRECT)
    assert energy.energy_per_image_mj(0.3, rows[0]) is False
    assert "in joules" in _said(capsys, NOT_YET)
    assert energy.energy_per_image_mj(20.0, rows[0]) is False
    assert "power_w x time_per_image_s" in _said(capsys, NOT_YET)


def test_best_top1_within(capsys, rows):
    """At 600 mJ per image the medium network fits (its 525 mJ at batch 4), the large one (1050) does not: 68 %."""
    assert energy.best_top1_within(68.0, rows, budget_mj=600) is True
    _said(capsys, CORRECT)
    assert energy.best_top1_within(76.0, rows, budget_mj=600) is False
    assert "most frugal batch size" in _said(capsys, NOT_YET)
    assert energy.best_top1_within(60.0, rows, budget_mj=100) is False
    assert "no network" in _said(capsys, NOT_YET)
