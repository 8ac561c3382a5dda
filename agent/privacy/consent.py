"""A number's consent record: every call, every automated text and why it was sent,
every opt-out and opt-in with its words and channel — for answering a complaint.

Nothing new is stored for it: the rows say it all. A text-back names its call
(`call_id`), a follow-up its job ("job:<id>", whose `message_id` is the text-back),
an automatic answer the customer's text ("reply:<id>"); texts the frequency cap held
back are rows too, cancelled with the reason; opt-outs and opt-ins come from
`optout.opt_history` (their confirmations and the audit log). `textback contacts
history NUMBER` prints it; the contact page shows it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from agent.messages import kinds, outbox
from agent.privacy import optout
from agent.store.models import Call, Contact, Job, Message

LABELS = {
    kinds.TEXTBACK: "text-back", kinds.FOLLOWUP: "follow-up", kinds.AUTO_REPLY: "automatic answer",
    kinds.EMERGENCY_REPLY: "emergency answer", kinds.HELP: "answer to HELP",
    kinds.OPT_OUT_CONFIRMATION: "opt-out confirmation",
    kinds.OPT_IN_CONFIRMATION: "opt-in confirmation", kinds.STAFF_REPLY: "staff reply",
    kinds.TEST: "test text",
}
LIMIT = 2000  # rows of each kind: a number that called thousands of times is a bench


@dataclass(frozen=True)
class Entry:
    """One line of the record."""

    at: dt.datetime
    what: str  # "call", "text-back sent", "follow-up held back", "opted out"…
    detail: str


def _call_words(call: Call, zone: dt.tzinfo) -> str:
    at = call.ended_at.astimezone(zone)
    kind = "missed call" if call.missed else f"{call.direction} call, answered"
    extra = " with a voicemail" if call.voicemail_left else ""
    return f"{kind}{extra} ended {at:%Y-%m-%d %H:%M} (call {call.linkedid})"


def _status(message: Message) -> str:
    if outbox.held_back(message):
        return "held back"
    if message.status in (outbox.QUEUED, outbox.CLAIMED, outbox.SENDING):
        return "queued"
    return message.status


def history(session: Session, contact: Contact, zone: dt.tzinfo) -> list[Entry]:
    """The record of one contact, oldest first; times shown in `zone`."""
    number = contact.number
    calls = {call.id: call for call in session.scalars(
        select(Call).where(or_(Call.caller == number, Call.contact_id == contact.id))
        .order_by(Call.ended_at).limit(LIMIT))}
    messages = list(session.scalars(
        select(Message).where(Message.number == number).order_by(Message.created_at)
        .limit(LIMIT)))
    by_id = {message.id: message for message in messages}
    job_ids = [int(m.idempotency_key[4:]) for m in messages
               if m.kind == kinds.FOLLOWUP and (m.idempotency_key or "")[4:].isdigit()]
    jobs = {job.id: job for job in session.scalars(select(Job).where(Job.id.in_(job_ids)))} \
        if job_ids else {}
    # at one instant: the call or the customer's text, what it changed, then our answer
    entries: list[tuple[dt.datetime, int, Entry]] = []
    for call in calls.values():
        if call.decision == "skip" and call.missed:
            outcome = f"not texted: {call.skip_reason}"
        elif call.decision == "send":
            outcome = "text-back queued"
        else:
            outcome = "no text"
        entries.append((call.ended_at, 0, Entry(call.ended_at, "call",
                                                f"{_call_words(call, zone)}; {outcome}")))
    for message in messages:
        if message.direction == "in":
            via = f" (text via {message.transport})" if message.transport else ""
            entries.append((message.created_at, 0, Entry(
                message.created_at, "customer texted", f"“{message.body}”{via}")))
            continue
        label = LABELS.get(message.kind, message.kind)
        why = _why(message, calls, by_id, jobs, zone)
        status = _status(message)
        detail = f"{why}. “{message.body}”"
        if status in ("held back", outbox.CANCELLED, outbox.FAILED) and message.error:
            detail += f" — {message.error}"
        elif status == outbox.CANCELLED:
            reason = next((event.detail for event in reversed(message.history)
                           if event.status == outbox.CANCELLED and event.detail), "")
            detail += f" — {reason}" if reason else ""
        if message.sent_by:
            detail += f" (written by {message.sent_by})"
        entries.append((message.created_at, 2,
                        Entry(message.created_at, f"{label} {status}", detail)))
    for event in optout.opt_history(session, contact):
        what = "opted out" if event.opted_out else "opted back in"
        entries.append((event.at, 1, Entry(
            event.at, what, event.how + (f" — by {event.channel}" if event.channel else ""))))
    entries.sort(key=lambda entry: (entry[0], entry[1]))
    return [entry for _at, _rank, entry in entries]


def _why(message: Message, calls: dict[int, Call], by_id: dict[int, Message],
         jobs: dict[int, Job], zone: dt.tzinfo) -> str:
    """Why an outbound text exists, in words."""
    key = message.idempotency_key or ""
    if message.kind == kinds.TEXTBACK:
        call = calls.get(message.call_id or -1)
        return f"after the {_call_words(call, zone)}" if call else "after a missed call"
    if message.kind == kinds.FOLLOWUP:
        job = jobs.get(int(key[4:])) if key[4:].isdigit() else None
        first = by_id.get(job.message_id or -1) if job else None
        call = calls.get(first.call_id or -1) if first else None
        step = f"step {job.step + 1} " if job else ""
        return (f"follow-up {step}to the text-back after the {_call_words(call, zone)}"
                if call else f"follow-up {step}to a text-back with no reply")
    if key.startswith("reply:") and key[6:].isdigit():
        asked = by_id.get(int(key[6:]))
        if asked is not None:
            at = asked.created_at.astimezone(zone)
            return f"answering their text of {at:%Y-%m-%d %H:%M} “{asked.body}”"
    if message.kind == kinds.STAFF_REPLY:
        return "written by staff"
    return LABELS.get(message.kind, message.kind)


def lines(entries: list[Entry], zone: dt.tzinfo) -> list[str]:
    """The record as text, one line per entry (for the command line)."""
    return [f"{entry.at.astimezone(zone):%Y-%m-%d %H:%M %Z}  {entry.what}: {entry.detail}"
            for entry in entries]
