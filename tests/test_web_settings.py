"""The settings pages as an admin uses them: one form per section, all-or-nothing saves
with errors naming the key, the hours grid round trip, audited changes, the live template
preview agreeing with the agent's own rendering, and the transports panel with its
send-test form. Staff and signed-out visitors cannot reach any of it."""

from __future__ import annotations

import datetime as dt
import html
import re
from html.parser import HTMLParser
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import csrf_token
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from agent.calls import policy
from agent.rules import schedule, settings, templates
from agent.store import audit
from agent.store.models import AuditEntry, Contact, Message, Setting, TransportStatus
from web import clock

pytestmark = pytest.mark.clock  # make test-clock runs it at awkward instants too

SECTIONS = {"business": "Business", "hours": "Hours", "textback": "Text-back",
            "conversations": "Conversations", "people": "People", "routing": "Call routing",
            "transports": "Transports"}
GRID = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@pytest.fixture
def now(monkeypatch: pytest.MonkeyPatch) -> dt.datetime:
    """The instant the pages are rendered at, read from the clock once: what a test
    expects and what the page says are then of the same instant, even when midnight
    (or a few loaded seconds) passes between them."""
    instant = dt.datetime.now(dt.UTC)
    monkeypatch.setattr(clock, "now", lambda: instant)
    return instant


class FormReader(HTMLParser):
    """What a browser would submit from the page's settings form (first POST form with
    fields), so a test can send back exactly what the page shows."""

    def __init__(self, action: str | None = None) -> None:
        super().__init__()
        self.action = action
        self.inside = False
        self.done = False
        self.fields: list[tuple[str, str]] = []
        self._textarea: str | None = None
        self._text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and not self.done and a.get("method") == "post" and (
                self.action is None or a.get("action") == self.action):
            self.inside = True
        if not self.inside:
            return
        if tag == "input" and a.get("name"):
            if a.get("type") == "checkbox":
                if "checked" in a:
                    self.fields.append((a["name"], a.get("value", "on")))
            elif a.get("type") not in ("submit", "button"):
                self.fields.append((a["name"], a.get("value", "")))
        elif tag == "textarea" and a.get("name"):
            self._textarea, self._text = a["name"], ""
        elif tag == "select" and a.get("name"):
            self._textarea = None

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self._text += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "textarea" and self._textarea is not None:
            # the HTML parser drops the newline right after <textarea>, as browsers do
            self.fields.append((self._textarea, self._text.removeprefix("\n")))
            self._textarea = None
        if tag == "form" and self.inside:
            self.inside, self.done = False, True


def form_of(page: str, action: str | None = None) -> list[tuple[str, str]]:
    reader = FormReader(action)
    reader.feed(page)
    return reader.fields


def grid_of(page: str) -> dict[str, tuple[bool, str]]:
    fields = form_of(page, "/settings/hours")
    names = dict(fields)
    return {day: (f"open_{day}" in names, names.get(f"shifts_{day}", "")) for day in GRID}


def post(client: FlaskClient, path: str, data: dict[str, Any] | list[tuple[str, str]],
         follow: bool = True) -> Any:
    items = list(data.items()) if isinstance(data, dict) else list(data)
    items = [(k, v) for k, v in items if k != "csrf_token"]
    items.append(("csrf_token", csrf_token(client, "/settings/business")))
    from werkzeug.datastructures import MultiDict

    return client.post(path, data=MultiDict(items), follow_redirects=follow)


def hours_form(**days: str) -> dict[str, str]:
    """The grid as a browser sends it: a ticked box and the shifts for each open day."""
    data: dict[str, str] = {"holidays": ""}
    for day, shifts in days.items():
        data[f"open_{day}"] = "1"
        data[f"shifts_{day}"] = shifts
    return data


def stored(session: Session) -> dict[str, Any]:
    session.expire_all()
    return {row.key: row.value for row in session.scalars(select(Setting))}


def preview(client: FlaskClient, key: str, text: str, **extra: Any) -> Any:
    return client.post("/settings/preview", json={"key": key, "text": text, **extra},
                       headers={"X-CSRFToken": csrf_token(client, "/settings/business")})


# ------------------------------------------------------------------ access


def test_every_section_renders_with_values_help_and_defaults(owner: FlaskClient,
                                                             session: Session) -> None:
    settings.set(session, "business.name", "Rapid Rooter Plumbing", dt.datetime.now(dt.UTC))
    session.commit()
    seen: set[str] = set()
    for slug, title in SECTIONS.items():
        page = owner.get(f"/settings/{slug}")
        assert page.status_code == 200, slug
        text = page.get_data(as_text=True)
        assert f"<h1>{title}</h1>" in text
        for item in SECTIONS:  # the section menu on every page
            assert f'href="/settings/{item}"' in text
        seen |= set(re.findall(r'<code class="key">([^<]+)</code>', text))
    assert seen == set(settings.SPECS)  # every key of the catalogue is on some page
    business = owner.get("/settings/business").get_data(as_text=True)
    assert 'value="Rapid Rooter Plumbing"' in business
    assert html.escape(settings.SPECS["business.name"].help, quote=False) in business
    assert "Default: <span class=\"default-text\">us</span>" in business
    assert '<option value="America/Chicago">' in business  # the time zone list
    assert owner.get("/settings").headers["Location"].endswith("/settings/business")
    assert owner.get("/settings/nonsense").status_code == 404
    nav = owner.get("/dashboard").get_data(as_text=True)
    assert 'href="/settings"' in nav


def test_staff_are_refused_everywhere(staff: FlaskClient, session: Session) -> None:
    session.add(TransportStatus(name="sip", state="up", updated_at=dt.datetime.now(dt.UTC)))
    session.commit()
    for slug in SECTIONS:
        assert staff.get(f"/settings/{slug}").status_code == 403, slug
    token = csrf_token(staff, "/inbox")
    assert staff.post("/settings/business", data={"csrf_token": token,
                                                  "business.name": "Hijacked"}).status_code == 403
    assert staff.post("/settings/hours", data={"csrf_token": token, "open_mon": "1",
                                               "shifts_mon": "08:00-09:00"}).status_code == 403
    assert staff.post("/settings/preview", json={"key": "templates.help", "text": "hi"},
                      headers={"X-CSRFToken": token}).status_code == 403
    assert staff.post("/settings/transports/test", data={
        "csrf_token": token, "number": "+12015550123", "text": "hi",
        "transport": "sip"}).status_code == 403
    assert staff.get("/settings/transports/panel").status_code == 403
    assert stored(session) == {}
    assert session.scalars(select(Message)).all() == []
    assert 'href="/settings"' not in staff.get("/dashboard").get_data(as_text=True)


def test_signed_out_visitors_are_sent_to_the_login(client: FlaskClient,
                                                   web_users: dict[str, str]) -> None:
    for path in ("/settings", "/settings/hours", "/settings/transports"):
        answer = client.get(path)
        assert answer.status_code == 302 and "/login" in answer.headers["Location"], path


def test_a_post_without_its_csrf_token_is_refused(owner: FlaskClient, session: Session) -> None:
    answer = owner.post("/settings/business", data={"business.name": "Forged"})
    assert answer.status_code == 400
    assert "security token" in answer.get_data(as_text=True)
    assert owner.post("/settings/preview",
                      json={"key": "templates.help", "text": "hi"}).status_code == 400
    assert owner.post("/settings/transports/test", data={"number": "+12015550123",
                                                         "text": "x"}).status_code == 400
    assert stored(session) == {}


# ------------------------------------------------------------------ saving


def test_bad_hours_name_the_key_keep_the_input_and_save_nothing(owner: FlaskClient,
                                                                session: Session) -> None:
    data = hours_form(mon="25:00-26:00", tue="08:00-17:00")
    data["holidays"] = "2026-12-25"
    answer = post(owner, "/settings/hours", data)
    page = answer.get_data(as_text=True)
    assert answer.status_code == 400
    assert "Nothing was saved" in page
    monday = page.split('data-day="mon"')[1].split('data-day="tue"')[0]
    # in words beside the day, not the settings key
    assert "Monday: &#39;25:00&#39; in &#39;25:00-26:00&#39; is not a time of day" in monday
    assert "hours.weekly:" not in page
    assert grid_of(page)["mon"] == (True, "25:00-26:00")  # what was typed, still there
    assert grid_of(page)["tue"] == (True, "08:00-17:00")
    assert "2026-12-25" in dict(form_of(page, "/settings/hours"))["holidays"]
    assert stored(session) == {}  # not even the valid holiday
    assert session.scalars(select(AuditEntry).where(
        AuditEntry.action == audit.SETTING_CHANGED)).all() == []


def test_no_day_open_is_refused_rather_than_read_as_open_around_the_clock(
        owner: FlaskClient, session: Session) -> None:
    answer = post(owner, "/settings/hours", {"holidays": "", "shifts_mon": "08:00-17:00"})
    assert answer.status_code == 400
    assert "No day is ticked open" in answer.get_data(as_text=True)
    answer = post(owner, "/settings/hours", {"holidays": "", "open_wed": "1", "shifts_wed": ""})
    assert "Wednesday is ticked open but has no hours" in answer.get_data(as_text=True)
    assert stored(session) == {}


def test_one_bad_field_stores_nothing_of_its_section(owner: FlaskClient,
                                                     session: Session) -> None:
    answer = post(owner, "/settings/business", {
        "business.name": "Rapid Rooter", "business.timezone": "America/Chicago",
        "business.booking_link": "https://rr.example/book",
        "business.average_job_value": "250", "business.close_rate": "1.5"})
    page = answer.get_data(as_text=True)
    assert answer.status_code == 400 and "Nothing was saved" in page
    assert "Close rate is between 0 and 1" in page  # in words: the label, not the key
    assert 'value="1.5"' in page and 'value="Rapid Rooter"' in page
    assert stored(session) == {}


def test_a_saved_section_is_stored_and_audited_like_the_cli(owner: FlaskClient,
                                                            session: Session) -> None:
    answer = post(owner, "/settings/business", {
        "business.name": "  Rapid   Rooter ", "business.timezone": "America/Chicago",
        "business.booking_link": "", "business.average_job_value": "350",
        "business.close_rate": "0.3"})
    assert answer.status_code == 200
    assert "Saved: Business name, Time zone, Average job value." in answer.get_data(as_text=True)
    assert stored(session) == {"business.name": "Rapid Rooter",
                               "business.timezone": "America/Chicago",
                               "business.average_job_value": 350.0}
    entries = session.scalars(select(AuditEntry).where(
        AuditEntry.action == audit.SETTING_CHANGED).order_by(AuditEntry.id)).all()
    assert [(a.actor, a.target, a.details) for a in entries] == [
        ("owner", "business.name", {"from": "us", "to": "Rapid Rooter"}),
        ("owner", "business.timezone", {"from": "UTC", "to": "America/Chicago"}),
        ("owner", "business.average_job_value", {"from": 0, "to": 350.0})]
    # the same form sent again changes nothing and audits nothing
    page = owner.get("/settings/business").get_data(as_text=True)
    again = post(owner, "/settings/business", form_of(page, "/settings/business"))
    assert "nothing had changed" in again.get_data(as_text=True)
    assert len(session.scalars(select(AuditEntry).where(
        AuditEntry.action == audit.SETTING_CHANGED)).all()) == 3


def test_reset_to_default_fills_the_default_and_saving_forgets_the_row(
        owner: FlaskClient, session: Session) -> None:
    settings.set(session, "textback.cooldown", "12h", dt.datetime.now(dt.UTC))
    session.commit()
    page = owner.get("/settings/textback").get_data(as_text=True)
    assert 'name="textback.cooldown" id="input-textback.cooldown" value="12h"' in page
    fields = form_of(page, "/settings/textback")
    answer = post(owner, "/settings/textback", [*fields, ("reset", "textback.cooldown")])
    page = answer.get_data(as_text=True)
    assert 'name="textback.cooldown" id="input-textback.cooldown" value="24h"' in page
    assert "Save to keep it" in page
    assert stored(session) == {"textback.cooldown": "12h"}  # not saved yet
    post(owner, "/settings/textback", form_of(page, "/settings/textback"))
    assert "textback.cooldown" not in stored(session)  # follows the default again
    assert settings.get(session, "textback.cooldown") == "24h"


def test_lists_one_per_line_and_a_checkbox(owner: FlaskClient, session: Session) -> None:
    page = owner.get("/settings/conversations").get_data(as_text=True)
    fields = dict(form_of(page, "/settings/conversations"))
    assert fields["keywords.optin"] == "START\nUNSTOP\nYES"
    data = [(k, v) for k, v in form_of(page, "/settings/conversations")]
    data = [(k, "STOP\nno más, gracias\n\nBASTA" if k == "keywords.optout" else v)
            for k, v in data]
    post(owner, "/settings/conversations", data)
    assert stored(session)["keywords.optout"] == ["STOP", "no más, gracias", "BASTA"]

    page = owner.get("/settings/textback").get_data(as_text=True)
    data = [(k, "2015550123\n+44 20 7946 0958" if k == "textback.exclusions" else v)
            for k, v in form_of(page, "/settings/textback")]
    data.append(("textback.text_fixed_lines", "1"))
    post(owner, "/settings/textback", data)
    assert stored(session)["textback.exclusions"] == ["+12015550123", "+442079460958"]
    assert stored(session)["textback.text_fixed_lines"] is True
    page = owner.get("/settings/textback").get_data(as_text=True)
    assert dict(form_of(page, "/settings/textback"))["textback.exclusions"] == \
        "+12015550123\n+442079460958"
    unticked = [(k, v) for k, v in form_of(page, "/settings/textback")
                if k != "textback.text_fixed_lines"]
    post(owner, "/settings/textback", unticked)
    assert settings.get(session, "textback.text_fixed_lines") is False


def test_follow_up_steps_are_added_and_removed(owner: FlaskClient, session: Session) -> None:
    page = owner.get("/settings/conversations").get_data(as_text=True)
    fields = form_of(page, "/settings/conversations")
    steps = [v for k, v in fields if k == "followup.templates"]
    assert steps == [*settings.DEFAULT_FOLLOWUPS, ""]  # and an empty box to add one
    new = ["First {business} follow-up.", "", "Third and last from {business}."]
    data = [(k, v) for k, v in fields if k != "followup.templates"]
    data += [("followup.templates", text) for text in new]
    post(owner, "/settings/conversations", data)
    assert settings.get(session, "followup.templates") == [new[0], new[2]]


# ------------------------------------------------------------------- hours


def test_a_split_shift_and_a_holiday_saved_in_the_grid_are_the_opening_times(
        owner: FlaskClient, session: Session) -> None:
    split = "08:00-12:00, 13:00-17:00"
    data = hours_form(mon=split, tue=split, wed=split, thu=split, fri=split,
                      sat="09:00-12:00", sun="22:00-02:00")
    data["holidays"] = "2026-12-25\n\n2026-12-24 "
    answer = post(owner, "/settings/hours", data)
    assert answer.status_code == 200 and "Saved: Weekly hours, Holidays." in answer.get_data(
        as_text=True)
    values = settings.all_values(session)
    assert values["hours.weekly"] == ("mon-fri 08:00-12:00,13:00-17:00; sat 09:00-12:00; "
                                      "sun 22:00-02:00")
    assert values["hours.holidays"] == ["2026-12-24", "2026-12-25"]
    hours = schedule.Schedule.from_settings(values)  # UTC: business.timezone default

    def at(day: int, clock: str) -> dt.datetime:
        hour, minute = map(int, clock.split(":"))
        return dt.datetime(2026, 11, day, hour, minute, tzinfo=dt.UTC)  # 2 Nov is a Monday

    assert hours.state(at(2, "11:59")) == "open"
    assert hours.state(at(2, "12:30")) == "closed"  # the lunch break
    assert hours.next_open(at(2, "12:30")) == at(2, "13:00")
    assert hours.state(at(7, "12:00")) == "closed"  # Saturday after 12
    assert hours.state(at(9, "01:30")) == "open"  # Sunday's shift runs past midnight
    assert hours.state(dt.datetime(2026, 12, 25, 10, tzinfo=dt.UTC)) == "holiday"
    assert hours.next_open(dt.datetime(2026, 12, 24, 10, tzinfo=dt.UTC)) == \
        dt.datetime(2026, 12, 26, 9, tzinfo=dt.UTC)  # Saturday after two holidays
    # what is stored reads back into the same grid, and sent back stores the same
    page = owner.get("/settings/hours").get_data(as_text=True)
    assert grid_of(page) == {"mon": (True, split), "tue": (True, split),
                             "wed": (True, split), "thu": (True, split),
                             "fri": (True, split), "sat": (True, "09:00-12:00"),
                             "sun": (True, "22:00-02:00")}
    again = post(owner, "/settings/hours", form_of(page, "/settings/hours"))
    assert "nothing had changed" in again.get_data(as_text=True)
    assert settings.get(session, "hours.weekly") == values["hours.weekly"]
    audit = session.scalars(select(AuditEntry).where(AuditEntry.target == "hours.weekly")).all()
    assert [a.details for a in audit] == [{"from": "", "to": values["hours.weekly"]}]


@pytest.mark.parametrize("weekly", [
    "", "mon-fri 08:00-17:00", "mon,wed,fri 07:30-11:00,11:30-15:45; sat-sun 10:00-14:00",
    "fri 22:00-02:00; sat 00:00-24:00", "mon-sun 09:00-17:00", "tue 00:00-24:00",
])
def test_any_stored_hours_read_back_into_the_same_grid(owner: FlaskClient, session: Session,
                                                       weekly: str) -> None:
    if weekly:
        settings.set(session, "hours.weekly", weekly, dt.datetime.now(dt.UTC))
        session.commit()
    page = owner.get("/settings/hours").get_data(as_text=True)
    if not weekly:  # open around the clock is every day 00:00-24:00
        assert set(grid_of(page).values()) == {(True, "00:00-24:00")}
    post(owner, "/settings/hours", form_of(page, "/settings/hours"))
    assert settings.get(session, "hours.weekly") == weekly
    assert stored(session).get("hours.weekly", "") == weekly
    assert session.scalars(select(AuditEntry).where(
        AuditEntry.target == "hours.weekly")).all() == []


def test_the_hours_page_says_whether_open_now_and_when_next(owner: FlaskClient,
                                                            session: Session,
                                                            now: dt.datetime) -> None:
    page = owner.get("/settings/hours").get_data(as_text=True)
    assert "Now: open. No hours are set, so you are open around the clock." in page
    today = now.date()
    settings.set(session, "hours.weekly", "mon-sun 00:00-24:00", now)
    settings.set(session, "hours.holidays", [today.isoformat()], now)
    session.commit()
    page = owner.get("/settings/hours").get_data(as_text=True)
    tomorrow = today + dt.timedelta(days=1)
    assert (f"Now: closed for a holiday — next opening tomorrow at 0:00 "
            f"({tomorrow:%a %d %b %Y} 00:00 UTC).") in page


# ----------------------------------------------------------------- previews


def test_the_preview_is_the_agents_own_rendering(owner: FlaskClient, session: Session) -> None:
    now = dt.datetime.now(dt.UTC)
    settings.set(session, "business.name", "Rapid Rooter", now)
    settings.set(session, "business.booking_link", "https://rr.example/book", now)
    session.commit()
    text = "Hi {first_name}, thanks for calling {business}! Book: {booking_link}"
    got = preview(owner, "templates.business_hours", text).get_json()
    body = templates.render(text, {"first_name": "Jane", "business": "Rapid Rooter",
                                   "booking_link": "https://rr.example/book"})
    assert body == "Hi Jane, thanks for calling Rapid Rooter! Book: https://rr.example/book"
    info = templates.segments(body)
    assert got == {"text": body, "encoding": "GSM-7", "segments": 1, "units": info.units,
                   "per_segment": 160, "characters": len(body), "error": None}
    # an emoji makes it UCS-2: 70 units a text, 67 a part, the emoji two units
    text = "Hi {caller_name} 👋 " + "x" * 60
    got = preview(owner, "templates.voicemail", text).get_json()
    body = "Hi Jane Smith 👋 " + "x" * 60
    info = templates.segments(body)
    assert (got["text"], got["encoding"], got["segments"], got["units"]) == (
        body, "UCS-2", 2, info.units)
    assert (info.encoding, info.segments) == ("UCS-2", 2)
    # a mistake is named, in words (the key is beside the field), and the rest still renders
    got = preview(owner, "templates.business_hours", "Hi {firstname}. Call {business}.")
    data = got.get_json()
    assert data["error"].startswith("Unknown merge field {firstname}")
    assert "did you mean {first_name}?" in data["error"]
    assert data["text"] == "Call Rapid Rooter."
    assert preview(owner, "templates.help", "").get_json()["error"] == \
        "The template is empty"
    # alerts to staff carry the customer and the message
    got = preview(owner, "templates.reply_alert", "From {customer}: {message}").get_json()
    assert got["error"] is None and got["text"].startswith("From +1")
    # follow-up steps are named by their own number
    got = preview(owner, "followup.templates", "Hi {nme}.", step=2).get_json()
    assert got["error"].startswith("Step 3: unknown merge field {nme}")
    assert preview(owner, "business.name", "x").status_code == 400  # not a template


def test_the_closed_text_preview_says_when_you_reopen(owner: FlaskClient,
                                                      session: Session,
                                                      now: dt.datetime) -> None:
    settings.set(session, "hours.weekly", "mon-sun 00:00-24:00", now)
    settings.set(session, "hours.holidays", [now.date().isoformat()], now)
    session.commit()
    got = preview(owner, "templates.after_hours", "Closed. We reopen {next_open}.").get_json()
    hours = schedule.Schedule.from_settings(settings.all_values(session))
    opening = hours.next_open(now)
    assert opening is not None
    assert got["text"] == f"Closed. We reopen {policy.describe_opening(opening, now, hours)}."
    assert got["text"] == "Closed. We reopen tomorrow at 0:00."


def test_the_page_shows_the_same_preview_before_any_typing(owner: FlaskClient,
                                                           session: Session) -> None:
    page = owner.get("/settings/textback").get_data(as_text=True)
    block = page.split('data-preview-for="templates.voicemail"')[1].split("</div>")[0]
    shown = html.unescape(re.search(r'class="preview-text">([^<]*)<', block).group(1))
    expected = preview(owner, "templates.voicemail", settings.DEFAULT_VOICEMAIL).get_json()
    # no booking link is set, so the sentence naming it drops out
    assert shown == expected["text"] == templates.render(
        settings.DEFAULT_VOICEMAIL, {"first_name": "Jane", "business": "us"})
    assert shown.startswith("Hi Jane, ") and "{" not in shown
    assert f'{expected["characters"]} characters · 1 SMS (GSM-7)' in block
    assert "{first_name}" in page and "the caller&#39;s first name" in page  # field help


def test_an_ab_variant_gets_its_own_field_and_preview(owner: FlaskClient, session: Session,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from web.settings import fields as pages

    if "templates.voicemail_b" not in settings.SPECS:
        base = settings.SPECS["templates.voicemail"]
        monkeypatch.setitem(settings.SPECS, "templates.voicemail_b", settings.Spec(
            "templates.voicemail_b", base.default, "variant B of templates.voicemail",
            base.validator))
    pages.layout.cache_clear()
    try:
        page = owner.get("/settings/textback").get_data(as_text=True)
        keys = re.findall(r'<code class="key">([^<]+)</code>', page)
        assert keys.index("templates.voicemail_b") == keys.index("templates.voicemail") + 1
        assert 'data-preview-for="templates.voicemail_b"' in page
        got = preview(owner, "templates.voicemail_b", "B: {business}.").get_json()
        assert got["text"] == "B: us." and got["error"] is None
    finally:
        pages.layout.cache_clear()


def test_hostile_input_is_shown_escaped(owner: FlaskClient, session: Session) -> None:
    hostile = '"><script>alert(1)</script>'
    answer = post(owner, "/settings/business", {
        "business.name": hostile, "business.timezone": "UTC", "business.booking_link": "",
        "business.average_job_value": "0", "business.close_rate": "<img src=x onerror=1>"})
    page = answer.get_data(as_text=True)
    assert answer.status_code == 400
    assert "<script>alert(1)" not in page and "<img src=x" not in page
    assert 'value="&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in page
    answer = post(owner, "/settings/hours", hours_form(mon="<b>8</b>-9"))
    assert "<b>8</b>" not in answer.get_data(as_text=True)
    answer = post(owner, "/settings/textback", {"templates.business_hours": hostile})
    page = answer.get_data(as_text=True)
    assert "<script>alert(1)" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;</p>" in page  # the rendered preview too


# --------------------------------------------------------------- transports


def _status(session: Session, name: str, age: dt.timedelta, now: dt.datetime | None = None,
            **fields: Any) -> None:
    session.add(TransportStatus(name=name, updated_at=(now or dt.datetime.now(dt.UTC)) - age,
                                **{"state": "up", **fields}))


def test_the_transports_panel_shows_state_signal_errors_queue_and_silence(
        owner: FlaskClient, session: Session, now: dt.datetime) -> None:
    _status(session, "gsm", dt.timedelta(seconds=12), now, detail="SIMCOM SIM7600 on /dev/ttyUSB2",
            signal_dbm=-97, operator="T-Mobile", last_error="+CMS ERROR: 38 network out of order",
            last_error_at=now - dt.timedelta(hours=2))
    _status(session, "sip", dt.timedelta(minutes=5), now, state="down",
            detail="AMI login failed: <b>denied</b>")
    for minutes in (10, 3, 1):
        session.add(Message(direction="out", kind="textback", number="+12015550123", body="x",
                            status="queued", created_at=now - dt.timedelta(minutes=minutes),
                            updated_at=now))
    session.add(Message(direction="out", kind="textback", number="+12015550123", body="x",
                        status="sent", created_at=now - dt.timedelta(hours=5), updated_at=now))
    session.commit()
    page = owner.get("/settings/transports").get_data(as_text=True)
    gsm = page.split('data-transport="gsm"')[1].split("</article>")[0]
    sip = page.split('data-transport="sip"')[1].split("</article>")[0]
    assert "state-up" in gsm and "-97 dBm (weak)" in gsm and "T-Mobile" in gsm
    assert "+CMS ERROR: 38 network out of order" in gsm and "not reported" not in gsm
    assert re.search(r"Reported</dt><dd>1\d s ago", gsm)
    assert "&lt;b&gt;denied&lt;/b&gt;" in sip
    assert "The agent has not reported for 5 min: is it running? Its last report said down." \
        in sip
    # an old report is not shown as the state now
    assert "state-down" not in sip and '<span class="badge state-unknown">not reporting' in sip
    assert "Queue: <strong>3</strong> messages waiting, the oldest for 10 min." in page
    panel = owner.get("/settings/transports/panel").get_data(as_text=True)
    assert "<html" not in panel and "-97 dBm (weak)" in panel


def test_configured_transports_without_a_report_are_flagged(owner: FlaskClient, app: Flask,
                                                            session: Session) -> None:
    app.config["TEXTBACK_CONFIG"] = SimpleNamespace(sms=SimpleNamespace(transports=("gsm",
                                                                                    "sip")))
    _status(session, "sip", dt.timedelta(seconds=3))
    session.commit()
    page = owner.get("/settings/transports").get_data(as_text=True)
    assert page.index('data-transport="gsm"') < page.index('data-transport="sip"')
    gsm = page.split('data-transport="gsm"')[1].split("</article>")[0]
    assert "has not reported on this transport yet: is it running?" in gsm
    assert '<option value="gsm"' in page and '<option value="sip"' in page


def test_send_test_queues_one_text_pinned_to_the_chosen_transport(owner: FlaskClient,
                                                                  session: Session) -> None:
    _status(session, "sip", dt.timedelta(seconds=3))
    _status(session, "gsm", dt.timedelta(seconds=3))
    session.commit()
    answer = post(owner, "/settings/transports/test", {
        "number": "(201) 555-0123", "text": "  Test ✓ from the office  ", "transport": "gsm"})
    page = answer.get_data(as_text=True)
    assert "Test text queued for +12015550123 through the GSM modem (1 SMS, UCS-2)" in page
    message = session.scalars(select(Message)).one()
    info = templates.segments("Test ✓ from the office")
    assert (message.kind, message.status, message.transport, message.number, message.body,
            message.idempotency_key, message.encoding, message.segments, message.direction) == (
        "test", "queued", "gsm", "+12015550123", "Test ✓ from the office", None,
        info.encoding, info.segments, "out")
    tests = page.split("Recent test texts")[1]
    assert "+12015550123" in tests and "status-queued" in tests and "gsm" in tests
    message.status = "sent"  # the agent sent it: the panel the page polls shows it
    session.commit()
    assert "status-sent" in owner.get("/settings/transports/panel").get_data(as_text=True)


def test_send_test_refuses_bad_numbers_opted_out_numbers_and_unknown_transports(
        owner: FlaskClient, session: Session) -> None:
    _status(session, "sip", dt.timedelta(seconds=3))
    session.add(Contact(number="+12015550123", opted_out=True, created_at=dt.datetime.now(
        dt.UTC), tags=[]))
    session.commit()
    answer = post(owner, "/settings/transports/test", {"number": "12345", "text": "hi",
                                                       "transport": "sip"})
    page = answer.get_data(as_text=True)
    assert answer.status_code == 400
    assert "12345 is not a valid phone number" in page and 'value="12345"' in page
    answer = post(owner, "/settings/transports/test", {"number": "+1 201 555 0123",
                                                       "text": "hi", "transport": "sip"})
    assert answer.status_code == 400
    assert "+12015550123 has opted out of texts (it replied STOP)" in answer.get_data(
        as_text=True)
    answer = post(owner, "/settings/transports/test", {"number": "+12015550124",
                                                       "text": "hi", "transport": "fax"})
    assert answer.status_code == 400 and "Choose a transport" in answer.get_data(as_text=True)
    answer = post(owner, "/settings/transports/test", {"number": "+12015550124",
                                                       "text": "   ", "transport": "sip"})
    assert answer.status_code == 400 and "Write the text to send" in answer.get_data(
        as_text=True)
    assert session.scalars(select(Message)).all() == []


def test_routing_shows_per_did_overrides_set_with_the_cli(owner: FlaskClient,
                                                          session: Session) -> None:
    now = dt.datetime.now(dt.UTC)
    settings.set(session, "routing.did.+15550000002.ring_group", ["PJSIP/201"], now)
    session.commit()
    page = owner.get("/settings/routing").get_data(as_text=True)
    assert "<code>routing.did.+15550000002.ring_group</code> = <code>[&#34;PJSIP/201&#34;]" \
        in page
    data = [(k, "PJSIP/desk\nPJSIP/desk2" if k == "routing.ring_group" else v)
            for k, v in form_of(page, "/settings/routing")]
    post(owner, "/settings/routing", data)
    assert stored(session) == {"routing.did.+15550000002.ring_group": ["PJSIP/201"],
                               "routing.ring_group": ["PJSIP/desk", "PJSIP/desk2"]}


def test_resetting_the_hours_shows_open_around_the_clock_until_saved(
        owner: FlaskClient, session: Session) -> None:
    settings.set(session, "hours.weekly", "mon-fri 08:00-17:00", dt.datetime.now(dt.UTC))
    session.commit()
    page = owner.get("/settings/hours").get_data(as_text=True)
    answer = post(owner, "/settings/hours", [*form_of(page, "/settings/hours"),
                                             ("reset", "hours.weekly")])
    page = answer.get_data(as_text=True)
    assert set(grid_of(page).values()) == {(True, "00:00-24:00")}
    assert settings.get(session, "hours.weekly") == "mon-fri 08:00-17:00"
    post(owner, "/settings/hours", form_of(page, "/settings/hours"))
    assert "hours.weekly" not in stored(session)
