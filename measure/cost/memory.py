"""Liveness analysis over a jaxpr: the peak bytes of intermediate values alive at once.

The estimate is taken before XLA fuses anything, in program order: an upper bound on what a
fusing compiler keeps, and close to it for networks dominated by convolutions.
"""

import numpy as np
from jax import extend

from measure.cost import walk as walk_lib


def nbytes(aval) -> int:
    """Bytes of an abstract value (PRNG keys count as their 8-byte raw form)."""
    try:
        itemsize = np.dtype(aval.dtype).itemsize
    except TypeError:
        itemsize = 8
    return int(np.prod(aval.shape, dtype=np.int64)) * itemsize


def peak_live_bytes(jaxpr, static: frozenset = frozenset()) -> int:
    """Peak bytes of values created inside `jaxpr` that are alive together; its inputs excluded.

    Values computed from the `static` inputs alone (parameter initialisation in a traced `init`)
    are not activations and are left out.
    """
    last_use = {}
    for i, eqn in enumerate(jaxpr.eqns):
        for v in eqn.invars:
            if not isinstance(v, extend.core.Literal):
                last_use[v] = i
    for v in jaxpr.outvars:
        if not isinstance(v, extend.core.Literal):
            last_use[v] = len(jaxpr.eqns)
    inputs = set(jaxpr.invars) | set(jaxpr.constvars)
    static = set(static) | set(jaxpr.constvars)
    live = peak = 0
    for i, eqn in enumerate(jaxpr.eqns):
        if all(isinstance(v, extend.core.Literal) or v in static for v in eqn.invars):
            static.update(eqn.outvars)
            inputs.update(eqn.outvars)  # never counted, so never freed either
            continue
        produced = sum(nbytes(v.aval) for v in eqn.outvars)
        peak = max(peak, live + max(produced, _inner_peak(eqn)))
        live += produced
        # Values die after their last use; values never used die at once.
        dead = [v for v in eqn.outvars if last_use.get(v, i) == i]
        dead += [v for v in eqn.invars
                 if not isinstance(v, extend.core.Literal) and v not in inputs and last_use[v] == i]
        live -= sum(nbytes(v.aval) for v in set(dead))
    return peak


def _inner_peak(eqn) -> int:
    """Peak of a nested body (call, loop body, the largest branch), including its own outputs."""
    if eqn.primitive.name == "cond":
        return max(peak_live_bytes(b.jaxpr) for b in eqn.params["branches"])
    if eqn.primitive.name == "while":
        return peak_live_bytes(eqn.params["body_jaxpr"].jaxpr)
    body = walk_lib.call_body(eqn)
    return peak_live_bytes(body) if body is not None else 0
