"""Internal notes and saved replies: what the front desk writes for itself.

A note sits in a conversation's timeline for staff only: it is a `notes` row, never a
`messages` row, so no transport can ever see it; adding one is audited. A saved reply
is a text the admins wrote once (merge fields as in the text-back templates, checked
when saved); staff pick one in a thread and it is filled in for that customer, then
edited and sent like any reply (agent.messages.desk.reply).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from agent.rules import templates
from agent.store import audit
from agent.store.models import Contact, Note, SavedReply

log = logging.getLogger(__name__)

MAX_NOTE = 2000  # characters
MAX_TITLE = 80
MAX_SAVED = 1000  # as a reply (desk.MAX_REPLY)
# the merge fields a saved reply may use: what is known of a conversation when staff
# write (not the caller-ID-only ones' alert fields)
REPLY_FIELDS = ("business", "first_name", "caller_name", "booking_link", "did")
_FIELD = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")  # as templates reads them


class NoteRefused(ValueError):
    """The note or saved reply cannot be saved; the message says why."""


def add_note(session: Session, contact: Contact, body: str, username: str,
             now: dt.datetime, ip: str | None = None) -> Note:
    """Add a note to the conversation (the caller commits); audited, never sent."""
    body = body.strip()
    if not body:
        raise NoteRefused("the note is empty.")
    if len(body) > MAX_NOTE:
        raise NoteRefused(f"a note can be at most {MAX_NOTE} characters.")
    note = Note(contact_id=contact.id, author=username, body=body, created_at=now)
    session.add(note)
    session.flush()
    audit.audit(session, now, username, audit.NOTE_ADDED, contact.number, ip,
                {"note": note.id, "chars": len(body)})
    return note


def notes_of(session: Session, contact: Contact, limit: int) -> list[Note]:
    return list(session.scalars(select(Note).where(Note.contact_id == contact.id)
                                .order_by(Note.created_at.desc(), Note.id.desc())
                                .limit(limit)))


def saved_replies(session: Session) -> list[SavedReply]:
    return list(session.scalars(select(SavedReply).order_by(SavedReply.title)))


def check_saved(title: str, body: str) -> None:
    """Refuse an empty or over-long saved reply, or one with an unknown merge field."""
    if not title:
        raise NoteRefused("the saved reply needs a title.")
    if len(title) > MAX_TITLE:
        raise NoteRefused(f"a title can be at most {MAX_TITLE} characters.")
    if not body:
        raise NoteRefused("the saved reply is empty.")
    if len(body) > MAX_SAVED:
        raise NoteRefused(f"a saved reply can be at most {MAX_SAVED} characters.")
    try:
        templates.validate(body)
    except templates.TemplateError as exc:
        raise NoteRefused(str(exc)) from exc
    for match in _FIELD.finditer(body):
        name = (match.group(1) or "").strip()
        if match.group(1) is not None and name not in REPLY_FIELDS:
            raise NoteRefused(f"{{{name}}} cannot be used in a saved reply; use "
                              + ", ".join(f"{{{field}}}" for field in REPLY_FIELDS))


def save_reply(session: Session, reply_id: int | None, title: str, body: str,
               username: str, now: dt.datetime, ip: str | None = None) -> SavedReply:
    """Add (reply_id None) or change a saved reply; audited with its new text."""
    title, body = " ".join(title.split()), body.strip()
    check_saved(title, body)
    clash = session.scalar(select(SavedReply).where(SavedReply.title == title))
    if clash is not None and clash.id != reply_id:
        raise NoteRefused(f"there is already a saved reply titled {title!r}.")
    if reply_id is None:
        saved = SavedReply(title=title, body=body, updated_by=username, updated_at=now)
        session.add(saved)
    else:
        found = session.get(SavedReply, reply_id)
        if found is None:
            raise NoteRefused("no such saved reply.")
        saved = found
        saved.title, saved.body, saved.updated_by, saved.updated_at = (
            title, body, username, now)
    session.flush()
    audit.audit(session, now, username, audit.SAVED_REPLY_CHANGED, title, ip, {"body": body})
    return saved


def delete_reply(session: Session, reply_id: int, username: str, now: dt.datetime,
                 ip: str | None = None) -> str | None:
    """Delete a saved reply; returns its title (None when there was none)."""
    saved = session.get(SavedReply, reply_id)
    if saved is None:
        return None
    audit.audit(session, now, username, audit.SAVED_REPLY_DELETED, saved.title, ip,
                {"body": saved.body})
    session.delete(saved)
    return saved.title


def fields_for(contact: Contact, values: Mapping[str, object],
               did: str | None) -> dict[str, object | None]:
    """The merge fields of one conversation, from the settings' `values`."""
    return {"business": values.get("business.name"),
            "booking_link": values.get("business.booking_link"),
            "first_name": templates.first_name(contact.name),
            "caller_name": templates.full_name(contact.name),
            "did": did}


def filled(saved: SavedReply, fields: Mapping[str, object | None]) -> str:
    """The saved reply as it would go to this customer."""
    return templates.render(saved.body, fields)
