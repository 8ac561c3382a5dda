"""How the reports write their numbers: rates, small percentages, points and durations."""

from __future__ import annotations


def fine(value: float) -> str:
    """A percentage or point figure: one decimal under 10, where bookings live (0.4%, not
    0%), whole numbers above; "5.0" reads as "5"."""
    if abs(value) >= 10:
        return str(round(value))
    text = f"{value:.1f}"
    return "0" if text in ("0.0", "-0.0") else text.removesuffix(".0")


def share(part: int, whole: int) -> str:
    """part / whole as a percentage for small rates (booking rates): "0.4%", "12%"."""
    return f"{fine(100 * part / whole)}%" if whole else "n/a"


def points(value: float) -> str:
    """A difference in percentage points: "1 point", "0.4 points", "12 points"."""
    shown = fine(abs(value))
    return f"{shown} point{'' if shown == '1' else 's'}"


def rate(part: int, whole: int, of: str) -> tuple[str, str]:
    """(a whole percentage, the fraction behind it) of `of`, or "n/a" and why."""
    if whole == 0:
        return "n/a", f"no {of} in this period"
    return f"{round(100 * part / whole)}%", f"{part:,} of {whole:,} {of}"


def format_seconds(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"

