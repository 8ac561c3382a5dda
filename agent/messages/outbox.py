"""The outbox: every outbound SMS is a row here before any transport sees it.

Rows move queued → claimed → sending → submitted|sent → delivered | failed (or
cancelled, when a rule such as an opt-out stops them before a transport has them).
Each move is appended to `message_events`, so a person can see what happened to a
message and when.

*Claimed*: a worker took the row from the queue and has not given it to a transport
yet; it can always be given back (`release`), unsent. *Sending*: handed to a
transport's send; if the worker dies now, whether the text left is unknown.

The idempotency key (e.g. "<linkedid>:textback") is unique in the database: a
second attempt to text the same call — a replayed event, a restarted agent —
finds the first row instead of creating another.

Functions take a Session and `now`; the caller commits.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, insert, inspect, or_, select, update
from sqlalchemy.orm import Session

from agent.messages.kinds import AUTOMATED
from agent.store.models import Contact, Message, MessageEvent
from agent.store.prepared import Prepared, inserting_new

log = logging.getLogger(__name__)

QUEUED, CLAIMED, SENDING, SUBMITTED, SENT, DELIVERED, FAILED, CANCELLED = (
    "queued", "claimed", "sending", "submitted", "sent", "delivered", "failed", "cancelled",
)
FINAL = frozenset({DELIVERED, FAILED, CANCELLED})
WAITING = (QUEUED, CLAIMED)  # no transport has it: it can still be stopped
LEFT = (SUBMITTED, SENT)  # a transport took it: the moment it counts against limits
CAP_WINDOW = dt.timedelta(hours=24)  # compliance.max_automated_per_day counts in this


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


@dataclass(frozen=True, slots=True)
class Queued:
    """A message as `queue` wrote it, without an ORM object (the hot path)."""

    sms: OutboundSms
    claimed: bool  # claimed for the worker that asked: it goes to a transport now
    contact_id: int | None
    created_at: dt.datetime
    held: str | None = None  # why the frequency cap held it back (then it is cancelled)


_MESSAGES = Message.__table__
_ADD_EVENT = Prepared(insert(MessageEvent.__table__),
                      keys=("message_id", "status", "at", "detail"))
_ADD = inserting_new(_MESSAGES, _MESSAGES.c.idempotency_key, keys=(
    "direction", "kind", "idempotency_key", "number", "from_number", "body", "template",
    "variant", "transport", "encoding", "segments", "status", "attempts", "error",
    "next_attempt_at", "claimed_by", "created_at", "updated_at", "call_id", "contact_id",
    "sent_by", "experiment_id"))
# built once (bound names differ from the columns they set, as Core requires)
_LEFT = Prepared(update(_MESSAGES)
         .where(_MESSAGES.c.id == bindparam("message_id"), _MESSAGES.c.status == SENDING)
         .values(status=bindparam("new_status"), transport=bindparam("by"),
                 provider_ref=bindparam("ref"), provider_id=bindparam("pid"),
                 attempts=bindparam("tries"), error=None, error_kind=None,
                 updated_at=bindparam("at")))
# a provider's report came first (it moved the row on): only what the send returned
_LEFT_LATE = Prepared(update(_MESSAGES).where(_MESSAGES.c.id == bindparam("message_id"))
              .values(transport=bindparam("by"), provider_ref=bindparam("ref"),
                      provider_id=func.coalesce(_MESSAGES.c.provider_id, bindparam("pid")),
                      attempts=bindparam("tries")))
_HAND_OVER = Prepared(update(_MESSAGES)
              .where(_MESSAGES.c.id == bindparam("message_id"),
                     _MESSAGES.c.status == CLAIMED, _MESSAGES.c.claimed_by == bindparam("worker"))
              .values(status=SENDING, updated_at=bindparam("at")))


def queue(
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
    sent_by: str | None = None,
    experiment_id: int | None = None,
    cap: int = 0,
) -> Queued | None:
    """Add a queued message; None when one with this idempotency key exists already.

    With `cap` (compliance.max_automated_per_day; 0 = none), an automated text
    (kinds.AUTOMATED) to a number that already had `cap` of them in the last 24 hours
    is held back: written, but cancelled at once with the reason, so the inbox and the
    consent history show what was not sent and why, and it is never sent later.

    With `claim_for`, a message due now is claimed by that worker in the same
    transaction (queued → claimed), so the text-back of a missed call reaches its
    transport after one commit instead of two; it is still a committed row first.

    With `transport`, only that transport may send it: a queued row's transport is
    otherwise empty until a transport has taken it, so the column doubles as the pin.

    Two statements (the row, its history), no ORM unit of work: a missed call's text
    is written here, and the ORM's bookkeeping cost more than the writes themselves.
    """
    due = send_at or now
    held = None
    if cap > 0 and kind in AUTOMATED and automated_count(session, number, now) >= cap:
        held = (f"held back: {cap} automated texts to this number in 24 hours already "
                "(compliance.max_automated_per_day)")
    claimed = held is None and claim_for is not None and due <= now
    status = CANCELLED if held else CLAIMED if claimed else QUEUED
    connection = session.connection()
    message_id = _ADD.scalar(
        connection,
        {"direction": "out", "kind": kind, "idempotency_key": idempotency_key,
         "number": number, "from_number": from_number, "body": body, "template": template,
         "variant": variant, "transport": transport, "encoding": encoding,
         "segments": segments, "status": status, "attempts": 0, "error": held,
         "next_attempt_at": due, "claimed_by": claim_for if claimed else None,
         "created_at": now, "updated_at": now, "call_id": call_id,
         "contact_id": contact_id, "sent_by": sent_by,
         "experiment_id": experiment_id},
    )
    if message_id is None:
        log.info("message %s exists already; not queued twice", idempotency_key)
        return None
    history = [{"message_id": message_id, "status": QUEUED, "at": now, "detail": None}]
    if held:
        # written, but cancelled at once with the reason, so the inbox and the consent
        # history show what was not sent and why; it is never sent later
        log.warning("%s to %s held back by the frequency cap (%d in 24 h)", kind, number, cap)
        history.append({"message_id": message_id, "status": CANCELLED, "at": now,
                        "detail": held})
    if claimed:
        history.append({"message_id": message_id, "status": CLAIMED, "at": now,
                        "detail": claim_for})
    _ADD_EVENT.many(connection, history)
    sms = OutboundSms(message_id, number, from_number, body, 0, transport, segments or 1)
    return Queued(sms, claimed, contact_id, now, held)


def enqueue(session: Session, **fields: Any) -> Message | None:
    """`queue`, for callers that go on with the ORM: the message as an ORM object."""
    session.flush()  # the rows it refers to (a contact just created) exist first
    queued = queue(session, **fields)
    return None if queued is None else session.get_one(Message, queued.sms.id)


# the kinds as ORed equalities, not IN: a list parameter is rendered into the SQL at
# every run, and this runs for every text-back
_AUTOMATED_SINCE = Prepared(select(func.count()).select_from(_MESSAGES).where(
    _MESSAGES.c.number == bindparam("wanted"), _MESSAGES.c.direction == "out",
    or_(*(_MESSAGES.c.kind == kind for kind in sorted(AUTOMATED))),
    _MESSAGES.c.created_at > bindparam("since"), _MESSAGES.c.created_at <= bindparam("until"),
    _MESSAGES.c.status != CANCELLED))


def automated_count(session: Session, number: str, now: dt.datetime) -> int:
    """Automated texts to `number` in the 24 hours before `now`, not counting those
    cancelled before any transport had them (held back, opted out, reached)."""
    return _AUTOMATED_SINCE.scalar(session, {
        "wanted": number, "since": now - CAP_WINDOW, "until": now}) or 0


def held_back(message: Message) -> bool:
    """The frequency cap stopped this text (see enqueue)."""
    return message.status == CANCELLED and (message.error or "").startswith("held back:")


def outbound(message: Message) -> OutboundSms:
    return OutboundSms(message.id, message.number, message.from_number, message.body,
                       message.attempts, message.transport, message.segments or 1)


def transition(message: Message, status: str, now: dt.datetime, detail: str | None = None) -> None:
    message.status = status
    message.updated_at = now
    event = MessageEvent(status=status, at=now, detail=detail)
    state = inspect(message)
    if state.persistent and "history" in state.unloaded and state.session is not None:
        # a stored message whose history was never read: appending to the collection
        # would SELECT the whole history first, only to add one row to it
        event.message_id = message.id
        state.session.add(event)
    else:
        message.history.append(event)


def log_event(session: Session, message_id: int, status: str, now: dt.datetime,
              detail: str | None = None) -> None:
    """One line of a message's history, written without loading the message (the
    dispatcher's hot path: a text handed over, a text sent)."""
    _ADD_EVENT.count(session, {"message_id": message_id, "status": status, "at": now,
                               "detail": detail})


def cancel_queued(session: Session, number: str, now: dt.datetime, why: str, *,
                  kind: str | None = None) -> list[Message]:
    """Cancel the texts to `number` still waiting (of one kind, if given): the recipient
    opted out, was reached, or was erased. Claimed ones too: the dispatcher hands a
    text over only if it is still claimed. Texts a transport already holds are past
    stopping."""
    query = select(Message).where(Message.number == number, Message.direction == "out",
                                  Message.status.in_(WAITING))
    if kind is not None:
        query = query.where(Message.kind == kind)
    waiting = list(session.scalars(query))
    for message in waiting:
        transition(message, CANCELLED, now, why)
    return waiting


def claim_due(session: Session, now: dt.datetime, worker: str, limit: int = 20) -> list[Message]:
    """Move due queued messages to `claimed` for this worker.

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
            .values(status=CLAIMED, claimed_by=worker, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:
            message = session.get(Message, message_id, populate_existing=True)
            assert message is not None
            message.history.append(MessageEvent(status=CLAIMED, at=now, detail=worker))
            claimed.append(message)
    return claimed


def hand_over(session: Session, message_id: int, now: dt.datetime, worker: str,
              transport: str) -> bool:
    """claimed → sending, just before `transport` gets the text: from here on a stop
    leaves its fate unknown. False when it is no longer this worker's claim (cancelled
    meanwhile: opted out, reached, erased), and then it must not be sent."""
    if _HAND_OVER.count(session, {"message_id": message_id, "worker": worker, "at": now}) != 1:
        return False
    log_event(session, message_id, SENDING, now, transport)
    return True


def left(session: Session, message_id: int, now: dt.datetime, *, status: str,
         transport: str, provider_ref: str | None, attempts: int,
         provider_id: str | None = None) -> bool:
    """A transport took the text (sending → submitted or sent): one UPDATE and one
    history line, without loading the row. False when a provider's report of its fate
    came first (the row moved on already): then only what the send returned is kept."""
    fields = {"message_id": message_id, "by": transport, "ref": provider_ref,
              "pid": provider_id, "tries": attempts}
    connection = session.connection()
    if _LEFT.count(connection, {**fields, "new_status": status, "at": now}) != 1:
        _LEFT_LATE.count(connection, fields)
        return False
    log_event(session, message_id, status, now, transport)
    return True


def release(message: Message, now: dt.datetime, why: str) -> None:
    """A claimed text back to the queue, due as it was: no transport had it, so no
    attempt is spent."""
    message.next_attempt_at = min(message.next_attempt_at or now, now)
    transition(message, QUEUED, now, why)


def release_claims(session: Session, now: dt.datetime, worker: str, why: str,
                   keep: frozenset[int] = frozenset(),
                   claimed_before: dt.datetime | None = None) -> int:
    """Give the texts `worker` claimed and did not hand to a transport back to the queue
    (all but those in `keep`, and those claimed since `claimed_before`)."""
    query = select(Message).where(Message.status == CLAIMED, Message.claimed_by == worker)
    if claimed_before is not None:
        query = query.where(Message.updated_at < claimed_before)
    claimed = [message for message in session.scalars(query).all() if message.id not in keep]
    for message in claimed:
        release(message, now, why)
    return len(claimed)


def waiting_due(session: Session, now: dt.datetime,
                limit: int) -> list[tuple[int, int, str | None]]:
    """(id, SMS parts, pinned transport) of the queued texts due now, in claim order."""
    return [(message_id, segments or 1, transport) for message_id, segments, transport in
            session.execute(
                select(Message.id, Message.segments, Message.transport)
                .where(Message.direction == "out", Message.status == QUEUED,
                       Message.next_attempt_at <= now)
                .order_by(Message.next_attempt_at, Message.id)
                .limit(limit)).all()]


def reschedule(session: Session, now: dt.datetime,
               turns: list[tuple[int, dt.datetime, str]]) -> int:
    """Queued texts given a later turn, each with why in its history: (id, when, why).
    Only rows still queued move (one claimed or cancelled meanwhile is left alone)."""
    moved = 0
    for message_id, when, why in turns:
        result = session.execute(
            update(Message)
            .where(Message.id == message_id, Message.status == QUEUED)
            .values(next_attempt_at=when, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:
            session.add(MessageEvent(message_id=message_id, status=QUEUED, at=now, detail=why))
            moved += 1
    return moved


def next_due(session: Session) -> dt.datetime | None:
    return session.scalar(
        select(Message.next_attempt_at)
        .where(Message.direction == "out", Message.status == QUEUED)
        .order_by(Message.next_attempt_at)
        .limit(1)
    )


def opted_out(session: Session, number: str) -> bool:
    return bool(session.scalar(select(Contact.opted_out).where(Contact.number == number)))


def recover_interrupted(session: Session, now: dt.datetime, worker: str) -> tuple[int, int]:
    """What a previous run of this worker left behind: (failed, requeued).

    A text in `sending` was handed to a transport: whether it left is unknown, and
    sending again could text the customer twice, so it is failed, visibly, and never
    retried. A text only `claimed` never reached a transport: it goes back in the
    queue, without spending an attempt.
    """
    stuck = session.scalars(
        select(Message).where(Message.status.in_((CLAIMED, SENDING)),
                              Message.claimed_by == worker)
    ).all()
    failed = 0
    for message in stuck:
        if message.status == CLAIMED:
            release(message, now, "back in the queue: claimed when the agent stopped, never "
                                  "handed to a transport")
            continue
        message.error = "the agent stopped while sending; not retried to avoid a duplicate"
        message.error_kind = "unknown"
        transition(message, FAILED, now, message.error)
        failed += 1
    return failed, len(stuck) - failed
