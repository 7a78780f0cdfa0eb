"""Memoised eval-mode counting: a submodule call is counted once per configuration and input shapes.

While `count_module` traces a network, a Flax method interceptor answers each cacheable
submodule call (a module of our `models` package, or a Flax Conv, Dense or BatchNorm) from a
`Memo`. On a miss the call is counted standalone, recursively through the memo, and stored as an
`Entry`: its tallies, inner module calls, variables, output shapes and a liveness profile. The
caller's trace then holds ONE equation of `memoised_call_p` in place of the call's equations:
`walk.walk` adds the stored tallies under the call's scope and `memory` composes the stored
profile with the caller's live values, so every count equals the inlined one. Where it would
not (a memoised call inside a lifted transform's body, on parameter-derived data, or with an
output never read) `Inexact` is raised and the caller is counted again without the memo.

A call is cached under (module class, its field values, the argument tree with array shapes and
dtypes and the other arguments' values), so a module's call may depend on nothing else: true of
the `models` blocks and of Flax's layers, whose fields are plain data and initialisers.

The memo is opt-in (`count_module(..., memo=)`): a network counted once from a cold memo gains
only where calls repeat (deep stacks of identical blocks) and pays a standalone trace per
distinct call where few do (BUILD.md has the developers' figures). Sweeps over variants count through `SHARED`.
"""

import collections
import dataclasses
import enum
import functools
import types
from typing import Any, Callable, NamedTuple, Optional

import flax.linen as nn
import jax
import numpy as np
from jax import extend

from measure.cost import rules

# Cells (see Entry.weight) a memo keeps by default; a cell is about 0.35 KiB, so about 85 MiB: a sweep
# of 2,000 random ResNets stores about 130,000.
DEFAULT_CAPACITY = 250_000
COMPOSITE_PACKAGE = "models."  # composite modules of this package are cached
# Flax layers cached too: a miss costs a standalone trace, but networks repeat a few shapes many
# times (every 3x3 convolution of a ResNet stage, every BatchNorm of a width), and a hit skips
# tracing the parameter initialisers, the most expensive part of a layer.
LEAF_MODULES = (nn.Conv, nn.Dense, nn.BatchNorm)
_PLAIN_TYPES = (type(None), bool, int, float, complex, str, bytes, type, enum.Enum, types.FunctionType,
                types.BuiltinFunctionType, np.dtype, type(jax.numpy.float32))
_ATOMS = frozenset((type(None), bool, int, float, str, types.FunctionType))
UNCACHEABLE = object()  # stored for a call whose count cannot be reproduced exactly: it is inlined


class Inexact(Exception):
    """A memoised call sits where its stored count would differ from the inlined one."""


@dataclasses.dataclass(eq=False, repr=False)
class Entry:
    """What one submodule call adds to its caller's count, stored once per call key.

    Its breakdown and calls hold the memoised calls inside it by reference (walk.Breakdown,
    Answered), so an entry stores only its own rows.
    """

    breakdown: Any  # walk.Breakdown keeping calls, scopes relative to the submodule
    calls: tuple  # module calls inside it (Call, path relative to it) or Answered
    variables: dict  # abstract variables by collection, rooted at the submodule
    own_leaves: int  # how many of the variables' leaves are its own, not a memoised call's
    out_tree: Any
    out_avals: tuple
    used: tuple  # positions of the array arguments its counted equations read: the equation's operands
    operand_bytes: tuple  # bytes of each operand
    points: tuple  # (bytes alive inside the call, its operands not counted; operands dead by then), per case
    key: Any = None  # its key in the memo

    def __repr__(self) -> str:
        """A short name: jaxpr printing shows equation parameters."""
        return f"memo.Entry({len(self.breakdown.per_scope)} scopes)"

    @property
    def weight(self) -> int:
        """The entry's own size in cells: its rows, calls and variables."""
        b = self.breakdown
        return 1 + len(b.per_scope) + len(b.per_primitive) + len(b.calls) + len(self.calls) + self.own_leaves

    @property
    def children(self):
        """The entries of the memoised calls inside it."""
        return (call.entry for call in self.calls if isinstance(call, Answered))

    @functools.cached_property
    def paper_calls(self) -> tuple:
        """The module calls inside it that the paper costs as a whole (see `paper_calls`), paths relative to it.

        Kept once per entry (a few calls: BatchNorms, PReLUs): every count that answers the call needs
        them, and would otherwise flatten the calls of every entry nested in it again.
        """
        return tuple(paper_calls(self.calls))


# Never lowered or differentiated: it only stands for a counted call inside an abstract trace.
memoised_call_p = extend.core.Primitive("memoised_call")
memoised_call_p.multiple_results = True
memoised_call_p.def_abstract_eval(lambda *operands, entry: entry.out_avals)


class Call(NamedTuple):
    """One module call in a trace, in call order."""

    path: tuple
    kind: str  # the module's class name
    factor: Optional[int]  # rules.paper_module_cost: paper-convention operations per output element, if any
    elements: int  # output elements
    channels: int  # the last dimension of its first output (0 for a scalar)


class Answered(NamedTuple):
    """A call answered from the memo, among a trace's module calls: its inner calls are its entry's."""

    path: tuple
    entry: Entry


def paper_calls(calls):
    """The module Calls with a paper cost (rules.paper_module_cost is not None) in order, answered ones' inner
    ones too, with paths from the trace's root."""
    for call in calls:
        if isinstance(call, Answered):
            for inner in call.entry.paper_calls:
                yield inner._replace(path=call.path + inner.path)
        elif call.factor is not None:
            yield call


def entry_of(eqn) -> Optional[Entry]:
    """The entry a memoised-call equation stands for, or None for any other equation."""
    return eqn.params["entry"] if eqn.primitive is memoised_call_p else None


class Memo:
    """A bounded cache of Entries by call key, least recently used evicted first, with hit and miss counts."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY):
        """An empty memo keeping at most `capacity` cells."""
        self.capacity, self.weight, self.hits, self.misses = capacity, 0, 0, 0
        self._entries: collections.OrderedDict = collections.OrderedDict()  # key -> (entry, weight)

    def __len__(self) -> int:
        """How many calls are stored."""
        return len(self._entries)

    def get(self, key):
        """The entry stored under `key` (now the most recently used, with what it references), or None."""
        found = self._entries.get(key)
        if found is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        self._touch(found[0])
        return found[0]

    def put(self, key, entry) -> None:
        """Stores an entry (or UNCACHEABLE), evicting the least recently used beyond the capacity."""
        if entry is not UNCACHEABLE:
            entry.key = key
        self._store(key, entry)
        self._touch(entry)
        while self.weight > self.capacity and len(self._entries) > 1:
            _, (_, evicted) = self._entries.popitem(last=False)
            self.weight -= evicted

    def _store(self, key, entry) -> None:
        """Stores an entry as the most recently used, in place of any under its key."""
        _, old = self._entries.pop(key, (None, 0))
        weight = 1 if entry is UNCACHEABLE else entry.weight
        self._entries[key] = (entry, weight)
        self.weight += weight - old

    def _touch(self, entry) -> None:
        """Stores what an entry references (again, if evicted while it was counted) as used after it.

        Every stored entry's references are then stored too and used later, so eviction takes an
        entry before anything it references: the stored weight bounds the memory held.
        """
        if entry is UNCACHEABLE:
            return
        for child in entry.children:
            if self._entries.get(child.key, (None,))[0] is child:
                self._entries.move_to_end(child.key)
            else:  # an equal entry under the same key may be stored in its place: counts are the same
                self._store(child.key, child)
            self._touch(child)

    def clear(self) -> None:
        """Forgets every entry and resets the counts."""
        self._entries.clear()
        self.weight = self.hits = self.misses = 0


SHARED = Memo()  # the process-wide memo sweeps count through


def _plain(value):
    """`value` as hashable plain data tagged with its types (so 1, 1.0 and True differ), or None."""
    if type(value) in _ATOMS:  # the common case first: keys are built for every call
        return (type(value), value)
    if isinstance(value, (tuple, list)):
        items = tuple(_plain(v) for v in value)
        return None if None in items else (type(value), items)
    if isinstance(value, dict):
        items = tuple((_plain(k), _plain(v)) for k, v in value.items())
        return None if any(None in kv for kv in items) else (dict, tuple(sorted(items, key=repr)))
    if isinstance(value, _PLAIN_TYPES):  # functions and classes compare by identity: the key keeps them alive
        return (type(value), value)
    return None


def _cacheable(module: nn.Module) -> bool:
    """Whether a bound submodule's calls may be memoised: a compact cached class inside no opaque module.

    Inside a module the paper costs as a whole its equations' paper counts are dropped, which
    a stored count would not know; the opaque module itself is exact, as its standalone count
    is opaque at its root. A module with its own `setup` creates variables before the call.
    """
    cls = type(module)
    if not (cls.__module__.startswith(COMPOSITE_PACKAGE) or isinstance(module, LEAF_MODULES)):
        return False
    if cls.setup is not nn.Module.setup:
        return False
    parent = module.parent
    while isinstance(parent, nn.Module):
        if rules.paper_module_cost(parent) is not None:
            return False
        parent = parent.parent
    return True


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    """A module class's configuration fields: its dataclass fields but the parent and name."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.name not in ("parent", "name"))


def _call_key(module: nn.Module, args, kwargs):
    """(key, argument leaves, their tree, positions of the traced arrays), or None when not cacheable."""
    fields = _plain(tuple((name, getattr(module, name)) for name in _field_names(type(module))))
    if fields is None:
        return None
    leaves, tree = jax.tree.flatten((args, kwargs))
    parts, arrays = [], []
    for i, leaf in enumerate(leaves):
        if isinstance(leaf, jax.core.Tracer):
            arrays.append(i)
            parts.append((jax.core.Tracer, leaf.aval.shape, leaf.aval.dtype, leaf.aval.weak_type))
        elif (part := _plain(leaf)) is not None:
            parts.append(part)
        else:  # a concrete array (its values matter) or an object of unknown meaning
            return None
    if len({id(leaves[i]) for i in arrays}) < len(arrays):
        return None  # one value passed twice is freed once inline: a profile of distinct inputs would not fit
    return (type(module), fields, tree, tuple(parts)), leaves, tree, arrays


def answer(memo: Memo, count_call: Callable, next_fun, args, kwargs, context, calls: list):
    """A submodule call's output: from the memo (counted standalone by `count_call` on a miss), else run inline.

    An answered call is noted in `calls` as Answered, for its inner calls and its variables.
    """
    module = context.module
    found = _call_key(module, args, kwargs) if _cacheable(module) else None
    if found is None:
        return next_fun(*args, **kwargs)
    key, leaves, tree, arrays = found
    entry = memo.get(key)
    if entry is None:
        standalone = list(leaves)
        for i in arrays:
            aval = leaves[i].aval
            standalone[i] = jax.ShapeDtypeStruct(aval.shape, aval.dtype, weak_type=aval.weak_type)
        s_args, s_kwargs = jax.tree.unflatten(tree, standalone)
        try:
            entry = count_call(module.clone(parent=None, name=None), s_args, s_kwargs, memo)
        except Exception:  # pylint: disable=broad-except
            # It may fail only outside its caller; inlined, the call raises its own error, if any.
            entry = None
        entry = UNCACHEABLE if entry is None else entry
        memo.put(key, entry)
    if entry is UNCACHEABLE:
        return next_fun(*args, **kwargs)
    outs = memoised_call_p.bind(*(leaves[arrays[j]] for j in entry.used), entry=entry)
    calls.append(Answered(module.path, entry))
    return jax.tree.unflatten(entry.out_tree, outs)


def with_answers(variables: dict, calls) -> dict:
    """A trace's variables with those of the calls the memo answered put back under their paths."""
    variables = dict(variables)
    for call in calls:
        if isinstance(call, Answered):
            for collection, tree in call.entry.variables.items():
                variables[collection] = _inserted(variables.get(collection, {}), call.path, tree)
    return variables


def _inserted(tree: dict, path: tuple, subtree):
    """A copy of a nested dict with `subtree` at `path`."""
    if not path:
        return subtree
    copy = dict(tree)
    copy[path[0]] = _inserted(tree.get(path[0], {}), path[1:], subtree)
    return copy
