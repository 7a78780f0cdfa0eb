"""scikit-learn's 8x8 handwritten digits: a small image-classification data set that works offline.

1,797 real scans of handwritten digits (UCI's "optdigits"), 8x8 grayscale with values 0..16, shipped
inside scikit-learn: training runs end to end on any machine without downloading anything. No
TensorFlow here, on purpose: the digits path stays light.
"""

import functools

import numpy as np

from core.errors import UserError

NUM_CLASSES = 10
SPLITS = ("train", "test")
# A fixed 80/20 split, stratified by class: 1,437 training and 360 test images (35 to 37 of each
# digit). It never depends on a run's seed, so runs with different seeds are scored on one test set.
TEST_FRACTION = 0.2
SPLIT_SEED = 0
_SOURCE_SIDE = 8
_SOURCE_MAX = 16


@functools.cache
def _digits() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """All 1,797 images as uint8 0..255 [N, 8, 8], their int32 labels, and each split's indices."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise UserError("the digits data set needs scikit-learn: pip install -e '.[train]'") from None
    data = load_digits()
    images = np.round(data.images * (255 / _SOURCE_MAX)).astype(np.uint8)
    labels = data.target.astype(np.int32)
    train, test = train_test_split(np.arange(len(labels)), test_size=TEST_FRACTION, stratify=labels,
                                   random_state=SPLIT_SEED)
    indices = {"train": np.sort(train), "test": np.sort(test)}
    # Cached and shared: nobody may write into them.
    for array in (images, labels, *indices.values()):
        array.setflags(write=False)
    return images, labels, indices


def split_indices(split: str) -> np.ndarray:
    """The indices into scikit-learn's `load_digits()` of the examples in `split`, ascending."""
    if split not in SPLITS:
        raise UserError(f"digits has no split {split!r}; use one of {', '.join(SPLITS)}")
    return _digits()[2][split]


def upscale(images: np.ndarray, resolution: int) -> np.ndarray:
    """Nearest-neighbour resize of uint8 [N, 8, 8] grayscale images to [N, resolution, resolution, 3].

    Nearest, so that at a multiple of 8 each source pixel becomes an exact block (no blur to learn
    around); any other resolution repeats some rows and columns once more than others. The gray
    plane is copied into three contiguous channels (216 MB for the training split at 224): taking a
    batch out of them is then a plain copy, 20 times faster than out of a broadcast view.
    """
    source = (np.arange(resolution) * _SOURCE_SIDE) // resolution
    gray = images[:, source[:, None], source[None, :]]
    return np.repeat(gray[..., None], 3, axis=-1)


def load(split: str, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """The images (uint8 [N, R, R, 3]) and labels (int32 [N]) of `split` at `resolution`."""
    images, labels, _ = _digits()
    indices = split_indices(split)
    return upscale(images[indices], resolution), labels[indices]
