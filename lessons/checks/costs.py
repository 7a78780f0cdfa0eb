"""Checkers of lesson 1 (what a network costs): each answer is recomputed with the cost module."""

import jax
import jax.numpy as jnp

from lessons.checks import close, verdict
from measure import cost

GIGA = 1e9
FULLY_CONNECTED = ("fc6", "fc7", "fc8")  # AlexNet's and VGG's dense layers, as their modules are named


def conv_macs(answer, side: int = 56, in_channels: int = 64, out_channels: int = 128, kernel: int = 3) -> bool:
    """Multiply-accumulates of one kernel x kernel convolution, stride 1, 'SAME' padding, on a side x side input."""
    image = jax.ShapeDtypeStruct((1, side, side, in_channels), jnp.float32)
    weights = jax.ShapeDtypeStruct((kernel, kernel, in_channels, out_channels), jnp.float32)

    def convolution(x, w):
        """The convolution the question describes."""
        return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    expected = cost.count_function(convolution, image, weights).ops("macs")
    return verdict(close(answer, expected, rel=1e-6),
                   "every output element (side x side positions x out_channels) takes kernel x kernel x "
                   "in_channels multiply-accumulates; 'SAME' padding at stride 1 keeps the output as large as the "
                   "input, and padded taps count (the macs convention)")


def dense_parameter_share(answer, network: str = "vgg16") -> bool:
    """The fraction (0 to 1) of a network's parameters in its fully connected layers fc6, fc7 and fc8."""
    rows = cost.count_model(network).per_layer("macs", depth=1)
    total = sum(row.params for row in rows)
    expected = sum(row.params for row in rows if row.path in FULLY_CONNECTED) / total
    if close(answer, 100 * expected, rel=0.01):
        return verdict(False, "that looks like a percentage: give a fraction between 0 and 1")
    return verdict(close(answer, expected, rel=0.01),
                   f"add the params column of fc6, fc7 and fc8 in {network}'s per-layer table "
                   "(cost.count_model(...).per_layer('macs', depth=1)) and divide by the network's parameters")


def xla_gflops(answer, network: str = "resnet50") -> bool:
    """A network's forward-pass GFLOPs per image as XLA's cost analysis (and so Flax's tabulate) counts them."""
    counted = cost.count_model(network)
    expected = counted.ops("flops", real_taps=True) / GIGA
    others = {"MACs (torchvision's 'GFLOPS')": counted.ops("macs"),
              "FLOPs with padded taps (XLA skips the taps on zero padding: real_taps=True)": counted.ops("flops"),
              "the paper's operations (its 2016 Torch counter)": counted.ops("paper", dense_groups=True)}
    for name, count in others.items():
        if not close(answer, expected, rel=0.002) and close(answer, count / GIGA, rel=0.002):
            return verdict(False, f"that is {name}, not what XLA counts")
    return verdict(close(answer, expected, rel=0.01),
                   "XLA counts 2 flops per multiply-accumulate on real input only, plus 1 per elementwise "
                   "operation: cost.count_model(...).ops('flops', real_taps=True), in billions")
