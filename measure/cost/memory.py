"""Liveness analysis over a jaxpr: the peak bytes of intermediate values alive at once.

The estimate is taken before XLA fuses anything, in program order: an upper bound on what a
fusing compiler keeps, and close to it for networks dominated by convolutions.
"""

import math

import numpy as np
from jax import extend

from measure.cost import memo
from measure.cost import walk as walk_lib


def nbytes(aval) -> int:
    """Bytes of an abstract value (PRNG keys count as their 8-byte raw form)."""
    try:
        itemsize = np.dtype(aval.dtype).itemsize
    except TypeError:
        itemsize = 8
    return math.prod(aval.shape) * itemsize


def peak_live_bytes(jaxpr, static: frozenset = frozenset()) -> int:
    """Peak bytes of values created inside `jaxpr` that are alive together; its inputs excluded.

    Values computed from the `static` inputs alone (parameter initialisation in a traced `init`)
    are not activations and are left out.
    """
    return max((level for _, level, _ in _levels(jaxpr, static)), default=0)


def _last_uses(jaxpr) -> dict:
    """The index of the last equation reading each variable; the outputs' is one past the end."""
    last_use = {}
    for i, eqn in enumerate(jaxpr.eqns):
        for v in eqn.invars:
            if not isinstance(v, extend.core.Literal):
                last_use[v] = i
    for v in jaxpr.outvars:
        if not isinstance(v, extend.core.Literal):
            last_use[v] = len(jaxpr.eqns)
    return last_use


def _levels(jaxpr, static: frozenset = frozenset(), nested: bool = False, last_use=None):
    """(index, bytes alive, inputs dead by then) while each equation on data runs, in program order.

    The inputs of `jaxpr` are never counted; inside a memoised call one may already be dead,
    which matters to a caller that counts it. A memoised call yields one level per case of its
    stored profile; where that would not equal its inlined equations (inside a nested body, on
    static data, one value passed twice, an output never read) memo.Inexact is raised.
    """
    last_use = _last_uses(jaxpr) if last_use is None else last_use
    inputs = set(jaxpr.invars) | set(jaxpr.constvars)
    static = set(static) | set(jaxpr.constvars)
    live = 0
    for i, eqn in enumerate(jaxpr.eqns):
        if all(isinstance(v, extend.core.Literal) or v in static for v in eqn.invars):
            static.update(eqn.outvars)
            inputs.update(eqn.outvars)  # never counted, so never freed either
            continue
        produced = sum(nbytes(v.aval) for v in eqn.outvars)
        if (entry := memo.entry_of(eqn)) is not None:
            if (nested or any(isinstance(v, extend.core.Literal) or v in static for v in eqn.invars)
                    or len(set(eqn.invars)) < len(eqn.invars) or any(last_use.get(v, i) == i for v in eqn.outvars)):
                raise memo.Inexact(f"a memoised call at equation {i} cannot be composed exactly")
            last = [last_use[v] == i for v in eqn.invars]  # read no more after the call
            for level, dead in entry.points:
                freed = sum(entry.operand_bytes[j] for j in dead if last[j] and eqn.invars[j] not in inputs)
                yield i, live + level - freed, frozenset(eqn.invars[j] for j in dead
                                                         if last[j] and eqn.invars[j] in inputs)
        else:
            yield i, live + max(produced, _inner_peak(eqn)), frozenset()
        live += produced
        # Values die after their last use; values never used die at once.
        dead = [v for v in eqn.outvars if last_use.get(v, i) == i]
        dead += [v for v in eqn.invars
                 if not isinstance(v, extend.core.Literal) and v not in inputs and last_use[v] == i]
        live -= sum(nbytes(v.aval) for v in set(dead))


def call_profile(jaxpr, static: frozenset, outputs: int):
    """A memo.Entry's liveness fields for a traced call, or None where its outputs are not fresh data.

    The call's data inputs are the jaxpr's inputs other than `static`; its result is the first
    `outputs` outputs, the rest (variables) must be static. Returns (positions of the inputs its
    equations read, their bytes, the cases). A case is (the peak bytes alive, the inputs dead by
    then): an input the caller frees inline is subtracted from it.
    """
    last_use = _last_uses(jaxpr)
    data = [v for v in jaxpr.invars if v not in static]
    known = set(static) | set(jaxpr.constvars)
    for eqn in jaxpr.eqns:
        if all(isinstance(v, extend.core.Literal) or v in known for v in eqn.invars):
            known.update(eqn.outvars)
    result, rest = jaxpr.outvars[:outputs], jaxpr.outvars[outputs:]
    if (any(isinstance(v, extend.core.Literal) or v in known or v in data for v in result)
            or len(set(result)) < len(result)
            or not all(isinstance(v, extend.core.Literal) or v in known for v in rest)):
        return None
    used = [v for v in data if v in last_use]
    cases = {}
    for i, level, dead_inputs in _levels(jaxpr, static, last_use=last_use):
        dead = frozenset(j for j, v in enumerate(used) if last_use[v] < i or v in dead_inputs)
        cases[dead] = max(cases.get(dead, 0), level)
    return (tuple(data.index(v) for v in used), tuple(nbytes(v.aval) for v in used),
            tuple((level, dead) for dead, level in cases.items()))


def _inner_peak(eqn) -> int:
    """Peak of a nested body (call, loop body, the largest branch), including its own outputs."""
    if eqn.primitive.name == "cond":
        return max(_nested_peak(b.jaxpr) for b in eqn.params["branches"])
    if eqn.primitive.name == "while":
        return _nested_peak(eqn.params["body_jaxpr"].jaxpr)
    body = walk_lib.call_body(eqn)
    return _nested_peak(body) if body is not None else 0


def _nested_peak(jaxpr) -> int:
    """Peak live bytes of a nested body, where parameter initialisation is not told apart: no memoised call fits."""
    return max((level for _, level, _ in _levels(jaxpr, nested=True)), default=0)
