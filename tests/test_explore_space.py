"""Design spaces and their samples: seeding, ranges and quanta, constraints, grids, scaling series, errors."""

import functools
import math

import numpy as np
import pytest

from core.errors import UserError
from explore import sample, space
from explore.space import Knob, Space
from measure import cost
from models import variants

# Small spaces at low resolution keep the cost counting (a fraction of a second per variant) fast.
TINY = Space("tiny", "resnet18", (Knob("width", 0.25, 1.0, scale="log", quantum=0.125), Knob("depth_1", 1, 3),
                                  Knob("resolution", 32, 64, quantum=32)))  # 7 * 3 * 2 = 42 points
PAIR = Space("pair", "resnet18", (Knob("resolution", 32, 64, quantum=32),))  # 2 points


@functools.cache
def _drawn(seed: int) -> tuple:
    """Five seeded samples of TINY, counted once per seed."""
    return tuple(sample.random_sample(TINY, 5, seed=seed))


def _on_quantum(value, quantum) -> bool:
    """Whether `value` is a whole multiple of `quantum`."""
    return math.isclose(value / quantum, round(value / quantum), abs_tol=1e-9)


def test_same_seed_same_variants_different_seeds_differ():
    first = [s.variant for s in _drawn(0)]
    assert first == [s.variant for s in sample.random_sample(TINY, 5, seed=0)]
    assert first != [s.variant for s in _drawn(1)]
    assert len(set(first)) == 5


def test_samples_inside_ranges_and_on_quantum():
    for s in _drawn(0) + _drawn(1):
        assert 0.25 <= s.config["width"] <= 1.0 and _on_quantum(s.config["width"], 0.125)
        assert 1 <= s.config["depths"][0] <= 3 and s.config["depths"][1:] == (2, 2, 2)  # other stages default
        assert s.config["resolution"] in (32, 64)
        assert variants.variant(s.variant) == TINY.variant({"width": s.config["width"],
                                                            "depth_1": s.config["depths"][0],
                                                            "resolution": s.config["resolution"]})


@pytest.mark.parametrize("name", list(space.SPACES))
def test_registered_space_draws_inside_ranges_and_on_quantum(name):
    rng = np.random.default_rng(0)
    for knob in space.space(name).knobs:
        drawn = {knob.draw(rng) for _ in range(300)}
        assert all(knob.low <= v <= knob.high and _on_quantum(v, knob.quantum) for v in drawn), knob
        assert drawn <= set(knob.values()) and len(drawn) > 1


def test_registered_spaces_have_the_requested_ranges():
    basic = space.space("resnet_basic")
    assert (basic.network, [k.name for k in basic.knobs]) == (
        "resnet18", ["width", "depth_1", "depth_2", "depth_3", "depth_4", "resolution"])
    assert basic.knob("width").values()[:3] == [0.125, 0.25, 0.375] and basic.knob("width").values()[-1] == 2.0
    assert basic.knob("depth_4").values() == list(range(1, 9))
    assert basic.knob("resolution").values() == list(range(32, 321, 32))
    assert space.space("resnet_bottleneck").network == "resnet50"
    assert len([k for k in space.space("vgg").knobs if k.name.startswith("depth_")]) == 5
    assert space.space("enet").knob("width").scale == "log"


def test_pow2_and_log_knobs_quantise():
    assert Knob("channels", 8, 100, scale="pow2").values() == [8, 16, 32, 64]
    assert Knob("width", 0.25, 2.0, scale="log", quantum=0.125).quantise(0.3) == 0.25
    assert Knob("resolution", 32, 320, quantum=32).quantise(1000) == 320


def test_constraints_respected():
    flops = sorted(s.costs["flops"] for s in _drawn(0))
    bounds = (flops[0], flops[2])
    constrained = sample.random_sample(TINY, 3, seed=2, constraints={"flops": bounds})
    assert all(bounds[0] <= s.costs["flops"] <= bounds[1] for s in constrained)
    assert len({s.variant for s in constrained}) == 3


def test_impossible_constraints_user_error_naming_them():
    with pytest.raises(UserError, match=r"flops in \[0, 1\].*impossible or too tight") as error:
        sample.random_sample(PAIR, 1, seed=0, constraints={"flops": (0, 1)})
    assert "\n" not in str(error.value)


def test_duplicates_rejected_more_samples_than_points_is_user_error():
    both = sample.random_sample(PAIR, 2, seed=0)
    assert sorted(s.config["resolution"] for s in both) == [32, 64]
    with pytest.raises(UserError, match="only 2 distinct points"):
        sample.random_sample(PAIR, 3, seed=0)


def test_grid_size_is_product_all_distinct_costs_match_count_model():
    lines = []
    samples = sample.grid(TINY, {"width": 2, "depth_1": 2, "resolution": 2}, progress=lines.append)
    assert len(samples) == 8 and len({s.variant for s in samples}) == 8
    assert sample.grid_size(TINY, {"width": 2, "depth_1": 2, "resolution": 2}) == 8 == sample.grid_size(TINY, 2)
    assert lines == []  # a small grid is costed without a line per variant
    assert {s.config["width"] for s in samples} == {0.25, 1.0}
    assert {s.config["depths"][0] for s in samples} == {1, 3}
    one = samples[-1]
    v = variants.variant(one.variant)
    counted = cost.count_model(v.name, batch_size=1, resolution=v.resolution, **dict(v.knobs))
    assert one.costs == {"flops": counted.ops("flops"), "macs": counted.ops("macs"), "params": counted.params,
                         "activations": counted.total.activations}


def test_grid_points_spread_distinct_after_quantising():
    # Log-spaced 1..8 quantises to 1, 1, 2, 3, 4, 6, 8: the grid spreads over the allowed values instead.
    values = sample._grid_values(Knob("depth", 1, 8, scale="log"), 7)
    assert len(set(values)) == 7 and values == sorted(values) and (values[0], values[-1]) == (1, 8)
    assert sample._grid_values(Knob("depth", 1, 8, scale="log"), 4) == [1, 2, 4, 8]
    with pytest.raises(UserError, match="only 3 distinct values"):
        sample.grid(TINY, {"depth_1": 4})


def _ticks(total: int, seconds_each: float) -> list[str]:
    """The progress lines of costing `total` variants that take `seconds_each` on a fake clock."""
    lines, now = [], [0.0]
    ticker = sample._Ticker(lines.append, "resnet_basic", total, clock=lambda: now[0])
    for done in range(1, total + 1):
        now[0] += seconds_each
        ticker.tick(done)
    return lines


def test_costing_progress_every_hundred_variants_or_every_few_seconds():
    fast = _ticks(1200, 0.03)
    assert len(fast) == 11 and fast[2] == "sample: resnet_basic: 300/1200 variants costed (left: 0m27s)"
    assert fast[-1].startswith("sample: resnet_basic: 1100/1200 ")  # the last variant gets no line of its own
    slow = _ticks(10, 2.0)  # few variants, slow ones: a line every few seconds rather than every 100
    assert slow == [f"sample: resnet_basic: {n}/10 variants costed (left: 0m{2 * (10 - n):02d}s)" for n in (3, 6, 9)]
    assert _ticks(16, 0.03) == []


def test_width_series_params_increase():
    series = sample.series("resnet18", "width", steps=(0.5, 1.0, 1.5))
    assert [s.config["width"] for s in series.values()] == [0.5, 1.0, 1.5]
    params = [s.costs["params"] for s in series.values()]
    assert params == sorted(params) and len(set(params)) == 3


def test_depth_series_depths_increase_rounding_up():
    series = space.scaling("resnet50", "depth")
    depths = [variant.module().depths for variant in series.values()]
    assert depths[0] == (2, 2, 3, 2) and depths[-1] == (6, 8, 12, 6)  # (3, 4, 6, 3) * 0.5 rounds up
    for smaller, larger in zip(depths[:-1], depths[1:], strict=True):
        assert smaller != larger and all(a <= b for a, b in zip(smaller, larger, strict=True))
    assert space.scaling("resnet18", "depth", steps=(0.1,))[0.1].module().depths == (1, 1, 1, 1)


def test_resolution_series_resolution_grows_params_fixed():
    series = sample.series("resnet18", "resolution", steps=(0.5, 1.0))
    assert [s.config["resolution"] for s in series.values()] == [112, 224]
    assert len({s.costs["params"] for s in series.values()}) == 1
    assert series[0.5].costs["flops"] < series[1.0].costs["flops"]
    assert [v.input_shape()[1] for v in space.scaling("alexnet", "resolution").values()] == [
        112, 168, 224, 280, 344, 456]


def test_compound_series_grows_width_depth_resolution():
    series = sample.series("resnet18", "compound", steps=(-2, 2))
    small, large = series[-2], series[2]
    assert small.config["width"] < 1 < large.config["width"]
    assert small.config["resolution"] < 224 < large.config["resolution"]
    assert sum(small.config["depths"]) < sum(large.config["depths"])
    assert small.costs["flops"] < large.costs["flops"] and small.costs["params"] < large.costs["params"]
    assert large.variant == "resnet18:depths=3-3-3-3,width=1.21,resolution=296"


@pytest.mark.parametrize("call, match", [
    (lambda: space.space("regnet"), "unknown space 'regnet'; choose one of: resnet_basic"),
    (lambda: Space("s", "resnet18", (Knob("height", 1, 2),)), "no knob 'height'; choose from: width"),
    (lambda: Space("s", "resnet18", (Knob("depth_5", 1, 2),)), "no knob 'depth_5'.*depth_4, resolution"),
    (lambda: Space("s", "resnet18", ()), "has no knobs"),
    (lambda: Knob("width", 2.0, 0.5), "low 2.0 is above high 0.5"),
    (lambda: Knob("width", 0.3, 0.35, quantum=0.125), "no multiple of 0.125 lies in 0.3..0.35"),
    (lambda: Knob("width", 0.5, 1, scale="cubic"), "unknown scale 'cubic'; choose one of: uniform, log, pow2"),
    (lambda: Space("s", "resnet18", (Knob("resolution", 16, 64, quantum=16),)), "at least 32"),
    (lambda: Space("s", "resnet18", (Knob("resolution", 32, 8192, quantum=32),)), "at most 4096"),
    (lambda: Space("s", "nosuchnet", (Knob("width", 1, 2),)), "unknown model 'nosuchnet'"),
    (lambda: space.scaling("alexnet", "depth"), "alexnet has no depths knob, so it cannot be depth-scaled"),
    (lambda: space.scaling("alexnet", "compound"), "cannot be compound-scaled"),
    (lambda: space.scaling("resnet18", "height"), "unknown scaling rule 'height'; choose one of: width"),
    (lambda: sample.random_sample(PAIR, 1, constraints={"latency": (0, 1)}), "unknown constraint 'latency'"),
    (lambda: sample.random_sample(PAIR, 1, constraints={"flops": (2, 1)}), "low 2 is above high 1"),
    (lambda: sample.random_sample(PAIR, 1, constraints={"flops": (math.nan, None)}),
     "constraint flops: nan is not a finite number"),
    (lambda: sample.random_sample(PAIR, 1, constraints={"params": (None, math.inf)}),
     "constraint params: inf is not a finite number"),
    (lambda: sample.grid_size(TINY, {"depth_1": 4}), "only 3 distinct values"),
    (lambda: sample.grid(TINY, {"height": 2}), "no knob height"),
])
def test_bad_input_one_line_user_error(call, match):
    with pytest.raises(UserError, match=match) as error:
        call()
    assert "\n" not in str(error.value)


def test_realised_configuration_has_the_rounded_channels_of_each_stage():
    variant = variants.variant("resnet18:depths=1-2-1-1,width=0.3,resolution=32")
    # Counted without the memo, then twice through it (the second time every stage is answered from it).
    for counted in (cost.count_variant(variant), sample.count_shared(variant), sample.count_shared(variant)):
        config = sample.realised(variant, counted)
        assert config["depths"] == (1, 2, 1, 1) and config["resolution"] == 32
        # 64 * 0.3 = 19.2 rounds to 24 (a multiple of 8 within 10 %); 128 * 0.3 = 38.4 to 40, and so on.
        assert config["channels"] == {"stem_conv": 24, "stem_bn": 24, "stage1": 24, "stage2": 40, "stage3": 80,
                                      "stage4": 152, "fc": 1000}


def test_a_few_random_samples_reach_both_ends_of_every_knob():
    # The first draws are a Latin hypercube: with five samples each knob's range is cut in five
    # parts and each drawn once, so the narrowest and the widest part are always among them.
    for seed in range(3):
        drawn = _drawn(seed)
        widths = [s.config["width"] for s in drawn]
        depths = [s.config["depths"][0] for s in drawn]
        assert min(widths) <= 0.375 and max(widths) >= 0.75, widths  # log parts: 0.25..0.33.. and 0.76..1
        assert min(depths) == 1 and max(depths) == 3, depths  # parts 1..1.4 and 2.6..3
        assert {s.config["resolution"] for s in drawn} == {32, 64}
