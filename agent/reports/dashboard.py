"""The dashboard's report: is the business recovering its missed calls, and when does it
miss them?

One call reads the period asked for, counts it (agent.reports.queries), words the key
figures (agent.reports.kpis) and weighs the A/B tests (agent.reports.abtest); the page
only draws what it returns.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from agent.reports import abtest, kpis, queries
from agent.reports.abtest import AbTest
from agent.reports.kpis import Kpi
from agent.reports.period import Period, parse_period
from agent.reports.queries import Counts
from agent.rules import settings

log = logging.getLogger(__name__)

# how the figures are counted, as the page explains them (the modules' docstrings have more)
DEFINITIONS = (*kpis.DEFINITIONS, abtest.DEFINITION)


@dataclass(frozen=True)
class Dashboard:
    """One period's figures, ready to show."""

    period: Period
    errors: list[str]  # what was wrong with the period asked for, and what is shown instead
    zone: ZoneInfo  # the business time zone the days and hours are in
    per_day: dict[dt.date, list[int]]  # local day → [inbound calls, missed]
    per_slot: dict[tuple[int, int], list[int]]  # (weekday, local hour) → [calls, missed]
    counts: Counts
    kpis: list[Kpi]
    tests: list[AbTest]


def _setting(session: Session, key: str, fallback: float) -> float:
    try:
        return float(settings.get(session, key))
    except Exception:  # a bad stored value must not take the dashboard down
        log.exception("%s unreadable; using %s", key, fallback)
        return fallback


def report(session: Session, args: Mapping[str, str], now: dt.datetime) -> Dashboard:
    """The dashboard for the period in `args` (?days= or ?from=&to=, see
    agent.reports.period), in the business time zone, today being the local day of `now`."""
    zone = settings.business_zone(session)
    period, errors = parse_period(args, now.astimezone(zone).date(), zone)
    per_day, per_slot, inbound = queries.fold(queries.buckets(session, period), zone)
    figures = queries.counts(session, period, inbound)
    return Dashboard(
        period, errors, zone, per_day, per_slot, figures,
        kpis.kpis(figures, _setting(session, "business.close_rate", 0.3),
                  _setting(session, "business.average_job_value", 0)),
        abtest.ab_tests(figures.variants))
