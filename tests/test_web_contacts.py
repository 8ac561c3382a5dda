"""Contacts as the front desk and the owner use them: search by number in any format or
by name, filters, paging, editing name and tags, an opt-out asked for by phone and its
history, hostile names escaped, and erasure (admins only, after typing the number)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from conftest import csrf_token, login
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from agent.messages import conversations, inbound, inbox, outbox
from agent.rules import settings
from agent.store.models import AuditEntry, Call, Contact, Message

pytestmark = pytest.mark.clock  # make test-clock runs it at awkward instants too

DATABASES = ("sqlite", "postgresql")  # the tag filter is JSON SQL, spelt per database

T0 = dt.datetime(2026, 11, 2, 15, 0, tzinfo=dt.UTC)
DID = "+15559990000"


def _contact(session: Session, number: str, at: dt.datetime, **fields: Any) -> Contact:
    fields.setdefault("tags", [])
    contact = Contact(number=number, created_at=at, **fields)
    session.add(contact)
    session.flush()
    inbox.customer_activity(contact, at)
    return contact


def _call(session: Session, contact: Contact, at: dt.datetime) -> None:
    session.add(Call(linkedid=f"{contact.id}.{at.timestamp()}", caller=contact.number,
                     did=DID, direction="inbound", missed=True, reason="noanswer",
                     started_at=at, ended_at=at, decision="send", contact_id=contact.id))


def _post(client: FlaskClient, path: str, **data: str) -> Any:
    data["csrf_token"] = csrf_token(client, "/contacts")
    return client.post(path, data=data, follow_redirects=True)


def _numbers(page: str) -> list[str]:
    return re.findall(r'class="number" href="[^"]+">([^<]+)<', page)


def test_search_filters_and_newest_activity_first(staff: FlaskClient,
                                                  session: Session) -> None:
    dana = _contact(session, "+15551234567", T0, name="Dana Fischer", tags=["VIP", "boiler"])
    _contact(session, "+15559876543", T0 + dt.timedelta(hours=2), name="Sam Lee",
             tags=["vip"], opted_out=True, opted_out_at=T0)
    _contact(session, "+447700900123", T0 + dt.timedelta(hours=1), name="Ann Ode")
    quiet = Contact(number="+15550001111", created_at=T0 - dt.timedelta(days=3), tags=[])
    session.add(quiet)  # only ever called and was answered: listed by when it appeared
    _contact(session, "erased-99", T0 + dt.timedelta(hours=5), source="erased")
    for minutes in (0, 5, 9):
        _call(session, dana, T0 + dt.timedelta(minutes=minutes))
    session.commit()

    page = staff.get("/contacts").get_data(as_text=True)
    assert _numbers(page) == ["+15559876543", "+447700900123", "+15551234567",
                              "+15550001111"]  # the erased stand-in is nobody's contact
    assert 'href="/contacts"' in page  # in the nav
    row = page.split("+15551234567</a>")[1].split("</tr>")[0]
    assert "Dana Fischer" in row and ">VIP<" in row and ">boiler<" in row
    assert '<td data-label="Calls">3</td>' in row
    assert f'href="/inbox/{dana.id}"' in row and f'href="/contacts/{dana.id}"' in row
    assert page.count("badge missed") == 1  # Sam opted out

    def shown(query: str) -> list[str]:
        return _numbers(staff.get(f"/contacts?{query}").get_data(as_text=True))

    assert shown("q=555+123") == ["+15551234567"]
    assert shown("q=%28555%29+123-4567") == ["+15551234567"]
    assert shown("q=5551234567") == ["+15551234567"]
    assert shown("q=07700+900123") == ["+447700900123"]  # written nationally, with the 0
    assert shown("q=fisch") == ["+15551234567"]  # any case, part of the name
    assert shown("q=nobody") == []
    assert shown("view=opted_out") == ["+15559876543"]
    assert shown("tag=vip") == ["+15559876543", "+15551234567"]  # any case
    assert shown("tag=boiler&q=sam") == []
    assert shown("tag=vip&view=opted_out") == ["+15559876543"]
    assert shown("q=%25") == []  # a LIKE wildcard is searched for, not obeyed
    tags = staff.get("/contacts").get_data(as_text=True).split('name="tag"')[1]
    assert re.findall(r'<option value="([^"]*)"', tags.split("</select>")[0]) == [
        "", "boiler", "VIP"]


def test_paging_older_and_back_to_newest(staff: FlaskClient, session: Session) -> None:
    for n in range(105):
        _contact(session, f"+1555000{n:04d}", T0 + dt.timedelta(minutes=n % 50))
    session.commit()
    first = staff.get("/contacts").get_data(as_text=True)
    older = re.search(r'href="([^"]+)">Older', first)
    assert older and len(_numbers(first)) == 100
    second = staff.get(older.group(1).replace("&amp;", "&")).get_data(as_text=True)
    assert len(_numbers(second)) == 5 and "Older" not in second and "Newest" in second
    assert set(_numbers(first)) | set(_numbers(second)) == {
        f"+1555000{n:04d}" for n in range(105)}


def test_name_and_tags_are_edited_and_refused_clearly(staff: FlaskClient,
                                                      session: Session) -> None:
    contact = _contact(session, "+15551234567", T0, name="Dana")
    session.commit()
    page = _post(staff, f"/contacts/{contact.id}", name="  Dana   Fischer ",
                 tags=" VIP, boiler ,vip,, Repeat   customer ,BOILER").get_data(as_text=True)
    assert "Saved." in page
    session.expire_all()
    assert contact.name == "Dana Fischer"
    assert contact.tags == ["VIP", "boiler", "Repeat customer"]
    entry = session.scalars(select(AuditEntry).where(AuditEntry.action == "contact.edit")).one()
    assert (entry.actor, entry.target, entry.details) == (
        "desk", f"contact #{contact.id}", {"changed": ["name", "tags"]})

    too_many = ", ".join(f"tag{n}" for n in range(21))
    refused = _post(staff, f"/contacts/{contact.id}", name="Dana", tags=too_many)
    assert refused.status_code == 400
    assert "That is 21 tags; a contact can have at most 20." in refused.get_data(as_text=True)
    assert too_many in refused.get_data(as_text=True)  # what they typed is still there
    long_tag = "x" * 33
    refused = _post(staff, f"/contacts/{contact.id}", name="Dana", tags=f"ok, {long_tag}")
    assert refused.status_code == 400
    assert "a tag can have at most 32" in refused.get_data(as_text=True)
    session.expire_all()
    assert (contact.name, contact.tags) == ("Dana Fischer", ["VIP", "boiler", "Repeat customer"])
    assert _post(staff, f"/contacts/{contact.id}", name="", tags="").status_code == 200
    session.expire_all()
    assert (contact.name, contact.tags) == (None, [])


def test_hostile_names_and_tags_are_escaped(staff: FlaskClient, session: Session) -> None:
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    contact = _contact(session, "+15551234567", T0, name=hostile, tags=["<b>vip</b>"])
    session.commit()
    for path in ("/contacts", f"/contacts/{contact.id}", "/contacts?q=script"):
        page = staff.get(path).get_data(as_text=True)
        assert "<script>alert" not in page and "<img src=x" not in page, path
        assert "<b>vip" not in page, path
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page, path


def test_staff_record_an_opt_out_asked_for_by_phone(staff: FlaskClient,
                                                    session: Session) -> None:
    contact = _contact(session, "+15551234567", T0)
    queued = outbox.enqueue(session, now=T0, kind="followup", number=contact.number,
                            body="Still need a plumber?", idempotency_key="job:1",
                            send_at=T0 + dt.timedelta(days=1), contact_id=contact.id)
    session.commit()
    page = staff.get(f"/contacts/{contact.id}").get_data(as_text=True)
    assert "Opt out this number" in page and "Never opted out." in page

    refused = _post(staff, f"/contacts/{contact.id}/opt-out", reason="  ")
    assert refused.status_code == 400 and "Say why" in refused.get_data(as_text=True)
    session.expire_all()
    assert not contact.opted_out

    page = _post(staff, f"/contacts/{contact.id}/opt-out",
                 reason="asked on the phone not to be texted").get_data(as_text=True)
    assert "is opted out: it will not be texted again (1 queued text(s) cancelled)" in page
    session.expire_all()
    assert contact.opted_out and contact.opted_out_at is not None
    assert outbox.opted_out(session, contact.number)  # the dispatcher's check at send time
    assert queued is not None and session.get_one(Message, queued.id).status == "cancelled"
    entry = session.scalars(select(AuditEntry).where(
        AuditEntry.action == "contact.opt_out")).one()
    assert (entry.actor, entry.target, entry.details["reason"]) == (
        "desk", f"contact #{contact.id}", "asked on the phone not to be texted")
    history = page.split("Opt-out history")[1]
    assert "Opted out</strong>: recorded by desk: asked on the phone not to be texted" in history
    # opting back in is the customer's to do: there is no button for it, and it says so
    assert "Opt out this number" not in page
    assert not re.search(r"<button[^>]*>[^<]*(opt in|opt back in)", page, re.IGNORECASE)
    assert "Only the customer can opt back in, by texting" in page
    again = _post(staff, f"/contacts/{contact.id}/opt-out", reason="twice")
    assert again.status_code == 400 and "opted out already" in again.get_data(as_text=True)


def test_history_shows_stop_and_start_texts(staff: FlaskClient, session: Session) -> None:
    contact = _contact(session, "+15551234567", T0)
    session.commit()
    values = settings.all_values(session)
    for minutes, body in ((1, "Stop!"), (2, "STOP"), (3, "start")):
        message = inbound.receive(session, inbound.InboundSms(
            sender=contact.number, to=DID, body=body, transport="sip",
            received_at=T0 + dt.timedelta(minutes=minutes)), "US")
        assert message is not None
        conversations.react(session, message, values, T0 + dt.timedelta(minutes=minutes))
    session.commit()
    page = staff.get(f"/contacts/{contact.id}").get_data(as_text=True)
    events = re.findall(r"<strong>([^<]+)</strong>: ([^<]+)</li>",
                        page.split("Opt-out history")[1])
    # the second STOP changed nothing (they were opted out already): not an event
    assert events == [("Opted out", "texted “Stop!”"), ("Opted back in", "texted “start”")]
    assert "This number can be texted." in page


def test_only_admins_erase_and_only_after_typing_the_number(
        client: FlaskClient, session: Session, web_users: dict[str, str]) -> None:
    contact = _contact(session, "+12125550142", T0, name="Dana Fischer", tags=["vip"])
    _call(session, contact, T0)
    session.commit()
    login(client, "desk")
    assert "Erase this person" not in client.get(f"/contacts/{contact.id}").get_data(
        as_text=True)
    assert client.get(f"/contacts/{contact.id}/erase").status_code == 403
    refused = client.post(f"/contacts/{contact.id}/erase", data={
        "confirm": contact.number, "csrf_token": csrf_token(client, "/contacts")})
    assert refused.status_code == 403
    session.expire_all()
    assert contact.name == "Dana Fischer"
    client.post("/logout", data={"csrf_token": csrf_token(client, "/contacts")})

    login(client, "owner")
    assert "Erase this person" in client.get(f"/contacts/{contact.id}").get_data(as_text=True)
    form = client.get(f"/contacts/{contact.id}/erase").get_data(as_text=True)
    assert "cannot be undone" in form and "nothing that identifies the person" in form
    for typed in ("", "+12125550143", "555-0142", "Dana Fischer"):
        wrong = client.post(f"/contacts/{contact.id}/erase", data={
            "confirm": typed, "csrf_token": csrf_token(client, "/contacts")})
        assert wrong.status_code == 400, typed
        assert "nothing was erased" in wrong.get_data(as_text=True)
    session.expire_all()
    assert contact.number == "+12125550142" and contact.name == "Dana Fischer"

    done = client.post(f"/contacts/{contact.id}/erase", data={
        "confirm": "(212) 555-0142", "csrf_token": csrf_token(client, "/contacts")},
        follow_redirects=True)
    page = done.get_data(as_text=True)
    assert done.status_code == 200 and f"Erased contact #{contact.id}" in page
    assert "kept: nothing that identifies the person" in page
    assert "+12125550142" not in page and "Dana" not in page
    session.expire_all()
    assert (contact.number, contact.name, contact.tags) == (f"erased-{contact.id}", None, [])
    assert session.scalars(select(Call)).one().caller is None
    gone = client.get(f"/contacts/{contact.id}")
    assert gone.status_code == 410 and "data was erased" in gone.get_data(as_text=True)
    entry = session.scalars(select(AuditEntry).where(AuditEntry.action == "contact.erase")).one()
    assert (entry.actor, entry.target) == ("owner", f"contact #{contact.id}")


def test_erasing_an_opted_out_number_keeps_only_the_opt_out(owner: FlaskClient,
                                                           session: Session) -> None:
    contact = _contact(session, "+15551234567", T0, name="Dana Fischer", opted_out=True,
                       opted_out_at=T0)
    session.commit()
    form = owner.get(f"/contacts/{contact.id}/erase").get_data(as_text=True)
    assert "the number and its opt-out" in form
    page = _post(owner, f"/contacts/{contact.id}/erase", confirm="+1 555 123 4567")
    text = page.get_data(as_text=True)
    assert "kept: the number and its opt-out only" in text
    assert "This person's data was erased. Only the number and its opt-out are kept" in text
    assert "Dana" not in text and "Erase this person" not in text
    kept = session.scalars(select(Contact).where(Contact.number == "+15551234567")).one()
    assert (kept.opted_out, kept.name) == (True, None)
    assert outbox.opted_out(session, "+15551234567")


def test_forms_without_a_csrf_token_are_refused(owner: FlaskClient, session: Session) -> None:
    contact = _contact(session, "+15551234567", T0, name="Dana")
    session.commit()
    for path, data in ((f"/contacts/{contact.id}", {"name": "Mallory", "tags": "x"}),
                       (f"/contacts/{contact.id}/opt-out", {"reason": "forged"}),
                       (f"/contacts/{contact.id}/erase", {"confirm": contact.number})):
        response = owner.post(path, data=data)
        assert response.status_code == 400, path
        assert "security token" in response.get_data(as_text=True)
    session.expire_all()
    assert (contact.name, contact.opted_out, contact.number) == ("Dana", False, "+15551234567")


def test_signed_out_visitors_are_sent_to_sign_in(client: FlaskClient, session: Session,
                                                 web_users: dict[str, str]) -> None:
    contact = _contact(session, "+15551234567", T0)
    session.commit()
    for path in ("/contacts", f"/contacts/{contact.id}", f"/contacts/{contact.id}/erase"):
        response = client.get(path)
        assert response.status_code == 302 and "/login" in response.headers["Location"], path
    assert client.get("/contacts/999999").status_code == 302
    login(client, "desk")
    assert client.get("/contacts/999999").status_code == 404
