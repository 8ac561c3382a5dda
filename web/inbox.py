"""The shared inbox: one conversation per contact, worked by the whole front desk.

The list shows conversations by the latest move of the customer or staff (newest
first), with who owns each and whether the customer is waiting. A thread shows
one timeline: the calls, the text-back, the customer's replies, automatic answers,
follow-ups and staff alerts, each with its delivery status. Staff reply from the
thread (an outbox row the agent sends; opted-out numbers are refused), take or
hand over a conversation, mark it contacted, close or reopen it, ask the PBX
to call the customer back through their desk phone, or record that the
conversation booked a job (the dashboard's bookings and A/B comparison count
these; "Not booked" undoes a mistaken click, and both are in the audit log).

Each action is one call to agent.messages.desk, which writes the rows (messages,
callback_requests) for the view to commit; the agent sends and dials. Pages poll
small JSON endpoints every few seconds, so new texts show up without a reload and
without a framework.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from flask import (
    Blueprint,
    abort,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user
from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from agent.messages import desk, inbox, kinds
from agent.people import contacts
from agent.rules.settings import business_zone
from agent.store.models import Call, CallbackRequest, Contact, Message, User
from web import clock
from web.auth import login_required
from web.calls import MISS_REASONS
from web.db import get_session

log = logging.getLogger(__name__)

bp = Blueprint("inbox", __name__, url_prefix="/inbox")

VIEWS = {"all": "All", "unassigned": "Unassigned", "mine": "Mine", "open": "Open",
         "closed": "Closed"}
PAGE_SIZE = 100
TIMELINE_LIMIT = 300  # the newest items of a thread; older ones are in the call log
# what the timeline calls each kind of outbound message
OUT_LABELS = {
    kinds.TEXTBACK: "Text-back", kinds.FOLLOWUP: "Follow-up", kinds.ALERT: "Alert to staff",
    kinds.STAFF_REPLY: "Reply", kinds.OPT_OUT_CONFIRMATION: "Opt-out confirmation",
    kinds.OPT_IN_CONFIRMATION: "Opt-in confirmation", kinds.HELP: "Help answer",
}


def listed(view: str, user_id: int) -> Select[tuple[Contact]]:
    """The conversations of a view, newest activity first (on ix_contacts_*)."""
    query = select(Contact).where(Contact.last_message_at.is_not(None))
    if view == "unassigned":
        query = query.where(Contact.assigned_to.is_(None))
    elif view == "mine":
        query = query.where(Contact.assigned_to == user_id)
    elif view in (inbox.OPEN, inbox.CLOSED):
        query = query.where(Contact.conversation_status == view)
    return query.order_by(Contact.last_message_at.desc(), Contact.id.desc())


@dataclass(frozen=True)
class Item:
    """One line of a thread's timeline, as the page and the polling JSON show it."""

    key: str  # "call-3", "message-9": stable, for the page to tell what is new
    at: str  # ISO, business time zone
    when: str  # "2026-12-01 09:14"
    side: str  # "in" (the customer) | "out" (us) | "call"
    label: str
    body: str
    status: str


def timeline(session: Session, contact: Contact, zone: Any) -> list[Item]:
    """Calls and messages of one contact, oldest first, in one list."""
    calls = session.scalars(
        select(Call).where(or_(Call.contact_id == contact.id, Call.caller == contact.number))
        .order_by(Call.started_at.desc()).limit(TIMELINE_LIMIT)).all()
    messages = session.scalars(
        select(Message).where(or_(Message.contact_id == contact.id,
                                  Message.number == contact.number))
        .order_by(Message.created_at.desc()).limit(TIMELINE_LIMIT)).all()
    items: list[tuple[dt.datetime, int, Item]] = []
    for call in calls:
        at = call.started_at.astimezone(zone)
        if call.missed:
            label = f"Missed call · {MISS_REASONS.get(call.reason or '', call.reason or '')}"
            if call.voicemail_left:
                label += " · voicemail left"
        else:
            label = f"{call.direction.capitalize()} call · answered" + (
                f" by {call.answered_by}" if call.answered_by else "")
        items.append((call.started_at, 0, Item(
            f"call-{call.id}", at.isoformat(), f"{at:%Y-%m-%d %H:%M}", "call", label,
            call.caller_name or "", "")))
    for message in messages:
        at = message.created_at.astimezone(zone)
        if message.direction == "in":
            side, label, status = "in", "Customer", ""
        else:
            side, status = "out", message.status
            label = OUT_LABELS.get(message.kind, "Automatic answer")
            if message.kind == kinds.STAFF_REPLY and message.sent_by:
                label += f" from {message.sent_by}"
            if message.number != contact.number:
                label += f" to {message.number}"
        items.append((message.created_at, 1, Item(
            f"message-{message.id}", at.isoformat(), f"{at:%Y-%m-%d %H:%M}", side, label,
            message.body, status)))
    items.sort(key=lambda entry: (entry[0], entry[1], entry[2].key))
    return [item for _at, _order, item in items[-TIMELINE_LIMIT:]]


def _digest(text: str) -> str:
    """A short fingerprint, the same in every web worker process (unlike hash())."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _contact(session: Session, contact_id: int) -> Contact:
    contact = session.get(Contact, contact_id)
    if contact is None:
        abort(404)
    if contacts.is_placeholder(contact.number):
        abort(410)  # erased: the contact page says when and by whom
    return contact


PREVIEW_CHARS = 90


def previews(session: Session, shown: Sequence[Contact]) -> dict[int, str]:
    """The newest text of each listed conversation, as one line ("Text-back: Hi …")."""
    by_number = {contact.number: contact.id for contact in shown}
    if not by_number:
        return {}
    ranked = select(Message.id, func.row_number().over(
        partition_by=Message.number,
        order_by=(Message.created_at.desc(), Message.id.desc())).label("rank")) \
        .where(Message.number.in_(by_number)).subquery()
    lines = {}
    for message in session.scalars(select(Message).join(ranked, ranked.c.id == Message.id)
                                   .where(ranked.c.rank == 1)):
        text = " ".join(message.body.split())
        if len(text) > PREVIEW_CHARS:
            text = text[:PREVIEW_CHARS - 1].rstrip() + "…"
        if message.direction == "out":
            who = (message.sent_by if message.kind == kinds.STAFF_REPLY and message.sent_by
                   else OUT_LABELS.get(message.kind, "Automatic answer"))
            text = f"{who}: {text}"
        lines[by_number[message.number]] = text
    return lines


def _names(session: Session) -> dict[int, str]:
    return {user_id: name for user_id, name in session.execute(select(User.id, User.username))}


@bp.get("")
@login_required
def index() -> Any:
    session = get_session()
    view = request.args.get("view", "open")
    if view not in VIEWS:
        view = "open"
    conversations = session.scalars(listed(view, current_user.user_id).limit(PAGE_SIZE)).all()
    zone = business_zone(session)
    template = "inbox/_list.html" if request.args.get("partial") == "1" else "inbox/index.html"
    return render_template(template, view=view, views=VIEWS, conversations=conversations,
                           previews=previews(session, conversations),
                           waiting_count=_waiting_count(session),
                           names=_names(session), waiting=inbox.waiting, zone=zone,
                           token=_list_token(session))


def _list_token(session: Session) -> str:
    """Changes whenever any conversation moves, is assigned, closed or reopened."""
    newest = session.scalar(select(Contact.last_message_at).where(
        Contact.last_message_at.is_not(None)).order_by(Contact.last_message_at.desc()).limit(1))
    states = session.execute(select(Contact.id, Contact.assigned_to, Contact.conversation_status,
                                    Contact.contacted_at, Contact.booked_at)
                             .where(Contact.last_message_at.is_not(None))
                             .order_by(Contact.last_message_at.desc()).limit(PAGE_SIZE)).all()
    return _digest(f"{newest.isoformat() if newest else ''}:{[tuple(row) for row in states]}")


@bp.get("/updates.json")
@login_required
def list_updates() -> Any:
    """For the list page's polling: a token that changes when the list would, and how
    many customers wait (for the tab's title, seen from another tab)."""
    session = get_session()
    return jsonify(token=_list_token(session), waiting=_waiting_count(session))


def _waiting_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Contact)
                          .where(inbox.waiting_clause())) or 0


@bp.get("/<int:contact_id>")
@login_required
def thread(contact_id: int) -> Any:
    session = get_session()
    contact = _contact(session, contact_id)
    zone = business_zone(session)
    items = timeline(session, contact, zone)
    users = session.scalars(select(User).where(User.active.is_(True))
                            .order_by(User.username)).all()
    me = session.get(User, current_user.user_id)
    callback = session.scalar(select(CallbackRequest).where(
        CallbackRequest.contact_id == contact.id).order_by(CallbackRequest.id.desc()).limit(1))
    return render_template("inbox/thread.html", contact=contact, items=items, users=users,
                           token=_timeline_token(items),
                           names=_names(session), waiting=inbox.waiting(contact),
                           extension=me.extension if me else None, callback=callback,
                           max_reply=desk.MAX_REPLY, zone=zone.key,
                           booked_at=contact.booked_at.astimezone(zone)
                           if contact.booked_at else None)


def _timeline_token(items: list[Item]) -> str:
    """Changes when the timeline would; the page starts from the one it was drawn with,
    so a text arriving before the first poll is still drawn."""
    return _digest("|".join(f"{item.key}:{item.status}" for item in items))


@bp.get("/<int:contact_id>/updates.json")
@login_required
def thread_updates(contact_id: int) -> Any:
    """The thread's timeline as data; the page redraws it when the token changes."""
    session = get_session()
    contact = _contact(session, contact_id)
    items = timeline(session, contact, business_zone(session))
    return jsonify(token=_timeline_token(items), status=contact.conversation_status,
                   items=[asdict(item) for item in items])


@bp.post("/<int:contact_id>/reply")
@login_required
def reply(contact_id: int) -> Any:
    session = get_session()
    contact = _contact(session, contact_id)
    body = (request.form.get("body") or "").strip()
    back = redirect(url_for("inbox.thread", contact_id=contact.id))
    try:
        message = desk.reply(session, contact, body, current_user.user_id,
                             current_user.username, clock.now())
    except desk.Refused as exc:
        flash(f"Not sent: {exc}", "error")
        return back
    session.commit()
    flash(f"Reply queued ({message.segments} SMS). It goes out within a few seconds.", "info")
    return back


@bp.post("/<int:contact_id>/assign")
@login_required
def assign(contact_id: int) -> Any:
    session = get_session()
    contact = _contact(session, contact_id)
    raw = request.form.get("user_id") or ""
    back = redirect(url_for("inbox.thread", contact_id=contact.id))
    try:
        if raw and not raw.isdigit():
            raise desk.Refused("No such active user.")
        user = desk.assign(session, contact, int(raw) if raw else None)
    except desk.Refused as exc:
        flash(str(exc), "error")
        return back
    session.commit()
    flash(f"Assigned to {user.username}." if user else "The conversation is unassigned.",
          "info")
    return back


@bp.post("/<int:contact_id>/contacted")
@login_required
def mark_contacted(contact_id: int) -> Any:
    session = get_session()
    contact = _contact(session, contact_id)
    desk.mark_contacted(session, contact, current_user.user_id, current_user.username,
                        clock.now())
    session.commit()
    flash("Marked as contacted: follow-ups and reminders stop.", "info")
    return redirect(url_for("inbox.thread", contact_id=contact.id))


@bp.post("/<int:contact_id>/status")
@login_required
def set_status(contact_id: int) -> Any:
    session = get_session()
    contact = _contact(session, contact_id)
    status = request.form.get("status") or ""
    try:
        desk.set_status(contact, status, current_user.user_id)
    except desk.Refused:
        abort(400)
    session.commit()
    flash("Conversation closed." if status == inbox.CLOSED else "Conversation reopened.",
          "info")
    if status == inbox.CLOSED:
        return redirect(url_for("inbox.index"))
    return redirect(url_for("inbox.thread", contact_id=contact.id))


@bp.post("/<int:contact_id>/booking")
@login_required
def booking(contact_id: int) -> Any:
    session = get_session()
    contact = _contact(session, contact_id)
    booked = request.form.get("booked")
    if booked not in ("yes", "no"):
        abort(400)
    now = clock.now()
    back = redirect(url_for("inbox.thread", contact_id=contact.id))
    if booked == "no":
        if not desk.clear_booking(session, contact, current_user.username, now,
                                  request.remote_addr):
            flash("This conversation was not marked as booked.", "info")
            return back
        session.commit()
        flash("Booking removed: this conversation no longer counts as a booked job.", "info")
        return back
    if not desk.book(session, contact, current_user.user_id, current_user.username, now,
                     request.remote_addr):
        flash("Already marked as booked.", "info")
        return back
    session.commit()
    flash("Marked as a booked job. It counts on the dashboard.", "info")
    return back


@bp.post("/<int:contact_id>/qualified")
@login_required
def qualified(contact_id: int) -> Any:
    session = get_session()
    contact = _contact(session, contact_id)
    choice = request.form.get("qualified")
    if choice not in ("yes", "no"):
        abort(400)
    if desk.qualify(session, contact, current_user.username, clock.now(), choice == "yes",
                    request.remote_addr):
        session.commit()
        flash("Marked as a qualified lead: it counts in the dashboard's qualified "
              "conversation rate." if choice == "yes" else
              "No longer marked as a qualified lead.", "info")
    return redirect(url_for("inbox.thread", contact_id=contact.id))


@bp.post("/<int:contact_id>/callback")
@login_required
def callback(contact_id: int) -> Any:
    session = get_session()
    contact = _contact(session, contact_id)
    back = redirect(url_for("inbox.thread", contact_id=contact.id))
    try:
        _request, extension = desk.call_back(session, contact, current_user.user_id,
                                             clock.now())
    except desk.Refused as exc:
        flash(str(exc), "error")
        return back
    session.commit()
    flash(f"Calling: your desk phone ({extension}) rings in a few seconds; pick up "
          f"and it dials {contact.number}.", "info")
    return back
