"""The predictor: per-layer time costs fitted to measured latencies, saved as JSON bound to one device and runtime.

Latency per batch is a non-negative combination of the features (measure.predict.features), fitted
by non-negative least squares on relative error: every coefficient is a time per unit (per MAC at a
shape, per byte, per layer, per call), so more work never predicts less time, and a bigger batch
never a shorter call. The interval is the spread of measured / predicted over a cross-validation
(points of one network held out together), so it says how far a network the fit never saw lands.

One more term is not linear in the features: the weight bytes beyond the device's last-level cache.
A layer timed alone, called again and again, finds its weights in the cache; a network whose weights
outgrow it reads them from memory on every call, so at batch 1 it runs well above the sum of its
layers. The cache's size is not asked of the device but fitted: the size among CACHE_CANDIDATES
whose fit predicts the held-out networks best.

Where every layer of a network has been timed alone on the device (calibration kernels with its
layers' keys, see features.py; `python -m measure.predict --layers_of` times a space's layers), the
predictor adds those times up instead, as nn-Meter does (Composition): a * the sum + b per layer + c
per call + d per weight byte beyond its own fitted cache (+ e and f below), fitted per batch size on
such networks (b comes out negative: each layer timed alone paid a call of its own). XLA has slow paths for some
shapes that no feature foresees, and a layer's own time knows them. A layer never timed alone gets
the time that trees of the timed ones predict for it (forest.py), so a network of another family
is its layers added up too; its interval is wider, cross-validated with every layer predicted by
trees that never saw it. Work outside matrix products is added in too, at the time per unit that
the kernels timed alone without one show (other_work_rates): each window tap of a max pooling, of
an average pooling or LRN's sum, of a window that tiles its input, each power of LRN. A layer whose
own weights outgrow the cache reads the rest from memory when timed alone as well, so only what the
layers keep in cache alone can spill: a small layer's weights, a large one's cache's worth
(spilled_bytes), in both models. The spill, copy and elementwise terms are fitted non-negative.
Alone, a layer has the whole cache to itself: the composition reads where that ends off the dense kernels, whose speed
per weight byte falls there (alone_cache_bytes), a size not below the cache a network leaves its
weights. In a network whose weights outgrow the cache, a layer also takes no less than reading its
evicted weights at the memory's bandwidth (floored_sum): at batch 1 on small maps, where a layer's work
is little beside its weights, that floor is its time, while on large maps the work hides the reads.
The bandwidth is fitted with the cache, among BANDWIDTH_CANDIDATES. Last, e per weight byte of the kernels
that XLA:CPU copies on every call: a convolution whose kernel has more taps than its map has positions (a
3x3 kernel on a 1x1 or 2x2 map) is run with its operands swapped, after writing its kernel reversed
(features.copies_kernel). Alone, the copy stays in cache and the layer's time holds it; in a network it
is written back to memory too, so on small maps, where such layers hold most weights, a network takes
longer than its layers alone add up to. And f per elementwise operation: what a network does beside
its layers (residual adds, the copies of concatenations) grows with its activations, not with its
layers' time, so a network of few such operations (VGG) is not charged the share of its layers' time
that one of many (a ResNet) takes; with f, a falls to about 1. The per-feature model is left for
predictors fitted without layers timed alone.
"""

import dataclasses
import json
import math
from typing import NamedTuple, Optional

import numpy as np
from scipy import optimize

from core import files
from core.errors import UserError
from measure.predict import features, forest

FORMAT = "canziani-jax latency predictor"
VERSION = 6  # 2: a fitted cache, layers timed alone added up; 3: a forest of them; 4: pooling and LRN work;
# 5: the memory's bandwidth; 6: the kernels XLA:CPU copies, elementwise work
RIDGE = 1e-6  # on features scaled to [0, 1]: keeps knots no point reaches near zero, not where data put them
FOLDS = 5
INTERVAL = (0.05, 0.95)  # quantiles of measured / predicted: a 90 % interval
WITHIN = 0.10  # nn-Meter's accuracy criterion: predicted within +-10 % of measured
KERNEL_FAMILY = "kernel"  # the family of calibration kernels' rows and points
SPILL = "weight_bytes_beyond_cache"  # per call: weight bytes above the fitted cache size
COSTS = (*features.NAMES, SPILL)  # the predictor's coefficients
# Last-level cache sizes tried, 2 MiB to 256 MiB (CPUs' L3, GPUs' L2); None: no spill term at all.
CACHE_CANDIDATES = (None, *(2 ** k * 2 ** 20 for k in range(1, 9)))
# Bandwidths tried for weights read from memory, bytes per second: 4 GB/s to 8 TB/s in steps of sqrt(2) (one
# CPU core's share of DRAM to a GPU's HBM); None: no floor.
BANDWIDTH_CANDIDATES = (None, *(2 ** (k / 2) * 1e9 for k in range(4, 27)))
FEWEST_TARGETS = len(COSTS)  # calibration times this many whatever its budget: enough points to fit
_WEIGHT_BYTES = features.NAMES.index("weight_bytes")


@dataclasses.dataclass(frozen=True)
class Point:
    """One measured latency: what was timed (a network or a calibration kernel), at which batch, and its features."""

    name: str
    batch_size: int
    latency_s: float  # per call (batch), median
    features: np.ndarray = dataclasses.field(repr=False, compare=False)
    source: str = ""  # a results directory, or the calibration log
    power_w: Optional[float] = None  # where a meter read
    family: str = ""
    layers: Optional["features.Layers"] = dataclasses.field(default=None, repr=False, compare=False)  # its count

    @property
    def keys(self) -> tuple[str, ...]:
        """Its matrix-product layers' keys (features.Layers.keys; none where its layers are not known)."""
        return self.layers.keys if self.layers is not None else ()

    @property
    def layer_weight_bytes(self) -> np.ndarray:
        """Its matrix-product layers' weight bytes (features.Layers.layer_weight_bytes; none where not known)."""
        return self.layers.layer_weight_bytes if self.layers is not None else np.zeros(0)


@dataclasses.dataclass(frozen=True)
class Prediction:
    """A predicted latency per image with its interval, and energy per image where power is known."""

    latency_s: float  # per image
    low_s: float
    high_s: float
    energy_j: Optional[float] = None


@dataclasses.dataclass(frozen=True)
class Predictor:
    """Fitted per-unit time costs, the interval, and where they hold: one device, runtime and precision."""

    environment: dict  # measure.main_job.SAME_RUNTIME_KEYS -> value, where the points were timed
    precision: str
    coefficients: dict  # COSTS -> seconds per unit
    interval: tuple[float, float]  # measured / predicted, cross-validated quantiles
    cache_bytes: Optional[float] = None  # the fitted last-level cache (None: weights never spill)
    power_w: Optional[float] = None  # mean metered power of the points, where a meter read
    fitted_on: dict = dataclasses.field(default_factory=dict)
    composition: Optional["Composition"] = None  # networks as their layers timed alone (or predicted) added up

    def latency_s(self, vectors: np.ndarray, layer_bytes: Optional[list] = None) -> np.ndarray:
        """Seconds per call the per-feature model predicts for feature vectors (rows), given each row's layers'
        weight bytes where known (with_spill)."""
        return with_spill(vectors, self.cache_bytes, layer_bytes) @ np.array([self.coefficients[n] for n in COSTS])

    def predict(self, layers: features.Layers, batch_size: int) -> Prediction:
        """Latency per image at a batch size, its interval, and energy per image where power is known: its
        layers' times alone added up (as timed, or as the composition's trees predict them) where a composition
        was fitted, else the per-feature model."""
        if self.composition is not None and self.composition.predicts(layers.keys):
            per_call = self.composition.call_s(layers, batch_size)
            low, high = self.composition.interval if self.composes(layers.keys) else \
                self.composition.predicted_interval
        else:
            per_call = float(self.latency_s(layers.vector(batch_size), [layers.layer_weight_bytes])[0])
            low, high = self.interval
        per_image = per_call / batch_size
        return Prediction(per_image, per_image * low, per_image * high,
                          per_image * self.power_w if self.power_w is not None else None)

    def composes(self, keys: tuple[str, ...]) -> bool:
        """Whether a network of these layer keys is predicted as its layers added up (every one timed alone)."""
        return self.composition is not None and self.composition.covers(keys)

    def check_here(self, environment: dict, precision: Optional[str], path: str) -> None:
        """Refuses, in one line, to predict for another device, runtime or precision (None: any) than the fit's."""
        for key, value in self.environment.items():
            if environment.get(key, "") != value:
                raise UserError(f"{path} was fitted with {key} {value!r}, not this process's "
                                f"{environment.get(key, '')!r}: its times do not hold here; fit one here with "
                                f"python -m measure.predict --out=...")
        if precision is not None and precision != self.precision:
            raise UserError(f"{path} predicts {self.precision} times, not {precision}; fit one at {precision} with "
                            f"python -m measure.predict --precision={precision}")

    def as_json(self) -> dict:
        """The file's contents: readable, every number named."""
        return {"format": FORMAT, "version": VERSION, "environment": self.environment, "precision": self.precision,
                "unit": "seconds per call (one batch) per feature unit", "coefficients": self.coefficients,
                "cache_bytes": self.cache_bytes, "interval_measured_over_predicted": list(self.interval),
                "power_w": self.power_w, "fitted_on": self.fitted_on,
                "composition": None if self.composition is None else self.composition.as_json()}


# Where all of a network's layers were timed alone: a * their sum + b * layers + c + d * weight bytes spilled.
COPIED = "copied_weight_bytes"  # per call: weights of the kernels XLA:CPU copies reversed (features.copies_kernel)
ELEMENTWISE = "elementwise"  # per call: the network's elementwise operations (features.NAMES) times the batch
TERMS = ("layer_sum", "layers", "call", SPILL, COPIED, ELEMENTWISE)
NON_NEGATIVE_TERMS = (SPILL, COPIED, ELEMENTWISE)
# Work of no matrix-product layer, per image (features.NAMES), at a time per unit that kernels show: poolings, LRN.
OTHER_WORK = ("max_window_taps", "sum_window_taps", "tiled_window_taps", "transcendentals")
FLOOR = 0.1  # a composed time is never below this share of its layers' own sum (b < 0 on a tiny network)


class Memory(NamedTuple):
    """Where a network's weights are read from: the cache a network leaves them (None: they never spill), the cache
    a layer timed alone has (None: the same), and the bytes per second of memory beyond (None: no floor)."""

    cache_bytes: Optional[float] = None
    alone_bytes: Optional[float] = None
    bandwidth: Optional[float] = None


@dataclasses.dataclass(frozen=True)
class Composition:
    """Layers timed alone, by key and batch size, and how they add up to a network at each batch size; the
    layers never timed alone predicted from those that were (forest.py)."""

    layer_times: dict  # batch size -> {features.layer_key: seconds per call of that layer alone}
    coefficients: dict  # batch size -> TERMS -> its fitted value
    interval: tuple[float, float]  # measured / predicted of networks held out of the fit, quantiles
    cache_bytes: Optional[float] = None  # its own fitted cache (None: weights never spill)
    layer_model: dict = dataclasses.field(default_factory=dict)  # batch size -> forest.Forest of its layer times
    # measured / predicted of the fit's networks with every layer predicted by a forest that never saw it
    predicted_interval: Optional[tuple[float, float]] = None
    other_rates: dict = dataclasses.field(default_factory=dict)  # batch size -> OTHER_WORK -> seconds per unit
    alone_cache_bytes: Optional[float] = None  # the weights a layer timed alone keeps in cache (None: cache_bytes)
    bandwidth: Optional[float] = None  # bytes per second of evicted weights read from memory (None: no floor)
    _predicted: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)  # (batch, key) -> s

    @property
    def memory(self) -> Memory:
        """Its cache, the cache a layer alone has, and the memory's bandwidth."""
        return Memory(self.cache_bytes, self.alone_cache_bytes, self.bandwidth)

    def covers(self, keys: tuple[str, ...]) -> bool:
        """Whether every layer was timed alone at every batch size the composition was fitted at."""
        return bool(keys) and all(key in self.layer_times[b] for b in self.coefficients for key in keys)

    def predicts(self, keys: tuple[str, ...]) -> bool:
        """Whether it gives a time for a network of these layer keys: every layer timed alone, or a layer model."""
        return bool(keys) and (bool(self.layer_model) or self.covers(keys))

    def layer_seconds(self, keys: tuple[str, ...], batch_size: int) -> list[float]:
        """Each layer's time alone at a fitted batch size: as timed, else as its forest predicts (remembered)."""
        timed = self.layer_times[batch_size]
        unknown = list(dict.fromkeys(k for k in keys if k not in timed and (batch_size, k) not in self._predicted))
        if unknown:
            self._predicted.update(zip(((batch_size, k) for k in unknown),
                                       map(float, self.layer_model[batch_size].seconds(unknown))))
        return [timed[k] if k in timed else self._predicted[batch_size, k] for k in keys]

    def at(self, layers: features.Layers, batch_size: int) -> float:
        """Seconds per call at a batch size the composition was fitted at."""
        return compose(self.coefficients[batch_size], terms_row(self.layer_seconds(layers.keys, batch_size), layers,
                                                                batch_size, self.other_rates, self.memory))

    def call_s(self, layers: features.Layers, batch_size: int) -> float:
        """Seconds per call at any batch size: linear between the fitted ones, the time per image of the
        nearest beyond them, and never less than at a smaller one (more batch, never a shorter call)."""
        sizes, times = [], []  # the fitted batch sizes up to the first >= batch_size, and their running maximum
        for size in sorted(self.coefficients):
            sizes.append(size)
            times.append(max([self.at(layers, size), *times[-1:]]))
            if size >= batch_size:
                break
        if batch_size <= sizes[0] or batch_size >= sizes[-1]:
            return times[-1] * batch_size / sizes[-1]
        share = (batch_size - sizes[-2]) / (sizes[-1] - sizes[-2])
        return times[-2] + share * (times[-1] - times[-2])

    def as_json(self) -> dict:
        """Its part of the predictor file."""
        return {"layer_times_s": {str(b): t for b, t in self.layer_times.items()},
                "coefficients": {str(b): c for b, c in self.coefficients.items()},
                "cache_bytes": self.cache_bytes, "interval_measured_over_predicted": list(self.interval),
                "layer_model": {str(b): f.as_json() for b, f in self.layer_model.items()},
                "other_work_s_per_unit": {str(b): rates for b, rates in self.other_rates.items()},
                "alone_cache_bytes": self.alone_cache_bytes, "memory_bandwidth_bytes_per_s": self.bandwidth,
                "predicted_interval_measured_over_predicted":
                    None if self.predicted_interval is None else list(self.predicted_interval)}


def terms_row(seconds, layers: features.Layers, batch_size: int, rates: dict, memory: Memory) -> list[float]:
    """A network's values of TERMS at a batch size, given each of its layers' seconds alone: their floored_sum plus
    its other work, its layer count, one call, its spilled weight bytes, its copied weight bytes and its elementwise
    operations."""
    return [floored_sum(seconds, layers, memory) + other_seconds(rates, layers, batch_size), len(layers.keys), 1.0,
            spilled_bytes(layers.totals["weight_bytes"], memory.cache_bytes, layers.layer_weight_bytes,
                          memory.alone_bytes), layers.copied_weight_bytes, layers.totals[ELEMENTWISE] * batch_size]


def floored_sum(seconds, layers: features.Layers, memory: Memory) -> float:
    """A network's layers' seconds alone added up, each at least the time its evicted weights take from memory.

    A network whose weights outgrow the cache reads a share of them, (total - cache) / total, from memory on every
    call, as though each layer lost that share; a layer then takes no less than those bytes at the memory's
    bandwidth. A layer whose weights outgrow the cache alone read them from memory alone too: its time holds that.
    """
    total_bytes = layers.totals["weight_bytes"]
    if memory.bandwidth is None or memory.cache_bytes is None or total_bytes <= memory.cache_bytes:
        return float(np.sum(seconds))
    share = (total_bytes - memory.cache_bytes) / total_bytes
    own = layers.layer_weight_bytes
    fits = own <= kept_alone_bytes(memory.cache_bytes, memory.alone_bytes)
    floor = np.where(fits, share * own / memory.bandwidth, 0.0)
    return float(np.sum(np.maximum(seconds, floor)))


def kept_alone_bytes(cache_bytes: float, alone_bytes: Optional[float]) -> float:
    """The most weight bytes a layer timed alone keeps in cache: the cache it has alone (`alone_bytes`), where
    larger than the one a network leaves its weights."""
    return max(cache_bytes, alone_bytes or 0.0)


def compose(terms: dict, row: list[float]) -> float:
    """Seconds per call of a network from its terms_row and TERMS' coefficients, never below FLOOR of its layers'
    sum."""
    return max(sum(terms[name] * value for name, value in zip(TERMS, row)), FLOOR * row[0])


def other_work_rates(points: list[Point]) -> dict:
    """Batch size -> OTHER_WORK -> seconds per unit, fitted (non-negative, beside a time per call) on the kernels
    without a matrix product: the poolings and LRNs timed alone. None timed: no rates, the work costs nothing."""
    columns = [features.NAMES.index(name) for name in OTHER_WORK]
    by_batch = {}
    for p in points:
        if p.family == KERNEL_FAMILY and p.layers is not None and not p.keys:
            by_batch.setdefault(p.batch_size, []).append(p)
    rates = {}
    for batch_size, chosen in sorted(by_batch.items()):
        design = np.column_stack([np.array([p.features[columns] for p in chosen]), np.ones(len(chosen))])
        fitted = solve(design, np.array([p.latency_s for p in chosen]))
        rates[batch_size] = dict(zip(OTHER_WORK, map(float, fitted[:-1])))
    return rates


def other_seconds(rates: dict, layers: features.Layers, batch_size: int) -> float:
    """Seconds per call of a network's OTHER_WORK at a batch size (none where no rates were fitted there)."""
    return sum(rate * layers.totals[name] * batch_size for name, rate in rates.get(batch_size, {}).items())


def layer_times(points: list[Point]) -> dict:
    """Batch size -> {layer key: seconds per call}, from the kernels of one matrix-product layer (median of
    repeats)."""
    timed = {}
    for p in points:
        if p.family == KERNEL_FAMILY and len(p.keys) == 1:
            timed.setdefault(p.batch_size, {}).setdefault(p.keys[0], []).append(p.latency_s)
    return {b: {key: float(np.median(ts)) for key, ts in by_key.items()} for b, by_key in sorted(timed.items())}


def _wholly_timed(point: Point, times: dict) -> bool:
    """Whether a point is a network whose every layer was timed alone at its batch size (times: layer_times)."""
    table = times.get(point.batch_size, {})
    return point.family != KERNEL_FAMILY and bool(point.keys) and all(key in table for key in point.keys)


def _composition_rows(timed: list[tuple[Point, np.ndarray]], rates: dict, memory: Memory) -> dict:
    """Batch size -> (names, design rows over TERMS, latencies) of the networks whose every layer was timed, given
    as (network, its layers' seconds alone)."""
    rows = {}
    for p, seconds in timed:
        row = terms_row(seconds, p.layers, p.batch_size, rates, memory)
        names, design, latencies = rows.setdefault(p.batch_size, ([], [], []))
        names.append(p.name), design.append(row), latencies.append(p.latency_s)
    return {b: (names, np.array(design), np.array(latencies)) for b, (names, design, latencies) in rows.items()
            if len(set(names)) >= 2 * FOLDS}


def _relative_fit(design: np.ndarray, latencies: np.ndarray) -> np.ndarray:
    """Least squares on relative error over TERMS: b may be negative (see the module docstring), a byte or an
    operation more (NON_NEGATIVE_TERMS) never takes less time."""
    lower = np.array([0.0 if name in NON_NEGATIVE_TERMS else -np.inf for name in TERMS])
    return optimize.lsq_linear(design / latencies[:, None], np.ones(len(latencies)), bounds=(lower, np.inf)).x


def _cross_validated_composition(rows: dict) -> np.ndarray:
    """measured / predicted of every composed network, each by a fit without its network's points."""
    ratios = []
    for names, design, latencies in rows.values():
        distinct = sorted(set(names))
        order = np.random.default_rng(0).permutation(len(distinct))
        fold_of = {distinct[i]: rank % FOLDS for rank, i in enumerate(order)}
        folds = np.array([fold_of[n] for n in names])
        for fold in range(FOLDS):
            held = folds == fold
            c = _relative_fit(design[~held], latencies[~held])
            ratios.extend(latencies[held] / np.maximum(design[held] @ c, FLOOR * design[held, 0]))
    return np.array(ratios)


def fit_composition(points: list[Point]) -> Optional[Composition]:
    """The composition of the networks whose every layer was timed alone, at each batch size with at least
    2 * FOLDS of them (None where there is none), its cache and memory bandwidth the candidates that predict
    held-out ones best (the simpler on a tie); and at those batch sizes, a forest of every layer timed alone for
    the layers never timed."""
    times, rates, splits = layer_times(points), other_work_rates(points), dense_split_errors(points)
    timed = [(p, np.array([times[p.batch_size][key] for key in p.keys])) for p in points if _wholly_timed(p, times)]
    alone = {cache: alone_cache_bytes(splits, cache) for cache in CACHE_CANDIDATES}
    candidates = [Memory(cache, alone[cache], bandwidth) for cache in CACHE_CANDIDATES
                  for bandwidth in BANDWIDTH_CANDIDATES if cache is not None or bandwidth is None]
    tried = {memory: _composition_rows(timed, rates, memory) for memory in candidates}
    if not tried[candidates[0]]:
        return None
    ratios = {memory: _cross_validated_composition(rows) for memory, rows in tried.items()}
    memory = max(candidates, key=lambda m: score(ratios[m]))
    coefficients = {b: dict(zip(TERMS, map(float, _relative_fit(design, latencies))))
                    for b, (_, design, latencies) in tried[memory].items()}
    interval = tuple(float(q) for q in np.quantile(ratios[memory], INTERVAL))
    memory = Memory(*(None if value is None else float(value) for value in memory))
    return Composition({b: times[b] for b in coefficients}, coefficients, interval, memory.cache_bytes,
                       layer_model={b: forest.fit(times[b]) for b in coefficients},
                       predicted_interval=_predicted_interval(points, times, rates, coefficients, memory),
                       other_rates={b: rates[b] for b in coefficients if b in rates},
                       alone_cache_bytes=memory.alone_bytes, bandwidth=memory.bandwidth)


def _predicted_interval(points: list[Point], times: dict, rates: dict, coefficients: dict,
                        memory: Memory) -> tuple[float, float]:
    """Quantiles of measured / predicted of the networks whose layers were timed, each layer's time predicted by a
    forest fitted without it (its key held out in one of FOLDS folds), added up as the composition does."""
    held_out = {}
    for b in coefficients:
        keys = sorted(times[b])
        fold_of = np.random.default_rng(0).permutation(len(keys)) % FOLDS
        for fold in range(FOLDS):
            trees = forest.fit({k: times[b][k] for k, f in zip(keys, fold_of) if f != fold})
            chosen = [k for k, f in zip(keys, fold_of) if f == fold]
            held_out.update(zip(((b, k) for k in chosen), trees.seconds(chosen)))
    ratios = [p.latency_s / compose(coefficients[p.batch_size],
                                    terms_row([held_out[p.batch_size, k] for k in p.keys], p.layers, p.batch_size,
                                              rates, memory))
              for p in points if p.batch_size in coefficients and _wholly_timed(p, times)]
    return tuple(float(q) for q in np.quantile(ratios, INTERVAL))


def spilled_bytes(weight_bytes: float, cache_bytes: Optional[float], layer_bytes=(),
                  alone_bytes: Optional[float] = None) -> float:
    """The weight bytes above `cache_bytes` (none when no cache was fitted); given each layer's weight bytes
    (features.Layers.layer_weight_bytes; none: its layers unknown), at most what the layers keep in cache when timed
    alone: all of a layer's weights that fit in the cache it has alone (kept_alone_bytes), that cache's worth of a
    larger layer's. The rest such a layer reads from memory alone too, so its own time holds that already."""
    spilled = 0.0 if cache_bytes is None else max(float(weight_bytes) - cache_bytes, 0.0)
    if len(layer_bytes) and spilled:
        kept = np.minimum(np.asarray(layer_bytes, float), kept_alone_bytes(cache_bytes, alone_bytes))
        spilled = min(spilled, float(kept.sum()))
    return spilled


def dense_split_errors(points: list[Point]) -> dict:
    """Size among CACHE_CANDIDATES -> the squared log error of the batch-1 dense kernels (whose time is reading
    their weights) split there into two speeds per weight byte, beside a time per call; only sizes with at least
    two dense kernels on each side."""
    dense = []
    for p in points:
        if p.family == KERNEL_FAMILY and p.batch_size == 1 and len(p.keys) == 1:
            macs, outputs, weights, inputs = features.key_counts(p.keys[0])[:4]
            # A dense layer: each output reads every input through a weight of its own (not a window on a map).
            if outputs and macs == outputs * inputs and weights >= macs:
                dense.append((weights * features.BYTES, p.latency_s))
    if not dense:
        return {}
    sizes, latencies = np.array(dense).T
    errors = {}
    for cache in CACHE_CANDIDATES[1:]:
        inside = sizes <= cache
        if min(inside.sum(), (~inside).sum()) < 2:
            continue
        design = np.column_stack([np.where(inside, sizes, 0.0), np.where(inside, 0.0, sizes), np.ones(len(sizes))])
        errors[cache] = float(np.sum(np.log(design @ solve(design, latencies) / latencies) ** 2))
    return errors


def alone_cache_bytes(split_errors: dict, cache_bytes: Optional[float]) -> Optional[float]:
    """The weights a layer timed alone keeps in cache: of the sizes not below `cache_bytes` (the one a network
    leaves its weights), the best split of the dense kernels (dense_split_errors). None where no cache was fitted
    or no such size splits them."""
    errors = {size: e for size, e in split_errors.items() if cache_bytes is not None and size >= cache_bytes}
    return float(min(errors, key=errors.get)) if errors else None


def with_spill(vectors: np.ndarray, cache_bytes: Optional[float], layer_bytes: Optional[list] = None) -> np.ndarray:
    """Feature vectors (rows) with the SPILL column appended: their spilled_bytes, given each row's layers' weight
    bytes where known (None, or none for a row: its layers unknown, every weight byte beyond the cache spills)."""
    vectors = np.atleast_2d(np.asarray(vectors, float))
    layer_bytes = layer_bytes if layer_bytes is not None else [()] * len(vectors)
    return np.column_stack([vectors, [spilled_bytes(w, cache_bytes, b)
                                      for w, b in zip(vectors[:, _WEIGHT_BYTES], layer_bytes)]])


def solve(vectors: np.ndarray, latencies: np.ndarray, weights: Optional[np.ndarray] = None) -> np.ndarray:
    """Non-negative coefficients minimising the (weighted) squared log error, from the relative least squares.

    A feature no point has (no fitted kernel or network does that work) gets no cost: the data say nothing of it.
    """
    root = np.sqrt(weights) if weights is not None else np.ones(len(latencies))
    design = vectors / latencies[:, None] * root[:, None]
    scale = design.max(axis=0)
    active = scale > 0
    scaled = design[:, active] / scale[active]
    start, _ = optimize.nnls(scaled, root, maxiter=100 * scaled.shape[1])
    unweighted = scaled / root[:, None]

    def log_ratios(c):
        return root * np.log(np.maximum(unweighted @ c, 1e-12))

    def jacobian(c):
        return root[:, None] * unweighted / np.maximum(unweighted @ c, 1e-12)[:, None]

    # Squared relative error favours predicting low (a ratio above 1 costs little, below it a lot); the
    # log of the ratio weighs both ways alike, so a point twice too slow counts as one twice too fast.
    solved = optimize.least_squares(log_ratios, np.maximum(start, 1e-6), jac=jacobian, bounds=(0, np.inf),
                                    x_scale="jac", max_nfev=200)
    coefficients = np.zeros(vectors.shape[1])
    coefficients[active] = solved.x / scale[active]
    return coefficients


def share_within(predicted, measured) -> float:
    """The share of predictions within +-10 % (WITHIN) of their measured values (NaN for none)."""
    errors = np.abs(np.asarray(predicted, float) / np.asarray(measured, float) - 1)
    return float(np.mean(errors <= WITHIN)) if errors.size else float("nan")


def weights(points: list[Point]) -> np.ndarray:
    """Each point's weight in the fit: single kernels together count as much as whole networks together.

    Calibration gives many more kernel points than a results directory gives network points, yet the
    networks hold what kernels alone cannot show (many layers' fixed costs in one call).
    """
    kernel = np.array([p.family == KERNEL_FAMILY for p in points])
    if kernel.all() or not kernel.any():
        return np.ones(len(points))
    return np.where(kernel, len(points) / (2 * kernel.sum()), len(points) / (2 * (~kernel).sum()))


def cross_validated_ratios(points: list[Point], cache_bytes: Optional[float], folds: int = FOLDS) -> np.ndarray:
    """measured / predicted for every point, each predicted by a fit without its network's points."""
    names = sorted({p.name for p in points})
    order = np.random.default_rng(0).permutation(len(names))
    fold_of = {names[i]: rank % folds for rank, i in enumerate(order)}
    vectors = with_spill([p.features for p in points], cache_bytes, [p.layer_weight_bytes for p in points])
    latencies = np.array([p.latency_s for p in points])
    ratios = np.empty(len(points))
    for fold in range(min(folds, len(names))):
        held = np.array([fold_of[p.name] == fold for p in points])
        if held.all():
            continue
        coefficients = solve(vectors[~held], latencies[~held], weights([p for p, h in zip(points, held) if not h]))
        ratios[held] = latencies[held] / np.maximum(vectors[held] @ coefficients, 1e-12)
    return ratios


def held_out_networks_score(points: list[Point], ratios: np.ndarray) -> tuple[float, float]:
    """How well a cross-validation predicts the networks (kernels where there are none): (share within
    +-10 %, minus the median error), larger is better."""
    networks = np.array([p.family != KERNEL_FAMILY for p in points])
    return score(ratios[networks] if networks.any() else ratios)


def score(ratios: np.ndarray) -> tuple[float, float]:
    """(share of measured / predicted within +-10 %, minus the median error): larger is better."""
    errors = np.abs(1 / np.asarray(ratios, float) - 1)
    return float(np.mean(errors <= WITHIN)), -float(np.median(errors))


def fit(points: list[Point], environment: dict, precision: str, sources: list[str]) -> Predictor:
    """The predictor of these measured points; UserError when there are too few to fit.

    Each of CACHE_CANDIDATES is cross-validated; the one that predicts held-out networks best is kept.
    """
    networks = {p.name for p in points}
    if len(points) < len(COSTS) or len(networks) < 2 * FOLDS:
        raise UserError(f"{len(points)} measured points of {len(networks)} networks or kernels are too few to fit "
                        f"{len(COSTS)} costs; give a longer --calibration_s or more --results directories")
    tried = {cache: cross_validated_ratios(points, cache) for cache in CACHE_CANDIDATES}
    cache_bytes = max(CACHE_CANDIDATES, key=lambda cache: held_out_networks_score(points, tried[cache]))
    ratios = tried[cache_bytes]
    latencies = np.array([p.latency_s for p in points])
    vectors = with_spill([p.features for p in points], cache_bytes, [p.layer_weight_bytes for p in points])
    coefficients = solve(vectors, latencies, weights(points))
    powers = [p.power_w for p in points if p.power_w is not None]
    interval = tuple(float(q) for q in np.quantile(ratios, INTERVAL))
    fitted_on = {"points": len(points), "networks_and_kernels": len(networks),
                 "batch_sizes": sorted({p.batch_size for p in points}), "sources": sources,
                 "families": sorted({p.family for p in points if p.family}),
                 "cross_validated_within_10pct": share_within(1 / ratios, np.ones(len(ratios))),
                 "cross_validated_median_abs_error": float(np.median(np.abs(1 / ratios - 1)))}
    composition = fit_composition(points)
    if composition is not None:
        fitted_on["composed_batch_sizes"] = sorted(composition.coefficients)
        fitted_on["layers_timed_alone"] = len(next(iter(composition.layer_times.values())))
    return Predictor(environment=dict(environment), precision=precision,
                     coefficients={n: float(c) for n, c in zip(COSTS, coefficients)}, interval=interval,
                     cache_bytes=None if cache_bytes is None else float(cache_bytes),
                     power_w=float(np.mean(powers)) if powers else None, fitted_on=fitted_on,
                     composition=composition)


def save(predictor: Predictor, path: str) -> None:
    """Writes the predictor's JSON file atomically."""
    files.atomic_write(path, json.dumps(predictor.as_json(), indent=1) + "\n")


def _number(value, what: str, positive: bool = False) -> float:
    """A finite number (>= 0, or > 0 when `positive`), else files.Malformed naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 \
            or (positive and value == 0):
        raise files.Malformed(f"{what} is {value!r}, not a finite {'positive' if positive else 'non-negative'} number")
    return float(value)


def _parse(data) -> Predictor:
    """The predictor a decoded file holds; files.Malformed naming what is wrong."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise files.Malformed("not a predictor file (no \"format\": \"%s\")" % FORMAT)
    if data.get("version") != VERSION:
        raise files.Malformed(f"version {data.get('version')!r}, not {VERSION}")
    coefficients = data.get("coefficients")
    if not isinstance(coefficients, dict) or set(coefficients) != set(COSTS):
        raise files.Malformed("its coefficients are not this version's features")
    cache = data.get("cache_bytes")
    environment = data.get("environment")
    if not isinstance(environment, dict) or not all(isinstance(v, str) for v in environment.values()):
        raise files.Malformed("its environment is not an object of strings")
    low, high = _interval(data.get("interval_measured_over_predicted"), "its interval")
    power = data.get("power_w")
    precision = data.get("precision")
    if not isinstance(precision, str):
        raise files.Malformed("its precision is not a string")
    return Predictor(environment=environment, precision=precision,
                     coefficients={n: _number(coefficients[n], f"coefficient {n}") for n in COSTS},
                     interval=(low, high), cache_bytes=None if cache is None else _number(cache, "cache_bytes", True),
                     power_w=None if power is None else _number(power, "power_w"),
                     fitted_on=data.get("fitted_on") if isinstance(data.get("fitted_on"), dict) else {},
                     composition=None if data.get("composition") is None else _composition(data["composition"]))


def _interval(value, what: str) -> tuple[float, float]:
    """A [low, high] pair of positive numbers, else files.Malformed."""
    if not isinstance(value, list) or len(value) != 2:
        raise files.Malformed(f"{what} is not a pair")
    low, high = (_number(v, what, positive=True) for v in value)
    if low > high:
        raise files.Malformed(f"{what}'s low end is above its high end")
    return low, high


def _batch_size(text) -> int:
    """A batch size written as a JSON object's key."""
    if not isinstance(text, str) or not text.isdigit() or int(text) < 1:
        raise files.Malformed(f"batch size {text!r} is not a positive integer")
    return int(text)


def _composition(data) -> Composition:
    """The composition part of a predictor file; files.Malformed naming what is wrong."""
    if not isinstance(data, dict) or not isinstance(data.get("layer_times_s"), dict) \
            or not isinstance(data.get("coefficients"), dict):
        raise files.Malformed("its composition holds no layer times or coefficients")
    coefficients = {}
    for batch, terms in data["coefficients"].items():
        if not isinstance(terms, dict) or set(terms) != set(TERMS):
            raise files.Malformed(f"its composition's coefficients at batch {batch} are not {', '.join(TERMS)}")
        for name, value in terms.items():  # b may be negative: finite is all a term must be
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise files.Malformed(f"composition coefficient {name} is {value!r}, not a finite number")
        coefficients[_batch_size(batch)] = {n: float(v) for n, v in terms.items()}
    times = {}
    for batch, by_key in data["layer_times_s"].items():
        if not isinstance(by_key, dict):
            raise files.Malformed(f"its layer times at batch {batch} are not an object")
        times[_batch_size(batch)] = {str(k): _number(v, f"layer time {k}", positive=True) for k, v in by_key.items()}
    if not coefficients or set(coefficients) - set(times):
        raise files.Malformed("its composition has a batch size without layer times")
    layer_model = data.get("layer_model")
    if not isinstance(layer_model, dict) or (layer_model and set(map(_batch_size, layer_model)) != set(coefficients)):
        raise files.Malformed("its composition's layer model is not one forest per batch size of its coefficients")
    rates = data.get("other_work_s_per_unit")
    if not isinstance(rates, dict) or set(map(_batch_size, rates)) - set(coefficients) \
            or not all(isinstance(r, dict) and set(r) == set(OTHER_WORK) for r in rates.values()):
        raise files.Malformed(f"its composition's other work is not {', '.join(OTHER_WORK)} at batch sizes of its "
                              "coefficients")
    cache, alone, bandwidth = data.get("cache_bytes"), data.get("alone_cache_bytes"), \
        data.get("memory_bandwidth_bytes_per_s")
    return Composition(times, coefficients, _interval(data.get("interval_measured_over_predicted"),
                                                      "its composition's interval"),
                       None if cache is None else _number(cache, "its composition's cache_bytes", positive=True),
                       layer_model={_batch_size(b): forest.parse(trees) for b, trees in layer_model.items()},
                       predicted_interval=_interval(data.get("predicted_interval_measured_over_predicted"),
                                                    "its composition's interval of predicted layers")
                       if layer_model else None,
                       other_rates={_batch_size(b): {n: _number(v, f"other work rate {n}") for n, v in r.items()}
                                    for b, r in rates.items()},
                       alone_cache_bytes=None if alone is None
                       else _number(alone, "its composition's alone_cache_bytes", positive=True),
                       bandwidth=None if bandwidth is None
                       else _number(bandwidth, "its composition's memory_bandwidth_bytes_per_s", positive=True))


def load(path: str) -> Predictor:
    """The predictor in a file; UserError in one line when it is missing, corrupt or edited into nonsense."""
    try:
        return files.read_json(path, "a predictor file python -m measure.predict wrote",
                               "fit it again with python -m measure.predict", check=_parse)
    except FileNotFoundError:
        raise UserError(f"{path} does not exist: give a file python -m measure.predict wrote") from None
