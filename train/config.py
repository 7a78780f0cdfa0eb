"""The training configuration: one frozen dataclass, its checks, and the published presets."""

import dataclasses
import math
from typing import Optional

from core import precisions
from core.errors import UserError
from train import synthetic

OPTIMIZERS = ("sgd", "nesterov", "adamw")
SCHEDULES = ("step", "exponential", "cosine")
PRECISIONS = precisions.TRAINING
DIGITS = "digits"  # the offline data set, built in (train/digits.py)
DATASETS = ("digits (built in), synthetic (built in; settings as in synthetic:classes=20,noise=0.5), imagenet2012, "
            "or another image-classification data set of tensorflow-datasets prepared in the data directory "
            "(cifar10, imagenette, ...)")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that decides what a training run computes (not where it writes).

    Each field's metadata holds its flag's one-line help (and bounds or choices): `python -m train`
    defines its flags from the fields (core.cli.define_flags).
    """

    model: str = dataclasses.field(default="enet", metadata={  # a variant string: models.variant
        "help": "Network or variant string, e.g. enet or resnet18:width=0.5,resolution=64."})
    dataset: str = dataclasses.field(default=DIGITS, metadata={
        "help": "digits or synthetic[:classes=N,noise=X,...] (offline), imagenet2012, or any tfds data set in "
                "--data_dir."})
    data_dir: Optional[str] = dataclasses.field(default=None, metadata={
        "help": "tensorflow-datasets data directory (default: tfds's own)."})
    batch_size: int = dataclasses.field(default=128, metadata={  # global, over every device and host
        "help": "Global batch size, over all devices.", "lower_bound": 1})
    epochs: Optional[float] = dataclasses.field(default=30.0, metadata={
        "help": "Training budget in epochs (ignored when --steps is set).", "lower_bound": 0})
    steps: Optional[int] = dataclasses.field(default=None, metadata={  # overrides epochs when set
        "help": "Training budget in optimizer steps (overrides --epochs).", "lower_bound": 1})
    optimizer: str = dataclasses.field(default="sgd", metadata={
        "help": "sgd (momentum), nesterov (SGD with Nesterov momentum) or adamw.", "choices": OPTIMIZERS})
    momentum: float = dataclasses.field(default=0.9, metadata={
        "help": "SGD momentum (0 for plain SGD).", "lower_bound": 0, "upper_bound": 0.999999})
    learning_rate: float = dataclasses.field(default=0.1, metadata={  # at batch_size; not rescaled
        "help": "Peak learning rate.", "lower_bound": 0})
    schedule: str = dataclasses.field(default="cosine", metadata={
        "help": "Learning-rate decay: step, exponential (per epoch) or cosine.", "choices": SCHEDULES})
    warmup_epochs: float = dataclasses.field(default=0.0, metadata={  # linear from 0, before any schedule
        "help": "Epochs of linear learning-rate warm-up from 0.", "lower_bound": 0})
    # step: factor at each of decay_epochs; exponential: factor per epoch
    lr_decay: float = dataclasses.field(default=0.1, metadata={
        "help": "Decay factor: at each --decay_epochs (step) or per epoch (exponential).", "lower_bound": 0})
    decay_epochs: tuple[float, ...] = dataclasses.field(default=(30.0, 60.0, 80.0), metadata={
        "help": "Epochs at which the step schedule multiplies the rate by --lr_decay."})
    weight_decay: float = dataclasses.field(default=1e-4, metadata={  # never BatchNorm parameters or biases
        "help": "Weight decay on kernels (never on BatchNorm parameters or biases).", "lower_bound": 0})
    weight_decay_until_epoch: Optional[float] = dataclasses.field(default=None, metadata={  # ENet's schedule
        "help": "Epoch after which weight decay is 0 (default: never).", "lower_bound": 0})
    label_smoothing: float = dataclasses.field(default=0.0, metadata={
        "help": "Label smoothing factor.", "lower_bound": 0, "upper_bound": 0.999999})
    # bfloat16: bfloat16 compute, float32 parameters and optimizer
    precision: str = dataclasses.field(default="float32", metadata={
        "help": "float32, or bfloat16 compute with float32 parameters (for accelerators).", "choices": PRECISIONS})
    seed: int = dataclasses.field(default=0, metadata={
        "help": "Seed of initialisation, data order, augmentation and dropout."})
    log_every: int = dataclasses.field(default=100, metadata={
        "help": "Steps between training-metric records.", "lower_bound": 1})
    eval_every: Optional[int] = dataclasses.field(default=None, metadata={
        "help": "Steps between evaluations (default: every epoch; always at the end).", "lower_bound": 1})
    checkpoint_every: int = dataclasses.field(default=1000, metadata={
        "help": "Steps between checkpoints (also at the end and on SIGINT/SIGTERM).", "lower_bound": 1})
    keep_checkpoints: int = dataclasses.field(default=3, metadata={
        "help": "Newest checkpoints kept.", "lower_bound": 1})
    precise_bn_images: int = dataclasses.field(default=1024, metadata={
        "help": "Training images on which evaluations re-estimate BatchNorm statistics (0: the running averages).",
        "lower_bound": 0})


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


def check_dataset(name: str, data_dir: Optional[str]) -> None:
    """Refuses a data set name tensorflow-datasets does not know (UserError), before TensorFlow starts.

    Importing tensorflow_datasets and looking a name up among its builders start no TensorFlow,
    whose start-up takes seconds: a mistyped name is told at once. A known name, or one of a
    community namespace (huggingface:...), passes unopened: whether it is prepared in data_dir is
    for its builder to say, after TensorFlow is kept off the GPUs. An unknown one is looked for
    as files in data_dir, where tfds finds data sets prepared without their code.
    """
    if name == DIGITS:
        return
    if synthetic.is_synthetic(name):
        synthetic.parse(name)  # UserError naming a bad setting
        return
    try:
        import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel  # the train extra's
    except ImportError:
        return  # the input pipeline names the package to install
    try:
        dataset = tfds.core.naming.parse_builder_name_kwargs(name)[0]
        if dataset.namespace:
            return
        try:
            tfds.builder_cls(dataset.name)
        except tfds.core.DatasetNotFoundError:  # no code for it: tfds looks for its files, without TensorFlow
            tfds.builder(name, data_dir=data_dir)
    except ValueError:  # DatasetNotFoundError, or a name tfds cannot even parse: as the input pipeline says
        raise UserError(f"unknown data set {name!r}: use {DATASETS}") from None
    except ImportError:
        pass  # the reader of a data set prepared from files is missing: the input pipeline names it
