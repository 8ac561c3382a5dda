"""The dashboard as an owner reads it: every figure checked against a small day of calls
whose KPIs are worked out by hand below, the business time zone's day boundaries, an
empty period, the SIP trunk's unknown delivery, staff access, and query plans that stay
on the indexes."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from conftest import login
from flask.testing import FlaskClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from agent import settings
from agent.models import Call, Contact, Message, MessageEvent
from web import dashboard

# Tuesday 1 December 2026; Chicago is UTC-6 then, so that local day is
# 06:00 UTC on the 1st to 06:00 UTC on the 2nd
DAY = "from=2026-12-01&to=2026-12-01"
NOON_CHICAGO = dt.datetime(2026, 12, 1, 18, 0, tzinfo=dt.UTC)
_numbers = iter(range(1, 10_000))


def _call(session: Session, at: dt.datetime, *, missed: bool = True, direction: str = "inbound",
          caller: str | None = "auto", contact: Contact | None = None, **fields: object) -> Call:
    n = next(_numbers)
    call = Call(linkedid=f"1800000000.{n}",
                caller=f"+1312555{n:04d}" if caller == "auto" else caller,
                did="+15559990000", direction=direction, missed=missed,
                reason="noanswer" if missed else None, started_at=at,
                ended_at=at + dt.timedelta(seconds=20),
                contact_id=contact.id if contact else None, **fields)
    session.add(call)
    session.flush()
    return call


def _contact(session: Session, number: str, **fields: object) -> Contact:
    contact = Contact(number=number, created_at=NOON_CHICAGO - dt.timedelta(days=30), **fields)
    session.add(contact)
    session.flush()
    return contact


def _textback(session: Session, call: Call, after_seconds: int,
              history: tuple[str, ...], transport: str = "gsm") -> Message:
    """A text-back that left `after_seconds` after the call ended, with its status history."""
    left = call.ended_at + dt.timedelta(seconds=after_seconds)
    message = Message(direction="out", kind="textback", idempotency_key=f"{call.linkedid}:textback",
                      number=call.caller, body="Sorry we missed you", status=history[-1],
                      transport=transport, created_at=call.ended_at, updated_at=left,
                      call_id=call.id, contact_id=call.contact_id)
    session.add(message)
    session.flush()
    for n, status in enumerate(("queued", *history)):
        at = call.ended_at if status == "queued" else left + dt.timedelta(seconds=n - 1)
        session.add(MessageEvent(message_id=message.id, status=status, at=at))
    return message


def _incoming(session: Session, number: str, at: dt.datetime) -> None:
    session.add(Message(direction="in", kind="reply", number=number, body="yes please",
                        status="received", created_at=at, updated_at=at))


def seed_one_day(session: Session) -> None:
    """Tuesday 1 December in Chicago:

    inbound in the day: 9 (2 answered in the morning, 1 answered at 23:59 local,
    6 missed at lunch)            → missed-call rate 6/9 = 67%
    missed: 1 withheld, 1 landline → contactability 4/6 = 67%
    texted: 3 of the 6 missed      → send rate 3/6 = 50%
    delivery reports: 2 texts (GSM), 1 delivered → 50%; the SIP text is not counted
    left 30 s, 90 s, 60 s after the call ended → median 1 min
    1 reply within 7 days (another one 8 days later does not count) → 1/3 = 33%
    1 caller reached by staff after the call → contacted 1/6 = 17%
    1 opt-out after a text-back     → 1/3 = 33%
    recovered leads: 1 (replied and reached)
    """
    settings.set(session, "business.timezone", "America/Chicago", NOON_CHICAGO)
    morning = dt.datetime(2026, 12, 1, 15, 0, tzinfo=dt.UTC)
    _call(session, morning, missed=False, answered_by="PJSIP/101")
    _call(session, morning + dt.timedelta(minutes=10), missed=False, answered_by="PJSIP/101")

    jane = _contact(session, "+13125550101", name="Jane",
                    contacted_at=NOON_CHICAGO + dt.timedelta(hours=3))
    replied = _call(session, NOON_CHICAGO, caller=jane.number, contact=jane, decision="send")
    _textback(session, replied, 30, ("sent", "delivered"))
    _incoming(session, jane.number, NOON_CHICAGO + dt.timedelta(hours=1))

    bob = _contact(session, "+13125550102", opted_out=True,
                   opted_out_at=NOON_CHICAGO + dt.timedelta(hours=2))
    failed = _call(session, NOON_CHICAGO + dt.timedelta(minutes=5), caller=bob.number,
                   contact=bob, decision="send")
    _textback(session, failed, 90, ("sent", "failed"))

    sip = _call(session, NOON_CHICAGO + dt.timedelta(minutes=10), decision="send")
    _textback(session, sip, 60, ("submitted",), transport="sip")
    _incoming(session, sip.caller or "", NOON_CHICAGO + dt.timedelta(days=8))

    _call(session, NOON_CHICAGO + dt.timedelta(minutes=20), caller=None, decision="skip",
          skip_reason="withheld")
    _call(session, NOON_CHICAGO + dt.timedelta(minutes=30), decision="skip",
          skip_reason="fixed_line")
    early = _contact(session, "+13125550108", contacted_at=NOON_CHICAGO - dt.timedelta(days=1))
    _call(session, NOON_CHICAGO + dt.timedelta(minutes=40), caller=early.number, contact=early,
          decision="skip", skip_reason="cooldown")

    # not in the figures: an outbound call, and calls either side of the local day
    _call(session, NOON_CHICAGO, direction="outbound")
    _call(session, dt.datetime(2026, 12, 1, 5, 59, tzinfo=dt.UTC))  # 23:59 on the 30th
    _call(session, dt.datetime(2026, 12, 2, 6, 0, tzinfo=dt.UTC))  # 00:00 on the 2nd
    # inside it, by a minute: 23:59 on the 1st
    _call(session, dt.datetime(2026, 12, 2, 5, 59, tzinfo=dt.UTC), missed=False,
          answered_by="PJSIP/102")
    session.commit()


def kpis(page: str) -> dict[str, tuple[str, str]]:
    """slug → (value, detail) as the page shows them."""
    found = re.findall(r'data-kpi="([a-z]+)">\s*<span class="kpi-name">[^<]*</span>\s*'
                       r'<span class="kpi-value">([^<]*)</span>\s*'
                       r'<span class="kpi-detail">([^<]*)</span>', page)
    return {slug: (value, detail) for slug, value, detail in found}


@pytest.fixture
def owner(client: FlaskClient, web_users: dict[str, str]) -> FlaskClient:
    login(client, "owner")
    return client


def test_every_figure_of_a_day_matches_the_hand_count(owner: FlaskClient, session: Session
                                                      ) -> None:
    seed_one_day(session)
    page = owner.get(f"/dashboard?{DAY}").get_data(as_text=True)
    shown = kpis(page)
    assert shown["inbound"] == ("9", "6 missed")
    assert shown["missed"] == ("67%", "6 of 9 inbound calls")
    assert shown["contactable"] == ("67%", "4 of 6 missed calls can take an SMS")
    assert shown["sent"] == ("50%", "3 of 6 missed calls texted")
    assert shown["delivery"] == ("50%", "1 of 2 texts with a delivery report")
    assert shown["time"][0] == "1 min"
    assert shown["reply"] == ("33%", "1 of 3 texts answered within 7 days")
    assert shown["contacted"] == ("17%", "1 of 6 missed callers reached by staff")
    assert shown["optout"] == ("33%", "1 of 3 texts followed by an opt-out")
    assert shown["recovered"][0] == "1"
    assert "revenue" not in shown  # no average job value set
    assert "Times in America/Chicago" in page or "times in America/Chicago" in page


def test_revenue_estimate_uses_close_rate_and_job_value(owner: FlaskClient, session: Session
                                                        ) -> None:
    seed_one_day(session)
    now = dt.datetime.now(dt.UTC)
    settings.set(session, "business.average_job_value", "400", now)
    settings.set(session, "business.close_rate", "0.5", now)
    session.commit()
    shown = kpis(owner.get(f"/dashboard?{DAY}").get_data(as_text=True))
    assert shown["revenue"][0] == "200"  # 1 recovered lead × 0.5 × 400
    assert "1 recovered leads × 0.5 close rate × 400 per job" in shown["revenue"][1]


def test_charts_show_the_day_and_the_lunch_hour(owner: FlaskClient, session: Session) -> None:
    seed_one_day(session)
    page = owner.get(f"/dashboard?{DAY}").get_data(as_text=True)
    assert page.count("<svg") == 2
    assert "<title>Tue 01 Dec: 9 calls, 6 missed</title>" in page
    # the six missed calls were at 12:00–12:40 in Chicago, not 18:00 UTC
    assert "Tue 12:00–13:00: 6 of 6 calls missed (100%)" in page
    assert "Tue 09:00–10:00: 0 of 2 calls missed (0%)" in page
    assert "Most missed:" in page


def test_an_empty_period_says_n_a_instead_of_dividing_by_zero(
        owner: FlaskClient, session: Session) -> None:
    seed_one_day(session)
    response = owner.get("/dashboard?from=2020-01-01&to=2020-01-07")
    assert response.status_code == 200
    shown = kpis(response.get_data(as_text=True))
    assert shown["inbound"] == ("0", "0 missed")
    for slug in ("missed", "contactable", "sent", "delivery", "time", "reply", "contacted",
                 "optout"):
        assert shown[slug][0] == "n/a", slug
    assert "Not enough calls yet" in response.get_data(as_text=True)


def test_the_sip_trunk_delivery_rate_is_unknown_not_zero(
        owner: FlaskClient, session: Session) -> None:
    settings.set(session, "business.timezone", "America/Chicago", NOON_CHICAGO)
    for minutes in (0, 5):
        call = _call(session, NOON_CHICAGO + dt.timedelta(minutes=minutes), decision="send")
        _textback(session, call, 10, ("submitted",), transport="sip")
    session.commit()
    shown = kpis(owner.get(f"/dashboard?{DAY}").get_data(as_text=True))
    assert shown["delivery"][0] == "n/a"
    assert "only reports “submitted”" in shown["delivery"][1]
    assert shown["sent"][0] == "100%"
    assert shown["time"][0] == "10 s"  # median of two equal delays


def test_the_default_period_is_the_last_30_local_days_with_today(
        owner: FlaskClient, session: Session) -> None:
    now = dt.datetime.now(dt.UTC)
    _call(session, now - dt.timedelta(minutes=5))
    _call(session, now - dt.timedelta(days=40))  # outside 30 days, inside 90
    session.commit()
    assert kpis(owner.get("/dashboard").get_data(as_text=True))["inbound"][0] == "1"
    assert kpis(owner.get("/dashboard?days=90").get_data(as_text=True))["inbound"][0] == "2"
    odd = owner.get("/dashboard?days=12").get_data(as_text=True)
    assert "Choose 7, 30 or 90 days; showing 30." in odd
    assert "is not a date" in owner.get("/dashboard?from=soon").get_data(as_text=True)


def test_front_desk_staff_see_the_dashboard_and_it_is_the_start_page(
        client: FlaskClient, web_users: dict[str, str], session: Session) -> None:
    seed_one_day(session)
    assert client.get("/dashboard").headers["Location"].startswith("/login?next=")
    login(client, "desk")
    assert client.get("/").headers["Location"] == "/dashboard"
    page = client.get(f"/dashboard?{DAY}").get_data(as_text=True)
    assert kpis(page)["missed"][0] == "67%"
    assert 'href="/dashboard">Dashboard</a>' in page


def test_period_boundaries_follow_the_business_time_zone() -> None:
    zone = dashboard.ZoneInfo("America/Chicago")
    period, errors = dashboard.parse_period({"from": "2026-11-01", "to": "2026-11-01"},
                                            dt.date(2026, 12, 1), zone)
    assert errors == []
    # the day DST ends in Chicago has 25 hours
    assert period.start == dt.datetime(2026, 11, 1, 5, 0, tzinfo=dt.UTC)
    assert period.end == dt.datetime(2026, 11, 2, 6, 0, tzinfo=dt.UTC)
    swapped, errors = dashboard.parse_period({"from": "2026-11-05", "to": "2026-11-01"},
                                             dt.date(2026, 12, 1), zone)
    assert (swapped.first, swapped.last) == (dt.date(2026, 11, 1), dt.date(2026, 11, 5))
    assert errors


def test_the_queries_read_the_call_indexes(session: Session) -> None:
    """With a million calls no dashboard query may scan the whole calls table."""
    d = dashboard.Dialect.of(session)
    params = {"start": "2026-11-01 00:00:00.000000", "end": "2026-12-01 00:00:00.000000",
              "yes": 1, "take": 1, "skip": 0, "suffix": ":textback"}
    for sql in (dashboard._buckets_sql(d), dashboard._kpi_sql(d), dashboard._median_sql(d)):
        plan = " / ".join(row[-1] for row in session.execute(text(f"EXPLAIN QUERY PLAN {sql}"),
                                                             params))
        assert "USING INDEX ix_calls_" in plan or "USING COVERING INDEX ix_calls_" in plan, plan
        assert not re.search(r"SCAN (c|calls)\b(?! USING)", plan), plan
        assert not re.search(r"SCAN (m|i|e|r|k)\b(?! USING)", plan), plan
