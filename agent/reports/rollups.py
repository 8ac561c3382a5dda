"""The dashboard's figures per business day, counted once and added up on every read.

A day is counted from its missed calls (agent.reports.queries.missed_rows, one row per
call with its text-back, reply and contact dates) and its calls per quarter hour, into
additive figures (`Figures`): counts, histograms of whole seconds for the medians and
the 90th percentile, the booked customers and the answered replies by id (so a
customer or a reply counted on two days is counted once in the period, as the raw
figures statement counts it). Days before today are stored in `report_days` for the
business time zone; today is always counted live from the calls.

A stored day changes when its history does: a reply, a delivery report or a staff
answer arrives, staff book, reach, qualify or un-book the customer, a call is imported
late from the CDR file, or a customer is erased. The agent's write paths are left
alone (they are hot); instead each read first looks at what was written since the last
read (`report_marks`: rows after the ids seen then, contacts whose dates moved since,
audit entries after the one seen) and drops the stored days of the calls they touch,
which are counted again when a period needs them. An erasure drops every stored day
of the zone. So a read costs: the few rows written since the last read, the stored
days of the period, and today's calls.

Known gap: on PostgreSQL a row whose transaction commits after a later one's (ids are
taken at insert, not at commit) and after a read in between is not seen as new; its
day is corrected when anything else touches the same customer.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from agent.reports import queries
from agent.rules import intents, settings
from agent.store import audit
from agent.store.models import (
    AuditEntry,
    Call,
    Contact,
    Message,
    MessageEvent,
    ReportDay,
    ReportMark,
)

log = logging.getLogger(__name__)

# a reply with one of these intents (agent.rules.intents) is a qualified conversation
QUALIFYING = ("scheduling", "pricing", "emergency")
# contacts' dates are compared with the last read's clock, less this: a write stamped
# just before the read may commit just after it
CLOCK_MARGIN = dt.timedelta(minutes=5)
# audit actions that change a stored day without a date to see it by
_UNDOING = (audit.BOOKING_CLEARED, audit.QUALIFIED_CLEARED)
_ERASING = (audit.CONTACT_ERASED,)

COUNTS = ("missed", "contactable", "texted", "delivered", "reported", "replied",
          "qualified", "contacted", "opted_out", "recovered", "booked",
          "booked_delivered", "booked_replied")


@dataclass
class Figures:
    """Additive figures of one or more business days (see agent.reports.kpis)."""

    counts: Counter[str] = field(default_factory=Counter)
    parts: Counter[str] = field(default_factory=Counter)  # text-back SMS parts per transport
    text_delays: Counter[int] = field(default_factory=Counter)  # whole seconds → texts
    # replies to text-backs and whole seconds to staff's answer (None: not yet). A reply
    # another text-back of the window may also claim is kept by its id, so the days that
    # both claim it count it once; the others (nearly all) only as a histogram
    responses: dict[int, int | None] = field(default_factory=dict)
    waits: Counter[int] = field(default_factory=Counter)  # answered, claimed once
    unanswered: int = 0  # not answered yet, claimed once
    booked_contacts: set[int] = field(default_factory=set)
    # (template, variant) → texts sent, replied, booked, qualified replies
    arms: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    hours: dict[tuple[dt.date, int], list[int]] = field(default_factory=dict)  # calls, missed

    def add(self, other: Figures) -> None:
        self.counts.update(other.counts)
        self.parts.update(other.parts)
        self.text_delays.update(other.text_delays)
        self.responses.update(other.responses)
        self.waits.update(other.waits)
        self.unanswered += other.unanswered
        self.booked_contacts |= other.booked_contacts
        for key, values in other.arms.items():
            mine = self.arms.setdefault(key, [])
            mine.extend([0] * (len(values) - len(mine)))  # a row counted before a new count
            for n, value in enumerate(values):
                mine[n] += value
        for key, values in other.hours.items():
            mine = self.hours.setdefault(key, [0, 0])
            mine[0] += values[0]
            mine[1] += values[1]

    def response_histogram(self) -> Counter[int]:
        """Whole seconds to staff's answer → answered replies."""
        waits = Counter(self.responses.values())
        waits.pop(None, None)
        waits.update(self.waits)
        return waits

    @property
    def replies(self) -> int:
        """Replies to text-backs, each counted once."""
        return len(self.responses) + sum(self.waits.values()) + self.unanswered

    @property
    def inbound(self) -> int:
        return sum(calls for calls, _ in self.hours.values())

    def to_json(self) -> dict[str, Any]:
        # in the replies' order, not the order the days were added in: the same figures
        # are the same JSON however they were added up
        replies = sorted(self.responses.items(), key=lambda reply: reply[0])
        return {"counts": dict(self.counts), "parts": dict(self.parts),
                "delays": {str(k): v for k, v in self.text_delays.items()},
                # two lists rather than an object: read back without a conversion per key
                "reply_ids": [reply_id for reply_id, _ in replies],
                "reply_waits": [wait for _, wait in replies],
                "waits": [[k, v] for k, v in sorted(self.waits.items())],
                "unanswered": self.unanswered,
                "booked": sorted(self.booked_contacts),
                "arms": [[t, v, *n] for (t, v), n in sorted(self.arms.items())],
                "hours": [[day.isoformat(), hour, *n]
                          for (day, hour), n in sorted(self.hours.items())]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Figures:
        return cls(Counter(data["counts"]), Counter(data["parts"]),
                   Counter({int(k): v for k, v in data["delays"].items()}),
                   dict(zip(data["reply_ids"], data["reply_waits"], strict=True)),
                   Counter(dict(data["waits"])), data["unanswered"],
                   set(data["booked"]),
                   {(t, v): list(n) for t, v, *n in data["arms"]},
                   {(dt.date.fromisoformat(day), hour): list(n)
                    for day, hour, *n in data["hours"]})


def percentile(histogram: Counter[int], p: float) -> float | None:
    """The p-th percentile of whole seconds: the median (p=50) is the mean of the middle
    one or two values, as the figures statement takes it; others the nearest rank."""
    total = sum(histogram.values())
    if not total:
        return None
    ordered = sorted(histogram.items())

    def nth(n: int) -> int:  # the n-th smallest value, from 0
        seen = 0
        for value, count in ordered:
            seen += count
            if n < seen:
                return value
        return ordered[-1][0]

    if p == 50:
        return (nth((total - 1) // 2) + nth(total // 2)) / 2
    return float(nth(max(0, math.ceil(p / 100 * total) - 1)))


def _seconds(later: dt.datetime, earlier: dt.datetime) -> int:
    return math.floor((later - earlier).total_seconds())


def count(session: Session, zone: ZoneInfo, start: dt.datetime, end: dt.datetime,
          ) -> dict[dt.date, Figures]:
    """The figures of the calls started in [start, end), per local day of `zone`."""
    days: dict[dt.date, Figures] = {}

    def of(at: dt.datetime) -> Figures:
        return days.setdefault(at.astimezone(zone).date(), Figures())

    for at, calls, missed in queries.bucket_rows(session, start, end):
        local = at.astimezone(zone)
        slot = of(at).hours.setdefault((local.date(), local.hour), [0, 0])
        slot[0] += calls
        slot[1] += missed
    rows = queries.missed_rows(session, start, end)
    bodies = queries.message_bodies(
        session, [r["reply_id"] for r in rows if r["left_at"] and r["reply_id"] is not None])
    # customers write the same few words often ("yes", "ok", "how much"): each once
    classify = functools.lru_cache(maxsize=4096)(
        intents.PhraseRules.from_settings(settings.all_values(session)).classify)
    for row in rows:
        figures = of(row["started_at"])
        _count_call(figures, row, bodies, classify)
    return days


def _count_call(figures: Figures, row: dict[str, Any], bodies: dict[int, str],
                classify: Any) -> None:
    """One missed call into its day's figures (the definitions are agent.reports.kpis')."""
    started, left = row["started_at"], row["left_at"]

    def since(column: str, moment: dt.datetime | None) -> bool:
        return moment is not None and row[column] is not None and row[column] >= moment

    texted = left is not None
    replied = texted and row["reply_at"] is not None
    booked = since("booked_at", started)
    contacted = since("contacted_at", started)
    qualified = replied and (since("qualified_at", started) or classify(
        bodies.get(row["reply_id"], "")) in QUALIFYING)
    flags = {
        "missed": True,
        "contactable": not (row["decision"] == "skip"
                            and row["skip_reason"] in queries.UNCONTACTABLE),
        "texted": texted, "delivered": row["status"] == "delivered",
        "reported": bool(row["reported"]), "replied": replied, "qualified": qualified,
        "contacted": contacted, "opted_out": texted and since("opted_out_at",
                                                              row["sent_created"]),
        "recovered": contacted or replied, "booked": booked,
        "booked_delivered": booked and row["status"] == "delivered",
        "booked_replied": booked and replied,
    }
    figures.counts.update(key for key, value in flags.items() if value)
    if booked and row["contact_id"] is not None:
        figures.booked_contacts.add(row["contact_id"])
    if texted:
        figures.text_delays[_seconds(left, row["ended_at"])] += 1
        figures.parts[row["transport"] or "unknown"] += row["segments"] or 1
        if row["variant"]:
            arm = figures.arms.setdefault((row["template"], row["variant"]), [0, 0, 0, 0])
            arm[0] += 1
            arm[1] += replied
            arm[2] += booked
            arm[3] += qualified
    if replied and row["reply_id"] is not None:
        reply_at, staff_at, reached = row["reply_at"], row["staff_reply_at"], row["contacted_at"]
        answered = staff_at
        if reached is not None and reached >= reply_at and (staff_at is None
                                                             or reached < staff_at):
            answered = reached
        wait = None if answered is None else _seconds(answered, reply_at)
        if row["shared"]:
            figures.responses[row["reply_id"]] = wait
        elif wait is None:
            figures.unanswered += 1
        else:
            figures.waits[wait] += 1


def _bounds(first: dt.date, last: dt.date, zone: ZoneInfo) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(first, dt.time(), zone)
    end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), zone)
    return start.astimezone(dt.UTC), end.astimezone(dt.UTC)


def _runs(days: Iterable[dt.date]) -> list[tuple[dt.date, dt.date]]:
    """Consecutive days as (first, last) runs."""
    runs: list[tuple[dt.date, dt.date]] = []
    for day in sorted(days):
        if runs and runs[-1][1] + dt.timedelta(days=1) == day:
            runs[-1] = (runs[-1][0], day)
        else:
            runs.append((day, day))
    return runs


def _max_id(session: Session, column: Any) -> int:
    return int(session.scalar(select(func.coalesce(func.max(column), 0))) or 0)


def _touched(session: Session, mark: ReportMark, zone: ZoneInfo) -> set[dt.date] | None:
    """The local days whose stored figures what was written since `mark` changes; None
    when a customer was erased (any day may have lost calls)."""
    numbers: set[str] = set()
    since = mark.checked_at - CLOCK_MARGIN
    entries = session.execute(select(AuditEntry.action, AuditEntry.target).where(
        AuditEntry.id > mark.audit_id, AuditEntry.action.in_(_UNDOING + _ERASING))).all()
    if any(action in _ERASING for action, _ in entries):
        return None
    numbers.update(target for _, target in entries if target)
    numbers.update(session.scalars(select(Message.number).where(
        Message.id > mark.message_id)))
    numbers.update(session.scalars(
        select(Message.number).join(MessageEvent, MessageEvent.message_id == Message.id)
        .where(MessageEvent.id > mark.event_id)))
    # one query per date: SQLite scans the table for an OR of them
    for column in (Contact.contacted_at, Contact.booked_at, Contact.opted_out_at,
                   Contact.qualified_at):
        numbers.update(session.scalars(select(Contact.number).where(column >= since)))
    starts = list(session.scalars(select(Call.started_at).where(Call.id > mark.call_id)))
    listed = sorted(numbers)
    for at in range(0, len(listed), 500):
        starts += session.scalars(select(Call.started_at).where(
            Call.caller.in_(listed[at:at + 500]), Call.missed.is_(True),
            Call.direction == "inbound"))
    return {at.astimezone(zone).date() for at in starts}


def _refresh(session: Session, zone: ZoneInfo, now: dt.datetime) -> None:
    """Drop the stored days that what was written since the last read changes, and move
    the mark to now."""
    mark = session.get(ReportMark, zone.key)
    ids = {"call_id": _max_id(session, Call.id), "message_id": _max_id(session, Message.id),
           "event_id": _max_id(session, MessageEvent.id),
           "audit_id": _max_id(session, AuditEntry.id)}
    if mark is None:
        # nothing stored can predate the first mark but what an older mark left: drop it
        session.execute(delete(ReportDay).where(ReportDay.zone == zone.key))
        session.add(ReportMark(zone=zone.key, checked_at=now, **ids))
        return
    touched = _touched(session, mark, zone)
    stale = delete(ReportDay).where(ReportDay.zone == zone.key)
    if touched is None:
        session.execute(stale)
    elif touched:
        session.execute(stale.where(ReportDay.day.in_(sorted(touched))))
    mark.checked_at = max(mark.checked_at, now)
    for key, value in ids.items():
        setattr(mark, key, value)


def figures(session: Session, zone: ZoneInfo, first: dt.date, last: dt.date,
            now: dt.datetime) -> Figures:
    """The figures of the local days [first, last]: stored days added up, missing ones
    counted and stored (in the caller's transaction: the caller commits), today (and any
    later day) counted live."""
    return periods(session, zone, [(first, last)], now)[0]


def periods(session: Session, zone: ZoneInfo, spans: list[tuple[dt.date, dt.date]],
            now: dt.datetime) -> list[Figures]:
    """figures() of several spans of local days, looking once for what changed."""
    try:
        with session.begin_nested():  # the caller commits (a page, the agent's digest)
            _refresh(session, zone, now)
    except IntegrityError:  # another page made the first mark at the same time
        pass
    return [_figures(session, zone, first, last, now) for first, last in spans]


def _figures(session: Session, zone: ZoneInfo, first: dt.date, last: dt.date,
             now: dt.datetime) -> Figures:
    today = now.astimezone(zone).date()
    total = Figures()
    try:
        with session.begin_nested():  # stored with the caller's transaction
            before_today = min(last, today - dt.timedelta(days=1))
            stored: set[dt.date] = set()
            if first <= before_today:
                unreadable = []
                for day, data in session.execute(select(ReportDay.day, ReportDay.figures).where(
                        ReportDay.zone == zone.key, ReportDay.day >= first,
                        ReportDay.day <= before_today)):
                    try:
                        total.add(Figures.from_json(data))
                    except (KeyError, TypeError, ValueError):  # another version's row
                        unreadable.append(day)
                        continue
                    stored.add(day)
                if unreadable:
                    log.warning("daily figures of %d days unreadable (%s to %s); counting them "
                                "again", len(unreadable), min(unreadable), max(unreadable))
                    session.execute(delete(ReportDay).where(ReportDay.zone == zone.key,
                                                            ReportDay.day.in_(unreadable)))
            missing = [first + dt.timedelta(days=n) for n in range((before_today - first).days + 1)
                       if first + dt.timedelta(days=n) not in stored]
            for run_first, run_last in _runs(missing):
                counted = count(session, zone, *_bounds(run_first, run_last, zone))
                for n in range((run_last - run_first).days + 1):
                    day = run_first + dt.timedelta(days=n)
                    day_figures = counted.get(day, Figures())
                    total.add(day_figures)
                    session.add(ReportDay(zone=zone.key, day=day, computed_at=now,
                                          figures=day_figures.to_json()))
    except IntegrityError:  # another page counted the same day at the same time
        log.info("daily figures stored by another request meanwhile; counting live")
        return live(session, zone, first, last)
    if last >= today:
        for day_figures in count(session, zone, *_bounds(max(first, today), last,
                                                         zone)).values():
            total.add(day_figures)
    return total


def live(session: Session, zone: ZoneInfo, first: dt.date, last: dt.date) -> Figures:
    """The same figures counted from the calls alone, nothing stored: the reference the
    stored days must equal."""
    total = Figures()
    for day_figures in count(session, zone, *_bounds(first, last, zone)).values():
        total.add(day_figures)
    return total


BACKFILL_DAYS = 2 * 366  # a year's range and the year before it, which it is compared with
_BACKFILL_RUN = 31  # days counted per statement: a month of rows in memory at a time


def backfill(session: Session, now: dt.datetime, days: int = BACKFILL_DAYS) -> int:
    """Count and store the past `days` days not stored yet, in the business time zone, a
    month at a time (`textback migrate` runs it, so the first dashboard after an upgrade
    reads stored days); returns how many days were counted."""
    zone = settings.business_zone(session)
    today = now.astimezone(zone).date()
    first = today - dt.timedelta(days=days)
    _refresh(session, zone, now)
    session.commit()
    stored = set(session.scalars(select(ReportDay.day).where(
        ReportDay.zone == zone.key, ReportDay.day >= first)))
    missing = [first + dt.timedelta(days=n) for n in range(days)
               if first + dt.timedelta(days=n) not in stored]
    for run_first, run_last in _runs(missing):
        while run_first <= run_last:
            chunk_last = min(run_last, run_first + dt.timedelta(days=_BACKFILL_RUN - 1))
            _figures(session, zone, run_first, chunk_last, now)
            run_first = chunk_last + dt.timedelta(days=1)
    return len(missing)
