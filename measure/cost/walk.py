"""A recursive walk over a jaxpr: every leaf equation with its module scope and trip count."""

import dataclasses
import itertools
from typing import Callable, Optional

from jax import extend

from measure.cost import memo, rules

Scope = tuple[str, ...]


@dataclasses.dataclass
class Breakdown:
    """Tallies of one walk: per module scope, per primitive, and what no rule covered.

    With `calls` a list, memoised calls are kept by reference, each at the position its
    tallies take among this breakdown's own (see `merge`): a memo entry's breakdown holds only
    its own rows. Without, a memoised call's tallies are added in.
    """

    per_scope: dict = dataclasses.field(default_factory=dict)  # Scope -> rules.Tally
    per_primitive: dict = dataclasses.field(default_factory=dict)  # primitive name -> rules.Tally
    unknown_primitives: dict = dataclasses.field(default_factory=dict)  # name -> equation count
    notes: list = dataclasses.field(default_factory=list)
    calls: Optional[list] = None  # (lengths of the four above then, scope, memo.Entry, times), in order

    def add(self, scope: Scope, primitive: str, tally: rules.Tally) -> None:
        """Adds one equation's tally under its scope and its primitive."""
        self.per_scope.setdefault(scope, rules.Tally()).__iadd__(tally)
        self.per_primitive.setdefault(primitive, rules.Tally()).__iadd__(tally)

    def add_call(self, entry, scope: Scope, times: int) -> None:
        """Adds a memoised call's tallies under `scope`, `times` over: by reference where calls are kept."""
        if self.calls is None:
            self.merge(entry.breakdown, scope, times)
        else:
            self.calls.append((self._lengths(), scope, entry, times))

    def _lengths(self) -> tuple[int, int, int, int]:
        """How many scopes, primitives, unknown primitives and notes this breakdown holds."""
        return len(self.per_scope), len(self.per_primitive), len(self.unknown_primitives), len(self.notes)

    def merge(self, other: "Breakdown", prefix: Scope = (), times: int = 1) -> None:
        """Adds every tally of another breakdown to this one, its scopes under `prefix`, `times` over.

        The calls `other` keeps are added where they were made, between its own rows, so that
        every scope, primitive and note first appears in the order a walk of the inlined
        equations gives.
        """
        if not other.calls:
            self._merge_rows(other, (0, 0, 0, 0), (None,) * 4, prefix, times)
            return
        start = (0, 0, 0, 0)
        for lengths, scope, entry, n in other.calls:
            self._merge_rows(other, start, lengths, prefix, times)
            self.merge(entry.breakdown, prefix + scope, times * n)
            start = lengths
        self._merge_rows(other, start, (None,) * 4, prefix, times)

    def _merge_rows(self, other: "Breakdown", start: tuple, stop: tuple, prefix: Scope, times: int) -> None:
        """Adds the rows of `other` from positions `start` to `stop` (None: the end) of each of its four."""
        for scope, t in itertools.islice(other.per_scope.items(), start[0], stop[0]):
            _add(self.per_scope, prefix + scope, t, times)
        for name, t in itertools.islice(other.per_primitive.items(), start[1], stop[1]):
            _add(self.per_primitive, name, t, times)
        for name, n in itertools.islice(other.unknown_primitives.items(), start[2], stop[2]):
            self.unknown_primitives[name] = self.unknown_primitives.get(name, 0) + n * times
        self.notes.extend(n for n in other.notes[start[3]:stop[3]] if n not in self.notes)

    def total(self) -> rules.Tally:
        """The sum over every scope (of a breakdown that keeps no calls)."""
        total = rules.Tally()
        for t in self.per_scope.values():
            total += t
        return total


def _add(tallies: dict, key, tally: rules.Tally, times: int) -> None:
    """Adds `times` x `tally` to the tally under `key`; a new key gets a copy (`tally` may be shared)."""
    mine = tallies.get(key)
    if mine is None:
        tallies[key] = tally.scaled(times)  # a copy even at times 1: `tally` may be shared
    else:
        mine += tally if times == 1 else tally.scaled(times)


def scope_names(name_stack) -> Scope:
    """The named scopes of an equation's name stack, transformations (jvp, transpose) dropped."""
    return tuple(s.name for s in name_stack.stack if type(s).__name__ == "Scope")


def _as_jaxpr(value):
    if isinstance(value, extend.core.ClosedJaxpr):
        return value.jaxpr
    return value if isinstance(value, extend.core.Jaxpr) else None


def _while_trip_count(eqn) -> Optional[int]:
    """The trip count of a `while` whose condition is `i < N` on a counter from literal to literal."""
    cond = eqn.params["cond_jaxpr"].jaxpr
    if len(cond.eqns) != 1 or cond.eqns[0].primitive.name != "lt":
        return None
    counter, bound = cond.eqns[0].invars
    if not isinstance(bound, extend.core.Literal) or counter not in cond.invars:
        return None
    carry_index = cond.invars.index(counter) - eqn.params["cond_nconsts"]
    init = eqn.invars[eqn.params["cond_nconsts"] + eqn.params["body_nconsts"] + carry_index]
    if not isinstance(init, extend.core.Literal):
        return None
    return max(0, int(bound.val) - int(init.val))


def walk(jaxpr, out: Breakdown, scope: Scope = (), times: int = 1,
         is_opaque: Callable[[Scope], bool] = lambda scope: False, static: frozenset = frozenset(),
         skip_static: bool = False) -> None:
    """Adds the tally of every leaf equation of `jaxpr` (recursively) into `out`.

    `times` multiplies everything (loop trip counts); scopes of nested jaxprs are relative to
    their calling equation. Equations inside an opaque scope keep their XLA-style counts but
    none of the paper's (the paper costs such a module as a whole). `static` holds the input
    variables that do not depend on the data (parameters); what is computed from them alone is
    static too, so that the paper's rules can tell a bias from a second data input. With
    `skip_static`, equations on static values alone are not counted: tracing `init` runs the
    forward pass, and what it computes from the RNG key alone is parameter initialisation.
    """
    static = set(static) | set(jaxpr.constvars)

    def is_static(var) -> bool:
        return isinstance(var, extend.core.Literal) or var in static

    for eqn in jaxpr.eqns:
        eqn_scope = scope + scope_names(eqn.source_info.name_stack)
        name = eqn.primitive.name
        if all(map(is_static, eqn.invars)):
            static.update(eqn.outvars)
            if skip_static:
                continue
        if (entry := memo.entry_of(eqn)) is not None:  # a call counted once, standalone
            if not skip_static or any(map(is_static, eqn.invars)):
                raise memo.Inexact("a memoised call reads static data: its inlined equations would not all count")
            out.add_call(entry, eqn_scope, times)
        elif name == "cond":
            branches = []
            for branch in eqn.params["branches"]:
                sub = Breakdown()
                walk(branch.jaxpr, sub, eqn_scope, times, is_opaque,
                     _inner_static(branch.jaxpr.invars, eqn.invars[1:], is_static), skip_static)
                branches.append(sub)
            out.merge(max(branches, key=lambda b: b.total().ops("flops")))
            _note(out, "cond: the most expensive branch is counted")
        elif name == "while":
            trips = _while_trip_count(eqn)
            if trips is None:
                trips = 1
                _note(out, "while: trip count unknown, its body is counted once")
            cond_n, body_n = eqn.params["cond_nconsts"], eqn.params["body_nconsts"]
            body, cond = eqn.params["body_jaxpr"].jaxpr, eqn.params["cond_jaxpr"].jaxpr
            carry = eqn.invars[cond_n + body_n:]
            walk(body, out, eqn_scope, times * trips, is_opaque,
                 _inner_static(body.invars, eqn.invars[cond_n:cond_n + body_n] + carry, is_static), skip_static)
            walk(cond, out, eqn_scope, times * trips, is_opaque,
                 _inner_static(cond.invars, eqn.invars[:cond_n] + carry, is_static), skip_static)
        elif (tally := rules.tally(eqn, is_static)) is not None:
            if is_opaque(eqn_scope):
                tally.paper_other = 0
            out.add(eqn_scope, name, tally.scaled(times) if times != 1 else tally)
        elif (body := call_body(eqn)) is not None:  # jit, custom_jvp/vjp, remat, scan...
            trips = eqn.params["length"] if name == "scan" else 1
            walk(body, out, eqn_scope, times * trips, is_opaque,
                 _inner_static(body.invars, eqn.invars, is_static), skip_static)
        else:
            out.unknown_primitives[name] = out.unknown_primitives.get(name, 0) + times


def _inner_static(inner_invars, outer_operands, is_static) -> frozenset:
    """The body's input variables bound to static operands of the calling equation."""
    return frozenset(v for v, operand in zip(inner_invars, outer_operands) if is_static(operand))


def call_body(eqn):
    """The body a call-like primitive runs (jit, custom_jvp/vjp, remat, shard_map...), if any."""
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):  # the primal body, not the derivative rules
        if (body := _as_jaxpr(eqn.params.get(key))) is not None:
            return body
    return None


def _note(out: Breakdown, note: str) -> None:
    if note not in out.notes:
        out.notes.append(note)
