"""Erasure: a person's personal data removed from every table, on request or
after privacy.retention.

Erasure (a GDPR request) removes the person's personal data: their number in
every spelling, their name, tags and every message body, from every table.
What stays are anonymous facts (a call was missed at 14:02 and texted back),
so the dashboard's figures for past periods do not move. The contact row
itself stays as an anonymous stand-in ("erased-<id>", no name, no number):
the dashboard joins calls to it for the contacted and opted-out rates. A
person who had opted out keeps a separate suppression row holding only the
number and the opt-out (legitimate interest: honouring their objection means
remembering never to text them), linked to nothing else. With a retention
limit (`privacy.retention`) the agent erases the same way everyone whose last
call or text is older than the limit.

Functions take a Session and `now`; the caller commits.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Text, and_, cast, delete, or_, select
from sqlalchemy.orm import Session

from agent.messages import outbox
from agent.people.contacts import (
    ERASED_SOURCE,
    PLACEHOLDER_PREFIX,
    ContactError,
    is_placeholder,
    target,
)
from agent.rules import numbers, settings
from agent.store import audit
from agent.store.models import (
    AuditEntry,
    Call,
    CallbackRequest,
    Contact,
    Job,
    Message,
    RingRequest,
    SmsFragment,
    TransportStatus,
)

log = logging.getLogger(__name__)

# a spelling shorter than this is not searched for in free text: "12345" would
# match unrelated references, times and amounts
MIN_SPELLING = 6


def national(number: str) -> str | None:
    """The national significant number of a valid number ("5551234567"), else None."""
    parts = numbers.split_e164(number)
    return parts[1] if parts is not None else None


# what people and networks put between the digits of a number
_SEPARATORS = r"[\s.\-()/]*"


@dataclass(frozen=True)
class Spellings:
    """Every way one number can be written in stored text.

    `exact` are the literal forms ("+15551234567", "(555) 123-4567", "5551234567"
    and the caller IDs and senders exactly as the network gave them), longest
    first; they pre-filter rows in SQL. `pattern` also finds the number written by
    a person ("555-123-4567", "+1 555 123 4567", "001 555…") in free text.
    """

    exact: list[str]
    pattern: re.Pattern[str] | None

    @classmethod
    def of(cls, number: str, seen: Iterable[str] = ()) -> Spellings:
        found = {number, *seen}
        for written in numbers.written_forms(number):
            found |= {written, re.sub(r"\D", "", written)}
        parts = numbers.split_e164(number)
        pattern = None
        if parts is not None:
            country_code, significant = parts
            found.add(significant)
            country = _SEPARATORS.join(str(country_code))
            pattern = re.compile(
                rf"(?:(?:\+|00|011){_SEPARATORS})?(?:{country}{_SEPARATORS})?"
                rf"(?:0{_SEPARATORS})?\(?{_SEPARATORS.join(significant)}")
        exact = sorted((s for s in found if len(s) >= MIN_SPELLING or s == number),
                       key=lambda s: (-len(s), s))
        return cls(exact, pattern)

    def found_in(self, text: str | None) -> bool:
        if not text:
            return False
        if self.pattern is not None and self.pattern.search(text):
            return True
        return any(spelling in text for spelling in self.exact)

    def replace(self, text: str | None, instead: str) -> str | None:
        if not text:
            return text
        if self.pattern is not None:
            text = self.pattern.sub(instead, text)
        for spelling in self.exact:  # longest first: "+15551234567" before "5551234567"
            text = text.replace(spelling, instead)
        return text

    def replace_json(self, value: Any, instead: str) -> Any:
        if isinstance(value, str):
            return self.replace(value, instead)
        if isinstance(value, list):
            return [self.replace_json(item, instead) for item in value]
        if isinstance(value, dict):
            return {self.replace(str(key), instead): self.replace_json(item, instead)
                    for key, item in value.items()}
        return value


@dataclass(frozen=True)
class Erasure:
    """What an erasure did, for the page, the CLI and the audit log."""

    contact_id: int  # the anonymous stand-in keeps the id
    calls: int  # calls whose caller number and name were removed
    messages: int  # messages whose text and number were removed
    cancelled: int  # of them, queued texts that will now never be sent
    jobs: int  # follow-ups and reminders deleted
    callbacks: int  # call-back requests deleted
    fragments: int  # parts of incoming long texts deleted
    audit_entries: int  # audit entries that named the number, rewritten
    suppression_id: int | None  # the kept opt-out row, when they had opted out

    def summary(self) -> list[str]:
        lines = [
            f"{self.calls} call(s): caller number and name removed (times and outcomes "
            "kept for the figures)",
            f"{self.messages} message(s): text and number removed"
            + (f" ({self.cancelled} queued, now cancelled)" if self.cancelled else ""),
            f"{self.jobs} follow-up/reminder timer(s) and {self.callbacks} call-back "
            f"request(s) deleted",
            f"{self.fragments} part(s) of unfinished incoming texts deleted",
            f"{self.audit_entries} audit log entr{'y' if self.audit_entries == 1 else 'ies'}"
            f" now name {target(self.contact_id)} instead of the number",
            "name, tags, owner and conversation removed",
        ]
        if self.suppression_id is not None:
            lines.append("kept: the number and its opt-out only, so it is never texted "
                         "again (they objected to texts; honouring that needs the number)")
        else:
            lines.append("kept: nothing that identifies the person")
        return lines


def erase(session: Session, contact: Contact, now: dt.datetime, actor: str, *,
          region: str = "US", ip: str | None = None) -> Erasure:
    """Remove one person's personal data from every table (see the module docstring).

    `region` reads caller IDs and senders stored as the network gave them
    ("5551234567" on a US trunk). Returns what was done; the caller commits.
    """
    if contact.source == ERASED_SOURCE and (is_placeholder(contact.number)
                                            or contact.opted_out):
        raise ContactError("This contact's personal data was erased already.")
    number, name, contact_id = contact.number, contact.name, contact.id
    instead = target(contact_id)
    placeholder = f"{PLACEHOLDER_PREFIX}{contact_id}"

    calls = session.scalars(select(Call).where(
        or_(Call.contact_id == contact_id, Call.caller == number))).all()
    fragments = [f for f in session.scalars(select(SmsFragment))
                 if (numbers.to_e164(f.sender, region) or f.sender) == number]
    spelled = Spellings.of(number, [c.caller_raw for c in calls if c.caller_raw]
                           + [f.sender for f in fragments])
    # the name as staff typed it and as the caller ID showed it, longest first
    names = sorted({n for n in (name, *(c.caller_name for c in calls)) if n and len(n) >= 3},
                   key=len, reverse=True)

    # calls: the caller goes, the facts stay (the dashboard counts them). Calls keep
    # their contact_id: the anonymous stand-in below keeps the contacted and
    # opted-out dates the dashboard reads through it
    for call in calls:
        call.caller = call.caller_raw = call.caller_name = None
        if spelled.found_in(call.answered_by):
            call.answered_by = None
    # the business calling them: the number they dialled is in `did`, as typed on
    # the desk phone ("915551234567", "5551234567"), so it is matched by its ending
    national_digits = national(number)
    dialled = 0
    if national_digits:
        known = {call.id for call in calls}
        for call in session.scalars(select(Call).where(
                Call.direction != "inbound",
                Call.did.contains(national_digits, autoescape=True))):
            if call.id in known or not re.sub(r"\D", "", call.did or "").endswith(
                    national_digits):
                continue
            call.did = None
            if spelled.found_in(call.answered_by):
                call.answered_by = None
            dialled += 1

    # messages: theirs, and the staff alerts about them (those keep the staff
    # member's number). Queued and claimed ones are cancelled first: a text with no
    # body to "erased-7" must never reach a transport (a claimed one is handed over
    # only while still claimed)
    messages = session.scalars(select(Message).where(
        or_(Message.contact_id == contact_id, Message.number == number))).all()
    cancelled = 0
    for message in messages:
        if message.direction == "out" and message.status in outbox.WAITING:
            outbox.transition(message, outbox.CANCELLED, now, "the recipient's data was erased")
            cancelled += 1
        message.body = ""
        if message.number == number:
            # one placeholder per person: the dashboard still pairs a text-back with
            # the reply to it, so reply rates do not change
            message.number = placeholder
        message.error = spelled.replace(message.error, instead)
        for event in message.history:
            event.detail = spelled.replace(event.detail, instead)

    jobs = session.execute(delete(Job).where(Job.contact_id == contact_id)
                           .execution_options(synchronize_session=False)).rowcount or 0
    callbacks = session.execute(
        delete(CallbackRequest).where(or_(CallbackRequest.contact_id == contact_id,
                                          CallbackRequest.number == number))
        .execution_options(synchronize_session=False)).rowcount or 0
    # an emergency's ring through a webhook is a call back the agent placed for it
    callbacks += session.execute(
        delete(RingRequest).where(RingRequest.number == number)
        .execution_options(synchronize_session=False)).rowcount or 0
    for fragment in fragments:
        session.delete(fragment)

    # the audit log is never edited, except here: the number is personal data and an
    # erasure request covers it too. The entries stay, naming the contact by id
    rewritten = 0
    mentioning = [AuditEntry.target.contains(s, autoescape=True) for s in spelled.exact]
    mentioning += [cast(AuditEntry.details, Text).contains(s, autoescape=True)
                   for s in spelled.exact]
    for entry in session.scalars(select(AuditEntry).where(
            or_(AuditEntry.target == instead, *mentioning))):
        new_target = spelled.replace(entry.target, instead)
        details = spelled.replace_json(entry.details or {}, instead)
        if entry.target == instead:
            # staff may have written the name in an opt-out reason
            for written in names:
                details = _scrub_json_name(details, written)
        if (new_target, details) != (entry.target, entry.details):
            entry.target, entry.details = new_target, details
            rewritten += 1
    # the modem's or trunk's last error may quote the number of a failed send
    for status in session.scalars(select(TransportStatus)):
        status.detail = spelled.replace(status.detail, instead)
        status.last_error = spelled.replace(status.last_error, instead)

    # the contact becomes the anonymous stand-in: no number, name, tags or owner; it
    # keeps the dates the dashboard's rates are computed from
    kept_opt_out = contact.opted_out
    opted_out_at = contact.opted_out_at
    contact.number = placeholder
    contact.name = None
    contact.tags = []
    contact.source = ERASED_SOURCE
    contact.assigned_to = None
    contact.conversation_status = "closed"
    contact.last_message_at = contact.last_inbound_at = None
    session.flush()  # the number is free before the suppression row takes it

    suppression_id = None
    if kept_opt_out:
        # they objected to texts: remember that, and nothing else, under the number
        row = Contact(number=number, opted_out=True, opted_out_at=opted_out_at, tags=[],
                      source=ERASED_SOURCE, created_at=now, conversation_status="closed")
        session.add(row)
        session.flush()
        suppression_id = row.id

    erasure = Erasure(contact_id=contact_id, calls=len(calls) + dialled,
                      messages=len(messages), cancelled=cancelled, jobs=jobs,
                      callbacks=callbacks, fragments=len(fragments),
                      audit_entries=rewritten, suppression_id=suppression_id)
    audit.audit(session, now, actor, audit.CONTACT_ERASED, instead, ip, {
        "calls": erasure.calls, "messages": erasure.messages, "jobs": jobs,
        "callbacks": callbacks, "fragments": erasure.fragments,
        "audit_entries": rewritten, "kept_opt_out": kept_opt_out})
    log.info("contact %d erased by %s (%d calls, %d messages)%s", contact_id, actor,
             erasure.calls, erasure.messages,
             "; the opt-out is kept" if kept_opt_out else "")
    return erasure


def _scrub_json_name(value: Any, name: str) -> Any:
    pattern = re.compile(re.escape(name), re.IGNORECASE)
    if isinstance(value, str):
        return pattern.sub("[name erased]", value)
    if isinstance(value, list):
        return [_scrub_json_name(item, name) for item in value]
    if isinstance(value, dict):
        return {key: _scrub_json_name(item, name) for key, item in value.items()}
    return value


# ------------------------------------------------------------------ retention

def expired(session: Session, now: dt.datetime, retention: dt.timedelta,
            limit: int) -> list[Contact]:
    """Contacts whose latest activity is older than `now - retention`, oldest id first.

    Activity is the newest of the contact's own dates (created, last move in the
    inbox, last text in, reached by staff, booked), its newest call and its newest
    message; a call-back staff asked for since also keeps it. Erased stand-ins and
    suppression rows have nothing left to erase and are skipped, exactly as erase()
    refuses them. Calls and texts are matched by number, which their indexes cover:
    every call and text of a contact carries its number, and the staff alerts that
    carry only its id were set off by one of the customer's texts at the same moment.
    """
    cutoff = now - retention

    def before(column: Any) -> Any:
        return or_(column.is_(None), column < cutoff)

    called = select(Call.id).where(Call.caller == Contact.number, Call.ended_at >= cutoff)
    texted = select(Message.id).where(Message.number == Contact.number,
                                      Message.created_at >= cutoff)
    asked = select(CallbackRequest.id).where(CallbackRequest.contact_id == Contact.id,
                                             CallbackRequest.created_at >= cutoff)
    return list(session.scalars(
        select(Contact).where(
            or_(Contact.source != ERASED_SOURCE,
                and_(Contact.number.not_like(f"{PLACEHOLDER_PREFIX}%"),
                     Contact.opted_out.is_(False))),
            Contact.created_at < cutoff, before(Contact.last_message_at),
            before(Contact.last_inbound_at), before(Contact.contacted_at),
            before(Contact.booked_at),
            ~called.exists(), ~texted.exists(), ~asked.exists())
        # PostgreSQL: two agents on one database never erase the same contact, and a
        # contact a call or the inbox is updating right now waits for the next batch
        .order_by(Contact.id).limit(limit).with_for_update(of=Contact, skip_locked=True)))


def purge(session: Session, now: dt.datetime, retention: dt.timedelta, region: str,
          limit: int = 200) -> int:
    """Erase up to `limit` contacts idle for longer than `retention` (privacy.retention);
    returns how many. Each erasure is audited under RETENTION; the caller commits.

    A zero retention keeps everything. A batch at a time keeps each transaction
    short: the agent's calls wait for the same database.
    """
    if retention <= dt.timedelta(0):
        return 0
    erased = 0
    for contact in expired(session, now, retention, limit):
        erase(session, contact, now, audit.RETENTION, region=region)
        erased += 1
    return erased


def purge_due(session: Session, now: dt.datetime, region: str, limit: int) -> int:
    """One batch of erasures of customers idle for longer than privacy.retention, as
    set now (none while it is 0s); returns how many were erased."""
    retention = settings.parse_duration(settings.get(session, "privacy.retention"))
    return purge(session, now, retention, region, limit=limit)
