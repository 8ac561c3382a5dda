"""A/B tests of the text-backs (templates.*_b): is variant B really doing better than A?

A/B tests (templates.*_b): for each template and variant, the period's text-backs
that left, the replies within 7 days and the bookings (as in agent.reports.kpis), the
lift of B over A in percentage points and relative to A, and a two-sided
two-proportion z-test. A result is called trustworthy only with at least 30 texts in
each variant and p <= 0.05; otherwise the page says it may be chance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from agent.reports import wording

VARIANTS = ("A", "B")  # agent.calls.policy.Variant
TESTED_TEMPLATES = {"templates.business_hours": "Business hours",
                    "templates.after_hours": "After hours",
                    "templates.voicemail": "Voicemail"}
# an A/B result is trusted with at least this many texts per variant and p <= ALPHA
MIN_TEST_TEXTS = 30
ALPHA = 0.05
# how the tests are counted, as the page explains it
DEFINITION = (
    "A/B tests", "texts that left, per text and variant; replies within 7 days and "
    "bookings as above. The lift is B minus A in points and relative to A. A difference "
    f"is called real only with at least {MIN_TEST_TEXTS} texts in each variant and a "
    f"two-proportion z-test p-value of {ALPHA} or less.")


@dataclass(frozen=True)
class Comparison:
    """B against A on one rate (replies or bookings): the lift and whether to trust it."""

    points: float | None  # B − A in percentage points; None without texts on one side
    relative: float | None  # (B − A) / A in percent; None when A is 0
    p_value: float | None  # two-sided two-proportion z-test
    trustworthy: bool  # enough texts and p <= ALPHA
    note: str  # what it means, in a sentence

    @property
    def lift(self) -> str:
        """The lift as the table shows it: "+12 points (+40%)", "-3 points" or "n/a"."""
        if self.points is None:
            return "n/a"
        if wording.fine(self.points) == "0":
            text = "0 points"
        else:
            text = f"{'+' if self.points > 0 else '-'}{wording.points(self.points)}"
        if self.relative is not None:
            relative = round(self.relative)
            text += f" ({relative:+d}%)" if relative else " (0%)"
        return text


def two_proportion_p(hits_a: int, n_a: int, hits_b: int, n_b: int) -> float:
    """Two-sided p-value of a pooled two-proportion z-test (H0: both rates equal).

    p = 2 (1 − Φ(|z|)) with Φ(z) = (1 + erf(z / √2)) / 2, so p = 1 − erf(|z| / √2).
    Needs texts on both sides; 1.0 when the pooled rate is 0 or 1 (no spread at all).
    """
    if n_a <= 0 or n_b <= 0:
        raise ValueError("both variants need at least one text")
    pooled = (hits_a + hits_b) / (n_a + n_b)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if spread == 0:
        return 1.0
    z = (hits_b / n_b - hits_a / n_a) / spread
    return max(0.0, 1 - math.erf(abs(z) / math.sqrt(2)))


def compare(n_a: int, hits_a: int, n_b: int, hits_b: int) -> Comparison:
    """B against A, with a plain note that says when the difference may be chance."""
    if n_a == 0 or n_b == 0:
        missing = " and ".join(name for name, n in (("A", n_a), ("B", n_b)) if n == 0)
        return Comparison(None, None, None, False,
                          f"No texts with {missing} in this period yet; keep the test running.")
    rate_a, rate_b = hits_a / n_a, hits_b / n_b
    points = 100 * (rate_b - rate_a)
    relative = 100 * (rate_b - rate_a) / rate_a if rate_a else None
    p = two_proportion_p(hits_a, n_a, hits_b, n_b)
    trustworthy = min(n_a, n_b) >= MIN_TEST_TEXTS and p <= ALPHA
    gap = f"{wording.points(points)} {'better' if points > 0 else 'worse'}"
    sizes = f"{n_a:,} and {n_b:,} texts"
    chance = "p < 0.001" if p < 0.001 else f"p = {p:.3f}"
    if wording.fine(points) == "0":
        note = f"A and B do about the same so far ({sizes})."
        if min(n_a, n_b) < MIN_TEST_TEXTS:
            note += " Keep the test running."
    elif min(n_a, n_b) < MIN_TEST_TEXTS:
        note = f"B looks {gap}, but with {sizes} this may be chance; keep the test running."
    elif not trustworthy:
        note = (f"B looks {gap}, but with {sizes} this may still be chance (p = {p:.2f}); "
                "keep the test running.")
    else:
        advice = "consider making B the main text" if points > 0 else "consider ending the test"
        note = f"B is {gap} with {sizes} ({chance}): unlikely to be chance; {advice}."
    return Comparison(points, relative, p, trustworthy, note)


@dataclass(frozen=True)
class Arm:
    """One variant of one template in the period."""

    variant: str
    sent: int
    replied: int
    booked: int

    @property
    def reply_rate(self) -> str:
        return wording.share(self.replied, self.sent)

    @property
    def booking_rate(self) -> str:
        return wording.share(self.booked, self.sent)


@dataclass(frozen=True)
class AbTest:
    key: str  # "templates.business_hours"
    label: str  # "Business hours"
    a: Arm
    b: Arm
    replies: Comparison
    bookings: Comparison


def ab_tests(rows: tuple[tuple[str, str, int, int, int], ...]) -> list[AbTest]:
    """The A/B table from Counts.variants, one test per template that has variant data."""
    arms: dict[str, dict[str, Arm]] = {}
    for template, variant, sent, replied, booked in rows:
        arms.setdefault(template, {})[variant] = Arm(variant, sent, replied, booked)
    tests = []
    for key, label in TESTED_TEMPLATES.items():
        if key not in arms:
            continue
        a = arms[key].get("A", Arm("A", 0, 0, 0))
        b = arms[key].get("B", Arm("B", 0, 0, 0))
        tests.append(AbTest(key, label, a, b, compare(a.sent, a.replied, b.sent, b.replied),
                            compare(a.sent, a.booked, b.sent, b.booked)))
    return tests

