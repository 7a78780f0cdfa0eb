"""Tests of ENet's knobs: width, depths, the dilated (V12) variant and the zero-padded shortcut."""

import functools
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import enet, layers


def abstract(module, resolution=64):
    """Abstract variables and output of `module` on one RGB image: nothing is allocated."""
    x = jax.ShapeDtypeStruct((1, resolution, resolution, 3), jnp.float32)
    variables = jax.eval_shape(functools.partial(module.init, train=False), jax.random.key(0), x)
    out = jax.eval_shape(functools.partial(module.apply, train=False), variables, x)
    return variables, out


def n_params(tree):
    """Number of scalars in a parameter tree."""
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def random_variables(module, shape):
    """Random variables of the right shapes without running init (which is slow to compile)."""
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    shapes = jax.eval_shape(functools.partial(module.init, train=False), jax.random.key(0), x)
    rng = np.random.default_rng(0)

    def fill(path, leaf):
        if path[-1].key == "var":
            return jnp.ones(leaf.shape)
        return jnp.asarray(rng.normal(0.0, 0.1, leaf.shape), jnp.float32)
    return jax.tree_util.tree_map_with_path(fill, shapes)


def bottleneck_params(cin, cout, internal, downsample):
    """Parameters of one bottleneck by the enet.lua definition (BN scale and bias, PReLU slopes)."""
    k = 2 if downsample else 1
    projection = cin * internal * k * k + 3 * internal  # conv, BN scale and bias, PReLU
    middle = internal * internal * 9 + internal + 3 * internal  # 3x3 conv with bias
    return projection + middle + internal * cout + 3 * cout  # 1x1 conv, BN, PReLU after the sum


def expected_params(width=1.0, depths=(3, 3, 3, 3), num_classes=1000):
    """ENet's parameter count computed from its definition."""
    stem = layers.round_width(16, width)
    total = (stem - 3) * 28 + 3 * stem
    cin = stem
    for i, depth in enumerate(depths):
        features = layers.round_width(128 * 2**i, width)
        first = layers.round_width(64, width) if i == 0 else features
        total += bottleneck_params(cin, first, first if i == 0 else first // 4, True)
        total += sum(bottleneck_params(first if j == 0 else features, features, features // 4, False)
                     for j in range(depth - 1))
        cin = features if depth > 1 else first
    return total + cin * num_classes + num_classes


def test_formula_matches_paper_target():
    assert expected_params() == 5_861_508


def test_dilated_keeps_counts_and_shape():
    plain_vars, plain_out = abstract(enet.enet(), 224)
    dilated_vars, dilated_out = abstract(enet.enet(dilated=True), 224)
    assert n_params(dilated_vars["params"]) == n_params(plain_vars["params"]) == 5_861_508
    assert dilated_out.shape == plain_out.shape == (1, 1000)
    assert jax.tree.map(lambda l: l.shape, dilated_vars) == jax.tree.map(lambda l: l.shape, plain_vars)


def conv_dilations(module, resolution=64):
    """The rhs dilations of every convolution in the traced forward pass."""
    x = jax.ShapeDtypeStruct((1, resolution, resolution, 3), jnp.float32)
    variables, _ = abstract(module, resolution)
    jaxpr = jax.make_jaxpr(functools.partial(module.apply, train=False))(variables, x)
    return [tuple(eqn.params["rhs_dilation"]) for eqn in jaxpr.eqns
            if eqn.primitive.name == "conv_general_dilated"]


def test_dilated_sets_2_4_8_on_last_bottlenecks():
    assert {d for d in conv_dilations(enet.enet())} == {(1, 1)}
    dilated = [d for d in conv_dilations(enet.enet(dilated=True)) if d != (1, 1)]
    assert dilated == [(2, 2), (4, 4), (8, 8)]


@pytest.mark.parametrize("width", [0.5, 0.25, 2.0])
def test_width_scales_every_stage(width):
    variables, out = abstract(enet.enet(width=width))
    assert n_params(variables["params"]) == expected_params(width=width)
    assert out.shape == (1, 1000)
    stem = layers.round_width(16, width)
    assert variables["params"]["initial"]["conv"]["kernel"].shape == (3, 3, 3, stem - 3)
    assert variables["params"]["fc"]["kernel"].shape == (layers.round_width(1024, width), 1000)


def test_width_half_initial_conv_follows_scaled_16():
    variables, _ = abstract(enet.enet(width=0.5))
    assert variables["params"]["initial"]["conv"]["kernel"].shape == (3, 3, 3, 5)
    assert variables["params"]["initial"]["bn"]["scale"].shape == (8,)


@pytest.mark.parametrize("stage, extra", [(0, bottleneck_params(128, 128, 32, False)),
                                          (2, bottleneck_params(512, 512, 128, False))])
def test_one_more_bottleneck_adds_exactly_its_parameters(stage, extra):
    depths = [3, 3, 3, 3]
    depths[stage] += 1
    variables, _ = abstract(enet.enet(depths=tuple(depths)))
    assert n_params(variables["params"]) == 5_861_508 + extra
    assert "bottleneck4" in variables["params"][f"stage{stage + 1}"]


def test_single_bottleneck_stages():
    variables, out = abstract(enet.enet(depths=(1, 1, 1, 1)))
    assert n_params(variables["params"]) == expected_params(depths=(1, 1, 1, 1))
    # Stage 1 then ends at 64 channels; stage 2's downsampling bottleneck pads them to 256.
    assert variables["params"]["stage2"]["bottleneck1"]["conv1"]["kernel"].shape == (2, 2, 64, 64)
    assert out.shape == (1, 1000)


def test_module_paths():
    variables, _ = abstract(enet.enet())
    params = variables["params"]
    assert set(params) == {"initial", "stage1", "stage2", "stage3", "stage4", "fc"}
    assert set(params["stage2"]["bottleneck3"]) == {"conv1", "bn1", "prelu1", "conv2", "bn2", "prelu2",
                                                    "conv3", "bn3", "prelu"}
    assert params["stage1"]["bottleneck1"]["conv1"]["kernel"].shape == (2, 2, 16, 64)  # internal = out
    assert params["stage1"]["bottleneck2"]["conv3"]["kernel"].shape == (1, 1, 32, 128)  # the 64->128 widening
    assert params["stage2"]["bottleneck3"]["conv2"]["bias"].shape == (64,)
    assert params["stage4"]["bottleneck1"]["prelu"]["slope"].shape == (1024,)


def test_spatial_dropout_rates():
    found = {}

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.Dropout):
            found["/".join(context.module.path)] = (context.module.rate, context.module.broadcast_dims)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        abstract(enet.enet(depths=(2, 4, 3, 3)))
    rates = [found[f"stage{s}/bottleneck{b}/dropout"][0] for s, d in enumerate((2, 4, 3, 3), 1)
             for b in range(1, d + 1)]
    assert rates == [0.01] * 5 + [0.1] * 7
    assert {dims for _, dims in found.values()} == {(1, 2)}


def test_spatial_dropout_drops_whole_channels():
    # With the main branch a constant 1 (bn3 scale 0, bias 1) and a zero input, the output is what
    # dropout leaves: 0 or 1 / (1 - 0.5) = 2, one value per (sample, channel).
    block = enet.Bottleneck(features=16, internal=4, dropout=0.5)
    x = jnp.zeros((4, 6, 6, 16))
    variables = random_variables(block, x.shape)
    variables["params"]["bn3"] = {"scale": jnp.zeros(16), "bias": jnp.ones(16)}
    y, _ = jax.jit(block.apply, static_argnames=("train", "mutable"))(
        variables, x, train=True, rngs={"dropout": jax.random.key(2)}, mutable=("batch_stats",))
    assert bool(jnp.all(y == y[:, :1, :1, :]))  # constant over H and W
    assert set(np.unique(np.asarray(y))) == {0.0, 2.0}


@pytest.mark.parametrize("downsample", [False, True])
def test_zero_padded_shortcut(downsample):
    # With the main branch silenced (bn3 scale and bias 0), the block is PReLU(padded shortcut).
    block = enet.Bottleneck(features=24, internal=4, downsample=downsample)
    x = jax.random.uniform(jax.random.key(0), (1, 6, 6, 8), minval=0.1, maxval=1.0)
    variables = random_variables(block, x.shape)
    variables["params"]["bn3"] = {"scale": jnp.zeros(24), "bias": jnp.zeros(24)}
    y = jax.jit(block.apply)(variables, x)
    kept = layers.max_pool(x, 2, 2) if downsample else x
    assert y.shape == (1, kept.shape[1], kept.shape[2], 24)
    np.testing.assert_allclose(y[..., :8], kept, rtol=1e-6)
    assert bool(jnp.all(y[..., 8:] == 0))


def test_forward_where_channels_grow():
    # Width 0.75 rounds stages to 48/96/192/384/768 channels, every widening through the padded shortcut;
    # the odd size goes through the ceil-mode initial pool. Every widening happens in stage 1's first
    # two bottlenecks or a later stage's first: the blocks after those repeat them and only lengthen the compile.
    model = enet.enet(width=0.75, depths=(2, 1, 1, 1), num_classes=7)
    x = jax.random.normal(jax.random.key(0), (2, 33, 33, 3))
    variables = random_variables(model, x.shape)
    apply = jax.jit(model.apply, static_argnames=("train", "mutable"))
    y = apply(variables, x)
    y_train, _ = apply(variables, x, train=True, rngs={"dropout": jax.random.key(2)}, mutable=("batch_stats",))
    assert y.shape == y_train.shape == (2, 7)
    assert bool(jnp.all(jnp.isfinite(y)))
    np.testing.assert_array_equal(y, apply(variables, x))  # eval is deterministic


def test_min_resolution():
    assert enet.MIN_RESOLUTION == 31
    assert abstract(enet.enet(), 31)[1].shape == (1, 1000)
    with pytest.raises(ValueError, match="at least 31"):
        abstract(enet.enet(), 30)


@pytest.mark.parametrize("knobs", [dict(width=0), dict(width=-0.5), dict(depths=(3, 3, 3)),
                                   dict(depths=(3, 0, 3, 3)), dict(depths=(3, 3.0, 3, 3)),
                                   dict(dilated="yes"), dict(dilated=1), dict(num_classes=0),
                                   dict(num_classes=10.5), dict(width=float("inf"))])
def test_bad_knobs(knobs):
    with pytest.raises(ValueError):
        enet.ENet(**knobs)


def test_prelu_values_and_slope_gradient():
    """PReLU is x where x >= 0, else its channel's slope times x; the slope learns from the negative inputs only."""
    x = jnp.array([[-2.0, -0.5, 0.0, 3.0], [1.0, -1.0, -0.0, 0.5]])
    prelu = layers.PReLU()
    variables = prelu.init(jax.random.key(0), x)
    slope = jnp.array([0.25, 0.5, 2.0, 0.1])
    y = prelu.apply({"params": {"slope": slope}}, x)
    np.testing.assert_array_equal(y, jnp.where(x >= 0, x, slope * x))
    assert variables["params"]["slope"].tolist() == [0.25] * 4
    grad = jax.grad(lambda s: prelu.apply({"params": {"slope": s}}, x).sum())(slope)
    np.testing.assert_array_equal(grad, jnp.minimum(x, 0).sum(axis=0))


_FUSION_PROGRAM = """
from core import runtime
flags = runtime.configure()["xla_flags"]  # the flags every timing runs with
import jax, jax.numpy as jnp
from models import enet
module = enet.Bottleneck(64, 16)
x = jnp.ones((16, 32, 32, 64))
variables = module.init(jax.random.key(0), x)
program = jax.jit(module.apply).lower(variables, x).compile().as_text()
entry = program[program.index("ENTRY"):].splitlines()
print("CPU_OPT_PRESET_FAST_COMPILE" in flags, sum(" fusion(" in line and "[16,32,32," in line for line in entry))
"""


def test_each_batch_norm_and_prelu_compile_to_one_pass_over_the_activations():
    """A bottleneck's three BatchNorm -> PReLU pairs (the last with the shortcut's sum) are at most three
    fusions on XLA:CPU under the runtime's flags; PReLU as jnp.where made nine (the BatchNorm, the slope's
    product and the comparison apart, then the select), and ENet at 224 px, batch 16, a tenth slower."""
    done = subprocess.run([sys.executable, "-c", _FUSION_PROGRAM], capture_output=True, text=True, timeout=300,
                          check=True)
    preset, fusions = done.stdout.split()[-2:]
    if preset != "True":
        pytest.skip("this jaxlib runs without the XLA:CPU preset, whose fusions this checks")
    assert int(fusions) <= 3  # activation-sized passes (and masks)
