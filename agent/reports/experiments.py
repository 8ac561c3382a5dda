"""Message experiments, weighed (pure: counts in, figures and plain notes out).

Per cell: the text-backs that left, the replies within the reply window, the *qualified*
replies (qualified_reply) and the bookings, each with its rate. Per factor (hook, CTA,
text, delay) the *main effect*: level B's rate minus level A's, every cell of a level
pooled (in a 2×2, hook B = cells BA and BB against AA and AB, so each effect is
measured over the other factor's two levels). Its 95% confidence interval is Newcombe's
hybrid score interval for a difference of two proportions (from each side's Wilson
interval; honest with few texts and rates near 0, where the plain normal interval is
not). An effect is called real only when the interval leaves out zero and each level
has at least MIN_SENDS texts.

The note says it plainly: too few texts for an effect of this size (with an estimate
of how many texts each level needs to tell the observed rates apart: a two-sided test
at 5% with 80% power), or not significant, or which level is better. Which rate
decides a factor follows the playbooks: a CTA that sends a booking link is judged by
bookings, anything else by replies (primary_metric).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from agent.reports import wording

Z95 = 1.959964  # two-sided 95%
Z_POWER = 0.841621  # 80% power
MIN_SENDS = 30  # per level, before any difference is called real
METRICS = {"replied": "reply rate", "qualified": "qualified reply rate",
           "booked": "booking rate"}
# the intents of a reply that count it as a qualified conversation (agent.rules.intents)
QUALIFYING_INTENTS = frozenset({"scheduling", "pricing", "emergency"})
FACTOR_LABELS = {"hook": "Hook", "cta": "CTA", "text": "Text", "delay": "Delay"}


def qualified_reply(intent: str | None) -> bool:
    """Whether a reply counts as a qualified conversation: its intent is scheduling,
    pricing or an emergency. (A staff "qualified" mark in the thread is to be ORed in
    here when it exists.)"""
    return intent in QUALIFYING_INTENTS


@dataclass(frozen=True)
class CellCounts:
    cell: str  # "A", "B", "AA".."BB"
    label: str  # "Hook A × CTA B", "30s"
    sent: int
    replied: int
    qualified: int
    booked: int

    def rate(self, metric: str) -> str:
        return wording.share(getattr(self, metric), self.sent)


def wilson(hits: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion; (0, 1) without data."""
    if n <= 0:
        return 0.0, 1.0
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def difference_interval(hits_a: int, n_a: int, hits_b: int,
                        n_b: int) -> tuple[float, float, float]:
    """B − A and its 95% interval (Newcombe's hybrid score method), as proportions."""
    p_a, p_b = hits_a / n_a, hits_b / n_b
    low_a, high_a = wilson(hits_a, n_a)
    low_b, high_b = wilson(hits_b, n_b)
    diff = p_b - p_a
    low = diff - math.sqrt((p_b - low_b) ** 2 + (high_a - p_a) ** 2)
    high = diff + math.sqrt((high_b - p_b) ** 2 + (p_a - low_a) ** 2)
    return diff, low, high


def sample_size(p_a: float, p_b: float) -> int | None:
    """Texts per level to tell rates p_a and p_b apart (two-sided 5%, power 80%);
    None when they are equal (no finite number would)."""
    if p_a == p_b:
        return None
    mean = (p_a + p_b) / 2
    top = (Z95 * math.sqrt(2 * mean * (1 - mean))
           + Z_POWER * math.sqrt(p_a * (1 - p_a) + p_b * (1 - p_b)))
    return math.ceil(top * top / (p_a - p_b) ** 2)


@dataclass(frozen=True)
class Effect:
    """The main effect of one factor on one rate: level B minus level A."""

    metric: str  # "replied" | "qualified" | "booked"
    sent_a: int
    hits_a: int
    sent_b: int
    hits_b: int
    points: float | None  # B − A in percentage points; None without texts on a side
    low: float | None  # the 95% interval, in points
    high: float | None
    significant: bool  # the interval leaves out 0 and each level has MIN_SENDS texts
    needed: int | None  # texts per level to tell the observed rates apart

    @property
    def shown(self) -> str:
        """"+12 points (95% CI +3 to +21)" or "n/a"."""
        if self.points is None or self.low is None or self.high is None:
            return "n/a"
        return (f"{self.points:+.1f} points (95% CI {self.low:+.1f} to {self.high:+.1f})")


def effect(metric: str, sent_a: int, hits_a: int, sent_b: int, hits_b: int) -> Effect:
    if sent_a == 0 or sent_b == 0:
        return Effect(metric, sent_a, hits_a, sent_b, hits_b, None, None, None, False, None)
    diff, low, high = difference_interval(hits_a, sent_a, hits_b, sent_b)
    significant = min(sent_a, sent_b) >= MIN_SENDS and (low > 0 or high < 0)
    return Effect(metric, sent_a, hits_a, sent_b, hits_b, 100 * diff, 100 * low, 100 * high,
                  significant, sample_size(hits_a / sent_a, hits_b / sent_b))


@dataclass(frozen=True)
class FactorResult:
    factor: str  # "hook" | "cta" | "text" | "delay"
    label: str
    primary: str  # the metric that decides it
    effects: tuple[Effect, ...]  # one per METRICS, in order
    winner: str | None  # "A" | "B" when the primary effect is real
    note: str


def primary_metric(factor: str, levels: Sequence[str | None]) -> str:
    """Which rate judges a factor: a CTA sending a booking link is judged by bookings,
    everything else by replies (the playbooks' advice)."""
    if factor == "cta" and any(level and "{booking_link}" in level for level in levels):
        return "booked"
    return "replied"


def _note(label: str, primary: Effect) -> tuple[str | None, str]:
    what = METRICS[primary.metric]
    if primary.points is None:
        return None, f"{label}: no texts on one side yet; keep the test running."
    sizes = f"{primary.sent_a:,} and {primary.sent_b:,} texts"
    level = label if label.isupper() else label.lower()
    need = (f" About {primary.needed:,} texts per {level} would tell these "
            f"{what}s apart." if primary.needed else "")
    if primary.significant:
        better = "B" if primary.points > 0 else "A"
        return better, (f"{label} {better} has the better {what} "
                        f"({wording.points(abs(primary.points))} with {sizes}; the 95% "
                        f"interval leaves out zero): unlikely to be chance.")
    if min(primary.sent_a, primary.sent_b) < MIN_SENDS or (
            primary.needed is not None
            and min(primary.sent_a, primary.sent_b) < primary.needed):
        return None, (f"{label}: too few texts for a difference this size ({sizes}); "
                      f"keep the test running.{need}")
    return None, (f"{label}: not significant ({sizes}; the 95% interval includes zero), "
                  f"so far the two do about the same.{need}")


def factor_result(factor: str, levels: Sequence[str | None],
                  cells: Iterable[CellCounts], position: int) -> FactorResult:
    """The main effect of the factor at `position` in the cell names ("AB": hook, CTA)."""
    pooled = {level: [0, 0, 0, 0] for level in "AB"}
    for counts in cells:
        side = pooled[counts.cell[position]]
        for i, value in enumerate((counts.sent, counts.replied, counts.qualified,
                                   counts.booked)):
            side[i] += value
    effects = tuple(effect(metric, pooled["A"][0], pooled["A"][1 + i], pooled["B"][0],
                           pooled["B"][1 + i]) for i, metric in enumerate(METRICS))
    primary = primary_metric(factor, levels)
    label = FACTOR_LABELS[factor]
    winner, note = _note(label, effects[list(METRICS).index(primary)])
    return FactorResult(factor, label, primary, effects, winner, note)


def factor_results(factors: Sequence[str], levels: Mapping[str, Sequence[str | None]],
                   cells: Sequence[CellCounts]) -> list[FactorResult]:
    return [factor_result(factor, levels.get(factor, ()), cells, position)
            for position, factor in enumerate(factors)]


def best_cell(results: Sequence[FactorResult], cells: Sequence[CellCounts]) -> str | None:
    """The cell to adopt: each factor's winner, its A where no winner is known yet; None
    while no factor has a result."""
    if not any(result.winner for result in results):
        return None
    return "".join(result.winner or "A" for result in results) if cells else None
