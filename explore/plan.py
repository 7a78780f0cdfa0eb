"""The sample step: which variants a sweep covers, drawn once and kept in `plan.json` beside its results.

A plan is made from `PlanSettings` (the spaces, knob ranges, sampler, seed and constraints): for
each space a random sample, a grid, or (for a scaling series, written `base/rule`, e.g.
`resnet18/width`) the whole series. A variant drawn from several spaces is planned once and lists
them all. The plan is deterministic, so shards that make it at once write the same file; a
directory holding a plan of other settings is refused, so results of two sweeps never mix. A plan
of more than `max_variants` variants is refused before any is costed.
"""

import dataclasses
import json
import math
import os
from typing import Optional

from core import files
from core.errors import UserError
from explore import sample as sample_lib
from explore import space as space_lib
from measure import predict

FORMAT = 1
PLAN_NAME = "plan.json"
SAMPLERS = ("random", "grid")
SCALING_SEPARATOR = "/"
MAX_VARIANTS = 2000  # the most variants a plan may cost unless --max_variants raises it


@dataclasses.dataclass(frozen=True)
class PlanSettings:
    """What decides a sweep's variants, and the most variants the sample step may cost to find them.

    A field with a metadata help has a flag of `python -m explore` made from it (core.cli.define_flags).
    """

    spaces: tuple[str, ...]  # registered spaces (explore.space.SPACES) or scaling series "base/rule"
    ranges: tuple[tuple[str, float, float], ...] = ()  # (knob, low, high) narrowing every space that has it
    sampler: str = dataclasses.field(default="random", metadata={
        "help": "random (seeded draws) or grid.", "choices": SAMPLERS})
    samples: int = dataclasses.field(default=8, metadata={
        "help": "Variants drawn per space by the random sampler.", "lower_bound": 1})
    grid_points: int = dataclasses.field(default=2, metadata={
        "help": "Values per knob of the grid sampler (at most the knob's own count).", "lower_bound": 1})
    seed: int = dataclasses.field(default=0, metadata={"help": "Seed of the random sampler.", "lower_bound": 0})
    constraints: tuple[tuple[str, Optional[float], Optional[float]], ...] = ()  # (metric, low, high)
    predictor: Optional[str] = dataclasses.field(default=None, metadata={
        "help": "Predictor file (python -m measure.predict) of this device: record every sampled variant's predicted "
                "latency (and energy) at batch 1; constraints may name latency_ms and energy_mj."})
    predicted_front: bool = dataclasses.field(default=False, metadata={
        "help": "With --predictor: plan only the sampled variants on the predicted front (none has more FLOPs at a "
                "lower predicted latency), so that only those are timed and trained."})
    # A guard, not a choice of variants: plan.json leaves it out, so raising it keeps a stored plan valid.
    max_variants: int = dataclasses.field(default=MAX_VARIANTS, compare=False, metadata={
        "help": "Most variants the sample step may cost (the grid's size, or --samples times the spaces); raise it "
                "for larger plans.", "lower_bound": 1})


@dataclasses.dataclass(frozen=True)
class PlannedVariant:
    """One variant of the plan: its canonical string, the spaces it was drawn from, configuration, costs."""

    variant: str
    spaces: tuple[str, ...]
    config: dict
    costs: dict


def restrict(space: space_lib.Space, ranges) -> space_lib.Space:
    """The space with each named knob's range replaced by (low, high), its scale and quantum kept."""
    knobs = []
    for knob in space.knobs:
        bounds = [(low, high) for name, low, high in ranges if name == knob.name]
        knobs.append(dataclasses.replace(knob, low=bounds[-1][0], high=bounds[-1][1]) if bounds else knob)
    return space_lib.Space(space.name, space.network, tuple(knobs))


def _grid_points(space: space_lib.Space, grid_points: int) -> dict[str, int]:
    """Grid points per knob: a knob narrowed to fewer values than the grid asks for takes all it has."""
    return {k.name: min(grid_points, k.count) for k in space.knobs}


def _constraints(settings: PlanSettings) -> dict:
    """The constraints as random_sample takes them, {metric: (low, high)}."""
    return {metric: (low, high) for metric, low, high in settings.constraints}


def _space_samples(name: str, settings: PlanSettings, predictor, progress=None) -> list[sample_lib.Sample]:
    """The samples of one named space or scaling series under the settings."""
    if SCALING_SEPARATOR in name:
        base, _, rule = name.partition(SCALING_SEPARATOR)
        return list(sample_lib.series(base, rule, predictor=predictor).values())
    space = restrict(space_lib.space(name), settings.ranges)
    if settings.sampler == "grid":
        return sample_lib.grid(space, _grid_points(space, settings.grid_points), progress=progress,
                               predictor=predictor)
    return sample_lib.random_sample(space, settings.samples, seed=settings.seed, constraints=_constraints(settings),
                                    progress=progress, predictor=predictor)


def load_predictor(settings: PlanSettings) -> Optional[predict.Predictor]:
    """The settings' predictor, refused in one line unless it was fitted on this device and runtime."""
    return None if settings.predictor is None else predict.load_here(settings.predictor, precision=None)


def predicted_front(planned: list["PlannedVariant"]) -> list["PlannedVariant"]:
    """The variants no other beats on both counts: at least as many FLOPs for a lower predicted latency."""
    front, most_flops = set(), -1
    for p in sorted(planned, key=lambda p: (p.costs["predicted_latency_ms_b1"], -p.costs["flops"])):
        if p.costs["flops"] > most_flops:
            front.add(p.variant)
            most_flops = p.costs["flops"]
    return [p for p in planned if p.variant in front]


def sizes(settings: PlanSettings) -> dict[str, int]:
    """The most variants the sample step costs per space, counted without building any (series: their steps)."""
    counted = {}
    for name in settings.spaces:
        if SCALING_SEPARATOR in name:
            rule = name.partition(SCALING_SEPARATOR)[2]
            counted[name] = len(space_lib.PHIS if rule == "compound" else space_lib.MULTIPLIERS)
        elif settings.sampler == "grid":
            space = restrict(space_lib.space(name), settings.ranges)
            counted[name] = sample_lib.grid_size(space, _grid_points(space, settings.grid_points))
        else:
            counted[name] = settings.samples
    return counted


def check_size(settings: PlanSettings) -> None:
    """Refuses a plan of more than settings.max_variants variants, naming the count and how to lower or allow it."""
    counted = sizes(settings)
    total = sum(counted.values())
    if total <= settings.max_variants:
        return
    each = ", ".join(f"{name}: {count:,}" for name, count in counted.items())
    lower = ("lower --grid_points or narrow --ranges" if settings.sampler == "grid" else "ask for fewer --samples")
    raise UserError(f"the {settings.sampler} sampler would cost {total:,} variants ({each}), more than "
                    f"--max_variants={settings.max_variants:,}; {lower}, or raise --max_variants to {total} "
                    "if that many is meant")


def check(settings: PlanSettings) -> Optional[predict.Predictor]:
    """Refuses settings no plan can come from, in one line naming the setting (UserError); returns the predictor."""
    if not settings.spaces:
        raise UserError("no spaces to explore: give --spaces, e.g. --spaces=resnet_basic,resnet18/width")
    if settings.sampler not in SAMPLERS:
        raise UserError(f"unknown sampler {settings.sampler!r}; choose one of: {', '.join(SAMPLERS)}")
    for name in settings.spaces:
        if SCALING_SEPARATOR in name:
            space_lib.scaling(*name.split(SCALING_SEPARATOR, 1))  # UserError on an unknown network or rule
    names = knob_names(settings.spaces)
    for knob, low, high in settings.ranges:
        if knob not in names:
            raise UserError(f"--ranges names {knob!r}, a knob none of the spaces {', '.join(settings.spaces)} "
                            f"varies; their knobs are: {', '.join(sorted(names)) or '(none)'}")
        _check_range(settings.spaces, knob, low, high)
    if settings.predicted_front and settings.predictor is None:
        raise UserError("--predicted_front keeps the variants on the predicted front: give --predictor=FILE too")
    predictor = load_predictor(settings)
    sample_lib.check_constraints(_constraints(settings), predictor)
    for name in settings.spaces:
        if SCALING_SEPARATOR not in name:
            space = restrict(space_lib.space(name), settings.ranges)  # UserError on a range holding no value
            if settings.sampler == "random":
                sample_lib.check_count(space, settings.samples)
    return predictor


def _check_range(spaces, knob: str, low, high) -> None:
    """Refuses a range that is not finite, reversed, or reaches outside any named space's own range for the knob."""
    for end in (low, high):
        if isinstance(end, bool) or not isinstance(end, (int, float)) or not math.isfinite(end):
            raise UserError(f"--ranges {knob}: {end!r} is not a finite number; give finite ends, e.g. width=0.25:1")
    if not low <= high:
        raise UserError(f"--ranges {knob}={low:g}:{high:g}: low is above high; swap them")
    for name in spaces:
        own = None if SCALING_SEPARATOR in name else space_lib.space(name).knob(knob)
        # Ranges narrow a space: reaching outside it would plan variants the space was never meant to hold.
        if own is not None and not own.low <= low <= high <= own.high:
            raise UserError(f"--ranges {knob}={low:g}:{high:g} reaches outside {name}'s own {knob} range "
                            f"{own.low:g}..{own.high:g}; ranges only narrow a space: keep within it")


def knob_names(spaces) -> set[str]:
    """The knobs the named spaces vary (scaling series vary none a range could narrow); UserError if unknown."""
    return {knob.name for name in spaces if SCALING_SEPARATOR not in name for knob in space_lib.space(name).knobs}


def make(settings: PlanSettings, progress=print) -> list[PlannedVariant]:
    """Every variant of the settings' spaces, each once, with its configuration and costs at batch 1."""
    predictor = check(settings)
    check_size(settings)
    planned: dict[str, PlannedVariant] = {}
    for name in settings.spaces:
        drawn = _space_samples(name, settings, predictor, progress)
        progress(f"sample: {name}: {len(drawn)} variants")
        for s in drawn:
            if s.variant in planned:
                old = planned[s.variant]
                planned[s.variant] = dataclasses.replace(old, spaces=tuple(dict.fromkeys((*old.spaces, name))))
            else:
                planned[s.variant] = PlannedVariant(s.variant, (name,), _jsonable(s.config), dict(s.costs))
    if settings.predicted_front:
        front = predicted_front(list(planned.values()))
        progress(f"sample: {len(front)} of {len(planned)} variants on the predicted front")
        return front
    return list(planned.values())


def _jsonable(config: dict) -> dict:
    """A realised configuration with tuples as lists, as JSON gives it back."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}


def _settings_json(settings: PlanSettings) -> dict:
    """The settings that decide the variants as JSON gives them back (tuples as lists), the limit left out."""
    decided = {field.name: getattr(settings, field.name) for field in dataclasses.fields(settings) if field.compare}
    return json.loads(json.dumps(decided))


def load_or_make(settings: PlanSettings, out_dir: str, progress=print) -> list[PlannedVariant]:
    """The plan in out_dir when it was made from these settings, else made and written; UserError if other."""
    path = os.path.join(out_dir, PLAN_NAME)
    stored = read(out_dir) if os.path.exists(path) else None
    wanted = _settings_json(settings)
    if stored is not None:
        stored_settings, planned = stored
        if stored_settings != wanted:
            changed = sorted(k for k in stored_settings if stored_settings[k] != wanted.get(k))
            raise UserError(f"{path} holds a sweep planned with other settings ({', '.join(changed)}); its results "
                            "would mix with this one's: choose another --out, or pass --overwrite to start afresh")
        progress(f"sample: {len(planned)} variants planned in {path}")
        return planned
    planned = make(settings, progress)
    files.atomic_write(path, json.dumps({"format": FORMAT, "settings": wanted,
                                         "variants": [dataclasses.asdict(p) for p in planned]}, indent=1) + "\n")
    progress(f"sample: wrote {len(planned)} variants to {path}")
    return planned


def _parse(data) -> tuple[dict, list[PlannedVariant]]:
    """The settings and variants of a decoded plan (KeyError or TypeError on another shape)."""
    if data["format"] != FORMAT:
        raise files.Malformed(f"format {data['format']!r}, not {FORMAT}: run the sample step again into another --out")
    planned = [PlannedVariant(v["variant"], tuple(v["spaces"]), dict(v["config"]), dict(v["costs"]))
               for v in data["variants"]]
    return dict(data["settings"]), planned


def read(out_dir: str) -> tuple[dict, list[PlannedVariant]]:
    """The settings and variants of the plan in out_dir; UserError naming the file when it is missing or bad."""
    path = os.path.join(out_dir, PLAN_NAME)
    try:
        return files.read_json(path, "a plan this program wrote", "move it away or pass --overwrite", check=_parse)
    except FileNotFoundError:
        raise UserError(f"{path} does not exist: run the sample step first (--steps=sample)") from None
