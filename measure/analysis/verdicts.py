"""The criteria of every verdict on a fit, for the main job's report and the explorer's alike."""

MIN_R2 = 0.8  # the least R² at which a fit is said to hold


def hyperbola_judged(fit) -> bool:
    """Whether a hyperbola fit can be judged: three parameters pass through any three points."""
    return fit.n > 3


def hyperbola_holds(fit) -> bool:
    """Whether a hyperbola fit holds: accuracy rises with the cost (k > 0) and R² ≥ MIN_R2."""
    return fit.k > 0 and fit.r2 >= MIN_R2


def hyperbola_failure(fit, x: str) -> str:
    """Why a hyperbola fit does not hold, against `x` (time, operations)."""
    return f"accuracy does not rise with {x}" if fit.k <= 0 else f"R² = {fit.r2:.3f} < {MIN_R2}"


def line_judged(fit) -> bool:
    """Whether a line fit can be judged: any line through two points has R² = 1."""
    return fit.n > 2


def line_holds(fit) -> bool:
    """Whether a line fit holds: R² ≥ MIN_R2."""
    return fit.r2 >= MIN_R2
