"""Checkers of lesson 2 (time on your device): answers recomputed with the cost module and the lesson's own fit."""

import numpy as np

import models
from lessons.checks import close, verdict
from measure import cost

GIGA = 1e9
FLOAT32_BYTES = np.dtype(np.float32).itemsize


def predicted_time_ms(answer, fit, variant: str) -> bool:
    """The time per image in ms that `fit` (ms per image against GFLOPs per image, batch 1) predicts for a variant."""
    counted = cost.count_variant(models.variant(variant))
    expected = float(fit.predict(counted.ops("flops") / GIGA))
    if not close(answer, expected, rel=0.01) and close(answer, float(fit.predict(counted.ops("macs") / GIGA)),
                                                     rel=0.01):
        return verdict(False, "the fit's x is GFLOPs (the flops convention), not GMACs")
    return verdict(close(answer, expected, rel=0.01),
                   f"count the variant's operations at its own resolution, cost.count_variant(models.variant("
                   f"'{variant}')).ops('flops'), in billions, and pass them to fit.predict")


def dense_layer_flops_per_byte(answer, batch_size: int = 16, network: str = "alexnet", layer: str = "fc6") -> bool:
    """FLOPs a layer performs per byte of its float32 weights in one call at `batch_size` (weights read once)."""
    row = next(row for row in cost.count_model(network, batch_size=batch_size).per_layer("flops", depth=1)
               if row.path == layer)
    expected = row.ops / (row.params * FLOAT32_BYTES)
    if batch_size > 1 and close(answer, expected / batch_size, rel=0.02):
        return verdict(False, f"that is batch 1's: at batch {batch_size} the call reads the weights once and "
                              f"uses them for every image")
    return verdict(close(answer, expected, rel=0.02),
                   f"each weight of a dense layer does one multiply-accumulate (2 FLOPs) per image; divide the "
                   f"layer's FLOPs at batch {batch_size} (per_layer('flops', depth=1) of a count at that batch "
                   f"size) by its parameters times {FLOAT32_BYTES} bytes")
