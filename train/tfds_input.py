"""tensorflow-datasets data sets through tf.data: Inception-style training crops, exact resume.

TensorFlow is imported on first use only (the digits never need it), with every GPU hidden from it.
"""

import functools
import os
from collections.abc import Iterator

import numpy as np

from core.errors import UserError
from train import config as config_lib
from train.batches import (
    Batch,
    Batches,
    DatasetInfo,
    epoch_batch_count,
    eval_batch_count,
)

# Serialized examples the training shuffle holds: about 1 GB of ImageNet JPEGs; small data sets
# (the mock, cifar10's 50,000 PNGs at 2.5 KB) are shuffled whole or nearly.
SHUFFLE_BUFFER = 10_000
# The evaluation crop keeps resolution / (resolution + CROP_PADDING) of the shorter side: 0.875 at
# 224, as Inception, the Flax ImageNet example and big_vision crop.
CROP_PADDING = 32
SUPPORTED = config_lib.DATASETS  # what a refusal offers instead


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


def tfds_module():
    """tensorflow_datasets, imported after TensorFlow has been kept off the GPUs."""
    _tensorflow()
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise UserError("data sets other than digits need tensorflow-datasets: pip install -e '.[train]'") from None
    return tfds


def open_builder(name: str, data_dir: str | None):
    """The DatasetInfo and the tfds builder of an image-classification data set prepared in data_dir."""
    tfds = tfds_module()
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except ValueError:  # DatasetNotFoundError, or a name tfds cannot even parse
        raise UserError(f"unknown data set {name!r}: use {SUPPORTED}") from None
    except ImportError as error:  # a community data set ("huggingface:...") whose reader is not installed
        raise UserError(f"data set {name!r} needs {error.name or 'a module'}, which is not installed: "
                        f"pip install it, or use {SUPPORTED}") from None
    features = dict(builder.info.features.items())
    if not (isinstance(features.get("image"), tfds.features.Image)
            and isinstance(features.get("label"), tfds.features.ClassLabel)):
        raise UserError(f"{name} is not an image-classification data set (no 'image' and 'label' features): "
                        f"use {SUPPORTED}")
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
    tfds = tfds_module()
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


def train_batches(builder, *, batch_size: int, resolution: int, seed: int, position: dict | None,
                        process_index: int, process_count: int, shuffle_buffer: int) -> Batches:
    """Training batches of a tfds data set, one tf.data pipeline per epoch."""
    tf, tfds = _tensorflow(), tfds_module()
    # Equal parts, the remainder dropped: every process must take the same number of steps.
    split = tfds.even_splits("train", n=process_count, drop_remainder=True)[process_index]
    host_examples = _count(builder, split)
    epoch_batches = epoch_batch_count(host_examples, batch_size, process_count)

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


def eval_batches(builder, info: DatasetInfo, *, batch_size: int, resolution: int, process_index: int,
                       process_count: int) -> Iterator[Batch]:
    """Evaluation batches of a tfds data set: this process's part once, the last batch padded."""
    tf, tfds = _tensorflow(), tfds_module()
    split = tfds.even_splits(info.eval_split, n=process_count)[process_index]
    host_examples = _count(builder, split)
    batch_count = eval_batch_count(host_examples, info.eval_examples, batch_size, process_count)
    examples = _read(builder, split).map(
        lambda encoded: {"image": _eval_image(encoded["image"], resolution),
                         "label": tf.cast(encoded["label"], tf.int32), "mask": tf.constant(True)},
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    padding = tf.data.Dataset.from_tensors({"image": tf.zeros([resolution, resolution, 3], tf.uint8),
                                            "label": tf.constant(0, tf.int32), "mask": tf.constant(False)})
    examples = examples.concatenate(padding.repeat(batch_count * batch_size - host_examples))
    return examples.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE).as_numpy_iterator()
