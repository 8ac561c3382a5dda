"""The decision step for finished calls (agent.calls.missed.record, as the agent runs
it) on a real database, with calls as the CallTracker hands them over: what is
stored, queued, cancelled and stopped; and the agent's CDR look-ups feeding it."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Record
from flask.testing import FlaskClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from agent import daemon
from agent.calls.tracker import FinishedCall
from agent.config import parse
from agent.daemon import Agent
from agent.messages.outbox import OutboundSms
from agent.rules import settings
from agent.store import db as store_db
from agent.store import status
from agent.store.models import Call, Contact, Job, Message

pytestmark = pytest.mark.clock  # make test-clock runs it at awkward instants too

# missed.record takes the time in: a fixed instant. The tests of the running agent (it
# reads the clock itself) take theirs from the clock inside the test.
T0 = dt.datetime(2026, 12, 1, 14, 55, tzinfo=dt.UTC)
CUSTOMER = "+12125550142"


def finished(linkedid: str, *, direction: str = "inbound", missed: bool = True,
             caller: str | None = CUSTOMER, did: str = "+15550000100",
             at: dt.datetime = T0) -> FinishedCall:
    end = at.timestamp()
    return FinishedCall(linkedid, caller, "Dana Fischer", did, direction,  # type: ignore[arg-type]
                        missed, "noanswer" if missed else None, False,
                        None if missed else "PJSIP/desk", 4.0, end - 5, end,
                        "trunk" if direction == "inbound" else None)


def test_missed_call_is_stored_queued_and_followed_up(record: Record, session: Session) -> None:
    sms, described = record(session, finished("1.1"), T0)
    session.commit()
    assert isinstance(sms, OutboundSms) and sms.number == CUSTOMER
    assert "queued text-back" in described
    call = session.scalars(select(Call)).one()
    assert (call.decision, call.caller, call.reason) == ("send", CUSTOMER, "noanswer")
    assert [j.kind for j in session.scalars(select(Job))] == ["followup"] * 3
    # the same call handed over again (a replayed event, a restart) changes nothing
    again, described = record(session, finished("1.1"), T0)
    assert again is False and "seen before" in described


def test_the_business_calling_back_stops_everything(record: Record, session: Session) -> None:
    settings.set(session, "textback.delay", "2m", T0)
    queued, _ = record(session, finished("2.1"), T0)
    assert queued is True  # waiting for its delay, not sent yet
    callback = finished("2.2", direction="outbound", missed=False, caller="100",
                        did=CUSTOMER, at=T0 + dt.timedelta(seconds=40))
    record(session, callback, T0 + dt.timedelta(seconds=40))
    session.commit()
    textback = session.scalars(select(Message)).one()
    assert textback.status == "cancelled"
    assert textback.history[-1].detail == "the business called back"
    assert session.scalars(select(Contact)).one().contacted_at is not None
    assert {j.status for j in session.scalars(select(Job))} == {"cancelled"}


def test_skips_are_recorded_with_their_reason(record: Record, session: Session) -> None:
    record(session, finished("3.1", caller=None), T0)
    record(session, finished("3.2", direction="internal", caller="101"), T0)
    session.commit()
    reasons = [(c.decision, c.skip_reason) for c in session.scalars(select(Call).order_by(Call.id))]
    assert reasons == [("skip", "withheld"), ("skip", "not_inbound")]
    assert session.scalars(select(Message)).all() == []


# --- calls the AMI link did not see, read back from Asterisk's CDR file (agent/cdr.py)

def cdr_line(linkedid: str, caller: str, ended: dt.datetime, disposition: str = "BUSY",
             dstchannel: str = "PJSIP/desk-00000001") -> str:
    """A Master.csv row as the lab Asterisk writes it (usegmtime, every optional column)."""
    def stamp(moment: dt.datetime) -> str:
        return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")

    start = ended - dt.timedelta(seconds=6)
    answer = f'"{stamp(ended - dt.timedelta(seconds=2))}"' if disposition == "ANSWERED" else ""
    return (f'"","{caller}","100","from-internal","""Dana Fischer"" <{caller}>",'
            f'"PJSIP/trunk-00000000","{dstchannel}","Dial","PJSIP/desk,20",'
            f'"{stamp(start)}",{answer},"{stamp(ended)}",6,0,"{disposition}",'
            f'"DOCUMENTATION","{linkedid}","","","{linkedid}",1')


@pytest.fixture
def cdr_csv(tmp_path: Path) -> Path:
    return tmp_path / "Master.csv"


@pytest.fixture
def cdr_agent(engine: Engine, tmp_path: Path, cdr_csv: Path,
              monkeypatch: pytest.MonkeyPatch) -> tuple[Agent, list[OutboundSms]]:
    """An agent reading `cdr_csv`; what it hands its dispatcher is collected, not sent."""
    config = parse({"ami": {"secret": "x"}, "database": {"url": str(engine.url)},
                    "pbx": {"cdr_csv": str(cdr_csv)}}, tmp_path / "textback.toml")
    agent = Agent(config)
    submitted: list[OutboundSms] = []
    monkeypatch.setattr(agent.dispatcher, "submit",
                        lambda sms, handed_to=None: submitted.append(sms))
    return agent, submitted


def test_a_call_from_the_cdr_is_recorded_as_such_and_never_texted_twice(
        record: Record, session: Session) -> None:
    sms, _ = record(session, finished("4.1"), T0, source="cdr")
    assert isinstance(sms, OutboundSms)
    again, described = record(session, finished("4.1"), T0)  # then seen live too
    session.commit()
    assert again is False and "seen before" in described
    call = session.scalars(select(Call)).one()
    assert (call.source, call.decision) == ("cdr", "send")
    assert len(session.scalars(select(Message)).all()) == 1


@pytest.mark.parametrize(("minutes_ago", "texted"), [(29, True), (31, False)])
def test_a_call_learnt_over_30_minutes_late_is_recorded_but_not_texted(
        record: Record, session: Session, minutes_ago: int, texted: bool) -> None:
    now = dt.datetime.now(dt.UTC)
    ended = now - dt.timedelta(minutes=minutes_ago)
    record(session, finished("5.1", at=ended), now, source="cdr")
    session.commit()
    call = session.scalars(select(Call)).one()
    assert (call.missed, call.source) == (True, "cdr")
    assert call.decision == ("send" if texted else "skip")
    assert call.skip_reason == (None if texted else "too_late")
    assert len(session.scalars(select(Message)).all()) == int(texted)


def test_reconciling_texts_each_unseen_missed_call_once(record: Record,
        cdr_agent: tuple[Agent, list[OutboundSms]], cdr_csv: Path, session: Session) -> None:
    agent, submitted = cdr_agent
    now = dt.datetime.now(dt.UTC)
    seen_live, unseen, answered = "+12125550101", "+12125550102", "+12125550103"
    record(session, finished("1800.1", caller=seen_live, at=now - dt.timedelta(minutes=3)),
           now)
    session.commit()
    cdr_csv.write_text("\n".join([
        cdr_line("1800.1", seen_live, now - dt.timedelta(minutes=3)),
        cdr_line("1800.2", unseen, now - dt.timedelta(minutes=2)),
        cdr_line("1800.3", answered, now - dt.timedelta(minutes=1), "ANSWERED"),
    ]) + "\n")
    window = ((now - dt.timedelta(minutes=10)).timestamp(), now.timestamp())
    for _ in range(2):  # looked up twice (an outage, then a restart): texted once
        asyncio.run(agent.reconcile(*window))
    assert [sms.number for sms in submitted] == [unseen]
    session.expire_all()
    rows = {c.caller: (c.source, c.reason, c.decision) for c in session.scalars(select(Call))}
    assert rows == {seen_live: ("live", "noanswer", "send"), unseen: ("cdr", "busy", "send")}
    assert sorted(m.number for m in session.scalars(select(Message))) == [seen_live, unseen]


def test_start_up_looks_back_30_minutes_once_calls_were_recorded(record: Record,
        cdr_agent: tuple[Agent, list[OutboundSms]], cdr_csv: Path, session: Session,
        monkeypatch: pytest.MonkeyPatch) -> None:
    agent, submitted = cdr_agent
    monkeypatch.setattr(daemon, "CDR_WRITE_DELAY", 0.0)
    now = dt.datetime.now(dt.UTC)
    recent, old = "+12125550104", "+12125550105"
    cdr_csv.write_text("\n".join([
        cdr_line("1900.1", old, now - dt.timedelta(minutes=40)),
        cdr_line("1900.2", recent, now - dt.timedelta(minutes=10)),
    ]) + "\n")

    async def start() -> None:
        await agent.look_up_after_start()
        await until_submitted(submitted, timeout=0.5)

    asyncio.run(start())  # a fresh install: the PBX's past is not ours
    assert submitted == [] and session.scalars(select(Call)).all() == []
    record(session, finished("1900.0", at=now - dt.timedelta(hours=2)), now)
    session.commit()
    asyncio.run(start())
    assert [sms.number for sms in submitted] == [recent]
    session.expire_all()
    assert old not in {c.caller for c in session.scalars(select(Call))}


def test_an_unreadable_cdr_file_is_logged_with_the_fix(
        cdr_agent: tuple[Agent, list[OutboundSms]], caplog: pytest.LogCaptureFixture) -> None:
    agent, submitted = cdr_agent
    now = time.time()
    with caplog.at_level(logging.ERROR, "agent.daemon"):
        asyncio.run(agent.reconcile(now - 60, now))  # the file does not exist
    assert "cannot read the CDR file" in caplog.text and "usermod -aG asterisk" in caplog.text
    assert submitted == []


async def until_submitted(submitted: list[OutboundSms], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not submitted and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


def test_a_call_ringing_when_the_link_dropped_is_texted_once_it_is_back(
        cdr_agent: tuple[Agent, list[OutboundSms]], cdr_csv: Path, session: Session) -> None:
    agent, submitted = cdr_agent
    now = dt.datetime.now(dt.UTC)
    cdr_csv.write_text(cdr_line("2100.1", CUSTOMER, now) + "\n")

    async def outage() -> None:
        agent.on_event({"Event": "Newchannel", "Channel": "PJSIP/trunk-00000001",
                        "Uniqueid": "2100.1", "Linkedid": "2100.1", "CallerIDNum": CUSTOMER,
                        "Exten": "+15550000100", "Context": "from-trunk"})
        agent.on_down()  # its Hangup is never seen
        agent.on_up(False)
        await until_submitted(submitted)

    asyncio.run(outage())
    assert [sms.number for sms in submitted] == [CUSTOMER]
    assert [c.source for c in session.scalars(select(Call))] == ["cdr"]


def test_a_call_that_began_before_ami_was_watched_is_read_from_the_cdr(
        cdr_agent: tuple[Agent, list[OutboundSms]], cdr_csv: Path, session: Session,
        monkeypatch: pytest.MonkeyPatch) -> None:
    agent, submitted = cdr_agent
    monkeypatch.setattr(daemon, "CDR_WRITE_DELAY", 0.0)
    cdr_csv.write_text(cdr_line("2200.1", CUSTOMER, dt.datetime.now(dt.UTC)) + "\n")
    leg = {"Channel": "PJSIP/trunk-00000001", "Uniqueid": "2200.1", "Linkedid": "2200.1"}

    async def joined_mid_call() -> None:
        agent.on_event({"Event": "Newstate", "ChannelStateDesc": "Ringing", **leg})
        agent.on_event({"Event": "Hangup", "Cause": "17", **leg})
        await until_submitted(submitted)

    asyncio.run(joined_mid_call())
    assert [sms.number for sms in submitted] == [CUSTOMER]
    assert [(c.source, c.reason) for c in session.scalars(select(Call))] == [("cdr", "busy")]


def test_a_call_whose_rows_come_late_is_looked_for_until_they_do(
        cdr_agent: tuple[Agent, list[OutboundSms]], cdr_csv: Path, session: Session,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # it hung up just as the link came back: the first look at the file is too early
    agent, submitted = cdr_agent
    monkeypatch.setattr(daemon, "CDR_WRITE_DELAY", 0.05)
    monkeypatch.setattr(daemon, "CDR_LOOK_MAX_INTERVAL", 0.2)
    cdr_csv.write_text("")

    async def outage() -> None:
        agent.on_event({"Event": "Newchannel", "Channel": "PJSIP/trunk-00000001",
                        "Uniqueid": "2300.1", "Linkedid": "2300.1", "CallerIDNum": CUSTOMER,
                        "Exten": "+15550000100", "Context": "from-trunk"})
        agent.on_down()
        agent.on_up(False)
        await asyncio.sleep(0.5)  # looked, found nothing, looks again later
        assert submitted == []
        cdr_csv.write_text(cdr_line("2300.1", CUSTOMER, dt.datetime.now(dt.UTC)) + "\n")
        await until_submitted(submitted)
        await asyncio.sleep(0.5)  # accounted for: no more looks, nothing texted twice

    asyncio.run(outage())
    assert [sms.number for sms in submitted] == [CUSTOMER]
    assert [c.source for c in session.scalars(select(Call))] == ["cdr"]
    assert not agent._cdr_looking


def test_start_up_looks_at_the_whole_window_not_only_after_the_newest_call(
        record: Record, cdr_agent: tuple[Agent, list[OutboundSms]], cdr_csv: Path,
        session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    # a call the last run lost (a database fault) ended before the newest one it recorded
    agent, submitted = cdr_agent
    monkeypatch.setattr(daemon, "CDR_WRITE_DELAY", 0.0)
    now = dt.datetime.now(dt.UTC)
    lost, later = "+12125550106", "+12125550107"
    record(session, finished("2400.2", caller=later, at=now - dt.timedelta(minutes=2)), now)
    session.commit()
    cdr_csv.write_text("\n".join([
        cdr_line("2400.1", lost, now - dt.timedelta(minutes=5)),
        cdr_line("2400.2", later, now - dt.timedelta(minutes=2)),
    ]) + "\n")

    async def start() -> None:
        await agent.look_up_after_start()
        await until_submitted(submitted)

    asyncio.run(start())
    assert [sms.number for sms in submitted] == [lost]


def test_a_database_locked_past_its_timeout_loses_no_call_and_keeps_the_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(store_db, "BUSY_TIMEOUT", 0.1)
    path = tmp_path / "textback.db"
    url = f"sqlite:///{path}"
    engine = store_db.make_engine(url)
    store_db.migrate(engine)
    agent = Agent(parse({"ami": {"secret": "x"}, "database": {"url": url}},
                        tmp_path / "textback.toml"))
    submitted: list[OutboundSms] = []
    monkeypatch.setattr(agent.dispatcher, "submit",
                        lambda sms, handed_to=None: submitted.append(sms))
    callers = [f"+1212555030{n}" for n in range(5)]
    # a backup or a long transaction holds the write lock far longer than the timeout
    holder = sqlite3.connect(path)
    holder.execute("BEGIN IMMEDIATE")

    async def locked() -> dict[str, Any] | None:
        now = dt.datetime.now(dt.UTC)
        tasks = [asyncio.create_task(agent.handle(finished(f"2500.{n}", caller=caller, at=now)))
                 for n, caller in enumerate(callers)]
        await asyncio.sleep(1.0)  # several attempts fail meanwhile
        seen = status.read(status.path_for(url))  # type: ignore[arg-type]
        holder.rollback()
        await asyncio.wait(tasks, timeout=30)
        return seen

    with caplog.at_level(logging.WARNING, "agent.daemon"):
        during = asyncio.run(locked())
    holder.close()
    agent.db.close()
    assert during is not None and during["calls_waiting"] == len(callers)
    assert "kept in memory" in caplog.text and "the database is back" in caplog.text
    with store_db.sessions(engine)() as session:
        calls = session.scalars(select(Call).order_by(Call.id)).all()
        assert [c.caller for c in calls] == callers  # each once, in the order they ended
        assert len(session.scalars(select(Message)).all()) == len(callers)
    assert sorted(sms.number for sms in submitted) == callers
    after = status.read(status.path_for(url))  # type: ignore[arg-type]
    assert after is not None and after["calls_waiting"] == 0
    engine.dispose()


def test_healthz_says_when_the_agent_holds_calls_the_database_did_not_take(
        client: FlaskClient, engine: Engine) -> None:
    assert client.get("/healthz").status_code == 200
    path = status.path_for(engine.url.render_as_string(hide_password=False))
    assert path is not None
    status.write(path, {"calls_waiting": 3, "database_unavailable_since": "2026-01-05T10:00"})
    answer = client.get("/healthz")
    assert answer.status_code == 503
    assert answer.get_json()["status"] == "degraded"
    assert answer.get_json()["agent"]["calls_waiting"] == 3
    status.write(path, {"calls_waiting": 0})
    assert client.get("/healthz").status_code == 200


class Trunk:
    """A transport that takes every text (the real trunk is in test_integration)."""

    name = "sip"
    max_per_minute = 2
    max_per_day = 0

    def __init__(self) -> None:
        self.sent: list[OutboundSms] = []

    def available(self) -> bool:
        return True

    async def send(self, sms: OutboundSms) -> Any:
        from agent.transports import SendResult

        self.sent.append(sms)
        return SendResult("submitted")


@pytest.mark.databases("sqlite", "postgresql")
def test_a_text_back_due_now_is_in_flight_as_its_call_is_committed(
        engine: Engine, tmp_path: Path) -> None:
    # the text-back of a missed call is handed to its transport in the transaction that
    # records the call (one commit, not two, before it leaves); a call not texted, or a
    # text that cannot go now, gives its transport's token back
    from agent.transports.dispatcher import Dispatcher

    agent = Agent(parse({"ami": {"secret": "x"}, "database": {"url": str(engine.url)}},
                        tmp_path / "textback.toml"))
    trunk = Trunk()
    agent.dispatcher = Dispatcher(agent.db, [trunk], worker="here/agent", max_attempts=3)
    now = dt.datetime.now(dt.UTC)
    second, third = "+12125550172", "+12125550173"
    handed_over_apart: list[int] = []
    separate = agent.dispatcher._hand_over
    agent.dispatcher._hand_over = (  # type: ignore[method-assign]
        lambda s, sms, name: handed_over_apart.append(sms.id) or separate(s, sms, name))

    async def steps() -> None:
        run = asyncio.create_task(agent.dispatcher.run())
        await agent.dispatcher.started.wait()
        await agent.handle(finished("3000.1", caller=CUSTOMER, at=now))
        await agent.handle(finished("3000.2", caller="anonymous", at=now))  # not texted
        await agent.handle(finished("3000.3", caller=second, at=now))
        await agent.handle(finished("3000.4", caller=third, at=now))  # no token left
        for _ in range(100):
            if len(trunk.sent) == 2:
                break
            await asyncio.sleep(0.02)
        await agent.dispatcher.drain(timeout=2)
        run.cancel()

    try:
        asyncio.run(steps())
    finally:
        agent.db.close()
    assert [sms.number for sms in trunk.sent] == [CUSTOMER, second]  # 2 a minute
    with store_db.sessions(engine)() as session:
        first = session.scalars(select(Message).where(Message.number == CUSTOMER)).one()
        assert [e.status for e in first.history] == ["queued", "claimed", "sending",
                                                     "submitted"]
        assert handed_over_apart == []  # in the call's own transaction, both times
        waiting = session.scalars(select(Message).where(Message.number == third)).one()
        assert waiting.status == "queued" and "rate limit" in (waiting.history[-1].detail or "")
        assert [e.status for e in waiting.history] == ["queued", "claimed", "queued"]
