"""What a finished call gets: its row, its caller's contact, the decision, the text-back
and its follow-ups; and what a call that reached the customer stops.

This is the heart of the product, in one transaction per call: a finished call
(from AMI or from the CDR file) → find or create the contact → policy → call row →
outbox row → follow-ups. Pure domain on a Session, time passed in; the agent's
event loop only hands calls over and the queued text to the dispatcher.

Idempotent per call: the Call.linkedid unique constraint and the text-back's
idempotency key make a call seen twice (a replayed event, a restart, a CDR look-up)
change nothing the second time, so a call is never texted twice.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable

from sqlalchemy import and_, bindparam, case, func, insert, select, update
from sqlalchemy.orm import Session

from agent.calls import policy
from agent.calls.tracker import FinishedCall
from agent.messages import inbox, kinds, outbox, timers
from agent.messages.outbox import OutboundSms
from agent.people import contacts
from agent.rules import experiments, numbers, settings
from agent.store.models import Call, Contact, Message
from agent.store.prepared import Prepared

log = logging.getLogger(__name__)

LIVE, CDR = "live", "cdr"  # Call.source: seen on AMI, or read from the CDR file
# A call learnt from the CDR file this long after it ended is recorded, not texted: a
# "sorry we missed you" hours later reads oddly. Also how far back the start-up look goes.
MAX_AGE = dt.timedelta(minutes=30)


def _utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


_CALLS = Call.__table__
_MESSAGES = Message.__table__
# compiled once: the statements of a missed call (the agent's hot path) run without
# the ORM's unit of work or SQLAlchemy's per-execution bookkeeping (agent.store.prepared)
_SEEN = Prepared(select(_CALLS.c.id).where(_CALLS.c.linkedid == bindparam("wanted")))
_ADD_CALL = Prepared(insert(_CALLS).returning(_CALLS.c.id), keys=(
    "linkedid", "caller", "caller_raw", "caller_name", "did", "direction", "missed",
    "reason", "voicemail_left", "answered_by", "ring_seconds", "trunk_endpoint",
    "started_at", "ended_at", "source", "contact_id", "decision", "skip_reason"))
_DUPLICATE = Prepared(update(_CALLS).where(_CALLS.c.id == bindparam("call_id"))
                      .values(decision="skip", skip_reason="duplicate"))
_HELD = Prepared(update(_CALLS).where(_CALLS.c.id == bindparam("call_id"))
                 .values(decision="skip", skip_reason="frequency_cap"))
_HISTORY = Prepared(
    select(
        # != twice, not NOT IN: a list parameter is rendered into the SQL at every run
        func.max(case((and_(_MESSAGES.c.kind == kinds.TEXTBACK,
                            _MESSAGES.c.status != outbox.FAILED,
                            _MESSAGES.c.status != outbox.CANCELLED),
                       _MESSAGES.c.created_at))),
        func.max(case((_MESSAGES.c.error_kind == "permanent", 1), else_=0)),
    )
    .where(_MESSAGES.c.number == bindparam("wanted"), _MESSAGES.c.direction == "out")
)


def record(session: Session, call: FinishedCall, now: dt.datetime, *, region: str,
           worker: str | None, source: str = LIVE) -> tuple[OutboundSms | bool, str]:
    """Store the call and what was decided; queue the text-back. Idempotent per call.

    `region` reads national caller IDs; `worker` is the dispatcher that claims a
    text due now. Returns the message when it is due now (claimed for `worker`),
    True when it was queued for later, False when nothing was queued; and the
    decision in words for the log.
    """
    connection = session.connection()
    if _SEEN.first(connection, {"wanted": call.linkedid}) is not None:
        return False, "seen before, ignored"
    number = numbers.to_e164(call.caller, region) if call.caller else None
    contact = None
    if number and call.direction == "inbound":
        contact = contacts.known(session, number, now, source="call", name=call.caller_name)
    values = settings.all_values(session)
    rules = policy.Rules.from_settings(values, region)
    history = caller_history(session, number, contact is not None and contact.opted_out)
    decision = policy.decide(call, number, history, rules, now, max_age=MAX_AGE,
                             plans=experiments.running_plans(session, values))
    skipped = decision if isinstance(decision, policy.Skip) else None
    ended_at = _utc(call.ended_at)
    call_id = _ADD_CALL.scalar(connection, {
        "linkedid": call.linkedid, "caller": number or call.caller, "caller_raw": call.caller,
        "caller_name": call.caller_name, "did": call.did, "direction": call.direction,
        "missed": call.missed, "reason": call.reason, "voicemail_left": call.voicemail_left,
        "answered_by": call.answered_by, "ring_seconds": call.ring_seconds,
        "trunk_endpoint": call.trunk_endpoint, "started_at": _utc(call.started_at),
        "ended_at": ended_at, "source": source,
        "contact_id": contact.id if contact else None,
        "decision": "skip" if skipped else "send",
        "skip_reason": skipped.reason if skipped else None,
    })
    if contact is not None and call.missed:  # the inbox: reopened, waiting for staff
        inbox.reopen(session, contact.id, ended_at)
    verdict = f"missed ({call.reason})" if call.missed else "answered"
    if not call.missed:
        reached(session, call, number, region, now)
    if isinstance(decision, policy.Skip):
        return False, f"{call.direction} {verdict}, not texted: {decision.reason}"
    assert number is not None
    queued = outbox.queue(
        session, now=now, kind=kinds.TEXTBACK, number=number, body=decision.body,
        idempotency_key=f"{call.linkedid}:{kinds.TEXTBACK}", send_at=decision.send_at,
        from_number=numbers.to_e164(call.did, region) if call.did else None,
        template=decision.template_key, variant=decision.variant, encoding=decision.encoding,
        segments=decision.segments, call_id=call_id,
        contact_id=contact.id if contact else None, claim_for=worker,
        experiment_id=decision.experiment_id, cap=values["compliance.max_automated_per_day"],
    )
    if queued is None:
        _DUPLICATE.count(connection, {"call_id": call_id})
        return False, f"{call.direction} {verdict}, not texted: already queued"
    if queued.held:  # the row stays, cancelled with why, for the record
        _HELD.count(connection, {"call_id": call_id})
        return False, f"{call.direction} {verdict}, not texted: {queued.held}"
    timers.schedule_followups(session, queued, values, now)
    described = f"{call.direction} {verdict}, queued text-back as message {queued.sms.id}"
    if queued.claimed:
        return queued.sms, described
    return True, described


def reached(session: Session, call: FinishedCall, caller: str | None, region: str,
            now: dt.datetime) -> None:
    """An answered call between the business and a customer: a text-back still
    waiting for its delay is cancelled, and follow-ups and reminders stop."""
    if call.direction == "inbound":
        number, how = caller, "called again and was answered"
    elif call.direction == "outbound" and call.did:
        number, how = numbers.to_e164(call.did, region), "the business called back"
    else:
        return
    if number is None:
        return
    for waiting in outbox.cancel_queued(session, number, now, how, kind=kinds.TEXTBACK):
        log.info("text-back %d to %s cancelled: %s", waiting.id, number, how)
    contact = session.scalar(select(Contact).where(Contact.number == number))
    if contact is not None:
        timers.contacted(session, contact, how, now)


def caller_history(session: Session, number: str | None,
                   opted_out: bool | None) -> policy.CallerHistory:
    """What the policy needs to know about the caller's past (one query)."""
    if number is None:
        return policy.CallerHistory(opted_out=False, last_textback_at=None,
                                    permanent_failure=False)
    row = _HISTORY.first(session, {"wanted": number})
    assert row is not None  # an aggregate has its one row
    last, failed = row
    return policy.CallerHistory(opted_out=bool(opted_out), last_textback_at=last,
                                permanent_failure=bool(failed))


def recorded(session: Session, linkedids: Iterable[str]) -> set[str]:
    """Which of these calls are recorded already."""
    wanted = list(linkedids)
    if not wanted:
        return set()
    return set(session.scalars(select(Call.linkedid).where(Call.linkedid.in_(wanted))))


def newest_end(session: Session) -> dt.datetime | None:
    """When the newest recorded call ended; None on a fresh install."""
    return session.scalar(select(func.max(Call.ended_at)))
