"""Compliance as the front desk and the owner meet it: an opt-out in the customer's words,
a possible one flagged in the inbox with a one-click "Opt out", templates that must
name the business, and the consent record (contact page and `textback contacts
history`) telling the whole story."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from conftest import csrf_token
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from agent.calls import missed
from agent.calls.tracker import FinishedCall
from agent.cli import main
from agent.messages import inbound, kinds, outbox, timers
from agent.people import contacts
from agent.privacy import consent
from agent.rules import settings
from agent.store import audit
from agent.store.models import AuditEntry, Contact, Message
from web import clock

pytestmark = pytest.mark.clock

DATABASES = ("sqlite", "postgresql")

NY = ZoneInfo("America/New_York")
T0 = dt.datetime(2026, 11, 2, 15, 0, tzinfo=dt.UTC)  # a Monday, 10:00 in New York
NUMBER = "+13055550142"  # Miami
DID = "+12125550100"


def call(linkedid: str, at: dt.datetime) -> FinishedCall:
    return FinishedCall(linkedid=linkedid, caller=NUMBER, caller_name="Dana Fischer", did=DID,
                        direction="inbound", missed=True, reason="noanswer",
                        voicemail_left=False, answered_by=None, ring_seconds=20.0,
                        trunk_endpoint="trunk", started_at=at.timestamp() - 25,
                        ended_at=at.timestamp())


def texted(session: Session, body: str, at: dt.datetime) -> inbound.Taken:
    sms = inbound.InboundSms(sender=NUMBER, to=DID, body=body, transport="sip",
                             received_at=at)
    taken = inbound.take(session, sms, "US", None)
    assert taken is not None
    return taken


def story(session: Session) -> Contact:
    """A missed call, its text-back, a follow-up, a price question answered, then a text
    that might be an opt-out."""
    settings.set(session, "business.name", "Rapid Rooter", T0)
    settings.set(session, "business.timezone", "America/New_York", T0)
    missed.record(session, call("1700000000.1", T0), T0, region="US", worker=None)
    (followup,) = timers.run_due(session, settings.all_values(session),
                                 T0 + dt.timedelta(minutes=30), "agent-1")
    assert followup.kind == kinds.FOLLOWUP
    priced = texted(session, "How much for a new faucet?", T0 + dt.timedelta(minutes=40))
    assert [m.kind for m in priced.reaction.messages] == [kinds.AUTO_REPLY]
    unclear = texted(session, "Stop texting my husband, he's not the homeowner",
                     T0 + dt.timedelta(minutes=50))
    # no automatic answer to a possible opt-out: a person decides
    assert unclear.reaction.intent == "possible_opt_out" and unclear.reaction.messages == []
    for message in session.scalars(select(Message).where(Message.direction == "out")):
        outbox.transition(message, outbox.DELIVERED, message.created_at)  # as if sent
    session.commit()
    return session.scalars(select(Contact).where(Contact.number == NUMBER)).one()


def test_an_opt_out_in_the_customers_words_confirms_once_naming_the_business(
        session: Session) -> None:
    settings.set(session, "business.name", "Rapid Rooter", T0)
    taken = texted(session, "Please stop texting me!!", T0)
    (confirmation,) = taken.reaction.messages
    assert confirmation.kind == kinds.OPT_OUT_CONFIRMATION and "Rapid Rooter" in confirmation.body
    assert session.scalars(select(Contact)).one().opted_out
    assert texted(session, "no more texts", T0 + dt.timedelta(minutes=1)).reaction.messages == []
    # "stop by at 3" is an ordinary reply
    other = "+12125550199"
    sms = inbound.InboundSms(sender=other, to=DID, body="Can you stop by at 3?",
                             transport="sip", received_at=T0)
    ordinary = inbound.take(session, sms, "US", None)
    assert ordinary is not None and ordinary.reaction.intent != "possible_opt_out"
    assert not session.scalars(select(Contact).where(Contact.number == other)).one().opted_out


def test_possible_opt_out_is_flagged_in_the_thread_and_one_click_opts_out(
        staff: FlaskClient, session: Session) -> None:
    contact = story(session)
    page = staff.get(f"/inbox/{contact.id}").get_data(as_text=True)
    assert "Customer · possible opt-out" in page
    flagged = session.scalars(select(Message).where(
        Message.direction == "in", Message.body.startswith("Stop texting"))).one()
    assert f'name="message_id" value="{flagged.id}"' in page
    # the form is CSRF-protected
    refused = staff.post(f"/inbox/{contact.id}/opt-out", data={"message_id": str(flagged.id)})
    assert refused.status_code == 400
    session.expire_all()
    assert not session.get_one(Contact, contact.id).opted_out
    answer = staff.post(f"/inbox/{contact.id}/opt-out", follow_redirects=True, data={
        "message_id": str(flagged.id), "csrf_token": csrf_token(staff, "/inbox")})
    assert answer.status_code == 200
    assert "is opted out: it will not be texted again" in answer.get_data(as_text=True)
    session.expire_all()
    assert session.get_one(Contact, contact.id).opted_out
    entry = session.scalars(select(AuditEntry).where(
        AuditEntry.action == audit.CONTACT_OPTED_OUT)).one()
    assert entry.actor == "desk" and entry.target == contacts.target(contact.id)
    assert "Stop texting my husband" in entry.details["reason"]
    # once opted out, the flag and the button are gone
    page = staff.get(f"/inbox/{contact.id}").get_data(as_text=True)
    assert "possible opt-out" not in page and "/opt-out" not in page


def test_the_consent_record_tells_the_whole_story(staff: FlaskClient, session: Session,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clock, "now", lambda: T0 + dt.timedelta(hours=1))  # staff click
    contact = story(session)
    flagged = session.scalars(select(Message).where(
        Message.direction == "in", Message.body.startswith("Stop texting"))).one()
    staff.post(f"/inbox/{contact.id}/opt-out", data={
        "message_id": str(flagged.id), "csrf_token": csrf_token(staff, "/inbox")})
    session.expire_all()  # the web app opted them out in its own session
    texted(session, "START", T0 + dt.timedelta(hours=2))
    session.commit()
    session.expire_all()
    record = consent.history(session, session.get_one(Contact, contact.id), NY)
    story_lines = [f"{e.what}: {e.detail}" for e in record]
    expected = [
        r"^call: missed call ended 2026-11-02 10:00 \(call 1700000000\.1\); text-back queued$",
        r"^text-back delivered: after the missed call ended 2026-11-02 10:00 \(call "
        r"1700000000\.1\)\. “Hi Dana, thanks for calling Rapid Rooter",
        r"^follow-up delivered: follow-up step 1 to the text-back after the missed call ended "
        r"2026-11-02 10:00",
        r"^customer texted: “How much for a new faucet\?” \(text via sip\)$",
        r"^automatic answer delivered: answering their text of 2026-11-02 10:40 “How much",
        r"^customer texted: “Stop texting my husband",
        r"^opted out: recorded by desk: possible opt-out confirmed in the inbox: the customer "
        r"texted “Stop texting my husband, he's not the homeowner” — by staff \(web\)$",
        r"^customer texted: “START”",
        r"^opted back in: texted “START” — by text \(sip\)$",
        r"^opt-in confirmation queued: answering their text of 2026-11-02 12:00 “START”",
    ]
    assert len(story_lines) == len(expected), "\n".join(story_lines)
    for line, pattern in zip(story_lines, expected, strict=True):
        assert re.search(pattern, line), (pattern, line)
    page = staff.get(f"/contacts/{contact.id}").get_data(as_text=True)
    assert "Consent record" in page
    assert "possible opt-out confirmed in the inbox" in page
    assert "follow-up step 1 to the text-back after the missed call" in page


def test_held_back_texts_are_in_the_record_with_the_reason(session: Session) -> None:
    settings.set(session, "textback.cooldown", "0s", T0)
    settings.set(session, "followup.delays", [], T0)
    settings.set(session, "compliance.max_automated_per_day", 1, T0)
    missed.record(session, call("c-1", T0), T0, region="US", worker=None)
    later = T0 + dt.timedelta(hours=1)
    missed.record(session, call("c-2", later), later, region="US", worker=None)
    contact = session.scalars(select(Contact)).one()
    whats = [(e.what, e.detail) for e in consent.history(session, contact, NY)]
    assert [w for w, _ in whats] == ["call", "text-back queued", "call", "text-back held back"]
    assert whats[2][1].endswith("not texted: frequency_cap")
    assert "compliance.max_automated_per_day" in whats[3][1]


def test_the_thread_shows_what_the_cap_held_back(staff: FlaskClient, session: Session) -> None:
    settings.set(session, "textback.cooldown", "0s", T0)
    settings.set(session, "compliance.max_automated_per_day", 1, T0)
    missed.record(session, call("c-1", T0), T0, region="US", worker=None)
    later = T0 + dt.timedelta(hours=1)
    missed.record(session, call("c-2", later), later, region="US", worker=None)
    session.commit()
    contact = session.scalars(select(Contact)).one()
    page = staff.get(f"/inbox/{contact.id}").get_data(as_text=True)
    assert page.count("held back by the daily limit on automated texts") == 1


def test_the_cli_prints_the_history(config: Path) -> None:
    from agent import config as configuration
    from agent.store.db import make_engine, sessions

    with sessions(make_engine(configuration.load(config).database.url))() as session:
        missed.record(session, call("c-cli", T0), T0, region="US", worker=None)
        texted(session, "Unsubscribe me", T0 + dt.timedelta(minutes=5))
        session.commit()
    run = CliRunner().invoke
    done = run(main, ["contacts", "history", "--config", str(config), "(305) 555-0142"])
    assert done.exit_code == 0, done.output
    lines = done.output.splitlines()
    assert lines[0] == "+13055550142 (Dana Fischer): opted out; times in UTC"
    # never sent (no agent ran): the opt-out cancelled it, and the record says so
    assert any("text-back cancelled: after the missed call ended 2026-11-02 15:00" in line
               and line.endswith("— the recipient opted out") for line in lines)
    assert any("opted out: texted “Unsubscribe me” — by text (sip)" in line for line in lines)
    assert any("opt-out confirmation queued" in line for line in lines)
    unknown = run(main, ["contacts", "history", "--config", str(config), "+13125550000"])
    assert unknown.exit_code != 0 and "no contact with the number" in unknown.output


@pytest.mark.parametrize("key", ["templates.business_hours", "templates.optout",
                                 "templates.help", "templates.pricing"])
def test_a_first_text_without_the_business_is_refused(key: str) -> None:
    with pytest.raises(settings.SettingError, match=re.escape(f"{key} must name the business")):
        settings.validate(key, "Sorry we missed you, call back any time")
    assert settings.validate(key, "{business}: sorry we missed you")


def test_the_settings_page_says_why_in_words(owner: FlaskClient, session: Session) -> None:
    data: dict[str, Any] = {"templates.business_hours": "Sorry we missed you!",
                            "csrf_token": csrf_token(owner, "/settings/textback")}
    answer = owner.post("/settings/textback", data=data)
    assert answer.status_code == 400
    page = answer.get_data(as_text=True)
    # in words, beside the field: its label, not the settings key
    assert "Missed call while open must name the business: put {business} in it" in page
    assert session.scalar(select(Message.id)) is None
    assert outbox.QUEUED  # nothing was saved either:
    assert settings.get(session, "templates.business_hours") == settings.DEFAULT_BUSINESS_HOURS


def test_a_first_text_stored_by_an_older_version_stays_in_force(session: Session) -> None:
    """Upgrading does not swap an owner's own text-back for the default behind their
    back: it keeps going out as written until they save the page again."""
    from agent.store.models import Setting

    session.add(Setting(key="templates.business_hours", value="Sorry we missed you!",
                        updated_at=T0))
    session.commit()
    assert settings.get(session, "templates.business_hours") == "Sorry we missed you!"
    missed.record(session, call("c-old", T0), T0, region="US", worker=None)
    textback = session.scalars(select(Message).where(Message.kind == kinds.TEXTBACK)).one()
    assert textback.body == "Sorry we missed you!"
    with pytest.raises(settings.SettingError, match="must name the business"):
        settings.change(session, "templates.business_hours", "Sorry we missed you!!", T0,
                        actor="cli")
