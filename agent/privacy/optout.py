"""Opting out: an opt-out staff record for a customer who asked by phone, and the
history of a contact's opt-outs and opt-ins.

An opt-out recorded by staff works like a STOP text (agent.messages.conversations):
the number is never texted again, queued texts to it are cancelled and its
follow-ups and reminders stop. No confirmation is texted. Opting back in is left
to the customer alone, by texting START.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from agent.messages import kinds, outbox, timers
from agent.people.contacts import ContactError, target
from agent.store import audit
from agent.store.models import AuditEntry, Contact, Message

log = logging.getLogger(__name__)

MAX_REASON = 300


def record_opt_out(session: Session, contact: Contact, now: dt.datetime, actor: str,
                   reason: str, *, ip: str | None = None) -> int:
    """Staff record an opt-out the customer asked for (by phone, in person).

    Returns how many queued texts were cancelled. Everything else still queued is
    also refused at send time by the dispatcher, which checks every message.
    """
    reason = " ".join(reason.split())
    if not reason:
        raise ContactError("Say why (e.g. “asked on the phone on 3 May not to be texted”): "
                           "the reason is kept in the audit log.")
    if len(reason) > MAX_REASON:
        raise ContactError(f"The reason is {len(reason)} characters long; at most "
                           f"{MAX_REASON}.")
    if contact.opted_out:
        raise ContactError("This number has opted out already.")
    contact.opted_out, contact.opted_out_at = True, now
    timers.cancel(session, contact.id, (timers.FOLLOWUP, *timers.ESCALATION),
                  f"opted out (recorded by {actor})", now)
    pending = outbox.cancel_queued(session, contact.number, now, "the recipient opted out")
    audit.audit(session, now, actor, audit.CONTACT_OPTED_OUT, target(contact.id), ip,
                {"reason": reason, "cancelled": len(pending)})
    log.info("contact %d opted out by %s; %d queued text(s) cancelled", contact.id, actor,
             len(pending))
    return len(pending)


@dataclass(frozen=True)
class OptEvent:
    """One change of a contact's opt-out state, for the contact page."""

    at: dt.datetime
    opted_out: bool  # the state after it
    how: str  # 'texted “STOP”', 'recorded by desk: asked on the phone'
    channel: str = ""  # "text (sip)", "staff (web)", "staff (command line)"


def opt_history(session: Session, contact: Contact) -> list[OptEvent]:
    """When the contact opted out and back in, oldest first.

    A STOP or START that changed the state always got exactly one confirmation
    (agent.messages.conversations), whose idempotency key "reply:<id>" names the customer's
    text, so the confirmations are the record; a STOP sent again while opted out
    changed nothing and is not listed. Staff actions come from the audit log.
    """
    events: list[OptEvent] = []
    confirmations = session.scalars(select(Message).where(
        Message.number == contact.number, Message.direction == "out",
        Message.kind.in_((kinds.OPT_OUT_CONFIRMATION, kinds.OPT_IN_CONFIRMATION)))).all()
    asked_by: dict[int, Message] = {}
    texts = [int(key[6:]) for key in (m.idempotency_key or "" for m in confirmations)
             if key.startswith("reply:") and key[6:].isdigit()]
    if texts:
        asked_by = {m.id: m for m in session.scalars(
            select(Message).where(Message.id.in_(texts)))}
    for confirmation in confirmations:
        key = confirmation.idempotency_key or ""
        text = asked_by.get(int(key[6:])) if key[6:].isdigit() else None
        how = f"texted “{text.body.strip()}”" if text is not None else "by text"
        channel = f"text ({text.transport})" if text is not None and text.transport else "text"
        events.append(OptEvent(text.created_at if text else confirmation.created_at,
                               confirmation.kind == kinds.OPT_OUT_CONFIRMATION, how, channel))
    # SQLite reuses the id of a row deleted by hand: only entries from this contact's
    # own lifetime are theirs
    for entry in session.scalars(select(AuditEntry).where(
            AuditEntry.target == target(contact.id), AuditEntry.action == audit.CONTACT_OPTED_OUT,
            AuditEntry.at >= contact.created_at)):
        reason = (entry.details or {}).get("reason") or ""
        channel = "staff (command line)" if (entry.actor or "").startswith("cli") else \
            "staff (web)"
        events.append(OptEvent(entry.at, True, f"recorded by {entry.actor or 'staff'}"
                               + (f": {reason}" if reason else ""), channel))
    events.sort(key=lambda event: event.at)
    if contact.opted_out and contact.opted_out_at and not any(
            event.opted_out and event.at == contact.opted_out_at for event in events):
        # e.g. the suppression row left by an erasure: the opt-out is all it remembers
        events.append(OptEvent(contact.opted_out_at, True, "no details kept"))
        events.sort(key=lambda event: event.at)
    return events
