"""Tests of GoogLeNet's knobs and its Caffe-specific structure (ceil-mode pools, LRN, branches)."""

import functools

import jax
import numpy as np
import pytest

import models
from models import googlenet, layers


def init_abstract(module, resolution=224):
    """Abstract variables of `module` for one square input."""
    x = jax.ShapeDtypeStruct((1, resolution, resolution, 3), "float32")
    return jax.eval_shape(functools.partial(module.init, train=False), jax.random.key(0), x)


def n_params(module, resolution=224):
    """Parameter count of `module`, traced abstractly."""
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(init_abstract(module, resolution)["params"]))


def conv(c_in, c_out, k):
    """Parameters of a kxk convolution with bias."""
    return k * k * c_in * c_out + c_out


def expected(width=1.0, num_classes=1000):
    """GoogLeNet parameters from the channel table, every channel count rounded as the model does."""
    w = functools.partial(layers.round_width, width=width)
    total = conv(3, w(64), 7) + conv(w(64), w(64), 1) + conv(w(64), w(192), 3)
    c_in = w(192)
    for channels in googlenet.INCEPTION_CHANNELS.values():
        c1, c3r, c3, c5r, c5, cp = (w(c) for c in channels)
        total += (conv(c_in, c1, 1) + conv(c_in, c3r, 1) + conv(c3r, c3, 3) + conv(c_in, c5r, 1)
                  + conv(c5r, c5, 5) + conv(c_in, cp, 1))
        c_in = c1 + c3 + c5 + cp
    return total + c_in * num_classes + num_classes


def test_formula_matches_published_count():
    assert expected() == 6_998_552 == n_params(googlenet.googlenet())


@pytest.mark.parametrize("width", [0.5, 0.75, 2.0])
def test_width_scales_every_conv(width):
    assert n_params(googlenet.googlenet(width=width)) == expected(width)


def test_half_width_about_quarters_conv_params():
    # The classifier only halves (its 1000 outputs are not scaled), so compare the convs alone.
    convs_half, convs_full = expected(0.5) - (512 * 1000 + 1000), expected(1.0) - (1024 * 1000 + 1000)
    assert convs_half / convs_full == pytest.approx(0.25, abs=0.01)


def test_num_classes_changes_only_fc():
    assert n_params(googlenet.googlenet(num_classes=10)) == 6_998_552 - 1024 * 990 - 990


def test_parameters_do_not_depend_on_resolution():
    assert n_params(googlenet.googlenet(), googlenet.MIN_RESOLUTION) == n_params(googlenet.googlenet(), 320)


def test_ceil_mode_pools_and_inception_outputs():
    model = googlenet.googlenet()
    x = jax.ShapeDtypeStruct((1, 224, 224, 3), "float32")
    variables = init_abstract(model)
    _, state = jax.eval_shape(functools.partial(model.apply, capture_intermediates=True), variables, x)
    shapes = {path: state["intermediates"][path]["__call__"][0].shape[1:]
              for path in state["intermediates"] if path.startswith(("inception", "norm"))}
    # Caffe's ceil mode: floor-mode pools would give 55, 27, 13, 6.
    assert shapes["norm1"] == (56, 56, 64)
    assert shapes["norm2"] == (56, 56, 192)
    assert shapes["inception3a"] == (28, 28, 256)
    assert shapes["inception3b"] == (28, 28, 480)
    assert shapes["inception4a"] == (14, 14, 512)
    assert shapes["inception4e"] == (14, 14, 832)
    assert shapes["inception5b"] == (7, 7, 1024)


def test_branch_names_and_kernels():
    params = init_abstract(googlenet.googlenet())["params"]
    assert sorted(params["inception3a"]) == ["b1_conv1", "b2_conv1", "b2_conv2", "b3_conv1", "b3_conv2",
                                             "b4_conv1"]
    assert params["inception3a"]["b3_conv2"]["kernel"].shape == (5, 5, 16, 32)
    assert params["inception5b"]["b2_conv2"]["kernel"].shape == (3, 3, 192, 384)


@pytest.mark.parametrize("knobs", [dict(width=0), dict(width=-1.0), dict(width=float("nan")), dict(num_classes=0),
                                   dict(num_classes="10"), dict(num_classes=10.5)])
def test_bad_knobs_raise(knobs):
    with pytest.raises(ValueError):
        googlenet.googlenet(**knobs)


def test_too_small_resolution_raises():
    with pytest.raises(ValueError, match="at least 31"):
        n_params(googlenet.googlenet(), googlenet.MIN_RESOLUTION - 1)


def test_factorised_stem_is_the_first_authors_torch_googlenet():
    module = googlenet.googlenet(stem="factorised")
    variables = models.abstract_variables(module, (1, 224, 224, 3))
    assert models.count_params(variables) == 6_991_880  # rounds to the paper's 6.99 M as BVLC's does
    params = variables["params"]
    assert [params[f"conv1_{c}"]["kernel"].shape for c in "rgb"] == [(7, 7, 1, 8)] * 3
    assert params["conv1_mix"]["kernel"].shape == (1, 1, 24, 64)
    assert "conv1" not in params
    with pytest.raises(ValueError, match="stem must be one of bvlc, factorised"):
        googlenet.googlenet(stem="resnet")
