"""The train steps' BatchNorm moments and precise statistics: exact on hand-made data, and why evaluation needs them."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from models import layers
from train import config as config_lib
from train import input_pipeline, steps
from train import trainer as train_lib


def test_population_statistics_are_the_mean_and_the_total_variance_of_equal_batches():
    rng = np.random.default_rng(0)
    batches = [rng.normal(loc, scale, size=(64, 3)) for loc, scale in ((0.0, 1.0), (2.0, 0.5), (-1.0, 3.0))]
    first = {"bn": {"mean": sum(b.mean(0) for b in batches), "var": sum(b.var(0) for b in batches)}}
    second = {"bn": {"mean": sum(b.mean(0) ** 2 for b in batches), "var": sum(b.var(0) ** 2 for b in batches)}}
    stats = steps.population_statistics((first, second), len(batches))
    everything = np.concatenate(batches)
    np.testing.assert_allclose(stats["bn"]["mean"], everything.mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats["bn"]["var"], everything.var(0), rtol=1e-6)
    assert not np.allclose(stats["bn"]["var"], first["bn"]["var"] / 3, rtol=1e-2)  # the mean variance is too small


class _TwoNorms(nn.Module):
    """BatchNorm, an affine layer, BatchNorm: the second sees the first's training-mode output."""

    @nn.compact
    def __call__(self, x, train: bool):
        x = layers.batch_norm(train, "bn1")(x)
        return layers.batch_norm(train, "bn2")(nn.Dense(4, name="dense")(x) * 3.0 + 1.0)


def test_batch_norm_moments_are_each_layer_batch_statistics_in_training_mode():
    net, images = _TwoNorms(), np.random.default_rng(1).uniform(0, 255, (8, 2, 2, 3)).astype(np.float32)
    variables = net.init(jax.random.key(0), jnp.zeros((1, 2, 2, 3)), train=True)
    state = steps.TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                             batch_stats=variables["batch_stats"], opt_state=())
    zeros = jax.tree.map(jnp.zeros_like, state.batch_stats)
    once = steps.batch_norm_moments(state, (zeros, zeros), {"image": images}, module=net, dtype=jnp.float32, seed=0)
    first, second = steps.batch_norm_moments(state, once, {"image": images}, module=net, dtype=jnp.float32, seed=0)
    x = np.asarray(input_pipeline.normalize(images), np.float64).reshape(-1, 3)  # BatchNorm's statistics per channel
    hidden = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5)  # bn1's scale 1 and bias 0 at initialisation
    dense = variables["params"]["dense"]
    y = (hidden @ np.asarray(dense["kernel"], np.float64) + np.asarray(dense["bias"])) * 3.0 + 1.0
    for name, values in (("bn1", x), ("bn2", y)):  # two identical batches: every sum is twice one batch's
        np.testing.assert_allclose(first[name]["mean"], 2 * values.mean(0), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(first[name]["var"], 2 * values.var(0), rtol=1e-3)
        np.testing.assert_allclose(second[name]["mean"], 2 * values.mean(0) ** 2, rtol=1e-3, atol=1e-4)


def test_evaluation_with_precise_statistics_follows_the_parameters_the_running_averages_trail(tmp_path):
    """At a high constant rate the running averages describe older networks than the one evaluated."""
    config = config_lib.TrainConfig(model="resnet18:width=0.25,resolution=32", dataset="digits", batch_size=64,
                                    epochs=None, steps=22, schedule="step", decay_epochs=(100.0,),
                                    learning_rate=0.1, log_every=22, checkpoint_every=22, precise_bn_images=0)
    trained = train_lib.fit(config, str(tmp_path))
    precise = train_lib.evaluate_checkpoint(dataclasses.replace(config, precise_bn_images=1024), str(tmp_path))
    assert trained["eval_top1"] < trained["train_top1"] - 0.2, trained  # the fault precise statistics remove
    assert precise["eval_top1"] > trained["train_top1"], (precise, trained)
