"""ENet for ImageNet as e-lab's enet.lua builds it (Paszke et al. 2016), with the V12 dilations."""

import functools
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from core.errors import UserError
from models import layers

# The initial block and the four downsampling bottlenecks halve the input five times; the
# ceil-mode pool of the initial block lets odd sizes through, so 31 -> 16 -> 8 -> 4 -> 2 -> 1.
MIN_RESOLUTION = 31

BN_EPS = 1e-3  # enet.lua builds every SpatialBatchNormalization with eps 1e-3
EARLY_DROPOUT, LATE_DROPOUT, EARLY_BOTTLENECKS = 0.01, 0.1, 5
V12_DILATIONS = (1, 2, 4, 8)  # of the last bottleneck of stages 1-4 in the dilated variant


def dropout_rate(index: int) -> float:
    """Spatial dropout rate of the bottleneck at 0-based position `index` in the whole network."""
    return EARLY_DROPOUT if index < EARLY_BOTTLENECKS else LATE_DROPOUT


class InitialBlock(nn.Module):
    """Concat(3x3/2 conv to features-3 channels, 2x2/2 max-pool of the RGB input) -> BN -> PReLU."""

    features: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        y = layers.conv(self.features - x.shape[-1], 3, 2, 1, use_bias=True, name="conv")(x)
        # Ceil mode matches the conv's ceil(H/2) on odd inputs; identical to Torch's floor on even ones.
        pooled = layers.max_pool(x, 2, 2, ceil=True)
        y = jnp.concatenate([y, pooled], axis=-1)
        y = layers.batch_norm(train, "bn", BN_EPS)(y)
        return layers.PReLU(name="prelu")(y)


class Bottleneck(nn.Module):
    """Projection (2x2/2 when downsampling) -> 3x3 (dilated) -> 1x1 expand, plus a padded shortcut."""

    features: int
    internal: int
    downsample: bool = False
    dilation: int = 1
    dropout: float = LATE_DROPOUT

    @nn.compact
    def __call__(self, x, train: bool = False):
        kernel = 2 if self.downsample else 1
        y = layers.conv(self.internal, kernel, kernel, name="conv1")(x)
        y = layers.PReLU(name="prelu1")(layers.batch_norm(train, "bn1", BN_EPS)(y))
        y = layers.conv(self.internal, 3, 1, self.dilation, use_bias=True, dilation=self.dilation,
                        name="conv2")(y)
        y = layers.PReLU(name="prelu2")(layers.batch_norm(train, "bn2", BN_EPS)(y))
        y = layers.conv(self.features, 1, name="conv3")(y)
        y = layers.batch_norm(train, "bn3", BN_EPS)(y)
        # Spatial dropout: one mask value per (sample, channel), shared over H and W.
        y = nn.Dropout(self.dropout, broadcast_dims=(1, 2), deterministic=not train, name="dropout")(y)
        return layers.PReLU(name="prelu")(y + shortcut(x, self.features, self.downsample))


def shortcut(x, features: int, downsample: bool):
    """Identity or 2x2/2 max-pool, with zero channels appended when the bottleneck widens."""
    if downsample:
        x = layers.max_pool(x, 2, 2)
    if features < x.shape[-1]:
        raise UserError(f"enet: a bottleneck cannot narrow {x.shape[-1]} to {features} channels")
    return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, features - x.shape[-1])))


class Stage(nn.Module):
    """A downsampling bottleneck followed by `depth - 1` regular ones at the stage's width."""

    depth: int
    features: int
    first_features: int
    first_internal: int
    dilation: int = 1
    start: int = 0

    @nn.compact
    def __call__(self, x, train: bool = False):
        for i in range(self.depth):
            first, last = i == 0, i == self.depth - 1
            x = Bottleneck(self.first_features if first else self.features,
                           self.first_internal if first else self.features // 4,
                           downsample=first, dilation=self.dilation if last else 1,
                           dropout=dropout_rate(self.start + i), name=f"bottleneck{i + 1}")(x, train)
        return x


class ENet(nn.Module):
    """ENet's encoder as an ImageNet classifier, with width, depth and dilation knobs."""

    width: float = 1.0
    depths: Sequence[int] = (3, 3, 3, 3)
    dilated: bool = False
    num_classes: int = 1000

    def __post_init__(self):
        layers.check_width("enet", self.width)
        layers.check_num_classes("enet", self.num_classes)
        layers.check_depths("enet", self.depths, 4)
        layers.check_flag("enet", "dilated", self.dilated)
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False):
        layers.check_resolution(x, MIN_RESOLUTION, "enet")
        x = InitialBlock(layers.round_width(16, self.width), name="initial")(x, train)
        start = 0
        for i, depth in enumerate(self.depths):
            features = layers.round_width(128 * 2**i, self.width)
            # Stage 1 is 16->64 with a full-width interior, then widens 64->128 in its second bottleneck.
            first = layers.round_width(64, self.width) if i == 0 else features
            x = Stage(depth, features, first, first if i == 0 else first // 4,
                      dilation=V12_DILATIONS[i] if self.dilated else 1, start=start,
                      name=f"stage{i + 1}")(x, train)
            start += depth
        return nn.Dense(self.num_classes, name="fc")(layers.global_avg_pool(x))


enet = functools.partial(ENet, depths=(3, 3, 3, 3), dilated=False)
