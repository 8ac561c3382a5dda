"""The front desk's day, end to end: a real call to the lab Asterisk goes unanswered, the
agent texts the caller back through the trunk, and a person in Debian's Chromium watches
the conversation appear in the inbox without reloading, reads the customer's reply as it
arrives, and answers it — the answer reaching the trunk as a real SIP MESSAGE.

Everything is real except the customer's phone (SIPp and the lab's trunk peer): the PBX,
`textback agent` in its own process, the web UI served by waitress, the browser."""

from __future__ import annotations

import datetime as dt
import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.lab.agentproc import AgentProcess, wait_until
from agent.lab.pbx import LabPbx
from agent.lab.trunk import TrunkPeer

from browsing import DESKTOP, lab_site_config, serve, shoot, sign_in, texts_to

pytestmark = [pytest.mark.lab, pytest.mark.browser]

PORT_BASE = int(os.environ.get("TEXTBACK_TEST_BROWSER_LAB_PORT_BASE", "27000"))
DID = "+15550000100"  # rings desk for a few seconds (lab dialplan)
PASSWORD = "front desk all day"

_callers = (f"+1212555{n:04d}" for n in itertools.count(7001))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, lab: LabPbx) -> Iterator[tuple[str, Path]]:
    """The agent watching the lab, and the admin UI on the same database."""
    work = tmp_path_factory.mktemp("site")
    config, cfg = lab_site_config(lab, work, PASSWORD)
    agent = AgentProcess(config, work / "agent.log")
    agent.start()
    try:
        with serve(cfg) as base:
            yield base, config
    finally:
        assert agent.stop() == 0, agent.log()[-3000:]


@pytest.fixture(scope="module")
def tab(chromium: Any, site: tuple[str, Path]) -> Iterator[Any]:
    """One signed-in tab kept open all along, as at a front desk."""
    base, _config = site
    context = chromium.new_context(viewport=DESKTOP)
    page = context.new_page()
    sign_in(page, base + "/login", "frontdesk", PASSWORD, "**/dashboard")
    yield page
    context.close()


def test_a_missed_call_appears_in_the_open_inbox_and_a_reply_goes_out(
        lab: LabPbx, trunk: TrunkPeer, site: tuple[str, Path], tab: Any) -> None:
    base, _config = site
    page = tab
    page.goto(base + "/inbox")
    caller = next(_callers)
    lab.call(DID, caller_id=caller, caller_name="Maria Lopez", from_trunk=True, phone="ring")
    (textback,) = wait_until("the text-back at the trunk", lambda: texts_to(trunk, caller))

    # no reload: the list polls and shows the new conversation
    row = page.locator(f'li.conversation:has(.number[title="{caller}"])')
    row.wait_for(timeout=15_000)
    assert "Maria Lopez" in row.inner_text()
    assert "(212) 555-" in row.inner_text()  # as the front desk writes US numbers
    page.wait_for_function("() => document.title.startsWith('(1) Inbox')")  # a tab away
    row.locator("a").first.click()
    page.wait_for_url("**/inbox/*")
    timeline = page.locator("#timeline")
    assert "Missed call" in timeline.inner_text() or "missed" in timeline.inner_text().lower()
    assert textback.body in timeline.inner_text()

    # the customer answers from their phone; the open thread shows it without a reload
    trunk.send_message(DID, caller, "Can you come out Thursday morning? <b>thanks</b>")
    page.locator("#timeline li.in", has_text="Thursday morning").wait_for(timeout=15_000)
    assert "<b>thanks</b>" in timeline.inner_text()  # shown as text, not markup
    # a booking request gets the automatic scheduling answer, shown in the thread too
    wait_until("the automatic booking answer", lambda: [
        m for m in texts_to(trunk, caller) if "day and time that suits you" in m.body])
    page.locator("#timeline li.out", has_text="day and time that suits you").wait_for(
        timeout=15_000)

    # a person answers; the counter counts as the agent does, the trunk gets the text
    page.fill("#reply-body", "Thursday 9am works, see you then. – Sam")
    assert "1 SMS" in page.locator("#reply-counter").inner_text()
    page.click("form.reply button[type=submit]")
    sent = wait_until("the staff reply at the trunk", lambda: [
        m for m in texts_to(trunk, caller) if m.body.startswith("Thursday 9am")], timeout=20)
    assert sent[0].body == "Thursday 9am works, see you then. – Sam"
    page.locator("#timeline li", has_text="Thursday 9am").wait_for(timeout=10_000)
    shoot(page, "lab-thread")
    page.goto(base + "/inbox")
    shoot(page, "lab-inbox")


def test_hours_changed_in_the_browser_choose_the_after_hours_text_for_the_next_call(
        lab: LabPbx, trunk: TrunkPeer, site: tuple[str, Path], tab: Any) -> None:
    base, _config = site
    page = tab
    page.goto(base + "/settings/hours")
    assert "Now: open" in page.locator("#hours-now").inner_text()
    # open one hour a week, on a day other than today (the business is in UTC)
    days = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    other = days[(dt.datetime.now(dt.UTC).weekday() + 3) % 7]
    for day in days:
        page.set_checked(f"input[name=open_{day}]", day == other)
        page.fill(f"input[name=shifts_{day}]", "09:00-10:00" if day == other else "")
    page.click("text=Save hours")
    page.locator(".flash", has_text="Saved").wait_for(timeout=10_000)
    assert "Now: closed" in page.locator("#hours-now").inner_text()

    caller = next(_callers)
    lab.call(DID, caller_id=caller, caller_name="Late Larry", from_trunk=True, phone="ring")
    (text,) = wait_until("the text-back at the trunk", lambda: texts_to(trunk, caller))
    assert "We're closed now" in text.body and "We reopen" in text.body, text.body
    page.goto(base + "/inbox")
    page.locator(f'li.conversation:has(.number[title="{caller}"]) a').first.click()
    timeline = page.locator("#timeline").inner_text()
    assert text.body in timeline
    shoot(page, "lab-after-hours")


def test_call_back_rings_the_desk_phone_then_dials_the_customer(
        lab: LabPbx, trunk: TrunkPeer, site: tuple[str, Path], tab: Any) -> None:
    base, _config = site
    page = tab
    caller = next(_callers)
    lab.call(DID, caller_id=caller, caller_name="Rita Call", from_trunk=True, phone="ring")
    wait_until("the text-back at the trunk", lambda: texts_to(trunk, caller))
    page.goto(base + "/inbox")
    page.locator(f'li.conversation:has(.number[title="{caller}"]) a').first.click()
    desk = lab.phone("desk2", "answer", answer_after_ms=300, timeout=20)
    page.click("text=Call back")
    lab.wait_channel("PJSIP/desk2", timeout=10)  # the staff member's desk phone rings
    # they pick up; the PBX then dials the customer through the trunk
    assert desk.wait(20) == 0, desk.output()
    page.reload()
    assert "Last call back: ringing" in page.locator(".actions").inner_text()
