"""Inbound SMS: one path for every transport.

A customer's text — a SIP MESSAGE that the dialplan's `[textback-sms-in]` context turned
into `UserEvent(SMSIn, …, BodyB64: …)`, or an SMS a GSM modem delivered — becomes
one `messages` row (direction "in", status "received") attached to the contact.
What happens next (STOP, intent, the inbox) builds on these rows: `take` stores
the text and lets agent.messages.conversations react to it, in one transaction.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from agent.messages import conversations, inbox, kinds, outbox
from agent.messages.outbox import OutboundSms
from agent.people import contacts
from agent.rules import numbers, settings
from agent.store.models import Message, MessageEvent

log = logging.getLogger(__name__)

RECEIVED = "received"
# Asterisk's res_pjsip_messaging keeps a MESSAGE body only below 1024 bytes (MAX_BODY_SIZE)
SIP_BODY_LIMIT = 1023
_SIP_USER = re.compile(r"(?:sips?|pjsip|tel):([^@;>\s]+)")


class MalformedSms(ValueError):
    """An inbound SMS event that cannot be read; logged and skipped, never fatal."""


@dataclass(frozen=True, slots=True)
class InboundSms:
    sender: str  # as the network gave it: "+15557654321", "07700 900123"…
    to: str | None  # our number (the DID) when known
    body: str
    transport: str  # "sip" | "gsm"
    received_at: dt.datetime
    # a transport's own reference, unique per message (e.g. the SIM slot and PDU
    # hash): makes delivery idempotent where a transport may hand the same SMS twice
    reference: str | None = None


def sip_user(uri: str) -> str | None:
    """The user part of `<sip:+15557654321@host>` / `pjsip:+1555…@host`, or None."""
    match = _SIP_USER.search(uri)
    return match.group(1) if match else None


def from_user_event(event: Mapping[str, str], received_at: dt.datetime) -> InboundSms:
    """Read `UserEvent: SMSIn` (see asterisk/extensions_textback.conf)."""
    sender = sip_user(event.get("From", "")) or ""
    if not sender:
        raise MalformedSms(f"SMSIn without a sender: From={event.get('From')!r}")
    try:
        raw = base64.b64decode(event.get("BodyB64", ""), validate=True)
    except (binascii.Error, ValueError):
        raise MalformedSms("SMSIn body is not valid base64") from None
    to = event.get("DID") or sip_user(event.get("To", ""))
    body = raw.decode("utf-8", errors="replace")
    declared = event.get("Length", "")
    if not body and declared.isdigit() and int(declared) > 0:
        # the words are gone before AMI: store that a text came and why it is empty,
        # so the front desk sees it and asks again, rather than an empty message
        log.warning("SMS from %s: its %s-byte body was dropped by Asterisk, which passes "
                    "at most %d bytes of a SIP MESSAGE; stored with a note instead",
                    sender, declared, SIP_BODY_LIMIT)
        body = too_long_note(int(declared))
    return InboundSms(sender=sender, to=to, body=body, transport="sip",
                      received_at=received_at)


def too_long_note(size: int) -> str:
    """What is stored for a text whose body the PBX could not pass on."""
    return (f"[A text of {size:,} bytes arrived, but the phone system passes at most "
            f"{SIP_BODY_LIMIT:,} bytes of a text message, so its words were lost. Ask the "
            "customer to send it again in shorter texts.]")


def receive(session: Session, sms: InboundSms, region: str) -> Message | None:
    """Store one inbound SMS; None when a transport handed the same one twice."""
    key = f"in:{sms.transport}:{sms.reference}" if sms.reference else None
    if key and session.scalar(select(Message.id).where(Message.idempotency_key == key)):
        log.info("inbound SMS %s seen before; stored once", key)
        return None
    number = numbers.to_e164(sms.sender, region) or sms.sender
    own = numbers.to_e164(sms.to, region) if sms.to else None
    contact = contacts.find_or_create(session, number, sms.received_at, source="sms")
    message = Message(
        direction="in", kind=kinds.SMS, idempotency_key=key, number=number,
        from_number=own or sms.to, body=sms.body, status=RECEIVED, transport=sms.transport,
        attempts=0, created_at=sms.received_at, updated_at=sms.received_at,
        contact_id=contact.id,
    )
    message.history.append(MessageEvent(status=RECEIVED, at=sms.received_at,
                                        detail=sms.transport))
    session.add(message)
    inbox.customer_activity(contact, sms.received_at)  # reopens, marks it waiting
    session.flush()
    return message


@dataclass
class Taken:
    """A customer's text stored, and what it set off."""

    message: Message
    reaction: conversations.Reaction
    due: list[OutboundSms] = field(default_factory=list)  # claimed: send now
    later: int = 0  # texts queued for later (the dispatcher's next look finds them)


def take(session: Session, sms: InboundSms, region: str, worker: str | None) -> Taken | None:
    """The one way in for a customer's text, whatever transport brought it: store it
    and react (keywords, intent, alerts). None when it was stored before."""
    message = receive(session, sms, region)
    if message is None:
        return None
    reaction = conversations.react(session, message, settings.all_values(session),
                                   sms.received_at, claim_for=worker)
    session.flush()
    due = [outbox.outbound(m) for m in reaction.messages if m.status == outbox.CLAIMED]
    return Taken(message, reaction, due, len(reaction.messages) - len(due))
