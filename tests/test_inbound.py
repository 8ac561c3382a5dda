"""Inbound SMS from the SIP trunk: the recorded UserEvent, stored once per message."""

from __future__ import annotations

import base64
import datetime as dt
import logging
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from agent.messages import inbound
from agent.pbx.transcript import read_events
from agent.store.models import Contact, Message

pytestmark = pytest.mark.clock  # make test-clock runs it at awkward instants too

DATABASES = ("sqlite", "postgresql")  # the scale-out path must behave the same

AMI = Path(__file__).parent / "fixtures" / "ami"
NOW = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC)


def recorded_sms_event() -> dict[str, str]:
    (event,) = [e for _, e in read_events(AMI / "sms_in.txt")
                if e.get("Event") == "UserEvent" and e.get("UserEvent") == "SMSIn"]
    return event


def test_recorded_sms_is_read_with_commas_and_utf8_intact() -> None:
    sms = inbound.from_user_event(recorded_sms_event(), NOW)
    assert sms.sender == "+15557654321"
    assert sms.to == "+15550009999"
    assert sms.body == "Hello from the trunk, with a comma; and UTF-8: Grüße"
    assert sms.transport == "sip"


@pytest.mark.parametrize(
    ("change", "message"),
    [({"From": ""}, "without a sender"), ({"BodyB64": "not base64!"}, "not valid base64")],
)
def test_malformed_sms_event_is_refused_clearly(change: dict[str, str], message: str) -> None:
    event = {**recorded_sms_event(), **change}
    with pytest.raises(inbound.MalformedSms, match=message):
        inbound.from_user_event(event, NOW)


@pytest.mark.parametrize(("length", "empty_is_a_note"),
                         [("2000", True), ("", False), ("0", False), ("2k", False)])
def test_a_body_asterisk_dropped_is_stored_as_a_note_not_as_nothing(
        length: str, empty_is_a_note: bool, caplog: pytest.LogCaptureFixture) -> None:
    event = {**recorded_sms_event(), "BodyB64": "", "Length": length}
    with caplog.at_level(logging.WARNING, "agent.messages.inbound"):
        sms = inbound.from_user_event(event, NOW)
    assert sms.body == (inbound.too_long_note(2000) if empty_is_a_note else "")
    assert ("2000-byte body was dropped" in caplog.text) is empty_is_a_note


def test_stored_as_an_inbound_message_of_the_contact(session: Session) -> None:
    sms = inbound.InboundSms(sender="(212) 555-0142", to="+15550009999",
                             body="Is tomorrow 9am ok? 👍", transport="sip", received_at=NOW)
    message = inbound.receive(session, sms, "US")
    session.commit()
    assert message is not None
    stored = session.scalars(select(Message)).one()
    assert (stored.direction, stored.status, stored.number, stored.body) == (
        "in", "received", "+12125550142", "Is tomorrow 9am ok? 👍")
    contact = session.scalars(select(Contact)).one()
    assert contact.number == "+12125550142" and stored.contact_id == contact.id


def test_a_transport_reference_stores_a_repeated_sms_once(session: Session) -> None:
    sms = inbound.InboundSms(sender="+12125550142", to=None, body="hi", transport="gsm",
                             received_at=NOW, reference="SM:3:abcd")
    assert inbound.receive(session, sms, "US") is not None
    assert inbound.receive(session, sms, "US") is None
    session.commit()
    assert len(session.scalars(select(Message)).all()) == 1


def test_body_round_trips_any_text() -> None:
    body = "Line 1\nLine 2, with, commas; \"quotes\" and emoji 🔧 and NUL-free ünïcödé"
    event = {**recorded_sms_event(),
             "BodyB64": base64.b64encode(body.encode()).decode()}
    assert inbound.from_user_event(event, NOW).body == body
