"""The web UI in a real browser: Debian's Chromium driven by Playwright, the real app
served by waitress on a loopback port, a real migrated SQLite database made by
`textback init`. Screenshots of each page (desktop and phone) land in
tests/browser/screenshots/ for a person to look at."""

from __future__ import annotations

import datetime as dt
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from agent import config as configuration
from agent.calls import policy
from agent.calls.missed import caller_history
from agent.calls.tracker import FinishedCall
from agent.messages import inbox
from agent.rules import settings
from agent.store.db import make_engine, sessions
from agent.store.models import Call, Contact, Message, MessageEvent

from browsing import add_owner_and_sam, init_site, serve, shoot, signed_in_tab, site_session

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery"


def textback(config: Path, *args: str) -> str:
    """The real command line, as an admin would type it."""
    done = subprocess.run([sys.executable, "-m", "agent.cli", *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def seed_month(session: Session, now: dt.datetime) -> None:
    """30 days of a small plumber's calls: busy mornings, a lunch hour nobody covers, an
    A/B test of the text-back (B names the booking link), replies and booked jobs."""
    rng = random.Random(5)
    n = 0
    for day in range(1, 31):
        for _ in range(rng.randint(10, 22)):
            n += 1
            local_hour = rng.choice([8, 9, 9, 10, 10, 11, 12, 12, 12, 13, 14, 15, 16, 17, 19])
            at = (now - dt.timedelta(days=day)).replace(hour=(local_hour + 6) % 24,
                                                        minute=rng.randint(0, 59))
            missed = rng.random() < (0.55 if local_hour in (12, 19) else 0.15)
            number = f"+1312556{n:04d}"
            contact = Contact(number=number, created_at=at, tags=[])
            session.add(contact)
            session.flush()
            call = Call(linkedid=f"seed.{n}", caller=number,
                        caller_name=rng.choice([None, "Jane Smith", "Bob Ortiz"]),
                        did="+13125550000", direction="inbound", missed=missed,
                        reason="noanswer" if missed else None,
                        answered_by=None if missed else "PJSIP/desk", started_at=at,
                        ended_at=at + dt.timedelta(seconds=25),
                        decision="send" if missed else "skip",
                        skip_reason=None if missed else "answered", contact_id=contact.id)
            session.add(call)
            session.flush()
            if missed:
                variant = "AB"[n % 2]
                left = call.ended_at + dt.timedelta(seconds=rng.randint(5, 40))
                message = Message(direction="out", kind="textback",
                                  idempotency_key=f"{call.linkedid}:textback",
                                  number=number, body="Sorry we missed you",
                                  template="templates.business_hours", variant=variant,
                                  status="delivered", transport="gsm", contact_id=contact.id,
                                  created_at=call.ended_at, updated_at=left, call_id=call.id)
                session.add(message)
                session.flush()
                session.add_all([MessageEvent(message_id=message.id, status="sent", at=left),
                                 MessageEvent(message_id=message.id, status="delivered",
                                              at=left + dt.timedelta(seconds=4))])
                if rng.random() < (0.35 if variant == "A" else 0.5):
                    replied = left + dt.timedelta(minutes=10)
                    session.add(Message(direction="in", kind="reply", number=number,
                                        body="yes", status="received", contact_id=contact.id,
                                        created_at=replied, updated_at=replied))
                    answered = replied + dt.timedelta(minutes=rng.randint(2, 40))
                    session.add(Message(direction="out", kind="staff_reply", number=number,
                                        body="On our way", status="delivered", sent_by="owner",
                                        contact_id=contact.id, created_at=answered,
                                        updated_at=answered))
                    contact.contacted_at = answered
                    if rng.random() < 0.45:
                        contact.booked_at = answered + dt.timedelta(minutes=5)
    session.commit()


# a front desk's morning: (name, number, minutes ago, [(who, text)], owner, state)
MORNING = [
    ("Maria Lopez", "+13125550142", 4, [
        ("call", ""), ("textback", "Hi Maria, thanks for calling Rapid Rooter Plumbing. Sorry "
                       "we missed you! We'll call you back soon, or just reply here."),
        ("in", "Water heater is leaking from the bottom, can someone come out today?"),
        ("auto", "Thanks! Reply with a day and time that suits you and we'll confirm.")],
     None, "waiting"),
    ("Dev Patel", "+13125550178", 18, [
        ("call", ""), ("textback", "Hi Dev, thanks for calling Rapid Rooter Plumbing. Sorry "
                       "we missed you! We'll call you back soon, or just reply here."),
        ("in", "How much for a drain cleaning? Kitchen sink is backing up"),
        ("staff", "Hi Dev, it's Sam. Drain cleaning starts at $149. I can have someone there "
                  "at 2pm, does that work?")], "sam", "replied"),
    ("Chloé Martin", "+13125550111", 47, [
        ("call", ""), ("in", "Thursday 9am is perfect, thank you!"),
        ("staff", "Booked: Thursday 9am. See you then, Chloé!")], "owner", "booked"),
    ("Gus Novak", "+13125550190", 65, [
        ("call", ""), ("in", "I smell gas in the basement"),
        ("auto", "We're on it: a technician from Rapid Rooter Plumbing is calling you "
                 "right now.")], "sam", "replied"),
    ("Jane Smith", "+13125550163", 130, [
        ("call", ""), ("textback", "Hi Jane, thanks for calling Rapid Rooter Plumbing. Sorry "
                       "we missed you! We'll call you back soon, or just reply here."),
        ("followup", "Hi Jane, it's Rapid Rooter Plumbing following up on your call. How "
                     "can we help? Just reply here.")], None, "quiet"),
]


def seed_morning(session: Session, now: dt.datetime, users: dict[str, int]) -> None:
    kinds = {"textback": "textback", "auto": "scheduling", "staff": "staff_reply",
             "followup": "followup"}
    for n, (name, number, ago, moves, owner, state) in enumerate(MORNING):
        start = now - dt.timedelta(minutes=ago)
        contact = Contact(number=number, name=name, created_at=start, tags=[])
        session.add(contact)
        session.flush()
        for step, (who, text) in enumerate(moves):
            at = start + dt.timedelta(minutes=step)
            if who == "call":
                session.add(Call(linkedid=f"morning.{n}", caller=number, caller_name=name,
                                 did="+13125550000", direction="inbound", missed=True,
                                 reason="noanswer", started_at=at - dt.timedelta(seconds=25),
                                 ended_at=at, decision="send", contact_id=contact.id))
                inbox.customer_activity(contact, at)
            elif who == "in":
                session.add(Message(direction="in", kind="reply", number=number, body=text,
                                    status="received", contact_id=contact.id, created_at=at,
                                    updated_at=at))
                inbox.customer_activity(contact, at)
            else:
                session.add(Message(direction="out", kind=kinds[who], number=number,
                                    body=text, status="delivered", contact_id=contact.id,
                                    sent_by=owner if who == "staff" else None,
                                    created_at=at, updated_at=at))
                if who == "staff":
                    inbox.staff_activity(contact, users[owner or "owner"], at)
                    contact.contacted_at = at
        if owner:
            contact.assigned_to = users[owner]
        if state == "booked":
            contact.booked_at = now - dt.timedelta(minutes=ago - 3)
    session.commit()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """`textback init`, an admin, a month of calls, and the UI served by waitress."""
    root = tmp_path_factory.mktemp("site")
    config = init_site(root)
    cfg = configuration.load(config)
    now = dt.datetime.now(dt.UTC)
    with site_session(cfg.database.url) as session:
        people = add_owner_and_sam(session, now, PASSWORD)
        users = {name: user.id for name, user in people.items()}
        settings.set(session, "business.name", "Rapid Rooter Plumbing", now)
        settings.set(session, "business.timezone", "America/Chicago", now)
        settings.set(session, "business.average_job_value", 350, now)
        session.commit()
        seed_month(session, now)
        seed_morning(session, now, users)
    with serve(cfg) as base:
        yield base, config


@pytest.fixture
def page(chromium: Any, site: tuple[str, Path]) -> Iterator[Any]:
    """A signed-in tab."""
    base, _config = site
    with signed_in_tab(chromium, base + "/", "owner", PASSWORD, "**/dashboard") as tab:
        yield tab


def test_the_dashboard_draws_its_figures_and_charts(page: object) -> None:
    tab = page
    assert tab.locator("h1").inner_text() == "Dashboard"  # type: ignore[attr-defined]
    assert tab.locator("svg.daily rect.missed").count() > 10  # type: ignore[attr-defined]
    assert tab.locator("svg.heat rect.cell").count() == 7 * 24  # type: ignore[attr-defined]
    worst = tab.locator(".worst").inner_text()  # type: ignore[attr-defined]
    assert "12:00–13:00" in worst or "19:00–20:00" in worst, worst
    revenue = tab.locator("[data-kpi=revenue] .kpi-value").inner_text()  # type: ignore[attr-defined]
    assert revenue not in ("0", "n/a")
    shoot(tab, "dashboard")
    tab.click("text=7 days")  # type: ignore[attr-defined]
    assert "last 7 days" in tab.locator(".hint").first.inner_text()  # type: ignore[attr-defined]


def test_the_inbox_shows_who_is_waiting_and_each_newest_text(page: Any) -> None:
    tab = page
    tab.click("nav >> text=Inbox")
    assert tab.title() == "(3) Inbox · textback"  # Maria, Gus and Jane wait for a person
    rows = tab.locator("li.conversation")
    assert rows.count() == 5  # the morning's (the month's calls were seeded without inbox state)
    first = rows.first.inner_text()
    assert "Maria Lopez" in first and "(312) 555-0142" in first and "waiting" in first
    assert "Automatic answer: Thanks! Reply with a day" in first
    answered = tab.locator("li.conversation", has_text="Dev Patel").inner_text()
    assert "sam: Hi Dev, it's Sam." in answered  # who wrote the newest reply
    booked = tab.locator("li.conversation", has_text="Chloé Martin").inner_text()
    assert "booked" in booked and "owner" in booked
    shoot(tab, "inbox")
    tab.locator("li.conversation", has_text="Dev Patel").locator("a").first.click()
    timeline = tab.locator("#timeline").inner_text()
    assert timeline.index("How much for a drain") < timeline.index("Drain cleaning starts")
    tab.fill("#reply-body", "See you at 2pm 👍")
    assert "1 SMS (UCS-2)" in tab.locator("#reply-counter").inner_text()
    shoot(tab, "thread")


def test_the_call_log_lists_the_calls(page: object) -> None:
    tab = page
    tab.click("nav >> text=Calls")  # type: ignore[attr-defined]
    tab.wait_for_url("**/calls")  # type: ignore[attr-defined]  # count() does not wait
    assert tab.locator("table.calls tbody tr").count() == 50  # type: ignore[attr-defined]
    assert tab.locator("text=Jane Smith").count() > 0  # type: ignore[attr-defined]
    shoot(tab, "calls")


def test_closing_hours_set_on_the_command_line_choose_the_after_hours_text(
        page: object, site: tuple[str, Path]) -> None:
    """`textback settings set hours.weekly`, then the next missed call (decided by the
    agent's own policy on that database) gets the after-hours text, and shows up in the
    call log after a reload."""
    _base, config = site
    textback(config, "settings", "set", "hours.weekly", "mon-fri 08:00-17:00")
    cfg = configuration.load(config)
    engine = make_engine(cfg.database.url)
    # Sunday 6 December 2026, 21:00 in Chicago: closed under the new hours
    ended = dt.datetime(2026, 12, 7, 3, 0, 25, tzinfo=dt.UTC)
    call = FinishedCall(linkedid="after.1", caller="+13125559876", caller_name="Late Larry",
                        did="+13125550000", direction="inbound", missed=True, reason="noanswer",
                        voicemail_left=False, answered_by=None, ring_seconds=20,
                        started_at=ended.timestamp() - 25, ended_at=ended.timestamp(),
                        trunk_endpoint=None)
    with sessions(engine)() as session:
        rules = policy.Rules.from_settings(settings.all_values(session), "US")
        decision = policy.decide(call, call.caller, caller_history(session, call.caller, None),
                                 rules, ended)
        assert isinstance(decision, policy.Send)
        assert decision.template_key == "templates.after_hours"
        assert "closed now" in decision.body
        contact = Contact(number="+13125559876", name="Late Larry", created_at=ended)
        session.add(contact)
        session.flush()
        row = Call(linkedid=call.linkedid, caller=call.caller, caller_name=call.caller_name,
                   did=call.did, direction="inbound", missed=True, reason="noanswer",
                   started_at=ended - dt.timedelta(seconds=25), ended_at=ended,
                   decision="send", contact_id=contact.id)
        session.add(row)
        session.flush()
        session.add(Message(direction="out", kind="textback", idempotency_key="after.1:textback",
                            number=call.caller or "", body=decision.body,
                            template=decision.template_key, status="queued", created_at=ended,
                            updated_at=ended, call_id=row.id, contact_id=contact.id))
        session.commit()
    engine.dispose()
    tab = page
    tab.goto(tab.url.replace("/dashboard", "/calls?q=Larry"))  # type: ignore[attr-defined]
    tab.reload()  # type: ignore[attr-defined]
    row_text = tab.locator("table.calls tbody tr").first.inner_text()  # type: ignore[attr-defined]
    assert "Late Larry" in row_text and "missed" in row_text and "queued" in row_text
    assert "2026-12-06 21:00" in row_text  # shown in the business time zone


def test_contacts_list_and_a_contact_page(page: Any) -> None:
    tab = page
    tab.click("nav >> text=Contacts")
    assert "Maria Lopez" in tab.locator("table").first.inner_text()
    shoot(tab, "contacts")
    tab.fill("input[name=q]", "555 0142")
    tab.keyboard.press("Enter")
    tab.wait_for_url("**/contacts?*q=555*")
    rows = tab.locator("table tbody tr")
    assert rows.count() == 1 and "(312) 555-0142" in rows.first.inner_text()
    rows.first.locator("a.number").click()
    assert "Maria Lopez" in tab.locator("h1").inner_text()
    shoot(tab, "contact")


def test_a_possible_opt_out_is_one_click_away(page: Any, site: tuple[str, Path]) -> None:
    """A text that may be an opt-out is flagged in the thread; "Opt out" does it, and the
    consent record says who did it and on which words. The contact has no inbox state,
    so the other tests' lists do not change."""
    base, config = site
    engine = make_engine(configuration.load(config).database.url)
    now = dt.datetime.now(dt.UTC)
    with sessions(engine)() as session:
        contact = Contact(number="+13125550177", name="Pat Doyle", created_at=now, tags=[])
        session.add(contact)
        session.flush()
        session.add(Message(direction="in", kind="sms", number=contact.number,
                            body="Stop texting my husband, he's not the homeowner",
                            status="received", transport="sip", contact_id=contact.id,
                            created_at=now, updated_at=now))
        session.commit()
        contact_id = contact.id
    engine.dispose()
    tab = page
    tab.goto(f"{base}/inbox/{contact_id}")
    assert "Customer · possible opt-out" in tab.locator("#timeline").inner_text()
    banner = tab.locator("form.possible-opt-out")
    assert "Stop texting my husband" in banner.inner_text()
    shoot(tab, "thread-possible-opt-out")
    banner.locator("button", has_text="Opt out").click()
    tab.wait_for_url(f"**/inbox/{contact_id}")
    assert "is opted out: it will not be texted again" in tab.locator(".flash").first.inner_text()
    assert tab.locator("form.possible-opt-out").count() == 0
    tab.goto(f"{base}/contacts/{contact_id}")
    record = tab.locator("section.consent").inner_text()
    assert "opted out" in record and "possible opt-out confirmed in the inbox" in record
    assert "by staff (web)" in record


def test_every_key_figure_shows_its_definition_and_the_page_exports(page: Any) -> None:
    """Each of the playbooks' figures is on the dashboard with its definition: in the
    card's tooltip and, for a keyboard or touch, under "What is this?"; the figures
    download as CSV, the charts as SVG, and the printable page has no controls."""
    from agent.reports.kpis import DEFINITIONS

    tab = page
    tab.goto(tab.url.split("/dashboard")[0] + "/dashboard?days=30")
    cards = tab.locator(".kpi")
    slugs = [cards.nth(n).get_attribute("data-kpi") for n in range(cards.count())]
    playbook = {"missed", "sent", "delivery", "time", "reply", "qualified", "booking-delivered",
                "booking-reply", "revenue-per-call", "cost-per-booking", "optout",
                "contactable", "response"}
    assert playbook <= set(slugs), playbook - set(slugs)
    for slug in slugs:
        name, definition = DEFINITIONS[slug]
        card = tab.locator(f".kpi[data-kpi='{slug}']")
        assert card.locator(".kpi-name").inner_text().lower() == name.lower()
        assert card.get_attribute("title") == f"{name}: {definition}"
        text = card.locator(".kpi-definition p")
        assert not text.is_visible()
        card.locator(".kpi-definition summary").click()
        assert text.is_visible() and text.inner_text() == definition
        assert "previous 30 days" in card.locator(".kpi-change").inner_text()
    time_to_text = tab.locator(".kpi[data-kpi='time'] .kpi-detail").inner_text()
    assert "median" in time_to_text and "90% within" in time_to_text
    shoot(tab, "dashboard-definitions")

    with tab.expect_download() as download:
        tab.click("text=Figures (CSV)")
    lines = Path(download.value.path()).read_text().splitlines()
    assert lines[0].startswith("figure,value,detail,change on the previous 30 days")
    assert any(line.startswith("Qualified conversation rate,") for line in lines)
    with tab.expect_download() as download:
        tab.click("text=Calls per day (SVG)")
    svg = Path(download.value.path()).read_text()
    assert svg.startswith("<?xml") and 'xmlns="http://www.w3.org/2000/svg"' in svg
    assert "<rect class=\"missed\"" in svg

    tab.click("text=Printable page")
    assert tab.locator("form.filters").count() == 0
    assert tab.locator(".kpi-definition p").first.is_visible()  # open for paper
    tab.emulate_media(media="print")
    assert not tab.locator("header.top").is_visible()
    tab.emulate_media(media="screen")
