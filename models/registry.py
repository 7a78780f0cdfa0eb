"""The registry of the paper's 14 networks: a plain dict of constructors, plus their specs."""

import collections.abc
import dataclasses
import functools
import typing
from typing import Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from core.errors import UserError
from models import alexnet, enet, googlenet, inception_v3, inception_v4, layers, nin, reference, resnet, vgg


@dataclasses.dataclass(frozen=True)
class _Entry:
    constructor: Callable[..., nn.Module]
    min_resolution: int


# Inputs beyond 4096x4096 are not images these networks are used on, and a side near 2**31 would
# overflow the counts' index arithmetic: a clear error instead.
MAX_RESOLUTION = 4096

# In the order of the paper's figures.
_MODELS = {
    "alexnet": _Entry(alexnet.alexnet, alexnet.MIN_RESOLUTION),
    "bn_alexnet": _Entry(alexnet.bn_alexnet, alexnet.BN_MIN_RESOLUTION),
    "bn_nin": _Entry(nin.bn_nin, nin.MIN_RESOLUTION),
    "enet": _Entry(enet.enet, enet.MIN_RESOLUTION),
    "googlenet": _Entry(googlenet.googlenet, googlenet.MIN_RESOLUTION),
    "vgg16": _Entry(vgg.vgg16, vgg.MIN_RESOLUTION),
    "vgg19": _Entry(vgg.vgg19, vgg.MIN_RESOLUTION),
    "resnet18": _Entry(resnet.resnet18, resnet.MIN_RESOLUTION),
    "resnet34": _Entry(resnet.resnet34, resnet.MIN_RESOLUTION),
    "resnet50": _Entry(resnet.resnet50, resnet.MIN_RESOLUTION),
    "resnet101": _Entry(resnet.resnet101, resnet.MIN_RESOLUTION),
    "resnet152": _Entry(resnet.resnet152, resnet.MIN_RESOLUTION),
    "inception_v3": _Entry(inception_v3.inception_v3, inception_v3.MIN_RESOLUTION),
    "inception_v4": _Entry(inception_v4.inception_v4, inception_v4.MIN_RESOLUTION),
}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Metadata of a registered network: its defaults, knobs and the paper's numbers."""

    name: str
    display_name: str
    family: str
    input_size: int
    min_resolution: int
    num_classes: int
    knobs: tuple[str, ...]
    paper: reference.PaperReference


def names() -> list[str]:
    """The registered network names, in the paper's order."""
    return list(_MODELS)


def _entry(name: str) -> _Entry:
    if name not in _MODELS:
        raise UserError(f"unknown model {name!r}; choose one of: {', '.join(_MODELS)}")
    return _MODELS[name]


def _module_class(constructor) -> type:
    return constructor.func if isinstance(constructor, functools.partial) else constructor


def knobs(name: str) -> tuple[str, ...]:
    """The overrides `get` accepts for a network (its module's dataclass fields)."""
    fields = dataclasses.fields(_module_class(_entry(name).constructor))
    return tuple(f.name for f in fields if f.name not in ("parent", "name"))


def knob_types(name: str) -> dict[str, object]:
    """The type annotation of each knob of a network (float, int, bool, str, Sequence[int]...), in field order."""
    annotations = _annotations(_module_class(_entry(name).constructor))
    return {knob: annotations[knob] for knob in knobs(name)}


@functools.cache
def _annotations(module_class: type) -> dict[str, object]:
    """The resolved type annotations of a module class's dataclass fields, by field name."""
    return typing.get_type_hints(module_class)


def _plain(value, annotation):
    """`value` as the plain Python type of its knob's annotation, where it is a NumPy stand-in for one.

    Sweeps hand over np.float32 widths, np.int64 class counts, depths as arrays and np.bool_
    switches. Anything that is not a lossless stand-in (10.5 for an int, True for a float, "1"
    for a number) is passed on unchanged, for the module's own check to reject by knob name.
    """
    if annotation is float and layers.is_real(value):
        return float(value)
    if annotation is int and layers.is_integer(value):
        return int(value)
    if annotation is bool and isinstance(value, (bool, np.bool_)):
        return bool(value)
    if annotation is str and isinstance(value, str):  # np.str_ is a str subclass
        return str(value)
    if typing.get_origin(annotation) in (tuple, collections.abc.Sequence) and isinstance(
            value, (tuple, list, np.ndarray)):
        item_type = typing.get_args(annotation)[0]  # Sequence[int] and tuple[int, ...] alike
        items = value.tolist() if isinstance(value, np.ndarray) else value
        return tuple(_plain(item, item_type) for item in items)
    return value


def get(name: str, **overrides) -> nn.Module:
    """Returns the Flax module of a network, with knobs (width, depths, num_classes...) overridden.

    NumPy scalars and arrays are accepted and turned into the plain Python values (float, int,
    bool, str, tuple of int) the module's fields are annotated with, so two modules built from
    equal knobs compare and hash equal however the knobs were typed.
    """
    constructor = _entry(name).constructor
    allowed = knobs(name)
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise UserError(f"{name} has no knob {', '.join(unknown)}; its knobs are: {', '.join(allowed)}")
    annotations = _annotations(_module_class(constructor))
    return constructor(**{knob: _plain(value, annotations[knob]) for knob, value in overrides.items()})


def spec(name: str) -> ModelSpec:
    """The metadata of a network at its default configuration."""
    entry, paper = _entry(name), reference.paper_references()[name]
    return ModelSpec(name=name, display_name=paper.display_name, family=paper.family,
                     input_size=paper.input_size, min_resolution=entry.min_resolution,
                     num_classes=get(name).num_classes, knobs=knobs(name), paper=paper)


def input_shape(name: str, batch_size: int = 1, resolution: Optional[int] = None) -> tuple[int, ...]:
    """The NHWC input shape of a network, checking the resolution against its downsampling."""
    model_spec = spec(name)
    resolution = model_spec.input_size if resolution is None else resolution
    if not layers.is_integer(batch_size) or batch_size < 1:
        raise UserError(f"batch size must be a positive integer; got {batch_size!r}")
    if not layers.is_integer(resolution) or not model_spec.min_resolution <= resolution <= MAX_RESOLUTION:
        raise UserError(f"{name} needs a resolution from {model_spec.min_resolution} to {MAX_RESOLUTION} "
                        f"pixels; got {resolution!r}")
    return (int(batch_size), int(resolution), int(resolution), 3)  # NumPy integers from a sweep too


def abstract_variables(module: nn.Module, shape: tuple[int, ...], dtype=jnp.float32):
    """The variables of `module` for inputs of `shape`, as ShapeDtypeStructs: nothing is allocated."""
    x = jax.ShapeDtypeStruct(shape, dtype)
    return jax.eval_shape(functools.partial(module.init, train=False), jax.random.key(0), x)


def count_params(variables) -> int:
    """Trainable parameters of a variables tree (BatchNorm scale and bias included, statistics not)."""
    return int(sum(np.prod(leaf.shape, dtype=np.int64) for leaf in jax.tree.leaves(variables["params"])))
