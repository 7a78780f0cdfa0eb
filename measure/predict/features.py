"""The predictor's features: a variant's counted layers at a batch size, as a vector summed over its layers.

Every feature is a sum over layers of something the cost module counts exactly, so that a linear
model on them is a per-layer model summed (nn-Meter's kernels, with XLA's fusion left to the
per-layer terms). A convolution or dense layer is a matrix product of M x K by K x N: its module
scope holds its multiply-accumulates (M N K), output elements (M N) and weights (about N K), so
K = MACs / outputs and N = weights / K. How fast a device runs a product depends on K and N (the
vector width it fills, the reuse of each weight): its MACs are spread over a few log2-spaced
knots of K and of N (linear interpolation between neighbouring knots), so each knot learns its own
time per MAC; grouped convolutions, a kernel of their own, count apart, as do windows overhanging
tiny maps. The other features are the memory traffic and fixed costs: weight and activation
bytes, elementwise work, the taps of pooling windows (max pooling's apart from the sums of average
pooling and LRN over channels, and windows that tile their input, 2x2 of stride 2, apart from both:
XLA:CPU runs each several times faster per tap than the one before), layers and equations (a kernel
launched, a fusion), and one per call.

At a batch size B every MAC, output and elementwise count is B times batch 1's (eval scales
exactly; tests/test_cost_models.py pins it), while weights and layer counts do not: features of
any batch come from one count at batch 1, and none falls when B grows.

Each matrix-product layer also has a key: its exact counts (MACs, outputs, weights, data inputs,
real taps), which name its shape. A layer timed alone as a calibration kernel has the key of the
same layer in a network, so a predictor finds its measured time (see model.py).
"""

import dataclasses
import functools

import numpy as np

from measure import cost as cost_lib
from measure.cost import rules

K_KNOTS = tuple(range(2, 17, 2))  # log2 of the reduction length: 4 (a depthwise 3x3 is 9) to 65536
N_KNOTS = tuple(range(2, 13, 2))  # log2 of the output channels: 4 to 4096
# A convolution whose window overhangs a map of at most this many positions (1x1, 2x2) takes another path
# in XLA:CPU, many times slower per MAC than on a 3x3 map: its MACs count apart too.
TINY_MAP_POSITIONS = 4
SUM_WINDOWS = frozenset({"reduce_window_sum"})  # average pooling, LRN
MAX_WINDOWS = rules.POOLING - SUM_WINDOWS  # max (and min, and generic) pooling
BYTES = 4  # counted in float32: a predictor is fitted at one precision, whose bytes scale these by a constant

NAMES = (*(f"macs_k{2 ** k}" for k in K_KNOTS), *(f"macs_n{2 ** n}" for n in N_KNOTS),
         "grouped_macs", "tiny_map_macs", "padding_macs", "weight_bytes", "activation_bytes", "elementwise",
         "transcendentals", "max_window_taps", "sum_window_taps", "tiled_window_taps", "matmul_layers", "equations",
         "calls")
PER_IMAGE = frozenset({*NAMES[:len(K_KNOTS) + len(N_KNOTS)], "grouped_macs", "tiny_map_macs", "padding_macs",
                       "activation_bytes", "elementwise", "transcendentals", "max_window_taps",
                       "sum_window_taps", "tiled_window_taps"})


@dataclasses.dataclass(frozen=True)
class Layers:
    """A variant's layers at batch 1, as arrays: what the features of any batch size are made from."""

    macs: np.ndarray  # per matrix-product layer
    k: np.ndarray  # reduction length
    n: np.ndarray  # output channels
    totals: dict  # per-image totals and per-call counts (see NAMES)
    rows: int  # matrix-product layers (grouped ones apart)
    keys: tuple[str, ...] = ()  # every matrix-product layer's (grouped ones too), in scope order: layer_key

    @classmethod
    def of(cls, cost: cost_lib.Cost) -> "Layers":
        """The layers of a cost counted at batch 1 (an eval forward pass)."""
        if cost.batch_size not in (None, 1):
            raise ValueError(f"features are made from a count at batch 1, not {cost.batch_size}")
        macs, k, n, grouped, tiny_map, keys = [], [], [], 0, 0, []
        for scope, tally in cost.breakdown.per_scope.items():
            if not tally.macs:
                continue
            weights = cost.scope_params.get(scope, 0)
            keys.append(layer_key(tally, weights))
            if tally.macs_dense_groups > tally.macs:  # a grouped (depthwise) convolution: its own, slower, kernel
                grouped += tally.macs
            else:
                outputs = max(tally.activations, 1)
                reduction = tally.macs / outputs
                macs.append(tally.macs)
                k.append(reduction)
                # A product on data alone (no weights in its scope) has one output column per element.
                n.append(weights / reduction if weights else outputs)
                if outputs / n[-1] <= TINY_MAP_POSITIONS and tally.macs_real_taps < tally.macs:
                    tiny_map += tally.macs
        total = cost.total
        totals = {"grouped_macs": grouped, "tiny_map_macs": tiny_map, "padding_macs": total.macs - total.macs_real_taps,
                  "weight_bytes": cost.params * BYTES,
                  "activation_bytes": total.activations * BYTES, "elementwise": total.elementwise,
                  "transcendentals": total.transcendentals, "max_window_taps": window_taps(cost, MAX_WINDOWS),
                  "sum_window_taps": window_taps(cost, SUM_WINDOWS),
                  "tiled_window_taps": window_taps(cost, rules.POOLING, tiled=True),
                  "matmul_layers": len(macs),
                  "equations": total.equations, "calls": 1}
        return cls(np.array(macs, float), np.array(k, float), np.array(n, float), totals, len(macs), tuple(keys))

    @functools.cached_property
    def layer_weight_bytes(self) -> np.ndarray:
        """Each matrix-product layer's weight bytes, in the order of its keys."""
        return weight_bytes_of(self.keys)

    @functools.cached_property
    def copied_weight_bytes(self) -> float:
        """The weight bytes of its layers whose kernels XLA:CPU copies on every call (copies_kernel)."""
        copied = np.array([copies_kernel(key) for key in self.keys], bool)
        return float(self.layer_weight_bytes[copied].sum())

    def vector(self, batch_size: int) -> np.ndarray:
        """The features at a batch size, in the order of NAMES."""
        by_k = self.macs @ hat_weights(self.k, K_KNOTS)
        by_n = self.macs @ hat_weights(self.n, N_KNOTS)
        rest = [self.totals[name] * (batch_size if name in PER_IMAGE else 1)
                for name in NAMES[len(K_KNOTS) + len(N_KNOTS):]]
        return np.concatenate([by_k * batch_size, by_n * batch_size, np.array(rest, float)])


def window_taps(cost: cost_lib.Cost, primitives: frozenset, tiled: bool = False) -> int:
    """The taps of the window reductions of these primitives at batch 1 (a pooling output's window, LRN's steps
    over channels): of the windows that tile their input, or of the others."""
    tallies = [t for name, t in cost.breakdown.per_primitive.items() if name in primitives]
    if tiled:
        return sum(t.tiled_window_taps for t in tallies)
    return sum(t.elementwise + t.activations - t.tiled_window_taps for t in tallies)


def layer_key(tally, weights: int) -> str:
    """A matrix-product layer's shape, by its exact counts at batch 1: MACs, outputs, weights, data inputs and
    real taps (a stride-2 convolution on a 3x3 map and a stride-1 one on 2x2 differ only in their inputs)."""
    return f"{tally.macs}:{tally.activations}:{weights}:{tally.matmul_inputs}:{tally.macs_real_taps}"


def key_counts(key: str) -> tuple[int, int, int, int, int]:
    """The counts a layer_key holds: (MACs, outputs, weights, data inputs, real taps)."""
    macs, outputs, weights, inputs, real_taps = map(int, key.split(":"))
    return macs, outputs, weights, inputs, real_taps


def copies_kernel(key: str) -> bool:
    """Whether XLA:CPU writes a reversed copy of this layer's kernel (layer_key) on every call: it swaps the
    operands of a convolution whose kernel has more taps than its input map has positions (a 3x3 kernel on a
    1x1 or 2x2 map), and the taps of a square kernel outnumber a square map's positions when its reduction
    length (taps x input channels) exceeds its data inputs (positions x input channels)."""
    macs, outputs, weights, inputs, _ = key_counts(key)
    return weights > 0 and macs > inputs * max(outputs, 1)


def weight_bytes_of(keys) -> np.ndarray:
    """The weight bytes of the layers of these keys (layer_key), in order."""
    return np.array([key_counts(key)[2] * BYTES for key in keys], float)


def hat_weights(values: np.ndarray, knots: tuple) -> np.ndarray:
    """Each value's share of each knot (rows: values): linear in log2 between the two neighbouring knots."""
    position = np.clip(np.log2(np.maximum(values, 1.0)), knots[0], knots[-1])
    grid = np.array(knots, float)
    upper = np.clip(np.searchsorted(grid, position, side="right"), 1, len(grid) - 1)
    lower = upper - 1
    share = (position - grid[lower]) / (grid[upper] - grid[lower])
    weights = np.zeros((len(values), len(grid)))
    rows = np.arange(len(values))
    weights[rows, lower] = 1 - share
    weights[rows, upper] += share
    return weights


# The columns of key_vectors: what a layer's time depends on, from its key's exact counts alone.
KEY_COLUMNS = ("log2_macs", "log2_outputs", "log2_weights", "log2_inputs", "log2_reduction", "log2_output_channels",
               "log2_positions", "log2_inputs_per_position", "padding_share")


def key_vectors(keys) -> np.ndarray:
    """Each layer key's KEY_COLUMNS (rows): its counts and the matrix product's K, N and M (positions) they imply."""
    rows = []
    for key in keys:
        macs, outputs, weights, inputs, real_taps = (max(float(count), 1.0) for count in key_counts(key))
        reduction = macs / outputs
        channels = max(weights / reduction, 1.0) if weights > 1 else outputs  # a product on data alone
        positions = max(outputs / channels, 1.0)
        counts = np.log2([macs, outputs, weights, inputs, reduction, channels, positions, inputs / positions])
        rows.append([*counts, 1 - real_taps / macs])
    return np.array(rows, float).reshape(-1, len(KEY_COLUMNS))
