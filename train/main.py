"""Flags of `python -m train`: every setting of `TrainConfig`, presets, the work directory and hosts.

A run with --workdir writes the flags it was given there as `flags.txt`, an absl flag file:
`python -m train --flagfile=<workdir>/flags.txt` repeats (and resumes) the run.
"""

import jax
from absl import flags

import models
from core import cli, runtime, values
from train import config as config_lib
from train import distributed, metrics

_DEFAULT = config_lib.TrainConfig()

FLAGS = flags.FlagValues()  # this program's own: programs can share a process (tests)
_PRESET = flags.DEFINE_enum("preset", None, list(config_lib.PRESETS),
                            "A published schedule to start from (flags set explicitly override it).", flag_values=FLAGS)
_MODEL = flags.DEFINE_string("model", _DEFAULT.model, "Network or variant string, e.g. enet or resnet18:width=0.5,"
                             "resolution=64.", flag_values=FLAGS)
_DATASET = flags.DEFINE_string("dataset", _DEFAULT.dataset, "digits (offline), imagenet2012, or any tfds "
                               "image-classification data set prepared in --data_dir.", flag_values=FLAGS)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tensorflow-datasets data directory (default: tfds's own).",
                                flag_values=FLAGS)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics; a rerun resumes there.",
                               flag_values=FLAGS)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", _DEFAULT.batch_size, "Global batch size, over all devices.",
                                   lower_bound=1, flag_values=FLAGS)
_EPOCHS = flags.DEFINE_float("epochs", _DEFAULT.epochs, "Training budget in epochs (ignored when --steps is set).",
                             lower_bound=0, flag_values=FLAGS)
_STEPS = flags.DEFINE_integer("steps", None, "Training budget in optimizer steps (overrides --epochs).",
                              lower_bound=1, flag_values=FLAGS)
_OPTIMIZER = flags.DEFINE_enum("optimizer", _DEFAULT.optimizer, list(config_lib.OPTIMIZERS),
                               "sgd (momentum), nesterov (SGD with Nesterov momentum) or adamw.", flag_values=FLAGS)
_MOMENTUM = flags.DEFINE_float("momentum", _DEFAULT.momentum, "SGD momentum (0 for plain SGD).",
                               lower_bound=0, upper_bound=0.999999, flag_values=FLAGS)
_LEARNING_RATE = flags.DEFINE_float("learning_rate", _DEFAULT.learning_rate, "Peak learning rate.", lower_bound=0,
                                    flag_values=FLAGS)
_SCHEDULE = flags.DEFINE_enum("schedule", _DEFAULT.schedule, list(config_lib.SCHEDULES),
                              "Learning-rate decay: step, exponential (per epoch) or cosine.", flag_values=FLAGS)
_WARMUP_EPOCHS = flags.DEFINE_float("warmup_epochs", _DEFAULT.warmup_epochs,
                                    "Epochs of linear learning-rate warm-up from 0.", lower_bound=0, flag_values=FLAGS)
_LR_DECAY = flags.DEFINE_float("lr_decay", _DEFAULT.lr_decay, "Decay factor: at each --decay_epochs (step) or "
                               "per epoch (exponential).", lower_bound=0, flag_values=FLAGS)
_DECAY_EPOCHS = flags.DEFINE_list("decay_epochs", [f"{e:g}" for e in _DEFAULT.decay_epochs],
                                  "Epochs at which the step schedule multiplies the rate by --lr_decay.",
                                  flag_values=FLAGS)
_WEIGHT_DECAY = flags.DEFINE_float("weight_decay", _DEFAULT.weight_decay, "Weight decay on kernels (never on "
                                   "BatchNorm parameters or biases).", lower_bound=0, flag_values=FLAGS)
_WEIGHT_DECAY_UNTIL = flags.DEFINE_float("weight_decay_until_epoch", None, "Epoch after which weight decay is 0 "
                                         "(default: never).", lower_bound=0, flag_values=FLAGS)
_LABEL_SMOOTHING = flags.DEFINE_float("label_smoothing", _DEFAULT.label_smoothing, "Label smoothing factor.",
                                      lower_bound=0, upper_bound=0.999999, flag_values=FLAGS)
_PRECISION = flags.DEFINE_enum("precision", _DEFAULT.precision, list(config_lib.PRECISIONS),
                               "float32, or bfloat16 compute with float32 parameters (for accelerators).",
                               flag_values=FLAGS)
_SEED = flags.DEFINE_integer("seed", _DEFAULT.seed, "Seed of initialisation, data order, augmentation and dropout.",
                             flag_values=FLAGS)
_LOG_EVERY = flags.DEFINE_integer("log_every", _DEFAULT.log_every, "Steps between training-metric records.",
                                  lower_bound=1, flag_values=FLAGS)
_EVAL_EVERY = flags.DEFINE_integer("eval_every", None, "Steps between evaluations (default: every epoch; always "
                                   "at the end).", lower_bound=1, flag_values=FLAGS)
_CHECKPOINT_EVERY = flags.DEFINE_integer("checkpoint_every", _DEFAULT.checkpoint_every,
                                         "Steps between checkpoints (also at the end and on SIGINT/SIGTERM).",
                                         lower_bound=1, flag_values=FLAGS)
_KEEP_CHECKPOINTS = flags.DEFINE_integer("keep_checkpoints", _DEFAULT.keep_checkpoints,
                                         "Newest checkpoints kept.", lower_bound=1, flag_values=FLAGS)
_PRECISE_BN = flags.DEFINE_integer("precise_bn_images", _DEFAULT.precise_bn_images, "Training images on which "
                                   "evaluations re-estimate BatchNorm statistics (0: the running averages).",
                                   lower_bound=0, flag_values=FLAGS)
_TENSORBOARD = flags.DEFINE_bool("tensorboard", True, "Write TensorBoard event files under --workdir/tensorboard.",
                                 flag_values=FLAGS)
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for a multi-host run "
                                   "(default: from SLURM when under it).", flag_values=FLAGS)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Hosts in a multi-host run.", lower_bound=1,
                                      flag_values=FLAGS)
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This host's index in a multi-host run.", lower_bound=0,
                                   flag_values=FLAGS)
cli.require_finite(_EPOCHS, _MOMENTUM, _LEARNING_RATE, _WARMUP_EPOCHS, _LR_DECAY, _WEIGHT_DECAY,
                   _WEIGHT_DECAY_UNTIL, _LABEL_SMOOTHING)

_FIELDS = ("model", "dataset", "data_dir", "batch_size", "epochs", "steps", "optimizer", "momentum",
           "learning_rate", "schedule", "warmup_epochs", "lr_decay", "decay_epochs", "weight_decay",
           "weight_decay_until_epoch", "label_smoothing", "precision", "seed", "log_every", "eval_every",
           "checkpoint_every", "keep_checkpoints", "precise_bn_images")
# Where a run executes, not what it trains: every host of a multi-host run passes its own (after --flagfile).
_HOST_FLAGS = ("coordinator_address", "num_processes", "process_id")


def config_from_flags() -> config_lib.TrainConfig:
    """The configuration: defaults, then the preset, then every flag the user set."""
    settings = config_lib.preset(_PRESET.value) if _PRESET.value else {}
    for name in _FIELDS:
        if FLAGS[name].present or name not in settings:
            settings[name] = FLAGS[name].value
    settings["decay_epochs"] = values.numbers("decay_epochs", settings["decay_epochs"]) if isinstance(
        settings["decay_epochs"], list) else settings["decay_epochs"]
    if FLAGS["steps"].present:
        settings["epochs"] = None
    return config_lib.TrainConfig(**settings)


def flag_file_text() -> str:
    """The flags the user set (--flagfile expanded), as an absl flag file that repeats the run."""
    # Only the set ones: written out, the defaults would override what --preset fills in.
    lines = [FLAGS[name].serialize() for name in FLAGS if FLAGS[name].present and name not in _HOST_FLAGS]
    return ("# python -m train --flagfile=<this file> repeats this run; hosts of a multi-host run add "
            + ", ".join(f"--{name}" for name in _HOST_FLAGS) + "\n" + "".join(line + "\n" for line in lines))


def main(argv):
    """Trains from the flags; Ctrl-C or SIGTERM checkpoints and the same command resumes."""
    del argv
    config = config_from_flags()
    config_lib.check(config)
    models.variant(config.model)  # bad settings fail before the runtime's probe and the hosts' start-up
    runtime.configure()  # XLA's fastest honest flags on this backend (core/runtime.py), before it starts
    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    from train import train  # pylint: disable=import-outside-toplevel  # after the hosts have joined
    try:
        result = train.fit(config, _WORKDIR.value, tensorboard=_TENSORBOARD.value, console=True,
                           flag_file=flag_file_text())
    except KeyboardInterrupt as interrupt:
        where = f"the checkpoints are in {_WORKDIR.value}; run the same command to resume" if _WORKDIR.value else \
            "nothing was saved (no --workdir)"
        raise cli.Stopped.after(interrupt, where) from None
    if jax.process_index():  # one host reports
        return
    summary = ", ".join(f"{name} {metrics.percent(result[key]):.2f} %" for name, key in (("top-1", "eval_top1"), ("top-5", "eval_top5"))
                        if key in result)
    print(f"done: {result['model']} on {result['dataset']}, step {result['step']}: {summary}"
          + (f"; metrics and checkpoints in {_WORKDIR.value}" if _WORKDIR.value else ""))
