"""Costs of a JAX function or a Flax model, traced abstractly: nothing is allocated or run."""

import contextlib
import dataclasses
import functools
import itertools
import types
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import tree_util

import models
from core.errors import UserError
from measure.cost import memo as memo_lib
from measure.cost import memory, rules
from measure.cost import walk as walk_lib

Scope = walk_lib.Scope
TOP_LEVEL = "(top level)"


@dataclasses.dataclass
class LayerRow:
    """One row of the per-layer table: a module path and what it costs."""

    path: str
    ops: int
    params: int
    activations: int


@dataclasses.dataclass
class Cost:
    """The analytical cost of one traced function: operations, parameters, activations, memory."""

    breakdown: walk_lib.Breakdown
    input_bytes: int
    peak_activation_bytes: int
    scope_params: dict = dataclasses.field(default_factory=dict)  # Scope -> parameters
    param_bytes: int = 0
    batch_stats: int = 0
    batch_stats_bytes: int = 0
    model: Optional[str] = None
    batch_size: Optional[int] = None
    resolution: Optional[int] = None
    # The variables' shapes and dtypes as the trace made them: timing draws its weights for these
    # instead of tracing the network again.
    variables: Optional[dict] = dataclasses.field(default=None, repr=False, compare=False)
    # Output channels of each top-level submodule (stem, stages, head), in call order: the explorer's
    # realised configuration, read from this trace rather than another.
    module_channels: dict = dataclasses.field(default_factory=dict, compare=False)

    @functools.cached_property
    def total(self) -> rules.Tally:
        """The tally summed over every module."""
        return self.breakdown.total()

    @property
    def params(self) -> int:
        """Trainable parameters (BatchNorm scale and bias included, running statistics not)."""
        return sum(self.scope_params.values())

    @property
    def memory_bytes(self) -> int:
        """Footprint estimate for one inference: parameters, statistics, input, peak activations."""
        return self.param_bytes + self.batch_stats_bytes + self.input_bytes + self.peak_activation_bytes

    def ops(self, convention: str, real_taps: bool = False, dense_groups: bool = False) -> int:
        """Operations under a named convention (see measure.cost.rules)."""
        return self.total.ops(convention, real_taps, dense_groups)

    def per_layer(self, convention: str = "flops", depth: int = 2, sort_by: str = "order",
                  **options) -> list[LayerRow]:
        """Costs per module path, paths cut to `depth` levels, in execution order or sorted."""
        if sort_by not in ("order", "ops", "params", "activations", "path"):
            raise UserError(f"unknown sort key {sort_by!r}; choose order, ops, params, activations or path")
        rows: dict[Scope, LayerRow] = {}
        for scope, tally in self.breakdown.per_scope.items():
            row = _row(rows, scope[:depth])
            row.ops += tally.ops(convention, **options)
            row.activations += tally.activations
        for scope, n in self.scope_params.items():
            _row(rows, scope[:depth]).params += n
        ordered = list(rows.values())
        if sort_by == "path":
            ordered.sort(key=lambda r: r.path)
        elif sort_by != "order":
            ordered.sort(key=lambda r: -getattr(r, sort_by))
        return ordered

    def per_primitive(self, convention: str = "flops", **options) -> dict[str, int]:
        """Operations per primitive, most expensive first."""
        counts = {name: t.ops(convention, **options) for name, t in self.breakdown.per_primitive.items()}
        return dict(sorted(counts.items(), key=lambda kv: -kv[1]))

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary; every key names its unit or convention."""
        total = self.total
        return {
            "model": self.model, "batch_size": self.batch_size, "resolution": self.resolution,
            "params": self.params, "param_bytes": self.param_bytes, "batch_stats": self.batch_stats,
            "macs": total.ops("macs"), "flops": total.ops("flops"),
            "flops_real_taps": total.ops("flops", real_taps=True),
            "paper_ops": total.ops("paper"), "paper_ops_dense_groups": total.ops("paper", dense_groups=True),
            "transcendentals": total.transcendentals, "activations": total.activations,
            "peak_activation_bytes": self.peak_activation_bytes, "input_bytes": self.input_bytes,
            "memory_bytes": self.memory_bytes,
            "unknown_primitives": dict(self.breakdown.unknown_primitives), "notes": list(self.breakdown.notes),
        }


def every_count(cost: Cost) -> dict:
    """Every number a Cost reports, in every convention and option, tables in their order: for equality checks."""
    counts = cost.as_dict()
    counts.update(scope_params=list(cost.scope_params.items()), batch_stats_bytes=cost.batch_stats_bytes,
                  total=dataclasses.astuple(cost.total),
                  per_scope=[(scope, dataclasses.astuple(t)) for scope, t in cost.breakdown.per_scope.items()],
                  per_primitive=[(name, dataclasses.astuple(t)) for name, t in cost.breakdown.per_primitive.items()])
    for convention, real_taps, dense_groups in itertools.product(rules.CONVENTIONS, (False, True), (False, True)):
        options = {"real_taps": real_taps, "dense_groups": dense_groups}
        key = f"{convention} {options}"
        counts[f"ops {key}"] = cost.ops(convention, **options)
        counts[f"per_primitive {key}"] = list(cost.per_primitive(convention, **options).items())
        for depth in (2, max(map(len, cost.breakdown.per_scope), default=0)):
            counts[f"per_layer {depth} {key}"] = [dataclasses.astuple(row)
                                                  for row in cost.per_layer(convention, depth, **options)]
    return counts


def _row(rows: dict, scope: Scope) -> LayerRow:
    if scope not in rows:
        rows[scope] = LayerRow("/".join(scope) or TOP_LEVEL, 0, 0, 0)
    return rows[scope]


def _bytes(tree) -> int:
    return sum(memory.nbytes(leaf) for leaf in jax.tree.leaves(tree))


@contextlib.contextmanager
def _counting_trace():
    """What every counting trace runs under: Flax's named scopes on, its registration of plain fields off.

    The per-layer rows and the paper's module-level rules key on the scope Flax names around every
    module call, which it opens only when its `flax_profile` setting is on, whatever the user's
    FLAX_PROFILE says; the override restores the setting on exit. `_plain_fields_unregistered` says
    why the registration is skipped.
    """
    with nn.override_named_call(True), _plain_fields_unregistered():
        yield


_PLAIN_ATOMS = (type(None), bool, int, float, str, types.FunctionType, np.dtype)


def _plain_field(value) -> bool:
    """Whether a module field's value can hold no submodule: atoms, functions, classes and tuples of them."""
    kind = type(value)
    return kind in _PLAIN_ATOMS or isinstance(value, type) or (kind is tuple and all(map(_plain_field, value)))


@contextlib.contextmanager
def _plain_fields_unregistered():
    """Within: Flax's submodule registration skips the fields that can hold no submodule (`_plain_field`).

    Flax registers every field of every module it binds, twice (when the module is bound and when
    it is set up): it maps over the value in search of submodules and freezes it. For a plain value
    that finds nothing and changes nothing, yet it is the largest part of building a module, and a
    sweep builds tens of thousands. So while a count traces, Flax's private
    `Module._register_submodules` passes plain values by; where this Flax has no such method, or a
    count is already tracing, nothing changes. tests/test_cost_memo.py checks every count is the same.
    """
    register = getattr(nn.Module, "_register_submodules", None)
    if register is None or getattr(register, "skips_plain_fields", False):
        yield
        return

    def register_unless_plain(module, name, value):
        if not _plain_field(value):
            register(module, name, value)

    register_unless_plain.skips_plain_fields = True
    nn.Module._register_submodules = register_unless_plain
    try:
        yield
    finally:
        nn.Module._register_submodules = register


def count_function(fn, *args) -> Cost:
    """Costs of `fn` on abstract arguments (jax.ShapeDtypeStruct pytrees); no parameters known."""
    with _counting_trace():
        closed = jax.make_jaxpr(fn)(*args)
    breakdown = walk_lib.Breakdown()
    walk_lib.walk(closed.jaxpr, breakdown)
    return Cost(breakdown, input_bytes=_bytes(args), peak_activation_bytes=memory.peak_live_bytes(closed.jaxpr))


def _cross_entropy_step(module: nn.Module):
    """The training objective whose value and gradient a training step computes."""

    def loss(params, state, x, labels):
        out, _ = module.apply({"params": params, **state}, x, train=True,
                              rngs={"dropout": jax.random.key(0)}, mutable=list(state))
        outputs = out if isinstance(out, tuple) else (out,)
        log_probs = [jax.nn.log_softmax(o) for o in outputs]
        return -sum(jnp.take_along_axis(lp, labels[:, None], -1).mean() for lp in log_probs)

    return jax.value_and_grad(loss)


def _record_calls(calls: list, memo=None):
    """An interceptor noting every module call (a memo.Call) in `calls`.

    With a memo it answers the cacheable submodule calls from it, noting them as memo.Answered
    before their own call. Its trace's token is pushed on `_TRACES`: a memo miss traces the call
    standalone inside this trace, and that trace records its own calls.
    """
    token = object()

    def record(next_fun, args, kwargs, context):
        if _TRACES and _TRACES[-1] is not token:  # a nested trace's call, recorded by its own interceptor
            return next_fun(*args, **kwargs)
        if memo is not None and context.method_name == "__call__" and context.module.path:
            out = memo_lib.answer(memo, _count_call, next_fun, args, kwargs, context, calls)
        else:
            out = next_fun(*args, **kwargs)
        if context.method_name == "__call__":
            leaves = jax.tree.leaves(out)
            elements = sum(rules.size(leaf) for leaf in leaves)
            channels = int(leaves[0].shape[-1]) if leaves and leaves[0].ndim else 0
            calls.append(memo_lib.Call(context.module.path, type(context.module).__name__,
                                       rules.paper_module_cost(context.module), elements, channels))
        return out

    return token, record


_TRACES = []  # tokens of the eval traces in progress, innermost last


@dataclasses.dataclass
class _Trace:
    """One eval-mode trace of `init`: its jaxpr, output, variables and module calls in order."""

    closed: Any
    out: Any
    variables: dict  # the memoised calls' put back
    own_leaves: int  # how many variable leaves the trace itself created
    calls: list  # module calls and memo.Answered
    static: frozenset  # the RNG key
    arrays_out: bool  # whether the call returned traced arrays only


@functools.cache
def _abstract_key() -> jax.ShapeDtypeStruct:
    """The RNG key every trace of `init` takes, abstract: making a concrete key each time costs a dispatch."""
    return jax.eval_shape(jax.random.key, 0)


def _trace_eval(module: nn.Module, args: tuple, kwargs: dict, memo) -> _Trace:
    """Traces `module.init_with_output(key, *args, **kwargs)`; ShapeDtypeStruct leaves become its inputs."""
    leaves, tree = jax.tree.flatten((args, kwargs))
    positions = [i for i, leaf in enumerate(leaves) if isinstance(leaf, jax.ShapeDtypeStruct)]
    calls, arrays_out = [], []
    token, record = _record_calls(calls, memo)

    def init(key, *arrays):
        filled = list(leaves)
        for i, array in zip(positions, arrays):
            filled[i] = array
        call_args, call_kwargs = jax.tree.unflatten(tree, filled)
        out = module.init_with_output(key, *call_args, **call_kwargs)
        arrays_out.append(all(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(out[0])))
        return out

    _TRACES.append(token)
    try:
        with _counting_trace(), nn.intercept_methods(record):
            closed, (out, variables) = jax.make_jaxpr(init, return_shape=True)(
                _abstract_key(), *(leaves[i] for i in positions))
    finally:
        _TRACES.pop()
    return _Trace(closed, out, memo_lib.with_answers(variables, calls), len(jax.tree.leaves(variables)), calls,
                  frozenset(closed.jaxpr.invars[:1]), arrays_out[0])


def _walk(closed, calls: list, root: str, static: frozenset, train: bool, keep_calls: bool = False):
    """The tallies of a traced module per scope as the trace named them (under the root's class name).

    With `keep_calls` memoised calls are kept by reference (a memo entry's own rows).
    """
    opaque = {(root,) + call.path for call in memo_lib.paper_calls(calls)}
    raw = walk_lib.Breakdown(calls=[] if keep_calls else None)
    walk_lib.walk(closed.jaxpr, raw, static=static, skip_static=not train,
                  is_opaque=lambda scope: any(scope[:i] in opaque for i in range(1, len(scope) + 1)))
    return raw


def _eval_count(module: nn.Module, args: tuple, kwargs: dict, memo, measure, keep_calls: bool = False):
    """(trace, raw tallies, measure(trace)); counted again without the memo where it would be inexact."""
    try:
        traced = _trace_eval(module, args, kwargs, memo)
        raw = _walk(traced.closed, traced.calls, type(module).__name__, traced.static, False, keep_calls)
        return traced, raw, measure(traced)
    except memo_lib.Inexact:
        if memo is None:
            raise
        return _eval_count(module, args, kwargs, None, measure, keep_calls)


def _count_call(module: nn.Module, args: tuple, kwargs: dict, memo) -> Optional[memo_lib.Entry]:
    """A memo miss: the call counted standalone as an Entry, or None where it cannot be reproduced exactly."""
    traced, raw, profile = _eval_count(module, args, kwargs, memo, lambda traced: memory.call_profile(
        traced.closed.jaxpr, traced.static, len(jax.tree.leaves(traced.out))), keep_calls=True)
    root = (type(module).__name__,)
    if (profile is None or not traced.arrays_out
            or any(scope[:1] != root for scope in itertools.chain(raw.per_scope, (c[1] for c in raw.calls)))):
        return None
    relative = walk_lib.Breakdown({scope[1:]: t for scope, t in raw.per_scope.items()}, raw.per_primitive,
                                  raw.unknown_primitives, raw.notes,
                                  [(lengths, scope[1:], entry, n) for lengths, scope, entry, n in raw.calls])
    outs = traced.closed.jaxpr.outvars[:len(jax.tree.leaves(traced.out))]
    inner = tuple(c for c in traced.calls if isinstance(c, memo_lib.Answered) or c.path)  # its own call is the caller's
    return memo_lib.Entry(relative, inner, traced.variables, traced.own_leaves, jax.tree.structure(traced.out),
                          tuple(v.aval for v in outs), *profile)


def count_module(module: nn.Module, input_shape: tuple[int, ...], train: bool = False,
                 dtype=jnp.float32, memo: Optional[memo_lib.Memo] = None) -> Cost:
    """Costs of a Flax module's forward pass (or training step) on inputs of `input_shape`.

    The forward pass is counted from one trace of `init`, which runs it: what init computes
    from the RNG key alone (parameter initialisation, and parameter-only arithmetic such as
    BatchNorm's per-channel rsqrt(var + eps), which inference can fold away) is not counted.
    One trace instead of init + apply halves the time, which sweeps over variants feel.
    A `memo` (measure.cost.memo) counts each submodule call that repeats once, with the same
    counts; a training step does not use it.
    """
    x = jax.ShapeDtypeStruct(input_shape, dtype)
    root = type(module).__name__  # Flax names the outermost scope after the root module's class
    if train:
        calls = []
        variables = models.abstract_variables(module, input_shape, dtype)
        state = {k: v for k, v in variables.items() if k != "params"}
        labels = jax.ShapeDtypeStruct(input_shape[:1], jnp.int32)
        with _counting_trace(), nn.intercept_methods(_record_calls(calls)[1]):
            closed = jax.make_jaxpr(_cross_entropy_step(module))(variables.get("params", {}), state, x, labels)
        static = frozenset(closed.jaxpr.invars[:len(jax.tree.leaves(variables))])  # parameters are traced first
        raw = _walk(closed, calls, root, static, train)
        peak = memory.peak_live_bytes(closed.jaxpr)
    else:
        traced, raw, peak = _eval_count(module, (x,), {"train": False}, memo,
                                        lambda traced: memory.peak_live_bytes(traced.closed.jaxpr, traced.static))
        calls, variables = traced.calls, traced.variables

    breakdown = walk_lib.Breakdown(per_primitive=raw.per_primitive, unknown_primitives=raw.unknown_primitives,
                                   notes=raw.notes)
    for scope, tally in raw.per_scope.items():
        # The root module's own equations and those outside it (a training step's loss) share a row.
        relative = scope[1:] if scope[:1] == (root,) else scope
        if relative in breakdown.per_scope:
            breakdown.per_scope[relative] += tally
        else:  # the walk's own tally, not shared
            breakdown.per_scope[relative] = tally
    for call in memo_lib.paper_calls(calls):
        if not train and call.factor:
            breakdown.add(call.path, f"{call.kind} (module)", rules.Tally(paper_other=call.factor * call.elements))

    params = variables.get("params", {})  # a network without parameters has no collection
    state = {k: v for k, v in variables.items() if k != "params"}
    scope_params = {}
    for key_path, leaf in tree_util.tree_flatten_with_path(params)[0]:
        scope = tuple(k.key for k in key_path[:-1])
        scope_params[scope] = scope_params.get(scope, 0) + rules.size(leaf)
    channels = {}
    for call in calls:  # the trace's own: an answered call's inner calls are never top-level
        if isinstance(call, memo_lib.Call) and len(call.path) == 1:
            channels.setdefault(call.path[0], call.channels)
    return Cost(breakdown, input_bytes=memory.nbytes(x), scope_params=scope_params, peak_activation_bytes=peak,
                param_bytes=_bytes(params), batch_stats=sum(rules.size(leaf) for leaf in jax.tree.leaves(state)),
                batch_stats_bytes=_bytes(state), variables=variables, module_channels=channels)


def count_variant(variant: models.Variant, batch_size: int = 1, train: bool = False, dtype=jnp.float32,
                  memo: Optional[memo_lib.Memo] = None) -> Cost:
    """Costs of a variant (a network with its knobs and resolution) at a batch size (a memo: see count_module)."""
    shape = variant.input_shape(batch_size)
    cost = count_module(variant.module(), shape, train=train, dtype=dtype, memo=memo)
    cost.model, cost.batch_size, cost.resolution = str(variant), batch_size, shape[1]
    return cost


def count_model(name: str, batch_size: int = 1, resolution: Optional[int] = None, train: bool = False,
                dtype=jnp.float32, memo: Optional[memo_lib.Memo] = None, **overrides) -> Cost:
    """Costs of a registered network at a batch size, resolution and knob overrides: `count_variant` of that variant."""
    return count_variant(models.from_knobs(name, resolution, **overrides), batch_size, train, dtype, memo)
