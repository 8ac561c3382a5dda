"""What happens when a customer texts back: keywords first (STOP, START, HELP).

Compliance comes before anything clever: a message that is, as a whole, an
opt-out word ("STOP", "stop.", " Unsubscribe 🙏") opts the number out at once,
cancels whatever was still queued for it, and gets exactly one confirmation —
nothing else is sent to that number until it opts back in (START, UNSTOP, or
YES after an opt-out). HELP/INFO get the help text. Every other reply is left
for intent routing and the inbox.

`keyword()` is pure; `on_inbound()` applies it to the database and queues the
replies, which the caller hands to the dispatcher.
"""

from __future__ import annotations

import datetime as dt
import logging
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from agent import outbox, templates
from agent.models import Contact, Message

log = logging.getLogger(__name__)

Keyword = Literal["opt_out", "opt_in", "help"]

# kinds of outbound message that must reach an opted-out number: the one
# confirmation of the opt-out itself
OPT_OUT_CONFIRMATION = "optout_confirm"
EXEMPT_FROM_OPT_OUT = frozenset({OPT_OUT_CONFIRMATION})


def normalise(text: str) -> str:
    """Case-folded, inner whitespace and dashes collapsed, edges stripped of
    whitespace, punctuation, symbols and emoji: "  Opt-Out! 🙏" → "opt out"."""
    folded = unicodedata.normalize("NFC", text).casefold()
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

    @classmethod
    def of(cls, opt_out: Iterable[str], opt_in: Iterable[str], help: Iterable[str]) -> Keywords:
        def words(items: Iterable[str]) -> frozenset[str]:
            return frozenset(filter(None, map(normalise, items)))

        return cls(words(opt_out), words(opt_in), words(help))

    @classmethod
    def from_settings(cls, values: Mapping[str, Any]) -> Keywords:
        return cls.of(values["keywords.optout"], values["keywords.optin"],
                      values["keywords.help"])


def keyword(body: str, words: Keywords, *, opted_out: bool) -> Keyword | None:
    """The keyword a whole message is, if any.

    Opt-out is checked first, so a word in both lists opts out. An opt-in word
    only counts from a number that opted out: "Yes" from anyone else is a
    reply for a person to read.
    """
    text = normalise(body)
    if text in words.opt_out:
        return "opt_out"
    if opted_out and text in words.opt_in:
        return "opt_in"
    if text in words.help:
        return "help"
    return None


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
        cancelled = _cancel_pending(session, contact.number, now)
        log.info("%s opted out (%r); %d pending message(s) cancelled", contact.number,
                 message.body, cancelled)
        return _reply(session, message, values, now, "templates.optout",
                      OPT_OUT_CONFIRMATION, claim_for)
    if found == "opt_in":
        contact.opted_out, contact.opted_out_at = False, None
        log.info("%s opted back in (%r)", contact.number, message.body)
        return _reply(session, message, values, now, "templates.optin", "optin_confirm",
                      claim_for)
    return _reply(session, message, values, now, "templates.help", "help", claim_for)


def _cancel_pending(session: Session, number: str, now: dt.datetime) -> int:
    pending = session.scalars(select(Message).where(
        Message.number == number, Message.direction == "out",
        Message.status == outbox.QUEUED)).all()
    for queued in pending:
        outbox.transition(queued, outbox.CANCELLED, now, "the recipient opted out")
    return len(pending)


def _reply(session: Session, message: Message, values: Mapping[str, Any], now: dt.datetime,
           template_key: str, kind: str, claim_for: str | None) -> list[Message]:
    body = templates.render(values[template_key], {"business": values["business.name"],
                                                   "did": message.from_number})
    info = templates.segments(body)
    reply = outbox.enqueue(
        session, now=now, kind=kind, number=message.number, body=body,
        idempotency_key=f"reply:{message.id}", from_number=message.from_number,
        template=template_key, encoding=info.encoding, segments=info.segments,
        contact_id=message.contact_id, claim_for=claim_for,
    )
    return [reply] if reply is not None else []
