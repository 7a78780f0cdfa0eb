"""GoogLeNet as BVLC's Caffe model defines it (Szegedy et al. 2015), without auxiliary classifiers.

`stem="factorised"` is the paper's first author's own Torch GoogLeNet (his public googlenet.lua,
"Alfredo Canziani, Mar 16"): each of R, G and B through its own 7x7/2 convolution to 8 maps,
then a 1x1 convolution to 64, and no LRN. It has 6,991,880 parameters (6.99 M, as the paper
plots) and counts 3.02 G-Ops under the paper's rules against the paper's 3.00, where the BVLC
stem counts 3.19: the paper measured this variant.
"""

import functools

import flax.linen as nn
import jax.numpy as jnp

from models import layers

# conv1 (7x7/2) and four ceil-mode 3x3/2 max-pools: 31 leaves 2x2 before pool4, which
# Caffe's ceil mode still pools to 1x1; at 30 pool4 would get a 1x1 input and output nothing.
MIN_RESOLUTION = 31

# Per inception module: 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool projection (width 1).
INCEPTION_CHANNELS = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}
# A ceil-mode 3x3/2 max-pool precedes the first module of groups 4 and 5.
POOLED_BEFORE = ("4a", "5a")


# He's rule on the fan-in: unit variance through each ReLU, whatever a layer's width. The fan-out
# rule the BatchNorm networks use grows the variance threefold at every 1x1 reduction here, and
# GoogLeNet has no BatchNorm to undo it: its initial logits reached 30 (a loss near 100).
FAN_IN_INIT = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


def conv_relu(x, features: int, kernel: int, stride: int = 1, padding: int = 0, *, name: str):
    """A convolution with bias followed by ReLU, as every BVLC GoogLeNet convolution."""
    return nn.relu(layers.conv(features, kernel, stride, padding, use_bias=True, kernel_init=FAN_IN_INIT, name=name)(x))


class Inception(nn.Module):
    """Four parallel branches (1x1; 1x1 -> 3x3; 1x1 -> 5x5; 3x3 max-pool -> 1x1) concatenated."""

    channels: tuple[int, int, int, int, int, int]

    @nn.compact
    def __call__(self, x):
        c1, c3_reduce, c3, c5_reduce, c5, pool_proj = self.channels
        b1 = conv_relu(x, c1, 1, name="b1_conv1")
        b2 = conv_relu(conv_relu(x, c3_reduce, 1, name="b2_conv1"), c3, 3, padding=1, name="b2_conv2")
        b3 = conv_relu(conv_relu(x, c5_reduce, 1, name="b3_conv1"), c5, 5, padding=2, name="b3_conv2")
        b4 = conv_relu(layers.max_pool(x, 3, 1, 1), pool_proj, 1, name="b4_conv1")
        return jnp.concatenate([b1, b2, b3, b4], axis=-1)


STEMS = ("bvlc", "factorised")


class GoogLeNet(nn.Module):
    """BVLC GoogLeNet with width (channel multiplier), class-count and stem knobs."""

    width: float = 1.0
    num_classes: int = 1000
    stem: str = "bvlc"

    def __post_init__(self):
        layers.check_width("googlenet", self.width)
        layers.check_num_classes("googlenet", self.num_classes)
        layers.check_choice("googlenet", "stem", self.stem, STEMS)
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False):
        layers.check_resolution(x, MIN_RESOLUTION, "googlenet")
        w = functools.partial(layers.round_width, width=self.width)
        lrn = self.stem == "bvlc"
        if lrn:
            x = conv_relu(x, w(64), 7, 2, 3, name="conv1")
        else:  # three separate convolutions, as the Torch model has them (not one grouped conv)
            x = jnp.concatenate([layers.conv(w(8), 7, 2, 3, use_bias=True, name=f"conv1_{colour}")(x[..., i:i + 1])
                                 for i, colour in enumerate("rgb")], axis=-1)
            x = conv_relu(nn.relu(x), w(64), 1, name="conv1_mix")
        x = layers.max_pool(x, 3, 2, ceil=True)
        x = layers.LocalResponseNorm(name="norm1")(x) if lrn else x
        x = conv_relu(x, w(64), 1, name="conv2_reduce")
        x = conv_relu(x, w(192), 3, padding=1, name="conv2")
        x = layers.LocalResponseNorm(name="norm2")(x) if lrn else x
        x = layers.max_pool(x, 3, 2, ceil=True)
        for module, channels in INCEPTION_CHANNELS.items():
            if module in POOLED_BEFORE:
                x = layers.max_pool(x, 3, 2, ceil=True)
            x = Inception(tuple(w(c) for c in channels), name=f"inception{module}")(x)
        x = nn.Dropout(0.4, deterministic=not train, name="dropout")(layers.global_avg_pool(x))
        return nn.Dense(self.num_classes, name="fc")(x)


googlenet = functools.partial(GoogLeNet)
