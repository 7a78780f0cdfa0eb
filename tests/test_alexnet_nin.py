"""Knob-specific checks of AlexNet, BN-AlexNet and BN-NIN, traced abstractly."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import pytest

from models import alexnet, layers, nin


def _variables(module, r):
    """The abstract variables of `module` for one r x r image."""
    x = jax.ShapeDtypeStruct((1, r, r, 3), jnp.float32)
    return jax.eval_shape(functools.partial(module.init, train=False), jax.random.key(0), x)


def _count(tree):
    """Number of scalars in a tree of shapes."""
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _intermediates(module, r):
    """Output shapes of every submodule for an r x r input."""
    x = jax.ShapeDtypeStruct((1, r, r, 3), jnp.float32)
    variables = _variables(module, r)
    apply = functools.partial(module.apply, train=False, capture_intermediates=True, mutable=["intermediates"])
    return jax.eval_shape(apply, variables, x)[1]["intermediates"]


def _alexnet_params(c1, c2, c3, c4, c5, hidden, classes):
    """BVLC AlexNet: conv2, conv4 and conv5 in two groups, so each sees half its input channels."""
    convs = (121 * 3 * c1 + c1) + (25 * c1 // 2 * c2 + c2) + (9 * c2 * c3 + c3) \
        + (9 * c3 // 2 * c4 + c4) + (9 * c4 // 2 * c5 + c5)
    return convs + (36 * c5 * hidden + hidden) + (hidden * hidden + hidden) + (hidden * classes + classes)


def _bn_alexnet_params(b1, b2, b3, b4, b5, hidden, classes):
    """Two identical towers (conv with bias + BN scale and bias), then fc6 on their concatenation."""
    tower = (121 * 3 * b1 + 3 * b1) + (25 * b1 * b2 + 3 * b2) + (9 * b2 * b3 + 3 * b3) \
        + (9 * b3 * b4 + 3 * b4) + (9 * b4 * b5 + 3 * b5)
    return 2 * tower + (36 * 2 * b5 * hidden + hidden) + (hidden * hidden + hidden) \
        + (hidden * classes + classes)


def _nin_params(c1, c2, c3, c4, classes, bn=True):
    """Each block: kxk conv, two 1x1 convs, all with bias, each followed by BN (scale and bias)."""
    total, cin = 0, 3
    for c, k in ((c1, 11), (c2, 5), (c3, 3), (c4, 3)):
        total += k * k * cin * c + c + 2 * (c * c + c) + (6 * c if bn else 0)
        cin = c
    return total + c4 * classes + classes


def test_alexnet_width_scales_convs_and_fc_hidden():
    assert _alexnet_params(96, 256, 384, 384, 256, 4096, 1000) == 60_965_224
    assert _count(_variables(alexnet.alexnet(), 227)["params"]) == 60_965_224
    half = _count(_variables(alexnet.alexnet(width=0.5), 227)["params"])
    assert half == _alexnet_params(48, 128, 192, 192, 128, 2048, 1000)


def test_alexnet_grouped_convs_see_half_their_inputs():
    params = _variables(alexnet.alexnet(), 227)["params"]
    assert params["conv2"]["kernel"].shape == (5, 5, 48, 256)
    assert params["conv3"]["kernel"].shape == (3, 3, 256, 384)
    assert params["conv4"]["kernel"].shape == (3, 3, 192, 384)
    assert params["conv5"]["kernel"].shape == (3, 3, 192, 256)
    assert params["fc6"]["kernel"].shape == (9216, 4096)


def test_bn_alexnet_width_and_two_independent_towers():
    assert _bn_alexnet_params(48, 128, 192, 192, 128, 4096, 1000) == 60_525_608
    params = _variables(alexnet.bn_alexnet(), 224)["params"]
    assert jax.tree.map(lambda a: a.shape, params["branch1"]) == jax.tree.map(lambda a: a.shape, params["branch2"])
    assert params["branch1"]["conv1"]["kernel"].shape == (11, 11, 3, 48)
    assert params["fc6"]["kernel"].shape == (2 * 128 * 36, 4096)
    half = _count(_variables(alexnet.bn_alexnet(width=0.5), 224)["params"])
    assert half == _bn_alexnet_params(24, 64, 96, 96, 64, 2048, 1000)


def test_nin_width_and_batchnorm_share():
    full = _variables(nin.bn_nin(), 224)["params"]
    assert _count(full) == _nin_params(96, 256, 384, 1024, 1000) == 8_655_336
    # The paper's figure (8.64 M) leaves out BN scale and bias.
    without_bn = sum(_count(block[name]) for block in full.values() for name in block if not name.startswith("bn"))
    assert without_bn == _nin_params(96, 256, 384, 1024, 1000, bn=False) == 8_644_776
    half = _count(_variables(nin.bn_nin(width=0.5), 224)["params"])
    assert half == _nin_params(48, 128, 192, 512, 1000)


@pytest.mark.parametrize("ctor,r,fc,hidden", [(alexnet.alexnet, 227, "fc8", 4096),
                                              (alexnet.bn_alexnet, 224, "fc8", 4096),
                                              (nin.bn_nin, 224, "fc", 1024)])
def test_num_classes_changes_only_the_classifier(ctor, r, fc, hidden):
    full, ten = _variables(ctor(), r)["params"], _variables(ctor(num_classes=10), r)["params"]
    assert _count(full) - _count(ten) == (hidden + 1) * 990
    assert ten[fc]["kernel"].shape == (hidden, 10)


def test_caffe_ceil_pooling_only_in_bvlc_alexnet():
    # conv1 gives 56x56 in both; ceil((56 - 3) / 2) + 1 = 28, floor gives 27.
    caffe = _intermediates(alexnet.alexnet(), 231)
    assert caffe["conv1"]["__call__"][0].shape[1:3] == (56, 56)
    assert caffe["conv2"]["__call__"][0].shape[1:3] == (28, 28)
    torch = _intermediates(alexnet.bn_alexnet(), 227)
    assert torch["branch1"]["conv1"]["__call__"][0].shape[1:3] == (56, 56)
    assert torch["branch1"]["conv2"]["__call__"][0].shape[1:3] == (27, 27)


def test_nin_floor_pooling_leaves_7x7_for_the_average_pool():
    shapes = _intermediates(nin.bn_nin(), 224)
    assert [shapes[f"block{i}"]["__call__"][0].shape[1] for i in range(1, 5)] == [56, 28, 14, 7]


@pytest.mark.parametrize("ctor,default", [(alexnet.alexnet, 227), (alexnet.bn_alexnet, 224)])
def test_alexnet_parameters_do_not_depend_on_resolution(ctor, default):
    counts = {r: _count(_variables(ctor(), r)["params"]) for r in (default, 160, 320)}
    assert len(set(counts.values())) == 1


def test_adaptive_avg_pool_matches_torchvision_bins():
    x = jnp.arange(2 * 12 * 12 * 3, dtype=jnp.float32).reshape(2, 12, 12, 3)
    expected = x.reshape(2, 6, 2, 6, 2, 3).mean(axis=(2, 4))
    np.testing.assert_allclose(layers.adaptive_avg_pool(x, 6), expected, rtol=1e-6)
    y = jnp.ones((1, 6, 6, 4))
    assert layers.adaptive_avg_pool(y, 6) is y
    z = jnp.arange(13 * 13, dtype=jnp.float32).reshape(1, 13, 13, 1)
    # Bins overlap when 6 does not divide 13: bin 1 spans rows and columns 2..4.
    np.testing.assert_allclose(layers.adaptive_avg_pool(z, 6)[0, 1, 1, 0], z[0, 2:5, 2:5, 0].mean(), rtol=1e-6)


@pytest.mark.parametrize("ctor,minimum,path", [(alexnet.alexnet, alexnet.MIN_RESOLUTION, ("conv5",)),
                                               (alexnet.bn_alexnet, alexnet.BN_MIN_RESOLUTION,
                                                ("branch1", "conv5")),
                                               (nin.bn_nin, nin.MIN_RESOLUTION, ("block3",))])
def test_min_resolution_leaves_one_pixel_after_the_last_pool(ctor, minimum, path):
    shapes = _intermediates(ctor(), minimum)
    for key in path:
        shapes = shapes[key]
    # The alexnets' unpadded last pool has exactly a 3x3 map to pool; NIN's pad-1 pool halves 2x2 to 1.
    assert shapes["__call__"][0].shape[1] == (2 if ctor is nin.bn_nin else 3)
    with pytest.raises(ValueError, match=str(minimum)):
        _variables(ctor(), minimum - 1)


def test_bn_epsilon_is_torchs_1e3():
    seen = []

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.BatchNorm):
            seen.append(context.module.epsilon)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        _variables(alexnet.bn_alexnet(), 224)
        _variables(nin.bn_nin(), 224)
    assert len(seen) == 2 * 5 + 4 * 3 and set(seen) == {1e-3}


@pytest.mark.parametrize("ctor", [alexnet.alexnet, alexnet.bn_alexnet, nin.bn_nin])
@pytest.mark.parametrize("knobs", [dict(width=0), dict(width=-0.5), dict(width="1"), dict(num_classes=0),
                                   dict(num_classes=10.5), dict(num_classes=True)])
def test_bad_knobs_raise(ctor, knobs):
    with pytest.raises(ValueError):
        ctor(**knobs)


def test_local_response_norm_is_caffes_formula():
    x = np.random.default_rng(0).standard_normal((2, 3, 3, 7)).astype(np.float32) * 10
    squares = np.pad(x**2, ((0, 0), (0, 0), (0, 0), (2, 2)))  # a 5-channel window centred on c
    window_sums = np.stack([squares[..., c:c + 5].sum(-1) for c in range(7)], axis=-1)
    expected = x / (1.0 + 1e-4 / 5 * window_sums) ** 0.75
    np.testing.assert_allclose(layers.LocalResponseNorm().apply({}, x), expected, rtol=1e-6)


def test_local_response_norm_has_a_reverse_mode_gradient():
    x = jnp.asarray(np.random.default_rng(1).standard_normal((1, 2, 2, 6)), jnp.float32) * 30
    lrn = functools.partial(layers.LocalResponseNorm(alpha=1.0).apply, {})
    # Under jit, where an array init value used to make the generic, non-transposable reduce_window.
    jax.test_util.check_grads(jax.jit(lrn), (x,), order=1, modes=["rev"], atol=1e-2, rtol=1e-2)
    assert "reduce_window_sum" in str(jax.make_jaxpr(lrn)(x))  # the primitive with a transpose rule
