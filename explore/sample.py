"""Samples of a design space: grids, seeded random draws under cost constraints, and scaling series.

Every `Sample` is a distinct canonical variant with its realised configuration and its costs at
batch 1 (counted abstractly by measure.cost). Random sampling redraws a quantised draw equal to
one already drawn; asking for more samples than the space has distinct points is a UserError.
"""

import dataclasses
import itertools
import math
import time
from typing import Optional

import numpy as np

import models
from core import cli, values
from core.errors import UserError
from explore import space as space_lib
from measure import cost, predict
from measure.cost import memo as cost_memo
from models import variants

METRICS = ("flops", "macs", "params", "activations")
# Constraints on a predictor's figures at batch 1 (measure.predict), by the cost key that holds them.
PREDICTED = {"latency_ms": "predicted_latency_ms_b1", "energy_mj": "predicted_energy_mj_b1"}
CONSTRAINABLE = METRICS + tuple(PREDICTED)
# The keys `costs` adds with a predictor: its latency per image at batch 1, the interval's ends, and energy.
PREDICTED_COSTS = ("predicted_latency_ms_b1", "predicted_latency_low_ms_b1", "predicted_latency_high_ms_b1",
                   "predicted_energy_mj_b1")
DRAWS_PER_SAMPLE = 20  # random_sample gives up after this many draws per sample asked for (plus DRAWS_SLACK)
DRAWS_SLACK = 100
PROGRESS_EVERY = 100  # variants costed between progress lines...
PROGRESS_PERIOD_S = 5.0  # ...or seconds, whichever comes first


@dataclasses.dataclass(frozen=True)
class Sample:
    """One point of a space: its canonical variant string, realised configuration and costs at batch 1."""

    variant: str
    config: dict
    costs: dict


class _Ticker:
    """Progress lines while a space is costed: every PROGRESS_EVERY variants or PROGRESS_PERIOD_S seconds."""

    def __init__(self, progress, label: str, total: int, verb: str = "costed", clock=time.monotonic):
        """Reports through `progress` (None: silent) on `total` variants of the space `label`."""
        self.progress, self.label, self.total, self.verb, self.clock = progress, label, total, verb, clock
        self.start = self.last_time = clock()
        self.last_done = 0

    def tick(self, done: int) -> None:
        """Says how many of the total are done and the time left, when a line is due (never for the last)."""
        cli.check_stop()  # between variants: a long sampling stops when asked
        if self.progress is None or not 0 < done < self.total:
            return
        now = self.clock()
        if done - self.last_done < PROGRESS_EVERY and now - self.last_time < PROGRESS_PERIOD_S:
            return
        self.last_done, self.last_time = done, now
        left = (now - self.start) / done * (self.total - done)
        self.progress(f"sample: {self.label}: {done}/{self.total} variants {self.verb} "
                      f"(left: {values.format_duration(left)})")


def count_shared(variant: variants.Variant) -> cost.Cost:
    """The variant's count at batch 1 through measure.cost's shared memo."""
    return cost.count_variant(variant, memo=cost_memo.SHARED)


def costs(counted: cost.Cost, predictor: Optional[predict.Predictor] = None) -> dict:
    """A counted variant's flops, macs, params and activations at batch 1.

    With a predictor, also its predicted latency per image at batch 1 with the interval, and energy
    where the predictor knows the power, each under a key that says predicted.
    """
    found = {"flops": counted.ops("flops"), "macs": counted.ops("macs"), "params": counted.params,
             "activations": counted.total.activations}
    if predictor is not None:
        guess = predictor.predict(predict.Layers.of(counted), 1)
        found.update(zip(PREDICTED_COSTS, (guess.latency_s * 1e3, guess.low_s * 1e3, guess.high_s * 1e3,
                                           None if guess.energy_j is None else guess.energy_j * 1e3), strict=True))
    return found


def realised(variant: variants.Variant, counted: cost.Cost, knobs=("width", "depths")) -> dict:
    """The configuration a variant builds: the named knobs' values (those it has), its resolution, and
    `channels`, the output channels of each top-level module once widths are rounded (multiples of 8),
    as its count traced them."""
    module = variant.module()
    config = {knob: getattr(module, knob) for knob in knobs if knob in models.knobs(variant.name)}
    if "depths" in config:
        config["depths"] = tuple(config["depths"])
    config[space_lib.RESOLUTION] = variant.input_shape()[1]
    config["channels"] = dict(counted.module_channels)
    return config


def _config_knobs(space: space_lib.Space) -> tuple[str, ...]:
    """The network knobs a space varies, stage depths as `depths`."""
    names = ["depths" if k.name.startswith(space_lib.DEPTH_PREFIX) else k.name for k in space.knobs]
    return tuple(dict.fromkeys(name for name in names if name != space_lib.RESOLUTION))


def sample_of(variant: variants.Variant, knobs: tuple[str, ...] = ("width", "depths"),
              predictor: Optional[predict.Predictor] = None, counted: Optional[cost.Cost] = None,
              found: Optional[dict] = None) -> Sample:
    """The Sample of a variant: what the explorer does for each one (counted, and its costs found, unless given)."""
    counted = counted if counted is not None else count_shared(variant)
    return Sample(str(variant), realised(variant, counted, knobs), found if found is not None else
                  costs(counted, predictor))


def _check_points(space: space_lib.Space, points_per_knob) -> dict[str, int]:
    """Points per knob name from an int or a {knob: points} dict; UserError on bad counts or names."""
    if isinstance(points_per_knob, dict):
        unknown = sorted(set(points_per_knob) - {k.name for k in space.knobs})
        if unknown:
            raise UserError(f"space {space.name!r} has no knob {', '.join(unknown)}; its knobs are: "
                            f"{', '.join(k.name for k in space.knobs)}")
        points = {k.name: points_per_knob.get(k.name, 1) for k in space.knobs}
    else:
        points = {k.name: points_per_knob for k in space.knobs}
    for name, count in points.items():
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
            raise UserError(f"points per knob must be a positive integer; got {count!r} for {name}")
    return points


def _check_grid_points(knob: space_lib.Knob, points: int) -> None:
    """UserError when the knob has fewer distinct values than `points`."""
    if points > knob.count:
        raise UserError(f"knob {knob.name} has only {knob.count} distinct values in {knob.low}..{knob.high}; "
                        f"ask for at most {knob.count} points")


def _grid_values(knob: space_lib.Knob, points: int) -> list:
    """`points` distinct quantised values of a knob, evenly spread on its scale; UserError if it has fewer."""
    _check_grid_points(knob, points)
    values = [knob.quantise(raw) for raw in knob.spread(points)]
    if len(set(values)) < points:  # quantising merged neighbours: spread evenly over the allowed values
        allowed = knob.values()
        values = [allowed[round(i * (len(allowed) - 1) / max(points - 1, 1))] for i in range(points)]
    return values


def grid_size(space, points_per_knob) -> int:
    """How many variants `grid` gives, counted without building any; UserError as `grid`."""
    space = space_lib.space(space)
    points = _check_points(space, points_per_knob)
    for knob in space.knobs:
        _check_grid_points(knob, points[knob.name])
    return math.prod(points.values())


def grid(space, points_per_knob, progress=None, predictor: Optional[predict.Predictor] = None) -> list[Sample]:
    """The full grid: `points_per_knob` values per knob (an int, or {knob: points}; 1 if not named), all distinct.

    `progress` (a line -> None), if given, hears how far the costing is on large grids; a
    `predictor` adds its predictions to every sample's costs.
    """
    space = space_lib.space(space)
    points = _check_points(space, points_per_knob)
    axes = [_grid_values(knob, points[knob.name]) for knob in space.knobs]
    knobs, names = _config_knobs(space), [k.name for k in space.knobs]
    ticker, samples = _Ticker(progress, space.name, math.prod(len(axis) for axis in axes)), []
    for point in itertools.product(*axes):
        samples.append(sample_of(space.variant(dict(zip(names, point, strict=True))), knobs, predictor=predictor))
        ticker.tick(len(samples))
    return samples


def check_constraints(constraints, predictor: Optional[predict.Predictor] = None) -> dict[str, tuple[float, float]]:
    """Constraints as {cost key: (low, high)} (None for an open end); UserError naming a bad one.

    The predicted metrics (PREDICTED: latency_ms, energy_mj at batch 1) need a predictor, and
    energy one that knows the power.
    """
    checked = {}
    for metric, bounds in (constraints or {}).items():
        if metric not in CONSTRAINABLE:
            raise UserError(f"unknown constraint {metric!r}; choose from: {', '.join(CONSTRAINABLE)}")
        if metric in PREDICTED and predictor is None:
            raise UserError(f"constraint {metric} is on a predicted figure: give --predictor=FILE "
                            "(python -m measure.predict fits one)")
        if metric == "energy_mj" and predictor.power_w is None:
            raise UserError("constraint energy_mj needs power, and this predictor was fitted where no meter read; "
                            "constrain latency_ms instead, or fit the predictor where a power meter reads")
        if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
            raise UserError(f"constraint {metric} must be (low, high); got {bounds!r}")
        for end in bounds:
            # NaN compares false with everything: every draw would be rejected until the draws run out.
            if end is not None and (isinstance(end, bool) or not isinstance(end, (int, float, np.number))
                                    or not math.isfinite(end)):
                raise UserError(f"constraint {metric}: {end!r} is not a finite number; give finite ends, "
                                "or None for an open end")
        low = -math.inf if bounds[0] is None else bounds[0]
        high = math.inf if bounds[1] is None else bounds[1]
        if low > high:
            raise UserError(f"constraint {metric}: low {low} is above high {high}; swap them")
        checked[PREDICTED.get(metric, metric)] = (low, high)
    return checked


def _describe(constraints: dict) -> str:
    """The constraints in words, e.g. "flops in [1e+08, 2e+08]"."""
    return ", ".join(f"{metric} in [{low:.3g}, {high:.3g}]" for metric, (low, high) in constraints.items())


def check_count(space, count: int) -> None:
    """UserError unless `count` is a positive integer no larger than the space's distinct points."""
    space = space_lib.space(space)
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise UserError(f"sample count must be a positive integer; got {count!r}")
    if count > space.size:
        raise UserError(f"space {space.name!r} has only {space.size} distinct points; ask for at most {space.size}")


def random_sample(space, count: int, seed: int = 0, constraints=None, max_draws: int | None = None,
                  progress=None, predictor: Optional[predict.Predictor] = None) -> list[Sample]:
    """`count` distinct seeded draws of a space meeting `constraints` ({metric: (low, high)}) by rejection.

    The first `count` draws are stratified (a Latin hypercube), later ones plain. The same seed
    gives the same samples. A draw equal to an earlier one (after quantising) is drawn again.
    UserError when `count` exceeds the space's distinct points, or when `max_draws` draws (default
    20 per sample plus 100) or the whole space yield too few samples meeting the constraints,
    naming them. `progress` (a line -> None), if given, hears how far the draws are. A `predictor`
    adds its predictions to the costs, and constraints may name them (see check_constraints).
    """
    space = space_lib.space(space)
    check_count(space, count)
    bounds = check_constraints(constraints, predictor)
    ticker = _Ticker(progress, space.name, count, verb="drawn")
    max_draws = DRAWS_PER_SAMPLE * count + DRAWS_SLACK if max_draws is None else max_draws
    rng, knobs, seen, samples = np.random.default_rng(seed), _config_knobs(space), set(), []
    # The first `count` draws are a Latin hypercube: each knob's range cut into `count` equal parts
    # (on its scale), each part drawn once, so a few samples still reach both ends of every knob.
    strata = {knob.name: rng.permutation(count) for knob in space.knobs}
    draws = 0
    while len(samples) < count and draws < max_draws and len(seen) < space.size:
        draws += 1
        variant = space.variant({knob.name: knob.draw(rng, strata[knob.name][draws - 1], count) if draws <= count
                                 else knob.draw(rng) for knob in space.knobs})
        if str(variant) in seen:
            continue
        seen.add(str(variant))
        counted = count_shared(variant)
        found = costs(counted, predictor)
        if all(low <= found[metric] <= high for metric, (low, high) in bounds.items()):
            samples.append(sample_of(variant, knobs, counted=counted, found=found))
        ticker.tick(len(samples))  # after rejections too: tight constraints may keep few of many costed
    if len(samples) < count and not bounds:
        raise UserError(f"space {space.name!r}: only {len(samples)} distinct of {count} samples after {draws} draws; "
                        f"ask for fewer samples or raise max_draws")
    if len(samples) < count:
        raise UserError(f"space {space.name!r}: only {len(samples)} of {count} samples meet {_describe(bounds)} "
                        f"after {draws} draws ({len(seen)} distinct); the constraints are impossible or too "
                        f"tight: loosen them or widen the space")
    return samples


def series(base: str, rule: str, steps=None, predictor: Optional[predict.Predictor] = None) -> dict[float, Sample]:
    """The scaling series of `space.scaling` as Samples, keyed by multiplier (phi for compound)."""
    return {step: sample_of(variant, ("width", "depths"), predictor=predictor)
            for step, variant in space_lib.scaling(base, rule, steps).items()}
