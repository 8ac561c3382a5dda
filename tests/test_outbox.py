"""Outbox and dispatcher on a real SQLite database.

The transports here are scripted stand-ins for failure modes that a real trunk
cannot be made to produce on demand (a carrier rejecting a number, a flaky
link); the real SIP trunk is exercised in test_integration.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, selectinload

from agent.messages import outbox
from agent.messages.outbox import OutboundSms
from agent.store.db import DbRunner
from agent.store.models import Contact, Message
from agent.transports import SendError, SendResult
from agent.transports import dispatcher as dispatching
from agent.transports.dispatcher import DailyBudget, Dispatcher, RateLimiter

DATABASES = ("sqlite", "postgresql")  # the scale-out path must behave the same

# the dispatcher reads the real clock, so these rows were queued a minute ago
NOW = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)


class ScriptedTransport:
    def __init__(self, name: str, script: Callable[[OutboundSms], SendResult],
                 up: bool = True, per_minute: int = 600, per_day: int = 0) -> None:
        self.name = name
        self.script = script
        self.up = up
        self.max_per_minute = per_minute
        self.max_per_day = per_day
        self.sent: list[OutboundSms] = []

    def available(self) -> bool:
        return self.up

    async def send(self, sms: OutboundSms) -> SendResult:
        self.sent.append(sms)
        return self.script(sms)


def ok(_sms: OutboundSms) -> SendResult:
    return SendResult("submitted")


def queue(session: Session, number: str, key: str | None, **kw: object) -> Message | None:
    return outbox.enqueue(session, now=NOW, kind="textback", number=number,
                          body=f"hello {number}", idempotency_key=key, **kw)  # type: ignore[arg-type]


def test_one_call_is_queued_once(session: Session) -> None:
    assert queue(session, "+15551230001", "1795.1:textback") is not None
    assert queue(session, "+15551230001", "1795.1:textback") is None
    session.commit()
    rows = session.scalars(select(Message)).all()
    assert len(rows) == 1
    assert [e.status for e in rows[0].history] == ["queued"]


def test_claim_is_exclusive_and_respects_due_time(session: Session) -> None:
    queue(session, "+15551230001", "a")
    queue(session, "+15551230002", "b", send_at=NOW + dt.timedelta(minutes=2))
    session.commit()
    first = outbox.claim_due(session, NOW, "w1")
    assert [m.number for m in first] == ["+15551230001"]
    assert outbox.claim_due(session, NOW, "w2") == []
    later = outbox.claim_due(session, NOW + dt.timedelta(minutes=3), "w2")
    assert [m.number for m in later] == ["+15551230002"]
    assert outbox.next_due(session) is None


def run_until(engine: Engine, transports: list[ScriptedTransport],
              done: Callable[[list[Message]], bool], max_attempts: int = 3) -> list[Message]:
    runner = DbRunner(engine)
    disp = Dispatcher(runner, transports, worker="test", max_attempts=max_attempts)

    async def main() -> list[Message]:
        task = asyncio.create_task(disp.run())
        try:
            for _ in range(400):
                rows = await runner(lambda s: list(s.scalars(
                    select(Message).options(selectinload(Message.history)).order_by(Message.id))))
                if done(rows):
                    return rows
                await asyncio.sleep(0.02)
            raise AssertionError(f"dispatcher did not finish: {[m.status for m in rows]}")
        finally:
            task.cancel()

    try:
        return asyncio.run(main())
    finally:
        runner.close()


def settled(rows: list[Message]) -> bool:
    return all(m.status not in ("queued", "sending") for m in rows)


def test_invalid_number_never_blocks_the_queue(engine: Engine, session: Session) -> None:
    for n in range(1, 4):
        queue(session, f"+1555123000{n}", str(n))
    session.commit()

    def carrier(sms: OutboundSms) -> SendResult:
        if sms.number.endswith("1"):
            raise SendError("invalid destination", permanent=True)
        return SendResult("submitted")

    trunk = ScriptedTransport("sip", carrier)
    rows = run_until(engine, [trunk], settled)
    assert [(m.status, m.error_kind) for m in rows] == [
        ("failed", "permanent"), ("submitted", None), ("submitted", None)]
    assert len(trunk.sent) == 3  # the permanent failure was not retried
    assert [e.status for e in rows[1].history] == ["queued", "sending", "submitted"]


def test_temporary_errors_retry_with_backoff_then_give_up(
        engine: Engine, session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatching, "RETRY_FIRST", 0.05)
    queue(session, "+15551230001", "flaky")
    queue(session, "+15551230002", "dead")
    session.commit()
    calls: dict[str, int] = {}

    def flaky(sms: OutboundSms) -> SendResult:
        calls[sms.number] = calls.get(sms.number, 0) + 1
        if sms.number.endswith("2") or calls[sms.number] < 2:
            raise SendError("503 from carrier", permanent=False)
        return SendResult("submitted")

    rows = run_until(engine, [ScriptedTransport("sip", flaky)], settled, max_attempts=3)
    assert rows[0].status == "submitted" and rows[0].attempts == 2
    assert rows[1].status == "failed" and rows[1].error_kind == "temporary"
    assert rows[1].attempts == 3
    assert calls["+15551230002"] == 3


def test_failover_to_the_next_transport(engine: Engine, session: Session) -> None:
    queue(session, "+15551230001", "x")
    session.commit()

    def down(_sms: OutboundSms) -> SendResult:
        raise SendError("modem not answering", permanent=False)

    first = ScriptedTransport("gsm", down)
    second = ScriptedTransport("sip", ok)
    rows = run_until(engine, [first, second], settled)
    assert rows[0].status == "submitted" and rows[0].transport == "sip"
    assert len(first.sent) == 1 and len(second.sent) == 1


def test_opt_out_is_checked_at_send_time(engine: Engine, session: Session) -> None:
    queue(session, "+15551230001", "x", send_at=NOW)
    session.add(Contact(number="+15551230001", opted_out=True, created_at=NOW, tags=[]))
    session.commit()
    trunk = ScriptedTransport("sip", ok)
    rows = run_until(engine, [trunk], settled)
    assert rows[0].status == "cancelled"
    assert trunk.sent == []


def test_rate_limit_delays_without_spending_attempts(engine: Engine, session: Session) -> None:
    for n in range(1, 4):
        queue(session, f"+1555123000{n}", str(n))
    session.commit()
    trunk = ScriptedTransport("sip", ok, per_minute=2)
    rows = run_until(engine, [trunk], lambda rows: sum(m.status == "submitted" for m in rows)
                     == 2 and all(m.status != "sending" for m in rows))
    third = rows[2]
    assert third.status == "queued" and third.attempts == 0
    assert third.next_attempt_at is not None and third.next_attempt_at > NOW


def test_rate_limit_counts_sms_parts_not_messages(engine: Engine, session: Session) -> None:
    queue(session, "+15551230001", "long", segments=3)  # a three-part text
    queue(session, "+15551230002", "short", segments=1)
    session.commit()
    modem = ScriptedTransport("gsm", ok, per_minute=3)  # a SIM allowed 3 parts a minute
    rows = run_until(engine, [modem], lambda rows: rows[0].status == "submitted"
                     and rows[1].next_attempt_at is not None
                     and rows[1].next_attempt_at > NOW + dt.timedelta(minutes=1))
    assert [m.number for m in modem.sent] == ["+15551230001"]
    short = rows[1]
    assert short.status == "queued" and short.attempts == 0
    assert "gsm: rate limit" in (short.history[-1].detail or "")


def test_a_text_longer_than_the_whole_bucket_still_goes() -> None:
    limiter = RateLimiter(per_minute=2)
    assert limiter.take(limiter.stamp, parts=5)  # a full bucket lets it through
    assert not limiter.take(limiter.stamp, parts=1)
    assert limiter.wait_time(parts=1) == pytest.approx(30.0)


def test_a_daily_limit_moves_texts_to_the_next_transport(engine: Engine,
                                                         session: Session) -> None:
    queue(session, "+15551230001", "a", segments=2)
    queue(session, "+15551230002", "b", segments=2)  # 4 parts would pass the SIM's 3 a day
    session.commit()
    modem = ScriptedTransport("gsm", ok, per_day=3)
    trunk = ScriptedTransport("sip", ok)
    rows = run_until(engine, [modem, trunk], settled)
    assert [m.transport for m in rows] == ["gsm", "sip"]
    assert [m.number for m in modem.sent] == ["+15551230001"]
    assert [m.number for m in trunk.sent] == ["+15551230002"]


def test_the_daily_limit_counts_what_was_sent_before_a_restart(engine: Engine,
                                                               session: Session) -> None:
    now = dt.datetime.now(dt.UTC)
    for key, hours_ago in (("yesterday", 25), ("this morning", 23)):
        sent = queue(session, "+15551230009", key, segments=3)
        assert sent is not None
        sent.transport = "gsm"
        outbox.transition(sent, "sent", now - dt.timedelta(hours=hours_ago))
    queue(session, "+15551230001", "new")
    session.commit()
    modem = ScriptedTransport("gsm", ok, per_day=3)  # this morning's 3 parts used it up
    rows = run_until(engine, [modem], lambda rows: rows[2].next_attempt_at > NOW)  # type: ignore[operator]
    assert modem.sent == [] and rows[2].status == "queued" and rows[2].attempts == 0
    assert rows[2].history[-1].detail == "gsm: daily limit (3 parts in 24 h)"
    # it waits until this morning's parts leave the 24 hours: an hour after `now`
    retry = (rows[2].next_attempt_at - now).total_seconds()  # type: ignore[operator]
    assert 3600 - 5 < retry < 3600 + 60, retry


def test_daily_budget_window() -> None:
    budget = DailyBudget(per_day=5)
    budget.spend(1000.0, 4)
    assert budget.allows(1000.0, 1) and not budget.allows(1000.0, 2)
    assert budget.wait_time(1000.0) == pytest.approx(86400.0)
    assert budget.allows(1000.0 + 86400.0, 5)  # a day later the parts are forgotten
    assert DailyBudget(per_day=0).allows(0.0, 10_000)  # 0: no daily limit


def test_a_pinned_message_waits_for_its_transport(engine: Engine, session: Session) -> None:
    queue(session, "+15551230001", None, transport="gsm")
    session.commit()
    trunk = ScriptedTransport("sip", ok)
    modem = ScriptedTransport("gsm", ok, up=False)
    rows = run_until(engine, [modem, trunk], lambda rows: rows[0].attempts == 1)
    assert trunk.sent == [] and rows[0].status == "queued"
    assert rows[0].error == "gsm: unavailable"
    modem.up = True
    rows = run_until(engine, [modem, trunk], settled)
    assert rows[0].status == "submitted" and rows[0].transport == "gsm"
    assert [m.number for m in modem.sent] == ["+15551230001"] and trunk.sent == []


def test_interrupted_send_is_failed_not_repeated(engine: Engine, session: Session) -> None:
    queue(session, "+15551230001", "x")
    session.commit()
    outbox.claim_due(session, NOW, "test")  # a previous run died here
    session.commit()
    trunk = ScriptedTransport("sip", ok)
    rows = run_until(engine, [trunk], settled)
    assert rows[0].status == "failed" and rows[0].error_kind == "unknown"
    assert trunk.sent == []


def test_a_text_back_due_now_is_claimed_in_the_same_commit(session: Session) -> None:
    due = queue(session, "+15551230001", "now", claim_for="agent-1")
    later = queue(session, "+15551230002", "later", claim_for="agent-1",
                  send_at=NOW + dt.timedelta(hours=1))
    session.commit()
    assert due is not None and later is not None
    assert (due.status, due.claimed_by) == ("sending", "agent-1")
    assert [e.status for e in due.history] == ["queued", "sending"]
    assert later.status == "queued" and later.claimed_by is None
    # nobody else can claim the first one; the second waits for its time
    assert outbox.claim_due(session, NOW, "agent-2") == []
