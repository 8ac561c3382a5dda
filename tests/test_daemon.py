"""The agent's decision step (Agent.record) on a real database, with calls as the
CallTracker hands them over: what is stored, queued, cancelled and stopped."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from agent import settings
from agent.calls import FinishedCall
from agent.config import parse
from agent.daemon import Agent
from agent.models import Call, Contact, Job, Message
from agent.outbox import OutboundSms

T0 = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
CUSTOMER = "+12125550142"


@pytest.fixture
def agent(engine: Engine, tmp_path: Path) -> Agent:
    config = parse({"ami": {"secret": "x"}, "database": {"url": str(engine.url)}},
                   tmp_path / "textback.toml")
    return Agent(config)


def finished(linkedid: str, *, direction: str = "inbound", missed: bool = True,
             caller: str | None = CUSTOMER, did: str = "+15550000100",
             at: dt.datetime = T0) -> FinishedCall:
    end = at.timestamp()
    return FinishedCall(linkedid, caller, "Dana Fischer", did, direction,  # type: ignore[arg-type]
                        missed, "noanswer" if missed else None, False,
                        None if missed else "PJSIP/desk", 4.0, end - 5, end,
                        "trunk" if direction == "inbound" else None)


def test_missed_call_is_stored_queued_and_followed_up(agent: Agent, session: Session) -> None:
    sms, described = agent.record(session, finished("1.1"), T0)
    session.commit()
    assert isinstance(sms, OutboundSms) and sms.number == CUSTOMER
    assert "queued text-back" in described
    call = session.scalars(select(Call)).one()
    assert (call.decision, call.caller, call.reason) == ("send", CUSTOMER, "noanswer")
    assert [j.kind for j in session.scalars(select(Job))] == ["followup"] * 3
    # the same call handed over again (a replayed event, a restart) changes nothing
    again, described = agent.record(session, finished("1.1"), T0)
    assert again is False and "seen before" in described


def test_the_business_calling_back_stops_everything(agent: Agent, session: Session) -> None:
    settings.set(session, "textback.delay", "2m", T0)
    queued, _ = agent.record(session, finished("2.1"), T0)
    assert queued is True  # waiting for its delay, not sent yet
    callback = finished("2.2", direction="outbound", missed=False, caller="100",
                        did=CUSTOMER, at=T0 + dt.timedelta(seconds=40))
    agent.record(session, callback, T0 + dt.timedelta(seconds=40))
    session.commit()
    textback = session.scalars(select(Message)).one()
    assert textback.status == "cancelled"
    assert textback.history[-1].detail == "the business called back"
    assert session.scalars(select(Contact)).one().contacted_at is not None
    assert {j.status for j in session.scalars(select(Job))} == {"cancelled"}


def test_skips_are_recorded_with_their_reason(agent: Agent, session: Session) -> None:
    agent.record(session, finished("3.1", caller=None), T0)
    agent.record(session, finished("3.2", direction="internal", caller="101"), T0)
    session.commit()
    reasons = [(c.decision, c.skip_reason) for c in session.scalars(select(Call).order_by(Call.id))]
    assert reasons == [("skip", "withheld"), ("skip", "not_inbound")]
    assert session.scalars(select(Message)).all() == []
