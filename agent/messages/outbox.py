"""The outbox: every outbound SMS is a row here before any transport sees it.

Rows move queued → sending → submitted|sent → delivered | failed (or cancelled,
when a rule such as an opt-out stops them at send time). Each move is appended to
`message_events`, so a person can see what happened to a message and when.

The idempotency key (e.g. "<linkedid>:textback") is unique in the database: a
second attempt to text the same call — a replayed event, a restarted agent —
finds the first row instead of creating another.

Functions take a Session and `now`; the caller commits.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from agent.store.models import Contact, Message, MessageEvent

log = logging.getLogger(__name__)

QUEUED, SENDING, SUBMITTED, SENT, DELIVERED, FAILED, CANCELLED = (
    "queued", "sending", "submitted", "sent", "delivered", "failed", "cancelled",
)
FINAL = frozenset({DELIVERED, FAILED, CANCELLED})
LEFT = (SUBMITTED, SENT)  # a transport took it: the moment it counts against limits


@dataclass(frozen=True, slots=True)
class OutboundSms:
    """What a transport needs, detached from the ORM so it can cross threads."""

    id: int
    number: str
    from_number: str | None
    body: str
    attempts: int
    # only this transport may send it (a send-test of one route); None: any, in order
    pinned_transport: str | None = None
    parts: int = 1  # SMS parts as counted when queued (the rate limits count parts)


def enqueue(
    session: Session,
    *,
    now: dt.datetime,
    kind: str,
    number: str,
    body: str,
    idempotency_key: str | None,
    send_at: dt.datetime | None = None,
    from_number: str | None = None,
    template: str | None = None,
    variant: str | None = None,
    encoding: str | None = None,
    segments: int | None = None,
    call_id: int | None = None,
    contact_id: int | None = None,
    claim_for: str | None = None,
    transport: str | None = None,
) -> Message | None:
    """Add a queued message; None when one with this idempotency key exists already.

    With `claim_for`, a message due now is claimed by that worker in the same
    transaction (queued → sending), so the text-back of a missed call reaches its
    transport after one commit instead of two; it is still a committed row first.

    With `transport`, only that transport may send it: a queued row's transport is
    otherwise empty until a transport has taken it, so the column doubles as the pin.
    """
    message = Message(
        direction="out", kind=kind, idempotency_key=idempotency_key, number=number,
        from_number=from_number, body=body, template=template, variant=variant,
        transport=transport, encoding=encoding,
        segments=segments, status=QUEUED, attempts=0, next_attempt_at=send_at or now,
        created_at=now, updated_at=now, call_id=call_id, contact_id=contact_id,
    )
    message.history.append(MessageEvent(status=QUEUED, at=now))
    if claim_for is not None and message.next_attempt_at <= now:
        # claimed before the INSERT: one row written as it will be, not written twice
        message.claimed_by = claim_for
        transition(message, SENDING, now, claim_for)
    try:
        with session.begin_nested():
            session.add(message)
    except IntegrityError:
        log.info("message %s exists already; not queued twice", idempotency_key)
        return None
    return message


def outbound(message: Message) -> OutboundSms:
    return OutboundSms(message.id, message.number, message.from_number, message.body,
                       message.attempts, message.transport, message.segments or 1)


def transition(message: Message, status: str, now: dt.datetime, detail: str | None = None) -> None:
    message.status = status
    message.updated_at = now
    message.history.append(MessageEvent(status=status, at=now, detail=detail))


def cancel_queued(session: Session, number: str, now: dt.datetime, why: str, *,
                  kind: str | None = None) -> list[Message]:
    """Cancel the texts to `number` still waiting in the queue (of one kind, if given):
    the recipient opted out, was reached, or was erased. Texts a transport already
    holds are past stopping."""
    query = select(Message).where(Message.number == number, Message.direction == "out",
                                  Message.status == QUEUED)
    if kind is not None:
        query = query.where(Message.kind == kind)
    waiting = list(session.scalars(query))
    for message in waiting:
        transition(message, CANCELLED, now, why)
    return waiting


def claim_due(session: Session, now: dt.datetime, worker: str, limit: int = 20) -> list[Message]:
    """Move due queued messages to `sending` for this worker.

    The conditional UPDATE is the claim: two agents sharing one database can both
    see a row, but only one UPDATE matches `status = 'queued'`.
    """
    ids = session.scalars(
        select(Message.id)
        .where(Message.direction == "out", Message.status == QUEUED,
               Message.next_attempt_at <= now)
        .order_by(Message.next_attempt_at, Message.id)
        .limit(limit)
    ).all()
    claimed: list[Message] = []
    for message_id in ids:
        result = session.execute(
            update(Message)
            .where(Message.id == message_id, Message.status == QUEUED)
            .values(status=SENDING, claimed_by=worker, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:
            message = session.get(Message, message_id, populate_existing=True)
            assert message is not None
            message.history.append(MessageEvent(status=SENDING, at=now, detail=worker))
            claimed.append(message)
    return claimed


def next_due(session: Session) -> dt.datetime | None:
    return session.scalar(
        select(Message.next_attempt_at)
        .where(Message.direction == "out", Message.status == QUEUED)
        .order_by(Message.next_attempt_at)
        .limit(1)
    )


def opted_out(session: Session, number: str) -> bool:
    return bool(session.scalar(select(Contact.opted_out).where(Contact.number == number)))


def recover_interrupted(session: Session, now: dt.datetime, worker: str) -> int:
    """Messages a previous run of this worker left in `sending`.

    Whether they reached the transport is unknown; sending again could text the
    customer twice, so they are failed, visibly, and never retried.
    """
    stuck = session.scalars(
        select(Message).where(Message.status == SENDING, Message.claimed_by == worker)
    ).all()
    for message in stuck:
        message.error = "the agent stopped while sending; not retried to avoid a duplicate"
        message.error_kind = "unknown"
        transition(message, FAILED, now, message.error)
    return len(stuck)
