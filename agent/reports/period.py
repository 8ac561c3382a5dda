"""The period a report covers: whole local days in the business time zone.

Chosen as ?days=7|30|90 (the quick choices, today included) or ?from=&to= (local
dates); a range longer than a year is cut to its last year, a reversed one swapped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from zoneinfo import ZoneInfo

PERIODS = (7, 30, 90)
DEFAULT_DAYS = 30
MAX_DAYS = 366  # a date range longer than a year is cut to its last year


@dataclass(frozen=True)
class Period:
    """Whole local days [first, last] and the UTC instants that bound them."""

    first: dt.date
    last: dt.date
    start: dt.datetime
    end: dt.datetime
    days: int | None  # 7/30/90 for the quick choices, None for a date range

    @property
    def label(self) -> str:
        if self.days:
            return f"last {self.days} days"
        return f"{self.first.isoformat()} to {self.last.isoformat()}"


def parse_period(args: Mapping[str, str], today: dt.date,
                 zone: ZoneInfo) -> tuple[Period, list[str]]:
    """The period from ?days=7|30|90 or ?from=&to= (local dates); today is included."""
    errors: list[str] = []
    dates: dict[str, dt.date | None] = {"from": None, "to": None}
    for key in dates:
        raw = (args.get(key) or "").strip()
        if raw:
            try:
                dates[key] = dt.date.fromisoformat(raw)
            except ValueError:
                errors.append(f"{raw!r} is not a date like 2026-12-01; ignored.")
    days: int | None = None
    if dates["from"] or dates["to"]:
        last = dates["to"] or today
        first = dates["from"] or last - dt.timedelta(days=DEFAULT_DAYS - 1)
        if first > last:
            errors.append("The start date is after the end date; swapped them.")
            first, last = last, first
        if (last - first).days >= MAX_DAYS:
            errors.append(f"At most {MAX_DAYS} days at once; showing the last {MAX_DAYS}.")
            first = last - dt.timedelta(days=MAX_DAYS - 1)
    else:
        raw_days = (args.get("days") or "").strip()
        days = DEFAULT_DAYS
        if raw_days.isdigit() and int(raw_days) in PERIODS:
            days = int(raw_days)
        elif raw_days:
            errors.append(f"Choose 7, 30 or 90 days; showing {days}.")
        last = today
        first = today - dt.timedelta(days=days - 1)
    start = dt.datetime.combine(first, dt.time(), zone)
    end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), zone)
    return Period(first, last, start.astimezone(dt.UTC), end.astimezone(dt.UTC), days), errors
