"""Family tests of Inception-v3/v4: the auxiliary head, width and depth knobs, stable names, bad knobs."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import inception_v3, inception_v4

V3_PARAMS = 23_834_568
V4_PARAMS = 42_679_816


def abstract(module, resolution=299, train=False):
    """Output shapes and parameter shapes of `module`, traced without allocating anything."""
    x = jax.ShapeDtypeStruct((1, resolution, resolution, 3), jnp.float32)
    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    out, variables = jax.eval_shape(functools.partial(module.init_with_output, train=train), rngs, x)
    return out, variables["params"]


def count(params) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params))


def unit_params(cin, cout, kh, kw=None):
    """A bias-free conv plus its BatchNorm scale and bias."""
    return kh * (kh if kw is None else kw) * cin * cout + 2 * cout


def aux_head_params(num_classes):
    return unit_params(768, 128, 1) + unit_params(128, 768, 5) + 768 * num_classes + num_classes


def halved_count(params) -> int:
    """Parameters expected at width 0.5, from the full-width shapes: every Inception channel count is a
    multiple of 16, so it halves exactly; the 3 image channels and the classes do not change."""
    total = 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        shape = list(leaf.shape)
        if len(shape) == 4:  # conv kernel (kh, kw, in, out)
            shape[2] = shape[2] if shape[2] == 3 else shape[2] // 2
            shape[3] //= 2
        elif len(shape) == 2:  # the classifier's kernel (in, classes)
            shape[0] //= 2
        elif path[-2].key == "bn":
            shape[0] //= 2
        total += int(np.prod(shape))
    return total


@pytest.fixture(scope="module")
def v3_default():
    return abstract(inception_v3.inception_v3())


@pytest.fixture(scope="module")
def v4_default():
    return abstract(inception_v4.inception_v4())


def test_v3_aux_head_with_knob_in_training_returns_aux_logits():
    (logits, aux), params = abstract(inception_v3.inception_v3(aux_head=True, num_classes=10), train=True)
    assert logits.shape == (1, 10) and aux.shape == (1, 10)
    base = V3_PARAMS - 2049 * 1000 + 2049 * 10
    assert count(params["AuxLogits"]) == aux_head_params(10)
    assert count(params) == base + aux_head_params(10)


def test_v3_aux_head_full_count_is_the_known_27m():
    assert V3_PARAMS + aux_head_params(1000) == 27_161_264


def test_v3_aux_head_knob_in_eval_leaves_the_network_unchanged():
    out, params = abstract(inception_v3.inception_v3(aux_head=True))
    assert out.shape == (1, 1000)
    assert "AuxLogits" not in params
    assert count(params) == V3_PARAMS


def test_v3_default_has_no_aux_head_even_in_training():
    out, params = abstract(inception_v3.inception_v3(), train=True)
    assert out.shape == (1, 1000)
    assert "AuxLogits" not in params and count(params) == V3_PARAMS


def test_v3_aux_head_needs_299_in_training_only():
    model = inception_v3.inception_v3(aux_head=True)
    with pytest.raises(ValueError, match="299"):
        abstract(model, resolution=inception_v3.AUX_MIN_RESOLUTION - 1, train=True)
    out, _ = abstract(model, resolution=inception_v3.MIN_RESOLUTION)
    assert out.shape == (1, 1000)


def test_v3_stable_names(v3_default):
    _, params = v3_default
    assert params["Mixed_5b"]["branch3x3dbl_2"]["conv"]["kernel"].shape == (3, 3, 64, 96)
    assert params["Mixed_6b"]["branch7x7_2"]["conv"]["kernel"].shape == (1, 7, 128, 128)
    assert params["Mixed_7c"]["branch3x3_2b"]["bn"]["scale"].shape == (384,)
    assert params["fc"]["kernel"].shape == (2048, 1000)


def test_v3_width_half_halves_every_channel(v3_default):
    _, full = v3_default
    _, half = abstract(inception_v3.inception_v3(width=0.5))
    assert count(half) == halved_count(full)
    assert half["Mixed_5b"]["branch3x3dbl_2"]["conv"]["kernel"].shape == (3, 3, 32, 48)
    assert half["fc"]["kernel"].shape == (1024, 1000)


def inception_a_params():
    return (unit_params(384, 96, 1) + unit_params(384, 64, 1) + unit_params(64, 96, 3) + unit_params(384, 64, 1)
            + unit_params(64, 96, 3) + unit_params(96, 96, 3) + unit_params(384, 96, 1))


def inception_b_params():
    return (unit_params(1024, 384, 1) + unit_params(1024, 192, 1) + unit_params(192, 224, 1, 7)
            + unit_params(224, 256, 7, 1) + unit_params(1024, 192, 1) + unit_params(192, 192, 7, 1)
            + unit_params(192, 224, 1, 7) + unit_params(224, 224, 7, 1) + unit_params(224, 256, 1, 7)
            + unit_params(1024, 128, 1))


def inception_c_params():
    return (unit_params(1536, 256, 1) + unit_params(1536, 384, 1) + 2 * unit_params(384, 256, 1, 3)
            + unit_params(1536, 384, 1) + unit_params(384, 448, 3, 1) + unit_params(448, 512, 1, 3)
            + 2 * unit_params(512, 256, 1, 3) + unit_params(1536, 256, 1))


def test_v4_one_more_block_per_stage_adds_exactly_those_blocks(v4_default):
    _, params = v4_default
    assert count(params["inception_a1"]) == inception_a_params()
    assert count(params["inception_b1"]) == inception_b_params()
    assert count(params["inception_c1"]) == inception_c_params()
    out, deeper = abstract(inception_v4.inception_v4(depths=(5, 8, 4)))
    assert out.shape == (1, 1000)
    assert {"inception_a5", "inception_b8", "inception_c4"} <= set(deeper)
    assert count(deeper) - count(params) == inception_a_params() + inception_b_params() + inception_c_params()


def test_v4_reduction_a_uses_k_l_m_n(v4_default):
    _, params = v4_default
    block = params["reduction_a"]
    assert block["branch1_conv1"]["conv"]["kernel"].shape == (3, 3, 384, 384)  # n
    assert block["branch2_conv1"]["conv"]["kernel"].shape == (1, 1, 384, 192)  # k
    assert block["branch2_conv2"]["conv"]["kernel"].shape == (3, 3, 192, 224)  # l
    assert block["branch2_conv3"]["conv"]["kernel"].shape == (3, 3, 224, 256)  # m
    assert params["fc"]["kernel"].shape == (1536, 1000)


def test_v4_width_half_halves_every_channel(v4_default):
    _, full = v4_default
    _, half = abstract(inception_v4.inception_v4(width=0.5))
    assert count(half) == halved_count(full)
    assert half["inception_a1"]["branch2_conv1"]["conv"]["kernel"].shape == (1, 1, 192, 32)


@pytest.mark.parametrize("knobs", [{"width": 0}, {"width": -0.5}, {"width": "1"}, {"num_classes": 0},
                                   {"num_classes": 10.5}, {"aux_head": "yes"}, {"aux_head": 1}])
def test_v3_bad_knobs(knobs):
    with pytest.raises(ValueError):
        inception_v3.inception_v3(**knobs)


@pytest.mark.parametrize("knobs", [{"depths": (4, 7)}, {"depths": (4, 0, 3)}, {"depths": (4, 7.0, 3)},
                                   {"depths": (4, 7, 3, 1)}, {"depths": 4}, {"width": 0}, {"num_classes": -1},
                                   {"num_classes": 2.0}])
def test_v4_bad_knobs(knobs):
    with pytest.raises(ValueError):
        inception_v4.inception_v4(**knobs)
