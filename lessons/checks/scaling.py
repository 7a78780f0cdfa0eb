"""Checkers of lesson 4 (width, depth and resolution): each answer is recounted with the cost module."""

from explore import space
from lessons.checks import close, verdict
from measure import cost
from models import variants


def _flops_ratio(variant: variants.Variant, base: str) -> float:
    """FLOPs per image of `variant` over those of the network `base`, at batch 1."""
    return cost.count_variant(variant).ops("flops") / cost.count_model(base).ops("flops")


def _scaled(base: str, rule: str, step: float) -> variants.Variant:
    """The base network scaled by one step of a rule (explore.space.scaling)."""
    (scaled,) = space.scaling(base, rule, steps=(step,)).values()
    return scaled


def width_flops_ratio(answer, base: str = "resnet34", factor: float = 2.0) -> bool:
    """How many times the FLOPs per image grow when the network's width is multiplied by `factor`."""
    expected = _flops_ratio(_scaled(base, "width", factor), base)
    return verdict(close(answer, expected, rel=0.1),
                   "width multiplies both the input and the output channels of every convolution, and a "
                   "convolution's multiply-accumulates are (output positions) x (kernel taps) x (input channels) x "
                   "(output channels)")


def width_and_resolution_flops_ratio(answer, base: str = "resnet34", width_factor: float = 2.0,
                                     resolution_factor: float = 0.5) -> bool:
    """FLOPs per image of the base with its width and its input side both scaled, over its own."""
    wider, resized = _scaled(base, "width", width_factor), _scaled(base, "resolution", resolution_factor)
    both = variants.from_knobs(base, resized.resolution, **dict(wider.knobs))
    expected = _flops_ratio(both, base)
    return verdict(close(answer, expected, rel=0.1),
                   "the two knobs multiply: FLOPs grow with the square of the width and with the square of the "
                   "input side (the number of output positions)")


def compound_flops_per_phi(answer) -> bool:
    """By EfficientNet's rule, the factor FLOPs grow by for each step of phi (alpha x beta^2 x gamma^2)."""
    alpha, beta, gamma = (space.COMPOUND[knob] for knob in ("depth", "width", "resolution"))
    if close(answer, alpha * beta * gamma, rel=0.01):
        return verdict(False, "that multiplies the three factors once each; FLOPs grow linearly with depth but "
                              "with the square of the width and of the resolution")
    return verdict(close(answer, space.compound_growth(), rel=0.02),
                   f"each step of phi multiplies depth by {alpha}, width by {beta} and resolution by {gamma} "
                   "(explore.space.COMPOUND); FLOPs grow with depth, with width squared and with resolution squared")
