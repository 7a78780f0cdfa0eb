"""Every registered network through the same checks: exact counts, shapes, modes, errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models

# Inception-v4 has no exact paper target (the paper's model is unknown): the standard network of
# Szegedy et al. 2016 with 1000 classes has this many parameters.
INCEPTION_V4_PARAMS = 42_679_816


def expected_params(name):
    """The exact parameter count a network must reproduce at its defaults."""
    target = models.spec(name).paper.params_exact_target
    return target if target is not None else INCEPTION_V4_PARAMS


@pytest.mark.parametrize("name", models.names())
def test_exact_params_and_output_shape_abstractly(name):
    module = models.get(name)
    shape = models.input_shape(name, batch_size=2)
    variables = models.abstract_variables(module, shape)
    assert models.count_params(variables) == expected_params(name)
    out = jax.eval_shape(functools.partial(module.apply, train=False), variables,
                         jax.ShapeDtypeStruct(shape, jnp.float32))
    assert out.shape == (2, 1000)


def test_names_and_specs():
    assert models.names() == ["alexnet", "bn_alexnet", "bn_nin", "enet", "googlenet", "vgg16", "vgg19",
                              "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                              "inception_v3", "inception_v4"]
    sizes = {name: models.spec(name).input_size for name in models.names()}
    assert sizes.pop("alexnet") == 227
    assert sizes.pop("inception_v3") == sizes.pop("inception_v4") == 299
    assert set(sizes.values()) == {224}
    resnet50 = models.spec("resnet50")
    assert (resnet50.display_name, resnet50.family, resnet50.num_classes) == ("ResNet-50", "resnet", 1000)
    assert resnet50.paper.gops_paper == 8.21 and resnet50.paper.top1_percent == 75.99
    assert {"width", "depths", "num_classes"} <= set(resnet50.knobs)
    for family_member in ("vgg16", "enet"):
        assert {"width", "depths", "num_classes"} <= set(models.spec(family_member).knobs)


NEUTRAL_STATISTICS_GROW = ("resnet101", "resnet152", "inception_v4")


# Inception-v3 takes as long to compile here as the other families together: the slow set runs it.
@pytest.mark.networks("alexnet", "bn_nin", "enet", "googlenet", "vgg16", "resnet18")
def test_real_forward_pass_at_min_resolution(network):
    module = models.get(network, num_classes=10)
    resolution = models.spec(network).min_resolution
    x = jax.random.normal(jax.random.key(1), models.input_shape(network, 2, resolution))
    with jax.threefry_partitionable(False):  # as training draws them (train/steps.py): compiles faster
        variables = jax.jit(functools.partial(module.init, train=False))(jax.random.key(0), x)
    apply_eval = jax.jit(functools.partial(module.apply, train=False))
    logits = apply_eval(variables, x)
    assert logits.shape == (2, 10) and bool(jnp.all(jnp.isfinite(logits)))
    np.testing.assert_array_equal(logits, apply_eval(variables, x))  # eval is deterministic
    apply_train = jax.jit(functools.partial(module.apply, train=True, mutable=["batch_stats"]))
    out, updates = apply_train(variables, x, rngs={"dropout": jax.random.key(2)})
    out = out[0] if isinstance(out, tuple) else out
    assert out.shape == (2, 10)
    # Initialised to train: unit-scale inputs give logits of unit scale up to a few tens, not far
    # beyond (GoogLeNet's old initialisation read 30); Inception-v3 at 75 px reads 5 to 15 over seeds.
    # The deepest networks are judged in training mode: in eval mode their fresh, neutral BatchNorm
    # statistics normalise nothing and activations grow with depth (hundreds to 1e4 here; timing
    # calibrates the statistics for that reason, measure/timing.py).
    judged = out if network in NEUTRAL_STATISTICS_GROW else logits
    assert 1e-3 < float(jnp.std(judged)) < 20
    if "batch_stats" in variables:  # train mode moves the running statistics
        old, new = jax.tree.leaves(variables["batch_stats"]), jax.tree.leaves(updates["batch_stats"])
        assert any(not np.allclose(a, b) for a, b in zip(old, new))


def test_unknown_model_names_the_choices():
    with pytest.raises(ValueError, match="unknown model 'resnet9'.*resnet18"):
        models.get("resnet9")
    with pytest.raises(ValueError, match="unknown model"):
        models.spec("vgg11")


def test_unknown_knob_names_the_knobs():
    with pytest.raises(ValueError, match="resnet50 has no knob depth; its knobs are:.*depths"):
        models.get("resnet50", depth=3)


def numpy_knobs(name, depths_as=np.array):
    """A sweep's NumPy-typed values for every knob of a network, and the plain values they stand for."""
    default = models.get(name)
    sweep, plain = {"width": np.float32(0.5), "num_classes": np.int64(10)}, {"width": 0.5, "num_classes": 10}
    if "depths" in models.knobs(name):
        sweep["depths"], plain["depths"] = depths_as([np.int64(d) for d in default.depths]), tuple(default.depths)
    for flag in ("dilated", "aux_head"):
        if flag in models.knobs(name):
            sweep[flag], plain[flag] = np.bool_(True), True
    for choice, value in (("stem", "factorised"), ("block", getattr(default, "block", None))):
        if choice in models.knobs(name):
            sweep[choice], plain[choice] = np.str_(value), value
    assert set(sweep) == set(models.knobs(name))  # every knob is swept
    return sweep, plain


@pytest.mark.parametrize("name", models.names())
def test_numpy_knobs_build_the_plain_python_network(name):
    sweep, plain = numpy_knobs(name)
    from_sweep, from_plain = models.get(name, **sweep), models.get(name, **plain)
    assert from_sweep == from_plain and hash(from_sweep) == hash(from_plain)
    for knob, value in plain.items():  # the module holds plain Python values, not NumPy ones
        assert getattr(from_sweep, knob) == value and type(getattr(from_sweep, knob)) is type(value), knob
    shape = models.input_shape(name, np.int64(1), np.int64(models.spec(name).min_resolution))
    assert all(type(side) is int for side in shape)
    assert models.count_params(models.abstract_variables(from_sweep, shape)) == models.count_params(
        models.abstract_variables(from_plain, shape))


@pytest.mark.parametrize("name", ["resnet18", "vgg19", "enet", "inception_v4"])
@pytest.mark.parametrize("depths_as", [list, tuple, np.array])
def test_depths_from_a_list_tuple_or_array_of_numpy_ints(name, depths_as):
    sweep, plain = numpy_knobs(name, depths_as)
    assert models.get(name, depths=sweep["depths"]).depths == plain["depths"]
    assert models.get(name, depths=sweep["depths"]) == models.get(name, depths=plain["depths"])


NAN = float("nan")
BAD_WIDTHS = [0, -0.5, NAN, float("inf"), -float("inf"), np.float32("nan"), True, np.bool_(True), "1", None,
              np.array([0.5])]
BAD_NUM_CLASSES = [0, -1, 10.5, 10.0, np.float64(10.0), True, np.bool_(True), "10", None]


@pytest.mark.parametrize("name", models.names())
def test_every_family_rejects_bad_widths_and_class_counts_by_name(name):
    for width in BAD_WIDTHS:
        with pytest.raises(models.UserError, match=r": width must be a positive finite number; got "):
            models.get(name, width=width)
    for num_classes in BAD_NUM_CLASSES:
        with pytest.raises(models.UserError, match=r": num_classes must be a positive integer; got "):
            models.get(name, num_classes=num_classes)


@pytest.mark.parametrize("name, knob, value, message", [
    ("resnet18", "depths", (2, 2.5, 2, 2), r"depths must be 4 positive integers, one per stage; got \(2, 2.5"),
    ("resnet18", "depths", np.array([2, 2.5, 2, 2]), r"depths must be 4 positive integers"),
    ("resnet18", "depths", (), r"depths must be 4 positive integers, one per stage; got \(\)"),
    ("vgg16", "depths", [], r"depths must be 5 positive integers"),
    ("enet", "depths", np.array([], np.int64), r"depths must be 4 positive integers"),
    ("inception_v4", "depths", (4, True, 3), r"depths must be 3 positive integers"),
    ("resnet18", "depths", "2222", r"depths must be 4 positive integers"),
    ("resnet18", "depths", (2, 2, 0, 2), r"depths must be 4 positive integers"),
    ("resnet18", "depths", np.array([[2, 2], [2, 2]]), r"depths must be 4 positive integers"),
    ("enet", "dilated", 1, r"dilated must be True or False; got 1"),
    ("enet", "dilated", "yes", r"dilated must be True or False"),
    ("inception_v3", "aux_head", np.int64(1), r"aux_head must be True or False"),
    ("googlenet", "stem", "resnet", r"stem must be one of bvlc, factorised; got 'resnet'"),
    ("googlenet", "stem", 1, r"stem must be one of bvlc, factorised"),
    ("resnet50", "block", "wide", r"block must be one of basic, bottleneck; got 'wide'"),
])
def test_bad_knob_values_raise_naming_the_knob(name, knob, value, message):
    with pytest.raises(models.UserError, match=message):
        models.get(name, **{knob: value})


def test_too_small_resolution_fails_clearly():
    with pytest.raises(ValueError, match="from 32 to 4096"):
        models.input_shape("resnet50", resolution=16)
    module = models.get("resnet50")
    with pytest.raises(ValueError, match="at least 32x32 pixels; got 16x16"):
        models.abstract_variables(module, (1, 16, 16, 3))
    with pytest.raises(ValueError, match="batch size"):
        models.input_shape("resnet50", batch_size=0)


def test_cli_lists_every_network_and_rejects_unknown_names(run_program):
    ok = run_program("models", "--models=enet,resnet18")
    assert ok.returncode == 0 and "5,861,508" in ok.stdout and "11,689,512" in ok.stdout
    bad = run_program("models", "--models=resnet9")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        f"error: unknown model 'resnet9'; choose one of: {', '.join(models.names())}"]
    assert bad.stdout == ""
