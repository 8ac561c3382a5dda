"""Message experiments: the caller's cell, the composed texts, the statistics, the agent's
text-backs counted per cell, the lifecycle (audited) and the A/B tests of before turned
into experiments by migration 0013 with their history."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from agent.calls import policy
from agent.calls.tracker import FinishedCall
from agent.reports import experiment_counts
from agent.reports import experiments as stats
from agent.rules import experiments, settings
from agent.store import audit
from agent.store.db import _alembic_config, migrate, sessions
from agent.store.models import AuditEntry, Experiment, Message, MessageEvent

DATABASES = ("sqlite", "postgresql")  # the cells are counted the same on both
NOW = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.UTC)  # a Monday, open in London
RULES = policy.Rules.from_settings({"business.name": "Acme Plumbing",
                                    "business.timezone": "Europe/London",
                                    "hours.weekly": "mon-sun 00:00-24:00",
                                    "textback.delay": "15s"}, region="GB")
HOOKS = {"hook_a": "I'm on a job right now.", "hook_b": "Sorry, we just missed your call."}
CTAS = {"cta_a": "Reply and tell me what you need.", "cta_b": "Book here: {booking_link}"}
BODY = "This is {business}."


def _callers(count: int) -> list[str]:
    return [f"+4474001{n:05d}" for n in range(count)]


def _call(caller: str, ended: dt.datetime, linkedid: str = "1.1") -> FinishedCall:
    return FinishedCall(linkedid=linkedid, caller=caller, caller_name=None, did=None,
                        direction="inbound", missed=True, reason="noanswer",
                        voicemail_left=False, answered_by=None, ring_seconds=20.0,
                        started_at=ended.timestamp() - 25, ended_at=ended.timestamp(),
                        trunk_endpoint="PJSIP/trunk")


def _plan(kind: str, design: dict[str, object], template: str | None = "templates.business_hours",
          experiment_id: int = 7) -> experiments.Plan:
    row = Experiment(id=experiment_id, name="t", kind=kind, template=template, design=design,
                     status=experiments.RUNNING, started_at=NOW)
    return experiments.plan(row, settings.defaults())


# ---------------------------------------------------------------- the cell


def test_a_callers_first_factor_is_their_ab_variant_of_before() -> None:
    """An A/B test turned into an experiment keeps every caller on their side."""
    for number in _callers(200):
        assert experiments.cell_for(number, 1) == policy.variant_for(number)
        assert experiments.cell_for(number, 2)[0] == policy.variant_for(number)


def test_the_four_cells_of_a_2x2_are_about_equally_filled() -> None:
    counts = Counter(experiments.cell_for(number, 2) for number in _callers(4000))
    assert set(counts) == {"AA", "AB", "BA", "BB"}
    assert all(900 <= n <= 1100 for n in counts.values()), counts


def test_a_2x2_sends_each_caller_the_text_of_their_cell_with_the_experiment() -> None:
    design = experiments.design_from_form("hook_cta", {**HOOKS, **CTAS, "body": BODY})
    plan = _plan("hook_cta", design)
    seen = {}
    for number in _callers(40):
        call = _call(number, NOW)
        sent = policy.decide(call, number, policy.CallerHistory(), RULES, NOW, plans=(plan,))
        assert isinstance(sent, policy.Send)
        assert sent.experiment_id == 7 and sent.variant == experiments.cell_for(number, 2)
        seen[sent.variant] = sent.body
    assert seen["AA"] == ("I'm on a job right now. This is Acme Plumbing. "
                          "Reply and tell me what you need.")
    # no booking link set: the CTA's sentence drops out, as in any template
    assert seen["BB"] == "Sorry, we just missed your call. This is Acme Plumbing."
    assert seen["AB"] == "I'm on a job right now. This is Acme Plumbing."


def test_a_delay_test_moves_the_send_time_of_half_the_callers() -> None:
    plan = _plan("delay", {"delay": [0, 30]}, template=None)
    delays = set()
    for number in _callers(20):
        sent = policy.decide(_call(number, NOW), number, policy.CallerHistory(), RULES, NOW,
                             plans=(plan,))
        assert isinstance(sent, policy.Send)
        delays.add((sent.variant, (sent.send_at - NOW).total_seconds()))
    assert delays == {("A", 0.0), ("B", 30.0)}


def test_an_experiment_refuses_texts_the_settings_would_refuse() -> None:
    with pytest.raises(experiments.ExperimentError, match=r"cell AB.*unknown merge field"):
        experiments.design_from_form("hook_cta", {**HOOKS, "body": BODY, "cta_a": "Call us.",
                                                  "cta_b": "Book: {bookinglink}"})
    with pytest.raises(experiments.ExperimentError, match="the same"):
        experiments.design_from_form("hook", {"hook_a": "Hi.", "hook_b": "Hi.", "body": BODY})
    with pytest.raises(experiments.ExperimentError, match="delay_b"):
        experiments.design_from_form("delay", {"delay_a": "0s", "delay_b": "30"})


# ---------------------------------------------------------------- statistics


def test_wilson_and_newcombe_intervals_match_the_published_example() -> None:
    """Newcombe (1998), method 10: 56/70 against 48/80 gives 0.2000 (0.0524, 0.3339)."""
    diff, low, high = stats.difference_interval(48, 80, 56, 70)
    assert (round(diff, 4), round(low, 4), round(high, 4)) == (0.2, 0.0524, 0.3339)
    low, high = stats.wilson(0, 10)
    assert (round(low, 4), round(high, 4)) == (0.0, 0.2775)


def test_the_sample_size_is_the_textbook_one() -> None:
    """10% against 15% at 5% two-sided, 80% power: 686 per group (Fleiss, without the
    continuity correction)."""
    assert stats.sample_size(0.10, 0.15) == 686
    assert stats.sample_size(0.2, 0.2) is None


def _cells(counts: dict[str, tuple[int, int]]) -> list[stats.CellCounts]:
    return [stats.CellCounts(cell, cell, sent, replied, 0, 0)
            for cell, (sent, replied) in counts.items()]


def test_main_effects_pool_the_other_factor_and_the_notes_say_what_is_known() -> None:
    cells = _cells({"AA": (40, 8), "AB": (40, 10), "BA": (40, 20), "BB": (40, 22)})
    hook, cta = stats.factor_results(("hook", "cta"), {"hook": ["a", "b"], "cta": ["c", "d"]},
                                     cells)
    replies = hook.effects[0]
    assert (replies.sent_a, replies.hits_a, replies.sent_b, replies.hits_b) == (80, 18, 80, 42)
    assert replies.significant and hook.winner == "B"
    assert "Hook B has the better reply rate (30 points" in hook.note
    assert cta.winner is None
    assert cta.note.startswith("CTA: too few texts for a difference this size (80 and 80")
    assert "About 1,4" in cta.note  # ~1,400 per CTA to tell 35% from 40% apart
    assert stats.best_cell([hook, cta], cells) == "BA"


def test_a_large_test_without_a_difference_is_called_not_significant() -> None:
    cells = _cells({"A": (2000, 400), "B": (2000, 404)})
    (text,) = stats.factor_results(("text",), {}, cells)
    assert text.winner is None
    assert text.note.startswith("Text: too few texts") or "not significant" in text.note
    cells = _cells({"A": (2000, 400), "B": (2000, 400)})
    (text,) = stats.factor_results(("text",), {}, cells)
    assert text.note.startswith("Text: not significant (2,000 and 2,000 texts")


def test_a_booking_link_cta_is_judged_by_bookings() -> None:
    assert stats.primary_metric("cta", ["Reply.", "Book: {booking_link}"]) == "booked"
    assert stats.primary_metric("cta", ["Reply.", "Call us."]) == "replied"
    assert stats.primary_metric("hook", ["{booking_link}", "x"]) == "replied"


def test_qualified_replies_are_scheduling_pricing_or_emergency() -> None:
    assert [stats.qualified_reply(i) for i in ("scheduling", "pricing", "emergency",
                                               "other", None)] == [True] * 3 + [False] * 2


# ---------------------------------------------------------------- the agent and the DB


def _left(session: Session, message: Message, at: dt.datetime) -> None:
    message.status = "sent"
    session.add(MessageEvent(message_id=message.id, status="sent", at=at))


def test_the_agent_texts_cells_and_the_report_counts_them(session: Session, record) -> None:
    settings.set(session, "business.booking_link", "https://acme.example/book", NOW)
    settings.set(session, "hours.weekly", "mon-sun 00:00-24:00", NOW)
    design = experiments.design_from_form("hook_cta", {**HOOKS, **CTAS, "body": BODY})
    row = experiments.start(session, NOW, name="Spring", kind="hook_cta",
                            template="templates.business_hours", design=design, actor="owner")
    session.commit()
    callers = _callers(12)
    for n, number in enumerate(callers):
        record(session, _call(number, NOW, f"9.{n}"), NOW)
    session.commit()
    sent = session.scalars(select(Message).where(Message.kind == "textback")).all()
    assert len(sent) == 12
    for message in sent:
        assert message.experiment_id == row.id
        assert message.variant == experiments.cell_for(message.number, 2)
        _left(session, message, NOW)
    # the first caller answers asking for a visit (qualified), the second just says thanks
    first, second = sent[0], sent[1]
    for message, body in ((first, "When can you come by tomorrow?"), (second, "thanks")):
        session.add(Message(direction="in", kind="sms", number=message.number, body=body,
                            status="received", created_at=NOW + dt.timedelta(minutes=5),
                            updated_at=NOW + dt.timedelta(minutes=5)))
    session.commit()
    report = experiment_counts.report(session, row)
    by_cell = {c.cell: c for c in report.cells}
    assert sum(c.sent for c in report.cells) == 12
    expected = Counter(experiments.cell_for(number, 2) for number in callers)
    assert {cell: c.sent for cell, c in by_cell.items()} == {c: expected[c] for c in by_cell}
    assert sum(c.replied for c in report.cells) == 2
    assert by_cell[first.variant].qualified == 1
    assert sum(c.qualified for c in report.cells) == 1


def test_start_stop_and_adopt_are_audited_and_adopting_writes_the_template(
        session: Session) -> None:
    design = experiments.design_from_form("hook", {**HOOKS, "body": BODY,
                                                   "cta_a": "Reply here."})
    row = experiments.start(session, NOW, name="Hooks", kind="hook",
                            template="templates.after_hours", design=design, actor="owner")
    with pytest.raises(experiments.ExperimentError, match="running on these texts"):
        experiments.start(session, NOW, name="Delay", kind="delay", template=None,
                          design={"delay": [0, 30]}, actor="owner")
    experiments.adopt(session, row, "B", NOW, actor="owner")
    assert settings.get(session, "templates.after_hours") == (
        "Sorry, we just missed your call. This is {business}. Reply here.")
    assert row.status == experiments.ADOPTED and row.adopted_cell == "B"
    other = experiments.start(session, NOW, name="Delay", kind="delay", template=None,
                              design={"delay": [0, 30]}, actor="owner")
    experiments.stop(session, other, NOW, actor="owner")
    session.commit()
    actions = [e.action for e in session.scalars(select(AuditEntry).order_by(AuditEntry.id))]
    assert actions == [audit.EXPERIMENT_STARTED, audit.SETTING_CHANGED,
                       audit.EXPERIMENT_ADOPTED, audit.EXPERIMENT_STARTED,
                       audit.EXPERIMENT_STOPPED]


# ---------------------------------------------------------------- migration 0013


def test_the_ab_tests_of_before_become_experiments_with_their_history(engine: Engine) -> None:
    command.downgrade(_alembic_config(engine), "0007")
    with engine.begin() as db:
        db.execute(sa.text("INSERT INTO settings (key, value, updated_at) VALUES "
                           "('templates.after_hours_b', '\"Closed. Back {next_open}.\"', "
                           "'2026-01-01 00:00:00+00')"))
        for n, (template, variant) in enumerate([("templates.after_hours", "A"),
                                                 ("templates.after_hours", "B"),
                                                 ("templates.voicemail", "B"),
                                                 ("templates.business_hours", None)]):
            db.execute(sa.text(
                "INSERT INTO messages (direction, kind, number, body, template, variant, "
                "status, attempts, created_at, updated_at) VALUES ('out', 'textback', "
                f"'+4474001000{n}', 'x', :t, :v, 'sent', 1, '2026-01-0{n + 2} 10:00:00', "
                "'2026-01-02 10:00:00')"), {"t": template, "v": variant})
    migrate(engine)
    with sessions(engine)() as session:
        rows = {r.template: r for r in session.scalars(select(Experiment))}
        assert set(rows) == {"templates.after_hours", "templates.voicemail"}
        after = rows["templates.after_hours"]
        assert (after.kind, after.status) == ("text", experiments.RUNNING)
        assert after.design == {"text": [None, "Closed. Back {next_open}."]}
        assert after.started_at == dt.datetime(2026, 1, 2, 10, tzinfo=dt.UTC)
        assert rows["templates.voicemail"].status == experiments.STOPPED
        linked = {m.variant: m.experiment_id for m in session.scalars(
            select(Message).where(Message.template == "templates.after_hours"))}
        assert linked == {"A": after.id, "B": after.id}
        assert settings.get(session, "templates.after_hours_b") == ""
        # the running test goes on deciding as before: B callers still get the B text
        plans = experiments.running_plans(session, settings.all_values(session))
        assert plans[0].texts["B"] == "Closed. Back {next_open}."
        assert plans[0].texts["A"] == settings.get(session, "templates.after_hours")


# ---------------------------------------------------------------- the settings page


def test_the_page_refuses_a_bad_experiment_by_name_and_only_admins_reach_it(
        client, web_users, session: Session) -> None:
    from conftest import csrf_token, login

    assert login(client, "desk").status_code == 302
    assert client.get("/settings/experiments").status_code == 403
    client.post("/logout", data={"csrf_token": csrf_token(client, "/inbox")})
    assert login(client, "owner").status_code == 302
    token = csrf_token(client, "/settings/experiments")
    form = {"csrf_token": token, "name": "Hooks", "kind": "hook",
            "template": "templates.business_hours", **HOOKS, "body": "This is {busines}.",
            "cta_a": "Reply here."}
    refused = client.post("/settings/experiments/start", data=form)
    assert refused.status_code == 400
    assert "Not started: cell A: unknown merge field {busines}; did you mean {business}?" in \
        refused.get_data(as_text=True)
    assert client.post("/settings/experiments/start", data={**form, "csrf_token": "x",
                                                            "body": BODY}).status_code == 400
    assert session.scalars(select(Experiment)).all() == []
    started = client.post("/settings/experiments/start", data={**form, "body": BODY})
    assert started.status_code == 302
    row = session.scalars(select(Experiment)).one()
    assert (row.kind, row.status, row.started_by) == ("hook", "running", "owner")
    assert client.post(f"/settings/experiments/{row.id}/stop",
                       data={"csrf_token": token}).status_code == 302
    session.refresh(row)
    assert row.status == experiments.STOPPED
    assert settings.get(session, "templates.business_hours") == \
        settings.defaults()["templates.business_hours"]
