"""Flax definitions of the 14 ImageNet networks measured by Canziani et al. (2017)."""

from core.errors import UserError
from models.registry import (ModelSpec, abstract_variables, count_params, get, input_shape, knobs,
                             names, spec)
from models.variants import Variant, from_knobs, variant, variant_list

__all__ = ["ModelSpec", "abstract_variables", "count_params", "from_knobs", "get", "input_shape", "knobs",
           "names", "spec", "UserError", "Variant", "variant", "variant_list"]
