"""The dashboard: is the business recovering its missed calls, and when does it miss them?

Every figure is one SQL aggregate over the chosen period (whole days in the
business time zone), read through the call indexes (ix_calls_started,
ix_calls_missed_started) and the unique idempotency key that ties a call to its
text-back; Python only ever sees aggregated rows, so a million calls cost what the
period's calls cost. Calls are counted in UTC quarter-hour buckets and folded into
local days and hours here, because SQLite has no time zones and a quarter hour
fits every real UTC offset (India +5:30, Nepal +5:45) and every DST change.

Definitions (shown on the page too, so an owner can check them):
  missed-call rate   missed inbound calls / inbound calls
  contactability     missed calls that could get an SMS (not withheld, invalid or a
                     landline) / missed calls
  send rate          missed calls whose text-back left (submitted, sent or
                     delivered) / missed calls
  delivery rate      delivered / text-backs sent over a route that reports delivery
                     (the SIP trunk only says "submitted": then it is n/a)
  time to text       median from the end of the missed call to the text leaving
  reply rate         text-backs answered by the customer within 7 days / text-backs
  contacted rate     missed calls whose caller staff reached afterwards
                     (contacts.contacted_at) / missed calls
  opt-out rate       text-backs after which the customer opted out / text-backs
  recovered leads    missed calls whose caller replied or was reached
  revenue estimate   recovered leads x business.close_rate x business.average_job_value
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from flask import Blueprint, render_template, request
from sqlalchemy import bindparam, text
from sqlalchemy.orm import Session

from agent import settings
from agent.models import UTCDateTime
from web.auth import login_required
from web.calls import business_zone
from web.db import get_session

log = logging.getLogger(__name__)

bp = Blueprint("dashboard", __name__, url_prefix="/dashboard")

PERIODS = (7, 30, 90)
DEFAULT_DAYS = 30
MAX_DAYS = 366  # a date range longer than a year is cut to its last year
BUCKET_SECONDS = 900
REPLY_WINDOW_DAYS = 7
# skips that mean the number cannot take an SMS at all (agent.policy)
UNCONTACTABLE = ("withheld", "invalid_number", "fixed_line")
LEFT = ("submitted", "sent", "delivered")  # the text left textback
REPORTED = ("sent", "delivered")  # accepted by a network that reports delivery
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MIN_CELL_CALLS = 5  # fewer calls in an hour of the week say nothing about it


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


def parse_period(args: Any, today: dt.date, zone: ZoneInfo) -> tuple[Period, list[str]]:
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


# ----------------------------------------------------------------- the queries


@dataclass(frozen=True)
class Dialect:
    """The few SQL expressions SQLite and PostgreSQL spell differently."""

    bucket: str  # started_at as a UTC quarter-hour number
    seconds: str  # seconds from ended_at to left_at
    reply_until: str  # the end of the reply window after a text-back

    @classmethod
    def of(cls, session: Session) -> Dialect:
        if session.get_bind().dialect.name == "postgresql":
            return cls(
                bucket=f"CAST(FLOOR(EXTRACT(EPOCH FROM started_at) / {BUCKET_SECONDS}) AS BIGINT)",
                seconds="EXTRACT(EPOCH FROM (left_at - ended_at))",
                reply_until=f"sent_created + INTERVAL '{REPLY_WINDOW_DAYS} days'")
        return cls(
            bucket=f"CAST(strftime('%s', started_at) AS INTEGER) / {BUCKET_SECONDS}",
            seconds="(julianday(left_at) - julianday(ended_at)) * 86400.0",
            reply_until=f"strftime('%Y-%m-%d %H:%M:%f', sent_created, "
                        f"'+{REPLY_WINDOW_DAYS} days')")


def _in(values: tuple[str, ...]) -> str:
    """A constant IN list (the values are this module's own words, never input)."""
    return "(" + ", ".join(f"'{value}'" for value in values) + ")"


def _bounds(period: Period) -> dict[str, Any]:
    return {"start": period.start, "end": period.end}


_TIME_PARAMS = (bindparam("start", type_=UTCDateTime()), bindparam("end", type_=UTCDateTime()))


def _missed_calls_cte(d: Dialect) -> str:
    """Each missed inbound call of the period with its text-back, when it left and its
    caller's contact dates: one seek per call on ix_calls_missed_started, the unique
    idempotency key and the message_events index."""
    return f"""
    WITH missed AS (
      SELECT c.id, c.ended_at, c.decision, c.skip_reason,
             m.id AS message_id, m.status, m.number AS sent_to, m.created_at AS sent_created,
             k.contacted_at, k.opted_out_at, c.started_at,
             (SELECT MIN(e.at) FROM message_events e
               WHERE e.message_id = m.id AND e.status IN {_in(LEFT)}) AS left_at
      FROM calls c
      LEFT JOIN messages m ON m.idempotency_key = c.linkedid || :suffix
      LEFT JOIN contacts k ON k.id = c.contact_id
      WHERE c.missed = :yes AND c.started_at >= :start AND c.started_at < :end
        AND c.direction = 'inbound'
    )"""


def _kpi_sql(d: Dialect) -> str:
    return _missed_calls_cte(d) + f"""
    SELECT
      COUNT(*) AS missed,
      SUM(CASE WHEN decision = 'skip' AND skip_reason IN {_in(UNCONTACTABLE)}
               THEN 0 ELSE 1 END) AS contactable,
      SUM(CASE WHEN left_at IS NOT NULL THEN 1 ELSE 0 END) AS texted,
      SUM(CASE WHEN status = 'delivered' THEN 1 ELSE 0 END) AS delivered,
      SUM(CASE WHEN message_id IS NOT NULL AND EXISTS (
            SELECT 1 FROM message_events r WHERE r.message_id = missed.message_id
              AND r.status IN {_in(REPORTED)}) THEN 1 ELSE 0 END) AS reported,
      SUM(CASE WHEN left_at IS NOT NULL AND EXISTS (
            SELECT 1 FROM messages i WHERE i.number = sent_to AND i.direction = 'in'
              AND i.created_at >= sent_created AND i.created_at < {d.reply_until})
          THEN 1 ELSE 0 END) AS replied,
      SUM(CASE WHEN contacted_at >= started_at THEN 1 ELSE 0 END) AS contacted,
      SUM(CASE WHEN left_at IS NOT NULL AND opted_out_at >= sent_created
          THEN 1 ELSE 0 END) AS opted_out,
      SUM(CASE WHEN contacted_at >= started_at OR (left_at IS NOT NULL AND EXISTS (
            SELECT 1 FROM messages i WHERE i.number = sent_to AND i.direction = 'in'
              AND i.created_at >= sent_created AND i.created_at < {d.reply_until}))
          THEN 1 ELSE 0 END) AS recovered
    FROM missed"""


def _median_sql(d: Dialect) -> str:
    """The middle one or two delays, by sorting only the period's texted calls."""
    return _missed_calls_cte(d) + f"""
    SELECT {d.seconds} AS seconds FROM missed WHERE left_at IS NOT NULL
    ORDER BY seconds LIMIT :take OFFSET :skip"""


def _buckets_sql(d: Dialect) -> str:
    return f"""
    SELECT {d.bucket} AS bucket, COUNT(*) AS calls,
           SUM(CASE WHEN missed = :yes THEN 1 ELSE 0 END) AS missed
    FROM calls
    WHERE started_at >= :start AND started_at < :end AND direction = 'inbound'
    GROUP BY {d.bucket}"""


def _query(session: Session, sql: str, **params: Any) -> Any:
    statement = text(sql).bindparams(*_TIME_PARAMS)
    return session.execute(statement, {"yes": True, "suffix": ":textback", **params})


@dataclass(frozen=True)
class Counts:
    inbound: int = 0
    missed: int = 0
    contactable: int = 0
    texted: int = 0
    delivered: int = 0
    reported: int = 0
    replied: int = 0
    contacted: int = 0
    opted_out: int = 0
    recovered: int = 0
    median_seconds: float | None = None


def _median(session: Session, d: Dialect, period: Period, n: int) -> float | None:
    if n == 0:
        return None
    take = 1 if n % 2 else 2
    values = [float(row.seconds) for row in _query(session, _median_sql(d), take=take,
                                                   skip=(n - 1) // 2, **_bounds(period))]
    return sum(values) / len(values) if values else None


def buckets(session: Session, period: Period) -> list[tuple[dt.datetime, int, int]]:
    """(UTC quarter-hour start, inbound calls, missed) for every quarter hour with calls."""
    d = Dialect.of(session)
    return [(dt.datetime.fromtimestamp(int(row.bucket) * BUCKET_SECONDS, dt.UTC),
             int(row.calls), int(row.missed or 0))
            for row in _query(session, _buckets_sql(d), **_bounds(period))]


def counts(session: Session, period: Period, inbound: int) -> Counts:
    d = Dialect.of(session)
    row = _query(session, _kpi_sql(d), **_bounds(period)).one()
    values = {key: int(getattr(row, key) or 0) for key in (
        "missed", "contactable", "texted", "delivered", "reported", "replied", "contacted",
        "opted_out", "recovered")}
    return Counts(inbound=inbound, median_seconds=_median(session, d, period, values["texted"]),
                  **values)


# ----------------------------------------------------------------- what the page shows


@dataclass(frozen=True)
class Kpi:
    name: str
    value: str  # "42%", "1 min 20 s", "n/a"
    detail: str  # the fraction or the reason behind it
    slug: str


def _rate(part: int, whole: int, of: str) -> tuple[str, str]:
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


def kpis(c: Counts, close_rate: float, job_value: float) -> list[Kpi]:
    def rate(name: str, slug: str, part: int, whole: int, of: str) -> Kpi:
        return Kpi(name, *_rate(part, whole, of), slug=slug)

    delivery = rate("Delivery rate", "delivery", c.delivered, c.reported, "texts with a "
                    "delivery report")
    if c.reported == 0 and c.texted:
        delivery = Kpi("Delivery rate", "n/a", "the SIP trunk only reports “submitted”: "
                       "delivery is unknown", "delivery")
    out = [
        Kpi("Inbound calls", f"{c.inbound:,}", f"{c.missed:,} missed", "inbound"),
        rate("Missed-call rate", "missed", c.missed, c.inbound, "inbound calls"),
        rate("Contactability", "contactable", c.contactable, c.missed,
             "missed calls can take an SMS"),
        rate("Text-back send rate", "sent", c.texted, c.missed, "missed calls texted"),
        delivery,
        Kpi("Time to text", format_seconds(c.median_seconds)
            if c.median_seconds is not None else "n/a",
            "median, from the end of the missed call" if c.median_seconds is not None
            else "no texts in this period", "time"),
        rate("Reply rate", "reply", c.replied, c.texted, f"texts answered within "
             f"{REPLY_WINDOW_DAYS} days"),
        rate("Contacted rate", "contacted", c.contacted, c.missed,
             "missed callers reached by staff"),
        rate("Opt-out rate", "optout", c.opted_out, c.texted, "texts followed by an opt-out"),
    ]
    if job_value > 0:
        estimate = c.recovered * close_rate * job_value
        out.append(Kpi("Revenue estimate", f"{estimate:,.0f}",
                       f"{c.recovered:,} recovered leads × {close_rate:g} close rate × "
                       f"{job_value:,.0f} per job", "revenue"))
    else:
        out.append(Kpi("Recovered leads", f"{c.recovered:,}", "replied or reached by staff "
                       "(set business.average_job_value for a revenue estimate)", "recovered"))
    return out


# ----------------------------------------------------------------- charts (SVG from numbers)

CHART_W, CHART_H, PAD_L, PAD_B, PAD_T = 720, 220, 40, 24, 10


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    y_calls: float
    h_calls: float
    y_missed: float
    h_missed: float
    day: dt.date
    calls: int
    missed: int


@dataclass
class DailyChart:
    bars: list[Bar] = field(default_factory=list)
    ticks: list[tuple[float, str]] = field(default_factory=list)  # x, date label
    y_max: int = 0
    width: int = CHART_W
    height: int = CHART_H
    left: int = PAD_L
    bottom: int = CHART_H - PAD_B
    top: int = PAD_T


def _nice_max(value: int) -> int:
    for step in (5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 2500, 5000, 10000):
        if value <= step:
            return step
    return ((value // 10000) + 1) * 10000


def daily_chart(per_day: dict[dt.date, list[int]], period: Period) -> DailyChart:
    days = [period.first + dt.timedelta(days=n) for n in range((period.last - period.first)
                                                                .days + 1)]
    chart = DailyChart()
    chart.y_max = _nice_max(max((per_day.get(day, [0, 0])[0] for day in days), default=0))
    plot_w = CHART_W - PAD_L - 8
    plot_h = chart.bottom - PAD_T
    slot = plot_w / len(days)
    width = max(slot * 0.75, 1.0)
    every = max(1, round(len(days) / 6))
    for n, day in enumerate(days):
        calls, missed = per_day.get(day, [0, 0])
        x = PAD_L + n * slot + (slot - width) / 2
        h_calls = plot_h * calls / chart.y_max
        h_missed = plot_h * missed / chart.y_max
        chart.bars.append(Bar(round(x, 1), round(width, 1), round(chart.bottom - h_calls, 1),
                              round(h_calls, 1), round(chart.bottom - h_missed, 1),
                              round(h_missed, 1), day, calls, missed))
        if n % every == 0:
            chart.ticks.append((round(x + width / 2, 1), f"{day:%b} {day.day}"))
    return chart


@dataclass(frozen=True)
class Cell:
    x: int
    y: int
    calls: int
    missed: int
    fill: str
    label: str


@dataclass
class HeatMap:
    cells: list[Cell] = field(default_factory=list)
    worst: str = ""  # "Tue 12:00–13:00: 8 of 20 calls missed (40%)"
    cell: int = 26
    left: int = 40
    top: int = 18

    @property
    def width(self) -> int:
        return self.left + 24 * self.cell + 2

    @property
    def height(self) -> int:
        return self.top + 7 * self.cell + 2


def _fill(missed: int, calls: int) -> str:
    """No calls: grey; else from pale to deep red by the share missed."""
    if calls == 0:
        return "#eef1f5"
    share = missed / calls
    low, high = (253, 236, 234), (180, 35, 24)
    r, g, b = (round(lo + (hi - lo) * share) for lo, hi in zip(low, high, strict=True))
    return f"#{r:02x}{g:02x}{b:02x}"


def heat_map(per_slot: dict[tuple[int, int], list[int]]) -> HeatMap:
    chart = HeatMap()
    worst: tuple[float, int, int, int, int] | None = None
    for weekday in range(7):
        for hour in range(24):
            calls, missed = per_slot.get((weekday, hour), [0, 0])
            span = f"{WEEKDAYS[weekday]} {hour:02d}:00–{(hour + 1) % 24:02d}:00"
            label = (f"{span}: {missed} of {calls} calls missed "
                     f"({round(100 * missed / calls)}%)" if calls else f"{span}: no calls")
            chart.cells.append(Cell(chart.left + hour * chart.cell,
                                    chart.top + weekday * chart.cell, calls, missed,
                                    _fill(missed, calls), label))
            if calls >= MIN_CELL_CALLS and missed and (
                    worst is None or (missed / calls, missed) > (worst[0], worst[1])):
                worst = (missed / calls, missed, calls, weekday, hour)
    if worst:
        share, missed, calls, weekday, hour = worst
        chart.worst = (f"{WEEKDAYS[weekday]} {hour:02d}:00–{(hour + 1) % 24:02d}:00: "
                       f"{missed} of {calls} calls missed ({round(100 * share)}%)")
    return chart


def fold(rows: list[tuple[dt.datetime, int, int]], zone: ZoneInfo
         ) -> tuple[dict[dt.date, list[int]], dict[tuple[int, int], list[int]], int]:
    """UTC quarter hours into local days and local hours of the week."""
    per_day: dict[dt.date, list[int]] = {}
    per_slot: dict[tuple[int, int], list[int]] = {}
    total = 0
    for at, calls, missed in rows:
        local = at.astimezone(zone)
        day = per_day.setdefault(local.date(), [0, 0])
        slot = per_slot.setdefault((local.weekday(), local.hour), [0, 0])
        day[0] += calls
        day[1] += missed
        slot[0] += calls
        slot[1] += missed
        total += calls
    return per_day, per_slot, total


def _setting(session: Session, key: str, fallback: float) -> float:
    try:
        return float(settings.get(session, key))
    except Exception:  # a bad stored value must not take the dashboard down
        log.exception("%s unreadable; using %s", key, fallback)
        return fallback


@bp.get("")
@login_required
def index() -> Any:
    session = get_session()
    zone = business_zone(session)
    period, errors = parse_period(request.args, dt.datetime.now(zone).date(), zone)
    per_day, per_slot, inbound = fold(buckets(session, period), zone)
    figures = counts(session, period, inbound)
    return render_template(
        "dashboard/index.html", period=period, periods=PERIODS, errors=errors, zone=zone.key,
        kpis=kpis(figures, _setting(session, "business.close_rate", 0.3),
                  _setting(session, "business.average_job_value", 0)),
        daily=daily_chart(per_day, period), heat=heat_map(per_slot), weekdays=WEEKDAYS,
        figures=figures)
