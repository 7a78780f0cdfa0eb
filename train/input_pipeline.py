"""Training and evaluation input: NumPy batches from the digits or a tensorflow-datasets data set.

A batch is a dict of NumPy arrays: `image` uint8 [B, R, R, 3] (0..255, not normalised: `normalize`
does that on the device), `label` int32 [B], and in evaluation `mask` bool [B] (False on padding).
B is the batch of one process (host). Training batches come forever, epoch after epoch, and resume
exactly: the order of epoch e depends only on (seed, e), each example's augmentation only on (seed,
e, host, its position in the epoch), so `Batches.position()` saved with a checkpoint and given back
to `train_batches(position=...)` continues with the very batches the uninterrupted run would have
seen. TensorFlow is imported only for tensorflow-datasets data sets, never for the digits.
"""

import dataclasses
import functools
import os
from collections.abc import Callable, Iterator
from typing import Any

import jax.numpy as jnp
import numpy as np

from models.errors import UserError
from models.registry import MAX_RESOLUTION
from train import digits

Batch = dict[str, np.ndarray]

# ImageNet's channel statistics in 0..255 units (torchvision's, as pycls and the Flax example use).
MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)
STDDEV_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)

DIGITS = "digits"
# Serialized examples the training shuffle holds: about 1 GB of ImageNet JPEGs; small data sets
# (the mock, cifar10's 50,000 PNGs at 2.5 KB) are shuffled whole or nearly.
SHUFFLE_BUFFER = 10_000
# The evaluation crop keeps resolution / (resolution + CROP_PADDING) of the shorter side: 0.875 at
# 224, as Inception, the Flax ImageNet example and big_vision crop.
CROP_PADDING = 32
_SUPPORTED = ("digits (built in), imagenet2012, or another image-classification data set of "
              "tensorflow-datasets prepared in the data directory (cifar10, imagenette, ...)")


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a training run needs to know about a data set before reading it."""

    name: str
    num_classes: int
    train_examples: int  # in the training split, all processes together
    eval_examples: int  # in the evaluation split, all processes together
    eval_split: str  # "validation" where the data set has one (imagenet2012), else "test"


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
    return _tfds_open(name, data_dir)[0]


class Batches:
    """Endless training batches of one process that can tell, and restore, where they are."""

    def __init__(self, open_epoch: Callable[[int, int], Iterator[Batch]], *, epoch_batches: int,
                 batch_size: int, process_count: int, position: dict | None = None):
        """`open_epoch(epoch, first_batch)` yields that epoch's batches from `first_batch` on."""
        self._open_epoch = open_epoch
        self.epoch_batches = epoch_batches  # full batches per epoch of this process
        self.batch_size = batch_size
        self.process_count = process_count
        self._epoch, self._batch = _start(position, epoch_batches, batch_size, process_count)
        self._batches: Iterator[Batch] | None = None

    def __iter__(self) -> "Batches":
        """The batches themselves: one pass never ends."""
        return self

    def __next__(self) -> Batch:
        """The next batch, opening the next epoch when this one is used up."""
        if self._batches is None:
            self._batches = self._open_epoch(self._epoch, self._batch)
        batch = next(self._batches, None)
        if batch is None:  # A StopIteration here would end the caller's loop silently.
            raise RuntimeError(f"epoch {self._epoch} ended after {self._batch} of {self.epoch_batches} batches")
        self._batch += 1
        if self._batch == self.epoch_batches:
            self._epoch, self._batch, self._batches = self._epoch + 1, 0, None
        return batch

    def position(self) -> dict[str, int]:
        """Where the next batch comes from, as JSON-ready ints: pass it to train_batches(position=)."""
        return {"epoch": self._epoch, "batch": self._batch, "batch_size": self.batch_size,
                "process_count": self.process_count}


def train_batches(dataset: str | DatasetInfo, data_dir: str | None = None, *, batch_size: int,
                  resolution: int, seed: int, position: dict | None = None, process_index: int = 0,
                  process_count: int = 1, shuffle_buffer: int = SHUFFLE_BUFFER) -> Batches:
    """This process's training batches of `batch_size` examples, augmented, from `position` on.

    `dataset` is a name or what dataset_info returned. Each process reads its own equal part of the
    training split; what does not fill a whole batch is left out of the epoch. `shuffle_buffer`
    (tfds data sets only) is in examples.
    """
    name = _name(dataset)
    _check_layout(batch_size, resolution, process_index, process_count)
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserError(f"the input seed must be an integer >= 0, not {seed!r}")
    if name == DIGITS:
        images, labels = digits.load("train", resolution)
        return _array_train_batches(images, labels, batch_size=batch_size, seed=seed, position=position,
                                    process_index=process_index, process_count=process_count)
    builder = _tfds_open(name, data_dir)[1]
    return _tfds_train_batches(builder, batch_size=batch_size, resolution=resolution, seed=seed,
                               position=position, process_index=process_index,
                               process_count=process_count, shuffle_buffer=shuffle_buffer)


def eval_batches(dataset: str | DatasetInfo, data_dir: str | None = None, *, batch_size: int,
                 resolution: int, process_index: int = 0, process_count: int = 1) -> Iterator[Batch]:
    """This process's part of the evaluation split once, in a fixed order, center-cropped.

    Every process yields ceil(ceil(eval_examples / process_count) / batch_size) batches, so that
    they stay in step; batches are padded to full size with zero images whose `mask` is False.
    """
    name = _name(dataset)
    _check_layout(batch_size, resolution, process_index, process_count)
    if name == DIGITS:
        images, labels = digits.load("test", resolution)
        return _array_eval_batches(images, labels, batch_size=batch_size, process_index=process_index,
                                   process_count=process_count)
    info, builder = _tfds_open(name, data_dir)
    return _tfds_eval_batches(builder, info, batch_size=batch_size, resolution=resolution,
                              process_index=process_index, process_count=process_count)


def _name(dataset: str | DatasetInfo) -> str:
    """The name of a data set given by name or by its DatasetInfo."""
    return dataset.name if isinstance(dataset, DatasetInfo) else dataset


def _check_layout(batch_size: Any, resolution: Any, process_index: Any, process_count: Any) -> None:
    """Refuses a batch size, resolution or process layout that cannot be read, in one line."""
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise UserError(f"the batch size must be an integer >= 1, not {batch_size!r}")
    if not isinstance(resolution, (int, np.integer)) or not 1 <= resolution <= MAX_RESOLUTION:
        raise UserError(f"the input resolution must be an integer in 1..{MAX_RESOLUTION}, not {resolution!r}")
    if not isinstance(process_count, (int, np.integer)) or process_count < 1:
        raise UserError(f"the process count must be an integer >= 1, not {process_count!r}")
    if not isinstance(process_index, (int, np.integer)) or not 0 <= process_index < process_count:
        raise UserError(f"the process index must be in 0..{process_count - 1}, not {process_index!r}")


def _start(position: dict | None, epoch_batches: int, batch_size: int,
           process_count: int) -> tuple[int, int]:
    """The (epoch, batch) a saved position says comes next, checked against this run's layout."""
    if position is None:
        return 0, 0
    if not isinstance(position, dict) or not all(
            isinstance(position.get(key), int) for key in ("epoch", "batch")):
        raise UserError(f"bad input position {position!r}: give back what Batches.position() returned")
    epoch, batch = position["epoch"], position["batch"]
    saved = (position.get("batch_size", batch_size), position.get("process_count", process_count))
    # Another batch size or process count reads the epoch in other pieces: the saved place means
    # nothing there.
    if saved != (batch_size, process_count):
        raise UserError(f"the input position was saved with batch size {saved[0]} on {saved[1]} processes, "
                        f"not {batch_size} on {process_count}: resume with the same, or without a position")
    if epoch < 0 or not 0 <= batch <= epoch_batches:
        raise UserError(f"bad input position {position!r}: an epoch has {epoch_batches} batches")
    return (epoch + 1, 0) if batch == epoch_batches else (epoch, batch)


def _epoch_batches(host_examples: int, batch_size: int, process_count: int) -> int:
    """Full batches per epoch of one process; refuses a batch larger than its part of the data."""
    if host_examples < batch_size:
        raise UserError(f"the batch size {batch_size} exceeds the {host_examples} training examples each of "
                        f"{process_count} processes reads: lower the batch size")
    return host_examples // batch_size


def _eval_batch_count(host_examples: int, eval_examples: int, batch_size: int, process_count: int) -> int:
    """Evaluation batches per process: the same on every process, enough for the largest part."""
    largest_part = max(host_examples, -(-eval_examples // process_count))
    return -(-largest_part // batch_size)


# In-memory arrays (the digits). ---------------------------------------------------------------------


def _array_train_batches(images: np.ndarray, labels: np.ndarray, *, batch_size: int, seed: int,
                         position: dict | None, process_index: int, process_count: int) -> Batches:
    """Training batches of arrays: a fresh permutation each epoch, each process its own slice of it."""
    host_examples = len(labels) // process_count
    epoch_batches = _epoch_batches(host_examples, batch_size, process_count)

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
    batch_count = _eval_batch_count(len(part), len(labels), batch_size, process_count)

    def batches() -> Iterator[Batch]:
        """The padded batches."""
        for start in range(0, batch_count * batch_size, batch_size):
            chosen = part[start:start + batch_size]
            padding = batch_size - len(chosen)
            yield {"image": np.concatenate([images[chosen], np.zeros((padding, *images.shape[1:]), np.uint8)]),
                   "label": np.concatenate([labels[chosen], np.zeros(padding, np.int32)]),
                   "mask": np.arange(batch_size) < len(chosen)}

    return batches()


# tensorflow-datasets data sets, through tf.data. -----------------------------------------------------


@functools.cache
def _tensorflow():
    """TensorFlow, imported on first use, with every GPU hidden from it."""
    # TensorFlow's C++ start-up lines (oneDNN's notice, absl's) would bury one-line errors and the
    # progress; oneDNN speeds up TensorFlow's matmuls and convolutions, which tf.data never runs.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    try:
        import tensorflow as tf
    except ImportError:
        raise UserError("data sets other than digits need TensorFlow: pip install -e '.[train]'") from None
    # tf.data only feeds the host; JAX runs the model. A TensorFlow that sees a GPU maps most of
    # its memory as soon as it touches it, and JAX then runs out: hide them before anything runs.
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:
        pass  # The caller initialised TensorFlow earlier and chose its devices then.
    return tf


def _tfds():
    """tensorflow_datasets, imported after TensorFlow has been kept off the GPUs."""
    _tensorflow()
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise UserError("data sets other than digits need tensorflow-datasets: pip install -e '.[train]'") from None
    return tfds


def _tfds_open(name: str, data_dir: str | None):
    """The DatasetInfo and the tfds builder of an image-classification data set prepared in data_dir."""
    tfds = _tfds()
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except ValueError:  # DatasetNotFoundError, or a name tfds cannot even parse
        raise UserError(f"unknown data set {name!r}: use {_SUPPORTED}") from None
    features = dict(builder.info.features.items())
    if not (isinstance(features.get("image"), tfds.features.Image)
            and isinstance(features.get("label"), tfds.features.ClassLabel)):
        raise UserError(f"{name} is not an image-classification data set (no 'image' and 'label' features): "
                        f"use {_SUPPORTED}")
    split_names = set(builder.info.splits.keys())
    # Split names are unknown only under tfds.testing.mock_data, which accepts any.
    eval_split = "validation" if "validation" in split_names or not split_names else "test"
    if split_names and not {"train", eval_split} <= split_names:
        raise UserError(f"{name} has splits {', '.join(sorted(split_names))}: it needs 'train' and "
                        f"'validation' or 'test'")
    try:
        train_examples, eval_examples = _count(builder, "train"), _count(builder, eval_split)
    except AssertionError:  # tfds's way of saying that the data set is not in data_dir
        where = data_dir or "the default data directory (~/tensorflow_datasets or $TFDS_DATA_DIR)"
        raise UserError(f"{name} is not prepared in {where}: prepare it there as BUILD.md says under "
                        "'Preparing ImageNet'") from None
    num_classes = features["label"].num_classes
    return DatasetInfo(name, num_classes, train_examples, eval_examples, eval_split), builder


def _read(builder, split, *, shuffle_seed: int | None = None):
    """The {image: encoded bytes, label} examples of `split`, undecoded; files shuffled if seeded."""
    tfds = _tfds()
    examples = builder.as_dataset(
        split=split, decoders={"image": tfds.decode.SkipDecoding()}, shuffle_files=shuffle_seed is not None,
        # A seed makes tfds interleave the files deterministically; autocache would keep the
        # decoded-later bytes of small data sets twice.
        read_config=tfds.ReadConfig(shuffle_seed=shuffle_seed, try_autocache=False))
    return examples.map(lambda example: {"image": example["image"], "label": example["label"]})


def _count(builder, split) -> int:
    """The examples in `split`: tf.data knows the count from the metadata, without reading."""
    count = int(_read(builder, split).cardinality())
    return count if count >= 0 else builder.info.splits[split].num_examples


def _epoch_seeds(seed: int, epoch: int, process_index: int, count: int) -> list[int]:
    """`count` independent 63-bit seeds for one process's epoch, a function of these three only."""
    words = np.random.SeedSequence([seed, epoch, process_index]).generate_state(count, np.uint64)
    return [int(word >> np.uint64(1)) for word in words]


def _decode_and_crop(image_bytes, window_of):
    """The RGB crop [y, x, height, width] = window_of(image shape) of an encoded image, uint8.

    JPEGs are decoded with the crop fused (the decoder skips the blocks outside it); other formats
    (PNG, ...) are decoded whole, then cropped. Grayscale becomes three equal channels.
    """
    tf = _tensorflow()

    def jpeg():
        """The fused decode and crop."""
        window = window_of(tf.io.extract_jpeg_shape(image_bytes))
        return tf.io.decode_and_crop_jpeg(image_bytes, window, channels=3)

    def other():
        """The full decode, then the crop."""
        image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
        window = window_of(tf.shape(image))
        return image[window[0]:window[0] + window[2], window[1]:window[1] + window[3]]

    return tf.cond(tf.io.is_jpeg(image_bytes), jpeg, other)


def _center_window(shape, resolution: int):
    """The centered square evaluation crop of an image of `shape` [h, w, ...], as [y, x, h, w]."""
    tf = _tensorflow()
    height, width = shape[0], shape[1]
    side = tf.cast(resolution / (resolution + CROP_PADDING) * tf.cast(tf.minimum(height, width), tf.float32),
                   tf.int32)
    side = tf.maximum(side, 1)
    return tf.stack([(height - side + 1) // 2, (width - side + 1) // 2, side, side])


def _random_window(shape, key, resolution: int):
    """Inception's random crop of an image of `shape`: 8-100 % of the area, aspect 3/4-4/3."""
    tf = _tensorflow()
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape, bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=key, min_object_covered=0.1,
        aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0), max_attempts=10,
        use_image_if_no_bounding_boxes=True)
    # When none of the 10 tries fits, the op returns the whole image; Inception's training (and
    # the Flax ImageNet example) take the evaluation crop instead.
    failed = tf.reduce_all(tf.equal(size[:2], shape[:2]))
    return tf.cond(failed, lambda: _center_window(shape, resolution),
                   lambda: tf.stack([begin[0], begin[1], size[0], size[1]]))


def _resize(image, resolution: int):
    """A square uint8 image of side `resolution`: bilinear, antialiased when it shrinks."""
    tf = _tensorflow()
    resized = tf.image.resize(image, [resolution, resolution], method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def _train_image(image_bytes, key, resolution: int):
    """The training augmentation: a random-resized crop and a random horizontal flip, drawn from key."""
    tf = _tensorflow()
    crop_key, flip_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
    image = _decode_and_crop(image_bytes, lambda shape: _random_window(shape, crop_key, resolution))
    return tf.image.stateless_random_flip_left_right(_resize(image, resolution), flip_key)


def _eval_image(image_bytes, resolution: int):
    """The evaluation image: the center crop, resized."""
    return _resize(_decode_and_crop(image_bytes, lambda shape: _center_window(shape, resolution)), resolution)


def _tfds_train_batches(builder, *, batch_size: int, resolution: int, seed: int, position: dict | None,
                        process_index: int, process_count: int, shuffle_buffer: int) -> Batches:
    """Training batches of a tfds data set, one tf.data pipeline per epoch."""
    tf, tfds = _tensorflow(), _tfds()
    # Equal parts, the remainder dropped: every process must take the same number of steps.
    split = tfds.even_splits("train", n=process_count, drop_remainder=True)[process_index]
    host_examples = _count(builder, split)
    epoch_batches = _epoch_batches(host_examples, batch_size, process_count)

    def open_epoch(epoch: int, first_batch: int) -> Iterator[Batch]:
        """The batches of `epoch` from `first_batch` on."""
        file_seed, order_seed, *key = _epoch_seeds(seed, epoch, process_index, 4)
        epoch_key = tf.constant(key, tf.int64)

        def example(index, encoded):
            """The augmented example at `index` of the epoch: its randomness is drawn from the index."""
            image_key = tf.random.experimental.stateless_fold_in(epoch_key, index)
            return {"image": _train_image(encoded["image"], image_key, resolution),
                    "label": tf.cast(encoded["label"], tf.int32)}

        examples = (_read(builder, split, shuffle_seed=file_seed)
                    .shuffle(min(shuffle_buffer, host_examples), seed=order_seed, reshuffle_each_iteration=False)
                    .take(epoch_batches * batch_size)
                    .enumerate()
                    # Resuming passes over the examples already used before decoding them: it costs
                    # reading their bytes, nothing more.
                    .skip(first_batch * batch_size)
                    # Deterministic: the parallel map must keep the order for resuming to be exact.
                    .map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))
        return examples.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE).as_numpy_iterator()

    return Batches(open_epoch, epoch_batches=epoch_batches, batch_size=batch_size,
                   process_count=process_count, position=position)


def _tfds_eval_batches(builder, info: DatasetInfo, *, batch_size: int, resolution: int, process_index: int,
                       process_count: int) -> Iterator[Batch]:
    """Evaluation batches of a tfds data set: this process's part once, the last batch padded."""
    tf, tfds = _tensorflow(), _tfds()
    split = tfds.even_splits(info.eval_split, n=process_count)[process_index]
    host_examples = _count(builder, split)
    batch_count = _eval_batch_count(host_examples, info.eval_examples, batch_size, process_count)
    examples = _read(builder, split).map(
        lambda encoded: {"image": _eval_image(encoded["image"], resolution),
                         "label": tf.cast(encoded["label"], tf.int32), "mask": tf.constant(True)},
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    padding = tf.data.Dataset.from_tensors({"image": tf.zeros([resolution, resolution, 3], tf.uint8),
                                            "label": tf.constant(0, tf.int32), "mask": tf.constant(False)})
    examples = examples.concatenate(padding.repeat(batch_count * batch_size - host_examples))
    return examples.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE).as_numpy_iterator()
