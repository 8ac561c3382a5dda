"""The transports page: what the running agent last published about each SMS route
(agent.transports.health), the outbox queue, and test texts pinned to one transport;
the agent sends them.
"""

from __future__ import annotations

import datetime as dt
import logging
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from agent.messages import kinds, outbox
from agent.ops.sendtest import queue_test
from agent.rules import numbers
from agent.rules.settings import business_zone
from agent.store.models import Message, TransportStatus
from agent.transports import health
from web import clock
from web.auth import admin_required
from web.db import get_session
from web.settings.fields import default_region, sections

log = logging.getLogger(__name__)

MAX_TEST_TEXT = 1000  # a test text is a text message, like an inbox reply
RECENT_TESTS = 10
TRANSPORT_LABELS = {"sip": "SIP trunk", "gsm": "GSM modem"}


@dataclass(frozen=True)
class TransportView:
    name: str
    label: str
    state: str  # "up" | "down" | "unknown" (never reported, or not for too long)
    detail: str | None
    signal_dbm: int | None
    signal_word: str | None
    operator: str | None
    last_error: str | None
    last_error_at: str | None
    reported: str | None  # "12 s ago"
    warning: str | None  # the agent is not reporting


def signal_word(dbm: int | None) -> str | None:
    """A modem's signal in a word: -105 dBm is the least `textback doctor` accepts."""
    if dbm is None:
        return None
    if dbm >= -70:
        return "excellent"
    if dbm >= -85:
        return "good"
    if dbm >= -105:
        return "weak"
    return "none"


def ago(delta: dt.timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    if seconds < 48 * 3600:
        return f"{round(seconds / 3600)} h"
    return f"{round(seconds / 86400)} days"


def transport_names(session: Session) -> list[str]:
    """The configured transports in failover order; without a config, those reported."""
    config = current_app.config.get("TEXTBACK_CONFIG")
    if config is not None:
        return list(config.sms.transports)
    return list(session.scalars(select(TransportStatus.name).order_by(TransportStatus.name)))


def transports(session: Session, now: dt.datetime, zone: zoneinfo.ZoneInfo) -> list[TransportView]:
    views = []
    for name in transport_names(session):
        row = session.get(TransportStatus, name)
        title = TRANSPORT_LABELS.get(name, name)
        if row is None:
            views.append(TransportView(
                name, title, "unknown", None, None, None, None, None, None, None,
                "The agent has not reported on this transport yet: is it running?"))
            continue
        since = now - row.updated_at
        stale = health.is_stale(row, now)
        warning = (f"The agent has not reported for {ago(since)}: is it running? Its last "
                   f"report said {row.state}." if stale else None)
        # an old report is no news: no "up" badge beside "the agent has not reported"
        views.append(TransportView(
            name, title, "unknown" if stale else row.state, row.detail, row.signal_dbm,
            signal_word(row.signal_dbm), row.operator, row.last_error,
            f"{row.last_error_at.astimezone(zone):%Y-%m-%d %H:%M:%S}"
            if row.last_error_at else None, f"{ago(since)} ago", warning))
    return views


@dataclass(frozen=True)
class Queue:
    depth: int
    oldest_age: str | None


def queue(session: Session, now: dt.datetime) -> Queue:
    depth, oldest = session.execute(
        select(func.count(), func.min(Message.created_at))
        .where(Message.direction == "out", Message.status.in_(outbox.WAITING))).one()
    if oldest is not None and oldest.tzinfo is None:  # aggregates skip the UTC column type
        oldest = oldest.replace(tzinfo=dt.UTC)
    return Queue(depth, ago(now - oldest) if oldest else None)


def recent_tests(session: Session) -> list[Message]:
    return list(session.scalars(select(Message).where(Message.kind == kinds.TEST)
                                .order_by(Message.id.desc()).limit(RECENT_TESTS)))


def _panel(session: Session) -> dict[str, Any]:
    now = clock.now()
    zone = business_zone(session)
    return {"transports": transports(session, now, zone), "queue": queue(session, now),
            "tests": recent_tests(session), "zone": zone}


def _render_transports(form: Mapping[str, str] | None = None,
                       errors: Mapping[str, str] | None = None, status: int = 200) -> Any:
    session = get_session()
    form = form or {}
    return render_template(
        "settings/transports.html", section=None, sections=sections(),
        names=[(name, TRANSPORT_LABELS.get(name, name)) for name in transport_names(session)],
        form=form, errors=errors or {}, region=default_region(), max_text=MAX_TEST_TEXT,
        **_panel(session)), status


# the page's views; their URLs are with the area's in web/settings/__init__.py
@admin_required
def transports_page() -> Any:
    return _render_transports()


@admin_required
def transports_panel() -> Any:
    """The status, queue and recent tests, for the page's polling to swap in."""
    return render_template("settings/_panel.html", **_panel(get_session()))


@admin_required
def send_test() -> Any:
    """Queue one test text through the chosen transport; the agent sends it."""
    session = get_session()
    region = default_region()
    raw = (request.form.get("number") or "").strip()
    text = (request.form.get("text") or "").strip()
    chosen = request.form.get("transport") or ""
    errors: dict[str, str] = {}
    names = transport_names(session)
    if chosen not in names:
        errors["transport"] = ("Choose a transport: " + ", ".join(names) if names else
                               "No transport is configured or reported yet.")
    number = numbers.to_e164(raw, region) if raw else None
    if not raw:
        errors["number"] = "Enter the number to text."
    elif number is None:
        errors["number"] = (f"{raw} is not a valid phone number (numbers without +country "
                            f"code are read as {region}).")
    elif outbox.opted_out(session, number):
        errors["number"] = (f"{number} has opted out of texts (it replied STOP): nothing is "
                            "sent to it, tests included. Use another number.")
    if not text:
        errors["text"] = "Write the text to send."
    elif len(text) > MAX_TEST_TEXT:
        errors["text"] = f"A test text is at most {MAX_TEST_TEXT} characters."
    if errors or number is None:
        return _render_transports(request.form, errors, 400)
    message = queue_test(session, clock.now(), number, text, transport=chosen)
    session.commit()
    log.info("%s queued test message %d to %s through %s", current_user.username, message.id,
             number, chosen)
    flash(f"Test text queued for {number} through the {TRANSPORT_LABELS.get(chosen, chosen)} "
          f"({message.segments} SMS, {message.encoding}). The agent sends it within a few seconds; "
          "its status shows below.", "info")
    return redirect(url_for("settings.transports_page"))
