"""Inception-v4 (Szegedy et al. 2016, "Inception-v4, Inception-ResNet and ...") for 299x299 inputs.

This is the standard network of the paper (stem, 4 Inception-A, Reduction-A with k=192, l=224,
m=256, n=384, 7 Inception-B, Reduction-B, 3 Inception-C, average pool, dropout, linear): it has
42,679,816 parameters (BatchNorm scale and bias included), the count usually quoted for it.
Canziani et al. plot 31.57 M parameters and 18.44 G-Ops for "Inception-v4", about 11 M
parameters fewer than this network has; which model they measured is unknown, so their numbers
are reference points here, not targets. Where the paper's figures and the released
TF-slim model order a 1x7/7x1 (or 1x3/3x1) pair differently, the released order is used: the
counts are the same either way.
"""

import functools
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from models import layers
from models.inception_v3 import unit

MIN_RESOLUTION = 75  # the five valid stride-2 steps (and the valid 3x3s) leave 1x1 after Reduction-B
DROPOUT_RATE = 0.2  # keep probability 0.8, as the paper's Figure 9


class Stem(nn.Module):
    """299x299x3 -> 35x35x384: three 3x3 units, then three concatenations of parallel branches."""

    width: float = 1.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        u = functools.partial(unit, width=self.width)
        x = u(32, 3, 2, "valid", name="conv1")(x, train)
        x = u(32, 3, padding="valid", name="conv2")(x, train)
        x = u(64, 3, name="conv3")(x, train)
        x = jnp.concatenate([layers.max_pool(x, 3, 2),
                             u(96, 3, 2, "valid", name="mixed1_conv")(x, train)], axis=-1)
        b1 = u(64, 1, name="mixed2_branch1_conv1")(x, train)
        b1 = u(96, 3, padding="valid", name="mixed2_branch1_conv2")(b1, train)
        b2 = u(64, 1, name="mixed2_branch2_conv1")(x, train)
        b2 = u(64, (1, 7), name="mixed2_branch2_conv2")(b2, train)
        b2 = u(64, (7, 1), name="mixed2_branch2_conv3")(b2, train)
        b2 = u(96, 3, padding="valid", name="mixed2_branch2_conv4")(b2, train)
        x = jnp.concatenate([b1, b2], axis=-1)
        return jnp.concatenate([u(192, 3, 2, "valid", name="mixed3_conv")(x, train),
                                layers.max_pool(x, 3, 2)], axis=-1)


class InceptionA(nn.Module):
    """35x35x384 block: 1x1, 3x3, double 3x3 and pooled 1x1 branches of 96 channels each."""

    width: float = 1.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        u = functools.partial(unit, width=self.width)
        b1 = u(96, 1, name="branch1_conv1")(x, train)
        b2 = u(64, 1, name="branch2_conv1")(x, train)
        b2 = u(96, 3, name="branch2_conv2")(b2, train)
        b3 = u(64, 1, name="branch3_conv1")(x, train)
        b3 = u(96, 3, name="branch3_conv2")(b3, train)
        b3 = u(96, 3, name="branch3_conv3")(b3, train)
        b4 = u(96, 1, name="branch4_conv1")(layers.avg_pool(x, 3, 1, 1), train)
        return jnp.concatenate([b1, b2, b3, b4], axis=-1)


class ReductionA(nn.Module):
    """35x35 -> 17x17: strided 3x3 (n), 1x1 (k) -> 3x3 (l) -> strided 3x3 (m), and max pool."""

    k: int
    l: int
    m: int
    n: int
    width: float = 1.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        u = functools.partial(unit, width=self.width)
        b1 = u(self.n, 3, 2, "valid", name="branch1_conv1")(x, train)
        b2 = u(self.k, 1, name="branch2_conv1")(x, train)
        b2 = u(self.l, 3, name="branch2_conv2")(b2, train)
        b2 = u(self.m, 3, 2, "valid", name="branch2_conv3")(b2, train)
        return jnp.concatenate([b1, b2, layers.max_pool(x, 3, 2)], axis=-1)


class InceptionB(nn.Module):
    """17x17x1024 block: 1x1, 1x7-7x1, double 7x1-1x7 and pooled 1x1 branches."""

    width: float = 1.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        u = functools.partial(unit, width=self.width)
        b1 = u(384, 1, name="branch1_conv1")(x, train)
        b2 = u(192, 1, name="branch2_conv1")(x, train)
        b2 = u(224, (1, 7), name="branch2_conv2")(b2, train)
        b2 = u(256, (7, 1), name="branch2_conv3")(b2, train)
        b3 = u(192, 1, name="branch3_conv1")(x, train)
        b3 = u(192, (7, 1), name="branch3_conv2")(b3, train)
        b3 = u(224, (1, 7), name="branch3_conv3")(b3, train)
        b3 = u(224, (7, 1), name="branch3_conv4")(b3, train)
        b3 = u(256, (1, 7), name="branch3_conv5")(b3, train)
        b4 = u(128, 1, name="branch4_conv1")(layers.avg_pool(x, 3, 1, 1), train)
        return jnp.concatenate([b1, b2, b3, b4], axis=-1)


class ReductionB(nn.Module):
    """17x17 -> 8x8: 1x1 -> strided 3x3, 1x1 -> 1x7 -> 7x1 -> strided 3x3, and max pool."""

    width: float = 1.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        u = functools.partial(unit, width=self.width)
        b1 = u(192, 1, name="branch1_conv1")(x, train)
        b1 = u(192, 3, 2, "valid", name="branch1_conv2")(b1, train)
        b2 = u(256, 1, name="branch2_conv1")(x, train)
        b2 = u(256, (1, 7), name="branch2_conv2")(b2, train)
        b2 = u(320, (7, 1), name="branch2_conv3")(b2, train)
        b2 = u(320, 3, 2, "valid", name="branch2_conv4")(b2, train)
        return jnp.concatenate([b1, b2, layers.max_pool(x, 3, 2)], axis=-1)


class InceptionC(nn.Module):
    """8x8x1536 block: 1x1, branches ending in parallel 1x3 and 3x1 units, and pooled 1x1."""

    width: float = 1.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        u = functools.partial(unit, width=self.width)
        b1 = u(256, 1, name="branch1_conv1")(x, train)
        b2 = u(384, 1, name="branch2_conv1")(x, train)
        b2 = jnp.concatenate([u(256, (1, 3), name="branch2_conv2a")(b2, train),
                              u(256, (3, 1), name="branch2_conv2b")(b2, train)], axis=-1)
        b3 = u(384, 1, name="branch3_conv1")(x, train)
        b3 = u(448, (3, 1), name="branch3_conv2")(b3, train)
        b3 = u(512, (1, 3), name="branch3_conv3")(b3, train)
        b3 = jnp.concatenate([u(256, (1, 3), name="branch3_conv4a")(b3, train),
                              u(256, (3, 1), name="branch3_conv4b")(b3, train)], axis=-1)
        b4 = u(256, 1, name="branch4_conv1")(layers.avg_pool(x, 3, 1, 1), train)
        return jnp.concatenate([b1, b2, b3, b4], axis=-1)


class InceptionV4(nn.Module):
    """Inception-v4 with width (channel multiplier), Inception-A/B/C block counts and class count."""

    depths: Sequence[int] = (4, 7, 3)
    width: float = 1.0
    num_classes: int = 1000

    def __post_init__(self):
        layers.check_width("inception_v4", self.width)
        layers.check_num_classes("inception_v4", self.num_classes)
        layers.check_depths("inception_v4", self.depths, 3)
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False):
        layers.check_resolution(x, MIN_RESOLUTION, "inception_v4")
        w = self.width
        x = Stem(w, name="stem")(x, train)
        for i in range(self.depths[0]):
            x = InceptionA(w, name=f"inception_a{i + 1}")(x, train)
        x = ReductionA(k=192, l=224, m=256, n=384, width=w, name="reduction_a")(x, train)
        for i in range(self.depths[1]):
            x = InceptionB(w, name=f"inception_b{i + 1}")(x, train)
        x = ReductionB(w, name="reduction_b")(x, train)
        for i in range(self.depths[2]):
            x = InceptionC(w, name=f"inception_c{i + 1}")(x, train)
        x = nn.Dropout(DROPOUT_RATE, deterministic=not train, name="dropout")(layers.global_avg_pool(x))
        return nn.Dense(self.num_classes, name="fc")(x)


inception_v4 = functools.partial(InceptionV4, depths=(4, 7, 3), width=1.0, num_classes=1000)
