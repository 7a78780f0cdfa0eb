"""Times of layers never timed alone: trees of log seconds per MAC on a layer key's counts, kept as plain arrays.

A network outside the spaces whose layers were timed alone still has layers of shapes near them, and
the generic calibration kernels spread over all shapes. As nn-Meter predicts a kernel it never ran
from the kernels it did, extremely randomised trees (scikit-learn) learn a layer's time per MAC
from its key's counts (features.key_vectors), per batch size; per MAC, so that a layer larger than
any timed one takes the time per MAC of the largest, not their time. The fitted trees are kept in the
predictor's JSON as arrays of nodes and walked with numpy: predicting needs no scikit-learn, and no pickle.
"""

import dataclasses

import numpy as np

from core import files
from measure.predict import features

# Chosen by a cross-validation over held-out layers timed alone (generic kernels and a ResNet space's layers):
# more trees or leaves than these gained little, and each node is a row of the predictor's file.
TREES = 50
LEAVES = 256
_LEAF = -1  # scikit-learn's child index of a leaf
_FIELDS = ("feature", "threshold", "left", "right", "value")


@dataclasses.dataclass(frozen=True, eq=False)
class Forest:
    """Trees, each as arrays over its nodes: the column it splits on, where, its children and its value."""

    trees: tuple  # of dicts _FIELDS -> np.ndarray

    def log_seconds_per_mac(self, x: np.ndarray) -> np.ndarray:
        """The mean over trees of the leaf value of each row of features.key_vectors."""
        # scikit-learn splits on features rounded to float32: a value between a threshold and its rounding
        # would otherwise take the other branch.
        x = np.asarray(x, np.float32).astype(float)
        rows, total = np.arange(len(x)), np.zeros(len(x))
        for tree in self.trees:
            node = np.zeros(len(x), int)
            while True:
                inner = tree["left"][node] != _LEAF
                if not inner.any():
                    break
                at = node[inner]
                goes_left = x[rows[inner], tree["feature"][at]] <= tree["threshold"][at]
                node[inner] = np.where(goes_left, tree["left"][at], tree["right"][at])
            total += tree["value"][node]
        return total / len(self.trees)

    def seconds(self, keys) -> np.ndarray:
        """Each layer key's predicted seconds per call."""
        macs = np.array([features.key_counts(key)[0] for key in keys], float)
        return macs * np.exp(self.log_seconds_per_mac(features.key_vectors(keys)))

    def as_json(self) -> list:
        """Its part of the predictor file: one object of node arrays per tree."""
        return [{name: tree[name].tolist() for name in _FIELDS} for tree in self.trees]

    def __eq__(self, other) -> bool:
        return isinstance(other, Forest) and self.as_json() == other.as_json()


def fit(seconds_by_key: dict) -> Forest:
    """The forest of layer times (key -> seconds per call) at one batch size."""
    from sklearn import ensemble  # fitting only: a fitted forest predicts with numpy alone

    keys = list(seconds_by_key)
    target = np.log([seconds_by_key[k] / features.key_counts(k)[0] for k in keys])
    fitted = ensemble.ExtraTreesRegressor(n_estimators=TREES, max_leaf_nodes=LEAVES, random_state=0)
    fitted.fit(features.key_vectors(keys), target)
    return Forest(tuple({"feature": np.maximum(e.tree_.feature, 0), "threshold": e.tree_.threshold,
                         "left": e.tree_.children_left, "right": e.tree_.children_right,
                         "value": e.tree_.value[:, 0, 0]} for e in fitted.estimators_))


def parse(data) -> Forest:
    """The forest a predictor file holds; files.Malformed naming what is wrong."""
    if not isinstance(data, list) or not data:
        raise files.Malformed("its layer model holds no trees")
    trees = []
    for i, tree in enumerate(data):
        if not isinstance(tree, dict) or set(tree) != set(_FIELDS):
            raise files.Malformed(f"tree {i} of its layer model is not {', '.join(_FIELDS)}")
        try:
            arrays = {name: np.array(tree[name], float) for name in _FIELDS}
        except (TypeError, ValueError):
            raise files.Malformed(f"tree {i} of its layer model holds something other than numbers") from None
        nodes = len(arrays["value"])
        if any(a.shape != (nodes,) for a in arrays.values()) or not nodes \
                or not all(np.isfinite(a).all() for a in arrays.values()):
            raise files.Malformed(f"tree {i} of its layer model has arrays of unequal lengths or not finite numbers")
        for name in ("feature", "left", "right"):
            if not (arrays[name] == np.round(arrays[name])).all():
                raise files.Malformed(f"tree {i} of its layer model has a {name} that is not an integer")
        left, right = arrays["left"].astype(int), arrays["right"].astype(int)
        inner = left != _LEAF
        # Children come after their parent: every walk ends at a leaf.
        index = np.arange(nodes)
        if ((right != _LEAF) != inner).any() or (left[inner] <= index[inner]).any() \
                or (right[inner] <= index[inner]).any() or (left >= nodes).any() or (right >= nodes).any() \
                or ((arrays["feature"] < 0) | (arrays["feature"] >= len(features.KEY_COLUMNS))).any():
            raise files.Malformed(f"tree {i} of its layer model has a node pointing outside it")
        trees.append({"feature": arrays["feature"].astype(int), "threshold": arrays["threshold"], "left": left,
                      "right": right, "value": arrays["value"]})
    return Forest(tuple(trees))

