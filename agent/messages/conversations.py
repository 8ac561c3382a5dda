"""What happens when a customer texts back: keywords first, then intent.

Compliance comes before anything clever: a message that is, as a whole, an
opt-out word ("STOP", "stop.", " Unsubscribe 🙏") opts the number out at once,
cancels whatever was still queued for it, and gets exactly one confirmation —
nothing else is sent to that number until it opts back in (START, UNSTOP, or
YES after an opt-out). The same goes for an opt-out in the customer's own words
that is unmistakable ("please stop texting me", "no más mensajes":
keywords.optout_phrases, agent.rules.revocation). One that might be an opt-out but is
unclear ("stop" inside a longer message) gets no automatic answer: staff are alerted
with "(possible opt-out)" and the inbox offers them a one-click "Opt out".
HELP/INFO get the help text.

Anything else is sorted by intent (agent.rules.intents): an emergency gets a short
"a technician is calling you now", an alert to the on-call staff's phones and a
call that rings the on-call target and connects it to the customer; a booking
request gets the booking link; a price question the service-info text; any
other reply is forwarded to the staff who asked to be told.

`keyword()` is pure; `react()` applies the rules to the database and queues the
texts, which the caller hands to the dispatcher, and says whom to ring.
"""

from __future__ import annotations

import datetime as dt
import logging
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from agent.messages import inbox, kinds, outbox, timers
from agent.rules import intents, revocation, templates
from agent.store.models import Contact, Message

log = logging.getLogger(__name__)

Keyword = Literal["opt_out", "opt_in", "help"]

# kinds of outbound message that must reach an opted-out number: the one
# confirmation of the opt-out itself
# a second "water everywhere" within this time alerts staff again but does not ring
# the technician twice or repeat the reassurance to the customer
EMERGENCY_REPEAT = dt.timedelta(minutes=15)
AUTO_REPLY_REPEAT = dt.timedelta(hours=1)


def normalise(text: str) -> str:
    """Case-folded, inner whitespace and dashes collapsed, edges stripped of
    whitespace, punctuation, symbols and emoji: "  Opt-Out! 🙏" → "opt out".

    NFKC first: a phone's fullwidth or styled letters ("ＳＴＯＰ", "𝐒𝐓𝐎𝐏") are the
    same word to the person who typed them, so they are to STOP handling."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    words = "".join(" " if ch in "-_" or ch.isspace() else ch for ch in folded).split()
    joined = " ".join(words)
    start, end = 0, len(joined)
    while start < end and not _is_word_char(joined[start]):
        start += 1
    while end > start and not _is_word_char(joined[end - 1]):
        end -= 1
    return joined[start:end]


def _is_word_char(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "LN"


@dataclass(frozen=True)
class Keywords:
    opt_out: frozenset[str]
    opt_in: frozenset[str]
    help: frozenset[str]
    # the keywords and keywords.optout_phrases, for opt-outs in the customer's own words
    own_words: revocation.Rules = field(default_factory=lambda: revocation.Rules(()))

    @classmethod
    def of(cls, opt_out: Iterable[str], opt_in: Iterable[str], help: Iterable[str],
           phrases: Iterable[str] = ()) -> Keywords:
        def words(items: Iterable[str]) -> frozenset[str]:
            return frozenset(filter(None, map(normalise, items)))

        opt_out = list(opt_out)
        return cls(words(opt_out), words(opt_in), words(help),
                   revocation.Rules.of(opt_out, phrases))

    @classmethod
    def from_settings(cls, values: Mapping[str, Any]) -> Keywords:
        return cls.of(values["keywords.optout"], values["keywords.optin"],
                      values["keywords.help"], values["keywords.optout_phrases"])


def keyword(body: str, words: Keywords, *, opted_out: bool) -> Keyword | None:
    """The keyword a whole message is, if any; an opt-out in the customer's own words
    ("please stop texting me", agent.rules.revocation) counts as the opt-out keyword.

    Opt-out is checked first, so a word in both lists opts out. An opt-in word
    only counts from a number that opted out: "Yes" from anyone else is a
    reply for a person to read.
    """
    text = normalise(body)
    if text in words.opt_out or revocation.classify(body, words.own_words) == "opt_out":
        return "opt_out"
    if opted_out and text in words.opt_in:
        return "opt_in"
    if text in words.help:
        return "help"
    return None


POSSIBLE_OPT_OUT = "possible_opt_out"


def possible_opt_out(body: str, words: Keywords) -> bool:
    """A text that may be an opt-out but is not clearly one ("stop" inside a longer
    message): staff decide (agent.rules.revocation)."""
    return revocation.classify(body, words.own_words) == "possible"


@dataclass
class Reaction:
    """What a customer's text set off: messages queued, and whom to ring now."""

    messages: list[Message] = field(default_factory=list)
    intent: str | None = None  # a keyword or an intent, for the log
    ring_oncall: str | None = None  # oncall.target, for an emergency


def react(session: Session, message: Message, values: Mapping[str, Any], now: dt.datetime,
          *, claim_for: str | None = None, classifier: intents.Classifier | None = None,
          ) -> Reaction:
    """Keywords first, then the intent of anything else (see the module docstring)."""
    contact = session.get(Contact, message.contact_id) if message.contact_id else None
    if contact is None:
        return Reaction()
    # any reply ends the follow-up sequence: the lead is talking to us
    timers.cancel(session, contact.id, (timers.FOLLOWUP,), "the customer replied", now)
    words = Keywords.from_settings(values)
    found = keyword(message.body, words, opted_out=contact.opted_out)
    if found is not None:
        return Reaction(on_inbound(session, message, values, now, claim_for=claim_for), found)
    if contact.opted_out:
        return Reaction(intent="opted_out")  # stored for staff to read; nothing is sent
    intent: str = (classifier or intents.PhraseRules.from_settings(values)).classify(
        message.body)
    alert_fields = {"customer": message.number, "message": message.body}
    if intent != "emergency" and possible_opt_out(message.body, words):
        # maybe "stop texting me" in other words: no automatic answer, a person decides
        # (the inbox flags the text and offers "Opt out")
        intent = POSSIBLE_OPT_OUT
        alert_fields["message"] = f"(possible opt-out) {message.body}"
    reaction = Reaction(intent=intent)
    timers.schedule_escalation(session, message, values, now)  # until staff reach them
    if intent == "emergency":
        recent = _sent_recently(session, message.number, "templates.emergency_customer",
                                now - EMERGENCY_REPEAT)
        if not recent:
            reaction.messages += _reply(session, message, values, now,
                                        "templates.emergency_customer", kinds.EMERGENCY_REPLY,
                                        claim_for)
            reaction.ring_oncall = values["oncall.target"] or None
        reaction.messages += _alerts(session, message, values, now, "templates.emergency_alert",
                                     values["oncall.notify_numbers"], alert_fields, claim_for)
    elif intent in ("scheduling", "pricing"):
        key = f"templates.{intent}"
        if not _sent_recently(session, message.number, key, now - AUTO_REPLY_REPEAT):
            reaction.messages += _reply(session, message, values, now, key, kinds.AUTO_REPLY,
                                        claim_for)
    else:
        reaction.messages += _alerts(
            session, message, values, now, "templates.reply_alert",
            inbox.alert_numbers(session, contact, values["staff.notify_numbers"]),
            alert_fields, claim_for)
    return reaction


def on_inbound(session: Session, message: Message, values: Mapping[str, Any],
               now: dt.datetime, *, claim_for: str | None = None) -> list[Message]:
    """Apply the keyword rules to a stored inbound message; returns replies queued."""
    contact = session.get(Contact, message.contact_id) if message.contact_id else None
    if contact is None:
        return []
    found = keyword(message.body, Keywords.from_settings(values), opted_out=contact.opted_out)
    if found is None:
        return []
    if found == "opt_out":
        if contact.opted_out:
            log.info("%s sent %r again: already opted out, nothing sent", contact.number,
                     message.body)
            return []
        contact.opted_out, contact.opted_out_at = True, now
        timers.cancel(session, contact.id, (timers.FOLLOWUP, *timers.ESCALATION),
                      "opted out", now)
        cancelled = outbox.cancel_queued(session, contact.number, now,
                                         "the recipient opted out")
        log.info("%s opted out (%r); %d pending message(s) cancelled", contact.number,
                 message.body, len(cancelled))
        return _reply(session, message, values, now, "templates.optout",
                      kinds.OPT_OUT_CONFIRMATION, claim_for)
    if found == "opt_in":
        contact.opted_out, contact.opted_out_at = False, None
        log.info("%s opted back in (%r)", contact.number, message.body)
        return _reply(session, message, values, now, "templates.optin", kinds.OPT_IN_CONFIRMATION,
                      claim_for)
    return _reply(session, message, values, now, "templates.help", kinds.HELP, claim_for)


def _sent_recently(session: Session, number: str, template_key: str,
                   since: dt.datetime) -> bool:
    """One automatic answer of a kind per customer per while: no ping-pong."""
    return session.scalar(select(Message.id).where(
        Message.number == number, Message.direction == "out",
        Message.template == template_key, Message.created_at >= since).limit(1)) is not None


def _reply(session: Session, message: Message, values: Mapping[str, Any], now: dt.datetime,
           template_key: str, kind: str, claim_for: str | None) -> list[Message]:
    return _send(session, message, values, now, template_key, kind, message.number,
                 f"reply:{message.id}", {}, claim_for)


def _alerts(session: Session, message: Message, values: Mapping[str, Any], now: dt.datetime,
            template_key: str, staff: list[str], fields: Mapping[str, str],
            claim_for: str | None) -> list[Message]:
    """Texts to staff about a customer; the customer's contact stays on the row."""
    sent: list[Message] = []
    for number in staff:
        sent += _send(session, message, values, now, template_key, kinds.ALERT, number,
                      f"alert:{message.id}:{number}", fields, claim_for)
    return sent


def _send(session: Session, message: Message, values: Mapping[str, Any], now: dt.datetime,
          template_key: str, kind: str, to: str, key: str, fields: Mapping[str, str],
          claim_for: str | None) -> list[Message]:
    body = templates.render(values[template_key], {
        "business": values["business.name"], "booking_link": values["business.booking_link"],
        "did": message.from_number, **fields})
    info = templates.segments(body)
    queued = outbox.enqueue(
        session, now=now, kind=kind, number=to, body=body, idempotency_key=key,
        from_number=message.from_number, template=template_key, encoding=info.encoding,
        segments=info.segments, contact_id=message.contact_id, claim_for=claim_for,
        cap=values["compliance.max_automated_per_day"],
    )
    return [queued] if queued is not None and not outbox.held_back(queued) else []
