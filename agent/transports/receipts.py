"""What messaging APIs report after a send: delivery receipts, and numbers they refuse.

A receipt moves a row forward only: submitted → sent → delivered | failed. Providers
send their callbacks in any order and more than once, so a report that would move a
row back ("sent" after "delivered") or repeats one changes nothing. A report may even
come before the dispatcher has recorded the send's answer: the row is then found by
its own id (carried in the callback's address) and the dispatcher keeps what the
report said (agent.transports.dispatcher `_done`).

A refusal that says the customer opted out at the carrier (Twilio 21610, Telnyx 40300)
is recorded as an opt-out, as if they had texted STOP to us; one that says the number
cannot take texts (not a mobile) is remembered by the permanently failed row itself,
which the text-back policy reads as "known undeliverable".

Functions take a Session and `now`; the caller commits.
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from agent.messages import outbox
from agent.people import contacts
from agent.privacy import optout
from agent.store.models import Message

log = logging.getLogger(__name__)

SENT, DELIVERED, FAILED = outbox.SENT, outbox.DELIVERED, outbox.FAILED
PERMANENT, UNDELIVERED = "permanent", "undelivered"  # messages.error_kind of a failed report


def find(session: Session, transport: str, provider_id: str,
         message_id: int | None = None) -> Message | None:
    """The outbound row a provider's report is about."""
    message = session.scalar(select(Message).where(Message.provider_id == provider_id))
    if message is not None or message_id is None:
        return message
    message = session.get(Message, message_id)
    if (message is None or message.direction != "out" or message.provider_id is not None
            or message.transport not in (None, transport)):
        return None
    return message


def report(session: Session, transport: str, provider_id: str, state: str, now: dt.datetime,
           *, error: str | None = None, permanent: bool = False,
           message_id: int | None = None) -> str:
    """Apply one delivery report; says what it did (for the log and the tests)."""
    message = find(session, transport, provider_id, message_id)
    if message is None:
        log.info("%s report %s for message %s: no such message here", transport, state,
                 provider_id)
        return "unknown"
    if message.provider_id is None:
        message.provider_id = provider_id
    if message.status in outbox.FINAL or (state == SENT and message.status == SENT):
        return "unchanged"  # a repeat, or late news of an earlier step
    detail = f"{transport}: {error}" if error else transport
    if state == FAILED:
        message.error = error or "the provider reports it undelivered"
        message.error_kind = PERMANENT if permanent else UNDELIVERED
    outbox.transition(message, state, now, detail)
    log.info("message %d to %s: %s (%s)", message.id, message.number, state, detail)
    return state


def refused(session: Session, number: str, transport: str, *, opted_out: bool,
            not_textable: bool, why: str, now: dt.datetime) -> None:
    """A provider refused a send for a reason about the number itself."""
    if opted_out:
        contact = contacts.find_or_create(session, number, now, source="sms")
        if not contact.opted_out:
            optout.record_opt_out(session, contact, now, transport,
                                  f"the carrier refused the text because this number opted "
                                  f"out (replied STOP) — {why}"[:optout.MAX_REASON])
    elif not_textable:
        # the permanently failed row is the record: the text-back policy skips the
        # number as known undeliverable from now on
        log.info("%s cannot take texts (%s): no text-back will be tried again", number, why)
