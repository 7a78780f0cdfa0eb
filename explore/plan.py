"""The sample step: which variants a sweep covers, drawn once and kept in `plan.json` beside its results.

A plan is made from `PlanSettings` (the spaces, knob ranges, sampler, seed and constraints): for
each space a random sample, a grid, or (for a scaling series, written `base/rule`, e.g.
`resnet18/width`) the whole series. A variant drawn from several spaces is planned once and lists
them all. The plan is deterministic, so shards that make it at once write the same file; a
directory holding a plan of other settings is refused, so results of two sweeps never mix.
"""

import dataclasses
import json
import os
from typing import Optional

from explore import sample as sample_lib
from explore import space as space_lib
from measure import files
from models.errors import UserError

FORMAT = 1
PLAN_NAME = "plan.json"
SAMPLERS = ("random", "grid")
SCALING_SEPARATOR = "/"


@dataclasses.dataclass(frozen=True)
class PlanSettings:
    """What decides a sweep's variants."""

    spaces: tuple[str, ...]  # registered spaces (explore.space.SPACES) or scaling series "base/rule"
    ranges: tuple[tuple[str, float, float], ...] = ()  # (knob, low, high) narrowing every space that has it
    sampler: str = "random"
    samples: int = 8  # per space, random sampler
    grid_points: int = 2  # per knob, grid sampler
    seed: int = 0
    constraints: tuple[tuple[str, Optional[float], Optional[float]], ...] = ()  # (metric, low, high)


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


def _space_samples(name: str, settings: PlanSettings) -> list[sample_lib.Sample]:
    """The samples of one named space or scaling series under the settings."""
    if SCALING_SEPARATOR in name:
        base, _, rule = name.partition(SCALING_SEPARATOR)
        return list(sample_lib.series(base, rule).values())
    space = restrict(space_lib.space(name), settings.ranges)
    if settings.sampler == "grid":
        # A knob narrowed to fewer values than the grid asks for takes all it has.
        return sample_lib.grid(space, {k.name: min(settings.grid_points, k.count) for k in space.knobs})
    constraints = {metric: (low, high) for metric, low, high in settings.constraints}
    return sample_lib.random_sample(space, settings.samples, seed=settings.seed, constraints=constraints)


def check(settings: PlanSettings) -> None:
    """Refuses settings no plan can come from, in one line naming the setting (UserError)."""
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
        if not low <= high:
            raise UserError(f"--ranges {knob}={low}:{high}: low is above high; swap them")


def knob_names(spaces) -> set[str]:
    """The knobs the named spaces vary (scaling series vary none a range could narrow); UserError if unknown."""
    return {knob.name for name in spaces if SCALING_SEPARATOR not in name for knob in space_lib.space(name).knobs}


def make(settings: PlanSettings, progress=print) -> list[PlannedVariant]:
    """Every variant of the settings' spaces, each once, with its configuration and costs at batch 1."""
    check(settings)
    planned: dict[str, PlannedVariant] = {}
    for name in settings.spaces:
        drawn = _space_samples(name, settings)
        progress(f"sample: {name}: {len(drawn)} variants")
        for s in drawn:
            if s.variant in planned:
                old = planned[s.variant]
                planned[s.variant] = dataclasses.replace(old, spaces=tuple(dict.fromkeys((*old.spaces, name))))
            else:
                planned[s.variant] = PlannedVariant(s.variant, (name,), _jsonable(s.config), dict(s.costs))
    return list(planned.values())


def _jsonable(config: dict) -> dict:
    """A realised configuration with tuples as lists, as JSON gives it back."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}


def _settings_json(settings: PlanSettings) -> dict:
    """The settings as JSON gives them back (tuples as lists)."""
    return json.loads(json.dumps(dataclasses.asdict(settings)))


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


def read(out_dir: str) -> tuple[dict, list[PlannedVariant]]:
    """The settings and variants of the plan in out_dir; UserError naming the file when it is missing or bad."""
    path = os.path.join(out_dir, PLAN_NAME)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if data["format"] != FORMAT:
            raise UserError(f"{path} is format {data['format']!r}, not {FORMAT}; run the sample step again "
                            "into another --out")
        planned = [PlannedVariant(v["variant"], tuple(v["spaces"]), dict(v["config"]), dict(v["costs"]))
                   for v in data["variants"]]
        return dict(data["settings"]), planned
    except FileNotFoundError:
        raise UserError(f"{path} does not exist: run the sample step first (--steps=sample)") from None
    except (ValueError, KeyError, TypeError) as error:
        raise UserError(f"{path} is not a plan this program wrote ({type(error).__name__}: {error}); move it "
                        "away or pass --overwrite") from None
