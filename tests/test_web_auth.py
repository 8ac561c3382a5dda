"""Signing in to the web UI: sessions, roles, CSRF, rate limiting, cookies and the audit log."""

from __future__ import annotations

import datetime as dt

import pytest
from conftest import WEB_PASSWORD, csrf_token, login
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from agent.people import accounts
from agent.store.models import AuditEntry, User

pytestmark = pytest.mark.clock  # make test-clock runs it at awkward instants too

ADMIN_ONLY = ("/users", "/audit")
SIGNED_IN = ("/dashboard", "/calls", "/calls/export.csv", *ADMIN_ONLY)


def _actions(session: Session) -> list[tuple[str | None, str, str | None]]:
    session.expire_all()
    return [(e.actor, e.action, e.target)
            for e in session.scalars(select(AuditEntry).order_by(AuditEntry.id))]


def test_signed_out_visitors_are_sent_to_the_login_page(client: FlaskClient) -> None:
    for path in SIGNED_IN:
        response = client.get(path)
        assert response.status_code == 302, path
        assert response.headers["Location"].startswith("/login?next="), path
    assert client.get("/").headers["Location"] == "/dashboard"
    assert client.get("/healthz").get_json() == {"status": "ok"}


def test_login_opens_the_call_log_and_logout_ends_the_session(
        client: FlaskClient, web_users: dict[str, str], session: Session) -> None:
    response = login(client, "desk")
    assert response.status_code == 302
    page = client.get("/calls").get_data(as_text=True)
    assert "<h1>Calls</h1>" in page and "desk" in page
    token = csrf_token(client, "/calls")
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/calls").status_code == 302
    assert session.scalar(select(User).where(User.username == "desk")).last_login_at
    assert _actions(session)[-2:] == [("desk", "login", "desk"), ("desk", "logout", "desk")]


def test_login_goes_back_to_the_page_asked_for_but_never_off_site(
        client: FlaskClient, web_users: dict[str, str]) -> None:
    token = csrf_token(client)
    data = {"username": "desk", "password": WEB_PASSWORD, "csrf_token": token}
    assert client.post("/login?next=/calls?missed=1", data=data).headers["Location"] \
        == "/calls?missed=1"
    client.post("/logout", data={"csrf_token": csrf_token(client, "/calls")})
    data["csrf_token"] = csrf_token(client)
    assert client.post("/login?next=//evil.example/", data=data).headers["Location"] == "/"


HOSTILE_NEXT = ("/%09/evil.example/x", "//evil.example", "/\\evil.example", "\\\\evil.example",
                "https://evil.example", "/%2F%2Fevil.example", "/%252F%252Fevil.example",
                "%2F%2Fevil.example", "/%5Cevil.example", "/%0A/evil.example",
                "%09//evil.example", "javascript:alert(1)", "http:/evil.example",
                "///evil.example", " //evil.example", "/%5C/evil.example")


@pytest.mark.parametrize("target", HOSTILE_NEXT)
def test_a_hostile_next_never_leaves_the_site(
        client: FlaskClient, web_users: dict[str, str], target: str) -> None:
    data = {"username": "desk", "password": WEB_PASSWORD, "csrf_token": csrf_token(client)}
    # as typed in the address bar: the query string reaches the app as written
    where = client.post(f"/login?next={target}", data=data).headers["Location"]
    assert where == "/", (target, where)


def test_next_keeps_an_ordinary_page_with_its_query(
        client: FlaskClient, web_users: dict[str, str]) -> None:
    data = {"username": "desk", "password": WEB_PASSWORD, "csrf_token": csrf_token(client)}
    where = client.post("/login?next=%2Fcontacts%3Fq%3DJohn%2520Smith", data=data)
    assert where.headers["Location"] == "/contacts?q=John%20Smith"


def test_a_cookie_copied_before_sign_out_is_refused_after_it(
        client: FlaskClient, web_users: dict[str, str], session: Session) -> None:
    login(client, "owner")
    copied = client.get_cookie("session")
    assert copied is not None
    assert client.post("/logout", data={"csrf_token": csrf_token(client, "/calls")}
                       ).status_code == 302
    thief = client.application.test_client()
    thief.set_cookie("session", copied.value)
    for path in ("/dashboard", "/users", "/calls"):
        assert thief.get(path).status_code == 302, path  # back to the login page
    # signing in again opens a new session; the copy stays refused
    login(client, "owner")
    assert client.get("/users").status_code == 200
    assert thief.get("/users").status_code == 302


def test_re_enabling_an_account_does_not_bring_back_its_old_sessions(
        client: FlaskClient, web_users: dict[str, str], session: Session) -> None:
    login(client, "desk")
    now = dt.datetime.now(dt.UTC)
    accounts.update_user(session, now, "desk", actor="owner", active=False)
    session.commit()
    assert client.get("/calls").status_code == 302
    accounts.update_user(session, now, "desk", actor="owner", active=True)
    session.commit()
    assert client.get("/calls").status_code == 302
    assert login(client, "desk").status_code == 302  # a new sign-in works
    assert client.get("/calls").status_code == 200


def test_an_admin_signs_someone_out_everywhere(
        client: FlaskClient, web_users: dict[str, str], session: Session) -> None:
    desk_laptop, desk_phone = (client.application.test_client() for _ in range(2))
    login(desk_laptop, "desk")
    login(desk_phone, "desk")
    login(client, "owner")
    page = client.get("/users/desk").get_data(as_text=True)
    assert "Sign desk out everywhere" in page
    done = client.post("/users/desk/sign-out",
                       data={"csrf_token": csrf_token(client, "/users/desk")},
                       follow_redirects=True)
    assert "Every session of desk has ended" in done.get_data(as_text=True)
    assert desk_laptop.get("/calls").status_code == 302
    assert desk_phone.get("/calls").status_code == 302
    assert client.get("/users").status_code == 200  # the admin's own session stays
    assert _actions(session)[-1] == ("owner", "sessions_ended", "desk")
    # staff cannot do it
    login(desk_laptop, "desk")
    refused = desk_laptop.post("/users/owner/sign-out",
                               data={"csrf_token": csrf_token(desk_laptop, "/calls")})
    assert refused.status_code == 403


def test_wrong_password_is_refused_and_audited(
        client: FlaskClient, web_users: dict[str, str], session: Session) -> None:
    response = login(client, "desk", "not the password")
    assert response.status_code == 401
    assert "Wrong username or password." in response.get_data(as_text=True)
    assert client.get("/calls").status_code == 302
    unknown = login(client, "nobody", "whatever123")
    # the same answer for an unknown name: the page does not reveal who has an account
    assert unknown.status_code == 401
    assert "Wrong username or password." in unknown.get_data(as_text=True)
    assert _actions(session)[-2:] == [(None, "login_failed", "desk"),
                                      (None, "login_failed", "nobody")]


def test_five_failures_lock_the_username_from_that_address(
        client: FlaskClient, web_users: dict[str, str], session: Session) -> None:
    for _ in range(accounts.MAX_LOGIN_FAILURES):
        assert login(client, "desk", "guess-guess-guess").status_code == 401
    locked = login(client, "desk")  # even the right password, now
    assert locked.status_code == 429
    assert "Too many failed sign-ins" in locked.get_data(as_text=True)
    assert client.get("/calls").status_code == 302
    assert _actions(session)[-1] == (None, "login_locked", "desk")
    # another account from the same address is not locked out by this
    assert login(client, "owner").status_code == 302


def test_the_lock_lifts_when_the_window_has_passed(session: Session,
                                                   web_users: dict[str, str]) -> None:
    start = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)
    for minute in range(accounts.MAX_LOGIN_FAILURES):
        now = start + dt.timedelta(minutes=minute)
        assert accounts.authenticate(session, now, "desk", "wrong-wrong", "10.0.0.9") is None
    later = start + dt.timedelta(minutes=10)
    with pytest.raises(accounts.LoginLocked):
        accounts.authenticate(session, later, "desk", WEB_PASSWORD, "10.0.0.9")
    # another address is not locked
    assert accounts.authenticate(session, later, "desk", WEB_PASSWORD, "10.0.0.10")
    after = start + accounts.LOGIN_WINDOW + dt.timedelta(minutes=5)
    assert accounts.authenticate(session, after, "desk", WEB_PASSWORD, "10.0.0.9")


def test_a_form_post_without_csrf_token_is_refused(
        client: FlaskClient, web_users: dict[str, str], session: Session) -> None:
    response = client.post("/login", data={"username": "desk", "password": WEB_PASSWORD})
    assert response.status_code == 400
    assert "security token" in response.get_data(as_text=True)
    assert client.get("/calls").status_code == 302  # not signed in
    login(client, "owner")
    refused = client.post("/users", data={"username": "mallory", "role": "admin",
                                          "password": "0123456789abc"})
    assert refused.status_code == 400
    assert accounts.find(session, "mallory") is None
    assert client.post("/logout").status_code == 400


def test_staff_cannot_open_admin_pages(client: FlaskClient, web_users: dict[str, str]) -> None:
    login(client, "desk")
    for path in ADMIN_ONLY:
        response = client.get(path)
        assert response.status_code == 403, path
        assert "cannot open this page" in response.get_data(as_text=True)
    nav = client.get("/calls").get_data(as_text=True)
    assert 'href="/users"' not in nav and 'href="/audit"' not in nav


def test_admin_adds_and_disables_a_user_and_it_is_audited(
        client: FlaskClient, web_users: dict[str, str], session: Session) -> None:
    login(client, "owner")
    token = csrf_token(client, "/users")
    short = client.post("/users", data={"username": "temp", "role": "staff",
                                        "password": "short", "csrf_token": token})
    assert short.status_code == 400
    assert "needs at least 10" in short.get_data(as_text=True)
    added = client.post("/users", data={"username": "temp", "role": "staff",
                                        "password": "a long enough one", "phone": "",
                                        "extension": "104", "csrf_token": token},
                        follow_redirects=True)
    assert "Added temp." in added.get_data(as_text=True)
    other = login(client.application.test_client(), "temp", "a long enough one")
    assert other.status_code == 302
    client.post("/users/temp/disable", data={"csrf_token": token})
    assert login(client.application.test_client(), "temp", "a long enough one").status_code \
        == 401
    audit_page = client.get("/audit").get_data(as_text=True)
    assert "user added" in audit_page and "user disabled" in audit_page
    assert ("owner", "user_added", "temp") in _actions(session)
    assert ("owner", "user_disabled", "temp") in _actions(session)


def test_disabling_or_a_new_password_ends_open_sessions(
        client: FlaskClient, web_users: dict[str, str], session: Session) -> None:
    login(client, "desk")
    assert client.get("/calls").status_code == 200
    accounts.set_password(session, dt.datetime.now(dt.UTC), "desk", "a brand new one",
                          actor="cli")
    session.commit()
    assert client.get("/calls").status_code == 302
    login(client, "desk", "a brand new one")
    assert client.get("/calls").status_code == 200
    accounts.disable(session, dt.datetime.now(dt.UTC), "desk", actor="cli")
    session.commit()
    assert client.get("/calls").status_code == 302


def test_session_cookie_is_httponly_and_samesite(
        client: FlaskClient, web_users: dict[str, str]) -> None:
    response = login(client, "desk")
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # plain http on loopback unless the config says https
    page = client.get("/calls")
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]


def test_secure_cookies_when_served_over_https(engine, web_users: dict[str, str]) -> None:
    from web import create_app

    app = create_app(test_config={"SECRET_KEY": "s" * 40, "SESSION_COOKIE_SECURE": True,
                                  "DATABASE_URL": engine.url.render_as_string(False)})
    client = app.test_client()
    response = login(client, "desk")
    assert "Secure" in response.headers["Set-Cookie"]


def test_no_secret_key_no_app(engine) -> None:
    from web import create_app

    with pytest.raises(RuntimeError, match="no default"):
        create_app(test_config={"DATABASE_URL": engine.url.render_as_string(False)})
