"""Calibration kernels: single layers over a spread of shapes, timed alone as nn-Meter times its kernels.

A kernel is a convolution (with BatchNorm and ReLU, the unit the networks repeat, which XLA fuses;
with `bias=1`, a bias and ReLU instead, as in the networks without BatchNorm), a dense layer (with
ReLU), a max or average pooling (`pool`, `avgpool`) or Caffe's cross-channel LRN (`lrn`), written
like a variant string (`conv:cin=64,cout=128,k=3,stride=1,groups=1,dilation=1,side=28`). `draw`
gives a seeded spread of them: the kernel sizes, strides, grouped (AlexNet's two groups) and
dilated convolutions, the 3x3 poolings of stride 1 and 2 and the LRNs of the 14 networks (convolutions
on maps of 1 to 256 px with the channels networks put on maps of that size, log-uniform; poolings and
LRNs with channels and sides log-uniform), and dense layers spread over the octaves of their weights up
to several times a CPU's last-level cache (VGG's and AlexNet's fc6 read theirs from memory on every
call), each small enough to time in a fraction of a second. No depthwise convolution: none of the networks has one, and
XLA:CPU runs them as a kernel of their own whose time follows the groups more than the MACs.
"""

import dataclasses
import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from core.errors import UserError
from models import layers

# Each kind's fields, in the order its string says them; a convolution says bias and pad only where it has them.
FIELDS = {"conv": ("cin", "cout", "k", "stride", "groups", "dilation", "side", "bias", "pad"),
          "dense": ("cin", "cout"), "pool": ("cin", "k", "stride", "side"), "avgpool": ("cin", "k", "stride", "side"),
          "lrn": ("cin", "side")}
KINDS = tuple(FIELDS)
MAX_MACS = 4e8  # per image: a kernel times in well under a second even at batch 16 on a CPU
# Timed beside every calibration target (batch 1): how fast the machine runs right now. A shared
# machine's pace drifts by tens of per cent over minutes; times set against it stay comparable.
PACE_REFERENCE = "conv:cin=128,cout=128,k=3,stride=1,groups=1,dilation=1,side=16"


@dataclasses.dataclass(frozen=True)
class KernelSpec:
    """One layer to time: its kind, channels, window, stride, groups, dilation and input side."""

    kind: str
    cin: int
    cout: int = 0
    k: int = 1
    stride: int = 1
    groups: int = 1
    dilation: int = 1
    side: int = 1
    bias: int = 0  # a convolution: 1 for a bias and ReLU in place of BatchNorm and ReLU
    pad: Optional[int] = None  # a convolution's padding on every side (None: SAME)

    def __str__(self) -> str:
        said = [name for name in FIELDS[self.kind] if not (name == "bias" and not self.bias)
                and not (name == "pad" and self.pad is None)]
        return f"{self.kind}:" + ",".join(f"{name}={getattr(self, name)}" for name in said)

    def input_shape(self, batch_size: int = 1) -> tuple[int, ...]:
        """NHWC input of the kernel (a dense layer reads a 1x1 map)."""
        side = 1 if self.kind == "dense" else self.side
        return (batch_size, side, side, self.cin)

    def module(self) -> nn.Module:
        """The Flax module that runs the kernel."""
        return Kernel(self)


class Kernel(nn.Module):
    """One calibration layer: convolution + BatchNorm (or bias) + ReLU, dense + ReLU, max or average pooling, LRN."""

    spec: KernelSpec

    @nn.compact
    def __call__(self, x, train: bool = False):
        s = self.spec
        if s.kind == "pool":
            return nn.max_pool(x, (s.k, s.k), strides=(s.stride, s.stride), padding="SAME")
        if s.kind == "avgpool":  # padded taps in the divisor, as the Inception networks pool (models.layers)
            return nn.avg_pool(x, (s.k, s.k), strides=(s.stride, s.stride), padding="SAME", count_include_pad=True)
        if s.kind == "lrn":
            return layers.LocalResponseNorm(name="lrn")(x)
        if s.kind == "dense":
            return nn.relu(nn.Dense(s.cout, name="dense")(x.reshape(x.shape[0], -1)))
        y = nn.Conv(s.cout, (s.k, s.k), strides=s.stride, feature_group_count=s.groups, kernel_dilation=s.dilation,
                    padding="SAME" if s.pad is None else ((s.pad, s.pad), (s.pad, s.pad)), use_bias=bool(s.bias),
                    name="conv")(x)
        return nn.relu(y if s.bias else nn.BatchNorm(use_running_average=not train, name="bn")(y))


def is_kernel(name: str) -> bool:
    """Whether a name is a kernel string (else a network or variant)."""
    return name.partition(":")[0] in KINDS


def parse(text: str) -> KernelSpec:
    """The kernel a string names; UserError on an unknown kind, field or value."""
    kind, _, rest = text.partition(":")
    if kind not in KINDS:
        raise UserError(f"unknown kernel kind {kind!r} in {text!r}; choose one of: {', '.join(KINDS)}")
    values = {}
    for item in filter(None, rest.split(",")):
        name, _, value = item.partition("=")
        if name not in FIELDS[kind]:
            raise UserError(f"kernel {text!r}: a {kind} kernel takes {', '.join(FIELDS[kind])}, not {name}")
        if not value.isdigit() or int(value) < (name != "pad"):
            raise UserError(f"kernel {text!r}: {item!r} is not field=positive integer (pad: or 0)")
        values[name] = int(value)
    spec = KernelSpec(kind, **values)
    if spec.bias > 1:
        raise UserError(f"kernel {text!r}: bias=1 is a convolution's only bias (a bias in place of BatchNorm)")
    if spec.pad is not None and spec.side + 2 * spec.pad < spec.dilation * (spec.k - 1) + 1:
        raise UserError(f"kernel {text!r}: its window is wider than its padded map; give a larger side or pad")
    if spec.kind == "conv" and (spec.cin % spec.groups or spec.cout % spec.groups):
        raise UserError(f"kernel {text!r}: groups {spec.groups} must divide cin and cout")
    return spec


def _log_uniform(rng: np.random.Generator, low: float, high: float, multiple: int = 1) -> int:
    """A value log-uniform between low and high, rounded to a multiple."""
    return max(multiple, int(round(math.exp(rng.uniform(math.log(low), math.log(high))) / multiple)) * multiple)


def _macs(spec: KernelSpec) -> float:
    """MACs per image, roughly (for the size cap only; the cost module counts them exactly)."""
    if spec.kind == "dense":
        return spec.cin * spec.cout
    if spec.kind in ("pool", "avgpool"):
        return spec.side ** 2 * spec.cin * spec.k ** 2
    if spec.kind == "lrn":
        return spec.side ** 2 * spec.cin * layers.LocalResponseNorm.size
    return (spec.side / spec.stride) ** 2 * spec.cout * spec.cin / spec.groups * spec.k ** 2


def draw(count: int, seed: int = 0) -> list[KernelSpec]:
    """`count` distinct seeded kernels: convolutions mostly, dense layers, poolings and LRNs, none above MAX_MACS."""
    rng, drawn, dense = np.random.default_rng(seed), {}, 0
    while len(drawn) < count:
        kind = rng.choice(KINDS, p=(0.6, 0.2, 0.1, 0.05, 0.05))
        if kind == "dense":
            # 512 K to 128 M weights, one octave after another (half beyond 32 MiB: how fast memory streams them
            # is what the dense layers of VGG and AlexNet take), split log-uniformly between inputs and outputs.
            weights, dense = 19 + dense % 8 + rng.uniform(), dense + 1
            cin = 2 ** rng.uniform(max(6.0, weights - 12), min(15.0, weights - 3))
            spec = KernelSpec("dense", _log_uniform(rng, cin, cin, 8), _log_uniform(rng, 2 ** weights / cin,
                                                                                   2 ** weights / cin, 8))
        elif kind in ("pool", "avgpool"):
            k = int(rng.choice([2, 3]))  # 3x3 windows of stride 1 and 2 (GoogLeNet, Inception), 2x2 of stride 2
            spec = KernelSpec(str(kind), _log_uniform(rng, 8, 1024, 8), k=k, stride=int(rng.choice([1, 2])) if k == 3
                              else 2, side=_log_uniform(rng, 4, 128))
        elif kind == "lrn":
            spec = KernelSpec("lrn", _log_uniform(rng, 16, 512, 8), side=_log_uniform(rng, 4, 128))
        else:
            # Maps of 1 to 256 px, with the channels networks put on them: more on smaller maps (64 on 56x56
            # and 512 on 7x7 in a ResNet), between 512 and 16384 over the side, within 8 to 1024.
            side = _log_uniform(rng, 1, 256)
            low, high = max(8.0, 512 / side), min(1024.0, 16384 / side)
            cin, cout = _log_uniform(rng, low, high, 8), _log_uniform(rng, low, high, 8)
            spec = KernelSpec("conv", cin, cout, k=int(rng.choice([1, 1, 3, 3, 3, 5, 7])),
                              stride=int(rng.choice([1, 1, 2])), groups=2 if rng.random() < 0.1 else 1,
                              dilation=2 if rng.random() < 0.1 else 1, side=side, bias=int(rng.random() < 0.3))
        # Windows wider than 3 overhang only maps at least their size, as in the networks (stems, Inception).
        if _macs(spec) <= MAX_MACS and (spec.kind != "conv" or spec.k <= max(3, spec.side)):
            drawn.setdefault(str(spec), spec)
    return list(drawn.values())


def of_network(module: nn.Module, input_shape: tuple[int, ...]) -> list[KernelSpec]:
    """The square convolutions and the dense layers of a network, in call order, each as the kernel that times it alone.

    A traced init records every Flax Conv and Dense call with its input's shape, bias and padding;
    windows, maps or paddings that are not square are left out: no kernel string can say them.
    """
    found = []

    def record(next_fun, args, kwargs, context):
        layer, x = context.module, args[0] if args else None
        if context.method_name == "__call__" and isinstance(layer, nn.Dense):
            found.append(KernelSpec("dense", math.prod(x.shape[1:]), layer.features))
        elif context.method_name == "__call__" and isinstance(layer, nn.Conv) and x.ndim == 4:
            size, stride, dilation = (_pair(getattr(layer, name)) for name in ("kernel_size", "strides",
                                                                            "kernel_dilation"))
            pad = _padding(layer.padding)
            if len(set(size)) == len(set(stride)) == len(set(dilation)) == 1 and x.shape[1] == x.shape[2] \
                    and pad != _UNSAID:
                found.append(KernelSpec("conv", x.shape[-1], layer.features, k=size[0], stride=stride[0],
                                        groups=layer.feature_group_count, dilation=dilation[0], side=x.shape[1],
                                        bias=int(layer.use_bias), pad=pad))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        jax.eval_shape(lambda x: module.init(jax.random.PRNGKey(0), x, train=False),
                       jax.ShapeDtypeStruct(input_shape, jnp.float32))
    return found


_UNSAID = "unsaid"  # a padding no kernel string says (one side unlike another)


def _padding(value):
    """A Flax Conv's padding as KernelSpec.pad: None for SAME, the same count on every side, else _UNSAID."""
    if isinstance(value, str):
        return {"SAME": None, "VALID": 0}.get(value.upper(), _UNSAID)
    if isinstance(value, int):
        return value
    sides = {side for pair in value for side in ((pair, pair) if isinstance(pair, int) else pair)}
    return sides.pop() if len(sides) == 1 else _UNSAID


def _pair(value) -> tuple[int, ...]:
    """A Flax window, stride or dilation field as a tuple (None: 1)."""
    if value is None:
        return (1, 1)
    return (value, value) if isinstance(value, int) else tuple(value)
