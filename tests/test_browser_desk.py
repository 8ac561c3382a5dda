"""The front desk on a busy morning, in Debian's Chromium against the real thing: the lab
Asterisk, `textback agent` in its own process, `textback web`'s waitress serving the
live stream. A real missed call and the customer's reply show up in an open inbox
within 2 s, with a sound-and-notification alert, also while the tab is in the
background; the two panes fit a 1366×768 laptop with every thread action in view and a
390×844 phone with the reply box and actions reachable; search finds a fragment of a
text; a note never reaches the trunk; a saved reply is picked with "/" and sent with
Ctrl+Enter; Call back says so when the agent is stopped. The push latency (a row
written by another process → the event in the page) is measured and printed.

window.Notification is replaced in the page by a recorder (headless Chromium shows no
notifications); the tab's visibility is emulated as hidden with the page lifecycle's
own event."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import socket
import sqlite3
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from agent import config as configuration
from agent.lab.agentproc import AgentProcess, wait_until
from agent.lab.pbx import LabPbx
from agent.lab.trunk import TrunkPeer

from browsing import PHONE, SHOTS, lab_site_config, serve, sign_in, texts_to

pytestmark = [pytest.mark.lab, pytest.mark.browser]

PORT_BASE = int(os.environ.get("TEXTBACK_TEST_DESK_PORT_BASE", "42600"))
DID = "+15550000100"  # rings desk for a few seconds (lab dialplan)
PASSWORD = "front desk all day"
LAPTOP = {"width": 1366, "height": 768}
ARRIVES_WITHIN_MS = 2000

_callers = (f"+1212555{n:04d}" for n in itertools.count(8101))

# headless Chromium shows no notifications: record what the page asks for instead, and
# let a test say the tab is in the background (document.visibilityState "hidden")
RECORDER = """
window.__notified = [];
window.Notification = function (title, options) {
  window.__notified.push({title: title, body: (options || {}).body, at: Date.now()});
  this.close = function () {};
};
window.Notification.permission = "granted";
window.Notification.requestPermission = function () { return Promise.resolve("granted"); };
window.__hidden = false;
Object.defineProperty(Document.prototype, "visibilityState",
  {get: function () { return window.__hidden ? "hidden" : "visible"; }, configurable: true});
Object.defineProperty(Document.prototype, "hidden",
  {get: function () { return window.__hidden; }, configurable: true});
"""
HIDE = "() => { window.__hidden = true; document.dispatchEvent(new Event('visibilitychange')); }"


class Site:
    def __init__(self, base: str, database: Path, agent: AgentProcess,
                 cfg: configuration.Config) -> None:
        self.base, self.database, self.agent, self.cfg = base, database, agent, cfg


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, lab: LabPbx) -> Iterator[Site]:
    work = tmp_path_factory.mktemp("desk")
    config, cfg = lab_site_config(lab, work, PASSWORD)
    database = Path(str(make_url(cfg.database.url).database))
    agent = AgentProcess(config, work / "agent.log")
    agent.start()
    try:
        with serve(cfg) as base:
            yield Site(base, database, agent, cfg)
    finally:
        if agent.proc is not None and agent.proc.poll() is None:
            assert agent.stop() == 0, agent.log()[-3000:]


@pytest.fixture(scope="module")
def laptop(chromium: Any, site: Site) -> Iterator[Any]:
    context = chromium.new_context(viewport=LAPTOP)
    context.add_init_script(RECORDER)
    page = context.new_page()
    sign_in(page, site.base + "/login", "frontdesk", PASSWORD, "**/dashboard")
    yield page
    context.close()


def _row(page: Any, number: str) -> Any:
    return page.locator(f'#inbox-list li.conversation:has(.number[title="{number}"])')


def _in_view(page: Any, selector: str) -> bool:
    """Entirely inside the window as it is, with nothing scrolled."""
    box = page.locator(selector).first.bounding_box()
    size = page.viewport_size
    return (box is not None and box["y"] >= 0 and box["x"] >= 0
            and box["y"] + box["height"] <= size["height"]
            and box["x"] + box["width"] <= size["width"])


def test_a_missed_call_and_a_reply_reach_a_background_inbox_with_alerts(
        lab: LabPbx, trunk: TrunkPeer, site: Site, laptop: Any) -> None:
    page = laptop
    page.goto(site.base + "/inbox")
    page.wait_for_function("() => window.textbackLive.mode === 'stream'")
    page.evaluate(HIDE)  # the front desk is in another tab
    caller = next(_callers)
    lab.call(DID, caller_id=caller, caller_name="Maria Lopez", from_trunk=True, phone="ring")
    db = sqlite3.connect(site.database)
    written = wait_until("the missed call's row", lambda: db.execute(
        "SELECT id FROM contacts WHERE number = ? AND last_message_at IS NOT NULL",
        (caller,)).fetchone(), timeout=30)
    seen_at = time.time()
    assert written
    _row(page, caller).wait_for(timeout=ARRIVES_WITHIN_MS)
    shown_after = time.time() - seen_at
    assert page.evaluate("document.visibilityState") == "hidden"
    page.wait_for_function(
        "() => window.__notified.some(n => n.title === 'Missed call from Maria Lopez')",
        timeout=ARRIVES_WITHIN_MS)
    assert page.title().startswith("(1) ")  # the title counts, in the background too
    assert page.locator("link[rel=icon]").get_attribute("href").startswith("data:image/png")
    assert 'class="badge new"' in _row(page, caller).inner_html()

    # the desk opens the conversation beside the list, then goes to another tab again
    _row(page, caller).locator("a.open").click()
    page.wait_for_url("**/inbox/*")
    page.wait_for_function("() => window.textbackLive.mode === 'stream'")
    page.evaluate(HIDE)
    trunk.send_message(DID, caller, "Can you come out Thursday morning for the boiler?")
    wait_until("the customer's text in the database", lambda: db.execute(
        "SELECT id FROM messages WHERE number = ? AND direction = 'in'", (caller,)).fetchone())
    page.wait_for_function(
        "() => window.__notified.some(n => n.title === 'New text from Maria Lopez' && "
        "n.body.includes('Thursday morning'))", timeout=ARRIVES_WITHIN_MS)
    page.locator("#timeline li.in", has_text="Thursday morning").wait_for(
        timeout=ARRIVES_WITHIN_MS)
    assert "Thursday morning" in page.locator("#announce").inner_text()
    db.close()
    print(f"\nmissed call row → shown in the background inbox: {shown_after * 1000:.0f} ms")


def test_push_latency_from_a_row_written_by_another_process(site: Site, laptop: Any) -> None:
    page = laptop
    page.goto(site.base + "/inbox")
    page.wait_for_function("() => window.textbackLive.mode === 'stream'")
    db = sqlite3.connect(site.database)
    number = "+13125550999"
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    with db:
        contact_id = db.execute(
            "INSERT INTO contacts (number, name, opted_out, tags, source, created_at, "
            "conversation_status, last_message_at, last_inbound_at) VALUES "
            "(?, 'Pat Probe', 0, '[]', 'sms', ?, 'closed', ?, ?)",
            (number, stamp, stamp, stamp)).lastrowid
    latencies = []
    for n in range(8):
        body = f"latency probe {n}"
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        with db:
            db.execute("INSERT INTO messages (direction, kind, number, body, status, attempts, "
                       "created_at, updated_at, contact_id) VALUES ('in', 'reply', ?, ?, "
                       "'received', 0, ?, ?, ?)", (number, body, stamp, stamp, contact_id))
        committed = time.time() * 1000
        page.wait_for_function(
            "b => window.textbackLive.log.some(e => e.alerts.some(a => a.body === b))",
            arg=body, timeout=ARRIVES_WITHIN_MS)
        heard = page.evaluate("b => window.textbackLive.log.find(e => e.alerts.some("
                              "a => a.body === b)).at", body)
        latencies.append(heard - committed)
        time.sleep(0.1)
    db.close()
    print(f"\npush latency, row committed → event in the page: median "
          f"{statistics.median(latencies):.0f} ms, max {max(latencies):.0f} ms "
          f"({len(latencies)} rows)")
    assert max(latencies) < 1000


def test_two_panes_keys_search_notes_and_a_saved_reply(
        trunk: TrunkPeer, site: Site, laptop: Any) -> None:
    page = laptop
    caller = wait_until("Maria's conversation", lambda: sqlite3.connect(site.database).execute(
        "SELECT number FROM contacts WHERE name = 'Maria Lopez'").fetchone())[0]  # type: ignore[index]
    # an admin writes a saved reply, with the live counter of the templates
    page.goto(site.base + "/inbox")
    page.click(".alerts-toggle >> text=Saved replies")
    page.wait_for_url("**/inbox/saved-replies")
    page.fill("input[name=title]", "On our way")
    page.fill("textarea[name=body]", "Hi {first_name}, we can be there Thursday 9am.")
    page.locator("#counter-new", has_text="1 SMS").wait_for(timeout=5000)
    assert "Hi Maria, we can be there" in page.locator("#counter-new").inner_text()
    page.get_by_role("button", name="Add", exact=True).click()
    page.locator(".flash", has_text="Saved").wait_for()

    # search by a fragment of the customer's text, then open it with the keyboard
    page.goto(site.base + "/inbox?view=all")
    page.fill("#inbox-q", "boiler")
    page.press("#inbox-q", "Enter")
    page.wait_for_url("**q=boiler*")
    assert page.locator("#inbox-list li.conversation").count() == 1
    assert _row(page, caller).count() == 1
    page.locator("body").click(position={"x": 5, "y": 700})
    page.keyboard.press("j")
    page.keyboard.press("Enter")
    page.wait_for_url("**/inbox/*")
    # two panes: the list beside the thread, every action in view without scrolling
    assert page.locator(".list-pane").is_visible() and page.locator("#timeline").is_visible()
    for selector in ("#callback-button", "text=Mark contacted", "text=Booked a job",
                     ".actions >> text=Close", "text=Assign", "#reply-body",
                     "form.reply button[type=submit]", ".tel"):
        assert _in_view(page, selector), selector
    assert page.locator(".tel").get_attribute("href") == f"tel:{caller}"
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "desk-two-panes.png"))

    # an internal note: in the timeline, marked, never sent
    page.click("text=Add an internal note")
    page.fill("#note-body", "Gate code 4411, dog in the yard")
    page.get_by_role("button", name="Add note", exact=True).click()
    page.locator("#timeline li.note", has_text="Gate code 4411").wait_for()
    assert "not sent" in page.locator("#timeline li.note").inner_text()

    # a saved reply, picked with "/" and sent with Ctrl+Enter
    page.click("#reply-body")
    page.keyboard.type("/on our")
    page.locator("#saved-replies").wait_for(state="visible")
    page.keyboard.press("Enter")
    assert page.input_value("#reply-body") == "Hi Maria, we can be there Thursday 9am."
    page.keyboard.press("Control+Enter")
    sent = wait_until("the saved reply at the trunk", lambda: [
        m for m in texts_to(trunk, caller) if m.body.startswith("Hi Maria, we can")],
        timeout=20)
    assert sent[0].body == "Hi Maria, we can be there Thursday 9am."
    assert not [m for m in texts_to(trunk, caller) if "Gate code" in m.body]
    page.locator("#timeline li.out", has_text="Hi Maria, we can").wait_for()
    page.screenshot(path=str(SHOTS / "desk-thread.png"))
    page.keyboard.press("Escape")  # back to the list
    page.wait_for_url("**/inbox?*")


def test_the_phone_layout_keeps_the_reply_and_actions_in_reach(chromium: Any,
                                                               site: Site) -> None:
    context = chromium.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    page = context.new_page()
    sign_in(page, site.base + "/login", "frontdesk", PASSWORD, "**/dashboard")
    page.goto(site.base + "/inbox?view=all")
    assert not page.locator(".thread-pane").is_visible()  # one pane: the list
    page.locator("#inbox-list a.open").first.click()
    page.wait_for_url("**/inbox/*")
    assert not page.locator(".list-pane").is_visible()
    for selector in ("#back-to-list", ".tel", "#callback-button", "text=Mark contacted",
                     "#reply-body", "form.reply button[type=submit]"):
        assert _in_view(page, selector), selector
    assert page.evaluate("window.scrollY") == 0
    page.screenshot(path=str(SHOTS / "desk-phone-thread.png"))
    context.close()


def test_call_back_with_the_agent_stopped_says_so(site: Site, laptop: Any) -> None:
    page = laptop
    assert site.agent.stop() == 0
    # it stopped a while ago: its last health report is past the interval it keeps
    db = sqlite3.connect(site.database)
    with db:
        db.execute("UPDATE transport_status SET updated_at = ?", (
            (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)).strftime(
                "%Y-%m-%d %H:%M:%S.%f"),))
    before = db.execute("SELECT COUNT(*) FROM callback_requests").fetchone()[0]
    page.goto(site.base + "/inbox?view=all")
    page.locator("#inbox-list a.open").first.click()
    page.wait_for_url("**/inbox/*")
    button = page.locator("#callback-button")
    assert button.inner_text() == "Call back — agent offline" and button.is_disabled()
    assert "nothing would ring your desk phone" in page.locator("#callback-state").inner_text()
    assert db.execute("SELECT COUNT(*) FROM callback_requests").fetchone()[0] == before
    db.close()

    # the agent is back: its first health report enables Call back in the open page
    site.agent.start()
    page.wait_for_function("() => { const b = document.getElementById('callback-button');"
                           " return b.textContent === 'Call back' && !b.disabled; }",
                           timeout=15_000)


def _probe(database: Path, body: str) -> None:
    """A customer's text as the agent stores it (another process, plain sqlite3)."""
    db = sqlite3.connect(database)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    with db:
        db.execute("INSERT INTO messages (direction, kind, number, body, status, attempts, "
                   "created_at, updated_at) VALUES ('in', 'reply', '+13125550999', ?, "
                   "'received', 0, ?, ?)", (body, stamp, stamp))
    db.close()


def _free_port() -> int:
    """A port nothing listens on now (the kernel's pick), for a server started twice on
    it: a fixed one may be any client's ephemeral port at that moment."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_open_page_survives_a_restart_of_the_web_ui(chromium: Any, site: Site) -> None:
    port = _free_port()
    context = chromium.new_context(viewport=LAPTOP)
    context.add_init_script(RECORDER)
    page = context.new_page()
    heard = "() => window.textbackLive.log.some(e => e.alerts.some(a => a.body === '{}'))"
    with serve(site.cfg, port) as base:
        sign_in(page, base + "/login", "frontdesk", PASSWORD, "**/dashboard")
        page.goto(base + "/inbox")
        page.wait_for_function("() => window.textbackLive.mode === 'stream'")
        _probe(site.database, "before the restart")
        page.wait_for_function(heard.format("before the restart"), timeout=ARRIVES_WITHIN_MS)
    # the web UI is down: the page polls (and fails quietly) until it is back
    page.wait_for_function("() => window.textbackLive.mode === 'polling'", timeout=10_000)
    with serve(site.cfg, port):
        page.wait_for_function("() => window.textbackLive.mode === 'stream'", timeout=15_000)
        _probe(site.database, "after the restart")
        page.wait_for_function(heard.format("after the restart"), timeout=ARRIVES_WITHIN_MS)
    context.close()
