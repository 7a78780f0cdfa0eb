"""Design spaces as plain data (pycls RegNet-style): a base network and the knobs a search varies.

A `Space` names a registered network and a tuple of `Knob`s. A knob is a numeric network knob
(`width`), `resolution` (the input side in pixels) or `depth_<i>`, the depth of stage i (from 1)
of the network's `depths`; stages no knob names keep their defaults. Each knob has a range, a
scale draws are spread on ("uniform", "log", or "pow2": powers of two only) and a quantum every
value is a multiple of (pycls quantises widths the same way). `SPACES` holds the named families;
`scaling(base, rule)` gives the width, depth, resolution or compound (EfficientNet) series of any
registered network.
"""

import dataclasses
import math

import models
from core.errors import UserError
from models import variants

RESOLUTION = "resolution"
DEPTH_PREFIX = "depth_"
SCALES = ("uniform", "log", "pow2")
RULES = ("width", "depth", "resolution", "compound")
MULTIPLIERS = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0)  # the width, depth and resolution series
PHIS = (-2, -1, 0, 1, 2)  # the compound series' exponents
COMPOUND = {"depth": 1.2, "width": 1.1, "resolution": 1.15}  # EfficientNet's alpha, beta, gamma
SCALED_RESOLUTION_QUANTUM = 8  # scaled resolutions are rounded to a multiple of this
SCALED_WIDTH_DIGITS = 4  # scaled widths are rounded to this many decimals (clean variant strings)


def _on_quantum(value: float, quantum: float) -> float | int:
    """`value` (a multiple of `quantum`) as an exact-looking number: an int for integer quanta."""
    return int(round(value)) if float(quantum).is_integer() else round(value, 10)


@dataclasses.dataclass(frozen=True)
class Knob:
    """One dimension of a space: a knob name, its range, the scale draws use and the quantum values are on."""

    name: str
    low: float
    high: float
    scale: str = "uniform"
    quantum: float = 1

    def __post_init__(self):
        """Checks the scale, the range and that some multiple of the quantum lies inside it."""
        if self.scale not in SCALES:
            raise UserError(f"knob {self.name}: unknown scale {self.scale!r}; choose one of: {', '.join(SCALES)}")
        for field in ("low", "high", "quantum"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise UserError(f"knob {self.name}: {field} must be a finite number; got {value!r}")
        if self.quantum <= 0:
            raise UserError(f"knob {self.name}: quantum must be positive; got {self.quantum!r}")
        if self.low > self.high:
            raise UserError(f"knob {self.name}: low {self.low} is above high {self.high}; swap them")
        if self.scale in ("log", "pow2") and self.low <= 0:
            raise UserError(f"knob {self.name}: a {self.scale} scale needs a positive low; got {self.low}")
        if not self.count:
            raise UserError(f"knob {self.name}: no {'power of two ' if self.scale == 'pow2' else ''}multiple of "
                            f"{self.quantum} lies in {self.low}..{self.high}; widen the range or change the quantum")

    def _indices(self) -> range:
        """The multiples k of the quantum (value k * quantum) inside the range."""
        return range(math.ceil(self.low / self.quantum - 1e-9), math.floor(self.high / self.quantum + 1e-9) + 1)

    def values(self) -> list[float | int]:
        """Every value the knob can take, ascending (pow2: the powers of two on the quantum)."""
        if self.scale == "pow2":
            powers = range(math.ceil(math.log2(self.low) - 1e-9), math.floor(math.log2(self.high) + 1e-9) + 1)
            return [_on_quantum(2.0**p, self.quantum) for p in powers if _is_multiple(2.0**p, self.quantum)]
        return [_on_quantum(k * self.quantum, self.quantum) for k in self._indices()]

    def quantise(self, value: float) -> float | int:
        """The allowed value nearest `value` (nearest on the knob's scale for log and pow2)."""
        if self.scale == "pow2":
            return min(self.values(), key=lambda v: abs(math.log(v) - math.log(value)))
        indices = self._indices()
        below = min(max(math.floor(value / self.quantum), indices[0]), indices[-1])
        above = min(below + 1, indices[-1])
        if self.scale == "uniform":
            nearest = min((below, above), key=lambda k: abs(k * self.quantum - value))
        else:  # log: nearest in ratio; k >= 1 since low > 0 puts every allowed multiple above 0
            nearest = min((below, above), key=lambda k: abs(math.log(k * self.quantum / value)))
        return _on_quantum(nearest * self.quantum, self.quantum)

    @property
    def count(self) -> int:
        """How many values the knob can take."""
        return len(self.values()) if self.scale == "pow2" else len(self._indices())

    @property
    def first(self) -> float | int:
        """The smallest value the knob can take."""
        return self.values()[0] if self.scale == "pow2" else _on_quantum(self._indices()[0] * self.quantum,
                                                                          self.quantum)

    def spread(self, points: int) -> list[float]:
        """`points` raw values from low to high, evenly spaced on the knob's scale (before quantising)."""
        if points == 1:
            return [self.low if self.low == self.high else self._warp_inverse((self._warp(self.low) +
                                                                              self._warp(self.high)) / 2)]
        step = (self._warp(self.high) - self._warp(self.low)) / (points - 1)
        return [self._warp_inverse(self._warp(self.low) + i * step) for i in range(points)]

    def draw(self, rng, stratum: int = 0, strata: int = 1) -> float | int:
        """One quantised value drawn evenly on the knob's scale, within `stratum` of `strata` equal parts of it."""
        low, high = self._warp(self.low), self._warp(self.high)
        return self.quantise(self._warp_inverse(low + (stratum + rng.uniform()) / strata * (high - low)))

    def _warp(self, value: float) -> float:
        """The value on the scale draws are even on (itself, or its logarithm)."""
        return value if self.scale == "uniform" else math.log(value)

    def _warp_inverse(self, value: float) -> float:
        """The inverse of `_warp`."""
        return value if self.scale == "uniform" else math.exp(value)


def _is_multiple(value: float, quantum: float) -> bool:
    """Whether `value` is a whole multiple of `quantum` (to rounding)."""
    ratio = value / quantum
    return abs(ratio - round(ratio)) < 1e-9


@dataclasses.dataclass(frozen=True)
class Space:
    """A design space: a registered base network and the knobs varied around it."""

    name: str
    network: str
    knobs: tuple[Knob, ...]

    def __post_init__(self):
        """Checks the network, that it has every knob, the depth stages and the resolution floor."""
        object.__setattr__(self, "knobs", tuple(self.knobs))
        network_knobs = models.registry.knob_types(self.network)  # UserError naming the networks
        if not self.knobs:
            raise UserError(f"space {self.name!r} has no knobs; give at least one Knob")
        names = [knob.name for knob in self.knobs]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise UserError(f"space {self.name!r} names {', '.join(repeated)} twice; give each knob once")
        stages = len(models.get(self.network).depths) if "depths" in network_knobs else 0
        numeric = [k for k, kind in network_knobs.items() if kind in (int, float)]
        choices = [*numeric, *(f"{DEPTH_PREFIX}{i}" for i in range(1, stages + 1)), RESOLUTION]
        for knob in self.knobs:
            if knob.name not in choices:
                raise UserError(f"space {self.name!r}: {self.network} has no knob {knob.name!r}; "
                                f"choose from: {', '.join(choices)}")
            if knob.name.startswith(DEPTH_PREFIX) or network_knobs.get(knob.name) is int or knob.name == RESOLUTION:
                if not float(knob.quantum).is_integer() or knob.first < 1:
                    raise UserError(f"space {self.name!r}: {knob.name} takes positive integers; give it an "
                                    f"integer quantum and low >= 1")
        minimum = models.spec(self.network).min_resolution
        resolution = self.knob(RESOLUTION)
        if resolution is not None and resolution.first < minimum:
            raise UserError(f"space {self.name!r}: {self.network} needs a resolution of at least {minimum}; "
                            f"got low {resolution.low}; raise the resolution knob's low to {minimum} or more")
        if resolution is not None and resolution.high > models.registry.MAX_RESOLUTION:
            raise UserError(f"space {self.name!r}: resolutions go up to at most {models.registry.MAX_RESOLUTION}; "
                            f"got high {resolution.high}; lower the resolution knob's high")

    def knob(self, name: str) -> Knob | None:
        """The knob of that name, or None when the space does not vary it."""
        return next((knob for knob in self.knobs if knob.name == name), None)

    @property
    def size(self) -> int:
        """How many distinct configurations the space holds."""
        return math.prod(knob.count for knob in self.knobs)

    def network_knobs(self, values: dict) -> tuple[dict, int | None]:
        """The network's knob overrides (stage depths assembled into `depths`) and resolution for knob values."""
        overrides, resolution = {}, values.get(RESOLUTION)
        for name, value in values.items():
            if name.startswith(DEPTH_PREFIX):
                depths = list(overrides.get("depths", models.get(self.network).depths))
                depths[int(name[len(DEPTH_PREFIX):]) - 1] = int(value)
                overrides["depths"] = tuple(depths)
            elif name != RESOLUTION:
                overrides[name] = value
        return overrides, resolution

    def variant(self, values: dict) -> variants.Variant:
        """The canonical variant of the network at these knob values (one per knob of the space)."""
        overrides, resolution = self.network_knobs(values)
        return variants.from_knobs(self.network, resolution, **overrides)


def _family(name: str, network: str, stages: int, width=(0.125, 2.0), depth=(1, 8)) -> Space:
    """A family space: log-scaled width on 0.125, integer stage depths, resolution on 32.

    The narrowest width is the smallest the rounding allows: a 64-channel stage becomes 8 channels,
    the divisor every width rounds to.
    """
    return Space(name, network, (Knob("width", *width, scale="log", quantum=0.125),
                                 *(Knob(f"{DEPTH_PREFIX}{i}", *depth) for i in range(1, stages + 1)),
                                 Knob(RESOLUTION, 32, 320, quantum=32)))


SPACES = {
    "resnet_basic": _family("resnet_basic", "resnet18", 4),
    "resnet_bottleneck": _family("resnet_bottleneck", "resnet50", 4),
    "vgg": _family("vgg", "vgg16", 5, depth=(1, 4)),
    "enet": _family("enet", "enet", 4, depth=(1, 8)),
}


def space(name: str | Space) -> Space:
    """The registered space of that name (a Space is returned as it is); UserError lists the choices."""
    if isinstance(name, Space):
        return name
    if name not in SPACES:
        raise UserError(f"unknown space {name!r}; choose one of: {', '.join(SPACES)}")
    return SPACES[name]


def _scaled_resolution(base: str, factor: float) -> int:
    """The base network's input side times `factor`, on the scaling quantum; UserError below its minimum."""
    model_spec = models.spec(base)
    quantum = SCALED_RESOLUTION_QUANTUM
    resolution = max(quantum, round(model_spec.input_size * factor / quantum) * quantum)
    if resolution < model_spec.min_resolution:
        raise UserError(f"scaling {base}'s resolution by {factor:.3g} gives {resolution}, below its minimum "
                        f"{model_spec.min_resolution}; use larger multipliers")
    return resolution


def _scaled_depths(base: str, factor: float) -> tuple[int, ...]:
    """Each stage depth of the base network times `factor`, rounded up and never below 1."""
    return tuple(max(1, math.ceil(depth * factor - 1e-9)) for depth in models.get(base).depths)


def compound_growth() -> float:
    """The factor operations grow by per step of phi under COMPOUND: alpha x beta^2 x gamma^2 (about 1.92)."""
    return COMPOUND["depth"] * COMPOUND["width"] ** 2 * COMPOUND["resolution"] ** 2


def scaling(base: str, rule: str, steps=None) -> dict[float, variants.Variant]:
    """The scaling series of a registered network: {multiplier (phi for compound): variant}, ascending.

    width, depth and resolution multiply that knob by each of `steps` (default MULTIPLIERS);
    compound scales depth by 1.2**phi, width by 1.1**phi and resolution by 1.15**phi for each phi
    of `steps` (default PHIS). Depths round up per stage; a step whose variant equals an earlier
    one's (depth rounding) is dropped, so every variant in the series is distinct.
    """
    if rule not in RULES:
        raise UserError(f"unknown scaling rule {rule!r}; choose one of: {', '.join(RULES)}")
    network_knobs = models.registry.knob_types(base)  # UserError naming the networks
    if rule in ("depth", "compound") and "depths" not in network_knobs:
        raise UserError(f"{base} has no depths knob, so it cannot be {rule}-scaled; use width or resolution "
                        f"scaling, or a network with depths")
    if rule in ("width", "compound") and "width" not in network_knobs:
        raise UserError(f"{base} has no width knob, so it cannot be {rule}-scaled; use another rule")
    steps = tuple(sorted(steps if steps is not None else (PHIS if rule == "compound" else MULTIPLIERS)))
    if not steps or (rule != "compound" and any(not isinstance(s, (int, float)) or s <= 0 for s in steps)):
        raise UserError(f"scaling multipliers must be positive numbers; got {steps!r}")
    width = models.get(base).width if "width" in network_knobs else 1.0
    series, seen = {}, set()
    for step in steps:
        factors = ({knob: alpha**step for knob, alpha in COMPOUND.items()} if rule == "compound"
                   else {rule: step})
        overrides = {}
        if "width" in factors:
            overrides["width"] = round(width * factors["width"], SCALED_WIDTH_DIGITS)
        if "depth" in factors:
            overrides["depths"] = _scaled_depths(base, factors["depth"])
        resolution = _scaled_resolution(base, factors["resolution"]) if "resolution" in factors else None
        variant = variants.from_knobs(base, resolution, **overrides)
        if str(variant) not in seen:
            seen.add(str(variant))
            series[step] = variant
    return series
