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

from agent import accounts, policy, settings
from agent import config as configuration
from agent.calls import FinishedCall
from agent.daemon import caller_history
from agent.db import make_engine, sessions
from agent.models import Call, Contact, Message, MessageEvent

from browsing import DESKTOP, serve, shoot, sign_in

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery"


def textback(config: Path, *args: str) -> str:
    """The real command line, as an admin would type it."""
    done = subprocess.run([sys.executable, "-m", "agent.cli", *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def seed_month(session: Session, now: dt.datetime) -> None:
    """30 days of a small plumber's calls: busy mornings, a lunch hour nobody covers."""
    rng = random.Random(5)
    n = 0
    for day in range(30):
        for _ in range(rng.randint(10, 22)):
            n += 1
            local_hour = rng.choice([8, 9, 9, 10, 10, 11, 12, 12, 12, 13, 14, 15, 16, 17, 19])
            at = (now - dt.timedelta(days=day)).replace(hour=(local_hour + 6) % 24,
                                                        minute=rng.randint(0, 59))
            if at > now:
                continue
            missed = rng.random() < (0.55 if local_hour in (12, 19) else 0.15)
            call = Call(linkedid=f"seed.{n}", caller=f"+1312555{n:04d}",
                        caller_name=rng.choice([None, "Jane Smith", "Bob Ortiz"]),
                        did="+13125550000", direction="inbound", missed=missed,
                        reason="noanswer" if missed else None,
                        answered_by=None if missed else "PJSIP/desk", started_at=at,
                        ended_at=at + dt.timedelta(seconds=25),
                        decision="send" if missed else "skip",
                        skip_reason=None if missed else "answered")
            session.add(call)
            session.flush()
            if missed:
                left = call.ended_at + dt.timedelta(seconds=rng.randint(5, 40))
                message = Message(direction="out", kind="textback",
                                  idempotency_key=f"{call.linkedid}:textback",
                                  number=call.caller or "", body="Sorry we missed you",
                                  status="delivered", transport="gsm",
                                  created_at=call.ended_at, updated_at=left, call_id=call.id)
                session.add(message)
                session.flush()
                session.add_all([MessageEvent(message_id=message.id, status="sent", at=left),
                                 MessageEvent(message_id=message.id, status="delivered",
                                              at=left + dt.timedelta(seconds=4))])
                if rng.random() < 0.4:
                    session.add(Message(direction="in", kind="reply", number=call.caller or "",
                                        body="yes", status="received",
                                        created_at=left + dt.timedelta(minutes=10),
                                        updated_at=left + dt.timedelta(minutes=10)))
    session.commit()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """`textback init`, an admin, a month of calls, and the UI served by waitress."""
    root = tmp_path_factory.mktemp("site")
    config = root / "textback.toml"
    subprocess.run([sys.executable, "-m", "agent.cli", "init", "--config", str(config),
                    "--database-url", f"sqlite:///{root / 'textback.db'}"], check=True,
                   capture_output=True, timeout=60)
    cfg = configuration.load(config)
    engine = make_engine(cfg.database.url)
    now = dt.datetime.now(dt.UTC)
    with sessions(engine)() as session:
        accounts.add_user(session, now, username="owner", password=PASSWORD, role="admin",
                          actor="cli")
        settings.set(session, "business.timezone", "America/Chicago", now)
        settings.set(session, "business.average_job_value", 350, now)
        session.commit()
        seed_month(session, now)
    engine.dispose()
    with serve(cfg) as base:
        yield base, config


@pytest.fixture
def page(chromium: Any, site: tuple[str, Path]) -> Iterator[Any]:
    """A signed-in tab."""
    base, _config = site
    context = chromium.new_context(viewport=DESKTOP)
    tab = context.new_page()
    sign_in(tab, base + "/", "owner", PASSWORD, "**/dashboard")
    yield tab
    context.close()


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


def test_the_call_log_lists_the_calls(page: object) -> None:
    tab = page
    tab.click("nav >> text=Calls")  # type: ignore[attr-defined]
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
