"""The call log as front-desk staff use it: what happened to each call, filters, paging,
CSV export, escaping of what callers control, and a plan that stays on the indexes."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from agent.rules import settings
from agent.store.models import (
    Call,
    CallbackRequest,
    Contact,
    Message,
    MessageEvent,
    TransportStatus,
    User,
)
from web import calls as call_log

pytestmark = pytest.mark.clock  # make test-clock runs it at awkward instants too

T0 = dt.datetime(2026, 12, 1, 15, 0, tzinfo=dt.UTC)


def _call(session: Session, n: int, *, missed: bool = True, at: dt.datetime | None = None,
          **fields: object) -> Call:
    at = at or T0 + dt.timedelta(minutes=n)
    values: dict[str, object] = {
        "linkedid": f"1700000000.{n}", "caller": f"+1555000{n:04d}", "did": "+15559990000",
        "direction": "inbound", "missed": missed, "reason": "noanswer" if missed else None,
        "answered_by": None if missed else "PJSIP/101", "started_at": at,
        "ended_at": at + dt.timedelta(seconds=20),
        "decision": "skip" if not missed else None,
        "skip_reason": "answered" if not missed else None}
    values.update(fields)
    call = Call(**values)
    session.add(call)
    session.flush()
    return call


def _textback(session: Session, call: Call, status: str, sent_at: dt.datetime) -> None:
    message = Message(direction="out", kind="textback", idempotency_key=f"{call.linkedid}:textback",
                      number=call.caller, body="Sorry we missed you", status=status,
                      created_at=call.ended_at, updated_at=sent_at, call_id=call.id)
    session.add(message)
    session.flush()
    session.add(MessageEvent(message_id=message.id, status="sent", at=sent_at))


def test_the_log_says_what_happened_to_each_call(staff: FlaskClient, session: Session) -> None:
    settings.set(session, "business.timezone", "America/Chicago", T0)
    texted = _call(session, 1, caller_name="Jane Smith", decision="send")
    _textback(session, texted, "delivered", T0 + dt.timedelta(minutes=1, seconds=22))
    _call(session, 2, reason="voicemail", voicemail_left=True, decision="skip",
          skip_reason="cooldown")
    _call(session, 3, missed=False)
    session.commit()
    page = staff.get("/calls").get_data(as_text=True)
    assert "<span class=\"zone\">Times in America/Chicago</span>" in page  # once, in the header
    assert "2026-12-01 09:01" in page  # 15:01 UTC in Chicago
    assert "Jane Smith" in page and "+15550000001" in page
    assert "09:01:22" in page and "delivered" in page  # when the text went out
    assert "went to voicemail" in page and "left" in page
    assert "texted recently (cooldown)" in page
    assert "answered" in page and "PJSIP/101" in page
    # newest first
    assert page.index("+15550000003") < page.index("+15550000002") < page.index("+15550000001")


def test_each_call_links_to_its_conversation_and_calls_back_from_the_log(
        staff: FlaskClient, session: Session) -> None:
    contact = Contact(number="+15550000001", name="Jane Smith", created_at=T0, tags=[])
    session.add(contact)
    session.flush()
    _call(session, 1, contact_id=contact.id, decision="send")
    _call(session, 2, caller=None, caller_raw="anonymous")  # withheld: nothing to open or call
    desk = session.scalar(select(User).where(User.username == "desk"))
    assert desk is not None
    desk.extension = "desk2"
    # the agent is running: it reported its transport a moment ago
    session.add(TransportStatus(name="sip", state="up", detail="AMI",
                                updated_at=dt.datetime.now(dt.UTC)))
    session.commit()
    page = staff.get("/calls?missed=1").get_data(as_text=True)
    assert f'<a class="number" href="/inbox/{contact.id}"' in page
    assert page.count('>Call back</button>') == 1  # only the caller we can dial
    thread = staff.get(f"/inbox/{contact.id}").get_data(as_text=True)
    assert "Jane Smith" in thread
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token
    called = staff.post(f"/inbox/{contact.id}/callback",
                        data={"csrf_token": token.group(1), "next": "/calls?missed=1"})
    assert called.headers["Location"] == "/calls?missed=1"  # back to the log it came from
    request = session.scalars(select(CallbackRequest)).one()
    assert (request.extension, request.number, request.status) == (
        "desk2", "+15550000001", "pending")
    after = staff.get("/calls?missed=1").get_data(as_text=True)
    assert "your desk phone (desk2) rings" in after
    # a hostile "next" on the same form stays on the site
    again = staff.post(f"/inbox/{contact.id}/callback",
                       data={"csrf_token": token.group(1), "next": "//evil.example/"})
    assert again.headers["Location"] == f"/inbox/{contact.id}"


def test_caller_controlled_html_is_shown_escaped(staff: FlaskClient, session: Session) -> None:
    _call(session, 1, caller_name="<script>alert(1)</script>", caller=None,
          caller_raw='"><img src=x onerror=alert(2)>')
    session.commit()
    page = staff.get("/calls").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(2)&gt;" in page


def test_filters_missed_direction_dates_and_search(staff: FlaskClient, session: Session) -> None:
    _call(session, 1, caller_name="Bob Plumber")
    _call(session, 2, missed=False)
    _call(session, 3, direction="outbound", missed=False, caller="+15557777777")
    _call(session, 4, at=T0 - dt.timedelta(days=3))
    session.commit()

    def shown(query: str) -> set[str]:
        page = staff.get("/calls" + query).get_data(as_text=True)
        return {f"+1555000{n:04d}" for n in range(1, 5) if f"+1555000{n:04d}" in page} | (
            {"+15557777777"} if "+15557777777" in page else set())

    assert shown("?missed=1") == {"+15550000001", "+15550000004"}
    assert shown("?direction=outbound") == {"+15557777777"}
    assert shown("?from=2026-12-01&to=2026-12-01") == {"+15550000001", "+15550000002",
                                                         "+15557777777"}
    assert shown("?to=2026-11-30") == {"+15550000004"}
    assert shown("?q=bob") == {"+15550000001"}
    assert shown("?q=(555)%20000-0002") == {"+15550000002"}
    bad = staff.get("/calls?from=yesterday").get_data(as_text=True)
    assert "is not a date like 2026-12-01" in bad


def test_pages_of_fifty_newest_first_with_older_and_newer(
        staff: FlaskClient, session: Session) -> None:
    for n in range(1, call_log.PAGE_SIZE + 11):  # 60 calls
        _call(session, n, at=T0 + dt.timedelta(minutes=n // 2))  # ties on started_at
    session.commit()
    first = staff.get("/calls").get_data(as_text=True)
    assert first.count("<tr class=") == call_log.PAGE_SIZE
    assert "+15550000060" in first and "+15550000010" not in first
    older = re.search(r'href="(/calls\?before=\d+)">Older', first).group(1)
    second = staff.get(older).get_data(as_text=True)
    assert second.count("<tr class=") == 10
    numbers = set(re.findall(r"\+1555000\d{4}", first)) | set(
        re.findall(r"\+1555000\d{4}", second))
    assert len(numbers) == 60  # every call exactly once across the pages
    assert "Older" not in second
    newer = re.search(r'href="(/calls\?after=\d+)">', second).group(1)
    assert staff.get(newer).get_data(as_text=True).count("<tr class=") == call_log.PAGE_SIZE


def test_csv_export_has_every_matching_call(staff: FlaskClient, session: Session) -> None:
    texted = _call(session, 1, caller_name="=HYPERLINK(\"http://x\")", decision="send")
    _textback(session, texted, "sent", T0 + dt.timedelta(minutes=1, seconds=5))
    _call(session, 2, missed=False)
    session.commit()
    response = staff.get("/calls/export.csv?missed=1")
    assert response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert len(rows) == 1
    row = rows[0]
    assert row["caller"] == "+15550000001"  # numbers stay as they are
    assert row["caller_name"].startswith("'=")  # a formula is neutralised for spreadsheets
    assert (row["outcome"], row["reason"], row["text"]) == ("missed", "noanswer", "sent")
    assert row["time"] == "2026-12-01T15:01:00+00:00"
    assert row["text_sent_at"] == "2026-12-01T15:01:05+00:00"
    everything = staff.get("/calls/export.csv").get_data(as_text=True)
    assert len(list(csv.DictReader(io.StringIO(everything)))) == 2


@pytest.mark.parametrize("query", ["", "?missed=1", "?missed=1&direction=inbound",
                                   "?from=2026-11-01&to=2026-12-01"])
def test_the_page_query_reads_an_index_without_sorting(
        app, session: Session, query: str) -> None:
    """With a million calls the first page must not scan or sort the table."""
    from sqlalchemy.dialects import sqlite

    with app.test_request_context("/calls" + query):
        from flask import request

        filters, _ = call_log.parse_filters(request.args)
        statement = call_log.newest_first(call_log.filtered(filters, call_log.ZoneInfo("UTC")),
                                          None).limit(call_log.PAGE_SIZE + 1)
    compiled = statement.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True})
    plan = " / ".join(row[-1] for row in session.execute(text(f"EXPLAIN QUERY PLAN {compiled}")))
    assert "USING INDEX ix_calls_" in plan, plan
    assert "TEMP B-TREE" not in plan, plan
