"""Training and evaluation input: NumPy batches from the digits, the synthetic task or a tensorflow-datasets data set.

A batch is a dict of NumPy arrays: `image` uint8 [B, R, R, 3] (0..255, not normalised: `normalize`
does that on the device), `label` int32 [B], and in evaluation `mask` bool [B] (False on padding).
B is the batch of one process (host). Training batches come forever, epoch after epoch, and resume
exactly: the order of epoch e depends only on (seed, e), each example's augmentation only on (seed,
e, host, its position in the epoch), so `Batches.position()` saved with a checkpoint and given back
to `train_batches(position=...)` continues with the very batches the uninterrupted run would have
seen. TensorFlow is imported only for tensorflow-datasets data sets, never for the digits.
"""

import concurrent.futures
from collections.abc import Iterator

import jax.numpy as jnp
import numpy as np

from core.errors import UserError
from train import config as config_lib
from train import digits, synthetic, tfds_input
from train.batches import (
    Batch,
    Batches,
    DatasetInfo,
    check_layout,
    epoch_batch_count,
    eval_batch_count,
)

__all__ = ["Batch", "Batches", "DatasetInfo", "MEAN_RGB", "STDDEV_RGB", "dataset_info", "eval_batches",
           "normalize", "train_batches"]

# ImageNet's channel statistics in 0..255 units (torchvision's, as pycls and the Flax example use).
MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)
STDDEV_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)

DIGITS = config_lib.DIGITS


def normalize(images, dtype=jnp.float32):
    """Images in 0..255 (uint8 or float) to (x - MEAN_RGB) / STDDEV_RGB, computed in float32."""
    pixels = jnp.asarray(images, jnp.float32)
    mean, stddev = jnp.asarray(MEAN_RGB, jnp.float32), jnp.asarray(STDDEV_RGB, jnp.float32)
    return ((pixels - mean) / stddev).astype(dtype)


def dataset_info(name: str, data_dir: str | None = None) -> DatasetInfo:
    """The classes, split sizes and evaluation split of data set `name` (tfds ones read in data_dir)."""
    if name == DIGITS:
        return DatasetInfo(DIGITS, digits.NUM_CLASSES, len(digits.split_indices("train")),
                           len(digits.split_indices("test")), "test")
    if synthetic.is_synthetic(name):
        task = synthetic.parse(name)  # named by its canonical string from here on
        return DatasetInfo(str(task), task.classes, synthetic.EPOCH_EXAMPLES, task.test_examples, "test")
    return tfds_input.open_builder(name, data_dir)[0]


def train_batches(dataset: str | DatasetInfo, data_dir: str | None = None, *, batch_size: int,
                  resolution: int, seed: int, position: dict | None = None, process_index: int = 0,
                  process_count: int = 1, shuffle_buffer: int = tfds_input.SHUFFLE_BUFFER) -> Batches:
    """This process's training batches of `batch_size` examples, augmented, from `position` on.

    `dataset` is a name or what dataset_info returned. Each process reads its own equal part of the
    training split; what does not fill a whole batch is left out of the epoch. `shuffle_buffer`
    (tfds data sets only) is in examples.
    """
    name = _name(dataset)
    check_layout(batch_size, resolution, process_index, process_count)
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserError(f"the input seed must be an integer >= 0, not {seed!r}")
    if synthetic.is_synthetic(name):
        return _synthetic_train_batches(synthetic.parse(name), batch_size=batch_size, resolution=resolution,
                                        position=position, process_index=process_index, process_count=process_count)
    if name == DIGITS:
        images, labels = digits.load("train", resolution)
        return _array_train_batches(images, labels, batch_size=batch_size, seed=seed, position=position,
                                    process_index=process_index, process_count=process_count)
    builder = tfds_input.open_builder(name, data_dir)[1]
    return tfds_input.train_batches(builder, batch_size=batch_size, resolution=resolution, seed=seed,
                               position=position, process_index=process_index,
                               process_count=process_count, shuffle_buffer=shuffle_buffer)


def eval_batches(dataset: str | DatasetInfo, data_dir: str | None = None, *, batch_size: int,
                 resolution: int, process_index: int = 0, process_count: int = 1) -> Iterator[Batch]:
    """This process's part of the evaluation split once, in a fixed order, center-cropped.

    Every process yields ceil(ceil(eval_examples / process_count) / batch_size) batches, so that
    they stay in step; batches are padded to full size with zero images whose `mask` is False.
    """
    name = _name(dataset)
    check_layout(batch_size, resolution, process_index, process_count)
    if name == DIGITS or synthetic.is_synthetic(name):
        images, labels = (digits.load("test", resolution) if name == DIGITS
                          else synthetic.test_split(synthetic.parse(name), resolution))
        return _array_eval_batches(images, labels, batch_size=batch_size, process_index=process_index,
                                   process_count=process_count)
    info, builder = tfds_input.open_builder(name, data_dir)
    return tfds_input.eval_batches(builder, info, batch_size=batch_size, resolution=resolution,
                              process_index=process_index, process_count=process_count)


def _name(dataset: str | DatasetInfo) -> str:
    """The name of a data set given by name or by its DatasetInfo."""
    return dataset.name if isinstance(dataset, DatasetInfo) else dataset


def _synthetic_train_batches(task: synthetic.Task, *, batch_size: int, resolution: int, position: dict | None,
                             process_index: int, process_count: int) -> Batches:
    """Training batches of the synthetic task: every example new, none augmented (none needs to be).

    Global batch g of epoch e holds examples e x EPOCH_EXAMPLES + g x B x P onwards, each process
    its own B of them: the processes' batches are disjoint and together the global batch. A
    training seed changes the initialisation, never the task (its own `seed` setting does).
    """
    epoch_batches = epoch_batch_count(synthetic.EPOCH_EXAMPLES // process_count, batch_size, process_count)

    def draw(epoch: int, batch: int) -> Batch:
        """Batch `batch` of `epoch`, this process's part of it."""
        start = epoch * synthetic.EPOCH_EXAMPLES + (batch * process_count + process_index) * batch_size
        images, labels = synthetic.examples(task, "train", range(start, start + batch_size), resolution)
        return {"image": images, "label": labels}

    def open_epoch(epoch: int, first_batch: int) -> Iterator[Batch]:
        """The batches of `epoch` from `first_batch` on, each drawn in a thread while the one before trains.

        NumPy releases the GIL in its array work, so drawing overlaps the training step's Python
        and any device that waits for the host.
        """
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="synthetic") as pool:
            ahead = pool.submit(draw, epoch, first_batch) if first_batch < epoch_batches else None
            for batch in range(first_batch, epoch_batches):
                ready = ahead.result()
                ahead = pool.submit(draw, epoch, batch + 1) if batch + 1 < epoch_batches else None
                yield ready

    return Batches(open_epoch, epoch_batches=epoch_batches, batch_size=batch_size, process_count=process_count,
                   position=position)


# In-memory arrays (the digits). ---------------------------------------------------------------------


def _array_train_batches(images: np.ndarray, labels: np.ndarray, *, batch_size: int, seed: int,
                         position: dict | None, process_index: int, process_count: int) -> Batches:
    """Training batches of arrays: a fresh permutation each epoch, each process its own slice of it."""
    host_examples = len(labels) // process_count
    epoch_batches = epoch_batch_count(host_examples, batch_size, process_count)

    def open_epoch(epoch: int, first_batch: int) -> Iterator[Batch]:
        """The batches of `epoch` from `first_batch` on."""
        # The same permutation on every process (it depends on no process index): their slices are
        # then disjoint and together cover the epoch.
        order = np.random.default_rng([seed, epoch]).permutation(len(labels))
        part = order[process_index * host_examples:(process_index + 1) * host_examples]
        for start in range(first_batch * batch_size, epoch_batches * batch_size, batch_size):
            chosen = part[start:start + batch_size]
            yield {"image": images[chosen], "label": labels[chosen]}

    return Batches(open_epoch, epoch_batches=epoch_batches, batch_size=batch_size,
                   process_count=process_count, position=position)


def _array_eval_batches(images: np.ndarray, labels: np.ndarray, *, batch_size: int, process_index: int,
                        process_count: int) -> Iterator[Batch]:
    """This process's contiguous part of the arrays once, in order, the last batch padded."""
    part = np.array_split(np.arange(len(labels)), process_count)[process_index]
    batch_count = eval_batch_count(len(part), len(labels), batch_size, process_count)

    def batches() -> Iterator[Batch]:
        """The padded batches."""
        for start in range(0, batch_count * batch_size, batch_size):
            chosen = part[start:start + batch_size]
            padding = batch_size - len(chosen)
            yield {"image": np.concatenate([images[chosen], np.zeros((padding, *images.shape[1:]), np.uint8)]),
                   "label": np.concatenate([labels[chosen], np.zeros(padding, np.int32)]),
                   "mask": np.arange(batch_size) < len(chosen)}

    return batches()
