"""The latency predictor: features, fitting, its file bound to one device, calibration, and the explorer's use of it."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
from core import joblog, runtime
from core.errors import UserError
from explore import analyse, plan, table
from measure import predict
from measure import results as results_lib
from measure.predict import bench, calibrate, features, forest, kernels
from measure.predict import model as model_lib

SMALL_RESNETS = ["resnet18:depths=1-1-1-1,width=0.125,resolution=32",
                 "resnet50:depths=1-1-1-1,width=0.25,resolution=32"]


@pytest.fixture(scope="module")
def counted_points():
    """Points with real counted features (32 kernels and two small ResNets at batch 1 and 4), latencies unset."""
    names = [str(k) for k in kernels.draw(32, seed=3)] + SMALL_RESNETS
    layers = {name: calibrate.layers_of(name) for name in names}
    return [(name, batch, layers[name].vector(batch)) for name in names for batch in (1, 4)]


def known_cost_model() -> dict:
    """A made-up device: a time per MAC that falls with K, per byte, per equation and per call."""
    coefficients = dict.fromkeys(features.NAMES, 0.0)
    coefficients.update({"macs_k4": 4e-10, "macs_k64": 1e-10, "macs_k1024": 2e-11, "macs_k65536": 1e-11,
                         "macs_n16": 5e-11, "weight_bytes": 3e-11, "elementwise": 2e-10, "equations": 2e-6,
                         "calls": 3e-5})
    return coefficients


def points_of(counted, coefficients: dict) -> list:
    """The points a device with these per-unit costs would measure, exactly."""
    vector = np.array([coefficients[n] for n in features.NAMES])
    return [model_lib.Point(name, batch, float(f @ vector), f, family="kernel") for name, batch, f in counted]


def test_fitting_recovers_a_known_cost_model(counted_points):
    points = points_of(counted_points, known_cost_model())
    fitted = predict.fit(points, {"device": "made up"}, "float32", [])
    predicted = fitted.latency_s(np.array([p.features for p in points]))
    measured = np.array([p.latency_s for p in points])
    assert np.max(np.abs(predicted / measured - 1)) < 0.02
    assert fitted.fitted_on["cross_validated_within_10pct"] > 0.9
    assert 0.8 < fitted.interval[0] <= 1.0 <= fitted.interval[1] < 1.25  # an exact device: a narrow interval
    assert fitted.coefficients["calls"] == pytest.approx(3e-5, rel=0.05)


def test_fitting_finds_the_cache_beyond_which_weights_are_read_from_memory(counted_points):
    # Dense layers of 8 to 128 MiB of weights: a made-up device whose cache holds 32 MiB.
    dense = [f"dense:cin={cin},cout={cout}" for cin, cout in
             ((1024, 2048), (2048, 2048), (2048, 3072), (2048, 4096), (3072, 4096), (4096, 4096), (4096, 8192))]
    counted = counted_points + [(name, batch, calibrate.layers_of(name).vector(batch))
                                for name in dense for batch in (1, 4)]
    cache, per_byte = 32 * 2 ** 20, 5e-11
    points = [dataclasses.replace(p, latency_s=p.latency_s + per_byte * max(
        p.features[features.NAMES.index("weight_bytes")] - cache, 0)) for p in points_of(counted, known_cost_model())]
    fitted = predict.fit(points, {}, "float32", [])
    assert fitted.cache_bytes == cache
    assert fitted.coefficients[model_lib.SPILL] == pytest.approx(per_byte, rel=0.05)
    predicted = fitted.latency_s(np.array([p.features for p in points]))
    assert np.max(np.abs(predicted / np.array([p.latency_s for p in points]) - 1)) < 0.02
    # Without the spill, the device is linear: no cache is fitted, or one whose term costs nothing.
    linear = predict.fit(points_of(counted, known_cost_model()), {}, "float32", [])
    assert linear.cache_bytes is None or linear.coefficients[model_lib.SPILL] < per_byte / 100


# A made-up device that runs a network as its layers' times added up: at each batch size, a * their sum +
# b per layer + c per call (b < 0: each layer timed alone paid a call of its own) + e per kernel byte copied
# + f per elementwise operation.
COMPOSED = [f"resnet18:depths={d},width={w},resolution={r}" for d, w, r in
            (("1-1-1-1", 0.125, 32), ("2-1-1-1", 0.125, 48), ("1-2-1-1", 0.25, 32), ("1-1-2-1", 0.125, 64),
             ("1-1-1-2", 0.25, 48), ("2-2-1-1", 0.125, 32), ("1-2-2-1", 0.25, 64), ("1-1-2-2", 0.125, 48),
             ("2-1-2-1", 0.25, 32), ("2-2-2-2", 0.125, 64), ("1-2-1-2", 0.25, 48))]
MADE_UP_COMPOSITION = {1: (1.2, -1e-5, 3e-4, 2e-11, 3e-11), 4: (1.1, 2e-5, 1e-3, 5e-12, 6e-11)}
# Poolings and LRNs on it: a time per window tap and per power (per image), beside a call.
MADE_UP_OTHER_WORK = {"max_window_taps": 4e-10, "sum_window_taps": 2e-10, "tiled_window_taps": 5e-11,
                      "transcendentals": 3e-9}
OTHER_KERNELS = ["pool:cin=16,k=3,stride=2,side=32", "pool:cin=64,k=3,stride=1,side=8",
                 "pool:cin=8,k=2,stride=2,side=64", "avgpool:cin=32,k=3,stride=1,side=16", "lrn:cin=32,side=16",
                 "lrn:cin=96,side=8", "avgpool:cin=16,k=2,stride=2,side=32"]


def made_up_layer_time(layers: features.Layers, batch_size: int) -> float:
    """A layer alone on the made-up device: a time per MAC and per call."""
    return 1e-10 * layers.macs.sum() * batch_size + 2e-5


def made_up_other_work(layers: features.Layers, batch_size: int) -> float:
    """The made-up device's seconds for the poolings and LRNs of a count."""
    return sum(rate * layers.totals[name] * batch_size for name, rate in MADE_UP_OTHER_WORK.items())


def made_up_points(networks: list[str], memory: model_lib.Memory = model_lib.Memory()) -> list[model_lib.Point]:
    """Every layer of the networks timed alone, poolings and LRNs, and the networks, on the made-up device at batch
    1 and 4, where a network's layers read their evicted weights from its memory (model.floored_sum)."""
    kernel_names = calibrate.layers_to_time(networks)
    layers = {name: calibrate.layers_of(name) for name in kernel_names + OTHER_KERNELS + networks}
    points = []
    for batch in MADE_UP_COMPOSITION:
        alone = {layers[k].keys[0]: made_up_layer_time(layers[k], batch) for k in kernel_names}
        points += [model_lib.Point(k, batch, alone[layers[k].keys[0]], layers[k].vector(batch),
                                   family=model_lib.KERNEL_FAMILY, layers=layers[k]) for k in kernel_names]
        points += [model_lib.Point(k, batch, made_up_other_work(layers[k], batch) + 2e-5, layers[k].vector(batch),
                                   family=model_lib.KERNEL_FAMILY, layers=layers[k]) for k in OTHER_KERNELS]
        a, b, c, e, f = MADE_UP_COMPOSITION[batch]
        for n in networks:
            seconds = model_lib.floored_sum([alone[k] for k in layers[n].keys], layers[n], memory)
            latency = a * (seconds + made_up_other_work(layers[n], batch)) + b * len(layers[n].keys) + c \
                + e * layers[n].copied_weight_bytes + f * layers[n].totals["elementwise"] * batch
            points.append(model_lib.Point(n, batch, latency, layers[n].vector(batch), family="ResNet",
                                          layers=layers[n]))
    return points


@pytest.fixture(scope="module")
def composed_points():
    """The COMPOSED networks and their layers on the made-up device, which holds every weight in cache."""
    return made_up_points(COMPOSED)


@pytest.mark.parametrize("name", ["resnet50:depths=1-1-1-1,width=0.25,resolution=32",
                                  "vgg16:width=0.125,resolution=32", "googlenet:width=0.25,resolution=64",
                                  "alexnet:width=0.25,resolution=95", "enet:width=0.25,resolution=64"])
def test_a_layer_timed_alone_has_the_key_it_has_in_a_network(name):
    # Networks with BatchNorm or a bias, SAME or Torch-style padding: each kernel says its layer exactly.
    alone = [calibrate.layers_of(k).keys for k in calibrate.layers_to_time([name])]
    assert all(len(keys) == 1 for keys in alone)
    assert set(calibrate.layers_of(name).keys) == {keys[0] for keys in alone}


def test_a_kernel_string_says_its_bias_and_padding():
    spec = kernels.parse("conv:cin=8,cout=8,k=3,stride=1,groups=1,dilation=1,side=8,bias=1,pad=0")
    assert (spec.bias, spec.pad) == (1, 0) and str(spec).endswith("side=8,bias=1,pad=0")
    assert str(kernels.parse("conv:cin=8,cout=8,k=3,side=8")).endswith("side=8")  # BatchNorm, SAME: as before
    assert calibrate.layers_of(str(spec)).macs[0] == 6 * 6 * 8 * 72  # VALID: a 6x6 map
    for text, reason in (("conv:cin=8,cout=8,bias=2", "only bias"),
                         ("dense:cin=8,cout=8,pad=1", "a dense kernel takes cin, cout, not pad"),
                         ("conv:cin=8,cout=8,k=1,stride=0", "positive integer"),
                         ("conv:cin=8,cout=8,k=7,side=3,pad=1", "wider than its padded map")):
        with pytest.raises(UserError, match=reason):
            kernels.parse(text)


def test_poolings_and_lrns_count_their_window_taps():
    # SAME 3x3/2 max pooling of an 8x8x8 map: 4x4x8 outputs of 9 taps; 2x2/2 poolings tile the map: 4 taps each;
    # 3x3/1 average pooling: 8x8x8 outputs of 9 taps; LRN over 5 channels: 4 steps per element, and a power each.
    pool, tiled, avg, tiled_avg = (calibrate.layers_of(k).totals for k in (
        "pool:cin=8,k=3,stride=2,side=8", "pool:cin=8,k=2,stride=2,side=8", "avgpool:cin=8,k=3,stride=1,side=8",
        "avgpool:cin=8,k=2,stride=2,side=8"))
    names = ("max_window_taps", "sum_window_taps", "tiled_window_taps")
    assert [pool[n] for n in names] == [4 * 4 * 8 * 9, 0, 0]
    assert [tiled[n] for n in names] == [tiled_avg[n] for n in names] == [0, 0, 4 * 4 * 8 * 4]
    assert [avg[n] for n in names] == [0, 8 * 8 * 8 * 9, 0]
    lrn = calibrate.layers_of("lrn:cin=16,side=4")
    assert (lrn.totals["sum_window_taps"], lrn.totals["transcendentals"], lrn.keys) == (4 * 4 * 16 * 4, 4 * 4 * 16, ())
    # A ResNet's stem pooling (3x3/2 of a 16x16x16 map at 64 px, width 0.25), and nothing else pools.
    assert calibrate.layers_of("resnet18:width=0.25,resolution=64").totals["max_window_taps"] == 16 * 16 * 16 * 9
    for text in ("pool:cin=8,k=3,side=8,bias=1", "lrn:cin=8,side=4,k=3"):
        with pytest.raises(UserError, match="kernel takes cin"):
            kernels.parse(text)


def test_the_tiny_map_slow_path_has_a_key_of_its_own():
    # Equal MACs, outputs, weights and real taps (XLA:CPU runs the first many times slower): the inputs tell.
    on_2x2 = calibrate.layers_of("conv:cin=8,cout=8,k=3,stride=1,groups=1,dilation=1,side=2").keys[0]
    on_3x3 = calibrate.layers_of("conv:cin=8,cout=8,k=3,stride=2,groups=1,dilation=1,side=3").keys[0]
    assert on_2x2.split(":")[:3] == on_3x3.split(":")[:3] and on_2x2 != on_3x3


@pytest.mark.parametrize("side, kernel, stride", [(1, 3, 1), (2, 3, 1), (2, 3, 2), (3, 3, 1), (4, 3, 2), (1, 1, 1),
                                                   (4, 7, 2), (8, 7, 2)])
def test_xla_copies_the_kernel_of_a_convolution_on_a_map_smaller_than_it(side, kernel, stride):
    # What XLA:CPU compiles decides: a reversed copy of the kernel in the optimised program, or none.
    conv = nn.Conv(16, (kernel, kernel), strides=stride, padding=kernel // 2, use_bias=False)
    x = jnp.ones((1, side, side, 8))
    compiled = jax.jit(conv.apply).lower(conv.init(jax.random.PRNGKey(0), x), x).compile().as_text()
    key = calibrate.layers_of(f"conv:cin=8,cout=16,k={kernel},stride={stride},groups=1,dilation=1,side={side}").keys[0]
    assert features.copies_kernel(key) == (kernel > side) == (" reverse(" in compiled)


def test_a_networks_copied_kernels_are_those_of_its_smallest_maps():
    # At 32 px, width 0.25: stage 3's second 3x3 convolution (64 -> 64 on 2x2) and stage 4's two (on 2x2, 1x1).
    layers = calibrate.layers_of("resnet18:depths=1-1-1-1,width=0.25,resolution=32")
    assert layers.copied_weight_bytes == 4 * 9 * (64 * 64 + 64 * 128 + 128 * 128)
    assert calibrate.layers_of("resnet18:depths=1-1-1-1,width=0.25,resolution=224").copied_weight_bytes == 0


def test_networks_whose_layers_were_timed_alone_are_their_sum(composed_points, tmp_path):
    fitted = predict.fit(composed_points, {}, "float32", [])
    composition = fitted.composition
    assert composition is not None and sorted(composition.coefficients) == [1, 4]
    for batch, (a, b, c, e, f) in MADE_UP_COMPOSITION.items():
        terms = composition.coefficients[batch]
        assert terms["layer_sum"] == pytest.approx(a, rel=1e-6) and terms["layers"] == pytest.approx(b, rel=1e-4)
        assert terms["call"] == pytest.approx(c, rel=1e-4)
        assert terms[model_lib.COPIED] == pytest.approx(e, rel=1e-4)
        assert terms[model_lib.ELEMENTWISE] == pytest.approx(f, rel=1e-4)
        assert composition.other_rates[batch] == pytest.approx(MADE_UP_OTHER_WORK, rel=1e-3)
    networks = [p for p in composed_points if p.family == "ResNet"]
    for p in networks:
        assert composition.covers(p.keys)
        assert fitted.predict(p.layers, p.batch_size).latency_s * p.batch_size == pytest.approx(p.latency_s, rel=1e-6)
    assert composition.interval == pytest.approx((1.0, 1.0), abs=1e-6)
    # More batch, never a shorter call, between the fitted batch sizes and beyond them.
    layers = calibrate.layers_of(COMPOSED[0])
    per_call = [fitted.predict(layers, b).latency_s * b for b in (1, 2, 3, 4, 8, 64)]
    assert all(x < y for x, y in zip(per_call, per_call[1:]))
    # A network with layers never timed alone: the forest of the timed ones predicts those, and they add up.
    name = "resnet18:depths=1-1-1-1,width=0.375,resolution=32"
    wider = calibrate.layers_of(name)
    assert not composition.covers(wider.keys) and composition.predicts(wider.keys)
    a, b, c, e, f = MADE_UP_COMPOSITION[1]
    truth = a * (sum(made_up_layer_time(calibrate.layers_of(k), 1) for k in calibrate.layers_to_time([name]))
                 + made_up_other_work(wider, 1)) + b * len(wider.keys) + c + e * wider.copied_weight_bytes \
        + f * wider.totals["elementwise"]
    guessed = fitted.predict(wider, 1)
    assert guessed.latency_s == pytest.approx(truth, rel=0.1)
    low, high = composition.predicted_interval
    assert (guessed.low_s, guessed.high_s) == pytest.approx((guessed.latency_s * low, guessed.latency_s * high))
    # The file holds it all.
    path = str(tmp_path / "p.json")
    predict.save(fitted, path)
    loaded = predict.load(path)
    assert loaded.composition == composition
    assert loaded.predict(layers, 2) == fitted.predict(layers, 2)


@pytest.mark.parametrize("edit, reason", [
    (lambda c: c["coefficients"]["1"].update(layers="fast"), "composition coefficient layers is .fast."),
    (lambda c: c["coefficients"]["1"].pop("call"), "at batch 1 are not"),
    (lambda c: c["layer_times_s"].pop("4"), "a batch size without layer times"),
    (lambda c: c["layer_times_s"]["1"].update(x=0), "layer time x is 0"),
    (lambda c: c["coefficients"].update({"-2": c["coefficients"]["1"]}), "batch size '-2'"),
    (lambda c: c["layer_model"].pop("4"), "one forest per batch size"),
    (lambda c: c.update(predicted_interval_measured_over_predicted=[2, 1]), "low end is above its high end"),
    (lambda c: c["other_work_s_per_unit"]["1"].pop("sum_window_taps"), "other work is not max_window_taps"),
    (lambda c: c["other_work_s_per_unit"].update({"8": c["other_work_s_per_unit"]["1"]}), "other work is not"),
    (lambda c: c["other_work_s_per_unit"]["4"].update(transcendentals=-1), "other work rate transcendentals is -1"),
    (lambda c: c.update(alone_cache_bytes=0), "alone_cache_bytes is 0"),
    (lambda c: c.update(memory_bandwidth_bytes_per_s="fast"), "memory_bandwidth_bytes_per_s is .fast."),
])
def test_a_hand_edited_composition_is_one_line(composed_points, tmp_path, edit, reason):
    path = tmp_path / "p.json"
    predict.save(predict.fit(composed_points, {}, "float32", []), str(path))
    data = json.loads(path.read_text())
    edit(data["composition"])
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match=reason) as raised:
        predict.load(str(path))
    assert "\n" not in str(raised.value)


def made_up_layer_seconds(key: str) -> float:
    """A layer alone on a made-up device: a call, and a time per MAC that a short reduction makes slower."""
    macs, outputs = (float(count) for count in features.key_counts(key)[:2])
    return 2e-5 + 1e-10 * macs * (1 + 16 * outputs / macs)


def test_a_forest_of_layer_times_predicts_layers_it_never_saw(tmp_path):
    keys = list(dict.fromkeys(k for name in map(str, kernels.draw(200, seed=5)) for k in calibrate.layers_of(name).keys))
    seen, unseen = keys[:len(keys) * 3 // 4], keys[len(keys) * 3 // 4:]
    assert len(unseen) >= 30 and len(seen) < forest.LEAVES
    trees = forest.fit({k: made_up_layer_seconds(k) for k in seen})
    # Fewer layers than leaves: every layer it was fitted on is a leaf of every tree, so the walk gives it back.
    assert trees.seconds(seen) == pytest.approx([made_up_layer_seconds(k) for k in seen], rel=1e-9)
    errors = trees.seconds(unseen) / np.array([made_up_layer_seconds(k) for k in unseen]) - 1
    assert np.median(np.abs(errors)) < 0.05
    # Plain arrays in JSON and back: the same trees.
    assert forest.parse(json.loads(json.dumps(trees.as_json()))) == trees


@pytest.mark.parametrize("edit, reason", [
    (lambda trees: trees[0]["left"].__setitem__(0, 10 ** 6), "a node pointing outside it"),
    (lambda trees: trees[0]["left"].__setitem__(0, 0), "a node pointing outside it"),
    (lambda trees: trees[1]["feature"].__setitem__(0, len(features.KEY_COLUMNS)), "a node pointing outside it"),
    (lambda trees: trees[0]["value"].pop(), "unequal lengths"),
    (lambda trees: trees[0]["threshold"].__setitem__(0, "deep"), "other than numbers"),
    (lambda trees: trees[0].pop("right"), "is not feature, threshold"),
    (lambda trees: trees.clear(), "no trees"),
])
def test_a_hand_edited_forest_is_one_line(composed_points, tmp_path, edit, reason):
    path = tmp_path / "p.json"
    predict.save(predict.fit(composed_points, {}, "float32", []), str(path))
    data = json.loads(path.read_text())
    edit(data["composition"]["layer_model"]["1"])
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match=reason) as raised:
        predict.load(str(path))
    assert "\n" not in str(raised.value)


def test_a_layer_takes_no_less_than_its_evicted_weights_read_from_memory():
    # 10 MiB of weights in a 4 MiB cache: each layer loses 60 % of its weights, read at 1 GB/s (a byte a ns).
    small, large = "1:1:262144:1:1", "1:1:1048576:1:1"  # 1 MiB and 4 MiB of weights
    layers = features.Layers(np.zeros(3), np.ones(3), np.ones(3), {"weight_bytes": 10 * 2 ** 20}, 3,
                             (small, large, small))
    memory = model_lib.Memory(4 * 2 ** 20, None, 1e9)
    evicted_s = 0.6 * 2 ** 20 / 1e9  # of a small layer; the large one is 4 times that
    assert model_lib.floored_sum([1e-4, 1e-3, 1e-3], layers, memory) == pytest.approx(evicted_s + 4 * evicted_s
                                                                                     + 1e-3)
    assert model_lib.floored_sum([1e-4, 1e-3, 1e-3], layers, memory._replace(bandwidth=None)) == pytest.approx(2.1e-3)
    assert model_lib.floored_sum([1e-4, 1e-3, 1e-3], layers, memory._replace(cache_bytes=None)) == pytest.approx(2.1e-3)
    # A layer whose weights outgrow the cache alone read them from memory alone too: no floor of its own.
    assert model_lib.floored_sum([1e-4, 1e-3, 1e-3], layers, model_lib.Memory(2 * 2 ** 20, None, 1e9)) == \
        pytest.approx(0.8 * 2 ** 20 / 1e9 + 1e-3 + 1e-3)
    assert model_lib.floored_sum([1e-4, 1e-3, 1e-3], layers, memory._replace(cache_bytes=16 * 2 ** 20)) == \
        pytest.approx(2.1e-3)  # every weight in cache


# Wider ResNets at 32 px: 2 to 11 MiB of weights, stage 4's convolutions 0.6 to 2.4 MiB each.
FLOORED = [f"resnet18:depths={d},width={w},resolution=32" for d, w in
           (("1-1-1-1", 0.25), ("2-1-1-2", 0.25), ("1-1-1-1", 0.375), ("1-2-1-1", 0.375), ("1-1-2-1", 0.375),
            ("1-1-1-2", 0.375), ("2-2-2-2", 0.375), ("1-1-1-1", 0.5), ("2-1-1-1", 0.5), ("1-1-2-1", 0.5),
            ("1-1-1-2", 0.5), ("2-2-1-2", 0.5))]


def test_the_fit_finds_the_bandwidth_evicted_weights_are_read_at():
    memory = model_lib.Memory(4 * 2 ** 20, None, model_lib.BANDWIDTH_CANDIDATES[3])  # 8 GB/s
    points = made_up_points(FLOORED, memory)
    fitted = predict.fit(points, {}, "float32", []).composition
    assert (fitted.cache_bytes, fitted.bandwidth) == pytest.approx(memory[::2])
    networks = [p for p in points if p.family == "ResNet"]
    for p in networks:
        assert fitted.at(p.layers, p.batch_size) == pytest.approx(p.latency_s, rel=1e-6)
    # The floor decides at batch 1 on these small maps: without it, a network is well off.
    plain = dataclasses.replace(fitted, bandwidth=None)
    errors = [plain.at(p.layers, 1) / p.latency_s - 1 for p in networks if p.batch_size == 1]
    assert min(errors) < -0.2


def test_a_layer_beyond_the_cache_alone_spills_only_the_cache_it_kept_alone():
    cache = 8 * 2 ** 20
    small, large = "1:1:262144:1:1", "1:1:4194304:1:1"  # 1 MiB and 16 MiB of weights
    mixed, smalls = features.weight_bytes_of((small, large, small)), features.weight_bytes_of((small,) * 20)
    assert model_lib.spilled_bytes(20 * 2 ** 20, cache) == 12 * 2 ** 20
    assert model_lib.spilled_bytes(20 * 2 ** 20, cache, mixed) == 10 * 2 ** 20  # the small ones, 8 MiB of the large
    assert model_lib.spilled_bytes(20 * 2 ** 20, cache, smalls) == 12 * 2 ** 20
    assert model_lib.spilled_bytes(20 * 2 ** 20, None, smalls) == 0
    assert model_lib.spilled_bytes(10 * 2 ** 20, cache, mixed[:2]) == 2 * 2 ** 20  # beyond the cache, at most
    # Alone, a layer may have a larger cache to itself than a network leaves it: then all of the large one spills.
    assert model_lib.spilled_bytes(20 * 2 ** 20, cache, mixed, 32 * 2 ** 20) == 12 * 2 ** 20
    # The per-feature model's column too, where a row's layers are known.
    vectors = np.zeros((2, len(features.NAMES)))
    vectors[:, features.NAMES.index("weight_bytes")] = 20 * 2 ** 20
    column = model_lib.with_spill(vectors, cache, [mixed, ()])[:, -1]
    assert list(column) == [10 * 2 ** 20, 12 * 2 ** 20]


def dense_point(cin: int, cout: int, seconds: float) -> model_lib.Point:
    """A dense layer timed alone at batch 1, by its key (a weight and a bias per output)."""
    macs = cin * cout
    layers = features.Layers(np.array([macs], float), np.array([cin], float), np.array([cout], float), {}, 1,
                             (f"{macs}:{cout}:{macs + cout}:{cin}:{macs}",))
    return model_lib.Point(f"dense:cin={cin},cout={cout}", 1, seconds, np.zeros(len(features.NAMES)),
                           family=model_lib.KERNEL_FAMILY, layers=layers)


def test_the_cache_a_layer_has_alone_is_where_dense_layers_slow_down():
    # A made-up device: weights stream at 100 GB/s from a 32 MiB cache, at 30 GB/s from memory, beside a call.
    cache = 32 * 2 ** 20
    shapes = [(1024, 256 * 2 ** i) for i in range(8)] + [(3000, 3000), (5000, 2000), (2048, 2048 * 3)]
    points = [dense_point(cin, cout, 1e-5 + 4 * cin * cout / (100e9 if 4 * cin * cout <= cache else 30e9))
              for cin, cout in shapes]
    assert model_lib.alone_cache_bytes(model_lib.dense_split_errors(points), 8 * 2 ** 20) == cache
    # A convolution on a 2x2 map has a weight per multiply-accumulate too, but reads a window of its map, not every
    # input: XLA's slow paths for such maps (here as slow as memory, inside the cache) must not move the size.
    slow = []
    for cin in range(512, 2048, 128):
        point = dense_point(cin, 1024, 1e-5 + 4 * cin * 1024 / 30e9)
        key = point.keys[0].split(":")
        slow.append(dataclasses.replace(point, layers=dataclasses.replace(point.layers, keys=(
            ":".join([*key[:3], str(4 * cin), key[4]]),))))
    assert model_lib.alone_cache_bytes(model_lib.dense_split_errors(points + slow), 8 * 2 ** 20) == cache
    splits = model_lib.dense_split_errors(points)
    assert model_lib.alone_cache_bytes(splits, 64 * 2 ** 20) != cache  # only sizes not below the network's cache
    assert model_lib.alone_cache_bytes(splits, None) is None
    # Nothing beyond any size: no split.
    assert model_lib.alone_cache_bytes(model_lib.dense_split_errors(points[:3]), 2 * 2 ** 20) is None


def test_the_fit_weighs_a_ratio_both_ways_and_leaves_unseen_work_free(counted_points):
    points = [p for p in points_of(counted_points, known_cost_model()) if not p.name.startswith("lrn")]
    # No kernel left computes a transcendental (LRN's powers): the fit must not invent a cost for them.
    assert all(p.features[features.NAMES.index("transcendentals")] == 0 for p in points)
    fitted = predict.fit(points, {}, "float32", [])
    assert fitted.coefficients["transcendentals"] == 0.0


def test_too_few_points_is_one_line(counted_points):
    with pytest.raises(UserError, match="too few to fit"):
        predict.fit(points_of(counted_points[:6], known_cost_model()), {}, "float32", [])


def test_features_of_a_convolution_recover_its_matrix_product():
    spec = kernels.parse("conv:cin=8,cout=24,k=3,stride=1,groups=1,dilation=1,side=16")
    layers = calibrate.layers_of(str(spec))
    assert layers.rows == 1
    assert layers.k[0] == 8 * 9 and layers.n[0] == 24  # no bias: the weights are exactly K x N
    assert layers.macs[0] == 16 * 16 * 24 * 72
    vector = dict(zip(features.NAMES, layers.vector(1)))
    assert sum(vector[n] for n in features.NAMES if n.startswith("macs_k")) == pytest.approx(layers.macs[0])
    assert sum(vector[n] for n in features.NAMES if n.startswith("macs_n")) == pytest.approx(layers.macs[0])
    assert vector["grouped_macs"] == 0 and vector["calls"] == 1


@pytest.mark.parametrize("name", ["resnet18:width=0.25,resolution=64", "resnet50:width=0.25,resolution=64",
                                  "vgg16:width=0.25,resolution=64"])
def test_a_networks_layers_as_kernels_hold_all_its_multiply_accumulates(name):
    variant = models.variant(name)
    layers = kernels.of_network(variant.module(), variant.input_shape(1))
    assert {k.kind for k in layers} == {"conv", "dense"}
    from_layers = sum(calibrate.layers_of(str(k)).macs.sum() for k in layers)
    assert from_layers == calibrate.layers_of(name).macs.sum()


def test_grouped_convolutions_count_apart():
    layers = calibrate.layers_of("conv:cin=16,cout=16,k=3,stride=1,groups=2,dilation=1,side=8")
    vector = dict(zip(features.NAMES, layers.vector(1)))
    assert layers.rows == 0 and vector["grouped_macs"] == 8 * 8 * 16 * 8 * 9


def test_hat_weights_split_each_value_between_its_two_knots():
    weights = features.hat_weights(np.array([1.0, 4.0, 8.0, 1e9]), (2, 4, 6))
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    np.testing.assert_allclose(weights[1], [1.0, 0.0, 0.0])  # exactly on the first knot
    np.testing.assert_allclose(weights[2], [0.5, 0.5, 0.0])  # log2(8) = 3, half way from 2 to 4
    np.testing.assert_allclose(weights[3], [0.0, 0.0, 1.0])  # beyond the last knot: all on it


@pytest.mark.parametrize("name", SMALL_RESNETS + ["vgg16:width=0.25,resolution=32", "enet:resolution=64"])
def test_more_batch_never_predicts_less_time_per_batch(name, counted_points):
    fitted = predict.fit(points_of(counted_points, known_cost_model()), {}, "float32", [])
    layers = calibrate.layers_of(name)
    per_batch = [fitted.predict(layers, b).latency_s * b for b in (1, 2, 4, 8, 16, 64)]
    assert all(a < b for a, b in zip(per_batch, per_batch[1:]))
    assert np.all(np.diff([layers.vector(b) for b in (1, 2, 4)], axis=0) >= 0)


def test_a_predictor_round_trips_and_is_refused_on_another_device_or_runtime(tmp_path, counted_points):
    here = {"device": "cpu: here", "jaxlib": "1.0", "xla_flags": ""}
    fitted = predict.fit(points_of(counted_points, known_cost_model()), here, "float32", ["log"])
    path = str(tmp_path / "p.json")
    predict.save(fitted, path)
    loaded = predict.load(path)
    assert loaded.coefficients == fitted.coefficients and loaded.interval == pytest.approx(fitted.interval)
    assert loaded.cache_bytes == fitted.cache_bytes
    loaded.check_here(here, "float32", path)
    with pytest.raises(UserError,
                       match=r"fitted with device 'cpu: here', not .*'NVIDIA H200'.*python -m measure.predict"):
        loaded.check_here({**here, "device": "NVIDIA H200"}, "float32", path)
    with pytest.raises(UserError, match="fitted with xla_flags"):
        loaded.check_here({**here, "xla_flags": "--xla_foo"}, "float32", path)
    with pytest.raises(UserError, match="predicts float32 times, not bfloat16"):
        loaded.check_here(here, "bfloat16", path)


@pytest.mark.parametrize("edit, reason", [
    (lambda text: text[: len(text) // 2], "not a predictor file"),
    (lambda text: text.replace('"calls": ', '"calls": -'), "coefficient calls"),
    (lambda text: text.replace('"calls": ', '"calls": NaN, "x": '), "NaN is not a number"),
    (lambda text: text.replace('"macs_k4"', '"macs_k3"'), "not this version's features"),
    (lambda text: text.replace('"version": 6', '"version": 5'), "version 5, not 6"),
    (lambda text: text.replace('"cache_bytes": ', '"cache_bytes": -1, "x": '), "cache_bytes is -1"),
    (lambda text: "[]", "no \"format\""),
])
def test_a_corrupt_or_hand_edited_file_is_one_line(tmp_path, counted_points, edit, reason):
    path = tmp_path / "p.json"
    predict.save(predict.fit(points_of(counted_points, known_cost_model()), {}, "float32", []), str(path))
    path.write_text(edit(path.read_text()))
    with pytest.raises(UserError, match=reason) as raised:
        predict.load(str(path))
    assert "\n" not in str(raised.value) and "python -m measure.predict" in str(raised.value)


def _fitted_here(tmp_path, counted_points) -> str:
    """A predictor file bound to this process's device and runtime (its costs made up)."""
    runtime.configure()
    fitted = predict.fit(points_of(counted_points, known_cost_model()), predict.environment_here(), "float32", [])
    path = str(tmp_path / "here.json")
    predict.save(fitted, path)
    return path


def test_measure_cost_prints_the_prediction_and_refuses_a_foreign_file(tmp_path, counted_points, run_program):
    path = _fitted_here(tmp_path, counted_points)
    variant = SMALL_RESNETS[0]
    result = run_program("measure.cost", f"--model={variant}", "--batch_size=4", f"--predictor={path}", "--json")
    assert result.returncode == 0
    guess = json.loads(result.stdout)["predicted"]
    expected = predict.load(path).predict(calibrate.layers_of(variant), 4)
    assert guess["latency_ms_per_image"] == pytest.approx(expected.latency_s * 1e3)
    assert guess["low_ms"] <= guess["latency_ms_per_image"] <= guess["high_ms"]
    foreign = json.loads(open(path).read())
    foreign["environment"]["device"] = "NVIDIA H200"
    (tmp_path / "foreign.json").write_text(json.dumps(foreign))
    refused = run_program("measure.cost", f"--model={variant}", f"--predictor={tmp_path / 'foreign.json'}")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "NVIDIA H200" in refused.stderr


def _plan(tmp_path, counted_points, **changes) -> plan.PlanSettings:
    return plan.PlanSettings(spaces=("resnet_basic",), ranges=(("width", 0.125, 0.5), ("resolution", 32, 64)),
                             samples=6, predictor=_fitted_here(tmp_path, counted_points), **changes)


def test_the_explorer_records_predictions_apart_from_measurements(tmp_path, counted_points):
    planned = plan.make(_plan(tmp_path, counted_points), progress=lambda line: None)
    predictor = predict.load(str(tmp_path / "here.json"))
    for p in planned:
        expected = predictor.predict(calibrate.layers_of(p.variant), 1).latency_s * 1e3
        assert p.costs["predicted_latency_ms_b1"] == pytest.approx(expected)
        assert p.costs["predicted_energy_mj_b1"] is None  # no meter read where it was fitted
    # One variant timed (a measured row), the others not: no predicted figure reaches a measured column.
    results = [analyse.VariantResult(p.variant, p.spaces, p.config, p.costs) for p in planned]
    results[0].rows[1] = results_lib.Row(model=planned[0].variant, display_name="", family="ResNet", batch_size=1,
                                         resolution=32, precision="float32", device="cpu", time_per_image_s=0.004)
    records = table.records(analyse.analyse(results), {})
    assert records[0]["latency_ms_b1"] == pytest.approx(4.0)
    assert records[0]["predicted_latency_ms_b1"] == pytest.approx(planned[0].costs["predicted_latency_ms_b1"])
    assert all("latency_ms_b1" not in r for r in records[1:])
    assert all(r["predicted_latency_ms_b1"] > 0 for r in records)
    check = analyse.prediction_check(results)
    assert check.variants == 1
    assert check.median_abs_error_pct == pytest.approx(100 * abs(planned[0].costs["predicted_latency_ms_b1"] / 4 - 1))


def test_constraints_on_predicted_latency_and_the_predicted_front(tmp_path, counted_points):
    everything = plan.make(_plan(tmp_path, counted_points), progress=lambda line: None)
    latencies = sorted(p.costs["predicted_latency_ms_b1"] for p in everything)
    limit = latencies[len(latencies) // 2]
    bounded = plan.make(_plan(tmp_path, counted_points, constraints=(("latency_ms", None, limit),)),
                        progress=lambda line: None)
    assert all(p.costs["predicted_latency_ms_b1"] <= limit for p in bounded)
    front = plan.predicted_front(everything)
    for p in everything:  # every variant left out is beaten by one on the front: faster with no fewer FLOPs
        if p not in front:
            assert any(f.costs["predicted_latency_ms_b1"] <= p.costs["predicted_latency_ms_b1"]
                       and f.costs["flops"] >= p.costs["flops"] for f in front)
    assert plan.make(_plan(tmp_path, counted_points, predicted_front=True), progress=lambda line: None) == front


def test_predicted_constraints_without_a_predictor_are_one_line(run_program, tmp_path):
    result = run_program("explore", f"--out={tmp_path}", "--steps=sample", "--constraints=latency_ms=:20")
    assert result.returncode == 2 and "give --predictor=FILE" in result.stderr
    result = run_program("explore", f"--out={tmp_path}", "--steps=sample", "--predicted_front")
    assert result.returncode == 2 and "--predictor=FILE" in result.stderr


def test_rows_of_another_device_are_refused(tmp_path):
    log = tmp_path / "calibration.jsonl"
    row = dataclasses.asdict(results_lib.Row(
        model="conv:cin=8,cout=8,k=1,stride=1,groups=1,dilation=1,side=4", display_name="", family="kernel",
        batch_size=1, resolution=4, precision="float32", device="elsewhere", time_per_image_s=1e-4))
    log.write_text(json.dumps({"key": "a", "rows": [row]}) + "\n")
    with pytest.raises(UserError, match="timed on 'elsewhere'"):
        calibrate.read_points([str(log)], "here", "float32", {})
    log.write_text(json.dumps({"key": "a", "environment": {"jaxlib": "0.1"}, "rows": [row]}) + "\n")
    with pytest.raises(UserError, match="measured with jaxlib '0.1'"):
        calibrate.read_points([str(log)], "elsewhere", "float32", {"jaxlib": "9.9"})


def test_times_are_set_against_the_pace_recorded_beside_them(tmp_path):
    log = tmp_path / "calibration.jsonl"
    lines = []
    for i, pace in enumerate([1e-3, 2e-3, None, "fast", -1.0, True]):
        row = dataclasses.asdict(results_lib.Row(
            model=f"conv:cin=8,cout=8,k=1,stride=1,groups=1,dilation=1,side={4 + i}", display_name="",
            family="kernel", batch_size=1, resolution=4 + i, native_resolution=4 + i, precision="float32",
            device="here", time_per_image_s=1e-4, time_per_image_p25_s=1e-4))
        lines.append(json.dumps({"key": f"k{i}", "rows": [row], **({} if pace is None else {"pace_s": pace})}))
    log.write_text("\n".join(lines) + "\n")
    found = calibrate.read_points([str(log)], "here", "float32", {})
    # The typical pace is the median of the two readings; a line without a reading (or a garbled one) stays as timed.
    assert [p.latency_s for p in found] == pytest.approx([1.5e-4, 0.75e-4, 1e-4, 1e-4, 1e-4, 1e-4])


def test_the_calibration_budget_counts_every_runs_timing(tmp_path):
    log = tmp_path / "p.calibration.jsonl"
    log.write_text(json.dumps({"key": "a", "seconds": 1.5}) + "\n" + json.dumps({"key": "b", "seconds": 2.0}) + "\n")
    (tmp_path / "p.calibration.shard-0-of-1.jsonl").write_text(
        json.dumps({"key": "b", "seconds": 2.0}) + "\n" + json.dumps({"key": "c", "seconds": 0.5}) + "\n"
        + json.dumps({"key": "d", "seconds": "garbled"}) + "\n")
    assert calibrate.logged_seconds(str(log)) == pytest.approx(4.0)  # b once, d's garbled seconds as none


def test_a_budget_stops_a_job_list_and_the_rest_waits_for_a_rerun(tmp_path):
    log = str(tmp_path / "log.jsonl")
    jobs = [(f"job-{i}", i) for i in range(5)]
    assert joblog.run_jobs(jobs, log, lambda i: {"value": i}, progress=lambda line: None, budget_s=0) == []
    assert joblog.run_jobs(jobs, log, lambda i: time.sleep(0.05) or {"value": i}, progress=lambda line: None,
                           budget_s=0.01) == ["job-0"]
    assert joblog.run_jobs(jobs, log, lambda i: {"value": i}, progress=lambda line: None) == [k for k, _ in jobs[1:]]


@pytest.mark.slow
def test_calibration_killed_mid_way_resumes_without_repeating_or_losing_a_measurement(tmp_path):
    out = tmp_path / "p.json"
    command = [sys.executable, "-m", "measure.predict", f"--out={out}", "--kernels=14", "--batch_sizes=1,2",
               "--min_time=0", "--calibration_s=600"]
    shard = tmp_path / "p.calibration.shard-0-of-1.jsonl"
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not shard.exists() or shard.read_text().count("\n") < 3):
        time.sleep(0.05)
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    timed_before = [json.loads(line)["key"] for line in shard.read_text().splitlines() if line.endswith("}")]
    assert 3 <= len(timed_before) < 14
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    keys = [row["key"] for row in joblog.ResultLog(str(tmp_path / "p.calibration.jsonl")).contents.rows]
    assert len(keys) == len(set(keys)) == 14  # each kernel timed once: none repeated, none lost
    shard_keys = [json.loads(line)["key"] for line in shard.read_text().splitlines()]
    assert shard_keys[:len(timed_before)] == timed_before and len(shard_keys) == 14
    fitted = predict.load(str(out))
    assert fitted.fitted_on["points"] == 28


@pytest.mark.slow
def test_a_budget_too_short_still_times_the_targets_a_fit_needs(tmp_path):
    out = tmp_path / "p.json"
    finished = subprocess.run([sys.executable, "-m", "measure.predict", f"--out={out}", "--kernels=40",
                               "--batch_sizes=1", "--min_time=0", "--calibration_s=0.001"],
                              capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    lines = joblog.ResultLog(str(tmp_path / "p.calibration.jsonl")).contents.rows
    assert len({line["key"] for line in lines}) == model_lib.FEWEST_TARGETS
    assert all(0 < line["pace_s"] < 1 for line in lines)
    again = subprocess.run([sys.executable, "-m", "measure.predict", f"--out={out}", "--kernels=40", "--batch_sizes=1",
                            "--min_time=0", "--calibration_s=0.001"], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr  # the budget is spent: the rerun times nothing more
    assert joblog.ResultLog(str(tmp_path / "p.calibration.jsonl")).contents.rows == lines
    assert predict.load(str(out)).fitted_on["points"] == model_lib.FEWEST_TARGETS


@pytest.mark.slow
def test_calibrating_a_spaces_layers_makes_its_networks_their_sum(tmp_path):
    out = tmp_path / "p.json"
    finished = subprocess.run([sys.executable, "-m", "measure.predict", f"--out={out}", "--kernels=0",
                               f"--networks={','.join(COMPOSED)}", f"--layers_of={','.join(COMPOSED)}",
                               "--batch_sizes=1", "--min_time=0.01", "--calibration_s=600"],
                              capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    lines = joblog.ResultLog(str(tmp_path / "p.calibration.jsonl")).contents.rows
    assert len(lines) == len(COMPOSED) + len(calibrate.layers_to_time(COMPOSED))
    fitted = predict.load(str(out))
    assert fitted.composition is not None and list(fitted.composition.coefficients) == [1]
    assert all(fitted.composition.covers(calibrate.layers_of(name).keys) for name in COMPOSED)
    assert "their layers added up, at batch 1" in finished.stdout


def test_bad_input_to_the_fit_is_one_line(tmp_path, run_program):
    for args, message in [([f"--out={tmp_path}"], "is a directory"),
                          ([f"--out={tmp_path}/new/p.json", "--calibration_s=0"], "too few to fit"),
                          ([f"--out={tmp_path}/p.json", "--calibration_s=0", "--results=/no/such/dir"],
                           "does not exist"),
                          ([f"--out={tmp_path}/p.json", "--batch_sizes=0"], "batch_sizes"),
                          ([f"--out={tmp_path}/p.json", "--networks=resnet18:width=nope"], "width"),
                          ([f"--out={tmp_path}/p.json", "--layers_of=resnet18:depths=9"], "depths")]:
        result = run_program("measure.predict", *args)
        assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") == 1, (args, result)
    assert os.path.isdir(tmp_path / "new") and not os.path.exists(tmp_path / "new" / "p.json")


def test_kernels_together_weigh_as_much_as_networks_together():
    vector = np.ones(len(features.NAMES))
    points = [model_lib.Point(f"k{i}", 1, 1.0, vector, family=model_lib.KERNEL_FAMILY) for i in range(30)]
    points += [model_lib.Point(f"n{i}", 1, 1.0, vector, family="ResNet") for i in range(10)]
    weights = model_lib.weights(points)
    assert weights[:30].sum() == pytest.approx(weights[30:].sum()) == pytest.approx(len(points) / 2)
    np.testing.assert_allclose(model_lib.weights(points[:30]), 1.0)  # kernels alone: all alike


def test_the_bench_measures_a_test_network_at_the_lower_of_its_two_timings():
    def point(name, batch, seconds):
        return model_lib.Point(name, batch, seconds, np.zeros(len(features.NAMES)))
    first = [point("a", 1, 2.0), point("a", 16, 5.0), point("b", 1, 3.0)]
    again = [point("a", 1, 1.5), point("a", 16, 6.0), point("c", 1, 0.1)]
    assert [p.latency_s for p in bench.least_disturbed(first, again)] == [1.5, 5.0, 3.0]


def test_the_benchs_space_layers_hold_every_layer_of_its_variants():
    space = bench.space_layer_variants()
    assert len(space) == len(set(space)) == len(bench.RESNETS) * len(bench.WIDTHS) * len(bench.SIDES)
    for name in bench.random_resnets(4, seed=5):
        variant = models.variant(name)
        knobs = dict(variant.knobs)
        two_blocks = str(models.from_knobs(variant.name, variant.input_shape(1)[1], depths=(2, 2, 2, 2),
                                           width=knobs.get("width", 1.0)))
        assert two_blocks in space
        assert set(calibrate.layers_to_time([name])) <= set(calibrate.layers_to_time([two_blocks]))


def test_the_bench_refuses_more_variants_than_its_space_has_before_timing(tmp_path, run_program):
    for flag in (f"--rank_variants={bench.DISTINCT_RESNETS + 1}", f"--fit_variants={bench.DISTINCT_RESNETS}"):
        result = run_program("measure.predict.bench", f"--out={tmp_path}/b", flag)
        assert result.returncode == 2 and f"{bench.DISTINCT_RESNETS:,} distinct variants" in result.stderr
        assert result.stderr.count("\n") == 1 and not os.path.exists(tmp_path / "b")
