"""Every network trains: a jitted value-and-gradient step, and the cost count of that step.

Inception-v3's auxiliary head is left out: it exists only at 299x299 with train=True, and the
default network (aux_head=False), which these tests build, has none.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import models
from measure import cost

BATCH = 2
# A conv with a bias feeding a same-numbered BatchNorm (conv2 -> bn2, conv -> bn): BN subtracts
# the per-channel mean, so the bias's true gradient is zero and what autodiff gives is roundoff.
BN_CANCELLED_BIAS = re.compile(r"conv(\w*)")
# Networks whose every parameter leaf gets a gradient, bar the biases BatchNorm cancels.
NETWORKS_WITH_CANCELLED_BIASES = {"bn_alexnet": 10, "bn_nin": 12, "enet": 1 + 12}  # enet: the initial block and 12 bottlenecks


def random_variables(module, shape, seed=0):
    """He-scaled kernels, small random biases and slopes, neutral norms, drawn with NumPy.

    NumPy draws from the abstract shapes spare compiling each network's initialisers, which
    would cost as long as compiling the training step itself.
    """
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        if len(leaf.shape) >= 2:
            return rng.standard_normal(leaf.shape, np.float32) * np.float32(np.sqrt(2 / np.prod(leaf.shape[:-1])))
        if path[-1].key in ("scale", "var"):
            return np.ones(leaf.shape, np.float32)
        if path[-1].key == "mean":
            return np.zeros(leaf.shape, np.float32)
        return (0.1 * rng.standard_normal(leaf.shape)).astype(np.float32)  # biases, PReLU slopes

    return jax.tree_util.tree_map_with_path(draw, models.abstract_variables(module, shape))


def train_step(module):
    """A jitted step: loss, gradient and updated statistics of softmax cross-entropy."""

    @jax.jit
    def step(variables, x, labels, dropout_key):
        state = {k: v for k, v in variables.items() if k != "params"}

        def loss_fn(params):
            logits, updates = module.apply({"params": params, **state}, x, train=True,
                                           rngs={"dropout": dropout_key}, mutable=list(state))
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), updates

        (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])
        return loss, grads, updates

    return step


def cancelled_biases(params) -> set[str]:
    """Paths of the conv biases whose gradient BatchNorm cancels (see BN_CANCELLED_BIAS)."""
    found = set()

    def visit(tree, path):
        for key, child in tree.items():
            match = BN_CANCELLED_BIAS.fullmatch(key)
            if match and "bias" in child and f"bn{match.group(1)}" in tree:
                found.add(f"{path}/{key}/bias")
            elif isinstance(child, dict) and "kernel" not in child:
                visit(child, f"{path}/{key}")

    visit(params, "")
    return found


def leaves_by_path(tree) -> dict[str, np.ndarray]:
    """The leaves of a nested dict keyed by their '/'-joined path."""
    return {"/" + "/".join(k.key for k in path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


# Inception-v3 takes as long to compile here as the other families together: the slow set runs it.
@pytest.mark.networks("alexnet", "bn_nin", "enet", "googlenet", "vgg16", "resnet18")
def test_jitted_training_step_gives_finite_nonzero_gradients(network):
    name = network
    module = models.get(name)
    # The smallest legal input: compiling 14 gradients dominates this file's time.
    shape = models.input_shape(name, BATCH, models.spec(name).min_resolution)
    variables = random_variables(module, shape)
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape, np.float32)
    labels = rng.integers(0, models.spec(name).num_classes, BATCH)
    loss, grads, updates = train_step(module)(variables, x, labels, jax.random.key(2))

    assert np.isfinite(loss) and loss > 0
    assert jax.tree.structure(grads) == jax.tree.structure(variables["params"])
    assert jax.tree.map(jnp.shape, grads) == jax.tree.map(jnp.shape, variables["params"])
    grad_leaves = leaves_by_path(grads)
    assert all(np.all(np.isfinite(g)) for g in grad_leaves.values())

    cancelled = cancelled_biases(variables["params"])
    assert len(cancelled) == NETWORKS_WITH_CANCELLED_BIASES.get(name, 0)
    zero = sorted(path for path, g in grad_leaves.items() if not np.any(g) and path not in cancelled)
    assert zero == []  # every other leaf, at every depth, gets a gradient
    for path in cancelled:  # zero up to roundoff: about 1e-6 of the conv's kernel gradient, not 1e-2
        kernel = grad_leaves[path.removesuffix("bias") + "kernel"]
        assert np.abs(grad_leaves[path]).max() < 1e-4 * np.abs(kernel).max(), path

    if "batch_stats" in variables:  # every running mean and variance moved
        old, new = leaves_by_path(variables["batch_stats"]), leaves_by_path(updates["batch_stats"])
        assert old.keys() == new.keys()
        assert [path for path in old if np.allclose(old[path], new[path])] == []
    else:
        assert updates == {}


def test_training_step_counts_two_to_four_forward_passes(network):
    name = network
    resolution = models.spec(name).min_resolution
    forward = cost.count_model(name, batch_size=1, resolution=resolution)
    step = cost.count_model(name, batch_size=1, resolution=resolution, train=True)
    assert step.breakdown.unknown_primitives == {}
    # The backward pass costs about two forward passes: gradients of activations and of weights.
    assert 2 < step.ops("flops") / forward.ops("flops") < 4
