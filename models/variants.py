"""Variants by name: a registered network with knob overrides, written as one string.

`name[:knob=value,...]`, e.g. `resnet50`, `resnet50:width=0.5`, `resnet18:depths=1-2-2-1,width=0.75`,
`enet:width=0.5,resolution=128`. Values are read by the knob's type: numbers as written
(`0.5`, `1e-1`), integers, `true`/`false`, plain strings, and integer sequences joined by `-`
(`2-2-2-2`); `resolution` is the input side in pixels. Spaces around the whole string, the name,
knob names and values are ignored. The canonical string (`str(variant)`) lists the knobs in the
network's field order, then `resolution`, leaving out every value equal to the default, so equal
variants have equal strings: every command line accepts the string and result files key on it.
"""

import collections.abc
import dataclasses
import re
import typing

import flax.linen as nn

from core.errors import UserError
from models import registry

RESOLUTION = "resolution"
Value = float | int | bool | str | tuple[int, ...]
_INTEGER = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


@dataclasses.dataclass(frozen=True)
class Variant:
    """A registered network with the knobs it overrides, canonical: build it with `variant(text)`."""

    name: str
    knobs: tuple[tuple[str, Value], ...] = ()  # only knobs off their default, in the network's field order
    resolution: int | None = None  # None: the network's own input size

    def __str__(self) -> str:
        """The canonical string, e.g. "resnet18:depths=1-2-2-1,width=0.75"."""
        settings = [f"{knob}={_format(value)}" for knob, value in self.knobs]
        settings += [] if self.resolution is None else [f"{RESOLUTION}={self.resolution}"]
        return f"{self.name}:{','.join(settings)}" if settings else self.name

    @property
    def is_default(self) -> bool:
        """Whether this is the registered network as it is (no knob overridden, its own resolution)."""
        return not self.knobs and self.resolution is None

    @property
    def display_name(self) -> str:
        """The network's readable name, with the overrides in parentheses unless it is the default."""
        base = registry.spec(self.name).display_name
        return base if self.is_default else f"{base} ({str(self).partition(':')[2]})"

    def module(self, **extra) -> nn.Module:
        """The Flax module with this variant's knobs; `extra` knobs are added (and win over the variant's)."""
        return registry.get(self.name, **{**dict(self.knobs), **extra})

    def sized(self, resolution: int | None) -> "Variant":
        """This variant at `resolution` (--resolution) where it sets none; UserError where it sets another."""
        if resolution is None or self.resolution == resolution:
            return self
        if self.resolution is not None:
            raise UserError(f"{self} sets resolution {self.resolution} but --resolution={resolution}; leave one "
                            "of them out (or run that variant on its own)")
        return from_knobs(self.name, resolution, **dict(self.knobs))

    def input_shape(self, batch_size: int = 1) -> tuple[int, ...]:
        """The NHWC input shape at this variant's resolution (the network's own when it sets none)."""
        return registry.input_shape(self.name, batch_size, self.resolution)


def _format(value: Value) -> str:
    """A knob value as the canonical string writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, tuple):
        return "-".join(str(v) for v in value)
    return str(value)


def _parse_value(name: str, knob: str, text: str, annotation) -> Value:
    """The knob's value from its text, by its type annotation; UserError names what was expected."""
    if annotation is bool and text.lower() in ("true", "false"):
        return text.lower() == "true"
    if annotation is int and _INTEGER.fullmatch(text):
        return int(text)
    if annotation is float and _NUMBER.fullmatch(text):
        return float(text)
    if annotation is str:
        return text
    sequence = typing.get_origin(annotation) in (tuple, collections.abc.Sequence)
    items = text.split("-")
    if sequence and all(_INTEGER.fullmatch(item) for item in items):
        return tuple(int(item) for item in items)
    expected = {bool: "true or false", int: "an integer", float: "a number"}.get(
        annotation, "integers joined by '-', e.g. 2-2-2-2" if sequence else str(annotation))
    raise UserError(f"{name}: {knob} must be {expected}; got {text!r}")


def from_knobs(name: str, resolution: int | None = None, **knobs) -> Variant:
    """The canonical Variant of a network with knob values (checked by the module) and a resolution."""
    module, default = registry.get(name, **knobs), registry.get(name)  # the module's own checks run here
    changed = tuple((knob, getattr(module, knob)) for knob in registry.knobs(name)
                    if knob in knobs and getattr(module, knob) != getattr(default, knob))
    if resolution is not None:
        resolution = registry.input_shape(name, 1, resolution)[1]  # checks the range
    return Variant(name, changed, None if resolution == registry.spec(name).input_size else resolution)


def variant(text: str | Variant) -> Variant:
    """Parses a variant string ("resnet50:width=0.5"); UserError names the problem and the knobs allowed."""
    if isinstance(text, Variant):
        return text
    if not isinstance(text, str) or not text.strip():
        raise UserError(f"a variant is a network name with optional knobs, e.g. resnet50 or resnet50:width=0.5; "
                        f"got {text!r}")
    name, colon, rest = (part.strip() for part in text.strip().partition(":"))
    if not name or (not colon and "=" in name):
        raise UserError(f"variant {text.strip()!r} has no network name; write name:knob=value, e.g. "
                        "resnet50:width=0.5")
    types = registry.knob_types(name)  # UserError on an unknown network, naming the networks
    allowed, values = ", ".join([*types, RESOLUTION]), {}
    for setting in rest.split(",") if colon else ():
        knob, equals, value = (part.strip() for part in setting.partition("="))
        if not knob or not equals:
            what = repr(setting.strip()) if setting.strip() else "an empty setting"
            raise UserError(f"variant {text.strip()!r}: {what} is not knob=value; {name}'s knobs are: {allowed}")
        if knob not in types and knob != RESOLUTION:
            raise UserError(f"unknown knob {knob!r} for {name}; its knobs are: {allowed}")
        if knob in values:
            raise UserError(f"variant {text.strip()!r} sets {knob} twice; give each knob once")
        if not value:
            raise UserError(f"variant {text.strip()!r}: {knob} has no value; write {knob}=value")
        if knob == RESOLUTION and not _INTEGER.fullmatch(value):
            raise UserError(f"{name}: resolution must be an integer number of pixels; got {value!r}")
        values[knob] = int(value) if knob == RESOLUTION else _parse_value(name, knob, value, types[knob])
    try:
        return from_knobs(name, values.pop(RESOLUTION, None), **values)
    except UserError as error:  # the module's own check (or the resolution's range): say which variant
        raise UserError(f"variant {text.strip()!r}: {error}") from None


def variant_list(items: collections.abc.Sequence[str]) -> list[Variant]:
    """The variants of a comma-split list flag: a knob=value item continues the variant before it."""
    texts = []
    for item in items:
        if texts and ":" in texts[-1] and "=" in item and ":" not in item.partition("=")[0]:
            texts[-1] += "," + item
        else:
            texts.append(item)
    return [variant(text) for text in texts]
