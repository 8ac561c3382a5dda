"""What a modem hands us, into the database: incoming SMS, multipart fragments, reports.

The driver deletes an SMS from the SIM only after these functions committed, so
each must be idempotent: the same PDU read twice (a crash between commit and
`AT+CMGD`, a sweep racing a notification) is stored once, by the PDU's hash.

Outbound parts are recorded here too (`record_part`), one row per SMS-SUBMIT with
the TP-MR the modem gave it, so a status report — which names nothing but the
TP-MR and the recipient — finds its message.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from agent.messages import inbound, outbox
from agent.store.db import DbRunner
from agent.store.models import Message, MessagePart, SmsFragment
from agent.transports.modem import pdu

log = logging.getLogger(__name__)

TRANSPORT = "gsm"
REPORT_RETRIES = 5  # a report can overtake the commit of its own send by a moment
# a part still missing after this never comes (networks give up within hours); what did
# arrive is stored then, marked, rather than waiting for ever and losing the customer's words
FRAGMENT_TIMEOUT = dt.timedelta(hours=6)


def inbound_sms(sms: pdu.Deliver, now: dt.datetime) -> inbound.InboundSms:
    return inbound.InboundSms(sender=sms.sender, to=None, body=sms.text, transport=TRANSPORT,
                              received_at=now, reference=sms.key)


def _stored_text(text: str) -> str:
    """A part's text as the database can hold it. Parts are UTF-16 units decoded one by
    one, so an emoji arrives as two surrogate halves (sometimes in two parts), which
    no database encoding accepts; JSON's \\uXXXX escapes carry them until the join."""
    return json.dumps(text)


def _part_text(stored: str) -> str:
    try:
        text = json.loads(stored)
    except ValueError:
        return stored
    return text if isinstance(text, str) else stored


def _parts(session: Session, sender: str, reference: int,
           total: int) -> tuple[dict[int, SmsFragment], list[int]]:
    """The stored parts of one multipart SMS by part number (the first copy of each), and
    the ids of every stored copy: a part the network delivered twice goes with the rest."""
    by_part: dict[int, SmsFragment] = {}
    ids = []
    for fragment in session.scalars(
            select(SmsFragment).where(SmsFragment.sender == sender,
                                      SmsFragment.reference == reference,
                                      SmsFragment.total == total)
            .order_by(SmsFragment.part, SmsFragment.id)):
        by_part.setdefault(fragment.part, fragment)
        ids.append(fragment.id)
    return by_part, ids


def store_fragment(session: Session, sms: pdu.Deliver,
                   now: dt.datetime) -> tuple[inbound.InboundSms | None, list[int]]:
    """Keep one part of a multipart SMS; the whole SMS (and its fragment ids) once complete.

    The fragments stay until the whole SMS is stored (`drop_fragments`), so a crash
    in between only means the SMS is assembled again, and stored once by its key.
    """
    assert sms.concat is not None
    reference, total, part = sms.concat
    if session.scalar(select(SmsFragment.id).where(SmsFragment.key == sms.key)) is None:
        session.add(SmsFragment(key=sms.key, sender=sms.sender, reference=reference,
                                total=total, part=part, body=_stored_text(sms.text),
                                received_at=now))
        session.flush()
    by_part, ids = _parts(session, sms.sender, reference, total)
    if len(by_part) < total:
        log.info("SMS from %s: part %d of %d stored, waiting for the rest", sms.sender,
                 part, total)
        return None, []
    chosen = [by_part[n] for n in range(1, total + 1)]
    key = hashlib.sha256("".join(f.key for f in chosen).encode()).hexdigest()[:32]
    whole = inbound.InboundSms(
        sender=sms.sender, to=None,
        body=pdu.join_utf16("".join(_part_text(f.body) for f in chosen)),
        transport=TRANSPORT, received_at=min(f.received_at for f in chosen), reference=key)
    return whole, ids


def expire_fragments(session: Session,
                     now: dt.datetime) -> list[tuple[inbound.InboundSms, list[int]]]:
    """Multipart SMS with parts missing for FRAGMENT_TIMEOUT: the parts that came, in
    order, with a marker where each missing one belongs (and their fragment ids)."""
    groups = session.execute(
        select(SmsFragment.sender, SmsFragment.reference, SmsFragment.total)
        .group_by(SmsFragment.sender, SmsFragment.reference, SmsFragment.total)
        .having(func.max(SmsFragment.received_at) < now - FRAGMENT_TIMEOUT)
    ).all()
    expired = []
    for sender, reference, total in groups:
        by_part, ids = _parts(session, sender, reference, total)
        fragments = list(by_part.values())
        body = pdu.join_utf16("".join(_part_text(by_part[n].body) if n in by_part
                                      else f" [part {n} of {total} never arrived] "
                                      for n in range(1, total + 1)))
        key = hashlib.sha256(("expired:" + "".join(f.key for f in fragments)).encode())
        log.warning("SMS from %s: %d of %d parts arrived; stored as it is after waiting %s",
                    sender, len(by_part), total, FRAGMENT_TIMEOUT)
        expired.append((inbound.InboundSms(
            sender=sender, to=None, body=body.strip(), transport=TRANSPORT,
            received_at=min(f.received_at for f in fragments),
            reference=key.hexdigest()[:32]), ids))
    return expired


def drop_fragments(session: Session, ids: list[int]) -> None:
    session.execute(delete(SmsFragment).where(SmsFragment.id.in_(ids)))


def sent_parts(session: Session, message_id: int) -> set[int]:
    """Parts of this message that left already (a retry sends only the others)."""
    return set(session.scalars(select(MessagePart.part)
                               .where(MessagePart.message_id == message_id)).all())


def record_part(session: Session, message_id: int, part: pdu.SubmitPart, tp_mr: int | None,
                now: dt.datetime) -> None:
    session.add(MessagePart(message_id=message_id, part=part.number, total=part.total,
                            tp_mr=tp_mr, status="sent" if tp_mr is not None else "unconfirmed",
                            sent_at=now))


def _digits(number: str) -> str:
    return "".join(ch for ch in number if ch.isdigit())


def apply_report(session: Session, report: pdu.StatusReport,
                 now: dt.datetime) -> tuple[int | None, bool]:
    """Record a status report; (message id or None, whether to try again shortly).

    The TP-MR wraps at 256, so the newest part with it whose message went to the
    report's recipient wins. A report for a message whose send is still being
    recorded asks to be tried again.
    """
    candidates = session.execute(
        select(MessagePart, Message)
        .join(Message, Message.id == MessagePart.message_id)
        .where(MessagePart.tp_mr == report.tp_mr)
        .order_by(MessagePart.sent_at.desc(), MessagePart.id.desc())
        .limit(20)
    ).all()
    tail = _digits(report.recipient)[-7:]
    match = next((c for c in candidates if _digits(c[1].number).endswith(tail)), None)
    if match is None:
        return None, True
    part, message = match
    if message.status == outbox.SENDING:
        return message.id, True
    part.status = report.outcome
    part.report_status = report.status
    part.reported_at = now
    parts = session.scalars(select(MessagePart)
                            .where(MessagePart.message_id == message.id)).all()
    if message.status not in (outbox.SENT, outbox.SUBMITTED):
        return message.id, False  # final already (e.g. a repeated report)
    if report.outcome == "failed":
        message.error = (f"the network could not deliver part {part.part} of {part.total} "
                         f"(TP-ST 0x{report.status:02X})")
        outbox.transition(message, outbox.FAILED, now, message.error)
    elif len(parts) == part.total and all(p.status == "delivered" for p in parts):
        outbox.transition(message, outbox.DELIVERED, now, f"status report, {part.total} part(s)")
    return message.id, False


class ModemStore:
    """The driver's `on_deliver` / `on_report`, on the agent's DB thread.

    `deliver` is the agent's one way in for a customer's text (the same as for SIP
    MESSAGEs); it must be idempotent by `InboundSms.reference`, as inbound.receive is.
    """

    def __init__(self, db: DbRunner,
                 deliver: Callable[[inbound.InboundSms], Awaitable[None]]) -> None:
        self.db = db
        self.deliver_inbound = deliver

    async def deliver(self, sms: pdu.Deliver) -> None:
        now = dt.datetime.now(dt.UTC)
        if sms.concat is None or sms.concat[1] <= 1:
            await self.deliver_inbound(inbound_sms(sms, now))
            return
        whole, fragment_ids = await self.db(lambda s: store_fragment(s, sms, now))
        if whole is not None:
            await self.deliver_inbound(whole)
            await self.db(lambda s: drop_fragments(s, fragment_ids))

    async def expire(self) -> int:
        """Store the multipart SMS whose missing parts will not come; how many."""
        now = dt.datetime.now(dt.UTC)
        stale = await self.db(lambda s: expire_fragments(s, now))
        for whole, fragment_ids in stale:
            await self.deliver_inbound(whole)
            await self.db(lambda s, ids=fragment_ids: drop_fragments(s, ids))
        return len(stale)

    async def report(self, report: pdu.StatusReport) -> None:
        for attempt in range(REPORT_RETRIES):
            now = dt.datetime.now(dt.UTC)
            message_id, again = await self.db(lambda s, at=now: apply_report(s, report, at))
            if not again:
                log.info("status report for message %s (TP-MR %d): %s", message_id,
                         report.tp_mr, report.outcome)
                return
            await asyncio.sleep(0.1 * (attempt + 1))
        log.warning("status report for TP-MR %d to %s matches no message sent by modem; "
                    "dropped", report.tp_mr, report.recipient)
