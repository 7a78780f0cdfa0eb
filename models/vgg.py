"""VGG-16 and VGG-19 (Simonyan & Zisserman 2015, configurations D and E), without BatchNorm.

The last feature map is averaged adaptively into 7x7 before fc6, as torchvision's
AdaptiveAvgPool2d((7, 7)) does: the identity at 224 (where the map is already 7x7), so the
networks are exactly the paper's there (138,357,544 and 143,667,240 parameters, the same
operations), and fc6 keeps its 25088 inputs, so the parameter count does not change with the
input resolution (the operation count does).
"""

import functools
from typing import Sequence

import flax.linen as nn

from models import layers

MIN_RESOLUTION = 32  # five floor-mode 2x2/2 max-pools leave one pixel at 32 and none below

# Conv channels of the five stages at width 1; the fc hidden size is not scaled by `width`.
STAGE_CHANNELS = (64, 128, 256, 512, 512)
FC_HIDDEN = 4096
FEATURE_GRID = 7  # fc6 reads a 7x7 map, the last stage's output at 224


class Stage(nn.Module):
    """`depth` 3x3 convolutions with bias and ReLU, then a 2x2 stride-2 max-pool."""

    depth: int
    features: int

    @nn.compact
    def __call__(self, x):
        for i in range(self.depth):
            x = nn.relu(layers.conv(self.features, 3, 1, 1, use_bias=True, name=f"conv{i + 1}")(x))
        return layers.max_pool(x, 2, 2)


class VGG(nn.Module):
    """VGG with width (conv channel multiplier) and convs-per-stage knobs."""

    depths: Sequence[int] = (2, 2, 3, 3, 3)
    width: float = 1.0
    num_classes: int = 1000

    def __post_init__(self):
        layers.check_width("vgg", self.width)
        layers.check_num_classes("vgg", self.num_classes)
        layers.check_depths("vgg", self.depths, len(STAGE_CHANNELS))
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False):
        layers.check_resolution(x, MIN_RESOLUTION, "vgg")
        for i, (depth, channels) in enumerate(zip(self.depths, STAGE_CHANNELS)):
            x = Stage(depth, layers.round_width(channels, self.width), name=f"stage{i + 1}")(x)
        return classifier(x, self.num_classes, train)


def classifier(x, num_classes: int, train: bool):
    """fc6 and fc7 (4096, ReLU, dropout 0.5) then fc8, on the last feature map pooled to 7x7.

    Called inside VGG's compact method, so fc6/fc7/fc8 are named at the top level.
    """
    # Flattened in HWC order (Torch/Caffe flatten CHW): same counts, permuted fc6 rows.
    x = layers.adaptive_avg_pool(x, FEATURE_GRID).reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(FC_HIDDEN, name="fc6")(x))
    x = nn.Dropout(0.5, deterministic=not train, name="drop6")(x)
    x = nn.relu(nn.Dense(FC_HIDDEN, name="fc7")(x))
    x = nn.Dropout(0.5, deterministic=not train, name="drop7")(x)
    return nn.Dense(num_classes, name="fc8")(x)


vgg16 = functools.partial(VGG, depths=(2, 2, 3, 3, 3))
vgg19 = functools.partial(VGG, depths=(2, 2, 4, 4, 4))
