"""Inception-v3 (Szegedy et al. 2015, "Rethinking the Inception Architecture") for 299x299 inputs."""

import functools
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from models import layers

MIN_RESOLUTION = 75  # five valid stride-2 steps (and the valid 3x3s) leave 1x1 at Mixed_7c from 75x75
AUX_MIN_RESOLUTION = 299  # the aux head's valid 5x5 conv needs Mixed_6e at 17x17 (5x5 after its 5/3 pool)
BN_EPSILON = 1e-3  # as Google's released Inception models
DROPOUT_RATE = 0.2  # keep probability 0.8, as Google's released (TF-slim) Inception-v3


class ConvBN(nn.Module):
    """Convolution without bias, BatchNorm (eps 1e-3, scale and bias) and ReLU: the Inception unit."""

    features: int
    kernel: Sequence[int] = (1, 1)
    stride: int = 1
    padding: str = "same"  # "same": (k - 1) // 2 on each side (stride 1 only here); "valid": none

    @nn.compact
    def __call__(self, x, train: bool = False):
        kh, kw = self.kernel
        pads = ((kh // 2, kh // 2), (kw // 2, kw // 2)) if self.padding == "same" else ((0, 0), (0, 0))
        x = nn.Conv(self.features, (kh, kw), strides=(self.stride, self.stride), padding=pads,
                    use_bias=False, kernel_init=layers.conv_init, name="conv")(x)
        return nn.relu(layers.batch_norm(train, "bn", epsilon=BN_EPSILON)(x))


def unit(features: int, kernel, stride: int = 1, padding: str = "same", *, width: float, name: str) -> ConvBN:
    """A ConvBN with its channels scaled by `width`; `kernel` is an int (square) or (height, width)."""
    kernel = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
    return ConvBN(layers.round_width(features, width), kernel, stride, padding, name=name)


class InceptionA(nn.Module):
    """35x35 block (Mixed_5b-5d): 1x1, 5x5, double 3x3 and pooled 1x1 branches."""

    pool_features: int
    width: float = 1.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        u = functools.partial(unit, width=self.width)
        b1 = u(64, 1, name="branch1x1")(x, train)
        b5 = u(48, 1, name="branch5x5_1")(x, train)
        b5 = u(64, 5, name="branch5x5_2")(b5, train)
        b3 = u(64, 1, name="branch3x3dbl_1")(x, train)
        b3 = u(96, 3, name="branch3x3dbl_2")(b3, train)
        b3 = u(96, 3, name="branch3x3dbl_3")(b3, train)
        bp = u(self.pool_features, 1, name="branch_pool")(layers.avg_pool(x, 3, 1, 1), train)
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    """Grid reduction 35x35 -> 17x17 (Mixed_6a): strided 3x3, strided double 3x3 and max pool."""

    width: float = 1.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        u = functools.partial(unit, width=self.width)
        b3 = u(384, 3, 2, "valid", name="branch3x3")(x, train)
        bd = u(64, 1, name="branch3x3dbl_1")(x, train)
        bd = u(96, 3, name="branch3x3dbl_2")(bd, train)
        bd = u(96, 3, 2, "valid", name="branch3x3dbl_3")(bd, train)
        return jnp.concatenate([b3, bd, layers.max_pool(x, 3, 2)], axis=-1)


class InceptionC(nn.Module):
    """17x17 block (Mixed_6b-6e): 3x3-equivalent branches factorised into 1x7 and 7x1 convolutions."""

    channels_7x7: int
    width: float = 1.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        u, c7 = functools.partial(unit, width=self.width), self.channels_7x7
        b1 = u(192, 1, name="branch1x1")(x, train)
        b7 = u(c7, 1, name="branch7x7_1")(x, train)
        b7 = u(c7, (1, 7), name="branch7x7_2")(b7, train)
        b7 = u(192, (7, 1), name="branch7x7_3")(b7, train)
        bd = u(c7, 1, name="branch7x7dbl_1")(x, train)
        bd = u(c7, (7, 1), name="branch7x7dbl_2")(bd, train)
        bd = u(c7, (1, 7), name="branch7x7dbl_3")(bd, train)
        bd = u(c7, (7, 1), name="branch7x7dbl_4")(bd, train)
        bd = u(192, (1, 7), name="branch7x7dbl_5")(bd, train)
        bp = u(192, 1, name="branch_pool")(layers.avg_pool(x, 3, 1, 1), train)
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    """Grid reduction 17x17 -> 8x8 (Mixed_7a): strided 3x3, strided 7x7-then-3x3 and max pool."""

    width: float = 1.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        u = functools.partial(unit, width=self.width)
        b3 = u(192, 1, name="branch3x3_1")(x, train)
        b3 = u(320, 3, 2, "valid", name="branch3x3_2")(b3, train)
        b7 = u(192, 1, name="branch7x7x3_1")(x, train)
        b7 = u(192, (1, 7), name="branch7x7x3_2")(b7, train)
        b7 = u(192, (7, 1), name="branch7x7x3_3")(b7, train)
        b7 = u(192, 3, 2, "valid", name="branch7x7x3_4")(b7, train)
        return jnp.concatenate([b3, b7, layers.max_pool(x, 3, 2)], axis=-1)


class InceptionE(nn.Module):
    """8x8 block (Mixed_7b, 7c): 3x3 branches ending in parallel 1x3 and 3x1 convolutions."""

    width: float = 1.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        u = functools.partial(unit, width=self.width)
        b1 = u(320, 1, name="branch1x1")(x, train)
        b3 = u(384, 1, name="branch3x3_1")(x, train)
        b3 = jnp.concatenate([u(384, (1, 3), name="branch3x3_2a")(b3, train),
                              u(384, (3, 1), name="branch3x3_2b")(b3, train)], axis=-1)
        bd = u(448, 1, name="branch3x3dbl_1")(x, train)
        bd = u(384, 3, name="branch3x3dbl_2")(bd, train)
        bd = jnp.concatenate([u(384, (1, 3), name="branch3x3dbl_3a")(bd, train),
                              u(384, (3, 1), name="branch3x3dbl_3b")(bd, train)], axis=-1)
        bp = u(192, 1, name="branch_pool")(layers.avg_pool(x, 3, 1, 1), train)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class AuxHead(nn.Module):
    """Auxiliary classifier on Mixed_6e (training only): 5x5/3 avg pool, 1x1 and 5x5 units, linear."""

    num_classes: int
    width: float = 1.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        u = functools.partial(unit, width=self.width)
        x = layers.avg_pool(x, 5, 3)
        x = u(128, 1, name="conv0")(x, train)
        x = u(768, 5, padding="valid", name="conv1")(x, train)
        return nn.Dense(self.num_classes, name="fc")(layers.global_avg_pool(x))


class InceptionV3(nn.Module):
    """Inception-v3 with width (channel multiplier), class count and training-only auxiliary head knobs.

    With `aux_head=True` the auxiliary classifier is built only when called with train=True, and
    the call then returns (logits, aux_logits); initialise with train=True to create its parameters.
    """

    width: float = 1.0
    num_classes: int = 1000
    aux_head: bool = False

    def __post_init__(self):
        layers.check_width("inception_v3", self.width)
        layers.check_num_classes("inception_v3", self.num_classes)
        layers.check_flag("inception_v3", "aux_head", self.aux_head)
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False):
        layers.check_resolution(x, MIN_RESOLUTION, "inception_v3")
        with_aux = self.aux_head and train
        if with_aux:
            layers.check_resolution(x, AUX_MIN_RESOLUTION, "inception_v3 (training with aux_head)")
        u, w = functools.partial(unit, width=self.width), self.width
        x = u(32, 3, 2, "valid", name="Conv2d_1a_3x3")(x, train)
        x = u(32, 3, padding="valid", name="Conv2d_2a_3x3")(x, train)
        x = u(64, 3, name="Conv2d_2b_3x3")(x, train)
        x = layers.max_pool(x, 3, 2)
        x = u(80, 1, name="Conv2d_3b_1x1")(x, train)
        x = u(192, 3, padding="valid", name="Conv2d_4a_3x3")(x, train)
        x = layers.max_pool(x, 3, 2)
        for name, pool_features in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
            x = InceptionA(pool_features, w, name=name)(x, train)
        x = InceptionB(w, name="Mixed_6a")(x, train)
        for name, channels_7x7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
            x = InceptionC(channels_7x7, w, name=name)(x, train)
        aux = AuxHead(self.num_classes, w, name="AuxLogits")(x, train) if with_aux else None
        x = InceptionD(w, name="Mixed_7a")(x, train)
        x = InceptionE(w, name="Mixed_7b")(x, train)
        x = InceptionE(w, name="Mixed_7c")(x, train)
        x = nn.Dropout(DROPOUT_RATE, deterministic=not train, name="dropout")(layers.global_avg_pool(x))
        logits = nn.Dense(self.num_classes, name="fc")(x)
        return (logits, aux) if with_aux else logits


inception_v3 = functools.partial(InceptionV3, width=1.0, num_classes=1000, aux_head=False)
