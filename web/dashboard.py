"""The dashboard: is the business recovering its missed calls, and when does it miss them?

Every figure is an SQL aggregate over the chosen period (whole days in the
business time zone), in two statements: calls per quarter hour, and everything
about the missed calls (key figures, medians, A/B counts) with each missed call
looked up once, through the call indexes (ix_calls_started,
ix_calls_missed_started) and the unique idempotency key that ties a call to its
text-back. Python only ever sees aggregated rows, so a million calls cost what
the period's calls cost. Calls are counted in UTC quarter-hour buckets and folded into
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
  booked             missed calls whose caller's conversation was marked "Booked a job"
                     in the inbox at or after the call started (contacts.booked_at >=
                     calls.started_at) / missed calls
  booked revenue     booked customers (each counted once, however often they called) x
                     business.average_job_value
  staff response     median time from a customer's reply to a text-back to staff's
                     first answer. The replies: the first text from the caller within 7
                     days of each text-back of the period's missed calls, each reply
                     counted once. The answer: the earliest of a reply from the inbox
                     (a staff_reply text to that number) and the moment staff reached the
                     customer (contacts.contacted_at: an answered call back or call,
                     "Mark contacted", a booking), at or after the reply. contacted_at
                     keeps only the latest reach, so a call back followed by a later
                     reach counts at the later one. Replies nobody has answered yet are
                     left out of the median and counted beside it.

A/B tests (templates.*_b): for each template and variant, the period's text-backs
that left, the replies within 7 days and the bookings (as above), the lift of B
over A in percentage points and relative to A, and a two-sided two-proportion
z-test. A result is called trustworthy only with at least 30 texts in each
variant and p <= 0.05; otherwise the page says it may be chance.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from flask import Blueprint, render_template, request
from sqlalchemy import bindparam, text
from sqlalchemy.orm import Session

from agent.rules import settings
from agent.store.models import UTCDateTime
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
# skips that mean the number cannot take an SMS at all (agent.calls.policy)
UNCONTACTABLE = ("withheld", "invalid_number", "fixed_line")
LEFT = ("submitted", "sent", "delivered")  # the text left textback
REPORTED = ("sent", "delivered")  # accepted by a network that reports delivery
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MIN_CELL_CALLS = 5  # fewer calls in an hour of the week say nothing about it
STAFF_REPLY = "staff_reply"  # the inbox's replies (web.inbox)
# an A/B result is trusted with at least this many texts per variant and p <= ALPHA
MIN_TEST_TEXTS = 30
ALPHA = 0.05
# how the figures are counted, as the page explains them (the module docstring has more)
DEFINITIONS = (
    ("Booked", "missed calls whose caller's conversation was marked “Booked a job” in the "
     "inbox at or after the call (a customer who called three times counts three times)."),
    ("Booked revenue", "booked customers, each counted once, × business.average_job_value."),
    ("Staff response time", "for each customer's first reply within 7 days to a text-back "
     "of these missed calls (each reply counted once), the time until staff first answered "
     "it: a reply from the inbox, or the customer reached (an answered call back or call, "
     "“Mark contacted”, a booking). The median of the answered replies; the ones nobody has "
     "answered yet are counted beside it. Only the latest time a customer was reached is "
     "kept, so a call back followed by a later contact counts at the later one."),
    ("A/B tests", "texts that left, per text and variant; replies within 7 days and "
     "bookings as above. The lift is B minus A in points and relative to A. A difference "
     f"is called real only with at least {MIN_TEST_TEXTS} texts in each variant and a "
     f"two-proportion z-test p-value of {ALPHA} or less."),
)
VARIANTS = ("A", "B")  # agent.calls.policy.Variant
TESTED_TEMPLATES = {"templates.business_hours": "Business hours",
                    "templates.after_hours": "After hours",
                    "templates.voicemail": "Voicemail"}


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

    name: str  # "sqlite" | "postgresql"
    bucket: str  # started_at as a UTC quarter-hour number

    @classmethod
    def named(cls, name: str) -> Dialect:
        if name == "postgresql":
            return cls(name, bucket=f"CAST(FLOOR(EXTRACT(EPOCH FROM started_at) / "
                                    f"{BUCKET_SECONDS}) AS BIGINT)")
        return cls(name, bucket=f"CAST(strftime('%s', started_at) AS INTEGER) / "
                                f"{BUCKET_SECONDS}")

    @classmethod
    def of(cls, session: Session) -> Dialect:
        return cls.named(session.get_bind().dialect.name)

    def seconds(self, later: str, earlier: str) -> str:
        """Seconds from one timestamp column to a later one, as a number."""
        if self.name == "postgresql":
            return f"EXTRACT(EPOCH FROM ({later} - {earlier}))"
        return f"(julianday({later}) - julianday({earlier})) * 86400.0"

    def reply_until(self, sent: str) -> str:
        """The end of the reply window after a text-back created at column `sent`."""
        if self.name == "postgresql":
            return f"{sent} + INTERVAL '{REPLY_WINDOW_DAYS} days'"
        # SQLite keeps UTC times as 'YYYY-MM-DD HH:MM:SS.ffffff' text: this compares with
        # them in time order (to the millisecond)
        return f"strftime('%Y-%m-%d %H:%M:%f', {sent}, '+{REPLY_WINDOW_DAYS} days')"


def _in(values: tuple[str, ...]) -> str:
    """A constant IN list (the values are this module's own words, never input)."""
    return "(" + ", ".join(f"'{value}'" for value in values) + ")"


def _bounds(period: Period) -> dict[str, Any]:
    return {"start": period.start, "end": period.end}


_TIME_PARAMS = (bindparam("start", type_=UTCDateTime()), bindparam("end", type_=UTCDateTime()))


def _missed_calls_cte(d: Dialect) -> str:
    """`missed`: each missed inbound call of the period with its text-back, when that left,
    the customer's first reply within the reply window, whether a network reported on it,
    and the caller's contact dates. One seek per call on ix_calls_missed_started, the
    unique idempotency key, then index-only look-ups on ix_message_events_message_status_at
    and ix_messages_number_direction_created.

    A query that reads `missed` once gets it inlined, so look-ups it does not use are never
    made; one that reads it several times gets it materialised, so each is made once."""
    return f"""
    WITH missed AS (
      SELECT c.contact_id, c.decision, c.skip_reason, c.started_at, c.ended_at,
             m.status, m.number AS sent_to, m.created_at AS sent_created,
             m.template, m.variant,
             k.contacted_at, k.opted_out_at, k.booked_at,
             (SELECT MIN(e.at) FROM message_events e
               WHERE e.message_id = m.id AND e.status IN {_in(LEFT)}) AS left_at,
             (SELECT MIN(i.created_at) FROM messages i
               WHERE i.number = m.number AND i.direction = 'in'
                 AND i.created_at >= m.created_at
                 AND i.created_at < {d.reply_until("m.created_at")}) AS reply_at,
             CASE WHEN EXISTS (SELECT 1 FROM message_events r WHERE r.message_id = m.id
                                 AND r.status IN {_in(REPORTED)}) THEN 1 ELSE 0 END
               AS reported
      FROM calls c
      LEFT JOIN messages m ON m.idempotency_key = c.linkedid || :suffix
      LEFT JOIN contacts k ON k.id = c.contact_id
      WHERE c.missed = :yes AND c.started_at >= :start AND c.started_at < :end
        AND c.direction = 'inbound'
    )"""


def _middle(rows: str) -> str:
    """The median of the `seconds` column of CTE `rows`: the mean of its middle one or two
    values, which the database sorts and picks (LIMIT 1 or 2 from the middle)."""
    count = f"(SELECT COUNT(*) FROM {rows})"
    return f"""(SELECT AVG(seconds) FROM (
        SELECT seconds FROM {rows} ORDER BY seconds
        LIMIT 2 - {count} % 2 OFFSET ({count} - 1) / 2) AS middle)"""


def _arm_column(n: int, variant: str) -> str:
    """A column name prefix PostgreSQL leaves as it is (unquoted names fold to lower case)."""
    return f"t{n}{variant.lower()}"


def _variant_columns() -> str:
    """Texts sent, replied and booked for each tested template and variant (t0a_sent…),
    read from the `arms` CTE: a fixed set of columns, so the A/B table comes out of the
    same statement as the key figures."""
    columns = []
    for n, key in enumerate(TESTED_TEMPLATES):
        for variant in VARIANTS:
            name = _arm_column(n, variant)
            columns += [f"(SELECT {what} FROM arms WHERE template = '{key}' "
                        f"AND variant = '{variant}') AS {name}_{what}"
                        for what in ("sent", "replied", "booked")]
    return ",\n      ".join(columns)


def _figures_sql(d: Dialect) -> str:
    """Every key figure and the A/B counts in one statement, so the period's missed calls
    are looked up once."""
    return _missed_calls_cte(d) + f""",
    text_delays AS (
      SELECT {d.seconds("left_at", "ended_at")} AS seconds
      FROM missed WHERE left_at IS NOT NULL
    ),
    replies AS (
      SELECT DISTINCT sent_to, contacted_at, reply_at
      FROM missed WHERE left_at IS NOT NULL AND reply_at IS NOT NULL
    ),
    answers AS (
      SELECT reply_at, contacted_at,
             (SELECT MIN(s.created_at) FROM messages s
               WHERE s.number = replies.sent_to AND s.direction = 'out'
                 AND s.kind = '{STAFF_REPLY}' AND s.created_at >= replies.reply_at)
               AS staff_reply_at
      FROM replies
    ),
    arms AS (
      SELECT template, variant, COUNT(*) AS sent,
             SUM(CASE WHEN reply_at IS NOT NULL THEN 1 ELSE 0 END) AS replied,
             SUM(CASE WHEN booked_at >= started_at THEN 1 ELSE 0 END) AS booked
      FROM missed WHERE variant IS NOT NULL AND left_at IS NOT NULL
      GROUP BY template, variant
    ),
    response_delays AS (
      SELECT {d.seconds("answered_at", "reply_at")} AS seconds
      FROM (SELECT reply_at,
                   CASE WHEN contacted_at >= reply_at
                             AND (staff_reply_at IS NULL OR contacted_at < staff_reply_at)
                        THEN contacted_at ELSE staff_reply_at END AS answered_at
            FROM answers) AS answered
      WHERE answered_at IS NOT NULL
    )
    SELECT
      COUNT(*) AS missed,
      SUM(CASE WHEN decision = 'skip' AND skip_reason IN {_in(UNCONTACTABLE)}
               THEN 0 ELSE 1 END) AS contactable,
      SUM(CASE WHEN left_at IS NOT NULL THEN 1 ELSE 0 END) AS texted,
      SUM(CASE WHEN status = 'delivered' THEN 1 ELSE 0 END) AS delivered,
      SUM(reported) AS reported,
      SUM(CASE WHEN left_at IS NOT NULL AND reply_at IS NOT NULL
          THEN 1 ELSE 0 END) AS replied,
      SUM(CASE WHEN contacted_at >= started_at THEN 1 ELSE 0 END) AS contacted,
      SUM(CASE WHEN left_at IS NOT NULL AND opted_out_at >= sent_created
          THEN 1 ELSE 0 END) AS opted_out,
      SUM(CASE WHEN contacted_at >= started_at
                    OR (left_at IS NOT NULL AND reply_at IS NOT NULL)
          THEN 1 ELSE 0 END) AS recovered,
      SUM(CASE WHEN booked_at >= started_at THEN 1 ELSE 0 END) AS booked,
      COUNT(DISTINCT CASE WHEN booked_at >= started_at THEN contact_id END)
        AS booked_customers,
      {_middle("text_delays")} AS median_seconds,
      (SELECT COUNT(*) FROM replies) AS replies,
      (SELECT COUNT(*) FROM response_delays) AS answered,
      {_middle("response_delays")} AS response_seconds,
      {_variant_columns()}
    FROM missed"""


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
    booked: int = 0  # missed calls whose caller booked a job afterwards
    booked_customers: int = 0  # the same, each customer once: the jobs
    median_seconds: float | None = None
    replies: int = 0  # customer replies to text-backs (staff response time)
    answered: int = 0  # of those, answered by staff
    response_seconds: float | None = None  # median wait for staff's answer
    # (template, variant, texts sent, replied within 7 days, booked) per A/B arm with texts
    variants: tuple[tuple[str, str, int, int, int], ...] = ()


def buckets(session: Session, period: Period) -> list[tuple[dt.datetime, int, int]]:
    """(UTC quarter-hour start, inbound calls, missed) for every quarter hour with calls."""
    d = Dialect.of(session)
    return [(dt.datetime.fromtimestamp(int(row.bucket) * BUCKET_SECONDS, dt.UTC),
             int(row.calls), int(row.missed or 0))
            for row in _query(session, _buckets_sql(d), **_bounds(period))]


def counts(session: Session, period: Period, inbound: int) -> Counts:
    row = _query(session, _figures_sql(Dialect.of(session)), **_bounds(period)).one()
    values = {key: int(getattr(row, key) or 0) for key in (
        "missed", "contactable", "texted", "delivered", "reported", "replied", "contacted",
        "opted_out", "recovered", "booked", "booked_customers", "replies", "answered")}
    seconds = {key: None if getattr(row, key) is None else float(getattr(row, key))
               for key in ("median_seconds", "response_seconds")}
    arms = tuple(
        (key, variant, *(int(getattr(row, f"{_arm_column(n, variant)}_{what}") or 0)
                         for what in ("sent", "replied", "booked")))
        for n, key in enumerate(TESTED_TEMPLATES) for variant in VARIANTS)
    return Counts(inbound=inbound, **values, **seconds,
                  variants=tuple(arm for arm in arms if arm[2]))


# ----------------------------------------------------------------- what the page shows


@dataclass(frozen=True)
class Kpi:
    name: str
    value: str  # "42%", "1 min 20 s", "n/a"
    detail: str  # the fraction or the reason behind it
    slug: str


def _fine(value: float) -> str:
    """A percentage or point figure: one decimal under 10, where bookings live (0.4%, not
    0%), whole numbers above; "5.0" reads as "5"."""
    if abs(value) >= 10:
        return str(round(value))
    text = f"{value:.1f}"
    return "0" if text in ("0.0", "-0.0") else text.removesuffix(".0")


def _share(part: int, whole: int) -> str:
    """part / whole as a percentage for small rates (booking rates): "0.4%", "12%"."""
    return f"{_fine(100 * part / whole)}%" if whole else "n/a"


def _points(value: float) -> str:
    """A difference in percentage points: "1 point", "0.4 points", "12 points"."""
    shown = _fine(abs(value))
    return f"{shown} point{'' if shown == '1' else 's'}"


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
        _response_kpi(c),
        Kpi("Booked", f"{c.booked:,}",
            f"{_share(c.booked, c.missed)} of {c.missed:,} missed calls "
            "booked a job afterwards" if c.missed else "no missed calls in this period",
            "booked"),
    ]
    if job_value > 0:
        estimate = c.recovered * close_rate * job_value
        out.append(Kpi("Revenue estimate", f"{estimate:,.0f}",
                       f"{c.recovered:,} recovered leads × {close_rate:g} close rate × "
                       f"{job_value:,.0f} per job", "revenue"))
        out.append(Kpi("Booked revenue", f"{c.booked_customers * job_value:,.0f}",
                       f"{c.booked_customers:,} booked jobs × {job_value:,.0f} per job",
                       "booked-revenue"))
    else:
        out.append(Kpi("Recovered leads", f"{c.recovered:,}", "replied or reached by staff "
                       "(set business.average_job_value for a revenue estimate)", "recovered"))
    return out


def _response_kpi(c: Counts) -> Kpi:
    name, slug = "Staff response time", "response"
    if c.replies == 0:
        return Kpi(name, "n/a", "no replies to text-backs in this period", slug)
    waiting = c.replies - c.answered
    if c.response_seconds is None:
        return Kpi(name, "n/a", f"none of {c.replies:,} replies answered yet", slug)
    detail = f"median from a customer's reply to staff's first answer ({c.answered:,} " \
             f"answered" + (f", {waiting:,} not yet)" if waiting else ")")
    return Kpi(name, format_seconds(c.response_seconds), detail, slug)


# ----------------------------------------------------------------- A/B tests


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
        if _fine(self.points) == "0":
            text = "0 points"
        else:
            text = f"{'+' if self.points > 0 else '-'}{_points(self.points)}"
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
    gap = f"{_points(points)} {'better' if points > 0 else 'worse'}"
    sizes = f"{n_a:,} and {n_b:,} texts"
    chance = "p < 0.001" if p < 0.001 else f"p = {p:.3f}"
    if _fine(points) == "0":
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
        return _share(self.replied, self.sent)

    @property
    def booking_rate(self) -> str:
        return _share(self.booked, self.sent)


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
        figures=figures, tests=ab_tests(figures.variants),
        reply_days=REPLY_WINDOW_DAYS, definitions=DEFINITIONS)
