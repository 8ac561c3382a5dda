"""Durable timers: follow-ups to quiet leads, reminders when a reply sits unanswered.

Every timer is a `jobs` row with a `due_at`. The agent claims due rows and does
them in the same transaction as the texts they produce, so a restart loses
nothing and nothing runs twice.

- A text-back starts the follow-up sequence (`followup.delays`, each step with
  its template in `followup.templates`). Any reply, an opt-out, or staff reaching
  the customer cancels what is left of it. A follow-up is a solicitation: it goes
  out only inside the quiet hours of the recipient's state, narrowed by
  `followup.allowed_hours`, in the recipient's local time (agent.rules.quiet_hours),
  and is moved to the next allowed time, never dropped.
- A customer's reply that needs a person starts the escalation: a reminder to
  staff after `escalation.reminder_after`, a supervisor alert after
  `escalation.supervisor_after`, both cancelled once staff reached the customer.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from agent.messages import inbox, kinds, outbox
from agent.messages.outbox import OutboundSms
from agent.rules import quiet_hours, settings, templates
from agent.rules.settings import parse_duration
from agent.store.models import Contact, Job, Message
from agent.store.prepared import Prepared

log = logging.getLogger(__name__)

PENDING, DONE, CANCELLED = "pending", "done", "cancelled"
FOLLOWUP, REMINDER, SUPERVISOR = "followup", "reminder", "supervisor"
ESCALATION = (REMINDER, SUPERVISOR)


# -- scheduling ----------------------------------------------------------------------------
def _add(session: Session, kind: str, step: int, due: dt.datetime, key: str,
         contact_id: int, message_id: int | None, now: dt.datetime) -> None:
    if session.scalar(select(Job.id).where(Job.dedupe_key == key)) is None:
        session.add(Job(kind=kind, step=step, due_at=due, status=PENDING, dedupe_key=key,
                        contact_id=contact_id, message_id=message_id, created_at=now))


# asked every second (due_now): nearly always "nothing", so a prepared look first
_ANY_DUE = Prepared(select(Job.__table__.c.id).where(
    Job.__table__.c.status == PENDING, Job.__table__.c.due_at <= bindparam("now")).limit(1))
_ADD_JOB = Prepared(insert(Job.__table__), keys=(
    "kind", "step", "due_at", "status", "dedupe_key", "contact_id", "message_id", "created_at"))


def schedule_followups(session: Session, textback: outbox.Queued, values: Mapping[str, Any],
                       now: dt.datetime) -> int:
    """The follow-up sequence of one text-back just queued; returns how many steps were
    scheduled. One multi-row INSERT: every missed call that is texted comes here, and
    its message is new, so no earlier job can have these keys."""
    delays = values["followup.delays"]
    if textback.contact_id is None or not delays:
        return 0
    message_id = textback.sms.id
    _ADD_JOB.many(session, [
        {"kind": FOLLOWUP, "step": step, "due_at": textback.created_at + parse_duration(delay),
         "status": PENDING, "dedupe_key": f"{FOLLOWUP}:{message_id}:{step}",
         "contact_id": textback.contact_id, "message_id": message_id, "created_at": now}
        for step, delay in enumerate(delays)])
    return len(delays)


def schedule_escalation(session: Session, reply: Message, values: Mapping[str, Any],
                        now: dt.datetime) -> None:
    """Reminder and supervisor alert for a customer's reply nobody has answered yet."""
    if reply.contact_id is None:
        return
    for kind, key in ((REMINDER, "escalation.reminder_after"),
                      (SUPERVISOR, "escalation.supervisor_after")):
        _add(session, kind, 0, now + parse_duration(values[key]), f"{kind}:{reply.id}",
             reply.contact_id, reply.id, now)


def cancel(session: Session, contact_id: int, kinds: tuple[str, ...], reason: str,
           now: dt.datetime) -> int:
    result = session.execute(
        update(Job)
        .where(Job.contact_id == contact_id, Job.kind.in_(kinds), Job.status == PENDING)
        .values(status=CANCELLED, detail=reason, done_at=now)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount or 0


def contacted(session: Session, contact: Contact, how: str, now: dt.datetime) -> None:
    """Staff reached the customer: the follow-ups and escalations stop."""
    contact.contacted_at = now
    stopped = cancel(session, contact.id, (FOLLOWUP, *ESCALATION), f"contacted: {how}", now)
    if stopped:
        log.info("%s contacted (%s): %d timer(s) stopped", contact.number, how, stopped)


# -- running --------------------------------------------------------------------------------
def next_due(session: Session) -> dt.datetime | None:
    return session.scalar(select(Job.due_at).where(Job.status == PENDING)
                          .order_by(Job.due_at).limit(1))


def run_due(session: Session, values: Mapping[str, Any], now: dt.datetime, worker: str,
            limit: int = 50) -> list[Message]:
    """Do the due jobs; returns the texts they queued (claimed for `worker`)."""
    queued: list[Message] = []
    due = session.scalars(select(Job.id).where(Job.status == PENDING, Job.due_at <= now)
                          .order_by(Job.due_at).limit(limit)).all()
    for job_id in due:
        claimed = session.execute(
            update(Job).where(Job.id == job_id, Job.status == PENDING)
            .values(status=DONE, claimed_by=worker, done_at=now)
            .execution_options(synchronize_session=False))
        if claimed.rowcount != 1:
            continue  # another agent took it
        job = session.get_one(Job, job_id, populate_existing=True)
        contact = session.get_one(Contact, job.contact_id)
        if job.kind == FOLLOWUP:
            queued += _followup(session, job, contact, values, now, worker)
        else:
            queued += _escalate(session, job, contact, values, now, worker)
    return queued


def due_now(session: Session, now: dt.datetime, worker: str) -> list[OutboundSms]:
    """Do the due jobs with the settings in force; returns the texts to send now
    (claimed for `worker`; the rest wait in the queue). Asked every second: the
    settings are read only when a job is due."""
    if _ANY_DUE.first(session, {"now": now}) is None:
        return []
    queued = run_due(session, settings.all_values(session), now, worker)
    session.flush()
    return [outbox.outbound(m) for m in queued if m.status == outbox.CLAIMED]


def _followup(session: Session, job: Job, contact: Contact, values: Mapping[str, Any],
              now: dt.datetime, worker: str) -> list[Message]:
    if contact.opted_out:
        job.detail = "skipped: opted out"
        return []
    window = quiet_hours.window_for(contact.number, values["followup.allowed_hours"],
                                    values["business.timezone"])
    when = quiet_hours.allowed_at(now, window)
    if when > now:  # quiet hours where the customer is: later, not never
        job.status, job.due_at, job.done_at, job.claimed_by = PENDING, when, None, None
        job.detail = f"moved to {when.isoformat()} (quiet hours: {window.describe()})"
        log.info("follow-up %d to %s moved to %s: quiet hours", job.id, contact.number,
                 when.isoformat())
        return []
    texts = values["followup.templates"]
    template = texts[min(job.step, len(texts) - 1)]
    first = job.message_id and session.get(Message, job.message_id)
    body = templates.render(template, {
        "business": values["business.name"], "booking_link": values["business.booking_link"],
        "first_name": templates.first_name(templates.clean_caller_name(contact.name)),
        "caller_name": templates.full_name(templates.clean_caller_name(contact.name)),
    })
    info = templates.segments(body)
    message = outbox.enqueue(
        session, now=now, kind=kinds.FOLLOWUP, number=contact.number, body=body,
        idempotency_key=f"job:{job.id}", from_number=first.from_number if first else None,
        template=f"followup.templates[{job.step}]", encoding=info.encoding,
        segments=info.segments, contact_id=contact.id, claim_for=worker,
        cap=values["compliance.max_automated_per_day"],
    )
    if message is not None and outbox.held_back(message):
        job.detail = f"not sent: {message.error} (message {message.id})"
        return []
    job.detail = f"sent as message {message.id}" if message else "already sent"
    return [message] if message else []


def _escalate(session: Session, job: Job, contact: Contact, values: Mapping[str, Any],
              now: dt.datetime, worker: str) -> list[Message]:
    key, who = (("templates.reminder", "staff.notify_numbers") if job.kind == REMINDER
                else ("templates.supervisor_alert", "supervisor.notify_numbers"))
    staff = values[who]
    if job.kind == REMINDER:  # the owner is reminded; supervisors hear of it regardless
        staff = inbox.alert_numbers(session, contact, staff)
    reply = job.message_id and session.get(Message, job.message_id)
    if not staff:
        job.detail = f"nobody to tell: {who} is empty"
        return []
    body = templates.render(values[key], {
        "business": values["business.name"], "customer": contact.number,
        "message": reply.body if reply else ""})
    info = templates.segments(body)
    queued = []
    for number in staff:
        message = outbox.enqueue(
            session, now=now, kind=kinds.ALERT, number=number, body=body,
            idempotency_key=f"job:{job.id}:{number}", template=key,
            encoding=info.encoding, segments=info.segments, contact_id=contact.id,
            claim_for=worker, from_number=reply.from_number if reply else None)
        if message is not None:
            queued.append(message)
    job.detail = f"{len(queued)} alert(s) sent"
    return queued
