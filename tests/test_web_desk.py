"""The front desk's inbox beyond a thread: search by name, number (any way written) and
words of a text, keyset paging past the first 100, "new since you last looked" per
user, internal notes (never a message, audited), saved replies (checked, filled in for
the customer), the honest call back (an offline agent queues nothing; a request the
agent never took says so and can be retried once), and the live watcher that pushes
changes written by another process."""

from __future__ import annotations

import datetime as dt
import re
import time
from typing import Any

import pytest
from conftest import csrf_token
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, create_engine, select
from sqlalchemy.orm import Session

from agent.messages import inbox
from agent.store.db import sessions
from agent.store.models import (
    AuditEntry,
    CallbackRequest,
    Contact,
    Message,
    Note,
    SavedReply,
    TransportStatus,
    User,
)
from web import live

pytestmark = pytest.mark.clock
DATABASES = ("sqlite", "postgresql")  # the search's SQL and the watcher differ per dialect

T0 = dt.datetime(2026, 11, 2, 15, 0, tzinfo=dt.UTC)


def _conversation(session: Session, number: str, at: dt.datetime, text: str | None = None,
                  **fields: Any) -> Contact:
    contact = Contact(number=number, created_at=at, tags=[], **fields)
    session.add(contact)
    session.flush()
    inbox.customer_activity(contact, at)
    if text:
        session.add(Message(direction="in", kind="reply", number=number, body=text,
                            status="received", created_at=at, updated_at=at,
                            contact_id=contact.id))
    return contact


def _post(client: FlaskClient, path: str, **data: str) -> Any:
    data["csrf_token"] = csrf_token(client, "/inbox")
    return client.post(path, data=data, follow_redirects=True)


def _listed(client: FlaskClient, url: str) -> list[str]:
    return re.findall(r'class="number" title="([^"]+)"',
                      client.get(url).get_data(as_text=True))


def _user(session: Session, name: str) -> User:
    user = session.scalars(select(User).where(User.username == name)).one()
    return user


def test_search_finds_names_numbers_written_any_way_and_words_of_a_text(
        staff: FlaskClient, session: Session) -> None:
    _conversation(session, "+12125550142", T0, "Is the boiler covered by warranty?",
                  name="Maria Lopez")
    _conversation(session, "+13125550199", T0 + dt.timedelta(minutes=1), "Thursday works")
    _conversation(session, "+442079460958", T0 + dt.timedelta(minutes=2), "Hello")
    session.commit()
    assert _listed(staff, "/inbox?view=all&q=maria") == ["+12125550142"]
    for written in ("(212) 555-0142", "212.555.0142", "+1 212 555 0142", "2125550142",
                    "0142"):
        assert _listed(staff, f"/inbox?view=all&q={written}") == ["+12125550142"], written
    assert _listed(staff, "/inbox?view=all&q=020 7946 0958") == ["+442079460958"]  # trunk 0
    assert _listed(staff, "/inbox?view=all&q=44 20 7946 0958") == ["+442079460958"]
    assert _listed(staff, "/inbox?view=all&q=boiler cover") == ["+12125550142"]
    assert _listed(staff, "/inbox?view=all&q=THURSDAY") == ["+13125550199"]
    assert _listed(staff, "/inbox?view=all&q=100%") == []  # % is a character, not a wildcard
    page = staff.get("/inbox?view=all&q=nobody").get_data(as_text=True)
    assert "No conversation matches “nobody”" in page


def test_paging_past_the_first_hundred_shows_every_conversation_once(
        staff: FlaskClient, session: Session) -> None:
    same = T0 + dt.timedelta(hours=1)
    for n in range(230):  # ties on the time: the id breaks them
        _conversation(session, f"+1212555{n:04d}", same if n % 2 else T0 + dt.timedelta(
            seconds=n))
    session.commit()
    seen: list[str] = []
    url: str | None = "/inbox?view=all"
    pages = 0
    while url:
        page = staff.get(url).get_data(as_text=True)
        seen += re.findall(r'class="number" title="([^"]+)"', page)
        found = re.search(r'class="older" href="([^"]+)"', page)
        url = found.group(1).replace("&amp;", "&") if found else None
        pages += 1
    assert pages == 3 and len(seen) == 230 and len(set(seen)) == 230


def test_new_since_you_last_looked_is_per_user(staff: FlaskClient, session: Session,
                                               web_users: dict[str, str]) -> None:
    contact = _conversation(session, "+12125550142", T0, "Hello?")
    session.commit()
    assert 'class="badge new"' in staff.get("/inbox").get_data(as_text=True)
    staff.get(f"/inbox/{contact.id}")  # the desk opens it
    assert 'class="badge new"' not in staff.get("/inbox").get_data(as_text=True)
    # the owner never looked: still new for them
    owner = _user(session, "owner")
    assert inbox.new_for(session, owner.id, [contact]) == {contact.id}
    # the customer writes again: new for the desk once more
    inbox.customer_activity(contact, dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5))
    session.commit()
    assert 'class="badge new"' in staff.get("/inbox").get_data(as_text=True)


def test_a_note_is_shown_apart_audited_and_never_a_message(
        staff: FlaskClient, session: Session) -> None:
    contact = _conversation(session, "+12125550142", T0, "Hi")
    session.commit()
    page = _post(staff, f"/inbox/{contact.id}/notes",
                 body="Gate code 4411 <b>dog</b>").get_data(as_text=True)
    assert "Note added (for staff only: it is not sent)" in page
    assert 'class="item note"' in page and "Internal note from desk · not sent" in page
    assert "Gate code 4411 &lt;b&gt;dog&lt;/b&gt;" in page
    assert session.scalars(select(Message).where(Message.direction == "out")).all() == []
    (note,) = session.scalars(select(Note)).all()
    assert note.author == "desk"
    entry = session.scalars(select(AuditEntry).where(AuditEntry.action == "note_added")).one()
    assert (entry.actor, entry.target) == ("desk", "+12125550142")
    assert "Note not added: the note is empty" in _post(
        staff, f"/inbox/{contact.id}/notes", body="  ").get_data(as_text=True)
    assert _listed(staff, "/inbox?view=all&q=gate code") == ["+12125550142"]


def test_saved_replies_are_for_admins_checked_and_filled_in_for_the_customer(
        client: FlaskClient, session: Session, web_users: dict[str, str]) -> None:
    from conftest import login

    contact = _conversation(session, "+12125550142", T0, "Hi", name="Maria Lopez")
    session.commit()
    login(client, "desk")
    assert client.get("/inbox/saved-replies").status_code == 403
    client.post("/logout", data={"csrf_token": csrf_token(client, "/inbox")})
    login(client, "owner")
    page = _post(client, "/inbox/saved-replies", title="On our way",
                 body="Hi {frist_name}, we are on our way.").get_data(as_text=True)
    assert "Not saved" in page and "did you mean {first_name}?" in page
    page = _post(client, "/inbox/saved-replies", title="Next open",
                 body="Hi from {business}. We open {next_open}.").get_data(as_text=True)
    assert "{next_open} cannot be used in a saved reply" in page
    page = _post(client, "/inbox/saved-replies", title="On our way",
                 body="Hi {first_name}, {business} is on the way.").get_data(as_text=True)
    assert "Saved &#39;On our way&#39;." in page or "Saved 'On our way'." in page
    preview = client.post("/inbox/saved-replies/preview", data={
        "body": "Hi {first_name} – see you", "csrf_token": csrf_token(client, "/inbox")})
    data = preview.get_json()
    assert data["text"].startswith("Hi Maria") and data["encoding"] == "UCS-2"
    assert data["segments"] == 1 and data["error"] is None
    thread = client.get(f"/inbox/{contact.id}").get_data(as_text=True)
    assert 'data-body="Hi Maria, ' in thread and ' is on the way."' in thread
    saved = session.scalars(select(SavedReply)).one()
    assert session.scalars(select(AuditEntry).where(
        AuditEntry.action == "saved_reply_changed")).one().target == saved.title


def test_call_back_with_the_agent_offline_says_so_and_queues_nothing(
        staff: FlaskClient, session: Session) -> None:
    contact = _conversation(session, "+12125550142", T0)
    _user(session, "desk").extension = "desk2"
    # the agent reported, then stopped: its last report is older than its health interval
    session.add(TransportStatus(name="sip", state="up", detail="AMI",
                                updated_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)))
    session.commit()
    thread = staff.get(f"/inbox/{contact.id}").get_data(as_text=True)
    assert re.search(r'<button type="submit" disabled id="callback-button"[^>]*>'
                     r'Call back — agent offline</button>', thread)
    page = _post(staff, f"/inbox/{contact.id}/callback").get_data(as_text=True)
    assert "The agent is offline" in page
    assert session.scalars(select(CallbackRequest)).all() == []


def test_a_call_back_the_agent_never_took_says_not_placed_and_a_retry_rings_once(
        staff: FlaskClient, session: Session) -> None:
    contact = _conversation(session, "+12125550142", T0)
    desk = _user(session, "desk")
    desk.extension = "desk2"
    now = dt.datetime.now(dt.UTC)
    session.add(TransportStatus(name="sip", state="up", detail="AMI", updated_at=now))
    inbox.request_callback(session, contact, desk.id, "desk2", now - dt.timedelta(seconds=31))
    session.commit()
    thread = staff.get(f"/inbox/{contact.id}").get_data(as_text=True)
    assert "not placed — the agent did not pick it up" in thread
    assert "Retry call back" in thread
    assert staff.get(f"/inbox/{contact.id}/updates.json").get_json()["callback"]["retry"]
    _post(staff, f"/inbox/{contact.id}/callback")
    session.expire_all()
    old, new = session.scalars(select(CallbackRequest).order_by(CallbackRequest.id)).all()
    assert (old.status, new.status) == ("failed", "pending")
    assert "did not pick it up" in (old.detail or "")
    # and the agent, late, never places a request older than that
    claimed = inbox.claim_pending(session, now + dt.timedelta(seconds=40), "late-agent")
    assert claimed == []


@pytest.mark.realtime  # the watcher waits on a condition with a timeout
def test_the_watcher_pushes_a_row_another_process_wrote(app: Flask, engine: Engine,
                                                        session: Session) -> None:
    contact = _conversation(session, "+12125550142", T0, name="Maria Lopez")
    session.commit()
    watcher = live.watcher(app)
    watcher.start()
    # another process (the agent) on its own connection pool
    other = create_engine(engine.url.render_as_string(hide_password=False))
    try:
        assert watcher.ready.wait(5)
        start = watcher.seq
        now = dt.datetime.now(dt.UTC)
        with sessions(other)() as writer:
            writer.add(Message(direction="in", kind="reply", number="+12125550142",
                               body="Running late, 10 min", status="received",
                               created_at=now, updated_at=now, contact_id=contact.id))
            found = writer.get(Contact, contact.id)
            assert found is not None
            inbox.customer_activity(found, now)
            writer.commit()
        began = time.monotonic()
        events = watcher.since(start, 3.0)
        while events and not events[-1].data["alerts"] and time.monotonic() - began < 3:
            events = watcher.since(events[-1].seq, 3.0)  # a snapshot moved before the commit
        took = time.monotonic() - began
        assert events, "no event within 3 s"
        assert took < 1.0
        (alert,) = events[-1].data["alerts"]
        assert alert == {"kind": "text", "contact": contact.id, "who": "Maria Lopez",
                         "number": "(212) 555-0142", "body": "Running late, 10 min"}
        assert events[-1].data["waiting"] == 1
    finally:
        watcher.stop()
        other.dispose()


def test_the_stream_is_refused_when_full_so_the_page_polls(app: Flask,
                                                           staff: FlaskClient) -> None:
    app.config["LIVE_MAX_STREAMS"] = 0
    response = staff.get("/live/stream")
    assert response.status_code == 503
    assert staff.get("/inbox/updates.json").status_code == 200  # what the page polls
