"""Durable timers with `now` passed in: follow-ups, quiet hours, escalation."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from agent.messages import conversations, inbound, inbox, outbox, timers
from agent.people import accounts
from agent.rules import quiet_hours, settings
from agent.store.models import Contact, Job, Message

pytestmark = pytest.mark.clock  # make test-clock runs it at awkward instants too

DATABASES = ("sqlite", "postgresql")  # the scale-out path must behave the same

UTC = dt.UTC
NY = ZoneInfo("America/New_York")
LA = ZoneInfo("America/Los_Angeles")


def local(zone: ZoneInfo, *args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=zone).astimezone(UTC)


@pytest.mark.parametrize(
    ("now", "zones", "expected"),
    [
        # inside the window: now
        (local(NY, 2026, 12, 1, 10, 0), ["America/New_York"], local(NY, 2026, 12, 1, 10, 0)),
        # 22:30 in New York: tomorrow 08:00 there
        (local(NY, 2026, 12, 1, 22, 30), ["America/New_York"], local(NY, 2026, 12, 2, 8, 0)),
        # 06:00 in Los Angeles is 09:00 in New York: the LA number waits for 08:00 LA
        (local(NY, 2026, 12, 1, 9, 0), ["America/Los_Angeles"], local(LA, 2026, 12, 1, 8, 0)),
        # a prefix spanning both zones: allowed only when it is allowed in both
        (local(NY, 2026, 12, 1, 21, 30), ["America/New_York", "America/Los_Angeles"],
         local(LA, 2026, 12, 2, 8, 0)),
        # the night the clocks spring forward (8 March 2026 in the US)
        (local(NY, 2026, 3, 8, 1, 0), ["America/New_York"], local(NY, 2026, 3, 8, 8, 0)),
        # and fall back (1 November 2026)
        (local(NY, 2026, 11, 1, 1, 30), ["America/New_York"], local(NY, 2026, 11, 1, 8, 0)),
        # Europe/London in summer time
        (dt.datetime(2026, 7, 1, 6, 30, tzinfo=UTC), ["Europe/London"],
         dt.datetime(2026, 7, 1, 7, 0, tzinfo=UTC)),
    ],
)
def test_quiet_hours_move_followups_to_the_next_allowed_time(
        now: dt.datetime, zones: list[str], expected: dt.datetime) -> None:
    window = quiet_hours.Window(None, quiet_hours.week("mon-sun 08:00-21:00"), tuple(zones))
    assert quiet_hours.allowed_at(now, window) == expected


def test_any_time_window() -> None:
    night = local(NY, 2026, 12, 1, 3, 0)
    window = quiet_hours.Window(None, quiet_hours.week("mon-sun 00:00-24:00"),
                                ("America/New_York",))
    assert quiet_hours.allowed_at(night, window) == night


NOON_NY = local(NY, 2026, 12, 1, 12, 0)
CUSTOMER = "+12125550142"  # a New York number


def textback(session: Session, at: dt.datetime = NOON_NY) -> Message:
    contact = Contact(number=CUSTOMER, name="Dana Fischer", created_at=at, tags=[])
    session.add(contact)
    session.flush()
    queued = outbox.queue(session, now=at, kind="textback", number=CUSTOMER, body="Hi",
                          idempotency_key="call-1:textback", contact_id=contact.id)
    assert queued is not None
    timers.schedule_followups(session, queued, settings.all_values(session), at)
    return session.get_one(Message, queued.sms.id)


def run(session: Session, at: dt.datetime) -> list[Message]:
    return timers.run_due(session, settings.all_values(session), at, "agent-1")


def test_followup_sequence_fires_each_step_once(session: Session) -> None:
    textback(session)
    assert run(session, NOON_NY + dt.timedelta(minutes=29)) == []
    (first,) = run(session, NOON_NY + dt.timedelta(minutes=30))
    assert first.kind == "followup" and first.body.startswith("Hi Dana, it's us following")
    assert run(session, NOON_NY + dt.timedelta(minutes=31)) == []  # never twice
    (second,) = run(session, NOON_NY + dt.timedelta(hours=2))
    assert "love to help" in second.body
    (last,) = run(session, NOON_NY + dt.timedelta(hours=24))
    assert last.body.startswith("Last note from us")
    assert run(session, NOON_NY + dt.timedelta(days=3)) == []


def test_a_reply_stops_the_sequence(session: Session) -> None:
    textback(session)
    sms = inbound.InboundSms(sender=CUSTOMER, to=None, body="Thanks, tomorrow works",
                             transport="sip", received_at=NOON_NY + dt.timedelta(minutes=10))
    message = inbound.receive(session, sms, "US")
    assert message is not None
    conversations.react(session, message, settings.all_values(session), sms.received_at)
    assert [m.kind for m in run(session, NOON_NY + dt.timedelta(days=2))] == []
    states = {j.kind: (j.status, j.detail) for j in session.scalars(select(Job))}
    assert states["followup"] == ("cancelled", "the customer replied")
    # the reply now waits for a person: the reminder ran, with nobody configured to tell
    assert states["reminder"] == ("done", "nobody to tell: staff.notify_numbers is empty")


def test_late_evening_followup_waits_for_morning(session: Session) -> None:
    evening = local(NY, 2026, 12, 1, 20, 45)
    textback(session, at=evening)
    assert run(session, evening + dt.timedelta(minutes=30)) == []  # 21:15 in New York
    job = session.scalars(select(Job).where(Job.step == 0)).one()
    assert job.status == "pending" and job.due_at == local(NY, 2026, 12, 2, 8, 0)
    (moved,) = [m for m in run(session, local(NY, 2026, 12, 2, 8, 0)) if m.template.endswith(
        "[0]")]
    assert moved.kind == "followup"


def test_opted_out_contact_gets_no_followup(session: Session) -> None:
    textback(session)
    session.scalars(select(Contact)).one().opted_out = True
    assert run(session, NOON_NY + dt.timedelta(days=2)) == []


def test_contacted_stops_followups_and_escalations(session: Session) -> None:
    textback(session)
    contact = session.scalars(select(Contact)).one()
    timers.contacted(session, contact, "the business called back", NOON_NY)
    assert contact.contacted_at == NOON_NY
    assert run(session, NOON_NY + dt.timedelta(days=2)) == []


def test_unanswered_reply_reminds_staff_then_supervisor(session: Session) -> None:
    settings.set(session, "staff.notify_numbers", ["+13125550123"], NOON_NY)
    settings.set(session, "supervisor.notify_numbers", ["+13125550999"], NOON_NY)
    sms = inbound.InboundSms(sender=CUSTOMER, to=None, body="Is the blue van yours?",
                             transport="sip", received_at=NOON_NY)
    message = inbound.receive(session, sms, "US")
    assert message is not None
    first = conversations.react(session, message, settings.all_values(session), NOON_NY)
    assert [m.number for m in first.messages] == ["+13125550123"]  # at once
    (reminder,) = run(session, NOON_NY + dt.timedelta(minutes=30))
    assert reminder.number == "+13125550123" and "still waiting" in reminder.body
    (alert,) = run(session, NOON_NY + dt.timedelta(hours=2))
    assert alert.number == "+13125550999" and "Is the blue van yours?" in alert.body


def test_the_owner_is_reminded_and_supervisors_still_hear(session: Session) -> None:
    settings.set(session, "staff.notify_numbers", ["+13125550123"], NOON_NY)
    settings.set(session, "supervisor.notify_numbers", ["+13125550999"], NOON_NY)
    owner = accounts.add_user(session, NOON_NY, username="sam", password="long enough pw",
                              role="staff", actor="test", phone="+13125550177")
    session.flush()
    sms = inbound.InboundSms(sender=CUSTOMER, to=None, body="Still there?", transport="sip",
                             received_at=NOON_NY)
    message = inbound.receive(session, sms, "US")
    assert message is not None
    contact = session.get(Contact, message.contact_id)
    assert contact is not None
    inbox.staff_activity(contact, owner.id, NOON_NY)  # sam took it, then got busy
    conversations.react(session, message, settings.all_values(session), NOON_NY)
    (reminder,) = run(session, NOON_NY + dt.timedelta(minutes=30))
    assert reminder.number == "+13125550177"
    (alert,) = run(session, NOON_NY + dt.timedelta(hours=2))
    assert alert.number == "+13125550999"
