"""Tests of the VGG family's knobs: width, per-stage depths, resolution and class count."""

import functools

import jax
import numpy as np
import pytest

from models import layers, vgg


def n_params(module, resolution=224):
    """Parameter count of `module` for one square input, traced abstractly."""
    x = jax.ShapeDtypeStruct((1, resolution, resolution, 3), "float32")
    variables = jax.eval_shape(functools.partial(module.init, train=False), jax.random.key(0), x)
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(variables["params"]))


def conv3x3(c_in, c_out):
    """Parameters of a 3x3 convolution with bias."""
    return 9 * c_in * c_out + c_out


def dense(n_in, n_out):
    """Parameters of a fully connected layer with bias."""
    return n_in * n_out + n_out


def expected(depths, stage_channels, final_size=7, num_classes=1000):
    """VGG parameters from first principles: convs, then fc6 on the flattened last map, fc7, fc8."""
    total, c_in = 0, 3
    for depth, c in zip(depths, stage_channels):
        for _ in range(depth):
            total, c_in = total + conv3x3(c_in, c), c
    return total + dense(final_size**2 * c_in, 4096) + dense(4096, 4096) + dense(4096, num_classes)


def test_formula_matches_published_counts():
    assert expected((2, 2, 3, 3, 3), (64, 128, 256, 512, 512)) == 138_357_544 == n_params(vgg.vgg16())
    assert expected((2, 2, 4, 4, 4), (64, 128, 256, 512, 512)) == 143_667_240 == n_params(vgg.vgg19())


def test_half_width_scales_convs_and_fc6_input_but_not_fc_hidden():
    assert [layers.round_width(c, 0.5) for c in (64, 128, 256, 512)] == [32, 64, 128, 256]
    want = expected((2, 2, 3, 3, 3), (32, 64, 128, 256, 256))
    assert want == 3_680_160 + dense(7 * 7 * 256, 4096) + dense(4096, 4096) + dense(4096, 1000)
    assert n_params(vgg.vgg16(width=0.5)) == want
    # Conv weights shrink about 4x (only the 3-channel input of conv1 breaks the exact quarter).
    assert 3_680_160 / 14_714_688 == pytest.approx(0.25, abs=1e-3)


def test_one_more_conv_adds_exactly_that_conv():
    base = n_params(vgg.vgg16())
    assert n_params(vgg.vgg16(depths=(2, 2, 4, 3, 3))) - base == conv3x3(256, 256)
    assert n_params(vgg.vgg16(depths=(3, 2, 3, 3, 3))) - base == conv3x3(64, 64)
    assert n_params(vgg.vgg16(depths=(2, 2, 3, 3, 4))) - base == conv3x3(512, 512)


def test_vgg19_is_vgg16_with_one_more_conv_in_stages_3_to_5():
    assert n_params(vgg.vgg19()) - n_params(vgg.vgg16()) == conv3x3(256, 256) + 2 * conv3x3(512, 512)


@pytest.mark.parametrize("resolution, final_size", [(32, 1), (100, 3), (256, 8)])
def test_resolution_changes_only_fc6(resolution, final_size):
    delta = (final_size**2 - 7**2) * 512 * 4096
    assert n_params(vgg.vgg16(), resolution) - n_params(vgg.vgg16()) == delta


def test_num_classes_changes_only_fc8():
    assert n_params(vgg.vgg16(num_classes=10)) - n_params(vgg.vgg16()) == dense(4096, 10) - dense(4096, 1000)


def test_module_paths():
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), "float32")
    params = jax.eval_shape(functools.partial(vgg.vgg19().init, train=False), jax.random.key(0), x)["params"]
    assert sorted(params) == ["fc6", "fc7", "fc8", "stage1", "stage2", "stage3", "stage4", "stage5"]
    assert sorted(params["stage3"]) == ["conv1", "conv2", "conv3", "conv4"]
    assert params["stage3"]["conv2"]["kernel"].shape == (3, 3, 256, 256)


@pytest.mark.parametrize("knobs", [dict(width=0), dict(width=-0.5), dict(num_classes=0),
                                   dict(depths=(2, 2, 3, 3)), dict(depths=(2, 2, 0, 3, 3)),
                                   dict(depths=(2, 2, 3.0, 3, 3)), dict(width=float("nan")), dict(num_classes=10.5),
                                   dict(depths=())])
def test_bad_knobs_raise(knobs):
    with pytest.raises(ValueError):
        vgg.vgg16(**knobs)


def test_too_small_resolution_raises():
    with pytest.raises(ValueError, match="at least 32"):
        n_params(vgg.vgg16(), vgg.MIN_RESOLUTION - 1)
