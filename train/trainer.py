"""The training loop: `fit` trains a variant on a data set for a budget and returns its final metrics.

`evaluate_checkpoint` evaluates a work directory's newest checkpoint without training.
`python -m train` is a thin front on both; the explorer calls `fit` directly. Data parallel over
every device of every host: one jitted step on a Mesh, the batch split along it, parameters
replicated, BatchNorm statistics over the global batch.
"""

import contextlib
import dataclasses
import functools
import json
import math
import os
import signal
import time
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

import models
from core import cli, failures, files
from core.errors import UserError
from measure import results
from train import checkpoint, distributed, input_pipeline, optim, steps, synthetic
from train import config as config_lib
from train.metrics import MetricsLog, recorded

CHECKPOINT_DIR = "checkpoints"
CONFIG_FILE = "config.json"
FLAG_FILE = "flags.txt"  # the command line that repeats the run, for `python -m train --flagfile=`
EVAL_FILE = "eval.json"  # the figures of the latest evaluate_checkpoint
DTYPES = {name: jnp.dtype(name) for name in config_lib.PRECISIONS}


class Diverged(UserError):
    """The loss went NaN or infinite: the run stops and keeps its last good checkpoint."""


class OutOfMemory(UserError):
    """The first step or evaluation ran out of device memory: the message names the fix."""


@contextlib.contextmanager
def _out_of_memory_is_the_users(run: "_Run"):
    """A first step (or evaluation) that runs out of device memory is a UserError naming the fix.

    Out of memory shows on the first call, which compiles and allocates everything a step
    needs; XLA:CPU's kernels may say so only on native stderr, which `classified` reads.
    """
    try:
        with failures.classified(compiling=True):
            yield
    except failures.MeasureFailed as failed:
        if failed.status != results.OUT_OF_MEMORY:
            raise failed.__cause__ from None  # not memory: a bug, with XLA's own traceback
        devices = len(jax.devices())
        raise OutOfMemory(f"out of memory training {run.variant} at batch {run.config.batch_size} "
                        f"({run.config.batch_size // devices} per device on {devices}): use a smaller --batch_size, "
                        f"a lower resolution or more devices ({failed.message[:160]})") from None


@dataclasses.dataclass
class _Run:
    """What the loop needs besides the state: compiled steps, data, shardings and schedules."""

    config: config_lib.TrainConfig
    variant: str
    info: input_pipeline.DatasetInfo
    resolution: int
    steps_per_epoch: int
    total_steps: int
    local_batch_size: int
    batch_sharding: jax.sharding.NamedSharding
    steps: "Steps"
    learning_rate: object


def _module(variant: models.Variant, num_classes: int):
    """The variant's module with the data set's class count (a variant that fixes another is refused)."""
    knobs = dict(variant.knobs)
    if knobs.get("num_classes", num_classes) != num_classes:
        raise UserError(f"{variant} has {knobs['num_classes']} classes but the data set has {num_classes}; "
                        "drop num_classes from --model")
    knobs["num_classes"] = num_classes
    return models.get(variant.name, **knobs)


def _prepare(config: config_lib.TrainConfig, mesh) -> tuple[_Run, object, object]:
    """Checks the configuration and builds the run, the optimizer and the module."""
    config_lib.check(config)
    variant = models.variant(config.model)
    info = input_pipeline.dataset_info(config.dataset, config.data_dir)
    if synthetic.is_synthetic(config.dataset):  # its canonical string in checkpoints and results
        config = dataclasses.replace(config, dataset=info.name)
    resolution = variant.input_shape(1)[1]
    module = _module(variant, info.num_classes)
    local_batch_size = distributed.per_host_batch_size(config.batch_size, mesh)
    steps_per_epoch = info.train_examples // config.batch_size
    if steps_per_epoch < 1:
        raise UserError(f"batch_size {config.batch_size} is larger than {info.name}'s {info.train_examples} "
                        "training examples; use a smaller --batch_size")
    tx = optim.optimizer(config, steps_per_epoch)
    jitted = jitted_steps(module, tx, config, mesh, resolution)
    run = _Run(config=config, variant=str(variant), info=info, resolution=resolution,
               steps_per_epoch=steps_per_epoch, total_steps=optim.total_steps(config, steps_per_epoch),
               local_batch_size=local_batch_size, batch_sharding=distributed.batch_sharded(mesh), steps=jitted,
               learning_rate=optim.learning_rate_schedule(config, steps_per_epoch))
    return run, jitted.init, distributed.replicated(mesh)


class Steps(NamedTuple):
    """A run's jitted functions of the state and a global batch (`init` makes the state)."""

    train: object
    eval: object
    init: object
    batch_norm_moments: object
    population_statistics: object


def jitted_steps(module, tx, config: config_lib.TrainConfig, mesh, resolution: int) -> Steps:
    """The train step, eval step, state initialiser and BatchNorm moments and statistics of `module`, jitted over
    the mesh.

    Every computation on global arrays is one of these: each host runs the same programs in the same order.
    Eager operations on them instead launch a program per operation, and hosts under load were seen to wait
    on each other forever in such a launch.
    """
    dtype = DTYPES[config.precision]
    replicated, batch_sharding = distributed.replicated(mesh), distributed.batch_sharded(mesh)
    train_step = jax.jit(functools.partial(steps.train_step, module=module, tx=tx, dtype=dtype,
                                           label_smoothing=config.label_smoothing, seed=config.seed),
                         in_shardings=(replicated, batch_sharding), out_shardings=replicated, donate_argnums=0)
    eval_step = jax.jit(functools.partial(steps.eval_step, module=module, dtype=dtype),
                        in_shardings=(replicated, batch_sharding), out_shardings=replicated)
    init = jax.jit(functools.partial(steps.init_state, module, tx, (1, resolution, resolution, 3), config.seed),
                   out_shardings=replicated)
    moments = jax.jit(functools.partial(steps.batch_norm_moments, module=module, dtype=dtype, seed=config.seed),
                      in_shardings=(replicated, replicated, batch_sharding), out_shardings=replicated)
    statistics = jax.jit(steps.population_statistics, static_argnums=1, in_shardings=(replicated,),
                         out_shardings=replicated)
    return Steps(train_step, eval_step, init, moments, statistics)


def _abstract_state(init, sharding):
    """The shapes, dtypes and shardings of the state `init` makes, for orbax to restore into."""
    return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
                        jax.eval_shape(init))


def _restore(run: _Run, init, replicated, checkpoints: checkpoint.Checkpoints) -> Optional[tuple[object, dict]]:
    """The newest readable checkpoint as (state, record), None if none; one of another run is a UserError."""
    return checkpoints.restore(_abstract_state(init, replicated), _expected(run))


def _record(run: _Run, position: dict) -> dict:
    """The JSON saved with a checkpoint: what the state belongs to, and where the data stands."""
    expected = _expected(run)
    return {**expected, "resolution": run.resolution, "num_classes": run.info.num_classes, "position": position}


def _expected(run: _Run) -> dict:
    """The settings a checkpoint must share with this run to be resumed (canonical model string)."""
    return {**{key: getattr(run.config, key) for key in config_lib.RESUME_KEYS}, "model": run.variant}


def _summed(metrics: list[dict]) -> dict:
    """Fetches a list of per-step device metrics (one sync) and sums them field by field."""
    fetched = jax.device_get(metrics)
    return {name: np.sum([m[name] for m in fetched], dtype=np.float64) for name in fetched[0]}


def _means(summed: dict) -> dict:
    """Per-example loss, top-1 and top-5 from summed metrics."""
    count = max(summed["count"], 1.0)
    return {name: summed[name] / count for name in ("loss", "top1", "top5")}


def precise_batch_norm(run: _Run, state):
    """The state with BatchNorm statistics of its own parameters, over `precise_bn_images` training images.

    The running averages trail the parameters: early in training, while the parameters move fast,
    they describe older networks, and an evaluation with them can fall far below the training
    accuracy (pycls's "precise BN" is the remedy). The training state keeps its running averages,
    so evaluating never changes what training computes.
    """
    config = run.config
    if not config.precise_bn_images or not jax.tree.leaves(state.batch_stats):
        return state
    count = math.ceil(config.precise_bn_images / config.batch_size)
    batches = input_pipeline.train_batches(run.info, config.data_dir, batch_size=run.local_batch_size,
                                           resolution=run.resolution, seed=config.seed,
                                           process_index=jax.process_index(), process_count=jax.process_count(),
                                           shuffle_buffer=max(config.precise_bn_images, config.batch_size))
    zeros = distributed.zeros_like(state.batch_stats)
    sums, in_flight = (zeros, zeros), distributed.InFlight()
    for _ in range(count):
        sums = in_flight(run.steps.batch_norm_moments(state, sums,
                                                      distributed.global_batch(next(batches), run.batch_sharding)))
    return state.replace(batch_stats=run.steps.population_statistics(sums, count))


def evaluate(run: _Run, state) -> dict:
    """Loss, top-1 and top-5 over the whole evaluation split (each example once), with precise BatchNorm."""
    state = precise_batch_norm(run, state)
    batches = input_pipeline.eval_batches(run.info, run.config.data_dir, batch_size=run.local_batch_size,
                                          resolution=run.resolution, process_index=jax.process_index(),
                                          process_count=jax.process_count())
    metrics, in_flight = [], distributed.InFlight()
    for batch in batches:
        batch = distributed.global_batch(batch, run.batch_sharding)
        if metrics:
            metrics.append(in_flight(run.steps.eval(state, batch)))
        else:
            with _out_of_memory_is_the_users(run):
                metrics.append(jax.block_until_ready(run.steps.eval(state, batch)))
    return _means(_summed(metrics))


def _agreed_stop(requested: bool, at_log_step: bool) -> bool:
    """Whether every host stops after this step: all must checkpoint the same step together.

    One process stops when asked. Hosts, whom a scheduler signals at slightly different steps,
    agree at log steps: any host asked means all stop.
    """
    if jax.process_count() == 1:
        return requested
    return at_log_step and bool(np.any(multihost_utils.process_allgather(np.asarray(requested))))


def _first_bad_step(fetched_steps: list[int], finite: list) -> Optional[int]:
    for step, ok in zip(fetched_steps, finite, strict=True):
        if not ok:
            return step
    return None


def _lock(workdir: str) -> files.DirectoryLock:
    """The work directory's lock: one process writes there at a time (training or evaluating)."""
    return files.DirectoryLock(workdir, "training run", "--workdir")


def fit(config: config_lib.TrainConfig, workdir: Optional[str] = None, *, tensorboard: bool = False,
        console: bool = False, stop_when_asked: bool = True, flag_file: Optional[str] = None) -> dict:
    """Trains `config.model` on `config.dataset` for its budget; returns the final metrics.

    The result holds the canonical model string, the step reached, `train_*` (the last logged
    interval) and `eval_*` (the final evaluation) metrics, and `history`: every record this
    process logged, each with `elapsed_s` since it started.

    With a `workdir` it checkpoints (every `checkpoint_every` steps, at the end and when SIGINT or
    SIGTERM asks it to stop), resumes from the newest readable checkpoint there, and writes
    `metrics.jsonl` (and TensorBoard events when asked), `config.json` and, given the text of an
    absl flag file that repeats the run (`flag_file`), `flags.txt`. Without one nothing is written.
    A NaN or infinite loss raises `Diverged` naming the step. Asked to stop (see core.cli), it stops at
    the next step boundary, checkpoints, and raises `cli.Interrupted`; with `stop_when_asked=False`
    (a sweep that stops between jobs) it trains to the end regardless.
    """
    mesh = distributed.data_mesh()
    run, init, replicated = _prepare(config, mesh)
    main_process = jax.process_index() == 0
    if workdir is None:
        return _fit(run, init, replicated, None, None, tensorboard=False, console=console,
                    stop_when_asked=stop_when_asked)
    files.prepare_out_dir(workdir, "--workdir")
    if not main_process:
        return _fit(run, init, replicated, workdir, None, tensorboard=False, console=False,
                    stop_when_asked=stop_when_asked)
    with _lock(workdir):
        files.sweep_temporaries(workdir)
        return _fit(run, init, replicated, workdir, workdir, tensorboard=tensorboard, console=console,
                    stop_when_asked=stop_when_asked, flag_file=flag_file)


def _fit(run: _Run, init, replicated, checkpoint_dir: Optional[str], log_dir: Optional[str], *,
         tensorboard: bool, console: bool, stop_when_asked: bool, flag_file: Optional[str] = None) -> dict:
    """`fit` after the set-up: restore (or initialise), record the configuration, then the loop."""
    config = run.config
    checkpoints = (checkpoint.Checkpoints(os.path.join(checkpoint_dir, CHECKPOINT_DIR), config.keep_checkpoints)
                   if checkpoint_dir else None)
    restored = None
    if checkpoints is not None:
        try:
            restored = _restore(run, init, replicated, checkpoints)
        except BaseException:
            checkpoints.close()
            raise
    if log_dir is not None:  # only once the checkpoints there are known to be this run's
        files.atomic_write(os.path.join(log_dir, CONFIG_FILE),
                           json.dumps({**dataclasses.asdict(config), "model": run.variant}, indent=1) + "\n")
        if flag_file is not None:
            files.atomic_write(os.path.join(log_dir, FLAG_FILE), flag_file)
    state, position = (restored[0], restored[1]["position"]) if restored else (init(), None)
    start = int(jax.device_get(state.step))
    log = MetricsLog(log_dir, start_step=start, total_steps=run.total_steps, batch_size=config.batch_size,
                     console=console, tensorboard=tensorboard)
    if console:
        print(f"{run.variant} on {run.info.name} at {run.resolution}px: {run.total_steps} steps of "
              f"{config.batch_size} ({run.steps_per_epoch} per epoch) on {len(jax.devices())} "
              f"{jax.devices()[0].platform} device(s)" + (f"; resumed at step {start}" if start else ""), flush=True)
    try:
        return _loop(run, state, position, start, checkpoints, log, stop_when_asked)
    finally:
        try:
            log.close()
        finally:
            if checkpoints is not None:
                checkpoints.close()


def _loop(run: _Run, state, position, start: int, checkpoints, log: MetricsLog, stop_when_asked: bool) -> dict:
    """Steps from `start` to the end of the budget, logging, evaluating and checkpointing on the way."""
    config = run.config
    batches = input_pipeline.train_batches(run.info, config.data_dir, batch_size=run.local_batch_size,
                                           resolution=run.resolution, seed=config.seed, position=position,
                                           process_index=jax.process_index(), process_count=jax.process_count())
    eval_every = config.eval_every or run.steps_per_epoch
    pending, pending_steps, last_train, last_eval = [], [], {}, {}
    in_flight = distributed.InFlight()  # on the metrics: the state is donated to the next step
    clock = None  # (time, step) since which throughput is measured: after the first (compiling) step
    started = time.monotonic()
    trained = 0

    def flush(step: int) -> None:
        nonlocal last_train
        if not pending:
            return
        fetched = jax.device_get(pending)
        bad = _first_bad_step(pending_steps, [m["finite"] for m in fetched])
        if bad is not None:
            kept = checkpoints.steps()[-1] if checkpoints and checkpoints.steps() else None
            loss = _loss_at(fetched, pending_steps, bad)
            what = f"the loss became {loss}" if not math.isfinite(loss) else "the parameters became infinite or NaN"
            raise Diverged(f"{what} at step {bad}; stopped" + (f", the last good checkpoint (step {kept}) is kept"
                                                         if kept is not None else "")
                           + "; lower --learning_rate or add --warmup_epochs")
        now = time.monotonic()
        last_train = {**_means(_summed(fetched)), "epoch": step / run.steps_per_epoch,
                      "learning_rate": float(run.learning_rate(step - 1)), "elapsed_s": now - started}
        if clock is not None and step > clock[1]:  # not over the compiling first step
            last_train["images_per_s"] = (step - clock[1]) * config.batch_size / (now - clock[0])
        log.write("train", step, last_train)
        pending.clear()
        pending_steps.clear()
        restart_clock(step)

    def restart_clock(step: int) -> None:
        nonlocal clock
        clock = (time.monotonic(), step)

    step = start
    with cli.stop_at_safe_points():
        while step < run.total_steps:
            batch = distributed.global_batch(next(batches), run.batch_sharding)
            if clock is None:  # the first step compiles and allocates: out of memory shows here
                with _out_of_memory_is_the_users(run):
                    state, metrics = jax.block_until_ready(run.steps.train(state, batch))
            else:
                state, metrics = run.steps.train(state, batch)
                in_flight(metrics)
            step += 1
            trained += 1
            pending.append(metrics)
            pending_steps.append(step)
            if clock is None:
                restart_clock(step)
            last = step == run.total_steps
            asked = stop_when_asked and cli.stop_requested() is not None
            stopping = _agreed_stop(asked, at_log_step=step % config.log_every == 0)
            if step % config.log_every == 0 or last or stopping:
                flush(step)
            if step % eval_every == 0 or last:
                flush(step)
                last_eval = evaluate(run, state)
                log.write("eval", step, {**last_eval, "elapsed_s": time.monotonic() - started})
                restart_clock(step)
            if checkpoints is not None and (step % config.checkpoint_every == 0 or last or stopping):
                flush(step)
                log.sync()
                checkpoints.save(state, _record(run, batches.position()))
                restart_clock(step)
            if stopping:
                if checkpoints is not None:
                    checkpoints.wait()
                raise cli.Interrupted(cli.stop_requested() or signal.SIGTERM)  # another host's signal
    if checkpoints is not None:
        checkpoints.wait()
    if not last_eval:  # resumed after the last step: the final metrics all the same
        last_eval = evaluate(run, state)
    seconds = time.monotonic() - started
    result = {"model": run.variant, "dataset": run.info.name, "resolution": run.resolution, "step": step,
              "epochs": step / run.steps_per_epoch, "seconds": seconds, "steps_this_run": trained}
    result.update({f"train_{k}": v for k, v in last_train.items() if k != "elapsed_s"})
    result.update({f"eval_{k}": v for k, v in last_eval.items()})
    result["history"] = log.records  # this process's records: learning curves for the explorer
    return result


def _loss_at(fetched: list[dict], fetched_steps: list[int], step: int) -> float:
    return float(fetched[fetched_steps.index(step)]["loss"])


def _checkpoints_dir(workdir: str) -> str:
    """`workdir`'s checkpoint directory, which must exist (UserError naming the fix); nothing is created."""
    directory = os.path.join(workdir, CHECKPOINT_DIR)
    if not os.path.isdir(directory):
        raise _no_checkpoint(workdir)
    return directory


def _no_checkpoint(workdir: str) -> UserError:
    """The error of a work directory without a checkpoint."""
    return UserError(f"no checkpoint in {workdir}; train there first, or set --workdir to a trained run's directory")


def _restored(config: config_lib.TrainConfig, workdir: str) -> tuple[_Run, steps.TrainState]:
    """The run of `config` and the state of the newest readable checkpoint in `workdir` (UserError if none).

    The checkpoint is checked as a resume checks it (one of another model, data set... is refused),
    and the checkpoints are opened read-only: nothing in `workdir` changes.
    """
    directory = _checkpoints_dir(workdir)
    run, init, replicated = _prepare(config, distributed.data_mesh())
    checkpoints = checkpoint.Checkpoints(directory, config.keep_checkpoints, read_only=True)
    try:
        restored = _restore(run, init, replicated, checkpoints)
    finally:
        checkpoints.close()
    if restored is None:
        raise _no_checkpoint(workdir)
    return run, restored[0]


def load_state(config: config_lib.TrainConfig, workdir: str) -> steps.TrainState:
    """The state of the newest readable checkpoint in `workdir`, checked against `config` (UserError)."""
    return _restored(config, workdir)[1]


def evaluate_checkpoint(config: config_lib.TrainConfig, workdir: str) -> dict:
    """Evaluates the newest checkpoint in `workdir` on the evaluation split; records it in `workdir/eval.json`.

    Returns the canonical model string, the data set, the checkpoint's step and `eval_loss`,
    `eval_top1` and `eval_top5` (fractions, as `fit` returns them); `eval.json` holds them as
    `metrics.jsonl` does, in percent. The evaluation is the one training runs (precise BatchNorm
    included), so at a step where training evaluated it gives the same figures. The checkpoint
    is checked as a resume checks it; nothing but `eval.json` changes in `workdir`, which is
    locked meanwhile, as a training run locks it: one writer at a time.
    """
    _checkpoints_dir(workdir)  # a directory never trained in is told as such, not as a lock it cannot hold
    main_process = jax.process_index() == 0
    with _lock(workdir) if main_process else contextlib.nullcontext():
        run, state = _restored(config, workdir)
        figures = evaluate(run, state)
        step = int(jax.device_get(state.step))
        if main_process:
            files.atomic_write(os.path.join(workdir, EVAL_FILE), json.dumps(
                {"model": run.variant, "dataset": run.info.name, "split": run.info.eval_split, "step": step,
                 "precise_bn_images": run.config.precise_bn_images, **recorded(figures)}, indent=1) + "\n")
    return {"model": run.variant, "dataset": run.info.name, "resolution": run.resolution, "step": step,
            **{f"eval_{name}": value for name, value in figures.items()}}
