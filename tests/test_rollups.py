"""The dashboard's daily figures (agent.reports.rollups) equal the figures counted from
the calls themselves, on random histories in time zones with DST changes, half
offsets and 45-minute offsets, read once in the middle of the history and again after
more of it was written (replies, delivery reports, staff answers, bookings, qualified
marks, opt-outs, new calls): on SQLite and PostgreSQL, against the raw figures
statement of agent.reports.queries and against the same counting with nothing stored."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete
from sqlalchemy.orm import Session

from agent.reports import queries, rollups
from agent.reports.period import Period
from agent.rules import settings as rules
from agent.store.models import (
    AuditEntry,
    Call,
    Contact,
    Message,
    MessageEvent,
    ReportDay,
    ReportMark,
    Setting,
)

DATABASES = ("sqlite", "postgresql")
ZONES = ("America/Chicago", "Europe/London", "Australia/Lord_Howe", "Asia/Kathmandu",
         "America/St_Johns", "UTC")
# a few days around each DST change of 2026: the US in March and November, Europe and
# Lord Howe (a half-hour change) at the start of October and April
STARTS = (dt.datetime(2026, 3, 6, tzinfo=dt.UTC), dt.datetime(2026, 10, 23, tzinfo=dt.UTC),
          dt.datetime(2026, 10, 30, tzinfo=dt.UTC), dt.datetime(2026, 4, 3, tzinfo=dt.UTC),
          dt.datetime(2026, 9, 25, tzinfo=dt.UTC))
SPAN = 9 * 24 * 60  # minutes of history
BODIES = ("can you come tomorrow morning", "how much for a new boiler", "ok thanks",
          "water everywhere, burst pipe")
MINUTE = dt.timedelta(minutes=1)

calls_st = st.lists(st.fixed_dictionaries({
    "at": st.integers(0, SPAN),  # minutes after the start
    "missed": st.integers(0, 3).map(bool),  # mostly missed
    "outbound": st.integers(0, 9).map(lambda n: n == 0),
    "caller": st.integers(0, 5) | st.integers(0, 1),  # often the same few callers
    "decision": st.sampled_from(("send", "send", "send", "withheld", "fixed_line",
                                 "cooldown")),
    "left_after": st.one_of(st.none(), st.integers(0, 400)),  # seconds
    "history": st.sampled_from((("sent", "delivered"), ("sent", "failed"), ("submitted",),
                                ("sent",))),
    "variant": st.sampled_from((None, "A", "B")),
    "reply_after": st.one_of(st.none(), st.integers(1, 3 * 24 * 60),
                             st.integers(1, 9 * 24 * 60)),  # minutes
    "body": st.sampled_from(BODIES),
    "staff_after": st.one_of(st.none(), st.integers(0, 3000)),  # minutes after the reply
}), min_size=1, max_size=25)
contacts_st = st.lists(st.fixed_dictionaries({
    what: st.one_of(st.none(), st.integers(0, SPAN + 2000))
    for what in ("contacted", "booked", "opted_out", "qualified")}), min_size=6, max_size=6)


def _clear(session: Session) -> None:
    session.rollback()  # what a failed example left
    for table in (MessageEvent, Message, Call, Contact, ReportDay, ReportMark, Setting,
                  AuditEntry):
        session.execute(delete(table))
    session.commit()


def _write(session: Session, start: dt.datetime, calls: list[dict], contacts: list[dict],
           after: dt.datetime | None, until: dt.datetime) -> None:
    """What of the history happened in (after, until]: every row stamped when it was
    written, as the agent and the inbox write them."""

    def now(at: dt.datetime) -> bool:
        return (after is None or at > after) and at <= until

    people = []
    for n, dates in enumerate(contacts):
        number = f"+1312555{n:04d}"
        contact = session.query(Contact).filter_by(number=number).one_or_none()
        if contact is None:
            contact = Contact(number=number, created_at=start - dt.timedelta(days=1))
            session.add(contact)
        for what, minutes in dates.items():
            if minutes is not None and now(start + minutes * MINUTE):
                setattr(contact, f"{what}_at", start + minutes * MINUTE)
        people.append(contact)
    session.flush()
    for n, call in enumerate(calls):
        began = start + call["at"] * MINUTE
        ended = began + dt.timedelta(seconds=30)
        person = people[call["caller"]]
        if now(ended):
            skip = None if call["decision"] == "send" else call["decision"]
            session.add(Call(linkedid=f"17000.{n}", caller=person.number, did="+15550000000",
                             direction="outbound" if call["outbound"] else "inbound",
                             missed=call["missed"], started_at=began, ended_at=ended,
                             decision="skip" if skip else "send", skip_reason=skip,
                             contact_id=person.id))
            session.flush()
        texted = call["missed"] and not call["outbound"] and call["decision"] == "send"
        if not texted or ended > until:
            continue
        if now(ended):
            session.add(Message(direction="out", kind="textback", number=person.number,
                                idempotency_key=f"17000.{n}:textback", body="Sorry",
                                status="queued", transport="gsm", segments=1,
                                template="templates.business_hours", variant=call["variant"],
                                created_at=ended, updated_at=ended))
            session.flush()
        message = session.query(Message).filter_by(idempotency_key=f"17000.{n}:textback").one()
        if call["left_after"] is not None:
            left = ended + dt.timedelta(seconds=call["left_after"])
            for step, status in enumerate(call["history"]):
                at = left + dt.timedelta(seconds=5 * step)
                if now(at):
                    message.status = status
                    session.add(MessageEvent(message_id=message.id, status=status, at=at))
        if call["reply_after"] is not None:
            replied = ended + call["reply_after"] * MINUTE
            if now(replied):
                session.add(Message(direction="in", kind="reply", number=person.number,
                                    body=call["body"], status="received", created_at=replied,
                                    updated_at=replied))
            if call["staff_after"] is not None:
                answered = replied + call["staff_after"] * MINUTE
                if now(answered):
                    session.add(Message(direction="out", kind="staff_reply", status="sent",
                                        number=person.number, body="On our way",
                                        created_at=answered, updated_at=answered))
    session.commit()


def _raw(session: Session, zone: ZoneInfo, first: dt.date, last: dt.date) -> queries.Counts:
    start = dt.datetime.combine(first, dt.time(), zone).astimezone(dt.UTC)
    end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), zone).astimezone(dt.UTC)
    return queries.counts(session, Period(first, last, start, end, None), 0)


@pytest.mark.clock
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(zone_name=st.sampled_from(ZONES), start=st.sampled_from(STARTS), calls=calls_st,
       contacts=contacts_st, middle=st.integers(2 * 24 * 60, 6 * 24 * 60),
       span=st.tuples(st.integers(0, 10), st.integers(0, 10)))
def test_daily_figures_equal_the_raw_figures(session: Session, zone_name: str,
                                             start: dt.datetime, calls: list[dict],
                                             contacts: list[dict], middle: int,
                                             span: tuple[int, int]) -> None:
    _clear(session)
    zone = ZoneInfo(zone_name)
    rules.set(session, "business.timezone", zone_name, start)
    session.commit()
    first_read = start + middle * MINUTE
    second_read = start + (SPAN + 2000) * MINUTE
    days = sorted(span)
    first = start.astimezone(zone).date() + dt.timedelta(days=days[0] - 1)
    last = start.astimezone(zone).date() + dt.timedelta(days=days[1])
    _write(session, start, calls, contacts, None, first_read)
    read = rollups.figures(session, zone, first, last, first_read)
    assert read.to_json() == rollups.live(session, zone, first, last).to_json()

    _write(session, start, calls, contacts, first_read, second_read)
    read = rollups.figures(session, zone, first, last, second_read)
    assert read.to_json() == rollups.live(session, zone, first, last).to_json()
    assert session.query(ReportDay).count() > 0  # the days before the read were stored

    raw = _raw(session, zone, first, last)
    c = read.counts
    for key in ("missed", "contactable", "texted", "delivered", "reported", "replied",
                "contacted", "opted_out", "recovered", "booked"):
        assert c[key] == getattr(raw, key), key
    assert len(read.booked_contacts) == raw.booked_customers
    assert read.replies == raw.replies
    assert sum(read.response_histogram().values()) == raw.answered
    for mine, theirs in ((rollups.percentile(read.text_delays, 50), raw.median_seconds),
                         (rollups.percentile(read.response_histogram(), 50),
                          raw.response_seconds)):
        # whole seconds here, the exact instants there
        assert (mine is None) == (theirs is None)
        if mine is not None and theirs is not None:
            assert abs(mine - theirs) < 1


def test_a_reply_two_days_claim_counts_once(session: Session) -> None:
    """Missed at 23:00 and again at 09:00 the next morning, texted both times, one reply
    at 10:00: both text-backs claim it (the first reply after each), but the period has
    one reply, answered after 20 minutes, as the raw statement counts it."""
    _clear(session)
    zone = ZoneInfo("America/Chicago")
    rules.set(session, "business.timezone", zone.key, STARTS[0])
    monday = dt.datetime(2026, 3, 2, 23, 0, tzinfo=zone).astimezone(dt.UTC)
    calls = [{"at": 0, "missed": True, "outbound": False, "caller": 0, "decision": "send",
              "left_after": 5, "history": ("sent", "delivered"), "variant": None,
              "reply_after": None, "body": BODIES[2], "staff_after": None},
             {"at": 10 * 60, "missed": True, "outbound": False, "caller": 0,
              "decision": "send", "left_after": 5, "history": ("sent", "delivered"),
              "variant": None, "reply_after": 60, "body": BODIES[2], "staff_after": 20}]
    none = {"contacted": None, "booked": None, "opted_out": None, "qualified": None}
    _write(session, monday, calls, [none], None, monday + dt.timedelta(days=3))
    first, last = dt.date(2026, 3, 2), dt.date(2026, 3, 3)
    read = rollups.figures(session, zone, first, last, monday + dt.timedelta(days=3))
    assert session.query(ReportDay).count() == 2  # counted apart, a day each
    assert read.replies == 1 == _raw(session, zone, first, last).replies
    assert rollups.percentile(read.response_histogram(), 50) == 20 * 60
