"""AlexNet as BVLC/Caffe defines it, and the two-branch Torch BN-AlexNet of imagenet-multiGPU.torch.

Both average the last feature map adaptively into 6x6 before fc6, as torchvision's
AdaptiveAvgPool2d((6, 6)): the identity at the default inputs (227 and 224), so the networks are
exactly the paper's there, and fc6 keeps its shape, so the parameter count does not change
with the input resolution (the operation count does).
"""

import functools

import flax.linen as nn
import jax.numpy as jnp

from models import layers

# Caffe ceil-mode pools: the smallest input whose unpadded conv1 and pools all fit their windows
# (55 -> conv1 12 -> pool1 6 -> pool2 3 -> pool5 1).
MIN_RESOLUTION = 55
# Torch floor-mode pools and conv1 padding 2: 63 -> conv1 15 -> pool1 7 -> pool2 3 -> pool5 1.
BN_MIN_RESOLUTION = 63

FEATURE_GRID = 6  # fc6 reads a 6x6 map at the default input of both networks
HIDDEN = 4096


def _check_knobs(model: str, width: float, num_classes: int) -> None:
    """Validates the knobs both AlexNets share."""
    layers.check_width(model, width)
    layers.check_num_classes(model, num_classes)


class AlexNet(nn.Module):
    """BVLC AlexNet (LRN, grouped conv2/4/5, Caffe ceil pooling); width scales convs and fc6/fc7."""

    width: float = 1.0
    num_classes: int = 1000

    def __post_init__(self):
        _check_knobs("alexnet", self.width, self.num_classes)
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False):
        layers.check_resolution(x, MIN_RESOLUTION, "alexnet")
        c = functools.partial(layers.round_width, width=self.width)
        x = nn.relu(layers.conv(c(96), 11, 4, name="conv1", use_bias=True)(x))
        x = layers.max_pool(layers.LocalResponseNorm(name="norm1")(x), 3, 2, ceil=True)
        # Groups of 2 are the two GPUs of Krizhevsky et al.; Caffe kept them in one layer.
        x = nn.relu(layers.conv(c(256), 5, 1, 2, name="conv2", use_bias=True, groups=2)(x))
        x = layers.max_pool(layers.LocalResponseNorm(name="norm2")(x), 3, 2, ceil=True)
        x = nn.relu(layers.conv(c(384), 3, 1, 1, name="conv3", use_bias=True)(x))
        x = nn.relu(layers.conv(c(384), 3, 1, 1, name="conv4", use_bias=True, groups=2)(x))
        x = nn.relu(layers.conv(c(256), 3, 1, 1, name="conv5", use_bias=True, groups=2)(x))
        x = layers.max_pool(x, 3, 2, ceil=True)
        x = layers.adaptive_avg_pool(x, FEATURE_GRID).reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(c(HIDDEN), name="fc6")(x))
        x = nn.Dropout(0.5, deterministic=not train, name="drop6")(x)
        x = nn.relu(nn.Dense(c(HIDDEN), name="fc7")(x))
        x = nn.Dropout(0.5, deterministic=not train, name="drop7")(x)
        return nn.Dense(self.num_classes, name="fc8")(x)


class Branch(nn.Module):
    """One of BN-AlexNet's two towers: five conv -> BN -> ReLU layers with three floor-mode pools."""

    channels: tuple[int, ...]

    @nn.compact
    def __call__(self, x, train: bool = False):
        # (kernel, stride, padding, max-pool after) of conv1..conv5, as alexnet.lua.
        shapes = ((11, 4, 2, True), (5, 1, 2, True), (3, 1, 1, False), (3, 1, 1, False), (3, 1, 1, True))
        for i, (features, (kernel, stride, padding, pool)) in enumerate(zip(self.channels, shapes), 1):
            x = layers.conv(features, kernel, stride, padding, name=f"conv{i}", use_bias=True)(x)
            # imagenet-multiGPU.torch builds its BN models with eps 1e-3.
            x = nn.relu(layers.batch_norm(train, f"bn{i}", epsilon=1e-3)(x))
            if pool:
                x = layers.max_pool(x, 3, 2)
        return x


class BNAlexNet(nn.Module):
    """Torch BN-AlexNet: two towers on the same image, concatenated; width scales convs and fc6/fc7."""

    width: float = 1.0
    num_classes: int = 1000

    def __post_init__(self):
        _check_knobs("bn_alexnet", self.width, self.num_classes)
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False):
        layers.check_resolution(x, BN_MIN_RESOLUTION, "bn_alexnet")
        channels = tuple(layers.round_width(ch, self.width) for ch in (48, 128, 192, 192, 128))
        x = jnp.concatenate([Branch(channels, name="branch1")(x, train),
                             Branch(channels, name="branch2")(x, train)], axis=-1)
        x = layers.adaptive_avg_pool(x, FEATURE_GRID).reshape(x.shape[0], -1)
        hidden = layers.round_width(HIDDEN, self.width)
        # Torch's order: dropout before fc6 and fc7, none before the classifier.
        x = nn.Dropout(0.5, deterministic=not train, name="drop6")(x)
        x = nn.relu(nn.Dense(hidden, name="fc6")(x))
        x = nn.Dropout(0.5, deterministic=not train, name="drop7")(x)
        x = nn.relu(nn.Dense(hidden, name="fc7")(x))
        return nn.Dense(self.num_classes, name="fc8")(x)


alexnet = functools.partial(AlexNet)
bn_alexnet = functools.partial(BNAlexNet)
