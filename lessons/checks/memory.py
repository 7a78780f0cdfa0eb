"""Checkers of lesson 3 (memory): answers recomputed from the cost module's memory estimates."""

import functools

from lessons.checks import close, verdict
from measure import cost


def crossover_batch(answer, network: str = "vgg16") -> bool:
    """The smallest batch at which a network's input and live activations take more bytes than its weights."""
    one = cost.count_model(network)
    weights = one.param_bytes + one.batch_stats_bytes
    per_image = one.input_bytes + one.peak_activation_bytes  # both scale exactly with the batch in inference
    expected = weights // per_image + 1
    return verdict(close(answer, expected, rel=1e-9),
                   "at batch 1 take the weights' bytes (param_bytes + batch_stats_bytes) and the bytes each image "
                   "adds (input_bytes + peak_activation_bytes): the first batch whose images add more than the "
                   "weights, a whole number")


@functools.cache  # a student's second try, and the hint's look at the other mode, count nothing again
def largest_batch_within(network: str, budget_bytes: float, train: bool = False) -> int:
    """The largest batch whose analytical memory (Cost.memory_bytes) is within the budget; 0 when batch 1 is not.

    Memory is near-linear in the batch, so each guess is the secant through the last two counts, kept strictly
    between the largest batch known to fit and the smallest known not to: a few counts, and an exact answer.
    """
    def memory(batch_size: int) -> int:
        """The analytical memory at a batch size, in bytes."""
        return cost.count_model(network, batch_size=batch_size, train=train).memory_bytes

    fits, too_big = 1, None
    previous = (1, memory(1))
    if previous[1] > budget_bytes:
        return 0
    current = (2, memory(2))
    while True:
        batch_size, used = current
        if used <= budget_bytes:
            fits = max(fits, batch_size)
        else:
            too_big = batch_size if too_big is None else min(too_big, batch_size)
        if too_big is not None and too_big - fits <= 1:
            return fits
        slope = (used - previous[1]) / (batch_size - previous[0])
        guess = batch_size + int((budget_bytes - used) // slope) if slope > 0 else 2 * fits
        guess = max(guess, fits + 1)
        if too_big is not None:
            guess = min(guess, too_big - 1)
        previous, current = current, (guess, memory(guess))


def largest_batch(answer, network: str = "resnet50", budget_gib: float = 1.0, train: bool = False) -> bool:
    """The largest batch of a network whose analytical memory fits in `budget_gib` GiB: inference or a training step."""
    budget_bytes = budget_gib * 2**30
    expected = largest_batch_within(network, budget_bytes, train)
    if close(answer, expected, rel=1e-9):
        return verdict(True, "")
    # A training step keeps more per image, so only a smaller number can be its answer (counting it takes seconds).
    try:
        smaller = 0 < float(answer) < expected
    except (TypeError, ValueError):
        smaller = False
    if not train and smaller and close(answer, largest_batch_within(network, budget_bytes, train=True), rel=1e-9):
        return verdict(False, "that is a training step's batch: this question is about inference (train=False)")
    mode = "a training step" if train else "inference"
    return verdict(False, f"memory_bytes of cost.count_model('{network}', batch_size=b"
                          f"{', train=True' if train else ''}) grows with b ({mode}); find the largest b at which it "
                          f"is at most {budget_gib:g} * 2**30 bytes")
