"""The shared inbox: one conversation per contact, worked by the whole front desk.

The list shows conversations by the latest move of the customer or staff (newest
first), with who owns each, whether the customer is waiting and whether they said
something since this user last looked; a search (agent.messages.inbox.search_clause)
and keyset paging ("Older conversations") reach all of them. On a desk the list stays
beside the open thread (the thread page renders both panes). A thread shows
one timeline: the calls, the text-back, the customer's replies, automatic answers,
follow-ups and staff alerts, each with its delivery status. Staff reply from the
thread (an outbox row the agent sends; opted-out numbers are refused), take or
hand over a conversation, mark it contacted, close or reopen it, ask the PBX
to call the customer back through their desk phone, or record that the
conversation booked a job (the dashboard's bookings and A/B comparison count
these; "Not booked" undoes a mistaken click, and both are in the audit log).

Each action is one call to agent.messages.desk, which writes the rows (messages,
callback_requests) for the view to commit; the agent sends and dials. Call back is
refused while the agent has not reported its health (nothing would ring). Pages
redraw from small JSON endpoints when web/live.py's stream says something changed
(or, without a stream, every few seconds), without a reload and without a framework.
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
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from agent.messages import conversations, desk, inbox, kinds, notes, outbox
from agent.people import contacts
from agent.privacy import optout
from agent.rules import settings
from agent.rules.settings import business_zone
from agent.store.models import Call, CallbackRequest, Contact, Message, TransportStatus, User
from agent.transports import health
from web import clock
from web.auth import login_required, safe_next
from web.calls import MISS_REASONS
from web.db import get_session

log = logging.getLogger(__name__)

bp = Blueprint("inbox", __name__, url_prefix="/inbox")

VIEWS = {"all": "All", "unassigned": "Unassigned", "mine": "Mine", "open": "Open",
         "closed": "Closed"}
PAGE_SIZE = 100
POSSIBLE_OPT_OUT = "possible opt-out"  # the label of such a text in the thread
TIMELINE_LIMIT = 300  # the newest items of a thread; older ones are in the call log
# what the timeline calls each kind of outbound message
OUT_LABELS = {
    kinds.TEXTBACK: "Text-back", kinds.FOLLOWUP: "Follow-up", kinds.ALERT: "Alert to staff",
    kinds.STAFF_REPLY: "Reply", kinds.OPT_OUT_CONFIRMATION: "Opt-out confirmation",
    kinds.OPT_IN_CONFIRMATION: "Opt-in confirmation", kinds.HELP: "Help answer",
}


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
    why: str = ""  # why an outbound text failed (the provider's reason, when it gave one)


def timeline(session: Session, contact: Contact, zone: Any) -> list[Item]:
    """Calls and messages of one contact, oldest first, in one list. A customer's text
    that may be an opt-out (agent.rules.revocation) is labelled so while the number
    can still be texted."""
    words = None if contact.opted_out else conversations.Keywords.from_settings(
        settings.all_values(session))
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
            if words is not None and conversations.possible_opt_out(message.body, words):
                label += f" · {POSSIBLE_OPT_OUT}"
        else:
            side, status = "out", message.status
            label = OUT_LABELS.get(message.kind, "Automatic answer")
            if message.kind == kinds.STAFF_REPLY and message.sent_by:
                label += f" from {message.sent_by}"
            if message.number != contact.number:
                label += f" to {message.number}"
            if outbox.held_back(message):  # not sent: compliance.max_automated_per_day
                label += " · held back by the daily limit on automated texts"
        items.append((message.created_at, 1, Item(
            f"message-{message.id}", at.isoformat(), f"{at:%Y-%m-%d %H:%M}", side, label,
            message.body, status, (message.error or "") if status == outbox.FAILED else "")))
    for note in notes.notes_of(session, contact, TIMELINE_LIMIT):
        at = note.created_at.astimezone(zone)
        items.append((note.created_at, 2, Item(
            f"note-{note.id}", at.isoformat(), f"{at:%Y-%m-%d %H:%M}", "note",
            f"Internal note from {note.author} · not sent", note.body, "")))
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


def _list(session: Session, view: str, query: str, after: str) -> dict[str, Any]:
    """The left pane: a page of a view (or of a search), and where the next one starts."""
    before = inbox.parse_cursor(after) if after else None
    shown = session.scalars(inbox.conversations(
        view, current_user.user_id, query, current_app.config["REGION"], before,
        session.get_bind().dialect.name).limit(PAGE_SIZE + 1)).all()
    more = len(shown) > PAGE_SIZE
    shown = shown[:PAGE_SIZE]
    return {"view": view, "views": VIEWS, "query": query, "after": after,
            "conversations": shown, "previews": previews(session, shown),
            "fresh": inbox.new_for(session, current_user.user_id, list(shown)),
            "older": inbox.cursor(shown[-1]) if more else None,
            "names": _names(session), "waiting": inbox.waiting,
            "waiting_count": _waiting_count(session), "zone": business_zone(session),
            "token": _list_token(session)}


def _list_args() -> tuple[str, str, str]:
    view = request.args.get("view", "open")
    return (view if view in VIEWS else "open", (request.args.get("q") or "").strip(),
            request.args.get("after") or "")


@bp.get("")
@login_required
def index() -> Any:
    session = get_session()
    context = _list(session, *_list_args())
    if request.args.get("partial") == "1":
        return render_template("inbox/_list.html", **context)
    me = session.get(User, current_user.user_id)
    return render_template("inbox/index.html", contact=None,
                           alerts_on=bool(me and me.desk_alerts), **context)


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


def agent_online(session: Session, now: dt.datetime) -> bool:
    """The agent reported its transports' health lately (agent.transports.health)."""
    rows = session.scalars(select(TransportStatus)).all()
    return any(not health.is_stale(row, now) for row in rows)


def callback_state(session: Session, contact: Contact, now: dt.datetime) -> dict[str, Any]:
    """What the thread says of the latest call back, and whether to offer a retry."""
    request_ = session.scalar(select(CallbackRequest).where(
        CallbackRequest.contact_id == contact.id).order_by(CallbackRequest.id.desc()).limit(1))
    if request_ is None:
        return {"text": "", "retry": False, "pending": False}
    if inbox.not_picked_up(request_, now):
        return {"text": "Last call back: not placed — the agent did not pick it up.",
                "retry": True, "pending": False}
    if request_.status == inbox.PENDING:
        return {"text": "Last call back: pending, waiting for the agent…", "retry": False,
                "pending": True}
    detail = f" ({request_.detail})" if request_.detail else ""
    return {"text": f"Last call back: {request_.status}{detail}",
            "retry": request_.status == inbox.FAILED, "pending": False}


@bp.get("/<int:contact_id>")
@login_required
def thread(contact_id: int) -> Any:
    session = get_session()
    contact = _contact(session, contact_id)
    now = clock.now()
    zone = business_zone(session)
    items = timeline(session, contact, zone)
    users = session.scalars(select(User).where(User.active.is_(True))
                            .order_by(User.username)).all()
    me = session.get(User, current_user.user_id)
    flagged = next((item for item in reversed(items)
                    if item.side == "in" and item.label.endswith(POSSIBLE_OPT_OUT)), None)
    inbox.seen(session, current_user.user_id, contact.id, now)
    session.commit()
    values = settings.all_values(session)
    did = session.scalar(select(Message.from_number).where(
        Message.number == contact.number, Message.from_number.is_not(None))
        .order_by(Message.id.desc()).limit(1))
    fields = notes.fields_for(contact, values, did)
    saved = [{"title": saved.title, "body": notes.filled(saved, fields)}
             for saved in notes.saved_replies(session)]
    return render_template("inbox/thread.html", contact=contact, items=items, users=users,
                           possible_opt_out=flagged,
                           thread_token=_timeline_token(items),
                           waiting_now=inbox.waiting(contact),
                           extension=me.extension if me else None,
                           alerts_on=bool(me and me.desk_alerts),
                           online=agent_online(session, now),
                           callback=callback_state(session, contact, now),
                           saved=saved, max_reply=desk.MAX_REPLY, max_note=notes.MAX_NOTE,
                           booked_at=contact.booked_at.astimezone(zone)
                           if contact.booked_at else None,
                           **_list(session, *_list_args()))


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
    now = clock.now()
    return jsonify(token=_timeline_token(items), status=contact.conversation_status,
                   items=[asdict(item) for item in items],
                   callback=callback_state(session, contact, now),
                   online=agent_online(session, now))


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
    # the call log's rows call back too, and go back to the log they were on
    back = redirect(safe_next(request.form.get("next"))
                    or url_for("inbox.thread", contact_id=contact.id))
    try:
        now = clock.now()
        _request, extension = desk.call_back(session, contact, current_user.user_id, now,
                                             agent_online(session, now))
    except desk.Refused as exc:
        flash(str(exc), "error")
        return back
    session.commit()
    flash(f"Calling: your desk phone ({extension}) rings in a few seconds; pick up "
          f"and it dials {contact.number}.", "info")
    return back


@bp.post("/<int:contact_id>/opt-out")
@login_required
def opt_out(contact_id: int) -> Any:
    """The one-click "Opt out" of a text flagged as a possible opt-out: recorded as staff
    opt-outs are (audited, queued texts cancelled), with the customer's words."""
    session = get_session()
    contact = _contact(session, contact_id)
    back = redirect(url_for("inbox.thread", contact_id=contact.id))
    raw = request.form.get("message_id") or ""
    message = session.get(Message, int(raw)) if raw.isdigit() else None
    if message is None or message.direction != "in" or message.number != contact.number:
        abort(400)
    words = " ".join(message.body.split())
    if len(words) > 200:
        words = words[:199] + "…"
    try:
        cancelled = optout.record_opt_out(
            session, contact, clock.now(), current_user.username,
            f"possible opt-out confirmed in the inbox: the customer texted “{words}”",
            ip=request.remote_addr)
    except contacts.ContactError as exc:
        session.rollback()
        flash(str(exc), "error")
        return back
    session.commit()
    flash(f"{contact.number} is opted out: it will not be texted again"
          + (f" ({cancelled} queued text(s) cancelled)" if cancelled else "") + ".", "info")
    return back
