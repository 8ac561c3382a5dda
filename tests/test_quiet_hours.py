"""Quiet hours by the recipient's state, and the frequency cap, with `now` passed in."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from agent.calls import missed
from agent.calls.tracker import FinishedCall
from agent.messages import conversations, inbound, kinds, outbox, timers
from agent.rules import quiet_hours, settings
from agent.store.models import Call, Contact, Job, Message

pytestmark = pytest.mark.clock

DATABASES = ("sqlite", "postgresql")

UTC = dt.UTC
NY, CHI, DEN = (ZoneInfo(z) for z in ("America/New_York", "America/Chicago", "America/Denver"))

FLORIDA, CONNECTICUT, DALLAS, EL_PASO = ("+13055550142", "+12035550142", "+12145550142",
                                         "+19155550142")
RHODE_ISLAND, NEW_YORK, TOLL_FREE, LONDON = ("+14015550142", "+12125550142", "+18005550142",
                                             "+442079460958")
OKLAHOMA, CHICAGO = "+14055550142", "+13125550142"


def local(zone: ZoneInfo, *args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=zone).astimezone(UTC)


def next_allowed(number: str, now: dt.datetime, business: str = "08:00-21:00",
                 business_zone: str = "America/Chicago") -> dt.datetime:
    return quiet_hours.allowed_at(now, quiet_hours.window_for(number, business,
                                                                   business_zone))


# 2026-12-05 is a Saturday, 2026-12-06 a Sunday, 2026-12-07 a Monday
@pytest.mark.parametrize(
    ("number", "now", "expected"),
    [
        # Florida ends at 20:00, not 21:00; its panhandle is on Central time, so the
        # morning starts at 8:00 there (9:00 in Miami)
        (FLORIDA, local(NY, 2026, 12, 7, 20, 30), local(CHI, 2026, 12, 8, 8, 0)),
        (FLORIDA, local(NY, 2026, 12, 7, 19, 59), local(NY, 2026, 12, 7, 19, 59)),
        # New York keeps the federal 21:00
        (NEW_YORK, local(NY, 2026, 12, 7, 20, 30), local(NY, 2026, 12, 7, 20, 30)),
        # Connecticut starts at 9:00
        (CONNECTICUT, local(NY, 2026, 12, 7, 8, 30), local(NY, 2026, 12, 7, 9, 0)),
        # Oklahoma, in Central time: 20:00 there, seen from a business in New York
        (OKLAHOMA, local(NY, 2026, 12, 7, 21, 30), local(CHI, 2026, 12, 8, 8, 0)),
        # Texas: 9:00 on a Saturday, noon on a Sunday, 21:00 at night; the state spans
        # Central and Mountain time (El Paso), and a mobile number moves with its
        # owner, so a Dallas number too waits for the later start (Mountain) and stops
        # at the earlier end (Central)
        (DALLAS, local(CHI, 2026, 12, 5, 8, 0), local(DEN, 2026, 12, 5, 9, 0)),
        (DALLAS, local(CHI, 2026, 12, 6, 10, 0), local(DEN, 2026, 12, 6, 12, 0)),
        (DALLAS, local(CHI, 2026, 12, 5, 20, 59), local(CHI, 2026, 12, 5, 20, 59)),
        (DALLAS, local(CHI, 2026, 12, 5, 21, 30), local(DEN, 2026, 12, 6, 12, 0)),
        (EL_PASO, local(CHI, 2026, 12, 6, 12, 30), local(DEN, 2026, 12, 6, 12, 0)),
        # Rhode Island: 9–18 on weekdays, 10–17 at weekends
        (RHODE_ISLAND, local(NY, 2026, 12, 7, 18, 0), local(NY, 2026, 12, 8, 9, 0)),
        (RHODE_ISLAND, local(NY, 2026, 12, 5, 17, 0), local(NY, 2026, 12, 6, 10, 0)),
        (RHODE_ISLAND, local(NY, 2026, 12, 4, 18, 30), local(NY, 2026, 12, 5, 10, 0)),
        # a US number of unknown state (toll-free): the strictest window (Sunday
        # 12:00–17:00) in every mainland zone: 12:00 in Los Angeles, 15:00 in New York
        (TOLL_FREE, local(NY, 2026, 12, 6, 9, 0),
         local(ZoneInfo("America/Los_Angeles"), 2026, 12, 6, 12, 0)),
        # outside the US: the business's window in the number's own zone
        (LONDON, dt.datetime(2026, 12, 7, 7, 30, tzinfo=UTC),
         dt.datetime(2026, 12, 7, 8, 0, tzinfo=UTC)),
    ],
)
def test_each_state_keeps_its_own_hours_in_its_own_time(
        number: str, now: dt.datetime, expected: dt.datetime) -> None:
    assert next_allowed(number, now) == expected


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        # the night Chicago springs forward (8 March 2026): 2:00 does not exist there
        (local(CHI, 2026, 3, 8, 1, 30), local(CHI, 2026, 3, 8, 8, 0)),
        (local(CHI, 2026, 3, 7, 20, 59), local(CHI, 2026, 3, 7, 20, 59)),
        (local(CHI, 2026, 3, 7, 21, 0), local(CHI, 2026, 3, 8, 8, 0)),
        # and falls back (1 November 2026): 1:30 happens twice, 8:00 once
        (local(CHI, 2026, 11, 1, 1, 30), local(CHI, 2026, 11, 1, 8, 0)),
        (dt.datetime(2026, 11, 1, 7, 30, tzinfo=UTC), local(CHI, 2026, 11, 1, 8, 0)),
    ],
)
def test_chicago_across_daylight_saving(now: dt.datetime, expected: dt.datetime) -> None:
    assert next_allowed(CHICAGO, now) == expected
    # a local 8:00 (or the evening instant itself), whatever the offset that day
    assert expected.astimezone(CHI).hour in (8, 20)


def test_texas_sunday_across_the_fall_back() -> None:
    # Sunday 1 November 2026: the clocks go back at 2:00, texts wait for noon (Mountain)
    assert next_allowed(DALLAS, local(CHI, 2026, 11, 1, 1, 30)) == local(
        DEN, 2026, 11, 1, 12, 0)
    assert local(DEN, 2026, 11, 1, 12, 0) == dt.datetime(2026, 11, 1, 19, 0, tzinfo=UTC)


def test_the_business_can_narrow_the_window_but_not_widen_it() -> None:
    monday_8 = local(NY, 2026, 12, 7, 8, 0)
    # a wider business window does not let a Connecticut text out before 9:00
    assert next_allowed(CONNECTICUT, monday_8, business="00:00-24:00") == local(
        NY, 2026, 12, 7, 9, 0)
    # a narrower one holds a New York text until 10:00
    assert next_allowed(NEW_YORK, monday_8, business="10:00-18:00") == local(
        NY, 2026, 12, 7, 10, 0)
    assert next_allowed(NEW_YORK, local(NY, 2026, 12, 7, 18, 30), business="10:00-18:00") \
        == local(NY, 2026, 12, 8, 10, 0)


def test_the_strictest_window_is_inside_every_states() -> None:
    for weekly in (quiet_hours.DEFAULT_WINDOW, *quiet_hours.STATE_WINDOWS.values()):
        for (start, end), (s_start, s_end) in zip(quiet_hours.STRICTEST,
                                                  quiet_hours.week(weekly), strict=True):
            assert s_start <= start < end <= s_end


# ------------------------------------------------------------------ with rows

NOON_DALLAS_SAT = local(CHI, 2026, 12, 5, 12, 0)


def call(linkedid: str, number: str, ended: dt.datetime) -> FinishedCall:
    start = ended.timestamp() - 30
    return FinishedCall(linkedid=linkedid, caller=number, caller_name="Dana Fischer",
                        did="+12125550100", direction="inbound", missed=True, reason="noanswer",
                        voicemail_left=False, answered_by=None, ring_seconds=20.0,
                        trunk_endpoint="trunk", started_at=start, ended_at=ended.timestamp())


def test_a_texas_followup_at_night_waits_for_sunday_noon(session: Session) -> None:
    evening = local(CHI, 2026, 12, 5, 20, 45)  # Saturday
    missed.record(session, call("c-tx", DALLAS, evening), evening, region="US", worker=None)
    values = settings.all_values(session)
    assert timers.run_due(session, values, evening + dt.timedelta(minutes=30), "w") == []
    job = session.scalars(select(Job).where(Job.step == 0)).one()
    # not 8:00, not 9:00: Sunday noon (in Mountain time, the later of the state's zones)
    assert job.due_at == local(DEN, 2026, 12, 6, 12, 0)
    assert "TX: mon-sat 09:00-21:00; sun 12:00-21:00" in (job.detail or "")
    # the text-back itself went at once: it answers the customer's call
    textback = session.scalars(select(Message).where(Message.kind == kinds.TEXTBACK)).one()
    assert textback.next_attempt_at == evening


def test_the_cap_holds_back_the_fourth_automated_text_and_says_why(session: Session) -> None:
    settings.set(session, "textback.cooldown", "0s", NOON_DALLAS_SAT)
    settings.set(session, "followup.delays", [], NOON_DALLAS_SAT)
    at = NOON_DALLAS_SAT
    for n in range(3):
        sent, _ = missed.record(session, call(f"c-{n}", DALLAS, at), at, region="US",
                                worker=None)
        assert sent is True
        at += dt.timedelta(hours=1)
    sent, why = missed.record(session, call("c-3", DALLAS, at), at, region="US", worker=None)
    assert sent is False and "held back" in why
    row = session.scalars(select(Call).where(Call.linkedid == "c-3")).one()
    assert (row.decision, row.skip_reason) == ("skip", "frequency_cap")
    held = session.scalars(select(Message).where(Message.call_id == row.id)).one()
    assert held.status == outbox.CANCELLED and outbox.held_back(held)
    assert "compliance.max_automated_per_day" in (held.error or "")
    assert held.history[-1].detail == held.error  # visible in the message's history
    # a staff reply is not counted, nor held
    contact = session.scalars(select(Contact)).one()
    reply = outbox.enqueue(session, now=at, kind=kinds.STAFF_REPLY, number=DALLAS,
                           body="Hi, Dana", idempotency_key="staff-1", contact_id=contact.id,
                           cap=3)
    assert reply is not None and reply.status == outbox.QUEUED
    # the window rolls: 24 hours after the first, one more may go
    later = NOON_DALLAS_SAT + dt.timedelta(hours=24, minutes=1)
    sent, _ = missed.record(session, call("c-4", DALLAS, later), later, region="US",
                            worker=None)
    assert sent is True


def test_auto_answers_count_but_stop_confirmation_is_never_held(session: Session) -> None:
    settings.set(session, "compliance.max_automated_per_day", 1, NOON_DALLAS_SAT)
    at = NOON_DALLAS_SAT

    def text(body: str) -> list[Message]:
        sms = inbound.InboundSms(sender=DALLAS, to="+12125550100", body=body,
                                 transport="sip", received_at=at)
        message = inbound.receive(session, sms, "US")
        assert message is not None
        return conversations.react(session, message, settings.all_values(session),
                                   at).messages

    (answer,) = text("How much for a new faucet?")
    assert answer.kind == kinds.AUTO_REPLY
    at += dt.timedelta(hours=2)
    assert text("And can you book me in for Monday?") == []  # held: one a day
    held = session.scalars(select(Message).where(
        Message.template == "templates.scheduling")).one()
    assert outbox.held_back(held)
    (confirmation,) = text("STOP")
    assert confirmation.kind == kinds.OPT_OUT_CONFIRMATION
    assert confirmation.status == outbox.QUEUED


def test_followups_held_back_by_the_cap_say_so_on_the_job(session: Session) -> None:
    settings.set(session, "compliance.max_automated_per_day", 1, NOON_DALLAS_SAT)
    missed.record(session, call("c-f", DALLAS, NOON_DALLAS_SAT), NOON_DALLAS_SAT,
                  region="US", worker=None)
    values = settings.all_values(session)
    assert timers.run_due(session, values, NOON_DALLAS_SAT + dt.timedelta(minutes=30),
                          "w") == []
    job = session.scalars(select(Job).where(Job.step == 0)).one()
    assert job.status == timers.DONE and "held back" in (job.detail or "")
