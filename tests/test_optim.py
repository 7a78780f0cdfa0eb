"""The optimizer and its schedules: values by step, the ENet preset, and decay on kernels only."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from core.errors import UserError
from train import config as config_lib
from train import optim

STEPS_PER_EPOCH = 10


def test_enet_preset_follows_the_published_schedule():
    """lr 0.1 x0.95 per epoch (staircase), weight decay 1e-4 through epoch 7 then 0, batch 128, 30 epochs."""
    config = config_lib.TrainConfig(**config_lib.preset("enet_imagenet"))
    assert (config.model, config.dataset, config.batch_size, config.epochs) == ("enet", "imagenet2012", 128, 30.0)
    lr = optim.learning_rate_schedule(config, STEPS_PER_EPOCH)
    assert [float(lr(s)) for s in (0, 9, 10, 19, 20, 295)] == pytest.approx(
        [0.1, 0.1, 0.095, 0.095, 0.1 * 0.95 ** 2, 0.1 * 0.95 ** 29], rel=1e-6)
    decay = optim.weight_decay_schedule(config, STEPS_PER_EPOCH)
    assert [float(decay(s)) for s in (0, 69, 70, 200)] == pytest.approx([1e-4, 1e-4, 0.0, 0.0])
    assert optim.total_steps(config, STEPS_PER_EPOCH) == 300


def test_step_schedule_with_warmup():
    config = config_lib.TrainConfig(schedule="step", learning_rate=0.4, lr_decay=0.1, decay_epochs=(2.0, 4.0),
                                    warmup_epochs=1.0, epochs=5)
    lr = optim.learning_rate_schedule(config, STEPS_PER_EPOCH)
    assert [float(lr(s)) for s in (0, 5, 10, 19, 20, 39, 40, 49)] == pytest.approx(
        [0.0, 0.2, 0.4, 0.4, 0.04, 0.04, 0.004, 0.004], rel=1e-5)


def test_cosine_schedule_reaches_zero_at_the_end_of_the_budget():
    config = config_lib.TrainConfig(schedule="cosine", learning_rate=1.0, warmup_epochs=0.5, epochs=2.5)
    lr = optim.learning_rate_schedule(config, STEPS_PER_EPOCH)
    assert optim.total_steps(config, STEPS_PER_EPOCH) == 25
    assert float(lr(5)) == pytest.approx(1.0)
    assert float(lr(15)) == pytest.approx(0.5, abs=1e-6)  # halfway through the 20 decay steps
    assert float(lr(25)) == pytest.approx(0.0, abs=1e-7)


def test_budget_in_steps_overrides_epochs_and_fractions_round_up():
    assert optim.total_steps(config_lib.TrainConfig(steps=7, epochs=3), STEPS_PER_EPOCH) == 7
    assert optim.total_steps(config_lib.TrainConfig(epochs=0.25), STEPS_PER_EPOCH) == 3
    assert optim.total_steps(config_lib.TrainConfig(epochs=0.3), STEPS_PER_EPOCH) == 3  # 2.9999999996 steps


def _params():
    return {"conv": {"kernel": jnp.ones((3, 3, 2, 4)), "bias": jnp.ones((4,))},
            "bn": {"scale": jnp.ones((4,)), "bias": jnp.ones((4,))}, "prelu": {"slope": jnp.ones((4,))},
            "fc": {"kernel": jnp.ones((4, 2))}}


# One step of decay 0.5 at lr 0.1 on a weight of 1: Nesterov's first step looks ahead by one
# momentum term (1 + 0.9 times the gradient, as Torch's), AdamW decays without the moments.
FIRST_STEP_KERNEL = {"sgd": 1 - 0.1 * 0.5, "nesterov": 1 - 0.1 * 0.5 * 1.9, "adamw": 1 - 0.1 * 0.5}


@pytest.mark.parametrize("name", ["sgd", "nesterov", "adamw"])
def test_weight_decay_touches_kernels_only(name):
    """With zero gradients only decay moves a parameter: kernels shrink, biases, norms and slopes stay."""
    config = config_lib.TrainConfig(optimizer=name, learning_rate=0.1, weight_decay=0.5, momentum=0.9)
    tx = optim.optimizer(config, STEPS_PER_EPOCH)
    params = _params()
    updates, _ = tx.update(jax_zeros(params), tx.init(params), params)
    moved = optax.apply_updates(params, updates)
    expected_kernel = FIRST_STEP_KERNEL[name]
    assert float(moved["conv"]["kernel"][0, 0, 0, 0]) == pytest.approx(expected_kernel)
    assert float(moved["fc"]["kernel"][0, 0]) == pytest.approx(expected_kernel)
    for path in (("conv", "bias"), ("bn", "scale"), ("bn", "bias"), ("prelu", "slope")):
        assert np.all(np.asarray(moved[path[0]][path[1]]) == 1.0), path


def jax_zeros(tree):
    """Zero gradients shaped like `tree`."""
    return {k: {n: jnp.zeros_like(v) for n, v in leaves.items()} for k, leaves in tree.items()}


def test_sgd_momentum_is_torch_style():
    """Torch's SGD: v = m v + g + wd p; p -= lr v (decay coupled, before the momentum)."""
    config = config_lib.TrainConfig(optimizer="sgd", learning_rate=0.1, weight_decay=0.0, momentum=0.9,
                                    schedule="step", decay_epochs=())
    tx = optim.optimizer(config, STEPS_PER_EPOCH)
    params = {"w": jnp.ones((2, 2))}
    state = tx.init(params)
    grads = {"w": jnp.full((2, 2), 1.0)}
    for expected in (1 - 0.1, 1 - 0.1 - 0.1 * 1.9):
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        assert float(params["w"][0, 0]) == pytest.approx(expected)


@pytest.mark.parametrize("overrides, message", [
    (dict(learning_rate=float("nan")), "learning_rate must be a finite number"),
    (dict(learning_rate=0.0), "learning_rate must be more than 0"),
    (dict(momentum=1.0), "momentum must be below 1"),
    (dict(epochs=None, steps=None), "set a budget"),
    (dict(steps=0), "steps must be at least 1"),
    (dict(epochs=0.0), "epochs must be more than 0"),
    (dict(optimizer="lamb"), "optimizer must be one of sgd, nesterov, adamw"),
    (dict(schedule="linear"), "schedule must be one of"),
    (dict(precision="float16"), "precision must be one of float32, bfloat16"),
    (dict(batch_size=0), "batch_size must be at least 1"),
    (dict(seed=-1), "seed must be 0 or more"),
    (dict(label_smoothing=1.0), "label_smoothing must be below 1"),
    (dict(decay_epochs=(float("inf"),)), "decay_epochs must be finite"),
    (dict(log_every=0), "log_every must be at least 1"),
])
def test_bad_settings_are_refused_by_name(overrides, message):
    with pytest.raises(UserError, match=message):
        config_lib.check(config_lib.TrainConfig(**overrides))


def test_unknown_preset_names_the_presets():
    with pytest.raises(UserError, match="unknown preset 'resnet'; choose one of: enet_imagenet"):
        config_lib.preset("resnet")
