"""The settings pages in a real browser (Debian's Chromium driven by Playwright, the app
served by waitress on a database made by `textback init`): the hours grid saved by
clicking, template previews and segment counters updating while typing, a test text
queued from the transports page, and a screenshot of every section (desktop and phone)
in tests/browser/screenshots/ for a person to look at."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from agent import config as configuration
from agent.people import accounts
from agent.rules import schedule, settings
from agent.store.db import make_engine, sessions
from agent.store.models import Message, TransportStatus

from browsing import init_site, serve, shoot, signed_in_tab, site_session

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery"
SECTIONS = ("business", "hours", "textback", "conversations", "people", "routing",
            "transports")



@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """`textback init` with a modem and the trunk, an admin, what the agent last
    reported about both transports, and the UI served by waitress."""
    root = tmp_path_factory.mktemp("settings-site")
    config = init_site(root)
    text = config.read_text()
    assert 'transports = ["sip"]' in text
    config.write_text(text.replace('transports = ["sip"]', 'transports = ["gsm", "sip"]', 1))
    cfg = configuration.load(config)
    now = dt.datetime.now(dt.UTC)
    with site_session(cfg.database.url) as session:
        accounts.add_user(session, now, username="owner", password=PASSWORD, role="admin",
                          actor="cli")
        settings.set(session, "business.name", "Rapid Rooter Plumbing", now)
        settings.set(session, "business.timezone", "America/Chicago", now)
        settings.set(session, "business.booking_link", "https://rapidrooter.example/book", now)
        session.add(TransportStatus(name="gsm", state="up", updated_at=now,
                                    detail="SIMCOM SIM7600G-H on /dev/ttyUSB2, network: home",
                                    signal_dbm=-79, operator="T-Mobile"))
        session.add(TransportStatus(name="sip", state="down",
                                    updated_at=now - dt.timedelta(minutes=7),
                                    detail="AMI login failed: authentication rejected",
                                    last_error="AMI MessageSend: 403 Forbidden",
                                    last_error_at=now - dt.timedelta(minutes=9)))
        session.commit()
    with serve(cfg) as base:
        yield base, cfg.database.url


@pytest.fixture
def page(chromium: Any, site: tuple[str, str]) -> Iterator[Any]:
    """A signed-in tab."""
    base, _url = site
    with signed_in_tab(chromium, base + "/settings", "owner", PASSWORD,
                       "**/settings/business") as tab:
        yield tab


def stored(url: str, key: str) -> Any:
    engine = make_engine(url)
    try:
        with sessions(engine)() as session:
            return settings.get(session, key)
    finally:
        engine.dispose()


def test_an_admin_sets_a_split_shift_and_a_holiday_in_the_grid(page: Any,
                                                               site: tuple[str, str]) -> None:
    tab = page
    _base, url = site
    tab.click(".settings-menu >> text=Hours")
    assert tab.locator("#hours-now").inner_text().startswith("Now: open")
    for day in ("mon", "tue", "wed", "thu", "fri"):
        tab.fill(f"input[name=shifts_{day}]", "08:00-12:00, 13:00-17:00")
    tab.fill("input[name=shifts_sat]", "09:00-12:00")
    tab.uncheck("input[name=open_sun]")
    assert "closed" in (tab.locator(".day[data-day=sun]").get_attribute("class") or "")
    tab.fill("#add-holiday", "2026-12-25")
    tab.click("#add-holiday-button")
    tab.fill("#add-holiday", "2026-12-24")
    tab.click("#add-holiday-button")
    assert tab.input_value("textarea[name=holidays]") == "2026-12-24\n2026-12-25"
    tab.click("text=Save hours")
    assert "Saved: Weekly hours, Holidays." in tab.locator(".flash").inner_text()
    weekly = "mon-fri 08:00-12:00,13:00-17:00; sat 09:00-12:00"
    assert stored(url, "hours.weekly") == weekly
    assert stored(url, "hours.holidays") == ["2026-12-24", "2026-12-25"]
    hours = schedule.Schedule(weekly, ["2026-12-25"], "America/Chicago")
    lunch = dt.datetime(2026, 11, 2, 12, 30, tzinfo=hours.zone)  # a Monday
    assert hours.state(lunch) == "closed"
    assert hours.next_open(lunch) == dt.datetime(2026, 11, 2, 13, tzinfo=hours.zone)
    # the page reads back the same grid, and says what the stored hours mean now
    assert tab.input_value("input[name=shifts_wed]") == "08:00-12:00, 13:00-17:00"
    assert not tab.is_checked("input[name=open_sun]")
    assert tab.locator("#hours-now").inner_text().startswith("Now: ")
    assert weekly in tab.locator("#setting-hours\\.weekly").inner_text()

    # a typo is refused next to its day, and nothing is saved
    tab.fill("input[name=shifts_tue]", "8:5-12")
    tab.click("text=Save hours")
    tuesday = tab.locator(".day[data-day=tue] .field-error").inner_text()
    assert tuesday.startswith("Tuesday: '8:5'") and "hours.weekly" not in tuesday  # in words
    assert tab.input_value("input[name=shifts_tue]") == "8:5-12"
    assert stored(url, "hours.weekly") == weekly
    shoot(tab, "settings-hours-error")


def test_template_preview_and_counter_follow_the_typing(page: Any) -> None:
    tab = page
    tab.click(".settings-menu >> text=Text-back")
    box = "textarea[name='templates.business_hours']"
    preview = ".preview[data-preview-for='templates.business_hours']"
    tab.fill(box, "Hi {first_name}, thanks for calling {business}. Book: {booking_link}")
    tab.wait_for_function(
        "s => document.querySelector(s + ' .preview-text').textContent === "
        "'Hi Jane, thanks for calling Rapid Rooter Plumbing. Book: "
        "https://rapidrooter.example/book'", arg=preview)
    assert "1 SMS (GSM-7)" in tab.locator(f"{preview} .counter").inner_text()
    tab.fill(box, "Hi {first_name} 👋 " + "sorry we missed you! " * 3)
    tab.wait_for_function(
        "s => document.querySelector(s + ' .counter').textContent.includes('UCS-2')",
        arg=preview)
    counter = tab.locator(f"{preview} .counter").inner_text()
    assert counter.startswith("72 characters · 2 SMS (UCS-2)"), counter
    # that text does not name the business, which a first text must: said while typing
    tab.wait_for_function(
        "s => document.querySelector(s + ' .preview-error').textContent"
        ".includes('must name the business')", arg=preview)
    tab.fill(box, "Hi {firstname}. Call {business}.")
    tab.wait_for_function(
        "s => document.querySelector(s + ' .preview-error').textContent.toLowerCase()"
        ".includes('unknown merge field')", arg=preview)
    error = tab.locator(f"{preview} .preview-error").inner_text()
    assert "Unknown merge field {firstname}" in error and "{first_name}" in error
    assert tab.locator(f"{preview} .preview-text").inner_text() == \
        "Call Rapid Rooter Plumbing."
    shoot(tab, "settings-textback-typing")
    tab.click("text=Save text-back")
    assert "Nothing was saved" in tab.locator(".flash.error").inner_text()
    assert "Unknown merge field" in tab.locator(
        "#setting-templates\\.business_hours .field-error").first.inner_text()


def test_a_test_text_is_queued_from_the_transports_page(page: Any,
                                                        site: tuple[str, str]) -> None:
    tab = page
    _base, url = site
    tab.click(".settings-menu >> text=Transports")
    gsm = tab.locator("[data-transport=gsm]").inner_text()
    assert "-79 dBm (good)" in gsm and "T-Mobile" in gsm
    sip = tab.locator("[data-transport=sip]").inner_text()
    # reported 7 min before the site was made; the tests before this one took some time
    assert re.search(r"has not reported for [789] min: is it running\?", sip), sip
    tab.fill("#test-number", "(312) 555-0147")
    tab.fill("#test-text", "Test from the office ✓")
    assert tab.locator("#test-counter").inner_text() == "22 characters · 1 SMS (UCS-2)"
    tab.select_option("#test-transport", "gsm")
    tab.click("text=Queue the test text")
    assert "Test text queued for +13125550147 through the GSM modem" in tab.locator(
        ".flash").inner_text()
    row = tab.locator("table.tests tbody tr").first.inner_text()
    assert "+13125550147" in row and "queued" in row and "gsm" in row
    engine = make_engine(url)
    with sessions(engine)() as session:
        message = session.scalars(select(Message).where(Message.kind == "test")).one()
        assert (message.transport, message.status) == ("gsm", "queued")
        message.status = "sent"  # what the agent does next
        session.commit()
    engine.dispose()
    tab.wait_for_function(  # the panel polls every 5 s
        "() => document.querySelector('table.tests .status-sent') !== null", timeout=15000)


def test_every_section_has_a_screenshot(page: Any) -> None:
    tab = page
    for slug in SECTIONS:
        tab.click(f".settings-menu >> a[href='/settings/{slug}']")
        tab.wait_for_url(f"**/settings/{slug}")
        assert tab.locator("h1").count() == 1
        shoot(tab, f"settings-{slug}")
