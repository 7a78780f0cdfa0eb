"""The ResNet family's knobs: width, depths and block type change counts exactly as they should."""

import pytest

import models
from models import layers


def params(name, resolution=224, **overrides):
    """Parameters of a registered network with overrides, counted abstractly."""
    return models.count_params(models.abstract_variables(models.get(name, **overrides),
                                                         (1, resolution, resolution, 3)))


def conv_bn(cin, cout, k):
    """Parameters of a bias-free k x k convolution followed by BatchNorm."""
    return k * k * cin * cout + 2 * cout


def basic_resnet_params(widths, depths, stem, classes=1000):
    """Hand count of a basic-block ResNet: stem, stages with projections, classifier."""
    total, cin = conv_bn(3, stem, 7), stem
    for width, depth in zip(widths, depths):
        for _ in range(depth):
            total += conv_bn(cin, width, 3) + conv_bn(width, width, 3)
            total += conv_bn(cin, width, 1) if cin != width else 0
            cin = width
    return total + cin * classes + classes


def test_width_half_matches_a_hand_count():
    widths = [layers.round_width(c, 0.5) for c in (64, 128, 256, 512)]
    assert widths == [32, 64, 128, 256]
    assert params("resnet18", width=0.5) == basic_resnet_params(widths, (2, 2, 2, 2), stem=32)
    assert params("resnet18") == basic_resnet_params((64, 128, 256, 512), (2, 2, 2, 2), stem=64)


def test_one_more_bottleneck_adds_exactly_one_block():
    block = conv_bn(1024, 256, 1) + conv_bn(256, 256, 3) + conv_bn(256, 1024, 1)
    assert params("resnet50", depths=(3, 4, 7, 3)) - params("resnet50") == block == 1_117_184


def test_resnet101_is_resnet50_with_seventeen_more_stage3_blocks():
    assert params("resnet50", depths=(3, 4, 23, 3)) == params("resnet101")


def test_resolution_and_classes_change_only_what_they_should():
    assert params("resnet18", resolution=128) == params("resnet18")  # global pooling
    assert params("resnet18") - params("resnet18", num_classes=10) == 990 * 513


@pytest.mark.parametrize("width, expected", [(1.0, 64), (0.25, 16), (0.3, 24), (1.5, 96), (0.1, 8)])
def test_round_width(width, expected):
    assert layers.round_width(64, width) == expected
