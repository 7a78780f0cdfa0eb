"""Flags of `python -m train`: a flag per field of `TrainConfig`, presets, the work directory and hosts.

With --eval_only it trains nothing: it evaluates the newest checkpoint in --workdir, as timm's
validate.py does, and writes top-1 and top-5 to `<workdir>/eval.json`.

A run with --workdir writes the flags it was given there as `flags.txt`, an absl flag file:
`python -m train --flagfile=<workdir>/flags.txt` repeats (and resumes) the run. Nothing here
starts JAX or TensorFlow before the flags and the data set's name are checked: a mistake is told
at once, not after their seconds of start-up.
"""

import os

from absl import flags

from core import cli, runtime
from core.errors import UserError
from train import config as config_lib
from train import metrics  # JAX-free

FLAGS = flags.FlagValues()  # this program's own: programs can share a process (tests)
SAFE_STOPS = True  # long work: a signal is a request, honoured at the next safe point (core.cli)
_PRESET = flags.DEFINE_enum("preset", None, list(config_lib.PRESETS),
                            "A published schedule to start from (flags set explicitly override it).", flag_values=FLAGS)
# flags.txt lists the flags set in the order they are defined: these before --workdir, as it always has.
_BEFORE_WORKDIR = ("model", "dataset", "data_dir")
cli.define_flags(config_lib.TrainConfig, FLAGS, only=_BEFORE_WORKDIR)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics; a rerun resumes there.",
                               flag_values=FLAGS)
cli.define_flags(config_lib.TrainConfig, FLAGS, skip=_BEFORE_WORKDIR)
_TENSORBOARD = flags.DEFINE_bool("tensorboard", True, "Write TensorBoard event files under --workdir/tensorboard.",
                                 flag_values=FLAGS)
_EVAL_ONLY = flags.DEFINE_bool("eval_only", False, "Evaluate the newest checkpoint in --workdir (top-1 and top-5 to "
                               "<workdir>/eval.json) instead of training.", flag_values=FLAGS)
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for a multi-host run "
                                   "(default: from SLURM when under it).", flag_values=FLAGS)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Hosts in a multi-host run.", lower_bound=1,
                                      flag_values=FLAGS)
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This host's index in a multi-host run.", lower_bound=0,
                                   flag_values=FLAGS)

# Where a run executes, not what it trains: every host of a multi-host run passes its own (after --flagfile).
_HOST_FLAGS = ("coordinator_address", "num_processes", "process_id")


def config_from_flags() -> config_lib.TrainConfig:
    """The configuration: defaults, then the preset, then every flag the user set."""
    settings = config_lib.preset(_PRESET.value) if _PRESET.value else {}
    for name, value in cli.config_kwargs(config_lib.TrainConfig, FLAGS).items():
        if FLAGS[name].present or name not in settings:
            settings[name] = value
    if FLAGS["steps"].present:
        settings["epochs"] = None
    return config_lib.TrainConfig(**settings)


def flag_file_text() -> str:
    """The flags the user set (--flagfile expanded), as an absl flag file that repeats the run."""
    # Only the set ones: written out, the defaults would override what --preset fills in.
    lines = [FLAGS[name].serialize() for name in FLAGS if FLAGS[name].present and name not in _HOST_FLAGS]
    return ("# python -m train --flagfile=<this file> repeats this run; hosts of a multi-host run add "
            + ", ".join(f"--{name}" for name in _HOST_FLAGS) + "\n" + "".join(line + "\n" for line in lines))


def _summary(result: dict) -> str:
    """The evaluation figures of a result of `fit` or `evaluate_checkpoint`, for its console line."""
    return ", ".join(f"{name} {metrics.percent(result[key]):.2f} %" for name, key in (("top-1", "eval_top1"),
                                                                                    ("top-5", "eval_top5"))
                     if key in result)


def main(argv):
    """Trains from the flags (or evaluates: --eval_only); Ctrl-C or SIGTERM checkpoints, the same command resumes."""
    del argv
    config = config_from_flags()
    config_lib.check(config)
    config_lib.check_dataset(config.dataset, config.data_dir)
    if _EVAL_ONLY.value and not _WORKDIR.value:
        raise UserError("--eval_only evaluates the newest checkpoint in --workdir; set --workdir")
    # A first line at once: JAX's start, the runtime's probe and the first compiles take seconds.
    print(f"train: {'evaluating ' if _EVAL_ONLY.value else ''}{config.model} on {config.dataset}; starting JAX",
          flush=True)
    # pylint: disable=import-outside-toplevel  # JAX starts with these, once the checks above have passed
    import jax
    import models
    from train import distributed
    models.variant(config.model)  # bad settings fail before the runtime's probe and the hosts' start-up
    runtime.configure()  # XLA's fastest honest flags on this backend (core/runtime.py), before it starts
    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    from train import trainer  # pylint: disable=import-outside-toplevel  # after the hosts have joined
    if _EVAL_ONLY.value:
        _evaluate(trainer, config)
        distributed.shutdown()
        return
    try:
        result = trainer.fit(config, _WORKDIR.value, tensorboard=_TENSORBOARD.value, console=True,
                           flag_file=flag_file_text())
    except KeyboardInterrupt as interrupt:
        where = f"the checkpoints are in {_WORKDIR.value}; run the same command to resume" if _WORKDIR.value else \
            "nothing was saved (no --workdir)"
        raise cli.Stopped.after(interrupt, where) from None
    distributed.shutdown()  # every host has finished its steps and saves: they leave together
    if jax.process_index():  # one host reports
        return
    print(f"done: {result['model']} on {result['dataset']}, step {result['step']}: {_summary(result)}"
          + (f"; metrics and checkpoints in {_WORKDIR.value}" if _WORKDIR.value else ""))


def _evaluate(trainer, config: config_lib.TrainConfig) -> None:
    """--eval_only: evaluates the newest checkpoint in --workdir and reports it in one line (process 0)."""
    import jax  # pylint: disable=import-outside-toplevel  # started by main
    try:
        result = trainer.evaluate_checkpoint(config, _WORKDIR.value)
    except KeyboardInterrupt as interrupt:  # a second signal: the evaluation has no safe point to stop at
        raise cli.Stopped.after(interrupt, "the evaluation was stopped; nothing was written") from None
    if not jax.process_index():
        print(f"eval: {result['model']} on {result['dataset']}, step {result['step']}: {_summary(result)}; "
              f"written to {os.path.join(_WORKDIR.value, trainer.EVAL_FILE)}")
