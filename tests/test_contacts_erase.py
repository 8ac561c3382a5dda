"""Erasing a person (a GDPR request) on a real database, through the agent's own code
paths: afterwards no table holds their number (in any spelling), name, tags or texts;
the dashboard's figures do not move; an opted-out number stays refused; nobody else
changes; and `textback contacts erase` does the same from the command line."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from conftest import Record
from sqlalchemy import Engine, inspect, select, text
from sqlalchemy.orm import Session

from agent.calls.tracker import FinishedCall
from agent.cli import main
from agent.daemon import Agent
from agent.messages import conversations, inbound, inbox, outbox, timers
from agent.people import accounts, contacts
from agent.privacy import erasure, optout
from agent.reports import queries
from agent.reports.period import Period, parse_period
from agent.rules import settings
from agent.store import audit
from agent.store.models import (
    AuditEntry,
    Call,
    CallbackRequest,
    Contact,
    Job,
    Message,
    SmsFragment,
    TransportStatus,
)

pytestmark = pytest.mark.clock  # make test-clock runs it at awkward instants too

DATABASES = ("sqlite", "postgresql")

T0 = dt.datetime(2026, 3, 10, 14, 0, tzinfo=dt.UTC)
DID = "+15550000100"
PERSON, PERSON_DIGITS = "+12125550142", "2125550142"
OTHER = "+13125550199"
STAFF = "+12125550100"
NAME = "Dana Fischer"
SECRET_TEXT = "Water everywhere in the basement at 12 Elm St"
TAG = "gas leak Elm"


def _call(linkedid: str, caller: str | None, at: dt.datetime, *, name: str | None = None,
          direction: str = "inbound", missed: bool = True, did: str = DID) -> FinishedCall:
    end = at.timestamp()
    return FinishedCall(linkedid, caller, name, did, direction,  # type: ignore[arg-type]
                        missed, "noanswer" if missed else None, False,
                        None if missed else "PJSIP/desk", 4.0, end - 20, end,
                        "trunk" if direction == "inbound" else None)


def _left(session: Session, at: dt.datetime) -> None:
    """Every text-back queued so far left and was delivered (as the dispatcher records)."""
    for message in session.scalars(select(Message).where(
            Message.kind == "textback", Message.status.in_(("queued", "claimed", "sending")))):
        outbox.transition(message, "sent", at, "gsm")
        outbox.transition(message, "delivered", at + dt.timedelta(seconds=5), "report")


def _reply(session: Session, sender: str, body: str, at: dt.datetime) -> Message:
    message = inbound.receive(session, inbound.InboundSms(
        sender=sender, to=DID, body=body, transport="gsm", received_at=at), "US")
    assert message is not None
    conversations.react(session, message, settings.all_values(session), at)
    return message


def _world(record: Record, session: Session, opted_out: str) -> tuple[Contact, Contact]:
    """The person and someone else, each with calls, texts, replies, timers and more."""
    settings.set(session, "staff.notify_numbers", [STAFF], T0)
    settings.set(session, "oncall.notify_numbers", [STAFF], T0)
    # the person: a missed call (the trunk sent the number nationally), the text-back, a
    # reply that alerts staff, a second missed call, a queued follow-up, a call back…
    record(session, _call("1.1", PERSON_DIGITS, T0, name=NAME), T0)
    record(session, _call("2.1", OTHER, T0 + dt.timedelta(minutes=3), name="Sam Lee"),
                 T0 + dt.timedelta(minutes=3))
    _left(session, T0 + dt.timedelta(seconds=30))
    _reply(session, PERSON, SECRET_TEXT, T0 + dt.timedelta(minutes=10))
    _reply(session, OTHER, "Thanks, see you Tuesday", T0 + dt.timedelta(minutes=12))
    record(session, _call("1.2", "+1 212 555 0142", T0 + dt.timedelta(days=2),
                                name=NAME), T0 + dt.timedelta(days=2))
    _left(session, T0 + dt.timedelta(days=2, seconds=30))
    # the business calls them back from a desk phone, dialling 9 for an outside line
    record(session, _call("1.3", "101", T0 + dt.timedelta(days=2, hours=1),
                                direction="outbound", missed=False, did="912125550142"),
                 T0 + dt.timedelta(days=2, hours=1))
    person = session.scalars(select(Contact).where(Contact.number == PERSON)).one()
    other = session.scalars(select(Contact).where(Contact.number == OTHER)).one()
    person.tags, other.tags = [TAG, "vip"], ["vip"]
    timers.contacted(session, person, "called back", T0 + dt.timedelta(days=2, hours=1))
    desk = accounts.add_user(session, T0, username="desk", password="correct horse battery",
                             role="staff", actor="cli")
    session.flush()
    person.assigned_to = desk.id
    inbox.request_callback(session, person, desk.id, "desk", T0 + dt.timedelta(days=2))
    inbox.request_callback(session, other, desk.id, "desk", T0 + dt.timedelta(days=2))
    outbox.enqueue(session, now=T0 + dt.timedelta(days=3), kind="staff_reply", number=PERSON,
                   body=f"Hi {NAME}, we can come at 9", idempotency_key=None,
                   contact_id=person.id)
    # IT checked the modem with a test text to them (no contact on a test message)
    test = outbox.enqueue(session, now=T0, kind="test", number=PERSON, idempotency_key=None,
                          body=f"Test for {NAME}, please ignore")
    assert test is not None and test.contact_id is None
    outbox.transition(test, "sent", T0, "gsm")
    # the first part of a long text from them, still waiting for its second part
    session.add(SmsFragment(key="frag-1", sender="12125550142", reference=7, total=2, part=1,
                            body=SECRET_TEXT, received_at=T0 + dt.timedelta(days=3)))
    session.add(SmsFragment(key="frag-2", sender=OTHER, reference=8, total=2, part=1,
                            body="other half", received_at=T0 + dt.timedelta(days=3)))
    failed = session.scalars(select(Message).where(Message.number == PERSON,
                                                   Message.kind == "textback")).first()
    assert failed is not None
    failed.error = f"+CMS ERROR: 500 sending to {PERSON}"
    session.add(TransportStatus(name="gsm", state="up", detail="SIM7600",
                                last_error=f"+CMS ERROR: 500 sending to {PERSON}",
                                last_error_at=T0, updated_at=T0))
    accounts.audit(session, T0, "owner", "setting_changed", "textback.exclusions",
                   details={"from": [], "to": [PERSON, STAFF]})
    accounts.audit(session, T0, "owner", "setting_changed", "textback.exclusions",
                   details={"from": [PERSON, STAFF], "to": [STAFF]})
    now = T0 + dt.timedelta(days=4)
    if opted_out == "by text":
        _reply(session, PERSON, "Stop", now)
    elif opted_out == "by staff":
        optout.record_opt_out(session, person, now, "desk",
                                f"{NAME} rang from 212-555-0142 and asked us to stop")
    timers_left = session.scalars(select(Job).where(Job.contact_id == person.id)).all()
    assert timers_left, "the world has follow-ups or reminders to delete"
    session.commit()
    return person, other


def _period(session: Session) -> Period:
    period, errors = parse_period({"from": "2026-03-01", "to": "2026-03-31"},
                                            T0.date(), ZoneInfo("UTC"))
    assert errors == []
    return period


def _figures(session: Session) -> tuple[Any, ...]:
    period = _period(session)
    rows = queries.buckets(session, period)
    inbound_calls = sum(calls for _at, calls, _missed in rows)
    return queries.counts(session, period, inbound_calls), sorted(rows)


def _every_text(engine: Engine) -> list[tuple[str, str, Any, str]]:
    """(table, column, primary key, value as text) for every non-empty text or JSON cell
    of every table in the database — the tables of this version and any added later."""
    cells = []
    with engine.connect() as connection:
        for table in inspect(engine).get_table_names():
            result = connection.execute(text(f'SELECT * FROM "{table}"'))
            for row in result.mappings():
                key = row.get("id", row.get("key", row.get("name")))
                for column, value in row.items():
                    if value is None or isinstance(value, int | float | bool | dt.datetime):
                        continue
                    if not isinstance(value, str):
                        value = json.dumps(value, ensure_ascii=False)
                    if value:
                        cells.append((table, column, key, value))
    return cells


def _traces(engine: Engine, tail: str) -> list[tuple[str, str, Any, str]]:
    """Cells that still hold the person: their number written any way, their name, tag
    or the text they sent."""
    found = []
    for table, column, key, value in _every_text(engine):
        digits = re.sub(r"[\s.\-()/+]", "", value)
        if (tail in digits or "fischer" in value.lower() or "Elm St" in value
                or TAG in value):
            found.append((table, column, key, value))
    return found


def _snapshot(session: Session, contact_id: int, number: str) -> dict[str, Any]:
    """Everything about one contact, as plain values."""
    session.expire_all()

    def plain(row: Any) -> dict[str, Any]:
        return {c.key: getattr(row, c.key) for c in inspect(row).mapper.column_attrs}

    return {
        "contact": plain(session.get_one(Contact, contact_id)),
        "calls": [plain(c) for c in session.scalars(select(Call).where(
            Call.contact_id == contact_id).order_by(Call.id))],
        "messages": [plain(m) | {"history": [plain(e) for e in m.history]}
                     for m in session.scalars(select(Message).where(
                         (Message.contact_id == contact_id) | (Message.number == number))
                         .order_by(Message.id))],
        "jobs": [plain(j) for j in session.scalars(select(Job).where(
            Job.contact_id == contact_id).order_by(Job.id))],
        "callbacks": [plain(r) for r in session.scalars(select(CallbackRequest).where(
            CallbackRequest.contact_id == contact_id))],
        "fragments": [plain(f) for f in session.scalars(select(SmsFragment).where(
            SmsFragment.sender == number))],
    }


@pytest.mark.parametrize("opted_out", ["never", "by text", "by staff"])
def test_erase_leaves_no_trace_and_the_same_figures(record: Record, engine: Engine,
                                                    session: Session, opted_out: str) -> None:
    person, other = _world(record, session, opted_out)
    assert len(_traces(engine, PERSON_DIGITS)) > 20  # the scan does see the person before
    before = _figures(session)
    counted = before[0]
    assert (counted.missed, counted.texted, counted.contacted) == (3, 3, 2)
    assert counted.replied >= 2 and counted.delivered == 3
    other_before = _snapshot(session, other.id, OTHER)
    person_id = person.id

    erased = erasure.erase(session, person, T0 + dt.timedelta(days=5), "owner")
    session.commit()

    traces = _traces(engine, PERSON_DIGITS)
    if opted_out == "never":
        assert traces == []
        assert erased.suppression_id is None
    else:
        # the one thing kept: the number, on a row that says only "opted out"
        assert [(table, column) for table, column, _key, _value in traces] == [
            ("contacts", "number")]
        kept = session.get_one(Contact, erased.suppression_id)
        assert (kept.number, kept.opted_out, kept.name, kept.tags, kept.assigned_to,
                kept.last_message_at, kept.last_inbound_at) == (
            PERSON, True, None, [], None, None, None)
        assert kept.opted_out_at == T0 + dt.timedelta(days=4)
        # and nothing points at it: no call, text or timer is linked to the number
        assert session.scalars(select(Call).where(Call.contact_id == kept.id)).all() == []
        assert session.scalars(select(Message).where(Message.contact_id == kept.id)).all() == []

    assert _figures(session) == before
    assert _snapshot(session, other.id, OTHER) == other_before
    stand_in = session.get_one(Contact, person_id)
    assert stand_in.number == f"erased-{person_id}" and stand_in.name is None
    assert session.scalars(select(Job).where(Job.contact_id == person_id)).all() == []
    assert session.scalars(select(CallbackRequest).where(
        CallbackRequest.contact_id == person_id)).all() == []
    # the staff reply that was still queued will never go out to "erased-…"
    reply = session.scalars(select(Message).where(Message.kind == "staff_reply")).one()
    assert (reply.status, reply.body, reply.number) == ("cancelled", "", f"erased-{person_id}")
    # the audit log names the contact, never the number, and says who erased it
    entry = session.scalars(select(AuditEntry).where(
        AuditEntry.action == audit.CONTACT_ERASED)).one()
    assert (entry.actor, entry.target) == ("owner", f"contact #{person_id}")
    exclusions = session.scalars(select(AuditEntry).where(
        AuditEntry.target == "textback.exclusions").order_by(AuditEntry.id)).all()
    assert [e.details for e in exclusions] == [
        {"from": [], "to": [f"contact #{person_id}", STAFF]},
        {"from": [f"contact #{person_id}", STAFF], "to": [STAFF]}]
    if opted_out == "by staff":
        reason = session.scalars(select(AuditEntry).where(
            AuditEntry.action == audit.CONTACT_OPTED_OUT)).one().details["reason"]
        assert reason == (f"[name erased] rang from contact #{person_id} and asked us "
                          "to stop")
    # the staff member's own number stays on the alerts they were sent
    alerts = session.scalars(select(Message).where(Message.kind == "alert",
                                                   Message.contact_id == person_id)).all()
    assert alerts and {a.number for a in alerts} == {STAFF} and {a.body for a in alerts} == {""}


@pytest.mark.parametrize("opted_out", ["by text", "by staff"])
def test_an_erased_opt_out_is_still_never_texted(agent: Agent, record: Record, session: Session,
                                                 opted_out: str) -> None:
    person, _other = _world(record, session, opted_out)
    erasure.erase(session, person, T0 + dt.timedelta(days=5), "owner")
    session.commit()
    later = T0 + dt.timedelta(days=30)
    assert outbox.opted_out(session, PERSON)  # what the dispatcher asks at send time
    queued, described = record(session, _call("9.1", PERSON_DIGITS, later, name=NAME),
                                     later)
    session.commit()
    assert queued is False and "opted_out" in described
    call = session.scalars(select(Call).where(Call.linkedid == "9.1")).one()
    assert (call.decision, call.skip_reason) == ("skip", "opted_out")
    # texting START is still theirs to do: the kept row is where it lands
    _reply(session, PERSON, "START", later + dt.timedelta(minutes=1))
    session.commit()
    assert not outbox.opted_out(session, PERSON)


def test_someone_erased_who_calls_again_is_a_new_contact(agent: Agent, record: Record,
                                                         session: Session) -> None:
    person, _other = _world(record, session, "never")
    erasure.erase(session, person, T0 + dt.timedelta(days=5), "owner")
    session.commit()
    later = T0 + dt.timedelta(days=30)
    queued, _ = record(session, _call("9.1", PERSON_DIGITS, later), later)
    session.commit()
    assert queued  # no cooldown, no opt-out: nothing remembered them
    fresh = session.scalars(select(Contact).where(Contact.number == PERSON)).one()
    assert fresh.id != person.id and fresh.source == "call" and fresh.tags == []
    with pytest.raises(contacts.ContactError, match="erased already"):
        erasure.erase(session, session.get_one(Contact, person.id), later, "owner")


def test_spellings_find_the_number_however_it_was_written() -> None:
    spelled = erasure.Spellings.of(PERSON, ["sip:2125550142@trunk"])
    for written in ("+12125550142", "12125550142", "(212) 555-0142", "212.555.0142",
                    "+1 212 555 0142", "0012125550142", "sip:2125550142@trunk"):
        assert spelled.found_in(f"call {written} today"), written
        assert spelled.replace(f"call {written} today", "X") in (
            "call X today", "call sip:X@trunk today")
    assert not spelled.found_in("call 212 555 0143 today")
    assert not spelled.found_in(None)


# ---------------------------------------------------------------- the command line

def _cli_session(config: Path) -> Session:
    from agent import config as configuration
    from agent.store.db import make_engine, sessions

    return sessions(make_engine(configuration.load(config).database.url))()


def test_the_cli_erases_and_says_what_it_kept(config: Path) -> None:
    with _cli_session(config) as session:
        session.add(Contact(number=PERSON, name=NAME, tags=["vip"], created_at=T0,
                            opted_out=True, opted_out_at=T0))
        session.add(Contact(number=OTHER, name="Sam Lee", tags=[], created_at=T0))
        session.commit()
    run = CliRunner().invoke
    refused = run(main, ["contacts", "erase", "--config", str(config), "(212) 555-0142"])
    assert refused.exit_code != 0 and "--yes" in refused.output
    unknown = run(main, ["contacts", "erase", "--config", str(config), "+13125550000", "--yes"])
    assert unknown.exit_code != 0 and "no contact with the number" in unknown.output
    done = run(main, ["contacts", "erase", "--config", str(config), "(212) 555-0142", "--yes"])
    assert done.exit_code == 0, done.output
    assert "kept: the number and its opt-out only" in done.output
    with _cli_session(config) as session:
        kept = session.scalars(select(Contact).where(Contact.number == PERSON)).one()
        assert (kept.name, kept.tags, kept.opted_out) == (None, [], True)
        assert session.scalars(select(Contact).where(Contact.number == OTHER)).one().name == \
            "Sam Lee"
        entry = session.scalars(select(AuditEntry).where(
            AuditEntry.action == audit.CONTACT_ERASED)).one()
        assert entry.actor.startswith("cli:") and PERSON not in json.dumps(entry.details)
    again = run(main, ["contacts", "erase", "--config", str(config), PERSON, "--yes"])
    assert again.exit_code != 0 and "erased already" in again.output
