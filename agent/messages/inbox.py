"""The shared inbox's state, kept by the agent and the web UI alike.

A conversation is a contact: who owns it (`assigned_to`), whether it is open or
closed, and when the customer or staff last moved (`last_message_at`). Automatic
texts (text-back, follow-ups, alerts) do not move it: the list is ordered by what
a person did. A customer's missed call or text reopens a closed conversation,
so nothing a customer says can hide in "Closed".

"Call back" starts in the web UI, which has no AMI link: it writes a
`callback_requests` row, and the agent's timers loop claims it once (a
conditional UPDATE, as the outbox does) and makes the PBX ring the staff
member's desk extension, then dial the customer. The result stays on the row
so the thread can show it.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, and_, bindparam, case, or_, select, update
from sqlalchemy.orm import Session

from agent.pbx import originate
from agent.store.models import CallbackRequest, Contact, User

log = logging.getLogger(__name__)

OPEN, CLOSED = "open", "closed"
PENDING, CALLING, RINGING, FAILED = "pending", "calling", "ringing", "failed"
# a request nobody picked up in this long is stale: ringing a desk minutes after the
# click would surprise whoever sits there now
STALE = dt.timedelta(minutes=2)

T = TypeVar("T")


def customer_activity(contact: Contact, at: dt.datetime) -> None:
    """The customer called or texted: the conversation is open and waiting for staff."""
    contact.conversation_status = OPEN
    if contact.last_message_at is None or contact.last_message_at < at:
        contact.last_message_at = at
    if contact.last_inbound_at is None or contact.last_inbound_at < at:
        contact.last_inbound_at = at


_CONTACTS = Contact.__table__
# customer_activity for a contact that is not loaded (a missed call: the hot path)
_AT = bindparam("at", type_=_CONTACTS.c.last_message_at.type)  # stored as the column is
_REOPEN = (update(_CONTACTS).where(_CONTACTS.c.id == bindparam("contact_id")).values(
    conversation_status=OPEN,
    last_message_at=case((or_(_CONTACTS.c.last_message_at.is_(None),
                              _CONTACTS.c.last_message_at < _AT), _AT),
                         else_=_CONTACTS.c.last_message_at),
    last_inbound_at=case((or_(_CONTACTS.c.last_inbound_at.is_(None),
                              _CONTACTS.c.last_inbound_at < _AT), _AT),
                         else_=_CONTACTS.c.last_inbound_at)))


def reopen(session: Session, contact_id: int, at: dt.datetime) -> None:
    """`customer_activity` in one UPDATE, for a contact not loaded as an object."""
    session.connection().execute(_REOPEN, {"contact_id": contact_id, "at": at})


def staff_activity(contact: Contact, user_id: int, at: dt.datetime) -> None:
    """Staff acted on the conversation: the first to do so owns it."""
    if contact.assigned_to is None:
        contact.assigned_to = user_id
    if contact.last_message_at is None or contact.last_message_at < at:
        contact.last_message_at = at


def alert_numbers(session: Session, contact: Contact, everyone: list[str]) -> list[str]:
    """Whom to text about this customer: the conversation's owner, on the mobile of their
    user profile, once someone owns it; before that (or when the owner has no mobile or
    is disabled) `everyone`, the setting's list. A taken conversation is theirs to answer,
    and texting the whole desk about it trains people to ignore alerts."""
    if contact.assigned_to is not None:
        owner = session.get(User, contact.assigned_to)
        if owner is not None and owner.active and owner.phone:
            return [owner.phone]
    return list(everyone)


def waiting_clause() -> ColumnElement[bool]:
    """`waiting` as SQL, to count the customers waiting without loading them."""
    return and_(Contact.conversation_status == OPEN, Contact.last_inbound_at.is_not(None),
                or_(Contact.contacted_at.is_(None),
                    Contact.contacted_at < Contact.last_inbound_at))


def waiting(contact: Contact) -> bool:
    """The customer moved last and nobody has reached them since."""
    return (contact.conversation_status == OPEN and contact.last_inbound_at is not None
            and (contact.contacted_at is None or contact.contacted_at < contact.last_inbound_at))


# -- call back --------------------------------------------------------------------------
def request_callback(session: Session, contact: Contact, user_id: int, extension: str,
                     now: dt.datetime) -> CallbackRequest:
    request = CallbackRequest(contact_id=contact.id, user_id=user_id, extension=extension,
                              number=contact.number, status=PENDING, created_at=now)
    session.add(request)
    session.flush()
    return request


@dataclass(frozen=True, slots=True)
class Claimed:
    """A claimed request, detached from the ORM so it can cross to the event loop."""

    id: int
    extension: str
    number: str


def claim_pending(session: Session, now: dt.datetime, worker: str) -> list[Claimed]:
    """Claim pending requests for this worker; each is claimed by exactly one agent."""
    claimed: list[Claimed] = []
    for request in session.scalars(select(CallbackRequest).where(
            CallbackRequest.status == PENDING).order_by(CallbackRequest.id).limit(10)):
        won = session.execute(
            update(CallbackRequest)
            .where(CallbackRequest.id == request.id, CallbackRequest.status == PENDING)
            .values(status=CALLING, claimed_by=worker)
            .execution_options(synchronize_session=False)).rowcount == 1
        if not won:
            continue
        session.refresh(request)
        if now - request.created_at > STALE:
            finish(session, request.id, FAILED, "not placed: the agent picked it up "
                   f"more than {int(STALE.total_seconds() // 60)} minutes late", now)
            continue
        claimed.append(Claimed(request.id, request.extension, request.number))
    return claimed


def finish(session: Session, request_id: int, status: str, detail: str,
           now: dt.datetime) -> None:
    request = session.get(CallbackRequest, request_id)
    if request is not None:
        request.status, request.detail, request.done_at = status, detail, now


async def run_pending(db: Callable[[Callable[[Session], T]], Awaitable[Any]],
                      ami_action: Callable[..., Awaitable[Mapping[str, str]]],
                      trunk: str, worker: str) -> int:
    """Place every pending call back: ring the desk, then dial the customer.

    `db` runs a function in a transaction (agent.store.db.DbRunner); `ami_action` sends
    an AMI action (AmiLink.action). Returns how many were claimed.
    """
    claimed: list[Claimed] = await db(
        lambda s: claim_pending(s, dt.datetime.now(dt.UTC), worker))
    for request in claimed:
        try:
            action = originate.connect_action(request.extension, request.number,
                                              trunk=trunk, label="CALL BACK")
            await ami_action(action, timeout=5)
        except Exception as exc:  # AmiError, a bad extension: recorded, never retried
            status, detail = FAILED, f"not placed: {exc}"
            log.error("call back %d (%s → %s) failed: %s", request.id, request.extension,
                      request.number, exc)
        else:
            status, detail = RINGING, f"ringing {request.extension}, then dialling the customer"
            log.info("call back %d: ringing %s for %s", request.id, request.extension,
                     request.number)
        await db(lambda s, r=request.id, st=status, d=detail:
                 finish(s, r, st, d, dt.datetime.now(dt.UTC)))
    return len(claimed)
