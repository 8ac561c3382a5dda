"""Every page for everyone, in a real browser: accessible (axe-core finds no serious or
critical WCAG 2.1 AA problem on any page, signed in as an admin and as the front desk,
with a morning's data), in one time zone, and sessions that really end.

axe-core is the npm package axe-core, vendored at tests/browser/axe.min.js (its version
is in the file's first line); nothing is fetched while the tests run. One app (waitress
on a loopback port, `textback init`'s SQLite database) and one Chromium for the module.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select
from test_browser import PASSWORD, seed_morning

from agent import config as configuration
from agent.messages import inbox
from agent.privacy import erasure
from agent.rules import settings
from agent.store.db import make_engine, sessions
from agent.store.models import Contact, Message, TransportStatus

from browsing import DESKTOP, PHONE, add_owner_and_sam, init_site, serve, sign_in

pytestmark = pytest.mark.browser

AXE = Path(__file__).parent / "browser" / "axe.min.js"
# a time of day followed by UTC: every page shows the business's own clock instead
UTC_TIME = re.compile(r"\d{1,2}:\d{2}(:\d{2})?\s*UTC")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """`textback init`, an admin and a front-desk account, a busy morning (texts, calls,
    a booking), an erased customer, both transports reporting, and the UI served."""
    root = tmp_path_factory.mktemp("a11y")
    config = init_site(root)
    cfg = configuration.load(config)
    engine = make_engine(cfg.database.url)
    now = dt.datetime.now(dt.UTC)
    with sessions(engine)() as session:
        people = add_owner_and_sam(session, now, PASSWORD, extensions=("101", "102"))
        for user in people.values():
            user.last_login_at = now - dt.timedelta(hours=3)
        settings.set(session, "business.name", "Rapid Rooter Plumbing", now)
        settings.set(session, "business.timezone", "America/Chicago", now)
        settings.set(session, "hours.weekly", "mon-fri 8-5; sat 9-12", now)
        session.add(TransportStatus(name="gsm", state="up", updated_at=now, signal_dbm=-79,
                                    operator="T-Mobile", detail="SIM7600 on /dev/ttyUSB2"))
        session.add(TransportStatus(name="sip", state="up",
                                    updated_at=now - dt.timedelta(minutes=7)))
        session.commit()
        seed_morning(session, now, {name: user.id for name, user in people.items()})
        gone = Contact(number="+13125550999", name="Erin Erased", created_at=now, tags=[])
        session.add(gone)
        session.flush()
        erasure.erase(session, gone, now, "owner")
        session.commit()
        ids = {contact.name: contact.id for contact in session.scalars(select(Contact))}
        ids["erased"] = gone.id
    with serve(cfg) as base:
        yield {"base": base, "engine": engine, "ids": ids}
    engine.dispose()


def _pages(ids: dict[str, int], admin: bool) -> list[str]:
    maria = ids["Maria Lopez"]
    pages = ["/dashboard", "/dashboard?period=7d", "/inbox", "/inbox?view=mine",
             f"/inbox/{maria}", f"/inbox/{ids['Chloé Martin']}", "/contacts",
             "/contacts?q=555", f"/contacts/{maria}", "/calls", "/calls?missed=1",
             "/account", "/inbox?q=Maria", "/no-such-page"]
    if admin:
        pages += [f"/contacts/{maria}/erase", f"/contacts/{ids['erased']}", "/users",
                  "/users/sam", "/audit", "/settings/transports",
                  *(f"/settings/{slug}" for slug in ("business", "hours", "textback",
                                                     "conversations", "people", "routing",
                                                     "experiments")),
                  "/inbox/saved-replies"]
    else:
        pages += ["/users"]  # refused: the error page must be accessible too
    return pages


def _axe(tab: Any) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now."""
    if not tab.evaluate("() => typeof window.axe === 'object'"):
        tab.evaluate(AXE.read_text())  # as the page's own script would, CSP untouched
    found = tab.evaluate("""async () => {
        const result = await axe.run(document, {resultTypes: ["violations"]});
        return result.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
            nodes: v.nodes.slice(0, 3).map(n => n.target.join(" ") + " " +
                                           (n.failureSummary || ""))}));
    }""")
    return [v for v in found if v["impact"] in ("serious", "critical")]


@pytest.fixture
def signed_in(chromium: Any, site: dict[str, Any]) -> Iterator[Any]:
    """A function: a new tab signed in as `username` (closed after the test)."""
    contexts: list[Any] = []

    def open_as(username: str, landing: str = "**/dashboard") -> Any:
        context = chromium.new_context(viewport=DESKTOP)
        contexts.append(context)
        tab = context.new_page()
        sign_in(tab, site["base"] + "/", username, PASSWORD, landing)
        return tab

    yield open_as
    for context in contexts:
        context.close()


@pytest.mark.parametrize("username", ["owner", "sam"])
def test_every_page_passes_axe_and_shows_one_time_zone(
        signed_in: Any, site: dict[str, Any], username: str) -> None:
    tab = signed_in(username)
    problems = {}
    for path in _pages(site["ids"], admin=username == "owner"):
        tab.goto(site["base"] + path)
        found: list[Any] = _axe(tab)
        if "Times in America/Chicago" not in tab.locator("header.top").inner_text():
            found.append("the header does not name the time zone")
        text = tab.locator("main").inner_text()
        if clash := UTC_TIME.search(text):
            found.append(f"a time in UTC: {clash.group()}")
        empty_headers = tab.locator("th").evaluate_all(
            "cells => cells.filter(c => !c.textContent.trim()).length")
        if empty_headers:
            found.append(f"{empty_headers} empty table headers")
        unnamed_navs = tab.locator("nav:not([aria-label])").count()
        if unnamed_navs:
            found.append(f"{unnamed_navs} unlabelled nav landmarks")
        if tab.locator("main#main").count() != 1 or tab.locator("a.skip").count() != 1:
            found.append("no skip link to the main content")
        if "Times in" in text:
            found.append("the zone is named again on the page")  # once, in the header
        if found:
            problems[path] = found
    if username == "sam":  # the front desk on a phone: tables become cards, and so on
        tab.set_viewport_size(PHONE)
        for path in ("/inbox", f"/inbox/{site['ids']['Maria Lopez']}", "/calls", "/contacts"):
            tab.goto(site["base"] + path)
            if found := _axe(tab):
                problems[f"{path} (phone)"] = found
    assert not problems, "\n".join(f"{path}: {found}" for path, found in problems.items())


def test_the_sign_in_page_passes_axe(chromium: Any, site: dict[str, Any]) -> None:
    context = chromium.new_context(viewport=DESKTOP)
    tab = context.new_page()
    tab.goto(site["base"] + "/login")
    assert _axe(tab) == []
    context.close()


def test_a_skip_link_leads_past_the_menu_to_the_page(signed_in: Any) -> None:
    tab = signed_in("sam")
    tab.keyboard.press("Tab")
    skip = tab.locator(":focus")
    assert skip.inner_text() == "Skip to content" and skip.is_visible()
    tab.keyboard.press("Enter")
    assert tab.evaluate("() => document.activeElement.id") == "main"
    assert tab.locator("nav[aria-label=Main]").count() == 1


def test_a_new_text_is_announced_to_screen_readers(signed_in: Any,
                                                   site: dict[str, Any]) -> None:
    maria = site["ids"]["Maria Lopez"]
    tab = signed_in("sam")
    tab.goto(f"{site['base']}/inbox/{maria}")
    live = tab.locator("#announce")
    assert live.get_attribute("aria-live") == "polite" and live.inner_text() == ""
    now = dt.datetime.now(dt.UTC)
    with sessions(site["engine"])() as session:
        contact = session.get(Contact, maria)
        assert contact is not None
        session.add(Message(direction="in", kind="reply", number=contact.number,
                            body="The leak is getting worse", status="received",
                            contact_id=maria, created_at=now, updated_at=now))
        inbox.customer_activity(contact, now)
        session.commit()
    # the page hears of it (pushed, or its poll): the text is read out and drawn
    tab.wait_for_function("() => document.getElementById('announce').textContent"
                          ".includes('The leak is getting worse')", timeout=12_000)
    tab.wait_for_function("() => document.getElementById('timeline').textContent"
                          ".includes('The leak is getting worse')", timeout=5_000)


def test_the_call_log_opens_the_conversation_and_calls_back(signed_in: Any,
                                                            site: dict[str, Any]) -> None:
    tab = signed_in("sam")
    tab.goto(site["base"] + "/calls?q=Lopez")
    row = tab.locator("table.calls tbody tr", has_text="Maria Lopez").first
    row.get_by_role("button", name=re.compile("Call back")).click()
    tab.wait_for_url("**/calls?q=Lopez")
    assert "your desk phone (102) rings" in tab.locator(".flash").inner_text()
    tab.locator("table.calls tbody tr", has_text="Maria Lopez").first.locator(
        "a.number").click()
    tab.wait_for_url(f"**/inbox/{site['ids']['Maria Lopez']}")
    assert "Water heater is leaking" in tab.locator("#timeline").inner_text()
    assert "Last call back: pending" in tab.locator(".actions").inner_text()


def test_a_cookie_copied_before_sign_out_opens_nothing_after_it(
        chromium: Any, signed_in: Any, site: dict[str, Any]) -> None:
    tab = signed_in("owner")
    copied = tab.context.cookies()
    assert any(cookie["name"] == "session" for cookie in copied)
    tab.click("text=Sign out")
    tab.wait_for_url("**/login")
    thief = chromium.new_context(viewport=DESKTOP)
    try:
        thief.add_cookies(copied)
        stolen = thief.new_page()
        for path in ("/dashboard", "/users"):
            stolen.goto(site["base"] + path)
            assert urlsplit(stolen.url).path == "/login", path
    finally:
        thief.close()


# as a browser sends them (tests/test_web_auth.py tries many more through the app)
@pytest.mark.parametrize("target", ["/%09/evil.example/x", "/\\evil.example",
                                    "/%2F%2Fevil.example"])
def test_a_hostile_next_stays_on_the_site(chromium: Any, site: dict[str, Any],
                                          target: str) -> None:
    context = chromium.new_context(viewport=DESKTOP)
    tab = context.new_page()
    tab.goto(f"{site['base']}/login?next={target}")
    tab.fill("input[name=username]", "sam")
    tab.fill("input[name=password]", PASSWORD)
    tab.click("button[type=submit]")
    tab.wait_for_load_state()
    assert urlsplit(tab.url).netloc == urlsplit(site["base"]).netloc, tab.url
    assert urlsplit(tab.url).path == "/dashboard", tab.url
    context.close()

