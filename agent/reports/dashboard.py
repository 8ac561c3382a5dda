"""The dashboard's report: is the business recovering its missed calls, and when does it
miss them?

One call reads the period asked for and the one before it from the daily figures
(agent.reports.rollups), words the key figures (agent.reports.kpis) and weighs the A/B
tests (agent.reports.abtest); the page only draws what it returns.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from agent.reports import abtest, kpis, rollups
from agent.reports.abtest import TESTED_TEMPLATES, VARIANTS, AbTest
from agent.reports.kpis import Costs, Kpi, Money
from agent.reports.period import Period, parse_period
from agent.reports.rollups import Figures
from agent.rules import settings

log = logging.getLogger(__name__)

# how the figures are counted, as the page explains them (the modules' docstrings have more)
DEFINITIONS = (*kpis.DEFINITIONS.values(), abtest.DEFINITION)


@dataclass(frozen=True)
class Dashboard:
    """One period's figures, ready to show."""

    period: Period
    errors: list[str]  # what was wrong with the period asked for, and what is shown instead
    zone: ZoneInfo  # the business time zone the days and hours are in
    per_day: dict[dt.date, list[int]]  # local day → [inbound calls, missed]
    per_slot: dict[tuple[int, int], list[int]]  # (weekday, local hour) → [calls, missed]
    figures: Figures
    kpis: list[Kpi]
    tests: list[AbTest]
    previous_label: str


def _setting(session: Session, key: str, fallback: float) -> float:
    try:
        return float(settings.get(session, key))
    except Exception:  # a bad stored value must not take the dashboard down
        log.exception("%s unreadable; using %s", key, fallback)
        return fallback


def money(session: Session) -> Money:
    """The job value, close rate and costs the money figures are counted with."""
    costs = Costs({name: _setting(session, f"costs.sms_part.{name}", 0)
                   for name in settings.COST_TRANSPORTS},
                  _setting(session, "costs.monthly_software", 0),
                  _setting(session, "costs.staff_minutes_per_conversation", 0),
                  _setting(session, "costs.hourly_rate", 0))
    return Money(_setting(session, "business.average_job_value", 0),
                 _setting(session, "business.close_rate", 0.3), costs)


def _folded(f: Figures) -> tuple[dict[dt.date, list[int]], dict[tuple[int, int], list[int]]]:
    per_day: dict[dt.date, list[int]] = {}
    per_slot: dict[tuple[int, int], list[int]] = {}
    for (day, hour), (calls, missed) in f.hours.items():
        for bucket in (per_day.setdefault(day, [0, 0]),
                       per_slot.setdefault((day.weekday(), hour), [0, 0])):
            bucket[0] += calls
            bucket[1] += missed
    return per_day, per_slot


def variants(f: Figures) -> tuple[tuple[str, str, int, int, int], ...]:
    """(template, variant, texts sent, replied, booked) per A/B arm with texts."""
    return tuple((key, variant, *f.arms[key, variant][:3]) for key in TESTED_TEMPLATES
                 for variant in VARIANTS if f.arms.get((key, variant), [0])[0])


def report(session: Session, args: Mapping[str, str], now: dt.datetime) -> Dashboard:
    """The dashboard for the period in `args` (?days= or ?from=&to=, see
    agent.reports.period), in the business time zone, today being the local day of `now`,
    with each figure's change on the period of the same length just before."""
    zone = settings.business_zone(session)
    period, errors = parse_period(args, now.astimezone(zone).date(), zone)
    length = (period.last - period.first).days + 1
    figures, previous = rollups.periods(
        session, zone, [(period.first, period.last),
                        (period.first - dt.timedelta(days=length),
                         period.first - dt.timedelta(days=1))], now)
    label = f"previous {length} day{'s' if length > 1 else ''}"
    per_day, per_slot = _folded(figures)
    return Dashboard(
        period, errors, zone, per_day, per_slot, figures,
        kpis.kpis(figures, money(session), length, previous, label),
        abtest.ab_tests(variants(figures)), label)
