"""ResNet-18/34/50/101/152 as fb.resnet.torch builds them (He et al. 2016)."""

import functools
from typing import Sequence

import flax.linen as nn

from models import layers

MIN_RESOLUTION = 32  # five stride-2 steps leave one pixel at the last stage


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34)."""

    features: int
    stride: int = 1
    expansion = 1

    @nn.compact
    def __call__(self, x, train: bool = False):
        y = layers.conv(self.features, 3, self.stride, 1, name="conv1")(x)
        y = nn.relu(layers.batch_norm(train, "bn1")(y))
        y = layers.conv(self.features, 3, 1, 1, name="conv2")(y)
        y = layers.batch_norm(train, "bn2")(y)
        return nn.relu(y + shortcut(x, self.features, self.stride, train))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride, as fb.resnet.torch), 1x1 expand by 4 (ResNet-50+)."""

    features: int
    stride: int = 1
    expansion = 4

    @nn.compact
    def __call__(self, x, train: bool = False):
        out = self.features * self.expansion
        y = layers.conv(self.features, 1, name="conv1")(x)
        y = nn.relu(layers.batch_norm(train, "bn1")(y))
        y = layers.conv(self.features, 3, self.stride, 1, name="conv2")(y)
        y = nn.relu(layers.batch_norm(train, "bn2")(y))
        y = layers.conv(out, 1, name="conv3")(y)
        y = layers.batch_norm(train, "bn3")(y)
        return nn.relu(y + shortcut(x, out, self.stride, train))


def shortcut(x, features: int, stride: int, train: bool):
    """Identity, or a strided 1x1 projection with BN when the shape changes (shortcut type B).

    Called inside a block's compact method, so its submodules are named within the block.
    """
    if x.shape[-1] == features and stride == 1:
        return x
    x = layers.conv(features, 1, stride, name="proj_conv")(x)
    return layers.batch_norm(train, "proj_bn")(x)


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class Stage(nn.Module):
    """A run of `depth` blocks; the first one changes resolution and width."""

    block: str
    depth: int
    features: int
    stride: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        for i in range(self.depth):
            x = BLOCKS[self.block](self.features, self.stride if i == 0 else 1, name=f"block{i + 1}")(x, train)
        return x


class ResNet(nn.Module):
    """ResNet with width (channel multiplier) and per-stage depth knobs."""

    block: str
    depths: Sequence[int]
    width: float = 1.0
    num_classes: int = 1000

    def __post_init__(self):
        layers.check_choice("resnet", "block", self.block, tuple(BLOCKS))
        layers.check_width("resnet", self.width)
        layers.check_num_classes("resnet", self.num_classes)
        layers.check_depths("resnet", self.depths, 4)
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False):
        layers.check_resolution(x, MIN_RESOLUTION, "resnet")
        x = layers.conv(layers.round_width(64, self.width), 7, 2, 3, name="stem_conv")(x)
        x = nn.relu(layers.batch_norm(train, "stem_bn")(x))
        x = layers.max_pool(x, 3, 2, 1)
        for i, depth in enumerate(self.depths):
            features = layers.round_width(64 * 2**i, self.width)
            x = Stage(self.block, depth, features, 1 if i == 0 else 2, name=f"stage{i + 1}")(x, train)
        return nn.Dense(self.num_classes, name="fc")(layers.global_avg_pool(x))


resnet18 = functools.partial(ResNet, block="basic", depths=(2, 2, 2, 2))
resnet34 = functools.partial(ResNet, block="basic", depths=(3, 4, 6, 3))
resnet50 = functools.partial(ResNet, block="bottleneck", depths=(3, 4, 6, 3))
resnet101 = functools.partial(ResNet, block="bottleneck", depths=(3, 4, 23, 3))
resnet152 = functools.partial(ResNet, block="bottleneck", depths=(3, 8, 36, 3))
