"""The cost memo: memoised counts equal uncached ones in every field, hits happen, the bound holds."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
from explore import space as space_lib
from measure import cost
from measure.cost import count as count_lib
from measure.cost import memo as memo_lib

SHARED = memo_lib.Memo()  # one memo across the networks: later ones hit what earlier ones stored


def assert_same_counts(module, shape, memo):
    """The memoised count of `module` equals its uncached count in every field; returns the memoised Cost."""
    memoised = cost.count_module(module, shape, memo=memo)
    assert count_lib.every_count(memoised) == count_lib.every_count(cost.count_module(module, shape))
    return memoised


@pytest.mark.parametrize("name", models.names())
def test_every_network_counts_the_same(name):
    memoised = cost.count_model(name, memo=SHARED)
    uncached = cost.count_model(name)
    assert count_lib.every_count(memoised) == count_lib.every_count(uncached)
    assert memoised.ops("paper", dense_groups=True) == uncached.ops("paper", dense_groups=True) > 0


@pytest.mark.parametrize("name", ["resnet18", "googlenet", "enet"])
def test_skipping_flax_plain_field_registration_changes_no_count(name, monkeypatch):
    """Counts (eval with and without a memo, training) equal those with Flax registering every field."""
    def counts():
        return [count_lib.every_count(cost.count_model(name, memo=memo_lib.Memo())),
                count_lib.every_count(cost.count_model(name)),
                count_lib.every_count(cost.count_model(name, batch_size=2, train=True))]

    fast = counts()
    monkeypatch.setattr(count_lib, "_plain_field", lambda value: False)  # every field registered, as Flax does alone
    assert counts() == fast


def test_a_count_skips_registering_plain_fields_and_restores_flax(monkeypatch):
    registered = []
    original = nn.Module._register_submodules
    monkeypatch.setattr(nn.Module, "_register_submodules",
                        spy := lambda module, field, value: registered.append(value) or original(module, field, value))
    cost.count_model("resnet18", memo=memo_lib.Memo())
    assert registered  # what may hold a submodule still goes through Flax...
    assert not [value for value in registered if count_lib._plain_field(value)]  # ...and no plain value does
    assert nn.Module._register_submodules is spy


def _random_variants(count_per_space: int, seed: int):
    """Seeded random variants of the ResNet, VGG and ENet spaces."""
    rng = np.random.default_rng(seed)
    return [space.variant({knob.name: knob.draw(rng) for knob in space.knobs})
            for space in space_lib.SPACES.values() for _ in range(count_per_space)]


@pytest.mark.parametrize("variant", _random_variants(3, seed=7), ids=str)
def test_random_variants_count_the_same(variant):
    memo = memo_lib.Memo()
    assert_same_counts(variant.module(), variant.input_shape(), memo)
    assert memo.misses > 0


def test_a_repeated_block_is_counted_once():
    memo = memo_lib.Memo()
    module = models.get("resnet18", depths=(8, 1, 1, 1), width=0.5)
    assert_same_counts(module, models.input_shape("resnet18", 1, 64), memo)
    hits, misses = memo.hits, memo.misses
    # Blocks 2 to 8 of stage 1 repeat block 1 (64 -> 64, stride 1) and hit; the stage misses once.
    assert hits >= 7
    again = cost.count_module(module, models.input_shape("resnet18", 1, 64), memo=memo)
    assert memo.misses == misses  # nothing new
    assert memo.hits - hits == 7  # the root's calls: stem conv and BN, four stages, fc
    assert again.ops("flops") == cost.count_module(module, models.input_shape("resnet18", 1, 64)).ops("flops")


def test_a_hit_traces_one_equation_for_the_call():
    memo = memo_lib.Memo()
    module, shape = models.get("resnet50"), models.input_shape("resnet50")
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    inline = count_lib._trace_eval(module, (x,), {"train": False}, None).closed.jaxpr
    memoised = count_lib._trace_eval(module, (x,), {"train": False}, memo).closed.jaxpr
    answered = [eqn for eqn in memoised.eqns if memo_lib.entry_of(eqn) is not None]
    assert len(answered) == 7  # stem conv, stem BN, four stages, fc
    assert len(memoised.eqns) < len(inline.eqns) / 10


def test_a_training_step_is_counted_as_it_is():
    memo = memo_lib.Memo()
    module, shape = models.get("resnet18", width=0.25), models.input_shape("resnet18", 2, 32)
    with_memo = cost.count_module(module, shape, train=True, memo=memo)
    assert count_lib.every_count(with_memo) == count_lib.every_count(cost.count_module(module, shape, train=True))
    assert len(memo) == 0 and memo.hits == memo.misses == 0


@pytest.mark.parametrize("capacity", [1, 300, 2000])
def test_the_bound_holds_and_what_is_stored_is_whole(capacity):
    memo = memo_lib.Memo(capacity)
    for name in ("resnet50", "googlenet", "resnet18"):
        assert_same_counts(models.get(name), models.input_shape(name), memo)
        stored = {key: entry for key, (entry, _) in memo._entries.items()}
        assert memo.weight <= capacity or len(stored) == 1
        assert memo.weight == sum(weight for _, weight in memo._entries.values())
        for entry in stored.values():  # nothing stored references an evicted entry
            assert all(stored.get(child.key) is child for child in getattr(entry, "children", ()))


class UnusedOutput(nn.Module):
    """A layer whose output is dropped: inlined, its result dies at once."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        nn.Dense(4, name="dropped")(x)
        return nn.Dense(3, name="kept")(x * 2)


class OnParameters(nn.Module):
    """A layer applied to a parameter: all its equations are static, none counts."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        w = self.param("w", nn.initializers.ones, (2, x.shape[-1]))
        return x @ nn.Dense(x.shape[-1], name="on_w")(w).T


class Shared(nn.Module):
    """One layer called twice: its parameters exist once, its equations twice."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        dense = nn.Dense(x.shape[-1], name="shared")
        return dense(nn.relu(dense(x)))


class Rematerialised(nn.Module):
    """A layer inside a lifted transform: its call sits in a nested jaxpr body."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.remat(nn.Dense)(5, name="remat")(x) + nn.Dense(5, name="plain")(x)


class OpaqueWithLayer(nn.BatchNorm):
    """A module the paper costs as a whole with a layer inside: the layer is not memoised."""

    @nn.compact
    def __call__(self, x):
        return nn.Dense(x.shape[-1], name="inner")(x)


class UsesOpaque(nn.Module):
    """Calls the opaque module twice on the same shape."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        return OpaqueWithLayer(name="second")(OpaqueWithLayer(name="first")(x))


@pytest.mark.parametrize("module", [UnusedOutput(), OnParameters(), Shared(), Rematerialised(), UsesOpaque()],
                         ids=lambda m: type(m).__name__)
def test_calls_that_cannot_be_replayed_are_counted_inline(module):
    memoised = assert_same_counts(module, (2, 6), memo_lib.Memo())
    assert memoised.ops("flops") > 0


def test_the_shared_memo_is_what_the_explorer_uses():
    from explore import sample  # pylint: disable=import-outside-toplevel

    variant = _random_variants(1, seed=3)[0]
    hits = memo_lib.SHARED.hits
    first, second = sample.costs(sample.count_shared(variant)), sample.costs(sample.count_shared(variant))
    assert first == second
    assert memo_lib.SHARED.hits > hits
    uncached = cost.count_model(variant.name, resolution=variant.resolution, **dict(variant.knobs))
    assert first["flops"] == uncached.ops("flops") and first["params"] == uncached.params


class TwoInputs(nn.Module):
    """Reads `a` first and `b` last: a caller that frees `a` has it dead at the peak inside."""

    features: int

    @nn.compact
    def __call__(self, a, b, scale: float = 1.0):
        y = nn.Dense(self.features, name="narrow")(a)
        y = nn.relu(nn.Dense(self.features * 16, name="wide")(y * scale))
        return nn.Dense(self.features, name="back")(y) + b


class TwoOutputs(nn.Module):
    """Returns two results, one of them its input's own layer."""

    @nn.compact
    def __call__(self, x):
        return TwoInputs(x.shape[-1], name="inner")(x, x * 2), nn.Dense(3, name="side")(x)


class Wrapped(nn.Module):
    """Hands both its inputs to an inner composite, which is where they die."""

    features: int

    @nn.compact
    def __call__(self, a, b):
        return TwoInputs(self.features, name="inner")(a, b) * 2


class Passthrough(nn.Module):
    """Returns its input unchanged beside a layer of it: the input is an output, not a fresh value."""

    @nn.compact
    def __call__(self, x):
        return x, nn.Dense(2, name="layer")(x)


class Composites(nn.Module):
    """Calls the composites above with inputs that die inside them or live on after."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.Dense(64, name="h")(x)
        g = nn.relu(x)
        y = TwoInputs(6, name="dies")(h, g)  # h and g die inside
        z = TwoInputs(6, name="lives")(y, x, scale=0.5)  # y dies, x lives on
        u, v = TwoOutputs(name="pair")(z)
        w = TwoInputs(6, name="same")(u, u)  # one value passed twice: inlined
        r = Wrapped(6, name="wrapped")(nn.Dense(128, name="r")(w), w)  # the peak, its first input dead
        p, q = Passthrough(name="pass")(r)
        return p.sum() + q.sum() + v.sum() + x.sum()


def test_composites_compose_liveness_exactly(monkeypatch):
    # The composites above are cached as if they were the models package's.
    monkeypatch.setattr(memo_lib, "COMPOSITE_PACKAGE", __name__)
    memo = memo_lib.Memo()
    memoised = assert_same_counts(Composites(), (3, 6), memo)
    assert memoised.peak_activation_bytes > 0
    stored = {(key[0], entry is memo_lib.UNCACHEABLE) for key, (entry, _) in memo._entries.items()}
    assert {(TwoInputs, False), (TwoOutputs, False), (Wrapped, False), (Passthrough, True)} <= stored
    again = cost.count_module(Composites(), (3, 6), memo=memo)
    assert count_lib.every_count(again) == count_lib.every_count(memoised)
