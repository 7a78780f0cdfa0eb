"""Exercise checkers of the lessons: each compares a student's answer with what the project computes."""

import math


def verdict(ok: bool, hint: str) -> bool:
    """Prints whether an answer is right, with the hint when it is not; returns `ok`."""
    print("Correct." if ok else f"Not yet. Hint: {hint}")
    return ok


def close(answer, expected: float, rel: float = 0.05) -> bool:
    """Whether `answer` is a finite number within `rel` (relative) of `expected`."""
    try:
        value = float(answer)
    except (TypeError, ValueError):
        return False
    return math.isfinite(value) and math.isclose(value, expected, rel_tol=rel)
