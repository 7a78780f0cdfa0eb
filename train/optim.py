"""The optimizer: learning-rate and weight-decay schedules per epoch, and decay on kernels only."""

import math

import jax
import optax

from train.config import TrainConfig


def learning_rate_schedule(config: TrainConfig, steps_per_epoch: int) -> optax.Schedule:
    """The learning rate by step: an optional linear warm-up, then step, exponential or cosine decay."""
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)
    if config.schedule == "step":
        boundaries = {round(epoch * steps_per_epoch) - warmup_steps: config.lr_decay
                      for epoch in config.decay_epochs if round(epoch * steps_per_epoch) > warmup_steps}
        decay = optax.piecewise_constant_schedule(config.learning_rate, boundaries)
    elif config.schedule == "exponential":
        # Staircase per epoch, as Torch scripts that set the rate at the start of each epoch do.
        decay = optax.exponential_decay(config.learning_rate, steps_per_epoch, config.lr_decay, staircase=True)
    else:
        decay = optax.cosine_decay_schedule(config.learning_rate, max(1, total_steps(config, steps_per_epoch)
                                                                      - warmup_steps))
    if not warmup_steps:
        return decay
    warmup = optax.linear_schedule(0.0, config.learning_rate, warmup_steps)
    return optax.join_schedules([warmup, decay], [warmup_steps])


def weight_decay_schedule(config: TrainConfig, steps_per_epoch: int) -> optax.Schedule:
    """The weight decay by step: constant, or switched off after `weight_decay_until_epoch`."""
    if config.weight_decay_until_epoch is None:
        return optax.constant_schedule(config.weight_decay)
    return optax.piecewise_constant_schedule(
        config.weight_decay, {round(config.weight_decay_until_epoch * steps_per_epoch): 0.0})


def total_steps(config: TrainConfig, steps_per_epoch: int) -> int:
    """The run's length in steps: `steps` when set, else epochs rounded up to whole steps."""
    if config.steps is not None:
        return config.steps
    return max(1, math.ceil(config.epochs * steps_per_epoch - 1e-9))  # 2.9999999 epochs of roundoff is 3


def decay_mask(params):
    """True on kernels (2-D and up), False on biases, BatchNorm scales and shifts, and PReLU slopes."""
    return jax.tree.map(lambda leaf: leaf.ndim > 1, params)


def optimizer(config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """SGD with momentum (Torch's coupled weight decay) or Nesterov, or AdamW (decoupled)."""
    lr = learning_rate_schedule(config, steps_per_epoch)
    decay = weight_decay_schedule(config, steps_per_epoch)
    if config.optimizer == "adamw":
        return optax.adamw(lr, weight_decay=decay, mask=decay_mask)
    return optax.chain(optax.add_decayed_weights(decay, mask=decay_mask),
                       optax.sgd(lr, momentum=config.momentum or None, nesterov=config.optimizer == "nesterov"))
