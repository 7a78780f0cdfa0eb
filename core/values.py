"""Plain values on command lines and progress lines: lists of numbers, name=low:high ranges, durations."""

import math

from core.errors import UserError


def numbers(flag: str, items: list[str], kind=float) -> tuple:
    """A list flag's items as finite numbers (integers with kind=int); UserError naming the flag."""
    try:
        parsed = tuple(kind(item) for item in items)
    except ValueError:
        parsed = None
    if parsed is None or not all(math.isfinite(n) for n in parsed):  # float() reads nan and inf
        raise UserError(f"--{flag} takes {'integers' if kind is int else 'finite numbers'}; got {','.join(items)}")
    return parsed


def positive_integers(flag: str, items: list[str]) -> tuple[int, ...]:
    """A list flag's items as distinct positive integers, ascending; UserError naming the flag."""
    try:
        parsed = tuple(int(item) for item in items)
    except ValueError:
        parsed = ()
    if not parsed or min(parsed) < 1:
        raise UserError(f"--{flag} takes positive integers; got {','.join(items)}")
    return tuple(sorted(set(parsed)))


def bounds(flag: str, item: str, example: str = "width=0.25:1") -> tuple:
    """(name, low, high) of a name=low:high item, an empty end as None; UserError naming the flag."""
    name, equals, rest = item.partition("=")
    low, colon, high = rest.partition(":")
    try:
        if not (name and equals and colon):
            raise ValueError
        ends = tuple(float(end) if end.strip() else None for end in (low, high))
    except ValueError:
        raise UserError(f"--{flag} item {item!r} is not name=low:high (e.g. {example})") from None
    for end in ends:
        if end is not None and not math.isfinite(end):  # nan and inf bound nothing
            raise UserError(f"--{flag} item {item!r}: {end} is not a finite number; give finite ends (e.g. {example})")
    return (name.strip(), *ends)


def format_duration(seconds: float) -> str:
    """Seconds as 1h02m03s or 2m03s (0m09s under a minute), for progress lines."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"
