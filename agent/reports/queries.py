"""The dashboard's figures as SQL: calls per quarter hour, and each missed call with
everything about it, for a span of whole days.

The dashboard reads these for the days agent.reports.rollups has not stored yet and for
today: bucket_rows (calls per UTC quarter hour) and missed_rows (one row per missed
inbound call with its text-back, when that left, the first reply, staff's first answer
and the contact's dates), each missed call looked up once through the call indexes
(ix_calls_started, ix_calls_missed_started), the unique idempotency key that ties a
call to its text-back, and index-only look-ups for the rest. Calls are counted in UTC
quarter-hour buckets and folded into local days and hours in Python, because SQLite
has no time zones and a quarter hour fits every real UTC offset (India +5:30, Nepal
+5:45) and every DST change.

figures_sql is the same figures as one aggregate statement over a period: the raw
reference the daily figures are tested against. What each count means, as the owner
reads it, is written in agent.reports.kpis.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import bindparam, text
from sqlalchemy.orm import Session

from agent.messages.kinds import (
    STAFF_REPLY,  # the inbox's replies (agent.messages.desk)
    TEXTBACK,
)
from agent.reports.abtest import TESTED_TEMPLATES, VARIANTS
from agent.reports.period import Period
from agent.store.models import UTCDateTime

log = logging.getLogger(__name__)

BUCKET_SECONDS = 900
REPLY_WINDOW_DAYS = 7
# skips that mean the number cannot take an SMS at all (agent.calls.policy)
UNCONTACTABLE = ("withheld", "invalid_number", "fixed_line")
LEFT = ("submitted", "sent", "delivered")  # the text left textback
REPORTED = ("sent", "delivered")  # accepted by a network that reports delivery
# a text that left and then failed was reported on too: a provider said it was undelivered


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

    def reply_since(self, reply: str) -> str:
        """The earliest a text-back could be created and still claim a reply at `reply`
        (the reply window before it)."""
        if self.name == "postgresql":
            return f"{reply} - INTERVAL '{REPLY_WINDOW_DAYS} days'"
        return f"strftime('%Y-%m-%d %H:%M:%f', {reply}, '-{REPLY_WINDOW_DAYS} days')"

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


def _textback_lookups(d: Dialect) -> str:
    """The columns and rows both statements over a period's missed calls share: each
    missed inbound call with its text-back (m) and contact (k), when the text left, the
    customer's first reply within the reply window, and whether a network reported on it
    (sent or delivered, or failed after it left: a provider's "undelivered")."""
    return f"""(SELECT MIN(e.at) FROM message_events e
               WHERE e.message_id = m.id AND e.status IN {_in(LEFT)}) AS left_at,
             (SELECT MIN(i.created_at) FROM messages i
               WHERE i.number = m.number AND i.direction = 'in'
                 AND i.created_at >= m.created_at
                 AND i.created_at < {d.reply_until("m.created_at")}) AS reply_at,
             CASE WHEN EXISTS (SELECT 1 FROM message_events r WHERE r.message_id = m.id
                                 AND (r.status IN {_in(REPORTED)}
                                      OR (m.status = 'failed' AND r.status IN {_in(LEFT)})))
                  THEN 1 ELSE 0 END
               AS reported
      FROM calls c
      LEFT JOIN messages m ON m.idempotency_key = c.linkedid || :suffix
      LEFT JOIN contacts k ON k.id = c.contact_id
      WHERE c.missed = :yes AND c.started_at >= :start AND c.started_at < :end
        AND c.direction = 'inbound'"""


def _missed_calls_cte(d: Dialect) -> str:
    """`missed`: each missed inbound call of the period with its text-back, when that left,
    the customer's first reply within the reply window, whether a network reported on it
    (sent or delivered, or failed after it left: a provider's "undelivered"),
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
             {_textback_lookups(d)}
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


def figures_sql(d: Dialect) -> str:
    """Every key figure and the A/B counts in one statement, so the period's missed calls
    are looked up once. The dashboard no longer reads it (agent.reports.rollups counts
    days from missed_rows_sql): it is the raw reference the tests hold the daily figures
    to."""
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
               WHERE s.number = replies.sent_to
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


def buckets_sql(d: Dialect) -> str:
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
            for row in _query(session, buckets_sql(d), **_bounds(period))]


def counts(session: Session, period: Period, inbound: int) -> Counts:
    row = _query(session, figures_sql(Dialect.of(session)), **_bounds(period)).one()
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


def missed_rows_sql(d: Dialect) -> str:
    """One row per missed inbound call of [start, end), with what the daily figures
    (agent.reports.rollups) need of it: its text-back, when that left, whether a network
    reported on it, the customer's first reply within the reply window (its id, for its
    words), staff's first answer to that reply, and the caller's contact dates. The same
    look-ups as the figures statement; the staff answer is index-only on
    ix_messages_number_kind_created."""
    # x is materialised: inlined, each use of x.reply_at would run its look-up again
    return f"""
    WITH x AS MATERIALIZED (
      SELECT c.contact_id, c.decision, c.skip_reason, c.started_at, c.ended_at,
             m.id AS message_id, m.status, m.number AS sent_to, m.created_at AS sent_created,
             m.template, m.variant, m.transport, m.segments,
             k.contacted_at, k.opted_out_at, k.booked_at, k.qualified_at,
             {_textback_lookups(d)}
    )
    SELECT x.*,
           (SELECT i.id FROM messages i
             WHERE i.number = x.sent_to AND i.direction = 'in' AND i.created_at = x.reply_at
             ORDER BY i.id LIMIT 1) AS reply_id,
           (SELECT MIN(s.created_at) FROM messages s
             WHERE s.number = x.sent_to AND s.kind = '{STAFF_REPLY}'
               AND s.created_at >= x.reply_at) AS staff_reply_at,
           CASE WHEN x.reply_at IS NOT NULL AND EXISTS (
                  SELECT 1 FROM messages o
                   WHERE o.number = x.sent_to AND o.kind = '{TEXTBACK}'
                     AND o.created_at > {d.reply_since("x.reply_at")}
                     AND o.created_at <= x.reply_at AND o.id <> x.message_id)
                THEN 1 ELSE 0 END AS shared
    FROM x"""


def missed_rows(session: Session, start: dt.datetime, end: dt.datetime) -> list[Any]:
    """The rows of missed_rows_sql, with every time as an aware UTC datetime."""
    rows = _query(session, missed_rows_sql(Dialect.of(session)), start=start, end=end)
    kind = UTCDateTime()
    name = session.get_bind().dialect
    times = ("started_at", "ended_at", "sent_created", "contacted_at", "opted_out_at",
             "booked_at", "qualified_at", "left_at", "reply_at", "staff_reply_at")
    out = []
    for row in rows:
        values = row._asdict()
        for key in times:
            value = values[key]
            if isinstance(value, str):  # SQLite's subqueries return the stored text
                value = dt.datetime.fromisoformat(value)
            values[key] = kind.process_result_value(value, name)
        out.append(values)
    return out


def bucket_rows(session: Session, start: dt.datetime, end: dt.datetime
                ) -> list[tuple[dt.datetime, int, int]]:
    """(UTC quarter-hour start, inbound calls, missed) for every quarter hour of
    [start, end) with calls."""
    d = Dialect.of(session)
    return [(dt.datetime.fromtimestamp(int(row.bucket) * BUCKET_SECONDS, dt.UTC),
             int(row.calls), int(row.missed or 0))
            for row in _query(session, buckets_sql(d), start=start, end=end)]


def message_bodies(session: Session, ids: list[int]) -> dict[int, str]:
    """The words of the given messages (the customers' replies, for their intent)."""
    statement = text("SELECT id, body FROM messages WHERE id IN :ids").bindparams(
        bindparam("ids", expanding=True))
    out: dict[int, str] = {}
    for at in range(0, len(ids), 500):
        out.update((int(row.id), row.body)
                   for row in session.execute(statement, {"ids": ids[at:at + 500]}))
    return out
