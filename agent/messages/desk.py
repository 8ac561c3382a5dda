"""What the front desk does to a conversation from the shared inbox: reply, take or hand
it over, close or reopen it, mark the customer contacted, record a booked job (or undo
one) and ask the PBX to call the customer back.

Each action is one function that writes its rows and leaves the commit to the caller
(the web UI commits it with nothing else). What a person asked for that cannot be done
raises Refused, worded for them. The inbox's own state (who owns a conversation, open
or closed, waiting or not) is agent.messages.inbox; this module sits above it and
agent.messages.timers, because a reply or a booking also stops the follow-ups.
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from agent.messages import inbox, kinds, outbox, timers
from agent.rules import templates
from agent.store import audit
from agent.store.models import CallbackRequest, Contact, Message, User

log = logging.getLogger(__name__)

MAX_REPLY = 1000  # characters: a reply is a text message, not a letter


class Refused(ValueError):
    """The action cannot be done; the message says why, for the person who asked."""


def reply(session: Session, contact: Contact, body: str, user_id: int, username: str,
          now: dt.datetime) -> Message:
    """Queue a reply from staff (the agent sends it), from the number the customer last
    reached us on. The replier owns the conversation if nobody did, and the customer
    counts as reached: their follow-ups and reminders stop. Opted-out numbers, empty
    and over-long replies are refused."""
    if contact.opted_out:
        raise Refused(f"{contact.number} has opted out of texts (they replied STOP). "
                      "Call them instead, or wait until they text START.")
    if not body:
        raise Refused("the reply is empty.")
    if len(body) > MAX_REPLY:
        raise Refused(f"a reply can be at most {MAX_REPLY} characters.")
    from_number = session.scalar(
        select(Message.from_number).where(Message.number == contact.number,
                                          Message.from_number.is_not(None))
        .order_by(Message.created_at.desc(), Message.id.desc()).limit(1))
    info = templates.segments(body)
    message = outbox.enqueue(session, now=now, kind=kinds.STAFF_REPLY, number=contact.number,
                             body=body, idempotency_key=None, from_number=from_number,
                             encoding=info.encoding, segments=info.segments,
                             contact_id=contact.id)
    assert message is not None  # no idempotency key: never a duplicate
    message.sent_by = username
    inbox.staff_activity(contact, user_id, now)
    timers.contacted(session, contact, f"reply from {username}", now)
    log.info("%s replied to %s (message %d, %d segment(s))", username, contact.number,
             message.id, info.segments)
    return message


def assign(session: Session, contact: Contact, user_id: int | None) -> User | None:
    """Give the conversation to an active user, or to nobody (None); returns the user."""
    if user_id is None:
        contact.assigned_to = None
        return None
    user = session.get(User, user_id)
    if user is None or not user.active:
        raise Refused("No such active user.")
    contact.assigned_to = user.id
    return user


def set_status(contact: Contact, status: str, user_id: int) -> None:
    """Close or reopen the conversation; whoever does it owns it if nobody did."""
    if status not in (inbox.OPEN, inbox.CLOSED):
        raise Refused(f"a conversation is {inbox.OPEN} or {inbox.CLOSED}, not {status!r}")
    if contact.assigned_to is None:
        contact.assigned_to = user_id
    contact.conversation_status = status


def mark_contacted(session: Session, contact: Contact, user_id: int, username: str,
                   now: dt.datetime) -> None:
    """Staff reached the customer another way: the follow-ups and reminders stop."""
    inbox.staff_activity(contact, user_id, now)
    timers.contacted(session, contact, f"marked by {username}", now)


def book(session: Session, contact: Contact, user_id: int, username: str, now: dt.datetime,
         ip: str | None = None) -> bool:
    """Record that the conversation booked a job (the dashboard counts it); False when it
    was booked already. Audited."""
    if contact.booked_at is not None:
        return False
    contact.booked_at = now
    inbox.staff_activity(contact, user_id, now)
    # booking a job means staff reached them: follow-ups and reminders stop, unless
    # staff already reached them after their latest call or text
    if contact.contacted_at is None or (contact.last_inbound_at is not None
                                        and contact.contacted_at < contact.last_inbound_at):
        timers.contacted(session, contact, f"job booked by {username}", now)
    audit.audit(session, now, username, audit.BOOKED, contact.number, ip)
    return True


def clear_booking(session: Session, contact: Contact, username: str, now: dt.datetime,
                  ip: str | None = None) -> bool:
    """Undo a mistaken "Booked a job"; False when it was not booked. Audited, with the
    booking it removes."""
    if contact.booked_at is None:
        return False
    # contacted_at stays: whoever clicked did talk to the customer
    audit.audit(session, now, username, audit.BOOKING_CLEARED, contact.number, ip,
                {"booked_at": contact.booked_at.isoformat()})
    contact.booked_at = None
    return True


AGENT_OFFLINE = ("The agent is offline (it has not reported lately), so nothing can ring "
                 "your desk phone: call the customer from your phone, or ask IT to start "
                 "the textback agent.")


def qualify(session: Session, contact: Contact, username: str, now: dt.datetime,
            qualified: bool = True, ip: str | None = None) -> bool:
    """Mark the conversation a qualified lead, whatever its words (the dashboard's
    qualified conversation rate counts it beside the replies' intents), or undo that;
    False when it already was so. Audited."""
    if (contact.qualified_at is not None) == qualified:
        return False
    if qualified:
        contact.qualified_at = now
        audit.audit(session, now, username, audit.QUALIFIED, contact.number, ip)
    else:
        audit.audit(session, now, username, audit.QUALIFIED_CLEARED, contact.number, ip,
                    {"qualified_at": contact.qualified_at.isoformat()
                     if contact.qualified_at else None})
        contact.qualified_at = None
    return True


def call_back(session: Session, contact: Contact, user_id: int, now: dt.datetime,
              agent_online: bool = True) -> tuple[CallbackRequest, str]:
    """Ask the agent to ring the user's desk phone, then dial the customer; returns the
    request and the extension that rings. Needs the agent running (`agent_online`: it
    reported its health lately; nothing is queued otherwise), the user's desk extension
    and a full international number. Earlier requests the agent never took are given
    up first, so a retry rings once."""
    if not agent_online:
        raise Refused(AGENT_OFFLINE)
    user = session.get(User, user_id)
    if user is None or not user.extension:
        raise Refused("Call back needs your desk extension on your user profile; ask an "
                      "admin to add it.")
    if not contact.number.startswith("+"):
        raise Refused(f"Cannot call {contact.number}: not a full international number.")
    inbox.give_up_pending(session, contact, now)
    request = inbox.request_callback(session, contact, user.id, user.extension, now)
    inbox.staff_activity(contact, user.id, now)
    return request, user.extension
