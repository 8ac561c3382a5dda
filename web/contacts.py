"""Contacts: everyone who called or texted, found by number or name, with tags.

The list is newest activity first (the customer's or staff's latest move, else
when the contact appeared), keyset-paginated, with a search that takes a number
in any format ("555 123" finds +1555123…) or part of a name, and filters for
opted-out numbers and tags. A contact's page edits the name and tags, shows the
opt-out history (their STOP/START texts and staff actions), the consent record (every
call and automated text and why it was sent: agent.privacy.consent) and lets staff
record an opt-out the customer asked for by phone. Only the customer can opt back in,
by texting START: staff are not offered that.

Admins can erase a person's data (a GDPR request) after typing the number
again; agent.privacy.erasure does the erasing and says what is kept.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user
from sqlalchemy import ColumnElement, Select, and_, func, or_, select, text
from sqlalchemy.orm import Session

from agent.people import contacts
from agent.privacy import consent, erasure, optout
from agent.rules import numbers, settings
from agent.rules.settings import business_zone
from agent.store import audit
from agent.store.models import AuditEntry, Call, Contact, Message, UTCDateTime
from web import clock
from web.auth import admin_required, login_required
from web.db import get_session

log = logging.getLogger(__name__)

bp = Blueprint("contacts", __name__, url_prefix="/contacts")

PAGE_SIZE = 100
MAX_SEARCH = 100
VIEWS = {"all": "All", "opted_out": "Opted out"}
# what a person types when they type a phone number: "+1 (555) 123-45.67"
PHONE_TYPING = re.compile(r"[\d\s()+.\-/]+")

# when the contact last did something (or appeared): what the list is ordered by
last_activity = func.coalesce(Contact.last_message_at, Contact.created_at, type_=UTCDateTime())


def _region() -> str:
    return str(current_app.config.get("REGION") or "US")


# ------------------------------------------------------------------ the list

@dataclass(frozen=True)
class Filters:
    search: str = ""
    view: str = "all"
    tag: str = ""

    def args(self) -> dict[str, str]:
        """The query string that reproduces these filters (for links)."""
        out = {"q": self.search, "view": "" if self.view == "all" else self.view,
               "tag": self.tag}
        return {key: value for key, value in out.items() if value}


def parse_filters(args: Any) -> Filters:
    view = args.get("view") or "all"
    return Filters(search=(args.get("q") or "").strip()[:MAX_SEARCH],
                   view=view if view in VIEWS else "all",
                   tag=(args.get("tag") or "").strip()[:contacts.MAX_TAG_LENGTH])


def _matches(term: str, region: str) -> ColumnElement[bool]:
    """A name containing the term (any case), or a number containing its digits."""
    found: list[ColumnElement[bool]] = [
        func.lower(Contact.name).contains(term.lower(), autoescape=True)]
    digits = re.sub(r"\D", "", term)
    if digits and (len(digits) >= 3 or PHONE_TYPING.fullmatch(term)):
        found += contacts.number_matches(digits, term, region)
    return or_(*found)


def _has_tag(session: Session, tag: str) -> ColumnElement[bool]:
    """The JSON tag list holds this tag (any case); SQLite and PostgreSQL spell it apart."""
    if session.get_bind().dialect.name == "postgresql":
        sql = ("EXISTS (SELECT 1 FROM json_array_elements_text(contacts.tags) AS t(value) "
               "WHERE lower(t.value) = lower(:tag))")
    else:
        sql = ("EXISTS (SELECT 1 FROM json_each(contacts.tags) AS t "
               "WHERE lower(t.value) = lower(:tag))")
    return text(sql).bindparams(tag=tag)  # type: ignore[return-value]


def all_tags(session: Session) -> list[str]:
    """Every tag in use, once (first spelling), sorted as people read."""
    if session.get_bind().dialect.name == "postgresql":
        sql = "SELECT DISTINCT json_array_elements_text(tags) FROM contacts"
    else:
        sql = "SELECT DISTINCT t.value FROM contacts, json_each(contacts.tags) AS t"
    seen: dict[str, str] = {}
    found = [tag for (tag,) in session.execute(text(sql)) if isinstance(tag, str)]
    for tag in sorted(found):  # the same spelling shown whatever order the rows come in
        seen.setdefault(tag.casefold(), tag)
    return sorted(seen.values(), key=str.casefold)


def listed(session: Session, filters: Filters, region: str) -> Select[tuple[Contact]]:
    # the anonymous stand-ins an erasure leaves are nobody's contact
    query = select(Contact).where(
        ~Contact.number.startswith(contacts.PLACEHOLDER_PREFIX, autoescape=True))
    if filters.search:
        query = query.where(_matches(filters.search, region))
    if filters.view == "opted_out":
        query = query.where(Contact.opted_out.is_(True))
    if filters.tag:
        query = query.where(_has_tag(session, filters.tag))
    return query


def _older_than(query: Select[tuple[Contact]], cursor: Contact) -> Select[tuple[Contact]]:
    at = cursor.last_message_at or cursor.created_at
    return query.where(or_(last_activity < at, and_(last_activity == at, Contact.id < cursor.id)))


def _calls_per_number(session: Session, page: list[Contact]) -> dict[str, int]:
    """Calls from each listed number (on ix_calls_caller_ended, one query)."""
    if not page:
        return {}
    return {number: count for number, count in session.execute(
        select(Call.caller, func.count()).where(Call.caller.in_([c.number for c in page]))
        .group_by(Call.caller))}


@bp.get("")
@login_required
def index() -> Any:
    session = get_session()
    filters = parse_filters(request.args)
    query = listed(session, filters, _region())
    raw_cursor = request.args.get("before") or ""
    cursor = session.get(Contact, int(raw_cursor)) if raw_cursor.isdigit() else None
    if cursor is not None:
        query = _older_than(query, cursor)
    page = list(session.scalars(query.order_by(last_activity.desc(), Contact.id.desc())
                                .limit(PAGE_SIZE + 1)))
    has_older, page = len(page) > PAGE_SIZE, page[:PAGE_SIZE]
    args = filters.args()
    return render_template(
        "contacts/index.html", contacts=page, filters=filters, views=VIEWS,
        tags=all_tags(session), calls=_calls_per_number(session, page),
        zone=business_zone(session),
        older_url=url_for("contacts.index", before=page[-1].id, **args)
        if has_older and page else None,
        newest_url=url_for("contacts.index", **args) if cursor is not None else None)


# ------------------------------------------------------------------ one contact

def _contact(session: Session, contact_id: int) -> Contact:
    contact = session.get(Contact, contact_id)
    if contact is None:
        abort(404)
    return contact


def _erased_page(session: Session, contact: Contact) -> Any:
    """What is left of an erased contact: the fact that it was erased, and when."""
    entry = session.scalar(select(AuditEntry).where(
        AuditEntry.target == contacts.target(contact.id),
        AuditEntry.action == audit.CONTACT_ERASED).order_by(AuditEntry.id.desc()).limit(1))
    return render_template("contacts/erased.html", contact=contact, entry=entry,
                           zone=business_zone(session)), 410


def _page(session: Session, contact: Contact, *, name: str | None = None,
          tags: str | None = None, reason: str = "", errors: dict[str, str] | None = None,
          status: int = 200) -> Any:
    counts: dict[str, int] = {direction: count for direction, count in session.execute(
        select(Message.direction, func.count()).where(Message.number == contact.number)
        .group_by(Message.direction))}
    calls = session.scalar(select(func.count()).select_from(Call)
                           .where(Call.caller == contact.number)) or 0
    try:
        opt_in_words = list(settings.get(session, "keywords.optin"))
    except Exception:  # a bad stored value must not hide the contact
        log.exception("keywords.optin unreadable")
        opt_in_words = ["START"]
    return render_template(
        "contacts/contact.html", contact=contact,
        name=(contact.name or "") if name is None else name,
        tags=", ".join(contact.tags or []) if tags is None else tags,
        reason=reason, errors=errors or {}, history=optout.opt_history(session, contact),
        calls=calls, texts_in=counts.get("in", 0), texts_out=counts.get("out", 0),
        opt_in_words=opt_in_words, zone=(zone := business_zone(session)),
        record=consent.history(session, contact, zone),
        # the suppression row an erasure keeps; once they text START it is a contact again
        kept_after_erasure=contact.source == contacts.ERASED_SOURCE and contact.opted_out,
        max_tags=contacts.MAX_TAGS, max_tag_length=contacts.MAX_TAG_LENGTH,
        max_reason=optout.MAX_REASON), status


@bp.get("/<int:contact_id>")
@login_required
def show(contact_id: int) -> Any:
    session = get_session()
    contact = _contact(session, contact_id)
    if contacts.is_placeholder(contact.number):
        return _erased_page(session, contact)
    return _page(session, contact)


@bp.post("/<int:contact_id>")
@login_required
def edit(contact_id: int) -> Any:
    session = get_session()
    contact = _contact(session, contact_id)
    if contacts.is_placeholder(contact.number):
        return _erased_page(session, contact)
    raw_name, raw_tags = request.form.get("name") or "", request.form.get("tags") or ""
    errors: dict[str, str] = {}
    name: str | None = None
    tags: list[str] = []
    try:
        name = contacts.clean_name(raw_name)
    except contacts.ContactError as exc:
        errors["name"] = str(exc)
    try:
        tags = contacts.parse_tags(raw_tags)
    except contacts.ContactError as exc:
        errors["tags"] = str(exc)
    if errors:
        return _page(session, contact, name=raw_name, tags=raw_tags, errors=errors,
                     status=400)
    changed = contacts.update(session, contact, clock.now(), current_user.username, name=name,
                              tags=tags, ip=request.remote_addr)
    session.commit()
    flash("Saved." if changed else "Nothing changed.", "info")
    return redirect(url_for("contacts.show", contact_id=contact.id))


@bp.post("/<int:contact_id>/opt-out")
@login_required
def opt_out(contact_id: int) -> Any:
    session = get_session()
    contact = _contact(session, contact_id)
    if contacts.is_placeholder(contact.number):
        return _erased_page(session, contact)
    reason = request.form.get("reason") or ""
    try:
        cancelled = optout.record_opt_out(session, contact, clock.now(), current_user.username,
                                            reason, ip=request.remote_addr)
    except contacts.ContactError as exc:
        session.rollback()
        return _page(session, contact, reason=reason, errors={"reason": str(exc)},
                     status=400)
    session.commit()
    flash(f"{contact.number} is opted out: it will not be texted again"
          + (f" ({cancelled} queued text(s) cancelled)" if cancelled else "")
          + ". No text was sent to confirm.", "info")
    return redirect(url_for("contacts.show", contact_id=contact.id))


# ------------------------------------------------------------------ erasure

def same_number(typed: str, number: str, region: str) -> bool:
    """The admin typed this contact's number (in any format)."""
    typed = typed.strip()
    if not typed:
        return False
    if typed == number or numbers.to_e164(typed, region) == number:
        return True
    digits, stored = re.sub(r"\D", "", typed), re.sub(r"\D", "", number)
    if digits and digits == stored:
        return True
    # written nationally, without the country code: "(212) 555-0142"
    national = erasure.national(number)
    return bool(national) and digits.endswith(national) and stored.endswith(digits)


@bp.route("/<int:contact_id>/erase", methods=["GET", "POST"])
@admin_required
def erase(contact_id: int) -> Any:
    session = get_session()
    contact = _contact(session, contact_id)
    if contacts.is_placeholder(contact.number):
        return _erased_page(session, contact)
    already = contact.source == contacts.ERASED_SOURCE and contact.opted_out
    error = ""
    if request.method == "POST" and not already:
        if same_number(request.form.get("confirm") or "", contact.number, _region()):
            erased = erasure.erase(session, contact, clock.now(), current_user.username,
                                   region=_region(), ip=request.remote_addr)
            session.commit()
            flash(f"Erased {contacts.target(erased.contact_id)}: "
                  + "; ".join(erased.summary()) + ".", "info")
            if erased.suppression_id is not None:
                return redirect(url_for("contacts.show", contact_id=erased.suppression_id))
            return redirect(url_for("contacts.index"))
        error = ("That is not this contact's number; nothing was erased. Type the number "
                 "shown above to confirm.")
    calls = session.scalar(select(func.count()).select_from(Call)
                           .where(Call.caller == contact.number)) or 0
    texts = session.scalar(select(func.count()).select_from(Message)
                           .where(Message.number == contact.number)) or 0
    return render_template("contacts/erase.html", contact=contact, error=error,
                           already=already, calls=calls, texts=texts), 400 if error else 200
