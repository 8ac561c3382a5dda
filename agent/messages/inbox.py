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

from sqlalchemy import ColumnElement, Select, and_, bindparam, case, func, or_, select, update
from sqlalchemy.orm import Session

from agent.messages import rings
from agent.pbx import originate
from agent.people import contacts
from agent.store.models import CallbackRequest, Contact, ConversationRead, Message, Note, User
from agent.store.prepared import Prepared

log = logging.getLogger(__name__)

OPEN, CLOSED = "open", "closed"
PENDING, CALLING, RINGING, FAILED = rings.PENDING, rings.CALLING, rings.RINGING, rings.FAILED
# a request nobody picked up in this long is stale: the thread then says "not placed"
# and offers a retry, so the agent must never place it later (ringing a desk long after
# the click would surprise whoever sits there now, and a retry would ring it twice)
STALE = dt.timedelta(seconds=30)
VIEWS = ("all", "unassigned", "mine", OPEN, CLOSED)
MAX_QUERY = 100  # characters of a search

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
_REOPEN = Prepared(update(_CONTACTS).where(_CONTACTS.c.id == bindparam("contact_id")).values(
    conversation_status=OPEN,
    last_message_at=case((or_(_CONTACTS.c.last_message_at.is_(None),
                              _CONTACTS.c.last_message_at < _AT), _AT),
                         else_=_CONTACTS.c.last_message_at),
    last_inbound_at=case((or_(_CONTACTS.c.last_inbound_at.is_(None),
                              _CONTACTS.c.last_inbound_at < _AT), _AT),
                         else_=_CONTACTS.c.last_inbound_at)))


def reopen(session: Session, contact_id: int, at: dt.datetime) -> None:
    """`customer_activity` in one UPDATE, for a contact not loaded as an object."""
    _REOPEN.count(session, {"contact_id": contact_id, "at": at})


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


# -- the list: views, search, keyset paging, "new for me" ----------------------------
def conversations(view: str, user_id: int, query: str = "", region: str = "US",
                  before: tuple[dt.datetime, int] | None = None,
                  dialect: str = "sqlite") -> Select[tuple[Contact]]:
    """The conversations of a view matching `query`, newest activity first, from just
    after `before` (the last row of the previous page: keyset paging, on ix_contacts_*)."""
    listed = select(Contact).where(Contact.last_message_at.is_not(None))
    if view == "unassigned":
        listed = listed.where(Contact.assigned_to.is_(None))
    elif view == "mine":
        listed = listed.where(Contact.assigned_to == user_id)
    elif view in (OPEN, CLOSED):
        listed = listed.where(Contact.conversation_status == view)
    query = " ".join(query.split())[:MAX_QUERY]
    if query:
        listed = listed.where(search_clause(query, region, dialect))
    if before is not None:
        at, contact_id = before
        listed = listed.where(or_(Contact.last_message_at < at,
                                  and_(Contact.last_message_at == at, Contact.id < contact_id)))
    return listed.order_by(Contact.last_message_at.desc(), Contact.id.desc())


def _containing(column: Any, text: str, dialect: str) -> ColumnElement[bool]:
    """`column` contains `text`, in any case. SQLite's LIKE ignores case already (and its
    lower() knows ASCII only), so it is asked without lower(), at half the cost."""
    if dialect == "sqlite":
        return column.contains(text, autoescape=True)  # type: ignore[no-any-return]
    return func.lower(column).contains(text.lower(), autoescape=True)  # type: ignore[no-any-return]


def search_clause(query: str, region: str, dialect: str = "sqlite") -> ColumnElement[bool]:
    """A name, a number written any way ("(212) 555-0142", "212.555.0142", "+1 212…",
    the last digits) or words of a text or note: any one of them matches."""
    found: list[ColumnElement[bool]] = [
        _containing(Contact.name, query, dialect),
        Contact.number.in_(select(Message.number).where(
            _containing(Message.body, query, dialect))),
        Contact.id.in_(select(Note.contact_id).where(_containing(Note.body, query, dialect))),
    ]
    digits = "".join(ch for ch in query if ch.isdigit())
    if len(digits) >= 3 and len(digits) * 2 >= len(query.replace(" ", "")):
        found += contacts.number_matches(digits, query, region)
    return or_(*found)


def cursor(contact: Contact) -> str:
    """Where the next page starts: after this conversation."""
    assert contact.last_message_at is not None
    return f"{contact.last_message_at.astimezone(dt.UTC).isoformat()}_{contact.id}"


def parse_cursor(raw: str) -> tuple[dt.datetime, int] | None:
    """The cursor of `cursor`, or None when it is not one (the first page then)."""
    at, _sep, contact_id = raw.rpartition("_")
    try:
        parsed = dt.datetime.fromisoformat(at)
    except ValueError:
        return None
    if not contact_id.isdigit() or parsed.tzinfo is None:
        return None
    return parsed, int(contact_id)


def seen(session: Session, user_id: int, contact_id: int, now: dt.datetime) -> None:
    """The user opened the conversation: what came before now is not new for them."""
    read = session.get(ConversationRead, (user_id, contact_id))
    if read is None:
        session.add(ConversationRead(user_id=user_id, contact_id=contact_id, seen_at=now))
    elif read.seen_at < now:
        read.seen_at = now


def new_for(session: Session, user_id: int, shown: list[Contact]) -> set[int]:
    """Which of the listed conversations the customer moved in since the user last
    opened them (or ever, when they never did)."""
    ids = [contact.id for contact in shown if contact.last_inbound_at is not None]
    if not ids:
        return set()
    reads = {contact_id: at for contact_id, at in session.execute(
        select(ConversationRead.contact_id, ConversationRead.seen_at)
        .where(ConversationRead.user_id == user_id, ConversationRead.contact_id.in_(ids)))}
    return {contact.id for contact in shown if contact.last_inbound_at is not None
            and (contact.id not in reads or reads[contact.id] < contact.last_inbound_at)}


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
    late = ("not placed: the agent did not pick it up "
            f"within {int(STALE.total_seconds())} seconds")
    return [Claimed(request.id, request.extension, request.number)
            for request in rings.claim_once(session, CallbackRequest, now, worker, STALE, late)]


def not_picked_up(request: CallbackRequest, now: dt.datetime) -> bool:
    """Still pending after STALE: the agent did not take it (and never will)."""
    return request.status == PENDING and now - request.created_at > STALE


def give_up_pending(session: Session, contact: Contact, now: dt.datetime) -> None:
    """Before a retry: the earlier requests nobody took are failed, so only one rings."""
    for request in session.scalars(select(CallbackRequest).where(
            CallbackRequest.contact_id == contact.id, CallbackRequest.status == PENDING)):
        request.status, request.done_at = FAILED, now
        request.detail = "not placed: the agent did not pick it up"


def finish(session: Session, request_id: int, status: str, detail: str,
           now: dt.datetime) -> None:
    rings.finish_request(session, CallbackRequest, request_id, status, detail, now)


async def place(db: Callable[[Callable[[Session], T]], Awaitable[Any]],
                ami_action: Callable[..., Awaitable[Mapping[str, str]]], trunk: str,
                claimed: list[Claimed]) -> None:
    """Place the call backs claimed already (claim_pending): ring the desk, then dial
    the customer, recording how each went.

    `db` runs a function in a transaction (agent.store.db.DbRunner); `ami_action` sends
    an AMI action (AmiLink.action)."""
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
