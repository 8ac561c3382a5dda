"""Outbox and dispatcher on a real SQLite database.

The transports here are scripted stand-ins for failure modes that a real trunk
cannot be made to produce on demand (a carrier rejecting a number, a flaky
link); the real SIP trunk is exercised in test_integration.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy import Engine, func, select
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
# a minute before the test runs (read per test, not at import: a long run or a test
# started near midnight must not see a stale "now"); the dispatcher reads the clock itself
NOW = dt.datetime.min.replace(tzinfo=dt.UTC)  # set by _now before each test


@pytest.fixture(autouse=True)
def _now(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(globals(), "NOW", dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))


class ScriptedTransport:
    def __init__(self, name: str, script: Callable[[OutboundSms], SendResult],
                 up: bool = True, per_minute: int = 600, per_day: int = 0,
                 clock: Callable[[], dt.datetime] | None = None) -> None:
        self.name = name
        self.script = script
        self.up = up
        self.max_per_minute = per_minute
        self.max_per_day = per_day
        self.clock = clock
        self.sent: list[OutboundSms] = []
        self.times: list[dt.datetime] = []  # when each was sent, by `clock`
        self.gate: asyncio.Event | None = None  # while set to an unset Event, sends wait

    def available(self) -> bool:
        return self.up

    async def send(self, sms: OutboundSms) -> SendResult:
        if self.gate is not None:
            await self.gate.wait()
        self.sent.append(sms)
        if self.clock is not None:
            self.times.append(self.clock())
        return self.script(sms)


class Clock:
    """The dispatcher's clock in the tests that need one: it moves only when told."""

    def __init__(self, at: dt.datetime) -> None:
        self.at = at

    def __call__(self) -> dt.datetime:
        return self.at


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
    return all(m.status not in ("queued", "claimed", "sending") for m in rows)


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
    assert [e.status for e in rows[1].history] == ["queued", "claimed", "sending", "submitted"]
    assert [e.detail for e in rows[1].history][1:3] == ["test", "sip"]  # worker, transport


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


def test_a_send_that_may_have_left_is_retried_through_its_transport_only(
        engine: Engine, session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    """A messaging API that took the request and never answered: failing over could
    text the customer twice, so the text waits for that transport, pinned to it."""
    monkeypatch.setattr(dispatching, "RETRY_FIRST", 0.05)
    queue(session, "+15551230001", "x")
    session.commit()
    tries: list[int] = []

    def unanswered_once(sms: OutboundSms) -> SendResult:
        tries.append(sms.attempts)
        if len(tries) == 1:
            raise SendError("no answer", permanent=False, uncertain=True)
        assert sms.pinned_transport == "twilio"
        return SendResult("submitted", provider_id="SM1")

    first = ScriptedTransport("twilio", unanswered_once)
    second = ScriptedTransport("sip", ok)
    rows = run_until(engine, [first, second], settled)
    assert (rows[0].status, rows[0].transport, rows[0].provider_id) == (
        "submitted", "twilio", "SM1")
    assert tries == [0, 1] and second.sent == []


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

    def third_waits(rows: list[Message]) -> bool:
        # done once the third was claimed and given back with its turn, not merely
        # before the dispatcher reached it
        return (sum(m.status == "submitted" for m in rows) == 2 and rows[2].status == "queued"
                and "rate limit" in (rows[2].history[-1].detail or ""))

    rows = run_until(engine, [trunk], third_waits)
    third = rows[2]
    assert [e.status for e in third.history] == ["queued", "claimed", "queued"]
    assert third.attempts == 0 and third.error is None
    assert third.next_attempt_at is not None and third.next_attempt_at > NOW
    # its turn: when the bucket (2 a minute, both spent) has a token again, 30 s on
    waited = third.next_attempt_at - third.history[-1].at
    assert dt.timedelta(seconds=29) < waited <= dt.timedelta(seconds=30), waited


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
    (claimed,) = outbox.claim_due(session, NOW, "test")
    assert outbox.hand_over(session, claimed.id, NOW, "test", "sip")  # a previous run died here
    session.commit()
    trunk = ScriptedTransport("sip", ok)
    rows = run_until(engine, [trunk], settled)
    assert rows[0].status == "failed" and rows[0].error_kind == "unknown"
    assert trunk.sent == []


def test_a_claim_never_handed_over_is_sent_after_a_restart(engine: Engine,
                                                           session: Session) -> None:
    queue(session, "+15551230001", "claimed")
    queue(session, "+15551230002", "in flight")
    queue(session, "+15551230003", "other worker")
    session.commit()
    _claimed, handed = outbox.claim_due(session, NOW, "test", limit=2)
    outbox.claim_due(session, NOW, "elsewhere")  # another agent's claim is its own business
    assert outbox.hand_over(session, handed.id, NOW, "test", "sip")
    session.commit()  # a previous run died with one claimed, one handed to the trunk
    trunk = ScriptedTransport("sip", ok)
    rows = run_until(engine, [trunk], lambda rows: rows[0].status == "submitted"
                     and rows[1].status == "failed")
    assert [m.number for m in trunk.sent] == ["+15551230001"]
    assert [e.status for e in rows[0].history] == [
        "queued", "claimed", "queued", "claimed", "sending", "submitted"]
    assert "never handed to a transport" in (rows[0].history[2].detail or "")
    assert rows[0].attempts == 1  # waiting in a dead worker's hands cost no attempt
    assert rows[1].error_kind == "unknown"
    assert rows[2].status == "claimed"


def test_a_text_back_due_now_is_claimed_in_the_same_commit(session: Session) -> None:
    due = queue(session, "+15551230001", "now", claim_for="agent-1")
    later = queue(session, "+15551230002", "later", claim_for="agent-1",
                  send_at=NOW + dt.timedelta(hours=1))
    session.commit()
    assert due is not None and later is not None
    assert (due.status, due.claimed_by) == ("claimed", "agent-1")
    assert [e.status for e in due.history] == ["queued", "claimed"]
    assert later.status == "queued" and later.claimed_by is None
    # nobody else can claim the first one; the second waits for its time
    assert outbox.claim_due(session, NOW, "agent-2") == []


# --- rate-limited backlogs, stops and restarts, on a clock the test moves: the
# --- dispatcher's turns are instants on that clock, so nothing here waits for them

T0 = dt.datetime(2026, 3, 2, 14, 0, tzinfo=dt.UTC)


def queue_at(session: Session, when: dt.datetime, numbers: range, **kw: object) -> None:
    for n in numbers:
        outbox.enqueue(session, now=when, kind="textback", number=f"+1555100{n:04d}",
                       body=f"hello {n}", idempotency_key=f"k{n}", **kw)  # type: ignore[arg-type]
    session.commit()


State = dict[str, tuple[int, dt.datetime]]  # status: (how many, the soonest due)


def states(runner: DbRunner) -> Callable[[], Awaitable[State]]:
    async def read() -> State:
        return await runner(lambda s: {status: (count, due) for status, count, due in s.execute(
            select(Message.status, func.count(), func.min(Message.next_attempt_at))
            .group_by(Message.status))})
    return read


async def follow(disp: Dispatcher, clock: Clock, runner: DbRunner,
                 done: Callable[[State], bool]) -> None:
    """Let the dispatcher work; whenever it has nothing due, move the clock to the next
    turn (never past one) and wake it, until `done`."""
    read = states(runner)
    for _ in range(20_000):
        state = await read()
        if done(state):
            return
        if "queued" in state and "claimed" not in state and "sending" not in state:
            soonest = state["queued"][1].replace(tzinfo=dt.UTC)  # aggregates lose the type
            if soonest > clock.at:
                clock.at = soonest
                disp.wake()
        await asyncio.sleep(0.005)
    raise AssertionError(f"dispatcher did not finish: {state}")


def run_to(disp: Dispatcher, clock: Clock, runner: DbRunner,
           done: Callable[[State], bool]) -> None:
    """Run the dispatcher, following its turns, until `done`; then stop it as the agent
    does (drain, give claims back)."""
    async def main() -> None:
        task = asyncio.create_task(disp.run())
        try:
            await follow(disp, clock, runner, done)
        finally:
            await disp.drain(timeout=5)
            task.cancel()

    asyncio.run(main())


def waiting(state: State, count: int, after: dt.datetime) -> bool:
    """`count` texts queued, none due before `after`."""
    queued, soonest = state.get("queued", (0, None))
    return queued == count and soonest is not None and soonest.replace(tzinfo=dt.UTC) > after


def history(engine: Engine) -> list[Message]:
    with Session(engine) as s:
        return list(s.scalars(select(Message).options(selectinload(Message.history))
                              .order_by(Message.id)))


def all_sent(state: State) -> bool:
    return set(state) == {"submitted"}


def test_a_backlog_is_claimed_about_once_per_text(engine: Engine, session: Session) -> None:
    queue_at(session, T0, range(240))
    clock = Clock(T0)
    trunk = ScriptedTransport("sip", ok, per_minute=60, clock=clock)
    runner = DbRunner(engine)
    disp = Dispatcher(runner, [trunk], worker="test", max_attempts=3, clock=clock)

    try:
        run_to(disp, clock, runner, all_sent)
    finally:
        runner.close()
    rows = history(engine)
    assert sorted(m.number for m in trunk.sent) == sorted(m.number for m in rows)  # once each
    assert {m.attempts for m in rows} == {1}  # waiting spent no attempt
    claims = [sum(e.status == "claimed" for e in m.history) for m in rows]
    events = [len(m.history) for m in rows]
    assert max(claims) <= 2 and sum(claims) <= 240 + 2, claims
    # queued, claimed, sending, submitted; those that waited: one more line with their
    # turn, and the one that found the bucket empty a second claim
    assert max(events) <= 6 and sum(events) <= 5 * 240 + 2, events
    # a burst of 60 (a full bucket), then one a second, at the turns given
    assert trunk.times[:60] == [T0] * 60
    gaps = [(b - a).total_seconds()
            for a, b in zip(trunk.times[59:-1], trunk.times[60:], strict=True)]
    assert min(gaps) >= 1.0 - 1e-6 and trunk.times[-1] - T0 < dt.timedelta(seconds=181)


def test_a_stop_during_a_rate_limited_backlog_strands_nothing(engine: Engine,
                                                              session: Session) -> None:
    queue_at(session, T0, range(6))
    clock = Clock(T0)
    trunk = ScriptedTransport("sip", ok, per_minute=2, clock=clock)
    runner = DbRunner(engine)
    disp = Dispatcher(runner, [trunk], worker="test", max_attempts=3, clock=clock)
    read = states(runner)

    async def stop_mid_backlog() -> None:
        task = asyncio.create_task(disp.run())
        await follow(disp, clock, runner, lambda state: state.get("submitted", (0,))[0] == 2
                     and waiting(state, 4, T0))
        # the third's turn comes and its send is under way when the stop comes; a
        # text-back was just claimed for this worker and not handed over yet
        trunk.gate = asyncio.Event()
        clock.at = (await read())["queued"][1].replace(tzinfo=dt.UTC)
        disp.wake()
        while "sending" not in await read():
            await asyncio.sleep(0.002)
        await runner(lambda s: outbox.enqueue(
            s, now=clock.at, kind="textback", number="+15551009999", body="hello",
            idempotency_key="claimed at the stop", claim_for="test"))
        stopping = asyncio.create_task(disp.drain(timeout=30))
        await asyncio.sleep(0.05)
        trunk.gate.set()  # the transport answers while the stop waits for it
        await stopping
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    try:
        asyncio.run(stop_mid_backlog())
        rows = history(engine)
        assert [m.status for m in rows] == ["submitted"] * 3 + ["queued"] * 4
        assert {m.attempts for m in rows[3:]} == {0}
        assert rows[-1].history[-1].detail == dispatching.STOPPED
        first_run = list(trunk.sent)

        # the restart, at the same instant: every text is sent, once
        trunk2 = ScriptedTransport("sip", ok, per_minute=2, clock=clock)
        disp2 = Dispatcher(runner, [trunk2], worker="test", max_attempts=3, clock=clock)

        run_to(disp2, clock, runner, all_sent)
    finally:
        runner.close()
    numbers = [m.number for m in first_run + trunk2.sent]
    assert len(numbers) == len(set(numbers)) == 7
    assert {m.attempts for m in history(engine)} == {1}


def test_a_restart_within_the_minute_keeps_the_per_minute_limit(engine: Engine,
                                                                 session: Session) -> None:
    queue_at(session, T0, range(3))
    clock = Clock(T0)
    runner = DbRunner(engine)
    sent: list[dt.datetime] = []

    def run(done: Callable[[State], bool]) -> None:
        trunk = ScriptedTransport("sip", ok, per_minute=3, clock=clock)
        disp = Dispatcher(runner, [trunk], worker="test", max_attempts=3, clock=clock)
        run_to(disp, clock, runner, done)
        sent.extend(trunk.times)

    try:
        run(all_sent)  # 3 a minute: a full bucket, spent at T0
        assert sent == [T0] * 3
        clock.at = T0 + dt.timedelta(seconds=10)
        queue_at(session, clock.at, range(3, 6))
        # the restart finds the bucket the first run emptied: the new texts wait for turns
        run(lambda state: waiting(state, 3, clock.at))
        assert sent == [T0] * 3
        turns = sorted(m.next_attempt_at for m in history(engine) if m.status == "queued")
        # a bucket of 3 refills one token every 20 s: none before T0 + 20 s
        assert turns[0] >= T0 + dt.timedelta(seconds=20), turns
        run(all_sent)
    finally:
        runner.close()
    assert len(sent) == 6 and sent[3] >= T0 + dt.timedelta(seconds=20), sent
    in_first_minute = [at for at in sent if at < T0 + dt.timedelta(seconds=60)]
    assert len(in_first_minute) <= 3 + 2  # the 3 of T0, then one per 20 s at most


def test_a_claimed_text_cancelled_before_its_send_is_not_sent(engine: Engine,
                                                              session: Session) -> None:
    due = queue(session, "+15551230001", "reached", claim_for="test")
    session.commit()
    assert due is not None and due.status == "claimed"
    # the customer called again and was answered before the dispatcher got to it
    assert outbox.cancel_queued(session, "+15551230001", NOW, "reached") == [due]
    session.commit()
    trunk = ScriptedTransport("sip", ok)
    runner = DbRunner(engine)
    disp = Dispatcher(runner, [trunk], worker="test", max_attempts=3)

    async def main() -> None:
        disp.submit(outbox.outbound(due))
        await disp.drain(timeout=5)

    try:
        asyncio.run(main())
    finally:
        runner.close()
    assert trunk.sent == []
    assert [e.status for e in history(engine)[0].history] == ["queued", "claimed", "cancelled"]


def test_a_claim_left_by_a_database_error_is_sent_once(
        engine: Engine, session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy.exc import OperationalError

    queue(session, "+15551230001", "x")
    session.commit()
    hand_over = outbox.hand_over
    refusals = [OperationalError("UPDATE messages", {}, Exception("database is locked"))]

    def locked_once(*args: object) -> bool:
        if refusals:
            raise refusals.pop()
        return hand_over(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(outbox, "hand_over", locked_once)
    monkeypatch.setattr(dispatching, "ORPHAN_AFTER", 0.0)  # no wait for the claim to age
    trunk = ScriptedTransport("sip", ok)
    rows = run_until(engine, [trunk], settled)
    assert [m.number for m in trunk.sent] == ["+15551230001"]
    assert [e.status for e in rows[0].history] == [
        "queued", "claimed", "queued", "claimed", "sending", "submitted"]
    assert rows[0].history[2].detail == dispatching.ORPHANED and rows[0].attempts == 1
