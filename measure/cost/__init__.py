"""Analytical cost of JAX functions and Flax models, counted from the jaxpr without allocating."""

from measure.cost.count import Cost, LayerRow, count_function, count_model, count_module, count_variant
from measure.cost.rules import CONVENTIONS, Tally

__all__ = ["CONVENTIONS", "Cost", "LayerRow", "Tally", "count_function", "count_model", "count_module",
           "count_variant"]
