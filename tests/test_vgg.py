"""Tests of the VGG family's knobs: width, per-stage depths, resolution and class count."""

import functools

import jax
import numpy as np
import pytest

from measure import cost
from models import layers, vgg

# The paper's G-Ops (30.97 / 39.29) as the paper's counter counts them, exactly, at 224x224.
PAPER_OPS_AT_224 = {"vgg16": 30_973_762_536, "vgg19": 39_299_967_976}


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


def expected(depths, stage_channels, num_classes=1000):
    """VGG parameters from first principles: convs, then fc6 on the 7x7 pooled last map, fc7, fc8."""
    total, c_in = 0, 3
    for depth, c in zip(depths, stage_channels):
        for _ in range(depth):
            total, c_in = total + conv3x3(c_in, c), c
    return total + dense(7 * 7 * c_in, 4096) + dense(4096, 4096) + dense(4096, num_classes)


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


@pytest.mark.parametrize("ctor, params", [(vgg.vgg16, 138_357_544), (vgg.vgg19, 143_667_240)])
def test_parameters_do_not_depend_on_resolution(ctor, params):
    # The last map is 1x1 at 32, 7x7 at 224 and 10x10 at 320; fc6 always reads it pooled to 7x7.
    assert {r: n_params(ctor(), r) for r in (32, 100, 224, 320)} == {r: params for r in (32, 100, 224, 320)}


@pytest.mark.parametrize("name", ["vgg16", "vgg19"])
def test_operations_at_224_are_the_papers(name):
    # The 7x7 pool is the identity at 224, so the counts are those of the network without it.
    counted = cost.count_model(name)
    assert counted.ops("paper", dense_groups=True) == counted.ops("paper") == PAPER_OPS_AT_224[name]


def test_fc6_reads_the_pooled_7x7_grid_at_320():
    x = jax.ShapeDtypeStruct((1, 320, 320, 3), "float32")
    variables = jax.eval_shape(functools.partial(vgg.vgg16().init, train=False), jax.random.key(0), x)
    assert variables["params"]["fc6"]["kernel"].shape == (7 * 7 * 512, 4096)
    fc_macs = 7 * 7 * 512 * 4096 + 4096 * 4096 + 4096 * 1000
    conv_macs_224 = cost.count_model("vgg16").ops("macs") - fc_macs
    # Every map is 10/7 as wide at 320 as at 224: conv MACs grow by (10/7)^2, fc MACs stay.
    assert conv_macs_224 % 49 == 0
    assert cost.count_model("vgg16", resolution=320).ops("macs") == conv_macs_224 // 49 * 100 + fc_macs


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
