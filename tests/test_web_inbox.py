"""The shared inbox as the front desk uses it: filters, ownership, replies that become
queued texts, opt-out refusals, close/reopen, one timeline, escaping, polling, call back
(and the agent placing it), and the reply counter agreeing with the agent's."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import csrf_token, login
from flask.testing import FlaskClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from agent.messages import inbound, inbox, timers
from agent.rules import templates
from agent.store.db import DbRunner
from agent.store.models import (
    AuditEntry,
    Call,
    CallbackRequest,
    Contact,
    Job,
    Message,
    TransportStatus,
    User,
)

pytestmark = pytest.mark.clock  # make test-clock runs it at awkward instants too

T0 = dt.datetime(2026, 11, 2, 15, 0, tzinfo=dt.UTC)  # in the past: staff act "now"
DID = "+15559990000"


def _contact(session: Session, number: str, at: dt.datetime, **fields: Any) -> Contact:
    contact = Contact(number=number, created_at=at, tags=[], **fields)
    session.add(contact)
    session.flush()
    inbox.customer_activity(contact, at)
    return contact


def _missed(session: Session, contact: Contact, at: dt.datetime) -> Call:
    call = Call(linkedid=f"17.{contact.id}.{at.timestamp()}", caller=contact.number, did=DID,
                direction="inbound", missed=True, reason="noanswer", started_at=at,
                ended_at=at + dt.timedelta(seconds=20), decision="send", contact_id=contact.id)
    session.add(call)
    session.add(Message(direction="out", kind="textback", number=contact.number,
                        from_number=DID, body="Sorry we missed you", status="delivered",
                        created_at=at + dt.timedelta(seconds=30),
                        updated_at=at + dt.timedelta(seconds=40), contact_id=contact.id,
                        idempotency_key=f"{call.linkedid}:textback"))
    session.flush()
    return call


def _user_id(session: Session, name: str) -> int:
    user_id = session.scalar(select(User.id).where(User.username == name))
    assert user_id is not None
    return user_id


def _post(client: FlaskClient, path: str, **data: str) -> Any:
    data["csrf_token"] = csrf_token(client, "/inbox")
    return client.post(path, data=data, follow_redirects=True)


def test_filters_and_newest_activity_first(staff: FlaskClient, session: Session) -> None:
    old = _contact(session, "+15550000001", T0)
    new = _contact(session, "+15550000002", T0 + dt.timedelta(minutes=5))
    closed = _contact(session, "+15550000003", T0 + dt.timedelta(minutes=1))
    closed.conversation_status = "closed"
    old.assigned_to = _user_id(session, "desk")
    new.assigned_to = _user_id(session, "owner")
    session.add(Contact(number="+15550000009", created_at=T0, tags=[]))  # no conversation
    session.commit()

    def shown(view: str) -> list[str]:
        page = staff.get(f"/inbox?view={view}").get_data(as_text=True)
        return re.findall(r'class="number" title="([^"]+)"', page)

    assert shown("all") == ["+15550000002", "+15550000003", "+15550000001"]
    assert shown("open") == ["+15550000002", "+15550000001"]
    assert shown("closed") == ["+15550000003"]
    assert shown("mine") == ["+15550000001"]
    assert shown("unassigned") == ["+15550000003"]
    page = staff.get("/inbox?view=all").get_data(as_text=True)
    assert page.count("badge waiting") == 2  # open and nobody reached them yet
    assert "<title>(2) Inbox · textback</title>" in page  # seen from another tab
    assert staff.get("/inbox/updates.json").get_json()["waiting"] == 2
    assert 'href="/inbox"' in page  # the nav


def test_a_reply_is_a_queued_text_that_stops_followups(staff: FlaskClient,
                                                        session: Session) -> None:
    contact = _contact(session, "+15550000001", T0)
    _missed(session, contact, T0)
    session.add(Job(kind="followup", step=0, due_at=T0 + dt.timedelta(hours=3),
                    status="pending", dedupe_key="followup:x:0", contact_id=contact.id,
                    created_at=T0))
    session.commit()
    body = "Hi! We can come by at 3pm — does that work? €50 call-out"
    page = _post(staff, f"/inbox/{contact.id}/reply", body=body).get_data(as_text=True)
    assert "Reply queued (1 SMS)" in page
    session.expire_all()
    reply = session.scalars(select(Message).where(Message.kind == "staff_reply")).one()
    assert (reply.direction, reply.status, reply.number, reply.from_number) == (
        "out", "queued", "+15550000001", DID)
    assert (reply.encoding, reply.segments) == ("UCS-2", 1)  # the dash is not GSM-7
    assert reply.sent_by == "desk" and reply.contact_id == contact.id
    job = session.scalars(select(Job)).one()
    assert job.status == "cancelled" and "reply from desk" in (job.detail or "")
    assert contact.contacted_at is not None
    assert contact.assigned_to == _user_id(session, "desk")  # first responder owns it
    assert "Reply from desk" in page and "waiting" not in page.split("<ol")[0].split("Owner")[0]


def test_first_responder_keeps_it_and_it_can_be_handed_over(staff: FlaskClient,
                                                            session: Session) -> None:
    contact = _contact(session, "+15550000001", T0)
    session.commit()
    _post(staff, f"/inbox/{contact.id}/contacted")
    session.expire_all()
    assert contact.assigned_to == _user_id(session, "desk")
    owner = _user_id(session, "owner")
    page = _post(staff, f"/inbox/{contact.id}/assign", user_id=str(owner)).get_data(as_text=True)
    assert "Assigned to owner." in page
    session.expire_all()
    assert contact.assigned_to == owner
    _post(staff, f"/inbox/{contact.id}/reply", body="On our way")
    session.expire_all()
    assert contact.assigned_to == owner  # replying does not take it over


def test_booking_a_job_stops_followups_shows_and_can_be_undone(staff: FlaskClient,
                                                               session: Session) -> None:
    contact = _contact(session, "+15550000001", T0)
    _missed(session, contact, T0)
    session.add(Job(kind="followup", step=0, due_at=T0 + dt.timedelta(hours=3),
                    status="pending", dedupe_key="followup:x:0", contact_id=contact.id,
                    created_at=T0))
    session.commit()
    before = staff.get(f"/inbox/{contact.id}").get_data(as_text=True)
    assert "Booked a job</button>" in before and "Not booked" not in before
    refused = staff.post(f"/inbox/{contact.id}/booking", data={"booked": "yes"})
    assert refused.status_code == 400  # no CSRF token
    session.expire_all()
    assert contact.booked_at is None

    page = _post(staff, f"/inbox/{contact.id}/booking", booked="yes").get_data(as_text=True)
    assert "Marked as a booked job" in page
    header = page.split('id="timeline"')[0]
    assert "booked a job" in header and "Not booked</button>" in page
    session.expire_all()
    assert contact.booked_at is not None
    assert contact.contacted_at == contact.booked_at  # booking is reaching the customer
    assert not inbox.waiting(contact)
    job = session.scalars(select(Job)).one()
    assert job.status == "cancelled" and "job booked by desk" in (job.detail or "")
    assert contact.assigned_to == _user_id(session, "desk")
    assert 'class="badge booked"' in staff.get("/inbox?view=all").get_data(as_text=True)
    entry = session.scalars(select(AuditEntry).where(AuditEntry.action == "booked")).one()
    assert (entry.actor, entry.target) == ("desk", "+15550000001")

    contacted = contact.contacted_at
    page = _post(staff, f"/inbox/{contact.id}/booking", booked="no").get_data(as_text=True)
    assert "Booking removed" in page and "Booked a job</button>" in page
    session.expire_all()
    assert contact.booked_at is None
    assert contact.contacted_at == contacted  # staff did reach them; that stays
    assert 'class="badge booked"' not in staff.get("/inbox?view=all").get_data(as_text=True)
    assert session.scalars(select(AuditEntry.actor).where(
        AuditEntry.action == "booking_cleared")).all() == ["desk"]


def test_booking_keeps_an_earlier_contact_time(staff: FlaskClient, session: Session) -> None:
    contact = _contact(session, "+15550000001", T0)
    reached = T0 + dt.timedelta(minutes=10)
    timers.contacted(session, contact, "called back", reached)
    session.commit()
    _post(staff, f"/inbox/{contact.id}/booking", booked="yes")
    session.expire_all()
    assert contact.booked_at is not None and contact.booked_at > reached
    assert contact.contacted_at == reached  # the dashboard's first contact is not moved


def test_opted_out_contacts_cannot_be_texted(staff: FlaskClient, session: Session) -> None:
    contact = _contact(session, "+15550000001", T0, opted_out=True, opted_out_at=T0)
    session.commit()
    assert "has opted out of texts" in staff.get(f"/inbox/{contact.id}").get_data(as_text=True)
    page = _post(staff, f"/inbox/{contact.id}/reply", body="Hello?").get_data(as_text=True)
    assert "Not sent: +15550000001 has opted out of texts" in page
    assert session.scalars(select(Message).where(Message.kind == "staff_reply")).all() == []


def test_close_reopen_and_a_new_text_reopens(staff: FlaskClient, session: Session) -> None:
    contact = _contact(session, "+15550000001", T0)
    session.commit()
    assert "Conversation closed." in _post(staff, f"/inbox/{contact.id}/status",
                                           status="closed").get_data(as_text=True)
    session.expire_all()
    assert contact.conversation_status == "closed"
    _post(staff, f"/inbox/{contact.id}/status", status="open")
    session.expire_all()
    assert contact.conversation_status == "open"
    contact.conversation_status = "closed"
    session.commit()
    inbound.receive(session, inbound.InboundSms(
        sender="+15550000001", to=DID, body="Are you coming?", transport="sip",
        received_at=T0 + dt.timedelta(hours=1)), "US")
    session.commit()
    session.expire_all()
    assert contact.conversation_status == "open"
    assert contact.last_message_at == T0 + dt.timedelta(hours=1)
    assert inbox.waiting(contact)


def test_one_timeline_in_order_with_hostile_text_escaped(staff: FlaskClient,
                                                         session: Session) -> None:
    contact = _contact(session, "+15550000001", T0, name="<b>Bob</b>")
    _missed(session, contact, T0)
    session.add(Message(direction="in", kind="sms", number=contact.number, from_number=DID,
                        body='<script>alert("x")</script><img src=x onerror=alert(1)>',
                        status="received", created_at=T0 + dt.timedelta(minutes=2),
                        updated_at=T0, contact_id=contact.id))
    session.add(Message(direction="out", kind="alert", number="+15558880000",
                        body="Customer replied", status="sent", contact_id=contact.id,
                        created_at=T0 + dt.timedelta(minutes=3), updated_at=T0))
    session.commit()
    page = staff.get(f"/inbox/{contact.id}").get_data(as_text=True)
    timeline = page.split('id="timeline"')[1].split("</ol>")[0]
    labels = re.findall(r'class="label">([^<]+)<', timeline)
    assert labels == ["Missed call · nobody answered", "Text-back", "Customer",
                      "Alert to staff to +15558880000"]
    assert "delivered" in timeline
    assert "<script>alert" not in page and "<img src=x" not in page and "<b>Bob" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page


def test_polling_endpoint_reports_new_messages(staff: FlaskClient, session: Session) -> None:
    contact = _contact(session, "+15550000001", T0)
    _missed(session, contact, T0)
    session.commit()
    first = staff.get(f"/inbox/{contact.id}/updates.json").get_json()
    assert [item["label"] for item in first["items"]] == ["Missed call · nobody answered",
                                                          "Text-back"]
    same = staff.get(f"/inbox/{contact.id}/updates.json").get_json()
    assert same["token"] == first["token"]
    listed = staff.get("/inbox/updates.json").get_json()["token"]
    inbound.receive(session, inbound.InboundSms(
        sender="+15550000001", to=DID, body="<i>yes</i> please", transport="sip",
        received_at=T0 + dt.timedelta(minutes=5)), "US")
    session.commit()
    later = staff.get(f"/inbox/{contact.id}/updates.json").get_json()
    assert later["token"] != first["token"]
    assert later["items"][-1] | {"at": "", "when": ""} == {
        "key": later["items"][-1]["key"], "at": "", "when": "", "side": "in",
        "label": "Customer", "body": "<i>yes</i> please", "status": "", "why": ""}
    assert staff.get("/inbox/updates.json").get_json()["token"] != listed
    partial = staff.get("/inbox?view=open&partial=1").get_data(as_text=True)
    assert "<html" not in partial and "+15550000001" in partial


def test_signed_out_and_forged_posts_are_refused(client: FlaskClient, session: Session,
                                                 web_users: dict[str, str]) -> None:
    contact = _contact(session, "+15550000001", T0)
    session.commit()
    assert client.get("/inbox").status_code == 302
    assert client.get(f"/inbox/{contact.id}/updates.json").status_code == 302
    login(client, "owner")  # admins use the inbox too
    assert client.get("/inbox").status_code == 200
    refused = client.post(f"/inbox/{contact.id}/reply", data={"body": "hi"})
    assert refused.status_code == 400
    assert session.scalars(select(Message)).all() == []


def test_call_back_needs_an_extension_then_writes_a_request(staff: FlaskClient,
                                                            session: Session) -> None:
    contact = _contact(session, "+15550000001", T0)
    # the agent is running: it reported its transport a moment ago
    session.add(TransportStatus(name="sip", state="up", detail="AMI",
                                updated_at=dt.datetime.now(dt.UTC)))
    session.commit()
    page = _post(staff, f"/inbox/{contact.id}/callback").get_data(as_text=True)
    assert "needs your desk extension" in page
    desk = session.get(User, _user_id(session, "desk"))
    assert desk is not None
    desk.extension = "desk2"
    session.commit()
    page = _post(staff, f"/inbox/{contact.id}/callback").get_data(as_text=True)
    assert "your desk phone (desk2) rings" in page
    request = session.scalars(select(CallbackRequest)).one()
    assert (request.extension, request.number, request.status) == (
        "desk2", "+15550000001", "pending")
    assert "Last call back: pending" in page


def test_the_agent_places_a_call_back_once(engine: Engine, session: Session,
                                           web_users: dict[str, str]) -> None:
    contact = _contact(session, "+15550000001", T0)
    now = dt.datetime.now(dt.UTC)
    inbox.request_callback(session, contact, _user_id(session, "desk"), "desk2", now)
    inbox.request_callback(session, contact, _user_id(session, "desk"), "bad ext!", now)
    session.commit()
    sent: list[dict[str, str]] = []

    async def action(fields: dict[str, str], timeout: float) -> dict[str, str]:
        sent.append(fields)
        return {"Response": "Success"}

    runner = DbRunner(engine)

    async def run_pending() -> int:  # as the agent's timers do, once a second
        claimed = await runner(lambda s: inbox.claim_pending(s, dt.datetime.now(dt.UTC),
                                                             "host/agent"))
        await inbox.place(runner, action, "trunk", claimed)
        return len(claimed)

    async def twice() -> tuple[int, int]:
        first = await run_pending()
        return first, await run_pending()

    try:
        assert asyncio.run(twice()) == (2, 0)  # claimed once
    finally:
        runner.close()
    assert sent == [{
        "Action": "Originate", "Channel": "PJSIP/desk2", "Application": "Dial",
        "Data": "PJSIP/+15550000001@trunk,60", "CallerID": '"CALL BACK" <+15550000001>',
        "Timeout": "30000", "Async": "true"}]
    session.expire_all()
    done = session.scalars(select(CallbackRequest).order_by(CallbackRequest.id)).all()
    assert [r.status for r in done] == ["ringing", "failed"]
    assert "not a PJSIP endpoint" in (done[1].detail or "")


TRICKY = ["", "Hello", "a" * 160, "a" * 161, "€" * 80, "€" * 81, "{}" * 77,
          "a" * 152 + "€", "é" * 200, "ç", "Café 😀", "😀" * 35, "😀" * 36,
          "a" * 66 + "😀" + "a" * 10, "`backtick`", "line\nbreak\r", "tab\there",
          "\x1b escape", "ΑΒΓ greek caps", "ΓΔΘ", "\f form", "x" * 306 + "[",
          "Ünïcödé ñ", "ü" * 459]


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_reply_counter_counts_like_the_agent(tmp_path: Path) -> None:
    script = Path(__file__).parent.parent / "web" / "static" / "segments.js"
    runner = tmp_path / "run.js"
    runner.write_text(
        f"const seg = require({json.dumps(str(script))});\n"
        "const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));\n"
        "process.stdout.write(JSON.stringify(input.map(seg)));\n")
    out = subprocess.run(["node", str(runner)], input=json.dumps(TRICKY), text=True,
                         capture_output=True, check=True, timeout=30).stdout
    for text, js in zip(TRICKY, json.loads(out), strict=True):
        py = templates.segments(text)
        assert (js["encoding"], js["units"], js["segments"]) == (
            py.encoding, py.units, py.segments), repr(text)


def test_waiting_ends_when_staff_reach_the_customer(session: Session) -> None:
    contact = _contact(session, "+15550000001", T0)
    assert inbox.waiting(contact)
    timers.contacted(session, contact, "test", T0 + dt.timedelta(minutes=1))
    assert not inbox.waiting(contact)


def test_each_conversation_shows_its_newest_text(staff: FlaskClient, session: Session) -> None:
    quiet = _contact(session, "+15550000001", T0)
    chatty = _contact(session, "+15550000002", T0)
    for n, (direction, kind, body) in enumerate([
            ("out", "textback", "Hi, sorry we missed you"),
            ("in", "reply", "old question"),
            ("in", "reply", "The <b>boiler</b> is\nbanging again " + "very loudly " * 10)]):
        at = T0 + dt.timedelta(minutes=n)
        session.add(Message(direction=direction, kind=kind, number=chatty.number, body=body,
                            status="received" if direction == "in" else "submitted",
                            created_at=at, updated_at=at, contact_id=chatty.id))
    session.add(Message(direction="out", kind="textback", number=quiet.number,
                        body="Hi, thanks for calling", status="submitted", created_at=T0,
                        updated_at=T0, contact_id=quiet.id))
    session.commit()
    page = staff.get("/inbox?view=all").get_data(as_text=True)
    snippets = re.findall(r'class="snippet">([^<]*)<', page)
    assert len(snippets) == 2
    assert "Text-back: Hi, thanks for calling" in snippets
    (latest,) = [s for s in snippets if "boiler" in s]
    assert latest.startswith("The &lt;b&gt;boiler&lt;/b&gt; is banging again")  # escaped
    assert latest.endswith("…") and "old question" not in page


def test_an_erased_person_has_no_thread(staff: FlaskClient, session: Session) -> None:
    contact = _contact(session, "+15550000001", T0)
    contact.number = "erased-1"
    session.commit()
    response = staff.get(f"/inbox/{contact.id}")
    assert response.status_code == 410
    assert "erased" in response.get_data(as_text=True)
    assert staff.get(f"/inbox/{contact.id}/updates.json").status_code == 410
