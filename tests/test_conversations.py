"""Keywords first: STOP always works, gets one confirmation, and nothing after it."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from agent.messages import conversations, inbound, inbox, kinds, outbox
from agent.messages.conversations import Keywords, keyword, normalise
from agent.people import accounts
from agent.rules import settings
from agent.store.models import Contact, Message

pytestmark = pytest.mark.clock  # make test-clock runs it at awkward instants too

DATABASES = ("sqlite", "postgresql")  # the scale-out path must behave the same

NOW = dt.datetime(2026, 12, 1, 15, 0, tzinfo=dt.UTC)
WORDS = Keywords.from_settings(settings.defaults())


@pytest.mark.parametrize(
    ("body", "opted_out", "expected"),
    [
        ("STOP", False, "opt_out"),
        ("stop", False, "opt_out"),
        ("  Stop. ", False, "opt_out"),
        ("STOP!!!", False, "opt_out"),
        ("Unsubscribe 🙏", False, "opt_out"),
        ("opt-out", False, "opt_out"),
        ("Opt Out", False, "opt_out"),
        ("STOPALL", False, "opt_out"),
        ("cancel", False, "opt_out"),
        ("Quit", False, "opt_out"),
        ("ｓｔｏｐ", False, "opt_out"),  # full-width letters: the same word to whoever typed it
        ("ＳＴＯＰ", False, "opt_out"),
        ("𝐒𝐓𝐎𝐏", False, "opt_out"),  # styled letters a phone keyboard offers
        ("Please stop calling me about the boiler", False, None),  # not the whole message
        ("Don't stop!", False, None),
        ("stop by tomorrow?", False, None),
        ("START", True, "opt_in"),
        ("start", False, None),  # nothing to opt back into: a reply for a person
        ("Yes", True, "opt_in"),
        ("Yes", False, None),  # "yes" to "shall we call you back?" is not an opt-in
        ("unstop", True, "opt_in"),
        ("HELP", False, "help"),
        ("info?", True, "help"),
        ("Water everywhere, help!", False, None),
        ("", False, None),
        ("🙂", False, None),
    ],
)
def test_keyword_table(body: str, opted_out: bool, expected: str | None) -> None:
    assert keyword(body, WORDS, opted_out=opted_out) == expected


def test_extra_words_in_other_languages() -> None:
    words = Keywords.of(["STOP", "no más", "ARRÊT"], ["START"], ["HELP"])
    assert keyword("No Más.", words, opted_out=False) == "opt_out"
    assert keyword("arrêt", words, opted_out=False) == "opt_out"


@given(st.text(max_size=200))
def test_keyword_never_crashes_and_normalise_is_idempotent(body: str) -> None:
    keyword(body, WORDS, opted_out=True)
    assert normalise(normalise(body)) == normalise(body)


def received(session: Session, body: str, number: str = "+12125550142") -> Message:
    sms = inbound.InboundSms(sender=number, to="+12125550100", body=body, transport="sip",
                             received_at=NOW)
    message = inbound.receive(session, sms, "US")
    assert message is not None
    return message


def reply_to(session: Session, body: str, at: dt.datetime = NOW) -> list[Message]:
    values = settings.all_values(session)
    return conversations.on_inbound(session, received(session, body), values, at)


def test_stop_opts_out_cancels_pending_and_confirms_once(session: Session) -> None:
    followup = outbox.enqueue(session, now=NOW, kind="textback", number="+12125550142",
                              body="Hi", idempotency_key="x",
                              send_at=NOW + dt.timedelta(minutes=5))
    (confirmation,) = reply_to(session, "Stop")
    contact = session.scalars(select(Contact)).one()
    assert contact.opted_out and contact.opted_out_at == NOW
    assert followup is not None and followup.status == "cancelled"
    assert confirmation.kind == kinds.OPT_OUT_CONFIRMATION
    assert "unsubscribed" in confirmation.body and "START" in confirmation.body
    assert reply_to(session, "STOP") == []  # one confirmation per opt-out, nothing more
    assert reply_to(session, "unsubscribe") == []


def test_start_after_stop_opts_back_in(session: Session) -> None:
    reply_to(session, "STOP")
    (welcome,) = reply_to(session, "Start")
    assert not session.scalars(select(Contact)).one().opted_out
    assert welcome.kind == "optin_confirm" and "STOP" in welcome.body


def test_help_gets_the_help_text_with_the_business_name(session: Session) -> None:
    settings.set(session, "business.name", "Rapid Rooter", NOW)
    (answer,) = reply_to(session, "help")
    assert answer.body.startswith("Thanks for texting Rapid Rooter.") and answer.kind == "help"


def test_ordinary_reply_gets_no_automatic_answer(session: Session) -> None:
    assert reply_to(session, "Can you come Tuesday?") == []
    assert not session.scalars(select(Contact)).one().opted_out


def configure(session: Session, **values: object) -> None:
    for key, value in values.items():
        settings.set(session, key.replace("__", "."), value, NOW, region="US")


def react(session: Session, body: str, number: str = "+12125550142",
          at: dt.datetime = NOW) -> conversations.Reaction:
    return conversations.react(session, received(session, body, number),
                               settings.all_values(session), at)


def test_emergency_rings_oncall_alerts_staff_and_reassures_customer(session: Session) -> None:
    configure(session, oncall__target="desk2", oncall__notify_numbers=["+13125550199"],
              business__name="Rapid Rooter")
    reaction = react(session, "Water everywhere in the kitchen!")
    assert reaction.intent == "emergency" and reaction.ring_oncall == "desk2"
    to_customer, alert = reaction.messages
    assert to_customer.number == "+12125550142" and "calling you" in to_customer.body
    assert alert.number == "+13125550199" and alert.kind == "alert"
    assert alert.body == "EMERGENCY for Rapid Rooter from +12125550142: " \
                         "Water everywhere in the kitchen!"
    assert alert.contact_id == to_customer.contact_id  # the alert is about that customer
    # a second message minutes later alerts again but does not ring twice
    again = react(session, "please hurry, it's flooding", at=NOW + dt.timedelta(minutes=3))
    assert again.ring_oncall is None
    assert [m.number for m in again.messages] == ["+13125550199"]


def test_booking_question_gets_the_link_once_an_hour(session: Session) -> None:
    configure(session, business__booking_link="https://book.example.com/rr")
    (answer,) = react(session, "Can I book a visit Tuesday?").messages
    assert "https://book.example.com/rr" in answer.body
    assert answer.template == "templates.scheduling"
    assert react(session, "book me in", at=NOW + dt.timedelta(minutes=5)).messages == []
    assert len(react(session, "book me in", at=NOW + dt.timedelta(hours=2)).messages) == 1


def test_other_replies_reach_the_staff_who_asked(session: Session) -> None:
    assert react(session, "My husband will call you").messages == []  # nobody configured
    configure(session, staff__notify_numbers=["+13125550123", "+13125550124"])
    alerts = react(session, "Is the blue van yours?").messages
    assert sorted(m.number for m in alerts) == ["+13125550123", "+13125550124"]
    assert all("Is the blue van yours?" in m.body for m in alerts)


def test_a_taken_conversation_alerts_its_owner_only(session: Session) -> None:
    configure(session, staff__notify_numbers=["+13125550123", "+13125550124"])
    react(session, "Is the blue van yours?")  # nobody owns it yet: the whole desk
    owner = accounts.add_user(session, NOW, username="sam", password="long enough pw",
                              role="staff", actor="test", phone="+1 312 555 0177")
    away = accounts.add_user(session, NOW, username="kim", password="long enough pw",
                             role="staff", actor="test")
    session.flush()
    contact = session.scalars(select(Contact)).one()
    inbox.staff_activity(contact, owner.id, NOW)
    (alert,) = react(session, "It's blocking my drive").messages
    assert alert.number == "+13125550177" and "blocking my drive" in alert.body
    owner.active = False  # left the company: the desk hears again
    assert len(react(session, "Hello??").messages) == 2
    contact.assigned_to = away.id  # an owner without a mobile: the desk too
    assert len(react(session, "Anyone?").messages) == 2


def test_opted_out_customer_gets_nothing_automatic(session: Session) -> None:
    configure(session, oncall__target="desk2", oncall__notify_numbers=["+13125550199"])
    react(session, "STOP")
    reaction = react(session, "how much for a quote?")
    assert reaction.messages == [] and reaction.ring_oncall is None
