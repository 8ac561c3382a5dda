"""Contacts as staff keep them: found or created as calls and texts arrive, name, tags.

A contact is one customer's number (E.164) and what the business knows of them.
Edits are audited under the person who made them, naming the contact as
"contact #<id>" (never the number or the name, so the audit log does not become
a second copy of the customer's data). Opting out and erasure, which reach into
every other table, are agent.privacy's.

Functions take a Session and `now`; the caller commits.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from sqlalchemy import ColumnElement, bindparam, select
from sqlalchemy.orm import Session

from agent.rules import numbers
from agent.store import audit
from agent.store.models import Contact
from agent.store.prepared import Prepared, inserting_new

log = logging.getLogger(__name__)

MAX_NAME = 200  # the column's size
MAX_TAGS = 20
MAX_TAG_LENGTH = 32
# a contact whose data was erased: the anonymous stand-in is numbered
# "erased-<id>", and both it and a kept suppression row have this source
ERASED_SOURCE = "erased"
PLACEHOLDER_PREFIX = "erased-"


class ContactError(ValueError):
    """What staff typed cannot be stored; the message says what to change."""


def target(contact_id: int) -> str:
    """How the audit log names a contact: by id, never by number."""
    return f"contact #{contact_id}"


def is_placeholder(number: str) -> bool:
    return number.startswith(PLACEHOLDER_PREFIX)


# ------------------------------------------------------------------ editing

def clean_name(text: str) -> str | None:
    """A name as typed, inner whitespace collapsed; None when blank."""
    name = " ".join(text.split())
    if len(name) > MAX_NAME:
        raise ContactError(f"The name is {len(name)} characters long; at most {MAX_NAME}.")
    return name or None


def parse_tags(text: str) -> list[str]:
    """Comma-separated tags: trimmed, empty ones dropped, the first spelling of a tag
    kept when it comes again in another case ("VIP, vip" → ["VIP"])."""
    tags: list[str] = []
    seen: set[str] = set()
    for raw in text.split(","):
        tag = " ".join(raw.split())
        if not tag or tag.casefold() in seen:
            continue
        if len(tag) > MAX_TAG_LENGTH:
            raise ContactError(f"The tag “{tag[:MAX_TAG_LENGTH]}…” is {len(tag)} characters "
                               f"long; a tag can have at most {MAX_TAG_LENGTH}.")
        seen.add(tag.casefold())
        tags.append(tag)
    if len(tags) > MAX_TAGS:
        raise ContactError(f"That is {len(tags)} tags; a contact can have at most {MAX_TAGS}.")
    return tags


def update(session: Session, contact: Contact, now: dt.datetime, actor: str, *,
           name: str | None, tags: list[str], ip: str | None = None) -> list[str]:
    """Store a new name and tags; returns what changed ([] when nothing did).

    The audit entry says which fields changed, not their values: a name is
    personal data and the audit log outlives erasure requests less gracefully.
    """
    changed = []
    if name != contact.name:
        contact.name = name
        changed.append("name")
    if tags != list(contact.tags or []):
        contact.tags = tags
        changed.append("tags")
    if changed:
        audit.audit(session, now, actor, audit.CONTACT_EDITED, target(contact.id), ip,
                    {"changed": changed})
    return changed



# ------------------------------------------------------------------ finding

def find(session: Session, number: str, region: str) -> Contact | None:
    """The contact with this number, typed in any format."""
    e164 = numbers.to_e164(number, region) or number.strip()
    return session.scalar(select(Contact).where(Contact.number == e164))


@dataclass(frozen=True, slots=True)
class Known:
    """The little a missed call's decision needs of its caller's contact."""

    id: int
    opted_out: bool


_CONTACTS = Contact.__table__
_FIND = Prepared(select(_CONTACTS.c.id, _CONTACTS.c.opted_out)
                 .where(_CONTACTS.c.number == bindparam("wanted")))
# the column's own default, which the ORM would have written
_NEW_CONVERSATION = _CONTACTS.c.conversation_status.default.arg
_ADD = inserting_new(_CONTACTS, _CONTACTS.c.number, keys=(
    "number", "name", "created_at", "tags", "source", "opted_out", "conversation_status"))


def known(session: Session, number: str, now: dt.datetime, *, source: str,
          name: str | None = None) -> Known:
    """The contact with this E.164 number, created on first contact (a call or a text
    from a number never seen) with the caller ID's name, if any.

    Core statements built once, no ORM object: this runs for every missed call. A
    contact the web UI creates at the same moment is found, not duplicated."""
    connection = session.connection()
    found = _FIND.first(connection, {"wanted": number})
    if found is None:
        new_id = _ADD.scalar(connection, {
            "number": number, "name": name, "created_at": now, "tags": [], "source": source,
            "opted_out": False, "conversation_status": _NEW_CONVERSATION})
        if new_id is not None:
            return Known(new_id, False)
        found = _FIND.first(connection, {"wanted": number})
        assert found is not None  # the row another writer just added
    contact_id, opted_out = found
    return Known(contact_id, bool(opted_out))


def find_or_create(session: Session, number: str, now: dt.datetime, *, source: str,
                   name: str | None = None) -> Contact:
    """`known`, as an ORM object."""
    session.flush()
    return session.get_one(Contact, known(session, number, now, source=source, name=name).id)


def number_matches(digits: str, typed: str, region: str) -> list[ColumnElement[bool]]:
    """A search for a number: the contact's number contains the typed digits, or them
    without a national trunk prefix ("020 7946…" is not in the E.164 number), or is what
    was typed read as a number of the business's region."""
    found = [Contact.number.contains(digits, autoescape=True)]
    if digits.startswith("0") and len(digits) > 3:
        found.append(Contact.number.contains(digits.lstrip("0"), autoescape=True))
    e164 = numbers.to_e164(typed, region)
    if e164:
        found.append(Contact.number == e164)
    return found
