"""The call log: every call, what happened to it and whether a text went out (and why not).

Pages are keyset-paginated newest first on indexes (ix_calls_started,
ix_calls_missed_started), so the first page and every "older" page cost the same
with a million calls. Times show in the business time zone (business.timezone). Each
caller links to their conversation in the inbox, with the inbox's Call back beside it.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from flask import Blueprint, Response, render_template, request, stream_with_context, url_for
from flask_login import current_user
from sqlalchemy import Select, and_, not_, or_, select
from sqlalchemy.orm import Session

from agent.rules.settings import business_zone
from agent.store.models import Call, Message, MessageEvent, User
from web.auth import login_required
from web.db import get_session

log = logging.getLogger(__name__)

bp = Blueprint("calls", __name__, url_prefix="/calls")

PAGE_SIZE = 50
EXPORT_BATCH = 1000
DIRECTIONS = ("inbound", "outbound", "internal")

# why a call was missed, as the front desk would say it (agent.calls.tracker.MissReason)
MISS_REASONS = {
    "noanswer": "nobody answered",
    "busy": "busy",
    "cancel": "caller hung up while ringing",
    "chanunavail": "phones unavailable",
    "congestion": "network congestion",
    "abandoned_queue": "hung up in the queue",
    "abandoned_ivr": "hung up in the menu",
    "voicemail": "went to voicemail",
}
# why no text went out (agent.calls.policy and the daemon)
SKIP_REASONS = {
    "answered": "answered",
    "not_inbound": "not an inbound call",
    "withheld": "number withheld",
    "internal_extension": "internal extension",
    "invalid_number": "not a valid number",
    "excluded": "number on the exclusion list",
    "opted_out": "customer opted out",
    "known_undeliverable": "texts to this number fail",
    "fixed_line": "landline",
    "cooldown": "texted recently (cooldown)",
    "duplicate": "already texted for this call",
    "frequency_cap": "automated-text limit for the day reached",
    "too_late": "learnt too late to text (over 30 min after the call)",
}
SENT = ("submitted", "sent", "delivered")


@dataclass(frozen=True)
class Filters:
    missed_only: bool = False
    direction: str = ""
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    search: str = ""

    def args(self) -> dict[str, str]:
        """The query string that reproduces these filters (for links and the export)."""
        out = {"missed": "1" if self.missed_only else "", "direction": self.direction,
               "from": self.date_from.isoformat() if self.date_from else "",
               "to": self.date_to.isoformat() if self.date_to else "", "q": self.search}
        return {key: value for key, value in out.items() if value}


def parse_filters(args: Any) -> tuple[Filters, list[str]]:
    """Filters from the query string; anything unreadable is dropped with a note."""
    errors: list[str] = []
    dates: dict[str, dt.date | None] = {}
    for key, label in (("from", "From"), ("to", "To")):
        raw = (args.get(key) or "").strip()
        dates[key] = None
        if raw:
            try:
                dates[key] = dt.date.fromisoformat(raw)
            except ValueError:
                errors.append(f"{label} date {raw!r} is not a date like 2026-12-01; ignored.")
    direction = args.get("direction") or ""
    if direction and direction not in DIRECTIONS:
        errors.append(f"Unknown direction {direction!r}; showing all.")
        direction = ""
    return Filters(missed_only=args.get("missed") == "1", direction=direction,
                   date_from=dates["from"], date_to=dates["to"],
                   search=(args.get("q") or "").strip()[:100]), errors


def filtered(filters: Filters, zone: ZoneInfo) -> Select[tuple[Call]]:
    query = select(Call)
    if filters.missed_only:
        query = query.where(Call.missed.is_(True))
    if filters.direction:
        query = query.where(Call.direction == filters.direction)
    # a date range means whole days in the business's time zone
    if filters.date_from:
        start = dt.datetime.combine(filters.date_from, dt.time(), zone)
        query = query.where(Call.started_at >= start)
    if filters.date_to:
        end = dt.datetime.combine(filters.date_to + dt.timedelta(days=1), dt.time(), zone)
        query = query.where(Call.started_at < end)
    if filters.search:
        term = filters.search
        matches = [Call.caller.contains(term, autoescape=True),
                   Call.caller_raw.contains(term, autoescape=True),
                   Call.caller_name.contains(term, autoescape=True)]
        digits = re.sub(r"\D", "", term)
        if len(digits) >= 3 and digits != term:  # "(555) 123-4567" finds +15551234567
            matches.append(Call.caller.contains(digits, autoescape=True))
        query = query.where(or_(*matches))
    return query


def newest_first(query: Select[tuple[Call]], before: Call | None) -> Select[tuple[Call]]:
    if before is not None:
        # a range on started_at (the index) plus the tie-break on id
        query = query.where(Call.started_at <= before.started_at, not_(and_(
            Call.started_at == before.started_at, Call.id >= before.id)))
    return query.order_by(Call.started_at.desc(), Call.id.desc())


def oldest_first(query: Select[tuple[Call]], after: Call) -> Select[tuple[Call]]:
    query = query.where(Call.started_at >= after.started_at, not_(and_(
        Call.started_at == after.started_at, Call.id <= after.id)))
    return query.order_by(Call.started_at.asc(), Call.id.asc())


@dataclass(frozen=True)
class Row:
    """One call as the log shows it."""

    call: Call
    started: dt.datetime  # in the business time zone
    outcome: str  # "answered" | "missed"
    why: str  # who answered, or why it was missed
    text: str  # "sent", "queued", "failed", "not sent", "" (no decision)
    text_detail: str  # the message status, or why no text went out
    text_at: dt.datetime | None  # when it left, business time zone


def rows(session: Session, calls: list[Call], zone: ZoneInfo) -> list[Row]:
    """Join each call with its text-back (by its idempotency key, a unique index)."""
    keys = {f"{call.linkedid}:textback": call for call in calls}
    messages = {m.idempotency_key: m for m in session.scalars(
        select(Message).where(Message.idempotency_key.in_(list(keys))))} if keys else {}
    left_at: dict[int, dt.datetime] = {}
    if messages:
        for event in session.scalars(select(MessageEvent).where(
                MessageEvent.message_id.in_([m.id for m in messages.values()]),
                MessageEvent.status.in_(SENT)).order_by(MessageEvent.id)):
            left_at.setdefault(event.message_id, event.at)
    out = []
    for key, call in keys.items():
        message = messages.get(key)
        if call.missed:
            outcome, why = "missed", MISS_REASONS.get(call.reason or "", call.reason or "")
        else:
            outcome, why = "answered", call.answered_by or ""
        text_at = None
        if message is not None:
            text = ("sent" if message.status in SENT else
                    "failed" if message.status == "failed" else "queued")
            detail = message.status + (f": {message.error}" if message.error else "")
            at = left_at.get(message.id)
            text_at = at.astimezone(zone) if at else None
        elif call.decision == "skip":
            text, detail = "not sent", SKIP_REASONS.get(call.skip_reason or "",
                                                        call.skip_reason or "")
        elif call.decision == "send":
            text, detail = "queued", "waiting to be queued"
        else:
            text, detail = "", ""
        out.append(Row(call=call, started=call.started_at.astimezone(zone), outcome=outcome,
                       why=why, text=text, text_detail=detail, text_at=text_at))
    return out


def _cursor(session: Session, raw: str | None) -> Call | None:
    return session.get(Call, int(raw)) if raw and raw.isdigit() else None


@bp.get("")
@login_required
def index() -> Any:
    session = get_session()
    zone = business_zone(session)
    filters, errors = parse_filters(request.args)
    query = filtered(filters, zone)
    after = _cursor(session, request.args.get("after"))
    before = None if after else _cursor(session, request.args.get("before"))
    if after is not None:
        page = list(session.scalars(oldest_first(query, after).limit(PAGE_SIZE + 1)))
        has_newer, page = len(page) > PAGE_SIZE, page[:PAGE_SIZE]
        page.reverse()
        has_older = True
    else:
        page = list(session.scalars(newest_first(query, before).limit(PAGE_SIZE + 1)))
        has_older, page = len(page) > PAGE_SIZE, page[:PAGE_SIZE]
        has_newer = before is not None
    args = filters.args()
    me = session.get(User, current_user.user_id)
    return render_template(
        "calls/index.html", rows=rows(session, page, zone), filters=filters, errors=errors,
        zone=zone.key, directions=DIRECTIONS,
        newer_url=url_for("calls.index", after=page[0].id, **args) if has_newer and page
        else None,
        older_url=url_for("calls.index", before=page[-1].id, **args) if has_older and page
        else None,
        newest_url=url_for("calls.index", **args) if before or after else None,
        export_url=url_for("calls.export", **args),
        # each row opens the caller's conversation and calls them back (the inbox's
        # action: it rings this user's desk phone, then dials the caller)
        extension=me.extension if me else None, here=request.full_path,
    )


CSV_COLUMNS = ("time", "direction", "caller", "caller_name", "did", "outcome", "reason",
               "answered_by", "voicemail_left", "text", "text_detail", "text_sent_at")


def _cell(value: str) -> str:
    """Neutralise spreadsheet formulas in caller-controlled text (=, +, -, @ at the start),
    leaving phone numbers like +15551234567 as they are."""
    if value and value[0] in "=+-@\t\r" and not re.fullmatch(r"[+-]?[\d ()-]+", value):
        return "'" + value
    return value


def _csv_lines(session: Session, filters: Filters, zone: ZoneInfo) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(CSV_COLUMNS)
    yield flush()
    before: Call | None = None
    while True:
        batch = list(session.scalars(newest_first(filtered(filters, zone), before)
                                     .limit(EXPORT_BATCH)))
        if not batch:
            break
        for row in rows(session, batch, zone):
            call = row.call
            writer.writerow([
                row.started.isoformat(timespec="seconds"), call.direction,
                _cell(call.caller or call.caller_raw or ""), _cell(call.caller_name or ""),
                _cell(call.did or ""), row.outcome,
                call.reason or "" if call.missed else "", _cell(call.answered_by or ""),
                "yes" if call.voicemail_left else "no", row.text, _cell(row.text_detail),
                row.text_at.isoformat(timespec="seconds") if row.text_at else "",
            ])
        yield flush()
        before = batch[-1]


@bp.get("/export.csv")
@login_required
def export() -> Any:
    session = get_session()
    zone = business_zone(session)
    filters, _errors = parse_filters(request.args)
    name = f"calls-{dt.datetime.now(zone):%Y%m%d-%H%M}.csv"
    return Response(stream_with_context(_csv_lines(session, filters, zone)),
                    mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})
