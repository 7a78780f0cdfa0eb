"""Counting rules: what one jaxpr equation costs, and the conventions built from those costs.

The one place each convention is defined:

- ``macs``: multiply-accumulates of convolutions and dense layers (``dot_general``), padded
  taps included. The convention of torchvision's "GFLOPS", fvcore and pycls.
- ``flops``: 2 per multiply-accumulate plus 1 per elementwise arithmetic operation, per
  reduction step (a sum of n values is n - 1 additions) and per pooling-window step, as
  XLA's HloCostAnalysis counts them. Transcendental functions (exp, log, rsqrt, pow, tanh...)
  are counted apart, as XLA does, in ``transcendentals``. With ``real_taps`` only the kernel
  taps that fall on real input (not zero padding, not dilation holes) are counted: XLA's
  cost analysis, and so Flax's ``tabulate(compute_flops=True)``.
- ``paper``: the 2016 Torch op counter of Canziani et al.: a multiply-add is 2 operations;
  a bias adds 1 per output; additions and ReLU (max) cost 1 per element per full-size input
  (so a residual sum of two tensors is 2 per element); max and average pooling cost the
  window size per output; global pooling costs 1 per input element; PReLU costs 1 per
  element; BatchNorm and dropout cost nothing, nor does data movement. With
  ``dense_groups`` grouped convolutions count as dense, as that counter did (AlexNet's
  2.26 G-Ops).

Activations follow pycls's complexity rules: the output elements of convolutions, dense
layers (``dot_general``) and pooling windows. A window across the feature (last) axis is not
pooling: LRN's sum of squares over neighbouring channels normalises, and pycls counts no
activations for normalisation, elementwise layers or global pooling (a reduction).

What agrees with XLA, exactly: ``flops`` with ``real_taps``, and ``transcendentals``, equal
the ``flops`` and ``transcendentals`` of ``jax.jit(f).lower(*args).cost_analysis()``, the
lowered program that Flax's tabulate reads, for a program without loops or dead code, with
float32 data, whose primitives all have a rule that agrees (tests/test_cost_rules.py checks
each one). Where XLA's count is fixed by how JAX lowers a primitive, the rule follows it:
clamp is 1 flop; ``x ** y`` the multiplications of binary exponentiation, plus a division
when y < 0; logistic 1 / (1 + exp(-x)), 3 flops and 1 transcendental; exp2 exp(x ln 2), 1
and 1; argmax and argmin 9 flops per step of their (value, index) comparator on floats, 7 on
integers; sort n ceil(log2 n) for n elements; a conversion that changes only the weak type
costs nothing. Compiling first changes XLA's count (its rewrites: AlexNet +0.07 % on CPU).
Where the counts differ, and why:

- Parameter-only arithmetic: ``count_module`` counts the forward pass from a trace of init
  and skips what depends on parameters alone, which inference can fold away: BatchNorm's
  scale * rsqrt(var + eps), 2 flops and 1 transcendental per channel, is in XLA's program of
  ``apply`` and not here. ``count_function`` of ``apply`` counts it.
- Loops: XLA counts a while loop's body and condition once (``scan`` and ``fori_loop``
  lower to one); here the body counts once per trip where the trip count is static. A scan
  of length 10 over a 2-flop body on n elements: 20 n here, 2 n + 2 in XLA (its counter).
- ``cond``: XLA takes each count's maximum over the branches; here the branch with the most
  flops counts, with its own transcendentals.
- Cumulative reductions (cumsum, cumprod, cummax, cummin): 1 flop per output here. JAX lowers
  them to a window over the whole axis, which XLA counts as n - 1 steps per output on an
  axis of n (cumlogsumexp: 8 flops and 2 transcendentals per step).
- Functions XLA has no instruction for (erfc, erf_inv, lgamma, digamma, igamma, igammac,
  acos, asin, acosh, asinh, atanh, cosh, sinh): 1 transcendental per element here; XLA
  counts the polynomial JAX expands them into (lgamma: 53 flops and 4 transcendentals per
  float32 element). nextafter: 1 flop here, 24 in XLA.
- Random bits: free here, no arithmetic on data; on CPU XLA counts the Threefry hash JAX
  emits, 29 integer operations per 32-bit word.
- Dead code: every equation of the jaxpr counts here; XLA's conversion to HLO drops what no
  output uses (a gradient's unused forward values, a no-op pad and its scalar pad value).
- Rounding: XLA adds its counts in 32-bit floats, so totals above 2**24 are rounded (an add
  over 2**24 + 1 elements reads 2**24); on the 14 networks by under 1e-5 relative.
- Primitives without a rule here (top_k, linear algebra...) count nothing and are listed in
  ``unknown_primitives``.
"""

import dataclasses
import math
from typing import Optional

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from core.errors import UserError
from models import layers

CONVENTIONS = ("macs", "flops", "paper")

# Flax module classes the paper's counter costed as one Torch module: operations inside
# them do not count on their own; the module costs `factor` per output element instead.
# Matched with isinstance, so a subclass costs like its base and a namesake does not.
PAPER_MODULE_COST = {nn.BatchNorm: 0, nn.LayerNorm: 0, nn.GroupNorm: 0, nn.Dropout: 0,
                     layers.PReLU: 1, nn.PReLU: 1}

ELEMENTWISE = frozenset("""
    abs add add_any and ceil clamp convert_element_type div eq floor ge gt is_finite le lt max min
    mul ne neg nextafter not or reduce_precision rem round select_n sign square sub xor shift_left
    shift_right_arithmetic shift_right_logical population_count imag real conj complex
    """.split())
TRANSCENDENTAL = frozenset("""
    acos acosh asin asinh atan atan2 atanh cbrt cos cosh digamma erf erf_inv erfc exp exp2 expm1
    igamma igammac lgamma log log1p logistic pow rsqrt sin sinh sqrt tan tanh
    """.split())
# Arithmetic JAX lowers around a transcendental, per element: 1 / (1 + exp(-x)) and exp(x ln 2).
TRANSCENDENTAL_FLOPS = {"logistic": 3, "exp2": 1}
REDUCTION = frozenset("reduce_sum reduce_max reduce_min reduce_prod reduce_and reduce_or "
                      "reduce_xor argmax argmin".split())
POOLING = frozenset("reduce_window_sum reduce_window_max reduce_window_min reduce_window".split())
CUMULATIVE = frozenset("cumsum cumprod cummax cummin cumlogsumexp".split())
# Data movement, constants, random bits and sharding annotations cost no arithmetic.
FREE = frozenset("""
    broadcast_in_dim bitcast_convert_type concatenate copy copy_p device_put dynamic_slice
    dynamic_update_slice expand_dims gather iota pad reshape rev scatter
    slice sharding_constraint split squeeze
    stop_gradient transpose random_bits random_fold_in random_seed random_split random_unwrap
    random_wrap threefry2x32 optimization_barrier mesh_cast pvary
    """.split())


def paper_module_cost(module) -> Optional[int]:
    """The paper's cost per output element of a module call, or None when its equations count."""
    for cls, factor in PAPER_MODULE_COST.items():
        if isinstance(module, cls):
            return factor
    return None


@dataclasses.dataclass(slots=True)
class Tally:
    """Costs accumulated over equations; every field is a count, multiplied by trip counts."""

    macs: int = 0
    macs_real_taps: int = 0
    macs_dense_groups: int = 0
    elementwise: int = 0  # XLA-style flops outside convolutions and dot products
    transcendentals: int = 0
    paper_other: int = 0  # paper-convention operations outside convolutions and dot products
    activations: int = 0
    equations: int = 0
    matmul_inputs: int = 0  # elements convolutions and dot products read as data: with the rest, a layer's shape
    tiled_window_taps: int = 0  # taps of windows that tile their input (stride = window): XLA:CPU's fast path

    def __iadd__(self, other: "Tally") -> "Tally":
        # Written out field by field: a sweep adds tallies millions of times, and a loop over the
        # fields costs several times the additions (tests/test_cost_rules.py checks every field is here).
        self.macs += other.macs
        self.macs_real_taps += other.macs_real_taps
        self.macs_dense_groups += other.macs_dense_groups
        self.elementwise += other.elementwise
        self.transcendentals += other.transcendentals
        self.paper_other += other.paper_other
        self.activations += other.activations
        self.equations += other.equations
        self.matmul_inputs += other.matmul_inputs
        self.tiled_window_taps += other.tiled_window_taps
        return self

    def scaled(self, factor: int) -> "Tally":
        """This tally repeated `factor` times (a loop body)."""
        return Tally(self.macs * factor, self.macs_real_taps * factor, self.macs_dense_groups * factor,
                     self.elementwise * factor, self.transcendentals * factor, self.paper_other * factor,
                     self.activations * factor, self.equations * factor, self.matmul_inputs * factor,
                     self.tiled_window_taps * factor)

    def ops(self, convention: str, real_taps: bool = False, dense_groups: bool = False) -> int:
        """The operation count under a named convention (see the module docstring)."""
        if convention == "macs":
            return self.macs
        if convention == "flops":
            return 2 * (self.macs_real_taps if real_taps else self.macs) + self.elementwise
        if convention == "paper":
            return 2 * (self.macs_dense_groups if dense_groups else self.macs) + self.paper_other
        raise UserError(f"unknown convention {convention!r}; choose one of: {', '.join(CONVENTIONS)}")


def size(aval) -> int:
    """Number of elements of an abstract value."""
    return math.prod(getattr(aval, "shape", ()))


def _real_taps(in_size, out_size, kernel, stride, pad_lo, lhs_dilation, rhs_dilation) -> int:
    """(output position, kernel tap) pairs along one axis whose input is real, not padding."""
    pos = np.arange(out_size)[:, None] * stride + np.arange(kernel)[None, :] * rhs_dilation - pad_lo
    real = (pos >= 0) & (pos % lhs_dilation == 0) & (pos // lhs_dilation < in_size)
    return int(real.sum())


def conv_tally(eqn) -> Tally:
    """MACs of `conv_general_dilated`: padded, real-tap (XLA) and grouped-as-dense counts."""
    lhs, rhs = (v.aval for v in eqn.invars[:2])
    out = eqn.outvars[0].aval
    p = eqn.params
    lhs_spec, rhs_spec, out_spec = p["dimension_numbers"]
    kernel = [rhs.shape[d] for d in rhs_spec[2:]]
    per_output = rhs.shape[rhs_spec[1]] * math.prod(kernel)
    macs = size(out) * per_output
    real = math.prod(
        _real_taps(lhs.shape[ld], out.shape[od], k, s, pad[0], ldil, rdil)
        for ld, od, k, s, pad, ldil, rdil in zip(lhs_spec[2:], out_spec[2:], kernel, p["window_strides"],
                                                p["padding"], p["lhs_dilation"], p["rhs_dilation"]))
    per_position = out.shape[out_spec[0]] * out.shape[out_spec[1]] * rhs.shape[rhs_spec[1]]
    groups = p["feature_group_count"]
    return Tally(macs=macs, macs_real_taps=per_position * real, macs_dense_groups=macs * groups,
                 activations=size(out), equations=1, matmul_inputs=size(lhs))


def dot_tally(eqn) -> Tally:
    """MACs of `dot_general`: every output element contracts the contracting dimensions."""
    (lhs_contract, _), _ = eqn.params["dimension_numbers"]
    lhs, out = eqn.invars[0].aval, eqn.outvars[0].aval
    macs = size(out) * math.prod(lhs.shape[d] for d in lhs_contract)
    return Tally(macs=macs, macs_real_taps=macs, macs_dense_groups=macs, activations=size(out), equations=1,
                 matmul_inputs=size(lhs))


def _full_size_data_inputs(eqn, is_static) -> int:
    """Inputs that are data of the output's full shape: a bias, a scalar or a constant is not one."""
    shape = eqn.outvars[0].aval.shape
    return sum(1 for v in eqn.invars if not is_static(v) and getattr(v.aval, "shape", ()) == shape)


def integer_pow_flops(y: int) -> int:
    """Operations of x ** y as JAX lowers it: binary exponentiation, then 1 / x^|y| when y < 0."""
    m = abs(y)
    if m == 0:
        return 0  # a constant 1
    return (m.bit_length() - 1) + (m.bit_count() - 1) + (y < 0)  # squarings, products, reciprocal


def elementwise_tally(eqn, is_static) -> Tally:
    """An elementwise primitive: 1 flop per output element (integer powers: one per operation)."""
    n = size(eqn.outvars[0].aval)
    name = eqn.primitive.name
    per_element = integer_pow_flops(eqn.params["y"]) if name == "integer_pow" else 1
    if name == "convert_element_type" and eqn.invars[0].aval.dtype == eqn.outvars[0].aval.dtype:
        per_element = 0  # only the weak type changes: JAX emits no instruction
    paper = n * _full_size_data_inputs(eqn, is_static) if name in ("add", "add_any", "max") else 0
    return Tally(elementwise=n * per_element, paper_other=paper, equations=1)


def pooling_tally(eqn) -> Tally:
    """A window reduction: XLA counts window - 1 steps per output, the paper the window size."""
    out = size(eqn.outvars[0].aval)
    dimensions = eqn.params["window_dimensions"]
    window = math.prod(dimensions)
    pools = dimensions[-1] == 1  # features are last in Flax; a window across them is LRN's, not pooling
    tiled = tuple(eqn.params["window_strides"]) == tuple(dimensions)  # 2x2 of stride 2: no tap read twice
    return Tally(elementwise=out * (window - 1), paper_other=out * window, activations=out if pools else 0,
                 equations=1, tiled_window_taps=out * window if tiled else 0)


def reduction_tally(eqn) -> Tally:
    """A reduction of n inputs to m outputs takes n - m steps; the paper counts n (global pooling)."""
    operand = eqn.invars[0].aval
    n, m = size(operand), size(eqn.outvars[0].aval)
    per_step = 1
    if eqn.primitive.name in ("argmax", "argmin"):
        # JAX reduces (value, index) pairs with a 9-operation comparator; XLA folds its NaN test on integers.
        per_step = 9 if jnp.issubdtype(operand.dtype, jnp.inexact) else 7
    return Tally(elementwise=(n - m) * per_step, paper_other=n, equations=1)


def sort_tally(eqn) -> Tally:
    """XLA's cost of a sort: n ceil(log2 n) comparisons for the n elements of its first operand."""
    n = size(eqn.invars[0].aval)
    return Tally(elementwise=n * (n - 1).bit_length() if n > 1 else 0, equations=1)


def select_and_scatter_tally(eqn) -> Tally:
    """The gradient of max pooling: one comparison per window tap of every output."""
    source = size(eqn.invars[0].aval)
    window = math.prod(eqn.params["window_dimensions"])
    return Tally(elementwise=source * window, equations=1)


def tally(eqn, is_static=lambda var: False):
    """The cost of one leaf equation, or None when no rule knows its primitive.

    `is_static(var)` tells values that do not depend on the data (parameters, constants).
    """
    name = eqn.primitive.name
    if name == "conv_general_dilated":
        return conv_tally(eqn)
    if name == "dot_general":
        return dot_tally(eqn)
    if name in ELEMENTWISE or name == "integer_pow":
        return elementwise_tally(eqn, is_static)
    if name in TRANSCENDENTAL:
        n = size(eqn.outvars[0].aval)
        return Tally(elementwise=n * TRANSCENDENTAL_FLOPS.get(name, 0), transcendentals=n, equations=1)
    if name in POOLING:
        return pooling_tally(eqn)
    if name in REDUCTION:
        return reduction_tally(eqn)
    if name in ("select_and_scatter_add", "select_and_gather_add"):
        return select_and_scatter_tally(eqn)
    if name in ("scatter-add", "scatter_add"):  # one addition per update element (a gather's gradient)
        return Tally(elementwise=size(eqn.invars[2].aval), equations=1)
    if name == "sort":
        return sort_tally(eqn)
    if name in CUMULATIVE:
        return Tally(elementwise=size(eqn.outvars[0].aval), equations=1)
    if name in FREE:
        return Tally(equations=1)
    return None
