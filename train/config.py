"""The training configuration: one frozen dataclass, its checks, and the published presets."""

import dataclasses
import math
from typing import Optional

from core import precisions
from core.errors import UserError

OPTIMIZERS = ("sgd", "nesterov", "adamw")
SCHEDULES = ("step", "exponential", "cosine")
PRECISIONS = precisions.TRAINING


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that decides what a training run computes (not where it writes)."""

    model: str = "enet"  # a variant string: models.variant
    dataset: str = "digits"
    data_dir: Optional[str] = None
    batch_size: int = 128  # global, over every device and host
    epochs: Optional[float] = 30.0
    steps: Optional[int] = None  # overrides epochs when set
    optimizer: str = "sgd"
    momentum: float = 0.9
    learning_rate: float = 0.1  # at batch_size; not rescaled
    schedule: str = "cosine"
    warmup_epochs: float = 0.0  # linear from 0, before any schedule
    lr_decay: float = 0.1  # step: factor at each of decay_epochs; exponential: factor per epoch
    decay_epochs: tuple[float, ...] = (30.0, 60.0, 80.0)
    weight_decay: float = 1e-4  # on kernels only: never BatchNorm parameters or biases
    weight_decay_until_epoch: Optional[float] = None  # then 0 (ENet's schedule); None: always
    label_smoothing: float = 0.0
    precision: str = "float32"  # bfloat16: bfloat16 compute, float32 parameters and optimizer
    seed: int = 0
    log_every: int = 100  # steps
    eval_every: Optional[int] = None  # steps; None: once per epoch (and always at the end)
    checkpoint_every: int = 1000  # steps (and at the end, and on SIGINT/SIGTERM)
    keep_checkpoints: int = 3
    precise_bn_images: int = 1024  # training images BatchNorm statistics are re-estimated on for evaluation; 0: off


# What a checkpoint must agree on to be resumed (its state and data order depend on them); the
# schedule, budget and intervals may change between runs, to extend a run for instance.
RESUME_KEYS = ("model", "dataset", "batch_size", "optimizer", "seed")


# The ENet ImageNet schedule (e-lab's training of ENet V12): SGD, lr 0.1 x0.95 per epoch, weight
# decay 1e-4 switched off after epoch 7, global batch 128, about 30 epochs (shared/reference).
PRESETS = {
    "enet_imagenet": dict(model="enet", dataset="imagenet2012", batch_size=128, epochs=30.0,
                          optimizer="sgd", momentum=0.9, learning_rate=0.1, schedule="exponential",
                          lr_decay=0.95, weight_decay=1e-4, weight_decay_until_epoch=7.0,
                          label_smoothing=0.0),
}


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise UserError(message)


def check(config: TrainConfig) -> None:
    """Refuses a configuration that cannot train, naming the setting (UserError)."""
    for name in ("epochs", "momentum", "learning_rate", "warmup_epochs", "lr_decay", "weight_decay",
                 "weight_decay_until_epoch", "label_smoothing"):
        value = getattr(config, name)
        _require(value is None or (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0),
                 f"{name} must be a finite number >= 0; got {value!r}")
    _require(config.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}; "
             f"got {config.optimizer!r}")
    _require(config.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}; got {config.schedule!r}")
    _require(config.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}; "
             f"got {config.precision!r}")
    _require(config.steps is not None or config.epochs is not None, "set a budget: epochs or steps")
    _require(config.steps is None or config.steps >= 1, f"steps must be at least 1; got {config.steps}")
    _require(config.steps is not None or config.epochs > 0, f"epochs must be more than 0; got {config.epochs}")
    _require(config.learning_rate > 0, "learning_rate must be more than 0")
    _require(config.momentum < 1, f"momentum must be below 1; got {config.momentum}")
    _require(config.label_smoothing < 1, f"label_smoothing must be below 1; got {config.label_smoothing}")
    _require(config.batch_size >= 1, f"batch_size must be at least 1; got {config.batch_size}")
    _require(config.seed >= 0, f"seed must be 0 or more; got {config.seed}")
    _require(all(math.isfinite(e) and e >= 0 for e in config.decay_epochs),
             f"decay_epochs must be finite epochs >= 0; got {config.decay_epochs}")
    for name in ("log_every", "checkpoint_every", "keep_checkpoints", "eval_every"):
        value = getattr(config, name)
        _require(value is None or value >= 1, f"{name} must be at least 1; got {value}")
    _require(config.precise_bn_images >= 0, f"precise_bn_images must be 0 or more; got {config.precise_bn_images}")


def preset(name: str) -> dict:
    """The settings a preset fills, by TrainConfig field; UserError names the presets."""
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return dict(PRESETS[name])
