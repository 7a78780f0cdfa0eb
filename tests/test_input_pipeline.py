"""The training input: batch format, exact resume, per-process parts, evaluation padding, errors."""

import collections
import json
import subprocess
import sys

import numpy as np
import pytest

from core.errors import UserError
from train import digits
from train import input_pipeline as ip


def _take(batches, count: int) -> list[dict]:
    """The next `count` batches."""
    return [next(batches) for _ in range(count)]


def _assert_same_batches(expected: list[dict], actual: list[dict]) -> None:
    """Equal batch for batch, byte for byte."""
    assert len(expected) == len(actual)
    for want, got in zip(expected, actual):
        assert want.keys() == got.keys()
        for key in want:
            assert want[key].dtype == got[key].dtype and np.array_equal(want[key], got[key]), key


def _assert_resumes(make, total: int, split_at: int) -> None:
    """Batches after a position saved at `split_at` and restored equal the uninterrupted run's."""
    straight = _take(make(None), total)
    interrupted = make(None)
    head = _take(interrupted, split_at)
    position = json.loads(json.dumps(interrupted.position()))  # as a checkpoint stores it
    _assert_same_batches(straight, head + _take(make(position), total - split_at))


def _identities(batches: list[dict]) -> list[bytes]:
    """Each example's image bytes (digits at resolution 8 are all distinct, so these name examples)."""
    return [image.tobytes() for batch in batches for image in batch["image"]]


# The digits: no TensorFlow. --------------------------------------------------------------------------


def test_digits_info_and_fixed_split():
    info = ip.dataset_info("digits", None)
    assert info == ip.DatasetInfo("digits", 10, 1437, 360, "test")
    train, test = digits.split_indices("train"), digits.split_indices("test")
    assert len(np.intersect1d(train, test)) == 0 and len(np.union1d(train, test)) == 1797
    _, labels = digits.load("test", 8)
    assert set(np.bincount(labels)) <= {35, 36, 37}  # stratified
    # The split is not the run's: an epoch under any seed holds the same training examples.
    epochs = [set(_identities(_take(ip.train_batches("digits", batch_size=479, resolution=8, seed=seed), 3)))
              for seed in (0, 1, 12345)]
    assert epochs[0] == epochs[1] == epochs[2] and len(epochs[0]) == 1437


def test_digits_upscale_is_faithful():
    images, labels = digits.load("train", 32)
    source, source_labels = digits.load("train", 8)
    assert images.shape == (1437, 32, 32, 3) and images.dtype == np.uint8 and labels.dtype == np.int32
    assert np.array_equal(labels, source_labels) and source.max() == 255 and source.min() == 0
    blocks = images[..., 0].reshape(1437, 8, 4, 8, 4).astype(np.float64)
    assert np.array_equal(blocks.mean(axis=(2, 4)), source[..., 0])
    assert np.array_equal(images[..., 0], images[..., 2])  # gray in all three channels
    raw, _, _ = digits._digits()
    from sklearn.datasets import load_digits
    assert np.array_equal(raw, np.round(load_digits().images * 255 / 16))


def test_digits_train_batches():
    batches = ip.train_batches("digits", batch_size=100, resolution=24, seed=3)
    assert batches.epoch_batches == 14
    epoch = _take(batches, 14)
    for batch in epoch:
        assert batch.keys() == {"image", "label"}
        assert batch["image"].shape == (100, 24, 24, 3) and batch["image"].dtype == np.uint8
        assert batch["label"].shape == (100,) and batch["label"].dtype == np.int32
        assert batch["label"].min() >= 0 and batch["label"].max() <= 9
    assert len(set(_identities(epoch))) == 1400  # no example twice in an epoch
    assert batches.position() == {"epoch": 1, "batch": 0, "batch_size": 100, "process_count": 1}
    # Another epoch, another order.
    assert not np.array_equal(next(batches)["label"], epoch[0]["label"])
    # The data set given by its DatasetInfo reads the same.
    by_info = ip.train_batches(ip.dataset_info("digits"), batch_size=100, resolution=24, seed=3)
    _assert_same_batches(epoch[:2], _take(by_info, 2))


@pytest.mark.parametrize("split_at", [5, 11, 16])
def test_digits_resume_is_exact(split_at):
    def make(position):
        return ip.train_batches("digits", batch_size=128, resolution=16, seed=7, position=position)

    _assert_resumes(make, total=25, split_at=split_at)  # 11 batches an epoch: crosses two boundaries


def test_digits_processes_read_disjoint_parts():
    parts = []
    for process_index in (0, 1):
        batches = ip.train_batches("digits", batch_size=100, resolution=8, seed=5,
                                   process_index=process_index, process_count=2)
        assert batches.epoch_batches == 7  # 718 examples each, 18 left out of a batch
        parts.append(set(_identities(_take(batches, 7))))
    train_images, _ = digits.load("train", 8)
    assert len(parts[0]) == len(parts[1]) == 700 and not parts[0] & parts[1]
    assert parts[0] | parts[1] <= set(_identities([{"image": train_images}]))


@pytest.mark.parametrize("process_count", [1, 3])
def test_digits_eval_each_example_once_padded(process_count):
    test_images, test_labels = digits.load("test", 16)
    seen = []
    for process_index in range(process_count):
        batches = list(ip.eval_batches("digits", batch_size=64, resolution=16, process_index=process_index,
                                       process_count=process_count))
        assert len(batches) == (6 if process_count == 1 else 2)  # the same on every process
        for batch in batches:
            assert batch["image"].shape == (64, 16, 16, 3) and batch["mask"].dtype == bool
            assert not batch["image"][~batch["mask"]].any() and not batch["label"][~batch["mask"]].any()
            seen += [(image.tobytes(), label) for image, label in
                     zip(batch["image"][batch["mask"]], batch["label"][batch["mask"]])]
    assert seen == [(image.tobytes(), label) for image, label in zip(test_images, test_labels)]


def test_digits_path_never_imports_tensorflow():
    program = ("import sys\n"
               "from train import input_pipeline as ip\n"
               "ip.dataset_info('digits')\n"
               "next(ip.train_batches('digits', batch_size=8, resolution=16, seed=0))\n"
               "list(ip.eval_batches('digits', batch_size=64, resolution=16))\n"
               "assert not [m for m in sys.modules if m.startswith('tensorflow')], 'tensorflow imported'\n")
    result = subprocess.run([sys.executable, "-c", program], check=False, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_normalize():
    images = np.array([[[[0, 0, 0], [124, 116, 104]]]], np.uint8)
    normalized = np.asarray(ip.normalize(images))
    assert normalized.dtype == np.float32 and normalized.shape == (1, 1, 2, 3)
    np.testing.assert_allclose(normalized[0, 0, 0], [-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225], rtol=1e-6)
    np.testing.assert_allclose(normalized[0, 0, 1], (np.array([124, 116, 104]) - np.array(ip.MEAN_RGB))
                               / np.array(ip.STDDEV_RGB), rtol=1e-5)
    assert np.allclose(ip.MEAN_RGB, (123.675, 116.28, 103.53)) and np.allclose(ip.STDDEV_RGB, (58.395, 57.12, 57.375))


@pytest.mark.parametrize("kwargs, words", [
    ({"batch_size": 0}, "batch size"),
    ({"batch_size": 2000}, "lower the batch size"),
    ({"resolution": 0}, "resolution"),
    ({"seed": -1}, "seed"),
    ({"process_index": 2, "process_count": 2}, "process index"),
    ({"position": {"epoch": "1"}}, "position"),
    ({"position": {"epoch": 0, "batch": 12}}, "position"),
    ({"position": {"epoch": 0, "batch": 1, "batch_size": 64, "process_count": 1}}, "same"),
])
def test_bad_arguments_are_one_line_user_errors(kwargs, words):
    arguments = {"batch_size": 128, "resolution": 16, "seed": 0, **kwargs}
    with pytest.raises(UserError, match=words) as error:
        ip.train_batches("digits", **arguments)
    assert "\n" not in str(error.value)


# tensorflow-datasets data sets through tf.data. -------------------------------------------------------


@pytest.fixture
def mock_imagenet():
    """imagenet2012 replaced by 20 random JPEGs of 5 to 49 pixels a side, 1000 classes."""
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=20, policy=tfds.testing.MockPolicy.USE_CODE):
        yield "imagenet2012"


@pytest.fixture(scope="module")
def gradients_dir(tmp_path_factory):
    """A data directory with a small prepared tfds data set of gray PNG gradients, label = example.

    Each image brightens from left to right (so a flip shows), and each example has its own label
    (so labels name examples); read through the real tfds reader, slicing included.
    """
    tfds = pytest.importorskip("tensorflow_datasets")

    class TinyGradients(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        """40 training and 11 test gray PNGs of 20-26 x 30-34 pixels."""

        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            """Gray PNG images and 40 classes."""
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 1)),
                "label": tfds.features.ClassLabel(num_classes=40)}))

        def _split_generators(self, dl_manager):
            """The two splits."""
            return {"train": self._generate_examples(40), "test": self._generate_examples(11)}

        def _generate_examples(self, count):
            """Left-to-right gradients of several sizes."""
            for index in range(count):
                height, width = 20 + index % 7, 30 + index % 5
                row = np.round(np.linspace(0, 255, width)).astype(np.uint8)
                yield index, {"image": np.repeat(row[None, :, None], height, axis=0), "label": index}

    data_dir = str(tmp_path_factory.mktemp("tfds"))
    TinyGradients(data_dir=data_dir).download_and_prepare()
    return data_dir


@pytest.mark.parametrize("resolution", [32, 64])
def test_mock_imagenet_train_batches(mock_imagenet, resolution):
    info = ip.dataset_info(mock_imagenet, "/nonexistent")
    assert info == ip.DatasetInfo("imagenet2012", 1000, 20, 20, "validation")
    batches = ip.train_batches(mock_imagenet, "/nonexistent", batch_size=6, resolution=resolution, seed=0)
    assert batches.epoch_batches == 3
    epoch = _take(batches, 3)
    for batch in epoch:
        assert batch.keys() == {"image", "label"}
        assert batch["image"].shape == (6, resolution, resolution, 3) and batch["image"].dtype == np.uint8
        assert batch["label"].dtype == np.int32 and 0 <= batch["label"].min() <= batch["label"].max() < 1000
    assert len({label for batch in epoch for label in batch["label"]}) >= 15  # no example twice (up to label clashes)
    assert batches.position()["epoch"] == 1


def test_mock_imagenet_augmentation_is_seeded(mock_imagenet):
    def first_epoch(seed):
        return _take(ip.train_batches(mock_imagenet, None, batch_size=10, resolution=32, seed=seed), 2)

    _assert_same_batches(first_epoch(1), first_epoch(1))
    other = first_epoch(2)
    assert not all(np.array_equal(a["image"], b["image"]) for a, b in zip(first_epoch(1), other))


@pytest.mark.parametrize("split_at", [3, 4])
def test_mock_imagenet_resume_is_exact(mock_imagenet, split_at):
    def make(position):
        return ip.train_batches(mock_imagenet, None, batch_size=6, resolution=32, seed=11, position=position)

    _assert_resumes(make, total=8, split_at=split_at)  # 3 batches an epoch: crosses two boundaries


def test_mock_imagenet_eval(mock_imagenet):
    def run():
        return list(ip.eval_batches(mock_imagenet, None, batch_size=8, resolution=32))

    batches = run()
    _assert_same_batches(batches, run())  # the center crop has no randomness
    assert len(batches) == 3 and [int(batch["mask"].sum()) for batch in batches] == [8, 8, 4]
    assert np.array_equal(batches[-1]["mask"], np.arange(8) < 4)
    assert not batches[-1]["image"][4:].any() and not batches[-1]["label"][4:].any()
    assert all(batch["image"].shape == (8, 32, 32, 3) and batch["image"].dtype == np.uint8 for batch in batches)


def test_prepared_data_set_processes_read_disjoint_parts(gradients_dir):
    info = ip.dataset_info("tiny_gradients", gradients_dir)
    assert info == ip.DatasetInfo("tiny_gradients", 40, 40, 11, "test")
    labels = []
    for process_index in (0, 1):
        batches = ip.train_batches("tiny_gradients", gradients_dir, batch_size=5, resolution=16, seed=0,
                                   process_index=process_index, process_count=2)
        assert batches.epoch_batches == 4
        labels.append([label for batch in _take(batches, 4) for label in batch["label"]])
    assert len(set(labels[0])) == len(set(labels[1])) == 20 and set(labels[0]) | set(labels[1]) == set(range(40))


def test_prepared_data_set_crops_and_flips_at_random(gradients_dir):
    batches = _take(ip.train_batches("tiny_gradients", gradients_dir, batch_size=20, resolution=16, seed=4), 2)
    images = np.concatenate([batch["image"] for batch in batches]).astype(int)
    assert sorted(label for batch in batches for label in batch["label"]) == list(range(40))
    assert np.array_equal(images[..., 0], images[..., 1]) and np.array_equal(images[..., 0], images[..., 2])
    left, right = images[:, :, 0, 0].mean(axis=1), images[:, :, -1, 0].mean(axis=1)
    flipped = left > right
    assert 5 <= flipped.sum() <= 35  # about half, either way
    # Crops of a gradient cover different ranges of it; the whole image would span 0..255 each time.
    spans = {(image.min(), image.max()) for image in images[..., 0]}
    assert len(spans) >= 20


def test_prepared_data_set_eval_parts(gradients_dir):
    seen = []
    for process_index in (0, 1):
        batches = list(ip.eval_batches("tiny_gradients", gradients_dir, batch_size=4, resolution=16,
                                       process_index=process_index, process_count=2))
        assert len(batches) == 2  # 6 and 5 examples: two batches each
        seen += [label for batch in batches for label in batch["label"][batch["mask"]]]
        image = batches[0]["image"][0, :, :, 0].astype(int)
        assert (np.diff(image, axis=1) >= 0).all()  # never flipped in evaluation
    assert collections.Counter(seen) == collections.Counter(range(11))


def test_missing_imagenet_points_at_build_md(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    calls = [lambda: ip.dataset_info("imagenet2012", str(tmp_path)),
             lambda: ip.train_batches("imagenet2012", str(tmp_path), batch_size=8, resolution=32, seed=0),
             lambda: ip.eval_batches("imagenet2012", str(tmp_path), batch_size=8, resolution=32)]
    for call in calls:
        with pytest.raises(UserError, match="BUILD.md") as error:
            call()
        assert "\n" not in str(error.value) and str(tmp_path) in str(error.value)


def test_unknown_data_set_lists_the_supported():
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(UserError, match="digits.*imagenet2012") as error:
        ip.dataset_info("no_such_data_set_anywhere", None)
    assert "\n" not in str(error.value)
