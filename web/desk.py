"""The front desk's own writing and alerts, beside the inbox: internal notes in a
thread (agent.messages.notes: never sent, audited), the admins' saved replies (with
the merge fields and the live SMS counter of the templates), and each user's choice
of a sound and a desktop notification for a customer's text or missed call."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user

from agent.messages import notes
from agent.people import contacts
from agent.rules import settings, templates
from agent.store.models import Contact, User
from web import clock
from web.auth import admin_required, login_required
from web.db import get_session

bp = Blueprint("desk", __name__, url_prefix="/inbox")


@bp.post("/<int:contact_id>/notes")
@login_required
def add_note(contact_id: int) -> Any:
    session = get_session()
    contact = session.get(Contact, contact_id)
    if contact is None or contacts.is_placeholder(contact.number):
        abort(404)
    back = redirect(url_for("inbox.thread", contact_id=contact.id))
    try:
        notes.add_note(session, contact, request.form.get("body") or "",
                       current_user.username, clock.now(), request.remote_addr)
    except notes.NoteRefused as exc:
        flash(f"Note not added: {exc}", "error")
        return back
    session.commit()
    flash("Note added (for staff only: it is not sent).", "info")
    return back


@bp.post("/alerts")
@login_required
def alerts() -> Any:
    """Sound and desktop notifications on or off, for the signed-in user."""
    session = get_session()
    me = session.get(User, current_user.user_id)
    if me is None:
        abort(404)
    me.desk_alerts = request.form.get("on") == "1"
    session.commit()
    flash("Alerts on: a sound and a desktop notification for each new text or missed "
          "call." if me.desk_alerts else "Alerts off: the inbox stays silent.", "info")
    back = request.form.get("back") or ""
    return redirect(back if back.startswith("/inbox") else url_for("inbox.index"))


@bp.route("/saved-replies", methods=["GET", "POST"])
@admin_required
def saved_replies() -> Any:
    session = get_session()
    if request.method == "POST":
        raw = request.form.get("id") or ""
        reply_id = int(raw) if raw.isdigit() else None
        now = clock.now()
        try:
            if request.form.get("delete") == "1" and reply_id is not None:
                title = notes.delete_reply(session, reply_id, current_user.username, now,
                                           request.remote_addr)
                message = f"Deleted {title!r}." if title else "Already deleted."
            else:
                saved = notes.save_reply(session, reply_id, request.form.get("title") or "",
                                         request.form.get("body") or "",
                                         current_user.username, now, request.remote_addr)
                message = f"Saved {saved.title!r}."
        except notes.NoteRefused as exc:
            session.rollback()
            flash(f"Not saved: {exc}", "error")
        else:
            session.commit()
            flash(message, "info")
        return redirect(url_for("desk.saved_replies"))
    return render_template("inbox/saved_replies.html", saved=notes.saved_replies(session),
                           fields=notes.REPLY_FIELDS, max_body=notes.MAX_SAVED,
                           max_title=notes.MAX_TITLE)


SAMPLE = Contact(number="+12125550142", name="Maria Lopez")  # never added to a session


@bp.post("/saved-replies/preview")
@admin_required
def preview() -> Any:
    """A saved reply as a sample customer would get it, and its SMS count, as the agent
    counts it (for the live counter while an admin types)."""
    body = (request.form.get("body") or "").strip()
    error = None
    try:
        notes.check_saved("sample", body)
    except notes.NoteRefused as exc:
        error = str(exc)
    fields = notes.fields_for(SAMPLE, settings.all_values(get_session()), "+15559990000")
    text = templates.render(body, fields) if body else ""
    info = templates.segments(text)
    return jsonify(text=text, error=error, characters=len(text), segments=info.segments,
                   encoding=info.encoding)
