"""The retention limit (privacy.retention) on a real database: customers idle for longer
are erased exactly as an erasure request would (nothing of theirs is left in any table,
an opted-out number keeps only its opt-out), anyone with recent activity is left alone,
0s keeps everything, the dashboard's figures do not move, and the agent works off a
backlog in short batches from its timer loop."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from conftest import Record, csrf_token
from flask.testing import FlaskClient
from markupsafe import escape
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session
from test_contacts_erase import _call, _every_text, _left, _reply, _snapshot

from agent import daemon
from agent.daemon import Agent
from agent.messages import inbox, outbox, timers
from agent.people import accounts
from agent.privacy import erasure
from agent.reports import queries
from agent.reports.period import parse_period
from agent.rules import settings
from agent.rules.settings import SettingError
from agent.store import audit
from agent.store.models import AuditEntry, Call, Contact, Setting

pytestmark = pytest.mark.clock  # make test-clock runs it at awkward instants too

DATABASES = ("sqlite", "postgresql")

# erasure.purge takes the time in: a fixed instant. The agent's own loop reads the
# clock, so its tests place their world relative to the clock, read inside the test.
NOW = dt.datetime(2026, 12, 1, 15, 0, tzinfo=dt.UTC)
FIRST_CALLS = dt.timedelta(days=500)  # how long before now the customers first called
RETENTION = dt.timedelta(days=365)
LAST_ACTIVE = dt.timedelta(days=10)  # how long before now the active one texted
T0 = NOW - FIRST_CALLS
RECENTLY = NOW - LAST_ACTIVE

STAFF = "+12125550100"
# (number, caller ID name, a tag, something they texted) of each customer
IDLE = ("+12125550142", "Dana Fischer", "Elm St job", "Water everywhere at 12 Elm St")
ACTIVE = ("+13125550199", "Sam Lee", "Oak Ave job", "Leaking tap at 4 Oak Ave")
OPTED = ("+14155550123", "Alex Moreno", "Pine Rd job", "Burst pipe at 9 Pine Rd")


def _customer(session: Session, number: str) -> Contact:
    return session.scalars(select(Contact).where(Contact.number == number)).one()


def _world(record: Record, session: Session, now: dt.datetime = NOW) -> dict[str, Contact]:
    """Three customers who called 500 days before `now`, were texted back and replied;
    one of them texted again ten days before `now`, another texted STOP back then."""
    first = now - FIRST_CALLS
    settings.set(session, "staff.notify_numbers", [STAFF], first)
    people = {}
    for n, (number, name, tag, text) in enumerate((IDLE, ACTIVE, OPTED)):
        at = first + dt.timedelta(minutes=n)
        record(session, _call(f"{n}.1", number, at, name=name), at)
        _left(session, at + dt.timedelta(seconds=30))
        _reply(session, number, text, at + dt.timedelta(minutes=10))
        people[number] = _customer(session, number)
        people[number].name, people[number].tags = name, [tag]
    _reply(session, OPTED[0], "Stop", first + dt.timedelta(hours=1))
    _reply(session, ACTIVE[0], "Still need someone for the tap", now - LAST_ACTIVE)
    session.commit()
    return people


def _traces(engine: Engine, person: tuple[str, str, str, str]) -> list[tuple[str, str]]:
    """(table, column) of every cell that still holds the person: their number written
    any way, their name, tag or a text they sent."""
    number, name, tag, text = person
    tail = number[-10:]
    return [(table, column) for table, column, _key, value in _every_text(engine)
            if tail in re.sub(r"[\s.\-()/+]", "", value) or name.split()[-1] in value
            or tag in value or text in value]


def _figures(session: Session) -> tuple[Any, ...]:
    period, errors = parse_period(
        {"from": (T0 - dt.timedelta(days=1)).date().isoformat(),
         "to": (T0 + dt.timedelta(days=3)).date().isoformat()},
        NOW.date(), ZoneInfo("UTC"))
    assert errors == []
    rows = queries.buckets(session, period)
    return queries.counts(session, period, sum(calls for _at, calls, _ in rows)), sorted(rows)


def test_idle_customers_are_erased_and_active_ones_kept(record: Record, engine: Engine,
                                                       session: Session) -> None:
    people = _world(record, session)
    for person in (IDLE, ACTIVE, OPTED):
        assert len(_traces(engine, person)) > 5, person  # the scan does see them before
    before = _figures(session)
    counted = before[0]
    assert (counted.missed, counted.texted, counted.replied, counted.opted_out) == (3, 3, 3, 1)
    active_before = _snapshot(session, people[ACTIVE[0]].id, ACTIVE[0])

    assert erasure.purge(session, NOW, RETENTION, "US") == 2
    session.commit()

    assert _traces(engine, IDLE) == []
    # the opted-out number stays, on a row that says only "opted out", so it is never
    # texted again
    assert _traces(engine, OPTED) == [("contacts", "number")]
    assert outbox.opted_out(session, OPTED[0])
    kept = _customer(session, OPTED[0])
    assert (kept.name, kept.tags, kept.opted_out, kept.source) == (None, [], True, "erased")
    # the customer who texted ten days ago is exactly as before
    assert _snapshot(session, people[ACTIVE[0]].id, ACTIVE[0]) == active_before
    assert _figures(session) == before
    # each erasure is in the audit log, by the retention limit, naming no number
    erasures = session.scalars(select(AuditEntry).where(
        AuditEntry.action == audit.CONTACT_ERASED).order_by(AuditEntry.id)).all()
    assert [(e.actor, e.target) for e in erasures] == [
        ("retention", f"contact #{people[IDLE[0]].id}"),
        ("retention", f"contact #{people[OPTED[0]].id}")]
    # over a year on, only the customer who was active goes: the anonymous stand-ins and
    # the kept opt-out are never erased again
    assert erasure.purge(session, NOW + dt.timedelta(days=400), RETENTION, "US") == 1
    session.commit()
    assert _traces(engine, ACTIVE) == []
    assert outbox.opted_out(session, OPTED[0])


@pytest.mark.parametrize("activity", ["reply", "call", "text", "contacted", "booked",
                                      "call back"])
def test_any_recent_activity_keeps_the_customer(record: Record, session: Session,
                                                activity: str) -> None:
    number = IDLE[0]
    record(session, _call("1.1", number, T0), T0)
    _left(session, T0 + dt.timedelta(seconds=30))
    customer = _customer(session, number)
    if activity == "reply":
        _reply(session, number, "Are you still coming?", RECENTLY)
    elif activity == "call":  # answered: no text-back, no inbox move
        session.add(Call(linkedid="2.1", caller=number, direction="inbound", missed=False,
                         answered_by="PJSIP/desk", started_at=RECENTLY - dt.timedelta(minutes=3),
                         ended_at=RECENTLY, contact_id=customer.id))
    elif activity == "text":  # e.g. a test text from the transports page
        outbox.enqueue(session, now=RECENTLY, kind="test", number=number, body="Test",
                       idempotency_key=None)
    elif activity == "contacted":
        timers.contacted(session, customer, "called back", RECENTLY)
    elif activity == "booked":
        customer.booked_at = RECENTLY
    else:
        desk = accounts.add_user(session, T0, username="desk", role="staff", actor="cli",
                                 password="correct horse battery")
        session.flush()
        inbox.request_callback(session, customer, desk.id, "desk", RECENTLY)
    session.commit()

    assert erasure.purge(session, NOW, RETENTION, "US") == 0
    assert _customer(session, number).id == customer.id
    # once that activity is older than the limit too, the customer goes
    later = RECENTLY + RETENTION + dt.timedelta(days=1)
    assert erasure.purge(session, later, RETENTION, "US") == 1
    session.commit()
    assert session.get_one(Contact, customer.id).number == f"erased-{customer.id}"


def test_zero_keeps_everything(agent: Agent, record: Record, engine: Engine,
                               session: Session) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)  # the agent reads the clock
    _world(record, session, now)
    before = _every_text(engine)
    assert settings.get(session, "privacy.retention") == "0s"  # the default
    assert agent.purge_expired(session) == 0
    assert erasure.purge(session, now + dt.timedelta(days=3650), dt.timedelta(0), "US") == 0
    session.commit()
    assert _every_text(engine) == before
    # the agent follows the setting: with a limit, the idle customers go
    settings.set(session, "privacy.retention", "365d", now)
    assert agent.purge_expired(session) == 2
    session.commit()
    assert _traces(engine, IDLE) == []


def test_the_limit_caps_a_batch_and_the_next_one_continues(record: Record,
                                                           session: Session) -> None:
    numbers = [f"+1212555{n:04d}" for n in range(201, 206)]
    for n, number in enumerate(numbers):
        record(session, _call(f"{n}.1", number, T0), T0)
    session.commit()

    def left() -> list[str]:
        return [n for n in numbers
                if session.scalar(select(Contact.id).where(Contact.number == n))]

    done = []
    for _batch in range(4):
        done.append(erasure.purge(session, NOW, RETENTION, "US", limit=2))
        session.commit()
        done.append(len(left()))
    assert done == [2, 3, 2, 1, 1, 0, 0, 0]


def test_the_agent_works_off_a_backlog_then_waits_an_hour(
        agent: Agent, session: Session, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    numbers = [f"+1212555{n:04d}" for n in range(201, 206)]
    first = dt.datetime.now(dt.UTC) - FIRST_CALLS  # the agent reads the clock
    for number in numbers:
        session.add(Contact(number=number, name="Old Customer", tags=[], created_at=first))
    settings.set(session, "privacy.retention", "365d", first)
    session.commit()
    monkeypatch.setattr(daemon, "TIMER_TICK", 0.01)
    monkeypatch.setattr(daemon, "RETENTION_BATCH", 2)
    batches: list[int | str] = []
    purge = erasure.purge

    def counted(*args: Any, **kwargs: Any) -> int:
        if not batches:
            batches.append("failed")
            raise RuntimeError("database went away")
        batches.append(purge(*args, **kwargs))
        return int(batches[-1])

    monkeypatch.setattr(erasure, "purge", counted)

    async def run(sweep: float, batches_expected: int) -> None:
        """Run the timer loop until that many batches ran, then 20 ticks more."""
        monkeypatch.setattr(daemon, "RETENTION_SWEEP", sweep)
        loop = asyncio.create_task(agent.run_timers())
        for _ in range(1000):
            if len(batches) >= batches_expected:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        assert not loop.done()  # a failed purge never stops the timers
        loop.cancel()

    with caplog.at_level(logging.INFO, "agent.daemon"):
        # the first attempt fails: logged, and not tried again at every tick
        asyncio.run(run(3600, 1))
        assert batches == ["failed"]
        assert "privacy.retention failed" in caplog.text
        asyncio.run(run(3600, 4))
    # then batches one tick apart until one is not full, and nothing more for an hour
    assert batches == ["failed", 2, 2, 1]
    assert "erased the personal data of 2 customer(s)" in caplog.text
    session.expire_all()
    assert [session.scalar(select(Contact.id).where(Contact.number == n))
            for n in numbers] == [None] * 5


def test_the_setting_takes_days() -> None:
    assert settings.validate("privacy.retention", "730d") == "730d"
    assert settings.validate("privacy.retention", "17520h") == "730d"  # stored in days
    assert settings.validate("privacy.retention", "0s") == "0s"


@pytest.mark.parametrize(("value", "message"), [
    ("-1d", "not a duration; write e.g. 730d"),
    ("forever", "not a duration; write e.g. 730d"),
    ("730", "not a duration"),
    ("730m", "between 30d and 3650d"),  # a slip of the finger must not erase everyone
    ("3651d", "between 30d and 3650d"),
])
def test_bad_retention_values_are_refused(session: Session, value: str, message: str) -> None:
    with pytest.raises(SettingError, match=f"^privacy.retention.*{message}"):
        settings.set(session, "privacy.retention", value, NOW)
    assert session.get(Setting, "privacy.retention") is None


BUSINESS_FORM = {"business.name": "Rapid Rooter", "business.timezone": "UTC",
                 "business.booking_link": "", "business.average_job_value": "0",
                 "business.close_rate": "0.3"}


def _save_business(client: FlaskClient, **fields: str) -> Any:
    return client.post("/settings/business", follow_redirects=True, data={
        **BUSINESS_FORM, **fields, "csrf_token": csrf_token(client, "/settings/business")})


def test_the_business_page_sets_the_limit_in_days(owner: FlaskClient,
                                                  session: Session) -> None:
    page = _save_business(owner, **{"privacy.retention": "17520h"}).get_data(as_text=True)
    assert '<code class="key">privacy.retention</code>' in page
    assert escape("Erase customers' data after") in page
    assert 'name="privacy.retention" id="input-privacy.retention" value="730d"' in page
    assert settings.get(session, "privacy.retention") == "730d"
    refused = _save_business(owner, **{"privacy.retention": "730m"})
    assert refused.status_code == 400
    assert (escape("Erase customers' data after is 0s (keep everything) or between 30d and "
                   "3650d") in refused.get_data(as_text=True))
    # a page loaded before the upgrade that added the field leaves the limit alone
    assert _save_business(owner, **{"business.name": "Rapid Rooter Ltd"}).status_code == 200
    session.expire_all()
    assert settings.get(session, "privacy.retention") == "730d"
    assert settings.get(session, "business.name") == "Rapid Rooter Ltd"
