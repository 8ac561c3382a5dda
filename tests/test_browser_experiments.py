"""A 2×2 message experiment in a real browser (Debian's Chromium driven by Playwright, the
app served by waitress on a database made by `textback init`): with seeded outcomes the
dashboard shows each cell's sends, replies, qualified replies and bookings, the main
effects with their intervals and the honest note; adopting the winner from the settings
page writes the template and ends the test."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from agent import config as configuration
from agent.people import accounts
from agent.reports import experiments as stats
from agent.rules import experiments, settings
from agent.store.db import make_engine, sessions
from agent.store.models import AuditEntry, Contact, Experiment, Message, MessageEvent

from browsing import init_site, serve, shoot, signed_in_tab, site_session

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery"
FORM = {"hook_a": "I'm on a job right now.", "hook_b": "Sorry, we just missed your call.",
        "body": "This is {business}.", "cta_a": "Reply and tell me what you need.",
        "cta_b": "Book here: {booking_link}"}
# per cell: texts sent, replies, of which qualified (asking to book), bookings
OUTCOMES = {"AA": (40, 8, 3, 1), "AB": (40, 10, 4, 3), "BA": (40, 20, 12, 2),
            "BB": (40, 22, 14, 4)}


def _numbers_by_cell() -> dict[str, list[str]]:
    cells: dict[str, list[str]] = {cell: [] for cell in OUTCOMES}
    n = 0
    while any(len(numbers) < 40 for numbers in cells.values()):
        number = f"+1312555{n:04d}"
        cells[experiments.cell_for(number, 2)].append(number)
        n += 1
    return cells


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    root = tmp_path_factory.mktemp("experiments-site")
    config = init_site(root)
    cfg = configuration.load(config)
    now = dt.datetime.now(dt.UTC)
    start = now - dt.timedelta(days=10)
    with site_session(cfg.database.url) as session:
        accounts.add_user(session, now, username="owner", password=PASSWORD, role="admin",
                          actor="cli")
        settings.set(session, "business.name", "Rapid Rooter Plumbing", now)
        settings.set(session, "business.booking_link", "https://rapidrooter.example/b", now)
        design = experiments.design_from_form("hook_cta", FORM)
        row = experiments.start(session, start, name="Hook × CTA, spring", kind="hook_cta",
                                template="templates.business_hours", design=design,
                                actor="owner")
        for cell, numbers in _numbers_by_cell().items():
            sent, replied, qualified, booked = OUTCOMES[cell]
            for i, number in enumerate(numbers[:sent]):
                at = start + dt.timedelta(hours=i)
                contact = Contact(number=number, created_at=at, source="call",
                                  booked_at=at + dt.timedelta(hours=2) if i < booked else None)
                session.add(contact)
                session.flush()
                text = Message(direction="out", kind="textback", number=number, body="x",
                               template="templates.business_hours", variant=cell,
                               experiment_id=row.id, status="delivered", attempts=1,
                               created_at=at, updated_at=at, contact_id=contact.id)
                session.add(text)
                session.flush()
                session.add(MessageEvent(message_id=text.id, status="delivered", at=at))
                if i < replied:
                    body = "When can you come by?" if i < qualified else "ok thanks"
                    session.add(Message(direction="in", kind="sms", number=number, body=body,
                                        status="received", created_at=at + dt.timedelta(
                                            minutes=3), updated_at=at, contact_id=contact.id))
        session.commit()
    with serve(cfg) as base:
        yield base, cfg.database.url


@pytest.fixture
def page(chromium: Any, site: tuple[str, str]) -> Iterator[Any]:
    base, _url = site
    with signed_in_tab(chromium, base + "/dashboard", "owner", PASSWORD, "**/dashboard") as tab:
        yield tab


def test_a_2x2_shows_its_cells_main_effects_and_note_and_adopting_ends_it(
        page: Any, site: tuple[str, str]) -> None:
    base, url = site
    article = page.locator("section.experiments article.experiment")
    assert article.locator("h3").inner_text().startswith("Hook × CTA, spring")
    for cell, (sent, replied, qualified, booked) in OUTCOMES.items():
        row = article.locator(f"table.cells tr[data-cell={cell}]")
        assert row.locator("td.sent").inner_text() == str(sent)
        assert row.locator("td.replied").inner_text() == str(replied)
        assert row.locator("td.qualified").inner_text() == str(qualified)
        assert row.locator("td.booked").inner_text() == str(booked)
        assert row.locator("td.reply-rate").inner_text() == f"{round(100 * replied / sent)}%"
    assert article.locator("tr[data-cell=AB] td.cell-name").inner_text() == "AB · Hook A × CTA B"
    # hook: B (BA+BB) 42 of 80 replies against A's 18 of 80
    hook = article.locator("table.effects tr[data-factor=hook] td[data-metric=replied]")
    _diff, low, high = stats.difference_interval(18, 80, 42, 80)
    assert hook.inner_text() == (f"+30.0 points (95% CI {100 * low:+.1f} to "
                                 f"{100 * high:+.1f})")
    assert "significant" in (hook.get_attribute("class") or "")
    # the link CTA is judged by bookings: 7 of 80 against 3 of 80, too few texts to tell
    cta = article.locator("table.effects tr[data-factor=cta] td[data-metric=booked]")
    _diff, low, high = stats.difference_interval(3, 80, 7, 80)
    assert cta.inner_text() == f"+5.0 points (95% CI {100 * low:+.1f} to {100 * high:+.1f})"
    assert "significant" not in (cta.get_attribute("class") or "")
    notes = article.locator("ul.notes")
    assert notes.locator("li[data-factor=hook]").inner_text() == (
        "Hook B has the better reply rate (30 points with 80 and 80 texts; the 95% interval "
        "leaves out zero): unlikely to be chance.")
    needed = stats.sample_size(3 / 80, 7 / 80)
    assert notes.locator("li[data-factor=cta]").inner_text() == (
        "CTA: too few texts for a difference this size (80 and 80 texts); keep the test "
        f"running. About {needed:,} texts per CTA would tell these booking rates apart.")
    shoot(page, "experiments-dashboard")

    page.goto(base + "/settings/experiments")
    card = page.locator("article.experiment[data-status=running]")
    assert "The results point to cell BA." in card.inner_text()
    winner = card.locator("select[name=cell]").input_value()
    assert winner == "BA"  # hook B, and the CTA as it was while its test says nothing yet
    card.locator("form.adopt button[type=submit]").click()
    page.wait_for_url("**/settings/experiments")
    assert f"Cell {winner} of “Hook × CTA, spring” adopted" in page.locator(
        ".flash").first.inner_text()
    assert page.locator("article.experiment[data-status=adopted]").count() == 1
    assert page.locator("form.adopt").count() == 0
    shoot(page, "experiments-settings")

    engine = make_engine(url)
    with sessions(engine)() as session:
        assert settings.get(session, "templates.business_hours") == (
            "Sorry, we just missed your call. This is {business}. "
            "Reply and tell me what you need.")
        row = session.scalars(select(Experiment)).one()
        assert (row.status, row.adopted_cell, row.stopped_by) == ("adopted", winner, "owner")
        actions = [e.action for e in session.scalars(select(AuditEntry).where(
            AuditEntry.action.like("experiment.%")).order_by(AuditEntry.id))]
        assert actions == ["experiment.start", "experiment.adopt"]
    engine.dispose()
