"""BN-NIN: Network in Network with BatchNorm, as imagenet-multiGPU.torch's ninbn.lua builds it."""

import functools

import flax.linen as nn

from models import layers

# The total stride (4 * 2 * 2 * 2), resnet.py's rule: 32 -> 8 -> 4 -> 2 -> 1 at block4. Torch's
# pad-1 pools would take smaller inputs, but only by pooling 1x1 maps that are mostly padding.
MIN_RESOLUTION = 32

BN_EPSILON = 1e-3  # ninbn.lua's SpatialBatchNormalization(n, 1e-3)

# (channels, kernel, stride, padding) of the first conv of block1..block4, as ninbn.lua;
# a 3x3/2 pad-1 max pool (Torch floor mode) follows every block but the last.
BLOCKS = (
    (96, 11, 4, 5),
    (256, 5, 1, 2),
    (384, 3, 1, 1),
    (1024, 3, 1, 1),
)


class Block(nn.Module):
    """An mlpconv block: a kxk conv then two 1x1 convs, each followed by BN and ReLU."""

    features: int
    kernel: int
    stride: int
    padding: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        for i, (kernel, stride, padding) in enumerate(
                ((self.kernel, self.stride, self.padding), (1, 1, 0), (1, 1, 0)), 1):
            x = layers.conv(self.features, kernel, stride, padding, name=f"conv{i}", use_bias=True)(x)
            x = nn.relu(layers.batch_norm(train, f"bn{i}", epsilon=BN_EPSILON)(x))
        return x


class NIN(nn.Module):
    """BN-NIN with width (channel multiplier of every block) and num_classes knobs."""

    width: float = 1.0
    num_classes: int = 1000

    def __post_init__(self):
        layers.check_width("bn_nin", self.width)
        layers.check_num_classes("bn_nin", self.num_classes)
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False):
        layers.check_resolution(x, MIN_RESOLUTION, "bn_nin")
        for i, (channels, kernel, stride, padding) in enumerate(BLOCKS, 1):
            features = layers.round_width(channels, self.width)
            x = Block(features, kernel, stride, padding, name=f"block{i}")(x, train)
            if i < len(BLOCKS):
                x = layers.max_pool(x, 3, 2, 1)
        return nn.Dense(self.num_classes, name="fc")(layers.global_avg_pool(x))


bn_nin = functools.partial(NIN)
