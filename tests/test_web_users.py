"""Editing accounts in the web UI: an admin edits anyone, everyone edits their own account."""

from __future__ import annotations

import re

from conftest import WEB_PASSWORD, csrf_token, login
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from agent.people import accounts
from agent.store.models import AuditEntry, User

NEW_PASSWORD = "a fresh passphrase"


def _user(session: Session, username: str) -> User:
    session.expire_all()
    user = accounts.find(session, username)
    assert user is not None
    return user


def _audit(session: Session, target: str) -> list[tuple[str | None, str, dict]]:
    session.expire_all()
    return [(e.actor, e.action, e.details) for e in session.scalars(
        select(AuditEntry).where(AuditEntry.target == target).order_by(AuditEntry.id))]


def _edit(client: FlaskClient, username: str, **fields: str) -> dict[str, str]:
    """The edit form as the page fills it in, with `fields` typed over it."""
    data = {"role": "staff", "phone": "", "extension": "", "active": "y",
            "password": "", "password_again": "",
            "csrf_token": csrf_token(client, f"/users/{username}")}
    data.update(fields)
    return {key: value for key, value in data.items() if value is not None}


def _field_errors(page: str, name: str) -> str:
    """The text of the block around one field: its label, input and errors."""
    found = re.search(rf'<div class="field[^"]*" id="field-{name}">(.*?)</div>', page, re.S)
    assert found, f"no field {name} on the page"
    return found.group(1)


def test_each_user_in_the_list_links_to_their_page(owner: FlaskClient) -> None:
    page = owner.get("/users").get_data(as_text=True)
    assert 'href="/users/desk"' in page and 'href="/users/owner"' in page
    edit = owner.get("/users/desk").get_data(as_text=True)
    assert "<h1>desk" in edit and 'name="role"' in edit
    assert owner.get("/users/nobody").status_code == 404


def test_admin_edits_role_phone_and_extension_and_each_change_is_audited(
        owner: FlaskClient, session: Session) -> None:
    response = owner.post("/users/desk", data=_edit(owner, "desk", role="admin",
                                                    phone="(212) 555-0142", extension="101"),
                          follow_redirects=True)
    assert response.status_code == 200
    assert "role, phone, extension changed" in response.get_data(as_text=True)
    staff = _user(session, "desk")
    assert (staff.role, staff.phone, staff.extension, staff.active) == \
        ("admin", "+12125550142", "101", True)
    assert _audit(session, "desk")[-3:] == [
        ("owner", "user_changed", {"field": "role", "from": "staff", "to": "admin"}),
        ("owner", "user_changed", {"field": "phone", "from": None, "to": "+12125550142"}),
        ("owner", "user_changed", {"field": "extension", "from": None, "to": "101"})]
    # saving the same values again changes and audits nothing
    before = len(_audit(session, "desk"))
    again = owner.post("/users/desk", data=_edit(owner, "desk", role="admin",
                                                 phone="+12125550142", extension="101"),
                       follow_redirects=True)
    assert "Nothing changed." in again.get_data(as_text=True)
    assert len(_audit(session, "desk")) == before


def test_an_invalid_phone_is_refused_beside_its_field_and_nothing_is_stored(
        owner: FlaskClient, session: Session) -> None:
    before = len(_audit(session, "desk"))
    response = owner.post("/users/desk", data=_edit(owner, "desk", role="admin",
                                                    phone="12345", extension="bad ext!"))
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert "Nothing was saved" in page
    phone = _field_errors(page, "phone")
    assert "Mobile for alerts" in phone and "is not a phone number" in phone
    assert "is not a desk extension" in _field_errors(page, "extension")
    assert "is not a phone number" not in _field_errors(page, "role")
    staff = _user(session, "desk")
    # the valid role in the same form was not saved either
    assert (staff.role, staff.phone, staff.extension) == ("staff", None, None)
    assert len(_audit(session, "desk")) == before


def test_what_was_typed_is_shown_as_text_never_markup(owner: FlaskClient) -> None:
    page = owner.post("/users/desk", data=_edit(owner, "desk", phone="<b>x</b>")) \
        .get_data(as_text=True)
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page


def test_staff_cannot_open_or_post_to_a_user_page(staff: FlaskClient, session: Session) -> None:
    assert staff.get("/users/owner").status_code == 403
    assert staff.get("/users/desk").status_code == 403
    token = csrf_token(staff, "/account")
    refused = staff.post("/users/desk", data={"role": "admin", "active": "y",
                                             "csrf_token": token})
    assert refused.status_code == 403
    assert _user(session, "desk").role == "staff"


def test_the_last_active_admin_cannot_disable_or_demote_themselves(
        owner: FlaskClient, session: Session) -> None:
    disabled = owner.post("/users/owner", data=_edit(owner, "owner", role="admin",
                                                     active=None))
    assert disabled.status_code == 400
    assert "last active admin and cannot be disabled" in \
        _field_errors(disabled.get_data(as_text=True), "active")
    demoted = owner.post("/users/owner", data=_edit(owner, "owner", role="staff"))
    assert demoted.status_code == 400
    assert "last active admin and cannot be made staff" in \
        _field_errors(demoted.get_data(as_text=True), "role")
    me = _user(session, "owner")
    assert (me.role, me.active) == ("admin", True)
    assert owner.get("/users").status_code == 200  # still signed in, still an admin
    # with a second admin, stepping down is allowed
    owner.post("/users/desk", data=_edit(owner, "desk", role="admin"))
    stepped_down = owner.post("/users/owner", data=_edit(owner, "owner", role="staff"))
    assert stepped_down.headers["Location"] == "/account"
    assert _user(session, "owner").role == "staff"
    assert owner.get("/users").status_code == 403


def test_admin_disables_and_re_enables_someone(owner: FlaskClient, app: Flask,
                                               session: Session) -> None:
    owner.post("/users/desk", data=_edit(owner, "desk", active=None))
    assert login(app.test_client(), "desk").status_code == 401
    owner.post("/users/desk", data=_edit(owner, "desk", active="y"))
    assert login(app.test_client(), "desk").status_code == 302
    actions = [(actor, action, details.get("field"))
               for actor, action, details in _audit(session, "desk")]
    assert ("owner", "user_disabled", "active") in actions
    assert ("owner", "user_enabled", "active") in actions


def test_a_password_set_by_an_admin_works_and_the_old_one_does_not(
        owner: FlaskClient, app: Flask, session: Session) -> None:
    earlier = app.test_client()
    login(earlier, "desk")
    mismatch = owner.post("/users/desk", data=_edit(owner, "desk", phone="12345",
                                                    password=NEW_PASSWORD,
                                                    password_again="something else"))
    assert mismatch.status_code == 400
    page = mismatch.get_data(as_text=True)
    assert "the two passwords differ" in _field_errors(page, "password_again")
    # every mistake shows in one round, not one after the other
    assert "is not a phone number" in _field_errors(page, "phone")
    short = owner.post("/users/desk", data=_edit(owner, "desk", role="admin", extension="105",
                                                 password="short", password_again="short"))
    assert short.status_code == 400
    assert "needs at least 10" in _field_errors(short.get_data(as_text=True), "password")
    # the valid role and extension of the same form were not saved either
    assert (_user(session, "desk").role, _user(session, "desk").extension) == ("staff", None)
    assert login(app.test_client(), "desk").status_code == 302  # still the old password

    saved = owner.post("/users/desk", data=_edit(owner, "desk", password=NEW_PASSWORD,
                                                 password_again=NEW_PASSWORD),
                       follow_redirects=True)
    page = saved.get_data(as_text=True)
    assert "password changed" in page and NEW_PASSWORD not in page
    assert login(app.test_client(), "desk", NEW_PASSWORD).status_code == 302
    assert login(app.test_client(), "desk", WEB_PASSWORD).status_code == 401
    assert earlier.get("/calls").status_code == 302  # desk's open session ended
    entries = _audit(session, "desk")
    assert ("owner", "password_changed", {}) in entries
    assert not any(NEW_PASSWORD in str(details) or "pbkdf2" in str(details)
                   or "scrypt" in str(details) for _, _, details in entries)


def test_an_admin_setting_their_own_password_stays_signed_in(
        owner: FlaskClient, app: Flask) -> None:
    other = app.test_client()
    login(other, "owner")
    owner.post("/users/owner", data=_edit(owner, "owner", role="admin",
                                          password=NEW_PASSWORD, password_again=NEW_PASSWORD))
    assert owner.get("/users").status_code == 200
    assert other.get("/users").status_code == 302


def test_changing_my_password_needs_the_current_one_and_signs_out_my_other_sessions(
        staff: FlaskClient, app: Flask, session: Session) -> None:
    phone = app.test_client()
    assert login(phone, "desk").status_code == 302
    token = csrf_token(staff, "/account")
    wrong = staff.post("/account/password", data={
        "current_password": "not my password", "password": NEW_PASSWORD,
        "password_again": NEW_PASSWORD, "csrf_token": token})
    assert wrong.status_code == 400
    assert "not your current password" in \
        _field_errors(wrong.get_data(as_text=True), "current_password")
    assert login(app.test_client(), "desk", NEW_PASSWORD).status_code == 401
    assert phone.get("/calls").status_code == 200

    changed = staff.post("/account/password", data={
        "current_password": WEB_PASSWORD, "password": NEW_PASSWORD,
        "password_again": NEW_PASSWORD, "csrf_token": token}, follow_redirects=True)
    assert "Your password is changed" in changed.get_data(as_text=True)
    assert staff.get("/calls").status_code == 200  # this browser stays signed in
    assert phone.get("/calls").status_code == 302  # the other one is signed out
    assert login(app.test_client(), "desk", NEW_PASSWORD).status_code == 302
    assert ("desk", "password_changed", {}) in _audit(session, "desk")


def test_guessing_the_current_password_is_capped_like_signing_in(
        staff: FlaskClient, session: Session) -> None:
    token = csrf_token(staff, "/account")

    def change(current: str) -> str:
        return staff.post("/account/password", data={
            "current_password": current, "password": NEW_PASSWORD,
            "password_again": NEW_PASSWORD, "csrf_token": token}).get_data(as_text=True)

    for guess in range(accounts.MAX_LOGIN_FAILURES):
        assert "not your current password" in change(f"guess number {guess}")
    refused = change(WEB_PASSWORD)  # even the right one, until the window passes
    assert "too many wrong passwords" in _field_errors(refused, "current_password")
    assert [a for _who, a, _d in _audit(session, "desk")].count("login_failed") == \
        accounts.MAX_LOGIN_FAILURES


def test_staff_change_their_own_extension_but_not_their_role_or_active_flag(
        staff: FlaskClient, session: Session) -> None:
    page = staff.get("/account").get_data(as_text=True)
    assert "My account" in page and 'name="role"' not in page and 'name="active"' not in page
    saved = staff.post("/account", data={"phone": "", "extension": "102", "role": "admin",
                                        "active": "", "csrf_token": csrf_token(staff, "/account")},
                      follow_redirects=True)
    assert "extension changed" in saved.get_data(as_text=True)
    me = _user(session, "desk")
    assert (me.extension, me.role, me.active) == ("102", "staff", True)
    assert staff.get("/users").status_code == 403
    assert _audit(session, "desk")[-1] == \
        ("desk", "user_changed", {"field": "extension", "from": None, "to": "102"})
    bad = staff.post("/account", data={"phone": "not a number", "extension": "103",
                                      "csrf_token": csrf_token(staff, "/account")})
    assert bad.status_code == 400
    assert "is not a phone number" in _field_errors(bad.get_data(as_text=True), "phone")
    assert _user(session, "desk").extension == "102"


def test_the_header_links_my_name_to_my_account(staff: FlaskClient) -> None:
    page = staff.get("/calls").get_data(as_text=True)
    assert re.search(r'<a class="who" href="/account"[^>]*>desk</a>', page)


def test_posts_without_a_csrf_token_are_refused(owner: FlaskClient, session: Session) -> None:
    for path, data in (("/users/desk", {"role": "admin", "active": "y"}),
                       ("/account", {"extension": "999"}),
                       ("/account/password", {"current_password": WEB_PASSWORD,
                                              "password": NEW_PASSWORD,
                                              "password_again": NEW_PASSWORD})):
        response = owner.post(path, data=data)
        assert response.status_code == 400, path
        assert "security token" in response.get_data(as_text=True)
    assert _user(session, "desk").role == "staff"
    assert _user(session, "owner").extension is None
    assert login(owner.application.test_client(), "owner", NEW_PASSWORD).status_code == 401


def test_signed_out_visitors_are_sent_to_the_login_page(client: FlaskClient,
                                                        web_users: dict[str, str]) -> None:
    for path in ("/users/desk", "/account"):
        response = client.get(path)
        assert response.status_code == 302, path
        assert response.headers["Location"].startswith("/login?next="), path
    token = csrf_token(client)
    for path in ("/users/desk", "/account", "/account/password"):
        response = client.post(path, data={"extension": "999", "csrf_token": token})
        assert response.status_code == 302, path
        assert response.headers["Location"].startswith("/login?next="), path
